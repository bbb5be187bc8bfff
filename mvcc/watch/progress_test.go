package watch

import (
	"fmt"
	"testing"
	"time"
)

func TestProgressNotify(t *testing.T) {
	clk := &fakeClock{}
	e := newEnv(t, Options{Clock: clk, ProgressInterval: time.Second}, nil)
	s := e.hub.NewStream()
	defer s.Close()
	e.watch(s, Request{Key: []byte("a"), ProgressNotify: true})
	e.watch(s, Request{Key: []byte("b")})
	clk.Advance(t, time.Second)
	expect(t, s, "w0 progress@1")
	clk.Advance(t, time.Second)
	expect(t, s, "w0 progress@1")

	e.put("a", "1")
	expect(t, s, "w0 r2 [PUT a=1@2 c2 v1]")
	clk.Advance(t, time.Second) // events since the last tick: not idle
	e.expectNone(s)
	clk.Advance(t, time.Second)
	expect(t, s, "w0 progress@2")

	// Other keys' writes do not count as activity; the header is current.
	e.put("b", "1")
	expect(t, s, "w1 r3 [PUT b=1@3 c3 v1]")
	clk.Advance(t, time.Second)
	expect(t, s, "w0 progress@3")

	// A cancelled watcher gets none.
	if err := s.Cancel(0); err != nil {
		t.Fatal(err)
	}
	clk.Advance(t, time.Second)
	e.expectNone(s)
}

// An unsynced watcher gets no idle progress notification until it is
// caught up; a future watcher none until the hub reaches its start.
func TestProgressNotifyUnsynced(t *testing.T) {
	clk := &fakeClock{}
	e := newEnv(t, Options{Clock: clk, ProgressInterval: time.Second, ChanSize: 1, ReplayBatch: 1, RetryInterval: time.Millisecond}, nil)
	shrinkRecent(e.hub, 1)
	for i := range 4 {
		e.put("a", fmt.Sprint(i)) // 2..5
	}
	s := e.hub.NewStream()
	defer s.Close()
	e.watch(s, Request{Key: []byte("a"), StartRev: 2, ProgressNotify: true})
	e.hub.idle() // revision 2 in the channel, 3 parked
	clk.Advance(t, time.Second)
	for i := range 4 {
		expect(t, s, fmt.Sprintf("w0 r5 [PUT a=%d@%d c2 v%d]", i, i+2, i+1))
		clk.Advance(t, time.Millisecond) // the retry timer
		e.hub.idle()
	}
	clk.Advance(t, time.Second) // had events since the last tick
	e.expectNone(s)
	clk.Advance(t, time.Second)
	expect(t, s, "w0 progress@5")

	// (The channel holds one response: one watcher at a time.)
	if err := s.Cancel(0); err != nil {
		t.Fatal(err)
	}
	e.watch(s, Request{Key: []byte("b"), StartRev: 8, ProgressNotify: true, WatchID: 5})
	clk.Advance(t, time.Second)
	e.expectNone(s)
	e.put("x", "1")
	e.put("x", "2") // 7: the next revision is the future watcher's start
	clk.Advance(t, time.Second)
	expect(t, s, "w5 progress@7")
}

func TestRequestProgress(t *testing.T) {
	e := newEnv(t, Options{}, nil)
	s := e.hub.NewStream()
	defer s.Close()
	// No watcher: nothing, as in etcd.
	s.RequestProgress()
	e.expectNone(s)

	e.watch(s, Request{Key: []byte("a")})
	e.watch(s, Request{Key: []byte("b"), RangeEnd: []byte("c")})
	e.put("z", "1")
	s.RequestProgress()
	expect(t, s, "w-1 progress@2")
	e.put("a", "1")
	s.RequestProgress()
	expect(t, s, "w0 r3 [PUT a=1@3 c3 v1]")
	expect(t, s, "w-1 progress@3")
	e.expectNone(s)

	// A watcher starting two revisions ahead holds the answer back until
	// the revision before its start.
	e.watch(s, Request{Key: []byte("c"), StartRev: 5})
	s.RequestProgress()
	e.expectNone(s)
	e.put("z", "2")
	expect(t, s, "w-1 progress@4")
	e.expectNone(s)
}

// With a watcher replaying history, the answer waits until it is caught
// up, comes after all its events, and answers every request made
// meanwhile at once.
func TestRequestProgressUnsynced(t *testing.T) {
	e := newEnv(t, Options{ChanSize: 1, ReplayBatch: 1, RetryInterval: time.Millisecond}, nil)
	shrinkRecent(e.hub, 1)
	for i := range 5 {
		e.put("k", fmt.Sprint(i)) // 2..6
	}
	s := e.hub.NewStream()
	defer s.Close()
	e.watch(s, Request{Key: []byte("other")})
	e.watch(s, Request{Key: []byte("k"), StartRev: 2})
	e.hub.idle()
	s.RequestProgress()
	s.RequestProgress()
	for i := range 5 {
		expect(t, s, fmt.Sprintf("w1 r6 [PUT k=%d@%d c2 v%d]", i, i+2, i+1))
	}
	expect(t, s, "w-1 progress@6")
	e.expectNone(s)
	// Once synced, at once.
	s.RequestProgress()
	expect(t, s, "w-1 progress@6")

	// A compacted watcher no longer holds it back once its compacted
	// response is out.
	e.compact(6)
	e.watch(s, Request{Key: []byte("k"), StartRev: 3, WatchID: 9})
	s.RequestProgress()
	expect(t, s, "w9 compacted@6")
	expect(t, s, "w-1 progress@6")
	e.expectNone(s)
}
