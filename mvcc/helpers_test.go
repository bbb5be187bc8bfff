package mvcc

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/cairnkv/cairn/api/mvccpb"
	"github.com/cairnkv/cairn/mvcc/backend"
)

// testOptions are small, fast options: no commit timer unless a test sets
// one, no pause between compaction batches.
func testOptions() Options {
	return Options{
		Backend:         backend.Options{InitialMmapSize: 1 << 30, BatchInterval: -1},
		CompactionPause: -1,
	}
}

func openTestStore(t testing.TB, opts Options) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "db")
	s, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("close: %v", err)
		}
	})
	return s, path
}

func newTestStore(t testing.TB) *Store {
	s, _ := openTestStore(t, testOptions())
	return s
}

func mustPut(t testing.TB, s *Store, key, val string) *PutResponse {
	t.Helper()
	resp, err := s.Put(PutRequest{Key: []byte(key), Value: []byte(val)})
	if err != nil {
		t.Fatalf("put %q: %v", key, err)
	}
	return resp
}

func mustDelete(t testing.TB, s *Store, key, end string) *DeleteRangeResponse {
	t.Helper()
	resp, err := s.DeleteRange(DeleteRangeRequest{Key: []byte(key), RangeEnd: []byte(end)})
	if err != nil {
		t.Fatalf("delete %q %q: %v", key, end, err)
	}
	return resp
}

func mustRange(t testing.TB, s *Store, req RangeRequest) *RangeResponse {
	t.Helper()
	resp, err := s.Range(req)
	if err != nil {
		t.Fatalf("range %+v: %v", req, err)
	}
	return resp
}

func get(t testing.TB, s *Store, key string) *mvccpb.KeyValue {
	t.Helper()
	resp := mustRange(t, s, RangeRequest{Key: []byte(key)})
	if len(resp.Kvs) == 0 {
		return nil
	}
	return resp.Kvs[0]
}

func keysOf(kvs []*mvccpb.KeyValue) []string {
	out := []string{}
	for _, kv := range kvs {
		out = append(out, string(kv.Key))
	}
	return out
}

// kvString renders a key-value compactly for comparisons.
func kvString(kv *mvccpb.KeyValue) string {
	if kv == nil {
		return "<nil>"
	}
	return fmt.Sprintf("%s=%q c%d m%d v%d l%d", kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease)
}

func put(key, val string) RequestOp {
	return RequestOp{Put: &PutRequest{Key: []byte(key), Value: []byte(val)}}
}

func del(key, end string) RequestOp {
	return RequestOp{DeleteRange: &DeleteRangeRequest{Key: []byte(key), RangeEnd: []byte(end)}}
}

func rng(key, end string) RequestOp {
	return RequestOp{Range: &RangeRequest{Key: []byte(key), RangeEnd: []byte(end)}}
}

func txnOp(r TxnRequest) RequestOp { return RequestOp{Txn: &r} }

// fakeLeases is an in-memory lease table that records calls.
type fakeLeases struct {
	mu       sync.Mutex
	granted  map[int64]bool
	attached map[int64]map[string]bool
	calls    []string
}

func newFakeLeases(ids ...int64) *fakeLeases {
	l := &fakeLeases{granted: map[int64]bool{}, attached: map[int64]map[string]bool{}}
	for _, id := range ids {
		l.granted[id] = true
	}
	return l
}

func (l *fakeLeases) Exists(id int64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.granted[id]
}

func (l *fakeLeases) Attach(id int64, key []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.attached[id] == nil {
		l.attached[id] = map[string]bool{}
	}
	l.attached[id][string(key)] = true
	l.calls = append(l.calls, fmt.Sprintf("attach %d %s", id, key))
}

func (l *fakeLeases) Detach(id int64, key []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.attached[id], string(key))
	l.calls = append(l.calls, fmt.Sprintf("detach %d %s", id, key))
}

func (l *fakeLeases) takeCalls() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.calls
	l.calls = nil
	return c
}

func (l *fakeLeases) keys(id int64) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for k := range l.attached[id] {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// recorder is an Observer that keeps every call.
type recorder struct {
	mu    sync.Mutex
	revs  []int64
	evs   [][]*mvccpb.Event
	calls int
}

func (r *recorder) OnWrite(rev int64, evs []*mvccpb.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.revs = append(r.revs, rev)
	r.evs = append(r.evs, evs)
}

func eventString(ev *mvccpb.Event) string {
	if ev.Type == mvccpb.Event_DELETE {
		return fmt.Sprintf("DELETE %s m%d", ev.Kv.Key, ev.Kv.ModRevision)
	}
	return "PUT " + kvString(ev.Kv)
}
