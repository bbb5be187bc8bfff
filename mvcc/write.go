package mvcc

import (
	"bytes"

	"github.com/cairnkv/cairn/api/mvccpb"
)

// writeTxn is one write transaction: every change gets main revision
// begin+1 and the next sub revision. Changes go to the backend buffer and
// the index at once, but readers ignore them until end publishes begin+1.
type writeTxn struct {
	s      *Store
	begin  int64
	subs   int64
	events []*mvccpb.Event
}

// beginWrite starts a write transaction; the caller holds writeMu.
func (s *Store) beginWrite() (*writeTxn, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	if err := s.be.Err(); err != nil {
		return nil, err
	}
	return &writeTxn{s: s, begin: s.rev.Load()}, nil
}

// rev is the revision the transaction reads at: its own changes included.
func (tw *writeTxn) rev() int64 {
	if tw.subs > 0 {
		return tw.begin + 1
	}
	return tw.begin
}

func (tw *writeTxn) readCtx() *readCtx { return &readCtx{rev: tw.rev(), locked: true} }

// end publishes the revision if anything changed, then tells the observer.
func (tw *writeTxn) end() {
	s := tw.s
	if tw.subs > 0 {
		s.mu.Lock()
		s.rev.Store(tw.begin + 1)
		s.mu.Unlock()
	}
	s.be.EndWrite()
	if tw.subs > 0 && s.opts.Observer != nil {
		s.opts.Observer.OnWrite(tw.begin+1, tw.events)
	}
}

func (tw *writeTxn) put(key, value []byte, lease int64) {
	s := tw.s
	main := tw.begin + 1
	ki := s.idx.get(key)
	created, ver := main, int64(1)
	var oldLease int64
	if ki != nil {
		created, ver = ki.next(main)
		if ki.live() {
			oldLease = ki.lease
		}
	}
	r := revision{main: main, sub: tw.subs}
	enc := encodeKV(key, value, created, main, ver, lease)
	s.be.Append(revKey(r), enc)
	s.mu.Lock()
	if ki == nil {
		ki = &keyIndex{key: bytes.Clone(key)}
		s.idx.insert(ki)
	}
	ki.put(r, created, ver)
	ki.lease = lease
	s.mu.Unlock()
	tw.subs++

	rec, err := decodeRecord(enc)
	if err != nil {
		panic("mvcc: cannot decode a record just encoded: " + err.Error())
	}
	tw.events = append(tw.events, &mvccpb.Event{Type: mvccpb.Event_PUT, Kv: rec.sharedKV()})
	if l := s.opts.Leases; l != nil && oldLease != lease {
		if oldLease != 0 {
			l.Detach(oldLease, rec.key)
		}
		if lease != 0 {
			l.Attach(lease, rec.key)
		}
	}
}

func (tw *writeTxn) delete(ki *keyIndex) {
	s := tw.s
	main := tw.begin + 1
	r := revision{main: main, sub: tw.subs}
	enc := encodeKV(ki.key, nil, 0, main, 0, 0)
	s.be.Append(revKey(r), enc)
	s.mu.Lock()
	ki.tombstone(r)
	oldLease := ki.lease
	ki.lease = 0
	s.mu.Unlock()
	tw.subs++

	rec, err := decodeRecord(enc)
	if err != nil {
		panic("mvcc: cannot decode a record just encoded: " + err.Error())
	}
	tw.events = append(tw.events, &mvccpb.Event{
		Type: mvccpb.Event_DELETE,
		Kv:   &mvccpb.KeyValue{Key: rec.key, ModRevision: main},
	})
	if l := s.opts.Leases; l != nil && oldLease != 0 {
		l.Detach(oldLease, rec.key)
	}
}

// deleteRange deletes the keys live in sp and returns how many.
func (tw *writeTxn) deleteRange(sp span) int64 {
	rev := tw.rev()
	var doomed []*keyIndex
	tw.s.idx.ascend(sp, func(ki *keyIndex) bool {
		if _, _, _, ok := ki.at(rev); ok {
			doomed = append(doomed, ki)
		}
		return true
	})
	for _, ki := range doomed {
		tw.delete(ki)
	}
	return int64(len(doomed))
}

// Put writes a key, as etcd's Put. Writer only.
func (s *Store) Put(req PutRequest) (*PutResponse, error) {
	if err := ValidatePut(&req); err != nil {
		return nil, err
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	tw, err := s.beginWrite()
	if err != nil {
		return nil, err
	}
	if err := s.checkLease(req.Lease); err != nil {
		return nil, err
	}
	prev, err := tw.prevKV(&req)
	if err != nil {
		return nil, err
	}
	if (req.IgnoreValue || req.IgnoreLease) && prev == nil {
		return nil, ErrKeyNotFound
	}
	resp := tw.applyPut(&req, prev, prev)
	tw.end()
	return resp, nil
}

func (s *Store) checkLease(id int64) error {
	if id == 0 {
		return nil
	}
	if s.opts.Leases == nil || !s.opts.Leases.Exists(id) {
		return ErrLeaseNotFound
	}
	return nil
}

// prevKV reads the key's current value when the put needs it.
func (tw *writeTxn) prevKV(req *PutRequest) (*mvccpb.KeyValue, error) {
	if !req.IgnoreValue && !req.IgnoreLease && !req.PrevKv {
		return nil, nil
	}
	kvs, _, err := tw.s.rangeKeys(tw.readCtx(), span{key: req.Key}, rangeOpts{})
	if err != nil || len(kvs) == 0 {
		return nil, err
	}
	return kvs[0], nil
}

// applyPut puts with the key's current key-value prev (nil if none) and
// src, the key-value ignore_value and ignore_lease take from.
func (tw *writeTxn) applyPut(req *PutRequest, prev, src *mvccpb.KeyValue) *PutResponse {
	val, lease := req.Value, req.Lease
	if req.IgnoreValue {
		val = src.Value
	}
	if req.IgnoreLease {
		lease = src.Lease
	}
	resp := &PutResponse{}
	if req.PrevKv {
		resp.PrevKv = prev
	}
	tw.put(req.Key, val, lease)
	resp.Revision = tw.begin + 1
	return resp
}

// DeleteRange deletes keys, as etcd's DeleteRange. Writer only.
func (s *Store) DeleteRange(req DeleteRangeRequest) (*DeleteRangeResponse, error) {
	if err := ValidateDeleteRange(&req); err != nil {
		return nil, err
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	tw, err := s.beginWrite()
	if err != nil {
		return nil, err
	}
	resp, err := tw.applyDeleteRange(&req)
	if err != nil {
		return nil, err
	}
	tw.end()
	return resp, nil
}

func (tw *writeTxn) applyDeleteRange(req *DeleteRangeRequest) (*DeleteRangeResponse, error) {
	sp := span{req.Key, req.RangeEnd}
	resp := &DeleteRangeResponse{}
	if req.PrevKv {
		kvs, _, err := tw.s.rangeKeys(tw.readCtx(), sp, rangeOpts{})
		if err != nil {
			return nil, err
		}
		resp.PrevKvs = kvs
	}
	resp.Deleted = tw.deleteRange(sp)
	resp.Revision = tw.rev()
	return resp, nil
}

// DeleteKeys deletes the listed keys that exist, all in one revision (none
// if no key exists): lease revocation. Writer only.
func (s *Store) DeleteKeys(keys [][]byte) (*DeleteRangeResponse, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	tw, err := s.beginWrite()
	if err != nil {
		return nil, err
	}
	var n int64
	for _, k := range keys {
		if ki := s.idx.get(k); ki != nil && ki.live() {
			tw.delete(ki)
			n++
		}
	}
	tw.end()
	return &DeleteRangeResponse{Revision: tw.rev(), Deleted: n}, nil
}
