package mvcc

import (
	"bytes"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

var (
	modelOps  = flag.Int("mvcc.model-ops", 1500, "operations per model-based run")
	modelSeed = flag.Uint64("mvcc.model-seed", 0, "seed of the model-based run (0: fixed seed 1 plus one from the clock)")
)

// The model-based test drives the store and a plain in-memory model of
// etcd's semantics with the same random operations and compares every
// answer. A failure reports the seed and a shrunk failing sequence.
//
//	go test ./mvcc -run TestModel -mvcc.model-ops=100000 -mvcc.model-seed=N
func TestModel(t *testing.T) {
	seeds := []uint64{1, uint64(time.Now().UnixNano())}
	if *modelSeed != 0 {
		seeds = []uint64{*modelSeed}
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			ops := genOps(seed, *modelOps)
			t.Logf("seed %d, %d operations", seed, len(ops))
			idx, err := runModel(t, ops)
			if err == nil {
				return
			}
			t.Errorf("seed %d: operation %d failed: %v", seed, idx, err)
			short := shrink(t, ops[:idx+1])
			var b strings.Builder
			for i, op := range short {
				fmt.Fprintf(&b, "\n  %3d %s", i, op)
			}
			_, err = runModel(t, short)
			t.Fatalf("shortest failing sequence (%d operations, error: %v):%s", len(short), err, b.String())
		})
	}
}

// shrink removes chunks of operations while the sequence still fails.
func shrink(t *testing.T, ops []mop) []mop {
	budget := 400
	for chunk := len(ops) / 2; chunk >= 1 && budget > 0; {
		removed := false
		for start := 0; start+chunk <= len(ops) && budget > 0; {
			cand := slices.Concat(ops[:start], ops[start+chunk:])
			budget--
			if idx, err := runModel(t, cand); err != nil {
				ops = cand[:idx+1]
				removed = true
				continue
			}
			start += chunk
		}
		if !removed {
			chunk /= 2
		}
	}
	return ops
}

type mopKind int

const (
	mPut mopKind = iota
	mDelete
	mTxn
	mCompact
	mRange
	mEvents
	mReopen
)

// mop is one generated operation; revisions are relative to the current
// one when the operation runs, so a shrunk sequence stays meaningful.
type mop struct {
	kind  mopKind
	put   PutRequest
	del   DeleteRangeRequest
	txn   TxnRequest
	rng   RangeRequest
	back  int64 // revision = current - back (negative: the future)
	limit int
}

func (o mop) String() string {
	switch o.kind {
	case mPut:
		return fmt.Sprintf("put %q=%q lease=%d prev=%v ignoreValue=%v ignoreLease=%v", o.put.Key, o.put.Value, o.put.Lease, o.put.PrevKv, o.put.IgnoreValue, o.put.IgnoreLease)
	case mDelete:
		return fmt.Sprintf("delete [%q, %q) prev=%v", o.del.Key, o.del.RangeEnd, o.del.PrevKv)
	case mTxn:
		return "txn " + txnString(&o.txn)
	case mCompact:
		return fmt.Sprintf("compact current-%d", o.back)
	case mRange:
		return fmt.Sprintf("range current-%d %s", o.back, rangeString(&o.rng))
	case mEvents:
		return fmt.Sprintf("events from current-%d limit %d [%q, %q)", o.back, o.limit, o.rng.Key, o.rng.RangeEnd)
	case mReopen:
		return "close and reopen"
	}
	return "?"
}

func rangeString(r *RangeRequest) string {
	return fmt.Sprintf("[%q, %q) rev=%d limit=%d sort=%d/%d keysOnly=%v countOnly=%v mod=[%d,%d] create=[%d,%d]",
		r.Key, r.RangeEnd, r.Revision, r.Limit, r.SortTarget, r.SortOrder, r.KeysOnly, r.CountOnly,
		r.MinModRevision, r.MaxModRevision, r.MinCreateRevision, r.MaxCreateRevision)
}

func txnString(r *TxnRequest) string {
	var b strings.Builder
	b.WriteString("{if")
	for _, c := range r.Compare {
		fmt.Fprintf(&b, " [%q,%q) t%d r%d v%d c%d m%d l%d %q;", c.Key, c.RangeEnd, c.Target, c.Result, c.Version, c.CreateRevision, c.ModRevision, c.Lease, c.Value)
	}
	for _, br := range []struct {
		name string
		ops  []RequestOp
	}{{" then", r.Success}, {" else", r.Failure}} {
		b.WriteString(br.name)
		for _, op := range br.ops {
			switch {
			case op.Range != nil:
				b.WriteString(" range " + rangeString(op.Range) + ";")
			case op.Put != nil:
				fmt.Fprintf(&b, " put %q=%q l%d iv%v il%v;", op.Put.Key, op.Put.Value, op.Put.Lease, op.Put.IgnoreValue, op.Put.IgnoreLease)
			case op.DeleteRange != nil:
				fmt.Fprintf(&b, " del [%q,%q) prev=%v;", op.DeleteRange.Key, op.DeleteRange.RangeEnd, op.DeleteRange.PrevKv)
			case op.Txn != nil:
				b.WriteString(" " + txnString(op.Txn) + ";")
			}
		}
	}
	b.WriteString("}")
	return b.String()
}

// Generation.

var modelKeys = []string{"a", "b", "c", "d", "e", "f", "g", "h"}

type gen struct{ r *rand.Rand }

func (g gen) key() []byte { return []byte(modelKeys[g.r.IntN(len(modelKeys))]) }

func (g gen) value() []byte {
	if g.r.IntN(8) == 0 {
		return nil
	}
	return []byte(fmt.Sprintf("v%d", g.r.IntN(6)))
}

// span returns a key range in one of the request forms.
func (g gen) span() (key, end []byte) {
	switch g.r.IntN(6) {
	case 0, 1:
		return g.key(), nil
	case 2:
		return g.key(), []byte("\x00")
	case 3:
		return []byte("\x00"), []byte("\x00")
	default:
		a, b := g.key(), g.key()
		if g.r.IntN(5) > 0 && bytes.Compare(a, b) > 0 {
			a, b = b, a
		}
		return a, b
	}
}

func (g gen) lease() int64 { return []int64{0, 0, 0, 1, 2, 9}[g.r.IntN(6)] }

func (g gen) putReq() *PutRequest {
	p := &PutRequest{Key: g.key(), Value: g.value(), Lease: g.lease(), PrevKv: g.r.IntN(3) == 0}
	switch g.r.IntN(10) {
	case 0:
		p.IgnoreValue, p.Value = true, nil
	case 1:
		p.IgnoreLease, p.Lease = true, 0
	}
	return p
}

func (g gen) rangeReq(withRev bool) *RangeRequest {
	r := &RangeRequest{}
	r.Key, r.RangeEnd = g.span()
	if g.r.IntN(3) == 0 {
		r.Limit = int64(g.r.IntN(4))
	}
	if g.r.IntN(3) == 0 {
		r.SortTarget = SortTarget(g.r.IntN(5))
		r.SortOrder = SortOrder(g.r.IntN(3))
	}
	r.KeysOnly = g.r.IntN(6) == 0
	r.CountOnly = g.r.IntN(8) == 0
	if g.r.IntN(5) == 0 {
		r.MinModRevision = int64(g.r.IntN(40))
		r.MaxCreateRevision = int64(g.r.IntN(60))
	}
	if g.r.IntN(6) == 0 {
		r.MaxModRevision = int64(g.r.IntN(80))
		r.MinCreateRevision = int64(g.r.IntN(30))
	}
	_ = withRev
	return r
}

func (g gen) compare() Compare {
	c := Compare{Target: CompareTarget(g.r.IntN(5)), Result: CompareResult(g.r.IntN(4))}
	c.Key, c.RangeEnd = g.span()
	switch c.Target {
	case CompareValue:
		c.Value = g.value()
	case CompareVersion:
		c.Version = int64(g.r.IntN(4))
	case CompareCreate:
		c.CreateRevision = int64(g.r.IntN(30))
	case CompareMod:
		c.ModRevision = int64(g.r.IntN(30))
	case CompareLease:
		c.Lease = g.lease()
	}
	return c
}

func (g gen) txn(depth int) *TxnRequest {
	t := &TxnRequest{}
	for range g.r.IntN(3) {
		t.Compare = append(t.Compare, g.compare())
	}
	ops := func() []RequestOp {
		var out []RequestOp
		for range g.r.IntN(4) {
			switch n := g.r.IntN(10); {
			case n < 4:
				out = append(out, RequestOp{Put: g.putReq()})
			case n < 6:
				d := &DeleteRangeRequest{PrevKv: g.r.IntN(2) == 0}
				d.Key, d.RangeEnd = g.span()
				out = append(out, RequestOp{DeleteRange: d})
			case n < 9 || depth > 0:
				out = append(out, RequestOp{Range: g.rangeReq(false)})
			default:
				out = append(out, RequestOp{Txn: g.txn(depth + 1)})
			}
		}
		return out
	}
	t.Success, t.Failure = ops(), ops()
	return t
}

func genOps(seed uint64, n int) []mop {
	g := gen{rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
	ops := make([]mop, 0, n)
	for range n {
		var o mop
		switch k := g.r.IntN(100); {
		case k < 30:
			o = mop{kind: mPut, put: *g.putReq()}
		case k < 40:
			d := DeleteRangeRequest{PrevKv: g.r.IntN(2) == 0}
			d.Key, d.RangeEnd = g.span()
			o = mop{kind: mDelete, del: d}
		case k < 62:
			o = mop{kind: mTxn, txn: *g.txn(0)}
		case k < 66:
			o = mop{kind: mCompact, back: int64(g.r.IntN(12)) - 1}
		case k < 90:
			o = mop{kind: mRange, rng: *g.rangeReq(true), back: int64(g.r.IntN(25)) - 2}
		case k < 97:
			o = mop{kind: mEvents, back: int64(g.r.IntN(15)) - 1, limit: g.r.IntN(4)}
			o.rng.Key, o.rng.RangeEnd = g.span()
		default:
			o = mop{kind: mReopen}
		}
		ops = append(ops, o)
	}
	return ops
}

// The model.

type mkv struct {
	val                     string
	create, mod, ver, lease int64
}

type mstate map[string]mkv

type model struct {
	rev     int64
	compact int64
	states  map[int64]mstate   // the keyspace at each revision >= compact
	events  map[int64][]string // the events of each revision
	leases  map[int64]bool
}

func newModel() *model {
	return &model{rev: 1, compact: -1, states: map[int64]mstate{1: {}}, events: map[int64][]string{}, leases: map[int64]bool{1: true, 2: true}}
}

func (m *model) at(rev int64) mstate { return m.states[rev] }

func renderKV(key string, kv mkv, keysOnlyFast bool) string {
	if keysOnlyFast {
		kv.lease = 0
	}
	return fmt.Sprintf("%s=%q c%d m%d v%d l%d", key, kv.val, kv.create, kv.mod, kv.ver, kv.lease)
}

func inSpan(key, end []byte, k string) bool { return span{key, end}.contains([]byte(k)) }

// rangeResult is a range answer in comparable form.
type rangeResult struct {
	kvs   []string
	more  bool
	count int64
	rev   int64
}

// modelRange answers a range at revision cur (the header revision) from the
// states. Ties of a non-key sort are broken by key here; all lists every
// element that passed the filters, rendered, for checkRange.
func (m *model) modelRange(st func(int64) mstate, cur int64, r *RangeRequest) (res rangeResult, all []string, err error) {
	rev := r.Revision
	if rev > cur {
		return res, nil, ErrFutureRev
	}
	if rev <= 0 {
		rev = cur
	}
	if rev < m.compact {
		return res, nil, ErrCompacted
	}
	var items []mkvItem
	for k, kv := range st(rev) {
		if inSpan(r.Key, r.RangeEnd, k) {
			items = append(items, mkvItem{k, kv})
		}
	}
	slices.SortFunc(items, func(a, b mkvItem) int { return strings.Compare(a.key, b.key) })
	res = rangeResult{count: int64(len(items)), rev: cur}
	if r.CountOnly {
		return res, nil, nil
	}
	// etcd decides whether to fetch everything from the order as given: a
	// non-key target with order NONE still fetches only limit+1 keys, in key
	// order, and sorts those.
	rawDefault := r.SortOrder == SortNone || (r.SortTarget == SortByKey && r.SortOrder == SortAscend)
	filters := r.MinModRevision != 0 || r.MaxModRevision != 0 || r.MinCreateRevision != 0 || r.MaxCreateRevision != 0
	if rawDefault && !filters && r.Limit > 0 && int64(len(items)) > r.Limit+1 {
		items = items[:r.Limit+1]
	}
	var kept []mkvItem
	for _, it := range items {
		kv := it.kv
		if (r.MaxModRevision != 0 && kv.mod > r.MaxModRevision) || (r.MinModRevision != 0 && kv.mod < r.MinModRevision) ||
			(r.MaxCreateRevision != 0 && kv.create > r.MaxCreateRevision) || (r.MinCreateRevision != 0 && kv.create < r.MinCreateRevision) {
			continue
		}
		kept = append(kept, it)
	}
	order := r.SortOrder
	if r.SortTarget != SortByKey && order == SortNone {
		order = SortAscend
	}
	if order != SortNone {
		slices.SortStableFunc(kept, func(a, b mkvItem) int {
			c := sortKey(a, r.SortTarget, b)
			if order == SortDescend {
				c = -c
			}
			return c
		})
	}
	fast := r.KeysOnly && r.SortTarget != SortByValue
	render := func(it mkvItem) string {
		kv := it.kv
		if r.KeysOnly {
			kv.val = ""
		}
		return renderKV(it.key, kv, fast)
	}
	for _, it := range kept {
		all = append(all, render(it))
	}
	if r.Limit > 0 && int64(len(kept)) > r.Limit {
		kept = kept[:r.Limit]
		res.more = true
	}
	for _, it := range kept {
		res.kvs = append(res.kvs, render(it))
	}
	return res, all, nil
}

type mkvItem struct {
	key string
	kv  mkv
}

func sortKey(a mkvItem, t SortTarget, b mkvItem) int {
	switch t {
	case SortByVersion:
		return cmp64(a.kv.ver, b.kv.ver)
	case SortByCreate:
		return cmp64(a.kv.create, b.kv.create)
	case SortByMod:
		return cmp64(a.kv.mod, b.kv.mod)
	case SortByValue:
		return strings.Compare(a.kv.val, b.kv.val)
	}
	return strings.Compare(a.key, b.key)
}

// checkRange compares an answer with the model's. With a non-key sort
// etcd's (unstable) sort may order tied elements in any way, so it checks
// the sort values position by position, and that each element returned is
// a distinct one that passed the filters.
func checkRange(got *RangeResponse, want rangeResult, all []string, r *RangeRequest) error {
	var gotKVs []string
	for _, kv := range got.Kvs {
		if r.KeysOnly && kv.Value != nil {
			return fmt.Errorf("keys_only returned a value")
		}
		gotKVs = append(gotKVs, kvString(kv))
	}
	if got.More != want.more || got.Count != want.count || got.Revision != want.rev {
		return fmt.Errorf("more/count/rev %v/%d/%d, want %v/%d/%d", got.More, got.Count, got.Revision, want.more, want.count, want.rev)
	}
	if r.SortTarget == SortByKey || r.CountOnly {
		if !slices.Equal(gotKVs, want.kvs) {
			return fmt.Errorf("kvs %v, want %v", gotKVs, want.kvs)
		}
		return nil
	}
	if len(gotKVs) != len(want.kvs) {
		return fmt.Errorf("kvs %v, want %v (ties in any order)", gotKVs, want.kvs)
	}
	seen := map[string]bool{}
	for i, kv := range gotKVs {
		if sortValueOf(kv, r.SortTarget) != sortValueOf(want.kvs[i], r.SortTarget) {
			return fmt.Errorf("kvs %v, want %v (ties in any order)", gotKVs, want.kvs)
		}
		if seen[kv] || !slices.Contains(all, kv) {
			return fmt.Errorf("kvs %v: %s is not one of %v", gotKVs, kv, all)
		}
		seen[kv] = true
	}
	return nil
}

// sortValueOf extracts the sort value from a rendered key-value.
func sortValueOf(s string, t SortTarget) string {
	eq := strings.IndexByte(s, '=')
	var val string
	var c, m, v, l int64
	if n, _ := fmt.Sscanf(s[eq+1:], "%q c%d m%d v%d l%d", &val, &c, &m, &v, &l); n != 5 {
		return "?" + s
	}
	switch t {
	case SortByVersion:
		return fmt.Sprint(v)
	case SortByCreate:
		return fmt.Sprint(c)
	case SortByMod:
		return fmt.Sprint(m)
	case SortByValue:
		return fmt.Sprintf("%q", val)
	}
	return s[:eq]
}

// Txn in the model.

type mtxn struct {
	m      *model
	begin  int64
	pre    mstate
	cur    mstate
	subs   int
	events []string
}

func (x *mtxn) rev() int64 {
	if x.subs > 0 {
		return x.begin + 1
	}
	return x.begin
}

func (x *mtxn) state(rev int64) mstate {
	if rev == x.begin+1 {
		return x.cur
	}
	return x.m.states[rev]
}

func (x *mtxn) put(p *PutRequest, fallback *mkv) string {
	old, exists := x.cur[string(p.Key)]
	val, lease := string(p.Value), p.Lease
	var prev string
	if exists && p.PrevKv {
		prev = renderKV(string(p.Key), old, false)
	}
	if p.IgnoreValue || p.IgnoreLease {
		src := old
		if !exists {
			src = *fallback
		}
		if p.IgnoreValue {
			val = src.val
		}
		if p.IgnoreLease {
			lease = src.lease
		}
	}
	main := x.begin + 1
	kv := mkv{val: val, create: main, mod: main, ver: 1, lease: lease}
	if exists {
		kv.create, kv.ver = old.create, old.ver+1
	}
	x.cur[string(p.Key)] = kv
	x.subs++
	x.events = append(x.events, "PUT "+renderKV(string(p.Key), kv, false))
	return fmt.Sprintf("put rev %d prev %s", main, prev)
}

func (x *mtxn) deleteRange(d *DeleteRangeRequest) string {
	var keys []string
	for k := range x.cur {
		if inSpan(d.Key, d.RangeEnd, k) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var prev []string
	for _, k := range keys {
		if d.PrevKv {
			prev = append(prev, renderKV(k, x.cur[k], false))
		}
		delete(x.cur, k)
		x.subs++
		x.events = append(x.events, fmt.Sprintf("DELETE %s m%d", k, x.begin+1))
	}
	return fmt.Sprintf("delete rev %d deleted %d prev %v", x.rev(), len(keys), prev)
}

func (x *mtxn) compare(c *Compare) bool {
	var kvs []mkv
	for k, kv := range x.pre {
		if inSpan(c.Key, c.RangeEnd, k) {
			kvs = append(kvs, kv)
		}
	}
	if len(kvs) == 0 {
		if c.Target == CompareValue {
			return false
		}
		kvs = []mkv{{}}
	}
	for _, kv := range kvs {
		var r int
		switch c.Target {
		case CompareValue:
			r = strings.Compare(kv.val, string(c.Value))
		case CompareVersion:
			r = cmp64(kv.ver, c.Version)
		case CompareCreate:
			r = cmp64(kv.create, c.CreateRevision)
		case CompareMod:
			r = cmp64(kv.mod, c.ModRevision)
		case CompareLease:
			r = cmp64(kv.lease, c.Lease)
		}
		ok := map[CompareResult]bool{CompareEqual: r == 0, CompareNotEqual: r != 0, CompareGreater: r > 0, CompareLess: r < 0}[c.Result]
		if !ok {
			return false
		}
	}
	return true
}

func (x *mtxn) taken(r *TxnRequest) bool {
	for i := range r.Compare {
		if !x.compare(&r.Compare[i]) {
			return false
		}
	}
	return true
}

// check validates the taken path against the state before the txn and
// returns, for ignore puts, the values seen.
func (x *mtxn) check(r *TxnRequest, fallback map[*PutRequest]*mkv) error {
	for _, op := range branch(r, x.taken(r)) {
		switch {
		case op.Range != nil:
			if rv := op.Range.Revision; rv != 0 && rv > x.begin {
				return ErrFutureRev
			} else if rv != 0 && rv < x.m.compact {
				return ErrCompacted
			}
		case op.Put != nil:
			if op.Put.Lease != 0 && !x.m.leases[op.Put.Lease] {
				return ErrLeaseNotFound
			}
			if op.Put.IgnoreValue || op.Put.IgnoreLease {
				kv, ok := x.pre[string(op.Put.Key)]
				if !ok {
					return ErrKeyNotFound
				}
				fallback[op.Put] = &kv
			}
		case op.Txn != nil:
			if err := x.check(op.Txn, fallback); err != nil {
				return err
			}
		}
	}
	return nil
}

func (x *mtxn) run(r *TxnRequest, fallback map[*PutRequest]*mkv, nested bool) string {
	ok := x.taken(r)
	var b strings.Builder
	fmt.Fprintf(&b, "{ok=%v", ok)
	for _, op := range branch(r, ok) {
		switch {
		case op.Range != nil:
			res, _, err := x.m.modelRange(x.state, x.rev(), op.Range)
			if err != nil {
				fmt.Fprintf(&b, " range error %v;", err)
				continue
			}
			fmt.Fprintf(&b, " range %v more=%v count=%d rev=%d;", normalizeTies(res.kvs, op.Range), res.more, res.count, res.rev)
		case op.Put != nil:
			b.WriteString(" " + x.put(op.Put, fallback[op.Put]) + ";")
		case op.DeleteRange != nil:
			b.WriteString(" " + x.deleteRange(op.DeleteRange) + ";")
		case op.Txn != nil:
			b.WriteString(" " + x.run(op.Txn, fallback, true) + ";")
		}
	}
	if !nested {
		fmt.Fprintf(&b, " rev=%d", x.rev())
	} else {
		b.WriteString(" rev=0")
	}
	b.WriteString("}")
	return b.String()
}

// normalizeTies makes txn range answers comparable as text when tied
// elements may come in any order (non-key sort): without a limit the set is
// compared, with one only the sort values.
func normalizeTies(kvs []string, r *RangeRequest) []string {
	if r.SortTarget == SortByKey {
		return kvs
	}
	if r.Limit > 0 {
		out := make([]string, len(kvs))
		for i, kv := range kvs {
			out[i] = sortValueOf(kv, r.SortTarget)
		}
		return out
	}
	return slices.Sorted(slices.Values(kvs))
}

func renderTxnResponse(resp *TxnResponse, r *TxnRequest, nested bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "{ok=%v", resp.Succeeded)
	for i, op := range branch(r, resp.Succeeded) {
		out := resp.Responses[i]
		switch {
		case op.Range != nil:
			var kvs []string
			for _, kv := range out.Range.Kvs {
				kvs = append(kvs, kvString(kv))
			}
			fmt.Fprintf(&b, " range %v more=%v count=%d rev=%d;", normalizeTies(kvs, op.Range), out.Range.More, out.Range.Count, out.Range.Revision)
		case op.Put != nil:
			prev := ""
			if out.Put.PrevKv != nil {
				prev = kvString(out.Put.PrevKv)
			}
			fmt.Fprintf(&b, " put rev %d prev %s;", out.Put.Revision, prev)
		case op.DeleteRange != nil:
			var prev []string
			for _, kv := range out.DeleteRange.PrevKvs {
				prev = append(prev, kvString(kv))
			}
			fmt.Fprintf(&b, " delete rev %d deleted %d prev %v;", out.DeleteRange.Revision, out.DeleteRange.Deleted, prev)
		case op.Txn != nil:
			b.WriteString(" " + renderTxnResponse(out.Txn, op.Txn, true) + ";")
		}
	}
	fmt.Fprintf(&b, " rev=%d}", resp.Revision)
	return b.String()
}

func (m *model) commit(x *mtxn) {
	if x.subs == 0 {
		return
	}
	m.rev++
	m.states[m.rev] = x.cur
	m.events[m.rev] = x.events
}

func (m *model) begin() *mtxn {
	return &mtxn{m: m, begin: m.rev, pre: m.states[m.rev], cur: maps.Clone(m.states[m.rev])}
}

// runModel runs ops against a fresh store and the model, returning the index
// of the first operation whose answers differ.
func runModel(t *testing.T, ops []mop) (int, error) {
	path := filepath.Join(t.TempDir(), "db")
	opts := testOptions()
	opts.Leases = newFakeLeases(1, 2)
	opts.CompactionBatch = 3 // many small physical steps
	s, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if s != nil {
			s.Close()
		}
	}()
	m := newModel()
	for i, o := range ops {
		if err := step(t, &s, path, opts, m, o); err != nil {
			return i, err
		}
	}
	return -1, nil
}

func errString(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

func step(t *testing.T, sp **Store, path string, opts Options, m *model, o mop) error {
	s := *sp
	switch o.kind {
	case mPut:
		req := o.put
		x := m.begin()
		var want string
		var wantErr error
		switch {
		case ValidatePut(&req) != nil:
			wantErr = ValidatePut(&req)
		case req.Lease != 0 && !m.leases[req.Lease]:
			wantErr = ErrLeaseNotFound
		case (req.IgnoreValue || req.IgnoreLease) && !hasKey(x.pre, req.Key):
			wantErr = ErrKeyNotFound
		default:
			want = x.put(&req, nil)
		}
		resp, err := s.Put(req)
		if errString(err) != errString(wantErr) {
			return fmt.Errorf("put: error %v, want %v", err, wantErr)
		}
		if err == nil {
			prev := ""
			if resp.PrevKv != nil {
				prev = kvString(resp.PrevKv)
			}
			if got := fmt.Sprintf("put rev %d prev %s", resp.Revision, prev); got != want {
				return fmt.Errorf("put: %s, want %s", got, want)
			}
			m.commit(x)
		}
	case mDelete:
		x := m.begin()
		want := x.deleteRange(&o.del)
		resp, err := s.DeleteRange(o.del)
		if err != nil {
			return fmt.Errorf("delete: %v", err)
		}
		var prev []string
		for _, kv := range resp.PrevKvs {
			prev = append(prev, kvString(kv))
		}
		if got := fmt.Sprintf("delete rev %d deleted %d prev %v", resp.Revision, resp.Deleted, prev); got != want {
			return fmt.Errorf("delete: %s, want %s", got, want)
		}
		m.commit(x)
	case mTxn:
		x := m.begin()
		req := o.txn
		wantErr := ValidateTxn(&req, 0)
		fallback := map[*PutRequest]*mkv{}
		if wantErr == nil {
			wantErr = x.check(&req, fallback)
		}
		resp, err := s.Txn(req)
		if errString(err) != errString(wantErr) {
			return fmt.Errorf("txn: error %v, want %v", err, wantErr)
		}
		if err != nil {
			return nil
		}
		want := x.run(&req, fallback, false)
		if got := renderTxnResponse(resp, &req, false); got != want {
			return fmt.Errorf("txn:\n got %s\nwant %s", got, want)
		}
		m.commit(x)
	case mCompact:
		rev := m.rev - o.back
		var wantErr error
		switch {
		case rev <= m.compact:
			wantErr = ErrCompacted
		case rev > m.rev:
			wantErr = ErrFutureRev
		}
		done, err := s.Compact(rev)
		if errString(err) != errString(wantErr) {
			return fmt.Errorf("compact %d: error %v, want %v", rev, err, wantErr)
		}
		if err == nil {
			for r := range m.states {
				if r < rev {
					delete(m.states, r)
				}
			}
			m.compact = rev
			// Compaction keeps, per key, the latest revision at or below rev
			// in the first generation still alive at rev, and all later
			// generations. A key changed several times in revision rev
			// itself (etcd's duplicate check lets a txn put and delete one
			// key) thus loses the changes of that first generation but its
			// last one; generations it started at rev stay whole.
			evs := m.events[rev]
			lastInFirst := map[string]int{}
			closed := map[string]bool{}
			for i, ev := range evs {
				k := eventKey(ev)
				if closed[k] {
					continue
				}
				lastInFirst[k] = i
				if strings.HasPrefix(ev, "DELETE") {
					closed[k] = true
				}
			}
			var kept []string
			seenFirst := map[string]bool{}
			for i, ev := range evs {
				k := eventKey(ev)
				if !seenFirst[k] && i < lastInFirst[k] {
					continue // an earlier change of the first generation
				}
				if i == lastInFirst[k] {
					seenFirst[k] = true
				}
				kept = append(kept, ev)
			}
			m.events[rev] = kept
			if o.back%2 == 0 {
				<-done
			}
		}
	case mRange:
		req := o.rng
		req.Revision = m.rev - o.back
		if o.back == 0 {
			req.Revision = 0
		}
		want, all, wantErr := m.modelRange(m.at, m.rev, &req)
		resp, err := s.Range(req)
		if errString(err) != errString(wantErr) {
			return fmt.Errorf("range %s: error %v, want %v", rangeString(&req), err, wantErr)
		}
		if err == nil {
			if err := checkRange(resp, want, all, &req); err != nil {
				return fmt.Errorf("range %s: %v", rangeString(&req), err)
			}
		}
	case mEvents:
		from := m.rev - o.back
		var want []string
		var wantErr error
		if from < m.compact {
			wantErr = ErrCompacted
		} else {
			for r := max(from, 1); r <= m.rev; r++ {
				for _, ev := range m.events[r] {
					if inSpan(o.rng.Key, o.rng.RangeEnd, eventKey(ev)) {
						want = append(want, ev)
					}
				}
				if o.limit > 0 && len(want) >= o.limit {
					break
				}
			}
		}
		evs, err := s.Events(from, 0, o.rng.Key, o.rng.RangeEnd, o.limit)
		if errString(err) != errString(wantErr) {
			return fmt.Errorf("events from %d: error %v, want %v", from, err, wantErr)
		}
		var got []string
		for _, ev := range evs {
			got = append(got, eventString(ev))
		}
		if !slices.Equal(got, want) {
			return fmt.Errorf("events from %d: %v, want %v", from, got, want)
		}
	case mReopen:
		h1, err := s.HashKV(0)
		if err != nil {
			return fmt.Errorf("hash: %v", err)
		}
		if err := s.Close(); err != nil {
			return fmt.Errorf("close: %v", err)
		}
		*sp = nil
		s2, err := Open(path, opts)
		if err != nil {
			return fmt.Errorf("reopen: %v", err)
		}
		*sp = s2
		if s2.Rev() != m.rev || s2.CompactRev() != m.compact {
			return fmt.Errorf("reopen: rev %d compact %d, want %d %d", s2.Rev(), s2.CompactRev(), m.rev, m.compact)
		}
		h2, err := s2.HashKV(0)
		if err != nil || h1 != h2 {
			return fmt.Errorf("reopen: hash %+v, was %+v (%v)", h2, h1, err)
		}
	}
	if s := *sp; s != nil && (s.Rev() != m.rev || s.CompactRev() != m.compact) {
		return fmt.Errorf("store rev %d compact %d, model %d %d", s.Rev(), s.CompactRev(), m.rev, m.compact)
	}
	return nil
}

// eventKey extracts the key of a rendered event.
func eventKey(ev string) string {
	k := strings.Fields(ev)[1]
	return k[:strings.IndexAny(k+"=", "=")]
}

func hasKey(s mstate, k []byte) bool {
	_, ok := s[string(k)]
	return ok
}
