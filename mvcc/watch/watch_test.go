package watch

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cairnkv/cairn/mvcc"
)

func TestWatchKey(t *testing.T) {
	e := newEnv(t, Options{}, nil)
	s := e.hub.NewStream()
	defer s.Close()
	id := e.watch(s, Request{Key: []byte("a")})
	if id != 0 {
		t.Fatalf("first auto id %d, want 0", id)
	}
	e.put("a", "1")
	e.put("b", "x")
	e.put("a", "2")
	e.del("a", "")
	e.del("a", "") // deletes nothing: no revision, no event
	expect(t, s, "w0 r2 [PUT a=1@2 c2 v1]")
	expect(t, s, "w0 r4 [PUT a=2@4 c2 v2]")
	expect(t, s, "w0 r5 [DELETE a@5]")
	e.expectNone(s)
}

func TestWatchRanges(t *testing.T) {
	e := newEnv(t, Options{}, nil)
	s := e.hub.NewStream()
	defer s.Close()
	rng := e.watch(s, Request{Key: []byte("b"), RangeEnd: []byte("d")})
	prefix := e.watch(s, Request{Key: []byte("p/"), RangeEnd: []byte("p0")})
	from := e.watch(s, Request{Key: []byte("m"), RangeEnd: []byte{0}})
	all := e.watch(s, Request{Key: []byte{0}, RangeEnd: []byte{0}})
	empty := e.watch(s, Request{RangeEnd: []byte{0}}) // empty key reads as "\x00"

	got := map[int64][]string{}
	keys := []string{"a", "b", "c", "cz", "d", "m", "p", "p/", "p/x", "p0", "z"}
	for _, k := range keys {
		e.put(k, "v")
	}
	n := 0
	want := map[int64][]string{
		rng:    {"b", "c", "cz"},
		prefix: {"p/", "p/x"},
		from:   {"m", "p", "p/", "p/x", "p0", "z"},
		all:    keys,
		empty:  keys,
	}
	for _, ks := range want {
		n += len(ks)
	}
	for range n {
		r := next(t, s)
		if len(r.Events) != 1 {
			t.Fatalf("response %s", respString(r))
		}
		got[r.WatchID] = append(got[r.WatchID], string(r.Events[0].Kv.Key))
	}
	for id, ks := range want {
		if fmt.Sprint(got[id]) != fmt.Sprint(ks) {
			t.Errorf("watcher %d got %v, want %v", id, got[id], ks)
		}
	}
	e.expectNone(s)
}

func TestOneResponsePerRevision(t *testing.T) {
	e := newEnv(t, Options{}, nil)
	s := e.hub.NewStream()
	defer s.Close()
	all := e.watch(s, Request{Key: []byte("a"), RangeEnd: []byte("z")})
	one := e.watch(s, Request{Key: []byte("b")})
	rev := e.txnPuts("a", "1", "b", "2", "c", "3")
	got := map[int64]string{}
	for range 2 {
		r := next(t, s)
		got[r.WatchID] = respString(r)
	}
	if want := fmt.Sprintf("w%d r%d [PUT a=1@2 c2 v1; PUT b=2@2 c2 v1; PUT c=3@2 c2 v1]", all, rev); got[all] != want {
		t.Errorf("range watcher: %s, want %s", got[all], want)
	}
	if want := fmt.Sprintf("w%d r2 [PUT b=2@2 c2 v1]", one); got[one] != want {
		t.Errorf("key watcher: %s, want %s", got[one], want)
	}
	e.del("a", "c")
	expectSet(t, s, "w0 r3 [DELETE a@3; DELETE b@3]", "w1 r3 [DELETE b@3]")
	e.expectNone(s)
}

func TestFilters(t *testing.T) {
	e := newEnv(t, Options{}, nil)
	s := e.hub.NewStream()
	defer s.Close()
	e.watch(s, Request{Key: []byte("a"), RangeEnd: []byte("z"), NoPut: true})
	e.watch(s, Request{Key: []byte("a"), RangeEnd: []byte("z"), NoDelete: true})
	e.put("a", "1")
	expect(t, s, "w1 r2 [PUT a=1@2 c2 v1]")
	e.txnPuts("b", "1", "c", "1")
	expect(t, s, "w1 r3 [PUT b=1@3 c3 v1; PUT c=1@3 c3 v1]")
	e.del("a", "z")
	expect(t, s, "w0 r4 [DELETE a@4; DELETE b@4; DELETE c@4]")
	e.expectNone(s)
}

func TestPrevKV(t *testing.T) {
	e := newEnv(t, Options{}, nil)
	s := e.hub.NewStream()
	defer s.Close()
	e.watch(s, Request{Key: []byte("a"), PrevKV: true})
	e.watch(s, Request{Key: []byte("a")})
	e.put("a", "1")
	e.put("a", "2")
	e.del("a", "")
	e.put("a", "3")
	want := []string{
		"w0 r2 [PUT a=1@2 c2 v1]", "w1 r2 [PUT a=1@2 c2 v1]",
		"w0 r3 [PUT a=2@3 c2 v2 prev=1@2]", "w1 r3 [PUT a=2@3 c2 v2]",
		"w0 r4 [DELETE a@4 prev=2@3]", "w1 r4 [DELETE a@4]",
		"w0 r5 [PUT a=3@5 c5 v1]", "w1 r5 [PUT a=3@5 c5 v1]",
	}
	for _, w := range want {
		expect(t, s, w)
	}
	// The same from history.
	e.watch(s, Request{Key: []byte("a"), PrevKV: true, StartRev: 2})
	expect(t, s, "w2 r5 [PUT a=1@2 c2 v1; PUT a=2@3 c2 v2 prev=1@2; DELETE a@4 prev=2@3; PUT a=3@5 c5 v1]")
	e.expectNone(s)
}

func TestStartRevisions(t *testing.T) {
	e := newEnv(t, Options{ReplayBatch: 2, ReplayRevisions: 3}, nil)
	shrinkRecent(e.hub, 1)
	s := e.hub.NewStream()
	defer s.Close()
	for i := range 10 {
		e.put(fmt.Sprintf("k%d", i%3), fmt.Sprint(i)) // revisions 2..11
	}
	// From the past: history in chunks, each revision whole, then live.
	past := e.watch(s, Request{Key: []byte("k"), RangeEnd: []byte("l"), StartRev: 3})
	var got []int64
	for len(got) < 9 {
		r := next(t, s)
		if r.WatchID != past || len(r.Events) == 0 {
			t.Fatalf("unexpected %s", respString(r))
		}
		if len(r.Events) > 2 {
			t.Errorf("chunk of %d events with ReplayBatch 2", len(r.Events))
		}
		for _, ev := range r.Events {
			got = append(got, ev.Kv.ModRevision)
		}
	}
	if fmt.Sprint(got) != "[3 4 5 6 7 8 9 10 11]" {
		t.Fatalf("replayed %v", got)
	}
	e.expectNone(s)

	now := e.watch(s, Request{Key: []byte("k0")})
	future := e.watch(s, Request{Key: []byte("k0"), StartRev: 14})
	e.put("k0", "a") // 12
	expectSet(t, s, fmt.Sprintf("w%d r12 [PUT k0=a@12 c2 v5]", past), fmt.Sprintf("w%d r12 [PUT k0=a@12 c2 v5]", now))
	e.put("k0", "b") // 13
	expectSet(t, s, fmt.Sprintf("w%d r13 [PUT k0=b@13 c2 v6]", past), fmt.Sprintf("w%d r13 [PUT k0=b@13 c2 v6]", now))
	e.put("k0", "c") // 14: the future watcher starts here
	got2 := map[int64]bool{}
	for range 3 {
		r := next(t, s)
		if r.Revision != 14 || len(r.Events) != 1 {
			t.Fatalf("unexpected %s", respString(r))
		}
		got2[r.WatchID] = true
	}
	if !got2[past] || !got2[now] || !got2[future] {
		t.Fatalf("at 14: %v", got2)
	}
	e.expectNone(s)
}

// A watcher starting at the current revision reads it from the recent
// buffer; one starting further back than the buffer reads the store.
func TestReplayFromBufferAndStore(t *testing.T) {
	e := newEnv(t, Options{}, nil)
	shrinkRecent(e.hub, 2)
	for i := range 5 {
		e.put("k", fmt.Sprint(i)) // 2..6
	}
	s := e.hub.NewStream()
	defer s.Close()
	e.watch(s, Request{Key: []byte("k"), StartRev: 6})
	expect(t, s, "w0 r6 [PUT k=4@6 c2 v5]")
	e.watch(s, Request{Key: []byte("k"), StartRev: 2})
	expect(t, s, "w1 r6 [PUT k=0@2 c2 v1; PUT k=1@3 c2 v2; PUT k=2@4 c2 v3; PUT k=3@5 c2 v4; PUT k=4@6 c2 v5]")
	e.put("k", "5")
	expect(t, s, "w0 r7 [PUT k=5@7 c2 v6]")
	expect(t, s, "w1 r7 [PUT k=5@7 c2 v6]")
	e.expectNone(s)
}

func TestWatchCompacted(t *testing.T) {
	e := newEnv(t, Options{}, nil)
	for i := range 5 {
		e.put("k", fmt.Sprint(i)) // 2..6
	}
	e.compact(5)
	s := e.hub.NewStream()
	defer s.Close()
	id := e.watch(s, Request{Key: []byte("k"), StartRev: 3, WatchID: 7})
	r := expect(t, s, "w7 compacted@5")
	if !r.Canceled || len(r.Events) != 0 {
		t.Fatalf("compacted response %+v", r)
	}
	// At the compaction point itself is fine.
	e.watch(s, Request{Key: []byte("k"), StartRev: 5})
	expect(t, s, "w0 r6 [PUT k=3@5 c2 v4; PUT k=4@6 c2 v5]")
	e.put("k", "x")
	expect(t, s, "w0 r7 [PUT k=x@7 c2 v6]")
	e.expectNone(s)
	// The compacted watcher keeps its ID until cancelled, as in etcd.
	if _, err := s.Watch(Request{Key: []byte("k"), WatchID: id}); !errors.Is(err, ErrWatcherDuplicateID) {
		t.Fatalf("reuse of a compacted ID: %v", err)
	}
	if err := s.Cancel(id); err != nil {
		t.Fatalf("cancel compacted: %v", err)
	}
}

// An unsynced watcher whose history is compacted while it replays gets
// what it read so far, then the compacted response.
func TestCompactedWhileReplaying(t *testing.T) {
	e := newEnv(t, Options{ChanSize: 1, ReplayBatch: 2, RetryInterval: time.Millisecond}, nil)
	shrinkRecent(e.hub, 1)
	for i := range 20 {
		e.put("k", fmt.Sprint(i)) // 2..21
	}
	s := e.hub.NewStream()
	defer s.Close()
	e.watch(s, Request{Key: []byte("k"), StartRev: 2})
	// The first chunk fills the channel, the second is parked: the watcher
	// is stuck at revision 6 until the consumer reads.
	e.hub.idle()
	e.hub.mu.Lock()
	var w *watcher
	for _, x := range s.watchers {
		w = x
	}
	parked, minRev := w.pending.len(), w.minRev
	e.hub.mu.Unlock()
	if parked != 1 || minRev != 6 {
		t.Fatalf("parked %d, minRev %d", parked, minRev)
	}
	e.compact(15)
	expect(t, s, "w0 r21 [PUT k=0@2 c2 v1; PUT k=1@3 c2 v2]")
	expect(t, s, "w0 r21 [PUT k=2@4 c2 v3; PUT k=3@5 c2 v4]")
	expect(t, s, "w0 compacted@15")
	e.put("k", "x")
	e.expectNone(s)
}

func TestCancelAndIDs(t *testing.T) {
	e := newEnv(t, Options{}, nil)
	s := e.hub.NewStream()
	if id := e.watch(s, Request{Key: []byte("a"), WatchID: 1}); id != 1 {
		t.Fatalf("explicit id %d", id)
	}
	if _, err := s.Watch(Request{Key: []byte("a"), WatchID: 1}); !errors.Is(err, ErrWatcherDuplicateID) {
		t.Fatalf("duplicate id: %v", err)
	}
	// Auto IDs count from 0 and skip IDs in use.
	for _, want := range []int64{0, 2, 3} {
		if id := e.watch(s, Request{Key: []byte("a")}); id != want {
			t.Fatalf("auto id %d, want %d", id, want)
		}
	}
	if _, err := s.Watch(Request{Key: []byte("b"), RangeEnd: []byte("a")}); !errors.Is(err, ErrEmptyWatcherRange) {
		t.Fatalf("empty range: %v", err)
	}
	if _, err := s.Watch(Request{Key: []byte("b"), RangeEnd: []byte("b")}); !errors.Is(err, ErrEmptyWatcherRange) {
		t.Fatalf("empty range: %v", err)
	}
	if _, err := s.Watch(Request{Key: []byte("b"), StartRev: -1}); !errors.Is(err, mvcc.ErrCompacted) {
		t.Fatalf("negative start: %v", err)
	}
	for _, id := range []int64{0, 2, 3} {
		if err := s.Cancel(id); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Cancel(0); !errors.Is(err, ErrWatcherNotExist) {
		t.Fatalf("second cancel: %v", err)
	}
	e.put("a", "1")
	expect(t, s, "w1 r2 [PUT a=1@2 c2 v1]")
	e.expectNone(s)

	s.Close()
	s.Close()
	if _, ok := <-s.Chan(); ok {
		t.Fatal("channel open after Close")
	}
	if _, err := s.Watch(Request{Key: []byte("a")}); !errors.Is(err, ErrClosed) {
		t.Fatalf("watch on closed stream: %v", err)
	}
	if err := s.Cancel(1); !errors.Is(err, ErrWatcherNotExist) {
		t.Fatalf("cancel on closed stream: %v", err)
	}
	e.put("a", "2") // nothing is sent to a closed stream

	// Hub.Close closes the streams still open.
	s2 := e.hub.NewStream()
	e.watch(s2, Request{Key: []byte("a")})
	e.hub.Close()
	if _, ok := <-s2.Chan(); ok {
		t.Fatal("stream open after Hub.Close")
	}
	e.put("a", "3")
	if s3 := e.hub.NewStream(); s3.closed != true {
		t.Fatal("stream of a closed hub is open")
	}
}

func TestWatchBeforeStart(t *testing.T) {
	h := NewHub(Options{})
	defer h.Close()
	s := h.NewStream()
	if _, err := s.Watch(Request{Key: []byte("a")}); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("watch before start: %v", err)
	}
}

func TestManyWatchersOneKey(t *testing.T) {
	const n = 10000
	e := newEnv(t, Options{}, nil)
	s := e.hub.NewStream() // one stream: most responses are parked
	defer s.Close()
	for range n {
		e.watch(s, Request{Key: []byte("hot")})
	}
	e.watch(s, Request{Key: []byte("cold")})
	e.put("hot", "1")
	e.put("hot", "2")
	e.put("hot", "3")
	seen := make([]int, n)
	for range 3 * n {
		r := next(t, s)
		if r.WatchID >= n || len(r.Events) != 1 {
			t.Fatalf("unexpected %s", respString(r))
		}
		seen[r.WatchID]++
		if want := int64(seen[r.WatchID] + 1); r.Events[0].Kv.ModRevision != want {
			t.Fatalf("watcher %d got revision %d, want %d", r.WatchID, r.Events[0].Kv.ModRevision, want)
		}
	}
	e.expectNone(s)
}

func TestManyWatchersDistinctKeys(t *testing.T) {
	const n = 10000
	e := newEnv(t, Options{}, nil)
	streams := make([]*Stream, 10)
	for i := range streams {
		streams[i] = e.hub.NewStream()
		defer streams[i].Close()
	}
	key := func(i int) string { return fmt.Sprintf("key/%05d", i) }
	for i := range n {
		id := e.watch(streams[i%10], Request{Key: []byte(key(i))})
		if id != int64(i/10) {
			t.Fatalf("id %d", id)
		}
	}
	// And ranges over pairs of keys.
	for i := 0; i < n; i += 2 {
		e.watch(streams[i%10], Request{Key: []byte(key(i)), RangeEnd: []byte(key(i + 2))})
	}
	done := make(chan map[string]int, len(streams))
	for _, s := range streams {
		go func() {
			got := map[string]int{}
			for r := range s.Chan() {
				for _, ev := range r.Events {
					got[string(ev.Kv.Key)]++
				}
				if len(r.Events) != 1 {
					got["bad: "+respString(r)]++
				}
			}
			done <- got
		}()
	}
	for i := range n {
		e.put(key(i), "v")
	}
	waitFor(t, func() bool {
		e.hub.mu.Lock()
		defer e.hub.mu.Unlock()
		for _, s := range streams {
			if s.blocked > 0 || len(s.ch) > 0 {
				return false
			}
		}
		return true
	})
	for _, s := range streams {
		s.Close()
	}
	total := map[string]int{}
	for range streams {
		for k, c := range <-done {
			total[k] += c
		}
	}
	if len(total) != n {
		t.Fatalf("%d keys seen, want %d", len(total), n)
	}
	for i := range n {
		// Its key watcher and one range watcher.
		if c := total[key(i)]; c != 2 {
			t.Fatalf("key %d: %d events", i, c)
		}
	}
}
