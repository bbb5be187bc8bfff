package mvcc

import (
	"errors"
	"slices"
	"testing"
)

func TestTxnCompare(t *testing.T) {
	s := rangeFixture(t) // a v2, b v1 lease 7, c v3, d v1; e deleted
	cmp := func(key, end string, target CompareTarget, result CompareResult, f func(*Compare)) Compare {
		c := Compare{Key: []byte(key), RangeEnd: []byte(end), Target: target, Result: result}
		if f != nil {
			f(&c)
		}
		return c
	}
	val := func(v string) func(*Compare) { return func(c *Compare) { c.Value = []byte(v) } }
	ver := func(v int64) func(*Compare) { return func(c *Compare) { c.Version = v } }
	tests := []struct {
		name string
		c    Compare
		want bool
	}{
		// A VALUE compare on a missing key fails whatever the operator.
		{"missing value equal empty", cmp("zz", "", CompareValue, CompareEqual, nil), false},
		{"missing value not equal", cmp("zz", "", CompareValue, CompareNotEqual, val("x")), false},
		{"missing value greater", cmp("zz", "", CompareValue, CompareGreater, nil), false},
		{"missing value less", cmp("zz", "", CompareValue, CompareLess, val("x")), false},
		{"deleted value equal", cmp("e", "", CompareValue, CompareEqual, val("ve")), false},
		// Other targets see a missing key as zeros.
		{"missing version equal 0", cmp("zz", "", CompareVersion, CompareEqual, nil), true},
		{"missing version greater 0", cmp("zz", "", CompareVersion, CompareGreater, nil), false},
		{"missing create less 1", cmp("zz", "", CompareCreate, CompareLess, func(c *Compare) { c.CreateRevision = 1 }), true},
		{"missing mod not equal 0", cmp("zz", "", CompareMod, CompareNotEqual, nil), false},
		{"missing lease equal 0", cmp("zz", "", CompareLease, CompareEqual, nil), true},
		{"deleted create equal 0", cmp("e", "", CompareCreate, CompareEqual, nil), true},
		// Present keys.
		{"value equal", cmp("a", "", CompareValue, CompareEqual, val("va2")), true},
		{"value greater", cmp("a", "", CompareValue, CompareGreater, val("va")), true},
		{"value less", cmp("a", "", CompareValue, CompareLess, val("va")), false},
		{"version equal", cmp("c", "", CompareVersion, CompareEqual, ver(3)), true},
		{"create equal", cmp("c", "", CompareCreate, CompareEqual, func(c *Compare) { c.CreateRevision = 4 }), true},
		{"mod greater", cmp("c", "", CompareMod, CompareGreater, func(c *Compare) { c.ModRevision = 8 }), true},
		{"lease equal", cmp("b", "", CompareLease, CompareEqual, func(c *Compare) { c.Lease = 7 }), true},
		{"lease of unleased", cmp("a", "", CompareLease, CompareEqual, nil), true},
		// The union holds another member: compare against zero.
		{"version with a value union", cmp("a", "", CompareVersion, CompareGreater, val("zzz")), true},
		// Ranges: every key must satisfy.
		{"range all satisfy", cmp("a", "c", CompareVersion, CompareGreater, nil), true},
		{"range one fails", cmp("a", "c", CompareVersion, CompareGreater, ver(1)), false},
		{"from key", cmp("b", "\x00", CompareCreate, CompareGreater, func(c *Compare) { c.CreateRevision = 2 }), true},
		{"empty range version 0", cmp("x", "z", CompareVersion, CompareEqual, nil), true},
		{"empty range value", cmp("x", "z", CompareValue, CompareNotEqual, val("q")), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := s.Txn(TxnRequest{Compare: []Compare{tt.c}, Success: []RequestOp{rng("a", "")}, Failure: []RequestOp{rng("b", "")}})
			if err != nil {
				t.Fatal(err)
			}
			if r.Succeeded != tt.want {
				t.Errorf("succeeded %v, want %v", r.Succeeded, tt.want)
			}
			wantKey := "b"
			if tt.want {
				wantKey = "a"
			}
			if len(r.Responses) != 1 || keysOf(r.Responses[0].Range.Kvs)[0] != wantKey {
				t.Errorf("wrong branch ran: %+v", r.Responses)
			}
		})
	}
	// Several compares: all must hold.
	r, err := s.Txn(TxnRequest{Compare: []Compare{
		cmp("a", "", CompareVersion, CompareEqual, ver(2)),
		cmp("zz", "", CompareValue, CompareEqual, nil),
	}})
	if err != nil || r.Succeeded {
		t.Errorf("conjunction: %+v %v", r, err)
	}
	if s.Rev() != 10 {
		t.Errorf("compare-only txns changed the revision: %d", s.Rev())
	}
}

func TestTxnRevisions(t *testing.T) {
	rec := &recorder{}
	opts := testOptions()
	opts.Observer = rec
	s, _ := openTestStore(t, opts)
	mustPut(t, s, "a", "0") // 2

	r, err := s.Txn(TxnRequest{Success: []RequestOp{
		rng("a", ""),    // before any write: header 2
		put("x", "1"),   // 3
		rng("x", ""),    // sees the put: header 3
		del("nope", ""), // deletes nothing, but the txn changed: 3
		put("y", "2"),
		del("a", ""),
		rng("\x00", "\x00"),
	}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Revision != 3 || s.Rev() != 3 || !r.Succeeded {
		t.Fatalf("txn revision %d store %d", r.Revision, s.Rev())
	}
	rs := r.Responses
	if rs[0].Range.Revision != 2 || kvString(rs[0].Range.Kvs[0]) != `a="0" c2 m2 v1 l0` {
		t.Errorf("first range: %+v", rs[0].Range)
	}
	if rs[1].Put.Revision != 3 || rs[4].Put.Revision != 3 {
		t.Errorf("put revisions %d %d", rs[1].Put.Revision, rs[4].Put.Revision)
	}
	if rs[2].Range.Revision != 3 || kvString(rs[2].Range.Kvs[0]) != `x="1" c3 m3 v1 l0` {
		t.Errorf("range after put: %+v", rs[2].Range)
	}
	if rs[3].DeleteRange.Revision != 3 || rs[3].DeleteRange.Deleted != 0 {
		t.Errorf("no-op delete in a changing txn: %+v", rs[3].DeleteRange)
	}
	if got := keysOf(rs[6].Range.Kvs); !slices.Equal(got, []string{"x", "y"}) {
		t.Errorf("final range %v", got)
	}
	// One revision, sub revisions in order.
	var subs []int64
	v, err := s.be.View()
	if err != nil {
		t.Fatal(err)
	}
	v.Scan(revKeyMain(3), revKeyMain(4), func(k, _ []byte) bool {
		r, _ := parseRevKey(k)
		subs = append(subs, r.sub)
		return true
	})
	v.Release()
	if !slices.Equal(subs, []int64{0, 1, 2}) {
		t.Errorf("sub revisions %v", subs)
	}
	if len(rec.revs) != 2 || len(rec.evs[1]) != 3 {
		t.Errorf("observer saw %v", rec.revs)
	}

	// A write txn that changes nothing: no revision; inner delete at 3.
	r, err = s.Txn(TxnRequest{Success: []RequestOp{del("nope", "")}})
	if err != nil || r.Revision != 3 || r.Responses[0].DeleteRange.Revision != 3 || s.Rev() != 3 {
		t.Errorf("no-op write txn: %+v %v", r, err)
	}
	if len(rec.revs) != 2 {
		t.Errorf("observer called for a no-op txn")
	}
}

func TestTxnNested(t *testing.T) {
	s := newTestStore(t)
	mustPut(t, s, "n", "0") // 2
	inner := TxnRequest{
		// Compares, nested ones included, see the state before the txn: n
		// is still at version 1 although the outer txn put it first.
		Compare: []Compare{{Key: []byte("n"), Target: CompareVersion, Result: CompareEqual, Version: 1}},
		Success: []RequestOp{rng("n", ""), put("in", "yes")},
		Failure: []RequestOp{put("in", "no")},
	}
	r, err := s.Txn(TxnRequest{Success: []RequestOp{put("n", "1"), txnOp(inner), put("after", "x")}})
	if err != nil {
		t.Fatal(err)
	}
	nested := r.Responses[1].Txn
	if !nested.Succeeded || nested.Revision != 0 {
		t.Fatalf("nested: succeeded %v revision %d (want true, 0 as etcd)", nested.Succeeded, nested.Revision)
	}
	if kv := nested.Responses[0].Range.Kvs[0]; kvString(kv) != `n="1" c2 m3 v2 l0` || nested.Responses[0].Range.Revision != 3 {
		t.Errorf("nested range sees the earlier write: %s", kvString(kv))
	}
	if string(get(t, s, "in").Value) != "yes" || s.Rev() != 3 || r.Revision != 3 {
		t.Errorf("nested put: rev %d", s.Rev())
	}

	// Nested failure branch, two levels, and path bookkeeping across siblings.
	no := Compare{Key: []byte("missing"), Target: CompareVersion, Result: CompareGreater}
	r, err = s.Txn(TxnRequest{Success: []RequestOp{
		txnOp(TxnRequest{Compare: []Compare{no}, Failure: []RequestOp{
			txnOp(TxnRequest{Success: []RequestOp{put("deep", "1")}}),
		}}),
		txnOp(TxnRequest{Compare: []Compare{no}, Success: []RequestOp{put("s2", "wrong")}, Failure: []RequestOp{put("s2", "right")}}),
	}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Responses[0].Txn.Succeeded || !r.Responses[0].Txn.Responses[0].Txn.Succeeded || r.Responses[1].Txn.Succeeded {
		t.Errorf("paths: %+v", r)
	}
	if string(get(t, s, "deep").Value) != "1" || string(get(t, s, "s2").Value) != "right" {
		t.Errorf("nested writes wrong")
	}
}

func TestTxnChecks(t *testing.T) {
	opts := testOptions()
	opts.Leases = newFakeLeases(1)
	s, _ := openTestStore(t, opts)
	mustPut(t, s, "a", "1") // 2
	mustPut(t, s, "b", "1") // 3
	tests := []struct {
		name string
		req  TxnRequest
		err  error
	}{
		{"missing lease on the taken path", TxnRequest{Success: []RequestOp{put("x", "1"), {Put: &PutRequest{Key: []byte("y"), Lease: 9}}}}, ErrLeaseNotFound},
		{"ignore_value on a missing key", TxnRequest{Success: []RequestOp{put("x", "1"), {Put: &PutRequest{Key: []byte("y"), IgnoreValue: true}}}}, ErrKeyNotFound},
		{"future range", TxnRequest{Success: []RequestOp{put("x", "1"), {Range: &RangeRequest{Key: []byte("a"), Revision: 4}}}}, ErrFutureRev},
		{"nested missing lease", TxnRequest{Success: []RequestOp{put("x", "1"), txnOp(TxnRequest{Success: []RequestOp{{Put: &PutRequest{Key: []byte("y"), Lease: 9}}}})}}, ErrLeaseNotFound},
		{"empty op", TxnRequest{Success: []RequestOp{{}}}, ErrKeyNotFound},
		{"empty compare key", TxnRequest{Compare: []Compare{{}}}, ErrEmptyKey},
		{"empty put key", TxnRequest{Failure: []RequestOp{put("", "v")}}, ErrEmptyKey},
		{"value provided", TxnRequest{Success: []RequestOp{{Put: &PutRequest{Key: []byte("a"), Value: []byte("v"), IgnoreValue: true}}}}, ErrValueProvided},
		// Not taken: not checked.
		{"bad lease on the other branch", TxnRequest{Failure: []RequestOp{{Put: &PutRequest{Key: []byte("y"), Lease: 9}}}, Success: []RequestOp{rng("a", "")}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Txn(tt.req)
			if !errors.Is(err, tt.err) {
				t.Fatalf("err %v, want %v", err, tt.err)
			}
			if s.Rev() != 3 || get(t, s, "x") != nil {
				t.Errorf("a failed txn changed something: rev %d", s.Rev())
			}
		})
	}
	if _, err := s.Compact(3); err != nil {
		t.Fatal(err)
	}
	// etcd's quirk: inside a txn a negative revision fails once compacted.
	_, err := s.Txn(TxnRequest{Success: []RequestOp{{Range: &RangeRequest{Key: []byte("a"), Revision: -1}}}})
	if !errors.Is(err, ErrCompacted) {
		t.Errorf("negative revision in txn after compaction: %v", err)
	}
	mustPut(t, s, "c", "1")
	_, err = s.Txn(TxnRequest{Success: []RequestOp{{Range: &RangeRequest{Key: []byte("a"), Revision: 2}}}})
	if !errors.Is(err, ErrCompacted) {
		t.Errorf("compacted range in txn: %v", err)
	}
	if err := ValidateTxn(&TxnRequest{Success: []RequestOp{put("a", ""), put("b", ""), put("c", "")}}, 2); !errors.Is(err, ErrTooManyOps) {
		t.Errorf("too many ops: %v", err)
	}
	nested := TxnRequest{Success: []RequestOp{txnOp(TxnRequest{Success: []RequestOp{put("a", ""), put("b", "")}})}}
	if err := ValidateTxn(&nested, 2); !errors.Is(err, ErrTooManyOps) {
		t.Errorf("nested txn gets the budget its parent leaves: %v", err)
	}
	if err := ValidateTxn(&nested, 3); err != nil {
		t.Errorf("nested within budget: %v", err)
	}
}

// TestTxnDuplicateKeys follows etcd's TestV3TxnDuplicateKeys and a few more
// corners of its rule.
func TestTxnDuplicateKeys(t *testing.T) {
	putreq := put("abc", "def")
	delKey := del("abc", "")
	delInRange := del("a", "b")
	delOutOfRange := del("abb", "abc")
	txnDel := txnOp(TxnRequest{Success: []RequestOp{delInRange}})
	txnDelTwoSide := txnOp(TxnRequest{Success: []RequestOp{delInRange}, Failure: []RequestOp{delInRange}})
	txnPut := txnOp(TxnRequest{Success: []RequestOp{putreq}})
	txnPutTwoSide := txnOp(TxnRequest{Success: []RequestOp{putreq}, Failure: []RequestOp{putreq}})
	tests := []struct {
		name string
		ops  []RequestOp
		err  error
	}{
		{"put put", []RequestOp{putreq, putreq}, ErrDuplicateKey},
		{"put delete", []RequestOp{putreq, delKey}, ErrDuplicateKey},
		{"put delete range", []RequestOp{putreq, delInRange}, ErrDuplicateKey},
		{"put, nested delete", []RequestOp{putreq, txnDel}, ErrDuplicateKey},
		{"delete, nested put", []RequestOp{delInRange, txnPut}, ErrDuplicateKey},
		{"two-sided nested puts twice", []RequestOp{txnPutTwoSide, txnPutTwoSide}, ErrDuplicateKey},
		{"delete elsewhere, two-sided put", []RequestOp{delOutOfRange, txnPutTwoSide}, nil},
		{"nested deletes", []RequestOp{txnDel, txnDelTwoSide}, nil},
		{"deletes repeat", []RequestOp{delKey, delInRange, delKey, delInRange}, nil},
		{"put, delete elsewhere", []RequestOp{putreq, delOutOfRange}, nil},
		// etcd quirks kept on purpose.
		{"from-key delete covers nothing", []RequestOp{del("a", "\x00"), put("b", "1")}, nil},
		{"nested put then nested delete", []RequestOp{txnPut, txnDel}, nil},
		{"inverted range covers nothing", []RequestOp{del("c", "a"), put("b", "1")}, nil},
		{"range end excluded", []RequestOp{del("a", "abc"), putreq}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := TxnRequest{Success: tt.ops}
			if err := ValidateTxn(&req, 128); !errors.Is(err, tt.err) {
				t.Errorf("ValidateTxn: %v, want %v", err, tt.err)
			}
			s := newTestStore(t)
			if _, err := s.Txn(req); !errors.Is(err, tt.err) {
				t.Errorf("Txn: %v, want %v", err, tt.err)
			}
			// The failure branch is checked on its own.
			req = TxnRequest{Success: []RequestOp{putreq}, Failure: tt.ops}
			if err := ValidateTxn(&req, 128); !errors.Is(err, tt.err) {
				t.Errorf("failure branch: %v, want %v", err, tt.err)
			}
		})
	}
}

// A from-key delete passes the duplicate check, so a txn may delete a key
// and then put it with ignore_value; etcd panics there, cairn keeps the
// value the check saw.
func TestTxnIgnoreValueAfterFromKeyDelete(t *testing.T) {
	s := newTestStore(t)
	mustPut(t, s, "b", "old")
	mustPut(t, s, "c", "gone")
	r, err := s.Txn(TxnRequest{Success: []RequestOp{del("a", "\x00"), {Put: &PutRequest{Key: []byte("b"), IgnoreValue: true}}}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Responses[0].DeleteRange.Deleted != 2 {
		t.Errorf("deleted %d", r.Responses[0].DeleteRange.Deleted)
	}
	if got := kvString(get(t, s, "b")); got != `b="old" c4 m4 v1 l0` {
		t.Errorf("b: %s", got)
	}
	if get(t, s, "c") != nil {
		t.Errorf("c survived")
	}
}
