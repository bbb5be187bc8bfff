package mvcc

import (
	"errors"
	"slices"
	"testing"

	"github.com/cairnkv/cairn/api/mvccpb"
)

func TestRevisionsAndVersions(t *testing.T) {
	s := newTestStore(t)
	if s.Rev() != 1 || s.CompactRev() != -1 {
		t.Fatalf("new store: rev %d compact %d, want 1 -1", s.Rev(), s.CompactRev())
	}
	steps := []struct {
		do      func()
		rev     int64
		key     string
		want    string // kvString of key afterwards, "<nil>" if absent
		comment string
	}{
		{func() { mustPut(t, s, "k", "v1") }, 2, "k", `k="v1" c2 m2 v1 l0`, "creation: version 1"},
		{func() { mustPut(t, s, "k", "v2") }, 3, "k", `k="v2" c2 m3 v2 l0`, "put: version+1, same create"},
		{func() { mustPut(t, s, "other", "x") }, 4, "k", `k="v2" c2 m3 v2 l0`, "other key untouched"},
		{func() { mustDelete(t, s, "k", "") }, 5, "k", "<nil>", "delete ends the generation"},
		{func() { mustDelete(t, s, "k", "") }, 5, "k", "<nil>", "delete of a missing key: no revision"},
		{func() { mustPut(t, s, "k", "v3") }, 6, "k", `k="v3" c6 m6 v1 l0`, "new generation: version 1, new create"},
		{func() { mustDelete(t, s, "nothing", "nothinz") }, 6, "k", `k="v3" c6 m6 v1 l0`, "empty range delete: no revision"},
		{func() {
			if _, err := s.Txn(TxnRequest{Success: []RequestOp{rng("k", "")}}); err != nil {
				t.Fatal(err)
			}
		}, 6, "k", `k="v3" c6 m6 v1 l0`, "read-only txn: no revision"},
		{func() {
			r, err := s.Txn(TxnRequest{
				Compare: []Compare{{Key: []byte("k"), Target: CompareVersion, Result: CompareEqual, Version: 9}},
				Success: []RequestOp{put("k", "never")},
			})
			if err != nil || r.Succeeded {
				t.Fatalf("%v %v", r, err)
			}
		}, 6, "k", `k="v3" c6 m6 v1 l0`, "failed txn without failure ops: no revision"},
		{func() {
			if _, err := s.DeleteKeys([][]byte{[]byte("nope"), []byte("nada")}); err != nil {
				t.Fatal(err)
			}
		}, 6, "k", `k="v3" c6 m6 v1 l0`, "DeleteKeys of missing keys: no revision"},
		{func() {
			r := mustDelete(t, s, "\x00", "\x00")
			if r.Deleted != 2 || r.Revision != 7 {
				t.Fatalf("delete all: %+v", r)
			}
		}, 7, "k", "<nil>", "multi-key delete: one revision"},
	}
	for i, st := range steps {
		st.do()
		if got := s.Rev(); got != st.rev {
			t.Fatalf("step %d (%s): rev %d, want %d", i, st.comment, got, st.rev)
		}
		if got := kvString(get(t, s, st.key)); got != st.want {
			t.Fatalf("step %d (%s): %s, want %s", i, st.comment, got, st.want)
		}
	}
	// History stays readable.
	hist := map[int64]string{2: `k="v1" c2 m2 v1 l0`, 3: `k="v2" c2 m3 v2 l0`, 4: `k="v2" c2 m3 v2 l0`, 5: "<nil>", 6: `k="v3" c6 m6 v1 l0`, 7: "<nil>"}
	for rev, want := range hist {
		r := mustRange(t, s, RangeRequest{Key: []byte("k"), Revision: rev})
		var kv *mvccpb.KeyValue
		if len(r.Kvs) > 0 {
			kv = r.Kvs[0]
		}
		if got := kvString(kv); got != want || r.Revision != 7 {
			t.Errorf("at %d: %s (header %d), want %s (header 7)", rev, got, r.Revision, want)
		}
	}
}

// rangeFixture builds:
//
//	a: c2 m5 v2 "va2"   b: c3 m3 v1 "vb" lease 7   c: c4 m9 v3 "vc3"
//	d: c6 m6 v1 "vd"    e: created at 7, deleted at 10
func rangeFixture(t *testing.T) *Store {
	opts := testOptions()
	opts.Leases = newFakeLeases(7)
	s, _ := openTestStore(t, opts)
	mustPut(t, s, "a", "va")
	if _, err := s.Put(PutRequest{Key: []byte("b"), Value: []byte("vb"), Lease: 7}); err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, "c", "vc")
	mustPut(t, s, "a", "va2")
	mustPut(t, s, "d", "vd")
	mustPut(t, s, "e", "ve")
	mustPut(t, s, "c", "vc2")
	mustPut(t, s, "c", "vc3")
	mustDelete(t, s, "e", "")
	if s.Rev() != 10 {
		t.Fatalf("fixture rev %d", s.Rev())
	}
	return s
}

func TestRange(t *testing.T) {
	s := rangeFixture(t)
	all := func(r RangeRequest) RangeRequest { r.Key, r.RangeEnd = []byte("\x00"), []byte("\x00"); return r }
	tests := []struct {
		name  string
		req   RangeRequest
		keys  []string
		more  bool
		count int64
		err   error
	}{
		{name: "single", req: RangeRequest{Key: []byte("a")}, keys: []string{"a"}, count: 1},
		{name: "single missing", req: RangeRequest{Key: []byte("zz")}, keys: []string{}, count: 0},
		{name: "single deleted", req: RangeRequest{Key: []byte("e")}, keys: []string{}, count: 0},
		{name: "half-open", req: RangeRequest{Key: []byte("a"), RangeEnd: []byte("c")}, keys: []string{"a", "b"}, count: 2},
		{name: "from key", req: RangeRequest{Key: []byte("b"), RangeEnd: []byte("\x00")}, keys: []string{"b", "c", "d"}, count: 3},
		{name: "all", req: all(RangeRequest{}), keys: []string{"a", "b", "c", "d"}, count: 4},
		{name: "prefix", req: RangeRequest{Key: []byte("c"), RangeEnd: []byte("d")}, keys: []string{"c"}, count: 1},
		{name: "end equals key", req: RangeRequest{Key: []byte("b"), RangeEnd: []byte("b")}, keys: []string{}, count: 0},
		{name: "end below key", req: RangeRequest{Key: []byte("c"), RangeEnd: []byte("a")}, keys: []string{}, count: 0},
		{name: "at revision 7", req: all(RangeRequest{Revision: 7}), keys: []string{"a", "b", "c", "d", "e"}, count: 5},
		{name: "at revision 1", req: all(RangeRequest{Revision: 1}), keys: []string{}, count: 0},
		{name: "negative revision is current", req: all(RangeRequest{Revision: -3}), keys: []string{"a", "b", "c", "d"}, count: 4},
		{name: "future revision", req: all(RangeRequest{Revision: 11}), err: ErrFutureRev},
		{name: "limit", req: all(RangeRequest{Limit: 2}), keys: []string{"a", "b"}, more: true, count: 4},
		{name: "limit exact", req: all(RangeRequest{Limit: 4}), keys: []string{"a", "b", "c", "d"}, count: 4},
		{name: "limit above", req: all(RangeRequest{Limit: 9}), keys: []string{"a", "b", "c", "d"}, count: 4},
		{name: "count only", req: all(RangeRequest{CountOnly: true}), keys: []string{}, count: 4},
		{name: "count only ignores limit", req: all(RangeRequest{CountOnly: true, Limit: 1}), keys: []string{}, count: 4},
		{name: "count only ignores filters", req: all(RangeRequest{CountOnly: true, MinModRevision: 9}), keys: []string{}, count: 4},
		{name: "sort key descend", req: all(RangeRequest{SortTarget: SortByKey, SortOrder: SortDescend}), keys: []string{"d", "c", "b", "a"}, count: 4},
		{name: "sort key ascend", req: all(RangeRequest{SortTarget: SortByKey, SortOrder: SortAscend}), keys: []string{"a", "b", "c", "d"}, count: 4},
		{name: "sort version, order none means ascend", req: all(RangeRequest{SortTarget: SortByVersion}), keys: []string{"b", "d", "a", "c"}, count: 4},
		// etcd's quirk: with order NONE the limit still applies to the fetch
		// (limit+1 keys in key order: a b c), and only those are sorted.
		{name: "sort version, order none, limit", req: all(RangeRequest{SortTarget: SortByVersion, Limit: 2}), keys: []string{"b", "a"}, more: true, count: 4},
		{name: "sort version ascend, limit", req: all(RangeRequest{SortTarget: SortByVersion, SortOrder: SortAscend, Limit: 2}), keys: []string{"b", "d"}, more: true, count: 4},
		{name: "sort create ascend", req: all(RangeRequest{SortTarget: SortByCreate, SortOrder: SortAscend}), keys: []string{"a", "b", "c", "d"}, count: 4},
		{name: "sort mod descend", req: all(RangeRequest{SortTarget: SortByMod, SortOrder: SortDescend}), keys: []string{"c", "d", "a", "b"}, count: 4},
		{name: "sort value descend", req: all(RangeRequest{SortTarget: SortByValue, SortOrder: SortDescend}), keys: []string{"d", "c", "b", "a"}, count: 4},
		{name: "sort then limit", req: all(RangeRequest{SortTarget: SortByMod, SortOrder: SortDescend, Limit: 2}), keys: []string{"c", "d"}, more: true, count: 4},
		{name: "min mod", req: all(RangeRequest{MinModRevision: 6}), keys: []string{"c", "d"}, count: 4},
		{name: "max mod", req: all(RangeRequest{MaxModRevision: 5}), keys: []string{"a", "b"}, count: 4},
		{name: "max create", req: all(RangeRequest{MaxCreateRevision: 3}), keys: []string{"a", "b"}, count: 4},
		{name: "min create max mod", req: all(RangeRequest{MinCreateRevision: 3, MaxModRevision: 6}), keys: []string{"b", "d"}, count: 4},
		{name: "filter then limit", req: all(RangeRequest{MinModRevision: 5, Limit: 1}), keys: []string{"a"}, more: true, count: 4},
		{name: "filter then limit, no more", req: all(RangeRequest{MinModRevision: 9, Limit: 1}), keys: []string{"c"}, count: 4},
		{name: "filter at revision", req: all(RangeRequest{Revision: 7, MinCreateRevision: 6}), keys: []string{"d", "e"}, count: 5},
		{name: "empty key", req: RangeRequest{}, err: ErrEmptyKey},
		{name: "bad sort order", req: RangeRequest{Key: []byte("a"), SortOrder: 3}, err: ErrInvalidSortOption},
		{name: "bad sort target", req: RangeRequest{Key: []byte("a"), SortTarget: 5}, err: ErrInvalidSortOption},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := s.Range(tt.req)
			if !errors.Is(err, tt.err) {
				t.Fatalf("err %v, want %v", err, tt.err)
			}
			if err != nil {
				return
			}
			if got := keysOf(resp.Kvs); !slices.Equal(got, tt.keys) {
				t.Errorf("keys %v, want %v", got, tt.keys)
			}
			if resp.More != tt.more || resp.Count != tt.count || resp.Revision != 10 {
				t.Errorf("more %v count %d rev %d, want %v %d 10", resp.More, resp.Count, resp.Revision, tt.more, tt.count)
			}
			if tt.req.CountOnly && resp.Kvs != nil {
				t.Errorf("count only returned kvs")
			}
		})
	}

	t.Run("values and metadata", func(t *testing.T) {
		got := []string{}
		for _, kv := range mustRange(t, s, all(RangeRequest{Revision: 9})).Kvs {
			got = append(got, kvString(kv))
		}
		want := []string{`a="va2" c2 m5 v2 l0`, `b="vb" c3 m3 v1 l7`, `c="vc3" c4 m9 v3 l0`, `d="vd" c6 m6 v1 l0`, `e="ve" c7 m7 v1 l0`}
		if !slices.Equal(got, want) {
			t.Errorf("got %v\nwant %v", got, want)
		}
	})
	t.Run("keys only", func(t *testing.T) {
		// etcd 3.7 answers keys_only from its index: no value, no lease.
		kv := mustRange(t, s, RangeRequest{Key: []byte("b"), KeysOnly: true}).Kvs[0]
		if got := kvString(kv); got != `b="" c3 m3 v1 l0` || kv.Value != nil {
			t.Errorf("keys only: %s", got)
		}
		// Sorting by value needs the values: the full read, then values dropped.
		kv = mustRange(t, s, RangeRequest{Key: []byte("b"), KeysOnly: true, SortTarget: SortByValue}).Kvs[0]
		if got := kvString(kv); got != `b="" c3 m3 v1 l7` || kv.Value != nil {
			t.Errorf("keys only by value: %s", got)
		}
	})
	t.Run("compacted", func(t *testing.T) {
		if _, err := s.Compact(5); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Range(all(RangeRequest{Revision: 4})); !errors.Is(err, ErrCompacted) {
			t.Errorf("below compaction: %v", err)
		}
		if got := keysOf(mustRange(t, s, all(RangeRequest{Revision: 5})).Kvs); !slices.Equal(got, []string{"a", "b", "c"}) {
			t.Errorf("at compaction: %v", got)
		}
		if got := keysOf(mustRange(t, s, all(RangeRequest{Revision: -1})).Kvs); len(got) != 4 {
			t.Errorf("negative revision after compaction: %v", got)
		}
	})
}

func TestPut(t *testing.T) {
	leases := newFakeLeases(1, 2)
	opts := testOptions()
	opts.Leases = leases
	s, _ := openTestStore(t, opts)

	if _, err := s.Put(PutRequest{Key: []byte("k"), IgnoreValue: true}); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("ignore_value on missing key: %v", err)
	}
	if _, err := s.Put(PutRequest{Key: []byte("k"), IgnoreLease: true}); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("ignore_lease on missing key: %v", err)
	}
	if _, err := s.Put(PutRequest{Key: []byte("k"), Lease: 99}); !errors.Is(err, ErrLeaseNotFound) {
		t.Errorf("missing lease: %v", err)
	}
	for _, tt := range []struct {
		req PutRequest
		err error
	}{
		{PutRequest{}, ErrEmptyKey},
		{PutRequest{Key: []byte("k"), Value: []byte("v"), IgnoreValue: true}, ErrValueProvided},
		{PutRequest{Key: []byte("k"), Lease: 1, IgnoreLease: true}, ErrLeaseProvided},
	} {
		if _, err := s.Put(tt.req); !errors.Is(err, tt.err) {
			t.Errorf("%+v: %v, want %v", tt.req, err, tt.err)
		}
	}
	if s.Rev() != 1 {
		t.Fatalf("failed puts changed the revision: %d", s.Rev())
	}

	r, err := s.Put(PutRequest{Key: []byte("k"), Value: []byte("v1"), Lease: 1, PrevKv: true})
	if err != nil || r.Revision != 2 || r.PrevKv != nil {
		t.Fatalf("first put: %+v %v", r, err)
	}
	r, err = s.Put(PutRequest{Key: []byte("k"), Value: []byte("v2"), PrevKv: true})
	if err != nil || kvString(r.PrevKv) != `k="v1" c2 m2 v1 l1` {
		t.Fatalf("prev_kv: %+v %v", r, err)
	}
	if got := kvString(get(t, s, "k")); got != `k="v2" c2 m3 v2 l0` {
		t.Errorf("put without lease drops it: %s", got)
	}
	if _, err := s.Put(PutRequest{Key: []byte("k"), Value: []byte("v3"), Lease: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(PutRequest{Key: []byte("k"), IgnoreValue: true, Lease: 1}); err != nil {
		t.Fatal(err)
	}
	if got := kvString(get(t, s, "k")); got != `k="v3" c2 m5 v4 l1` {
		t.Errorf("ignore_value: %s", got)
	}
	if _, err := s.Put(PutRequest{Key: []byte("k"), Value: []byte("v5"), IgnoreLease: true}); err != nil {
		t.Fatal(err)
	}
	if got := kvString(get(t, s, "k")); got != `k="v5" c2 m6 v5 l1` {
		t.Errorf("ignore_lease: %s", got)
	}
	mustDelete(t, s, "k", "")
	want := []string{"attach 1 k", "detach 1 k", "attach 2 k", "detach 2 k", "attach 1 k", "detach 1 k"}
	if got := leases.takeCalls(); !slices.Equal(got, want) {
		t.Errorf("lease calls %v, want %v", got, want)
	}
}

func TestLeasesRestoredOnOpen(t *testing.T) {
	opts := testOptions()
	opts.Leases = newFakeLeases(1, 2)
	s, path := openTestStore(t, opts)
	for i, k := range []string{"a", "b", "c"} {
		if _, err := s.Put(PutRequest{Key: []byte(k), Value: []byte("v"), Lease: int64(1 + i%2)}); err != nil {
			t.Fatal(err)
		}
	}
	mustDelete(t, s, "c", "")
	if _, err := s.Put(PutRequest{Key: []byte("b"), Value: []byte("v"), IgnoreLease: true}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	l2 := newFakeLeases(1, 2)
	opts.Leases = l2
	s2, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if got := l2.keys(1); !slices.Equal(got, []string{"a"}) {
		t.Errorf("lease 1 keys %v", got)
	}
	if got := l2.keys(2); !slices.Equal(got, []string{"b"}) {
		t.Errorf("lease 2 keys %v", got)
	}
}

func TestDeleteRange(t *testing.T) {
	tests := []struct {
		name     string
		key, end string
		deleted  int64
		left     []string
	}{
		{"single", "b", "", 1, []string{"a", "c", "d"}},
		{"missing", "zz", "", 0, []string{"a", "b", "c", "d"}},
		{"range", "a", "c", 2, []string{"c", "d"}},
		{"from key", "b", "\x00", 3, []string{"a"}},
		{"all", "\x00", "\x00", 4, []string{}},
		{"already deleted", "e", "", 0, []string{"a", "b", "c", "d"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := rangeFixture(t)
			r, err := s.DeleteRange(DeleteRangeRequest{Key: []byte(tt.key), RangeEnd: []byte(tt.end), PrevKv: true})
			if err != nil {
				t.Fatal(err)
			}
			wantRev := int64(10)
			if tt.deleted > 0 {
				wantRev = 11
			}
			if r.Deleted != tt.deleted || r.Revision != wantRev || int64(len(r.PrevKvs)) != tt.deleted || s.Rev() != wantRev {
				t.Errorf("deleted %d rev %d prev %v store rev %d", r.Deleted, r.Revision, keysOf(r.PrevKvs), s.Rev())
			}
			got := keysOf(mustRange(t, s, RangeRequest{Key: []byte("\x00"), RangeEnd: []byte("\x00")}).Kvs)
			if !slices.Equal(got, tt.left) {
				t.Errorf("left %v, want %v", got, tt.left)
			}
		})
	}
	s := newTestStore(t)
	if _, err := s.DeleteRange(DeleteRangeRequest{}); !errors.Is(err, ErrEmptyKey) {
		t.Errorf("empty key: %v", err)
	}
}

func TestDeleteKeys(t *testing.T) {
	rec := &recorder{}
	opts := testOptions()
	opts.Observer = rec
	s, _ := openTestStore(t, opts)
	mustPut(t, s, "a", "1")
	mustPut(t, s, "b", "2")
	mustPut(t, s, "c", "3")
	r, err := s.DeleteKeys([][]byte{[]byte("a"), []byte("x"), []byte("c"), []byte("a")})
	if err != nil || r.Deleted != 2 || r.Revision != 5 {
		t.Fatalf("%+v %v", r, err)
	}
	var got []string
	for _, ev := range rec.evs[len(rec.evs)-1] {
		got = append(got, eventString(ev))
	}
	if want := []string{"DELETE a m5", "DELETE c m5"}; !slices.Equal(got, want) {
		t.Errorf("events %v, want %v", got, want)
	}
}

func TestObserver(t *testing.T) {
	rec := &recorder{}
	opts := testOptions()
	opts.Observer = rec
	s, _ := openTestStore(t, opts)
	mustPut(t, s, "a", "1")
	mustDelete(t, s, "zz", "")
	if _, err := s.Txn(TxnRequest{Success: []RequestOp{put("b", "2"), del("a", ""), put("c", "3")}}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rec.revs, []int64{2, 3}) {
		t.Fatalf("revisions %v", rec.revs)
	}
	var got []string
	for _, ev := range rec.evs[1] {
		got = append(got, eventString(ev))
	}
	want := []string{`PUT b="2" c3 m3 v1 l0`, "DELETE a m3", `PUT c="3" c3 m3 v1 l0`}
	if !slices.Equal(got, want) {
		t.Errorf("events %v, want %v", got, want)
	}
	// The same events come back from history.
	evs, err := s.Events(3, 3, []byte("\x00"), []byte("\x00"), 0)
	if err != nil {
		t.Fatal(err)
	}
	got = got[:0]
	for _, ev := range evs {
		got = append(got, eventString(ev))
	}
	if !slices.Equal(got, want) {
		t.Errorf("history %v, want %v", got, want)
	}
}

func TestEvents(t *testing.T) {
	s := newTestStore(t)
	mustPut(t, s, "a", "1")                                                                          // 2
	mustPut(t, s, "b", "1")                                                                          // 3
	if _, err := s.Txn(TxnRequest{Success: []RequestOp{put("a", "2"), put("c", "1")}}); err != nil { // 4
		t.Fatal(err)
	}
	mustDelete(t, s, "a", "") // 5
	mustPut(t, s, "d", "1")   // 6
	render := func(evs []*mvccpb.Event) []string {
		out := []string{}
		for _, ev := range evs {
			out = append(out, eventString(ev))
		}
		return out
	}
	tests := []struct {
		from, to int64
		key, end string
		limit    int
		want     []string
	}{
		{2, 0, "\x00", "\x00", 0, []string{`PUT a="1" c2 m2 v1 l0`, `PUT b="1" c3 m3 v1 l0`, `PUT a="2" c2 m4 v2 l0`, `PUT c="1" c4 m4 v1 l0`, "DELETE a m5", `PUT d="1" c6 m6 v1 l0`}},
		{3, 4, "\x00", "\x00", 0, []string{`PUT b="1" c3 m3 v1 l0`, `PUT a="2" c2 m4 v2 l0`, `PUT c="1" c4 m4 v1 l0`}},
		{0, 99, "a", "", 0, []string{`PUT a="1" c2 m2 v1 l0`, `PUT a="2" c2 m4 v2 l0`, "DELETE a m5"}},
		{2, 0, "b", "d", 0, []string{`PUT b="1" c3 m3 v1 l0`, `PUT c="1" c4 m4 v1 l0`}},
		// A limit never splits a revision.
		{3, 0, "\x00", "\x00", 2, []string{`PUT b="1" c3 m3 v1 l0`, `PUT a="2" c2 m4 v2 l0`, `PUT c="1" c4 m4 v1 l0`}},
		{3, 0, "\x00", "\x00", 1, []string{`PUT b="1" c3 m3 v1 l0`}},
		{7, 0, "\x00", "\x00", 0, []string{}},
	}
	for i, tt := range tests {
		evs, err := s.Events(tt.from, tt.to, []byte(tt.key), []byte(tt.end), tt.limit)
		if err != nil {
			t.Fatal(err)
		}
		if got := render(evs); !slices.Equal(got, tt.want) {
			t.Errorf("#%d: %v\nwant %v", i, got, tt.want)
		}
	}
	if _, err := s.Compact(5); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Events(4, 0, []byte("a"), nil, 0); !errors.Is(err, ErrCompacted) {
		t.Errorf("below compaction: %v", err)
	}
	// The tombstone at the compaction point survives it, as in etcd.
	evs, err := s.Events(5, 0, []byte("\x00"), []byte("\x00"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := render(evs), []string{"DELETE a m5", `PUT d="1" c6 m6 v1 l0`}; !slices.Equal(got, want) {
		t.Errorf("from the compaction point: %v, want %v", got, want)
	}
}
