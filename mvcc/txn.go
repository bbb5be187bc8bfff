package mvcc

import (
	"bytes"
	"fmt"

	"github.com/cairnkv/cairn/api/mvccpb"
)

// Txn runs a transaction, as etcd's Txn:
//
//  1. the request is validated (ValidateTxn, no op limit);
//  2. every compare of the taken path, nested txns included, is evaluated
//     against the state before the txn;
//  3. the taken path is checked against that state: ranges at a future or
//     compacted revision, puts with a missing lease, ignore_value or
//     ignore_lease puts of missing keys fail the whole txn, which then
//     changes nothing;
//  4. the operations run in order; reads see the txn's earlier writes, and
//     all writes share one revision.
//
// A txn whose top-level operations are all ranges is read-only and may be
// called from any goroutine; any other txn is the writer's.
func (s *Store) Txn(req TxnRequest) (*TxnResponse, error) {
	if err := ValidateTxn(&req, 0); err != nil {
		return nil, err
	}
	if s.closed.Load() {
		return nil, ErrClosed
	}
	if isReadOnly(&req) {
		return s.readTxn(&req)
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	tw, err := s.beginWrite()
	if err != nil {
		return nil, err
	}
	rc := tw.readCtx()
	path := s.compareToPath(rc, &req)
	ex := &txnExec{s: s, tw: tw, rc: rc, prev: map[*PutRequest]*mvccpb.KeyValue{}}
	if _, err := ex.check(&req, path); err != nil {
		return nil, err
	}
	resp := &TxnResponse{}
	if _, err := ex.run(&req, path, resp); err != nil {
		// The checks make this unreachable; some writes may be buffered.
		panic(fmt.Sprintf("mvcc: txn failed after its checks passed: %v", err))
	}
	resp.Revision = tw.rev()
	tw.end()
	return resp, nil
}

// readTxn runs a read-only txn holding the index lock shared throughout, so
// that all of it reads one revision and no compaction intervenes.
func (s *Store) readTxn(req *TxnRequest) (*TxnResponse, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	rc := &readCtx{rev: s.rev.Load(), locked: true}
	path := s.compareToPath(rc, req)
	ex := &txnExec{s: s, rc: rc}
	if _, err := ex.check(req, path); err != nil {
		return nil, err
	}
	resp := &TxnResponse{}
	if _, err := ex.run(req, path, resp); err != nil {
		return nil, err
	}
	resp.Revision = rc.rev
	return resp, nil
}

// compareToPath evaluates the compares of the txn and of the nested txns on
// the taken branches, depth first: path[0] is this txn's outcome.
func (s *Store) compareToPath(rc *readCtx, r *TxnRequest) []bool {
	ok := true
	for i := range r.Compare {
		if !s.applyCompare(rc, &r.Compare[i]) {
			ok = false
			break
		}
	}
	path := []bool{ok}
	for _, op := range branch(r, ok) {
		if op.Range == nil && op.Put == nil && op.DeleteRange == nil && op.Txn != nil {
			path = append(path, s.compareToPath(rc, op.Txn)...)
		}
	}
	return path
}

func branch(r *TxnRequest, succeeded bool) []RequestOp {
	if succeeded {
		return r.Success
	}
	return r.Failure
}

// applyCompare reports whether every key of the compare's range satisfies
// it. With no key in range, a VALUE compare is false and the others compare
// a zero key-value (version, revisions and lease 0).
func (s *Store) applyCompare(rc *readCtx, c *Compare) bool {
	ro := rangeOpts{fastKeysOnly: c.Target != CompareValue && c.Target != CompareLease}
	kvs, _, err := s.rangeKeys(rc, span{c.Key, c.RangeEnd}, ro)
	if err != nil {
		return false
	}
	if len(kvs) == 0 {
		if c.Target == CompareValue {
			return false
		}
		return compareKV(c, &mvccpb.KeyValue{})
	}
	for _, kv := range kvs {
		if !compareKV(c, kv) {
			return false
		}
	}
	return true
}

func compareKV(c *Compare, kv *mvccpb.KeyValue) bool {
	var res int
	switch c.Target {
	case CompareValue:
		res = bytes.Compare(kv.Value, c.Value)
	case CompareCreate:
		res = cmp64(kv.CreateRevision, c.CreateRevision)
	case CompareMod:
		res = cmp64(kv.ModRevision, c.ModRevision)
	case CompareVersion:
		res = cmp64(kv.Version, c.Version)
	case CompareLease:
		res = cmp64(kv.Lease, c.Lease)
	}
	switch c.Result {
	case CompareEqual:
		return res == 0
	case CompareNotEqual:
		return res != 0
	case CompareGreater:
		return res > 0
	case CompareLess:
		return res < 0
	}
	return true
}

func cmp64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// txnExec carries one txn through its check and run passes.
type txnExec struct {
	s  *Store
	tw *writeTxn // nil for a read-only txn
	rc *readCtx  // the state before the txn (read-only: throughout)
	// prev holds, for ignore_value and ignore_lease puts, the key-value the
	// check found. etcd's duplicate rule lets a txn delete such a key before
	// the put with a from-key delete ("\x00" end); etcd then crashes, cairn
	// takes the value and lease from here instead (prev_kv stays empty: the
	// key did not exist when the put ran).
	prev map[*PutRequest]*mvccpb.KeyValue
}

// check walks the taken path and returns how many nested txns it covered.
func (ex *txnExec) check(r *TxnRequest, path []bool) (int, error) {
	txns := 0
	for _, op := range branch(r, path[0]) {
		switch {
		case op.Range != nil:
			if err := ex.checkRange(op.Range); err != nil {
				return 0, err
			}
		case op.Put != nil:
			if err := ex.checkPut(op.Put); err != nil {
				return 0, err
			}
		case op.DeleteRange != nil:
		case op.Txn != nil:
			n, err := ex.check(op.Txn, path[1:])
			if err != nil {
				return 0, err
			}
			txns += n + 1
			path = path[n+1:]
		}
	}
	return txns, nil
}

func (ex *txnExec) checkRange(r *RangeRequest) error {
	switch {
	case r.Revision == 0:
		return nil
	case r.Revision > ex.rc.rev:
		return ErrFutureRev
	case r.Revision < ex.s.compactRev.Load():
		// etcd's check: a negative revision fails here once the store was
		// compacted, though a plain Range reads it as "current".
		return ErrCompacted
	}
	return nil
}

func (ex *txnExec) checkPut(p *PutRequest) error {
	if err := ex.s.checkLease(p.Lease); err != nil {
		return err
	}
	if !p.IgnoreValue && !p.IgnoreLease {
		return nil
	}
	kvs, _, err := ex.s.rangeKeys(ex.rc, span{key: p.Key}, rangeOpts{})
	if err != nil {
		return err
	}
	if len(kvs) == 0 {
		return ErrKeyNotFound
	}
	ex.prev[p] = kvs[0]
	return nil
}

// run executes the taken path, filling resp, and returns how many nested
// txns it covered.
func (ex *txnExec) run(r *TxnRequest, path []bool, resp *TxnResponse) (int, error) {
	ops := branch(r, path[0])
	resp.Succeeded = path[0]
	resp.Responses = make([]ResponseOp, len(ops))
	txns := 0
	for i := range ops {
		op, out := &ops[i], &resp.Responses[i]
		switch {
		case op.Range != nil:
			rc := ex.rc
			if ex.tw != nil {
				rc = ex.tw.readCtx()
			}
			rr, err := ex.s.executeRange(rc, op.Range)
			if err != nil {
				return 0, fmt.Errorf("range: %w", err)
			}
			out.Range = rr
		case op.Put != nil:
			prev, err := ex.tw.prevKV(op.Put)
			if err != nil {
				return 0, fmt.Errorf("put: %w", err)
			}
			src := prev
			if src == nil {
				src = ex.prev[op.Put]
			}
			out.Put = ex.tw.applyPut(op.Put, prev, src)
		case op.DeleteRange != nil:
			dr, err := ex.tw.applyDeleteRange(op.DeleteRange)
			if err != nil {
				return 0, fmt.Errorf("delete: %w", err)
			}
			out.DeleteRange = dr
		case op.Txn != nil:
			// A nested response's revision stays 0, as in etcd.
			out.Txn = &TxnResponse{}
			n, err := ex.run(op.Txn, path[1:], out.Txn)
			if err != nil {
				return 0, err
			}
			txns += n + 1
			path = path[n+1:]
		}
	}
	return txns, nil
}
