package watch

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairnkv/cairn/api/mvccpb"
	"github.com/cairnkv/cairn/mvcc"
	"github.com/cairnkv/cairn/mvcc/backend"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const waitLimit = 20 * time.Second

// fakeClock fires tickers and timers only when the test advances it. A
// tick is handed over synchronously: Advance returns once the hub's
// goroutine has taken it.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Duration
	tickers []*fakeTicker
	timers  []fakeTimer
}

type fakeTicker struct {
	clock   *fakeClock
	c       chan time.Time
	every   time.Duration
	next    time.Duration
	stopped bool
}

type fakeTimer struct {
	at time.Duration
	c  chan time.Time
}

func (c *fakeClock) NewTicker(d time.Duration) Ticker {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTicker{clock: c, c: make(chan time.Time), every: d, next: c.now + d}
	c.tickers = append(c.tickers, t)
	return t
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	c.timers = append(c.timers, fakeTimer{at: c.now + d, c: ch})
	return ch
}

func (t *fakeTicker) C() <-chan time.Time { return t.c }
func (t *fakeTicker) Stop() {
	t.clock.mu.Lock()
	t.stopped = true
	t.clock.mu.Unlock()
}

// Advance moves time on by d, firing what falls due.
func (c *fakeClock) Advance(t testing.TB, d time.Duration) {
	t.Helper()
	c.mu.Lock()
	c.now += d
	now := c.now
	var due []*fakeTicker
	for _, tk := range c.tickers {
		for !tk.stopped && tk.next <= now {
			due = append(due, tk)
			tk.next += tk.every
		}
	}
	kept := c.timers[:0]
	for _, tm := range c.timers {
		if tm.at <= now {
			tm.c <- time.Time{}
		} else {
			kept = append(kept, tm)
		}
	}
	c.timers = kept
	c.mu.Unlock()
	for _, tk := range due {
		select {
		case tk.c <- time.Time{}:
		case <-time.After(waitLimit):
			t.Fatal("tick not taken")
		}
	}
}

func storeOptions(obs mvcc.Observer) mvcc.Options {
	return mvcc.Options{
		Backend:         backend.Options{InitialMmapSize: 1 << 30, BatchInterval: -1},
		CompactionPause: -1,
		Observer:        obs,
	}
}

type env struct {
	t     testing.TB
	store *mvcc.Store
	hub   *Hub
}

// newEnv opens a store on a temp dir with a started hub as its observer.
// obs, if set, wraps the hub (it must forward to it).
func newEnv(t testing.TB, opts Options, wrap func(*Hub) mvcc.Observer) *env {
	t.Helper()
	h := NewHub(opts)
	var obs mvcc.Observer = h
	if wrap != nil {
		obs = wrap(h)
	}
	s, err := mvcc.Open(filepath.Join(t.TempDir(), "db"), storeOptions(obs))
	if err != nil {
		t.Fatal(err)
	}
	h.Start(s)
	t.Cleanup(func() {
		h.Close()
		if err := s.Close(); err != nil && !errors.Is(err, mvcc.ErrClosed) {
			t.Errorf("close store: %v", err)
		}
	})
	return &env{t: t, store: s, hub: h}
}

func (e *env) put(key, val string) int64 {
	e.t.Helper()
	r, err := e.store.Put(mvcc.PutRequest{Key: []byte(key), Value: []byte(val)})
	if err != nil {
		e.t.Fatalf("put %q: %v", key, err)
	}
	return r.Revision
}

func (e *env) del(key, end string) int64 {
	e.t.Helper()
	r, err := e.store.DeleteRange(mvcc.DeleteRangeRequest{Key: []byte(key), RangeEnd: []byte(end)})
	if err != nil {
		e.t.Fatalf("delete %q %q: %v", key, end, err)
	}
	return r.Revision
}

func (e *env) txnPuts(kvs ...string) int64 {
	e.t.Helper()
	var ops []mvcc.RequestOp
	for i := 0; i+1 < len(kvs); i += 2 {
		ops = append(ops, mvcc.RequestOp{Put: &mvcc.PutRequest{Key: []byte(kvs[i]), Value: []byte(kvs[i+1])}})
	}
	r, err := e.store.Txn(mvcc.TxnRequest{Success: ops})
	if err != nil {
		e.t.Fatalf("txn: %v", err)
	}
	return r.Revision
}

func (e *env) compact(rev int64) {
	e.t.Helper()
	done, err := e.store.Compact(rev)
	if err != nil {
		e.t.Fatalf("compact %d: %v", rev, err)
	}
	<-done
}

func (e *env) watch(s *Stream, req Request) int64 {
	e.t.Helper()
	id, err := s.Watch(req)
	if err != nil {
		e.t.Fatalf("watch %+v: %v", req, err)
	}
	return id
}

// next returns the stream's next response, failing after waitLimit.
func next(t testing.TB, s *Stream) Response {
	t.Helper()
	select {
	case r, ok := <-s.Chan():
		if !ok {
			t.Fatal("stream closed")
		}
		return r
	case <-time.After(waitLimit):
		t.Fatal("no response")
	}
	panic("unreachable")
}

// expectNone asserts that nothing is, or is about to be, in the stream:
// the hub's goroutine is idle and the channel empty.
func (e *env) expectNone(s *Stream) {
	e.t.Helper()
	e.hub.idle()
	select {
	case r := <-s.Chan():
		e.t.Fatalf("unexpected response %s", respString(r))
	default:
	}
}

func evString(ev *mvccpb.Event) string {
	kv := ev.Kv
	var b strings.Builder
	if ev.Type == mvccpb.Event_DELETE {
		fmt.Fprintf(&b, "DELETE %s@%d", kv.Key, kv.ModRevision)
	} else {
		fmt.Fprintf(&b, "PUT %s=%s@%d c%d v%d", kv.Key, kv.Value, kv.ModRevision, kv.CreateRevision, kv.Version)
	}
	if p := ev.PrevKv; p != nil {
		fmt.Fprintf(&b, " prev=%s@%d", p.Value, p.ModRevision)
	}
	return b.String()
}

func evsString(evs []*mvccpb.Event) string {
	var parts []string
	for _, ev := range evs {
		parts = append(parts, evString(ev))
	}
	return strings.Join(parts, "; ")
}

func respString(r Response) string {
	switch {
	case r.CompactRevision != 0:
		return fmt.Sprintf("w%d compacted@%d", r.WatchID, r.CompactRevision)
	case r.Progress:
		return fmt.Sprintf("w%d progress@%d", r.WatchID, r.Revision)
	}
	return fmt.Sprintf("w%d r%d [%s]", r.WatchID, r.Revision, evsString(r.Events))
}

// expect reads one response and compares its string form.
func expect(t testing.TB, s *Stream, want string) Response {
	t.Helper()
	r := next(t, s)
	if got := respString(r); got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	return r
}

// fakeSource is a Source with no history, for benchmarks and index tests.
type fakeSource struct{ rev int64 }

func (f *fakeSource) Rev() int64        { return f.rev }
func (f *fakeSource) CompactRev() int64 { return -1 }
func (f *fakeSource) Events(from, to int64, key, end []byte, limit int) ([]*mvccpb.Event, error) {
	return nil, nil
}
func (f *fakeSource) Range(mvcc.RangeRequest) (*mvcc.RangeResponse, error) {
	return &mvcc.RangeResponse{}, nil
}

// waitFor polls cond until it holds, failing after waitLimit.
func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}

// shrinkRecent makes the hub's recent buffer hold only the last n
// revisions, so that replays read the store.
func shrinkRecent(h *Hub, n int) {
	h.mu.Lock()
	h.recentMinRevs, h.recentMaxRevs = n, n
	h.mu.Unlock()
}

// expectSet reads len(want) responses, in any order across watchers.
func expectSet(t testing.TB, s *Stream, want ...string) {
	t.Helper()
	var got []string
	for range want {
		got = append(got, respString(next(t, s)))
	}
	slices.Sort(got)
	want = slices.Clone(want)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
}
