package watch

import (
	"bytes"
	"fmt"
	"testing"
)

// restoreFrom replaces b's keyspace with a snapshot of a's, as a follower
// receiving the leader's snapshot.
func restoreFrom(t *testing.T, b, a *env) {
	t.Helper()
	if err := a.store.ForceCommit(); err != nil {
		t.Fatal(err)
	}
	var snap bytes.Buffer
	if _, err := a.store.Snapshot(&snap); err != nil {
		t.Fatal(err)
	}
	if err := b.store.Restore(&snap); err != nil {
		t.Fatal(err)
	}
}

func TestRestoreResyncs(t *testing.T) {
	leader := newEnv(t, Options{}, nil)
	follower := newEnv(t, Options{}, nil)
	both := func(key, val string) {
		leader.put(key, val)
		follower.put(key, val)
	}
	for i := range 5 {
		both(fmt.Sprintf("k%d", i%2), fmt.Sprint(i)) // 2..6
	}
	s := follower.hub.NewStream()
	defer s.Close()
	follower.watch(s, Request{Key: []byte("k0")})
	follower.watch(s, Request{Key: []byte("k"), RangeEnd: []byte("l"), PrevKV: true})
	follower.watch(s, Request{Key: []byte("k1"), StartRev: 9})
	follower.watch(s, Request{Key: []byte("k1"), StartRev: 30}) // far future

	// The leader moves on; the follower catches up by snapshot.
	for i := 5; i < 10; i++ {
		leader.put(fmt.Sprintf("k%d", i%2), fmt.Sprint(i)) // 7..11
	}
	restoreFrom(t, follower, leader)
	if follower.hub.Rev() != 11 {
		t.Fatalf("hub revision %d after restore", follower.hub.Rev())
	}
	expectSet(t, s,
		"w0 r11 [PUT k0=6@8 c2 v4; PUT k0=8@10 c2 v5]",
		"w1 r11 [PUT k1=5@7 c3 v3 prev=3@5; PUT k0=6@8 c2 v4 prev=4@6; PUT k1=7@9 c3 v4 prev=5@7; PUT k0=8@10 c2 v5 prev=6@8; PUT k1=9@11 c3 v5 prev=7@9]",
		"w2 r11 [PUT k1=7@9 c3 v4; PUT k1=9@11 c3 v5]",
	)
	follower.expectNone(s)
	// Live again.
	both("k0", "x")
	expectSet(t, s, "w0 r12 [PUT k0=x@12 c2 v6]", "w1 r12 [PUT k0=x@12 c2 v6 prev=8@10]")

	// A snapshot compacted past the watchers' position ends them.
	for i := range 5 {
		leader.put("k0", fmt.Sprint(i)) // 13..17
	}
	leader.compact(16)
	restoreFrom(t, follower, leader)
	expectSet(t, s, "w0 compacted@16", "w1 compacted@16", "w2 compacted@16")
	follower.expectNone(s)
	// The far-future watcher is still there.
	for follower.store.Rev() < 30 {
		follower.put("k1", "y")
	}
	expect(t, s, "w3 r30 [PUT k1=y@30 c3 v18]")
}
