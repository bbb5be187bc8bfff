package watch

import (
	"bytes"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/cairnkv/cairn/mvcc"
)

// A stream whose consumer reads nothing while writes go on: every write
// completes before anything is read (OnWrite never waits), the stalled
// watchers' memory stays bounded (they fall back to history), and then the
// consumer reads every event in order, once.
func TestSlowConsumerNeverBlocksWrites(t *testing.T) {
	const n = 3000
	const maxParked = 50
	e := newEnv(t, Options{ChanSize: 4, MaxParked: maxParked, ReplayBatch: 7, RetryInterval: time.Millisecond}, nil)
	slow := e.hub.NewStream()
	defer slow.Close()
	keyW := e.watch(slow, Request{Key: []byte("k3")})
	allW := e.watch(slow, Request{Key: []byte{0}, RangeEnd: []byte{0}, PrevKV: true})
	fast := e.hub.NewStream()
	defer fast.Close()
	e.watch(fast, Request{Key: []byte("k"), RangeEnd: []byte("l")})
	fastDone := make(chan int)
	go func() {
		got := 0
		for r := range fast.Chan() {
			got += len(r.Events)
		}
		fastDone <- got
	}()

	writesDone := make(chan error, 1)
	go func() {
		for i := range n {
			if _, err := e.store.Put(mvcc.PutRequest{Key: []byte(fmt.Sprintf("k%d", i%10)), Value: []byte(strconv.Itoa(i))}); err != nil {
				writesDone <- err
				return
			}
		}
		writesDone <- nil
	}()
	select {
	case err := <-writesDone:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(waitLimit):
		t.Fatal("writes blocked behind a stalled consumer")
	}

	// Both stalled watchers fell back to history, holding at most a chunk.
	e.hub.idle()
	e.hub.mu.Lock()
	for _, w := range slow.watchers {
		if w.state != stUnsynced || w.pendingEvents > 7+9 {
			t.Errorf("watcher %d: state %d, %d parked events", w.id, w.state, w.pendingEvents)
		}
	}
	e.hub.mu.Unlock()

	// Revision 2+i put k(i%10) = i.
	var allRevs, keyRevs []int64
	for len(allRevs) < n || len(keyRevs) < n/10 {
		r := next(t, slow)
		for _, ev := range r.Events {
			rev := ev.Kv.ModRevision
			if rev > r.Revision {
				t.Fatalf("event at %d in a response at %d", rev, r.Revision)
			}
			i := rev - 2
			if string(ev.Kv.Value) != strconv.Itoa(int(i)) || string(ev.Kv.Key) != fmt.Sprintf("k%d", i%10) {
				t.Fatalf("event %s at revision %d", evString(ev), rev)
			}
			switch r.WatchID {
			case allW:
				allRevs = append(allRevs, rev)
				prev := ev.PrevKv
				if i < 10 && prev != nil || i >= 10 && (prev == nil || string(prev.Value) != strconv.Itoa(int(i-10))) {
					t.Fatalf("event %s at revision %d: wrong prev", evString(ev), rev)
				}
			case keyW:
				keyRevs = append(keyRevs, rev)
			default:
				t.Fatalf("unexpected %s", respString(r))
			}
		}
	}
	for j, rev := range allRevs {
		if rev != int64(j+2) {
			t.Fatalf("all-keys watcher: event %d at revision %d, want %d", j, rev, j+2)
		}
	}
	for j, rev := range keyRevs {
		if want := int64(10*j + 3 + 2); rev != want {
			t.Fatalf("key watcher: event %d at revision %d, want %d", j, rev, want)
		}
	}
	e.expectNone(slow)
	fast.Close()
	if got := <-fastDone; got != n {
		t.Fatalf("fast stream got %d events, want %d", got, n)
	}
}

// Watchers of one stream keep their own order when the stream is parked,
// while another stream is unaffected.
func TestVictimOrderPerWatcher(t *testing.T) {
	e := newEnv(t, Options{ChanSize: 2, RetryInterval: time.Millisecond}, nil)
	s := e.hub.NewStream()
	defer s.Close()
	for range 5 {
		e.watch(s, Request{Key: []byte("a"), RangeEnd: []byte("c")})
	}
	for i := range 40 {
		if i%2 == 0 {
			e.put("a", strconv.Itoa(i))
		} else {
			e.txnPuts("a", strconv.Itoa(i), "b", strconv.Itoa(i))
		}
	}
	last := map[int64]int64{}
	for range 5 * 40 {
		r := next(t, s)
		rev := r.Events[0].Kv.ModRevision
		if rev != last[r.WatchID]+1 && !(last[r.WatchID] == 0 && rev == 2) {
			t.Fatalf("watcher %d: revision %d after %d", r.WatchID, rev, last[r.WatchID])
		}
		if (rev-2)%2 == 1 && len(r.Events) != 2 || !bytes.Equal(r.Events[0].Kv.Key, []byte("a")) {
			t.Fatalf("revision split: %s", respString(r))
		}
		last[r.WatchID] = rev
	}
	e.expectNone(s)
}
