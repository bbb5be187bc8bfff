package lease

import (
	"context"
	"errors"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cairnkv/cairn/api/mvccpb"
	"github.com/cairnkv/cairn/mvcc"
	"github.com/cairnkv/cairn/mvcc/backend"
)

// fakeClock is a Clock that moves only when told.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// recorder is an mvcc.Observer that keeps every write transaction.
type recorder struct {
	mu     sync.Mutex
	writes []write
}

type write struct {
	rev    int64
	events []string
}

func (r *recorder) OnWrite(rev int64, evs []*mvccpb.Event) {
	w := write{rev: rev}
	for _, ev := range evs {
		w.events = append(w.events, ev.Type.String()+" "+string(ev.Kv.Key))
	}
	r.mu.Lock()
	r.writes = append(r.writes, w)
	r.mu.Unlock()
}

func (r *recorder) take() []write {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.writes
	r.writes = nil
	return w
}

// env is a backend, a lessor and a store on one file, wired in the
// documented order.
type env struct {
	t     testing.TB
	path  string
	opts  Options
	clock *fakeClock
	obs   *recorder
	be    *backend.Backend
	le    *Lessor
	s     *mvcc.Store
}

// newEnv opens a fresh environment with a fake clock (unless opts has a
// clock) and a minimum TTL of 1 (unless set), closed at cleanup.
func newEnv(t testing.TB, opts Options) *env {
	t.Helper()
	e := &env{t: t, path: filepath.Join(t.TempDir(), "db"), obs: &recorder{}}
	if opts.Clock == nil {
		e.clock = newFakeClock()
		opts.Clock = e.clock
	}
	if opts.MinTTL == 0 {
		opts.MinTTL = 1
	}
	e.opts = opts
	e.open()
	t.Cleanup(func() {
		if e.s != nil {
			e.close()
		}
	})
	return e
}

func (e *env) open() {
	e.t.Helper()
	be, err := backend.Open(e.path, backend.Options{InitialMmapSize: 1 << 30, BatchInterval: -1})
	if err != nil {
		e.t.Fatal(err)
	}
	le, err := New(be, e.opts)
	if err != nil {
		e.t.Fatal(errors.Join(err, be.Close()))
	}
	s, err := mvcc.New(be, mvcc.Options{Leases: le, Observer: e.obs, CompactionPause: -1})
	if err != nil {
		e.t.Fatal(errors.Join(err, be.Close()))
	}
	le.SetDeleter(s)
	e.be, e.le, e.s = be, le, s
}

func (e *env) close() {
	e.t.Helper()
	e.le.Demote()
	if err := e.s.Close(); err != nil {
		e.t.Errorf("store close: %v", err)
	}
	if err := e.be.Close(); err != nil {
		e.t.Errorf("backend close: %v", err)
	}
	e.s = nil
}

func (e *env) reopen() {
	e.t.Helper()
	e.close()
	e.open()
}

func (e *env) grant(id, ttl int64) *Lease {
	e.t.Helper()
	l, err := e.le.Grant(id, ttl)
	if err != nil {
		e.t.Fatalf("grant %d: %v", id, err)
	}
	return l
}

func (e *env) revoke(id int64) {
	e.t.Helper()
	if err := e.le.Revoke(id); err != nil {
		e.t.Fatalf("revoke %d: %v", id, err)
	}
}

func (e *env) put(key string, lease int64) {
	e.t.Helper()
	if _, err := e.s.Put(mvcc.PutRequest{Key: []byte(key), Value: []byte("v"), Lease: lease}); err != nil {
		e.t.Fatalf("put %q lease %d: %v", key, lease, err)
	}
}

// keysOf returns the keys attached to lease id, or nil if it is missing.
func (e *env) keysOf(id int64) []string {
	e.t.Helper()
	st, err := e.le.TimeToLive(id, true)
	if err != nil {
		return nil
	}
	ks := []string{}
	for _, k := range st.Keys {
		ks = append(ks, string(k))
	}
	return ks
}

// liveKeys returns every key in the store with its lease, "key@lease".
func (e *env) liveKeys() []string {
	e.t.Helper()
	resp, err := e.s.Range(mvcc.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}})
	if err != nil {
		e.t.Fatal(err)
	}
	out := []string{}
	for _, kv := range resp.Kvs {
		out = append(out, string(kv.Key)+"@"+strconv.FormatInt(kv.Lease, 10))
	}
	return out
}

// record reads lease id's record from the bucket.
func (e *env) record(id int64) (record, bool) {
	e.t.Helper()
	b, err := e.be.Get(Bucket, leaseKey(id))
	if err != nil {
		e.t.Fatal(err)
	}
	if b == nil {
		return record{}, false
	}
	r, err := decodeRecord(b)
	if err != nil {
		e.t.Fatal(err)
	}
	return r, true
}

func (e *env) ttl(id int64) int64 {
	e.t.Helper()
	st, err := e.le.TimeToLive(id, false)
	if err != nil {
		e.t.Fatalf("time to live %d: %v", id, err)
	}
	return st.TTL
}

// renewAsync runs Renew in a goroutine; the result arrives on the channel.
func renewAsync(ctx context.Context, le *Lessor, id int64) <-chan error {
	ch := make(chan error, 1)
	go func() {
		_, err := le.Renew(ctx, id)
		ch <- err
	}()
	return ch
}
