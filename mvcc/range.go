package mvcc

import (
	"bytes"
	"fmt"
	"math"
	"sort"

	"github.com/cairnkv/cairn/api/mvccpb"
)

// readCtx is the state a read runs against.
type readCtx struct {
	// rev is the header revision: reads go at or below it. When locked is
	// false, rangeKeys fills it in under the lock it takes.
	rev int64
	// locked is true when the caller needs no index lock: it holds mu shared
	// for the whole operation, or it is the writer.
	locked bool
}

// Range reads keys, as etcd's Range. Any goroutine may call it.
func (s *Store) Range(req RangeRequest) (*RangeResponse, error) {
	if err := ValidateRange(&req); err != nil {
		return nil, err
	}
	if s.closed.Load() {
		return nil, ErrClosed
	}
	return s.executeRange(&readCtx{}, &req)
}

// rangeOpts are the options of the keyspace-level range.
type rangeOpts struct {
	limit        int64
	rev          int64
	countOnly    bool
	fastKeysOnly bool // key, create, mod and version from the index alone
}

// executeRange is etcd's range pipeline: fetch (all of it if sorting or
// filtering, else limit+1 to learn "more"), filter, sort, cut at the limit.
func (s *Store) executeRange(rc *readCtx, r *RangeRequest) (*RangeResponse, error) {
	ro := rangeOpts{
		limit:        fetchLimit(r),
		rev:          r.Revision,
		countOnly:    r.CountOnly,
		fastKeysOnly: r.KeysOnly && r.SortTarget != SortByValue,
	}
	kvs, count, err := s.rangeKeys(rc, span{r.Key, r.RangeEnd}, ro)
	if err != nil {
		return nil, err
	}
	kvs = filterKVs(kvs, r)
	sortKVs(kvs, r)
	resp := &RangeResponse{Revision: rc.rev, Count: count}
	if r.Limit > 0 && int64(len(kvs)) > r.Limit {
		kvs = kvs[:r.Limit]
		resp.More = true
	}
	if r.KeysOnly {
		for _, kv := range kvs {
			kv.Value = nil
		}
	}
	resp.Kvs = kvs
	return resp, nil
}

func defaultOrder(t SortTarget, o SortOrder) bool {
	return o == SortNone || (t == SortByKey && o == SortAscend)
}

func hasRevisionFilters(r *RangeRequest) bool {
	return r.MinModRevision != 0 || r.MaxModRevision != 0 || r.MinCreateRevision != 0 || r.MaxCreateRevision != 0
}

func fetchLimit(r *RangeRequest) int64 {
	limit := r.Limit
	if !defaultOrder(r.SortTarget, r.SortOrder) || hasRevisionFilters(r) {
		limit = 0
	}
	if limit > 0 && limit < math.MaxInt64 {
		limit++
	}
	return limit
}

func filterKVs(kvs []*mvccpb.KeyValue, r *RangeRequest) []*mvccpb.KeyValue {
	if !hasRevisionFilters(r) {
		return kvs
	}
	out := kvs[:0]
	for _, kv := range kvs {
		switch {
		case r.MaxModRevision != 0 && kv.ModRevision > r.MaxModRevision:
		case r.MinModRevision != 0 && kv.ModRevision < r.MinModRevision:
		case r.MaxCreateRevision != 0 && kv.CreateRevision > r.MaxCreateRevision:
		case r.MinCreateRevision != 0 && kv.CreateRevision < r.MinCreateRevision:
		default:
			out = append(out, kv)
		}
	}
	return out
}

// sortKVs orders as etcd does: a non-key target with order NONE sorts
// ascending; KEY ascending is the fetch order already. sort.Sort (not a
// stable sort) is used on purpose, with etcd's Less and Swap, so that ties
// come out in the same order as etcd's.
func sortKVs(kvs []*mvccpb.KeyValue, r *RangeRequest) {
	order := r.SortOrder
	if r.SortTarget != SortByKey && order == SortNone {
		order = SortAscend
	}
	if defaultOrder(r.SortTarget, order) {
		return
	}
	var less func(a, b *mvccpb.KeyValue) bool
	switch r.SortTarget {
	case SortByKey:
		less = func(a, b *mvccpb.KeyValue) bool { return bytes.Compare(a.Key, b.Key) < 0 }
	case SortByVersion:
		less = func(a, b *mvccpb.KeyValue) bool { return a.Version < b.Version }
	case SortByCreate:
		less = func(a, b *mvccpb.KeyValue) bool { return a.CreateRevision < b.CreateRevision }
	case SortByMod:
		less = func(a, b *mvccpb.KeyValue) bool { return a.ModRevision < b.ModRevision }
	case SortByValue:
		less = func(a, b *mvccpb.KeyValue) bool { return bytes.Compare(a.Value, b.Value) < 0 }
	default:
		return // rejected by ValidateRange
	}
	var sorter sort.Interface = kvSorter{kvs, less}
	switch order {
	case SortAscend:
		sort.Sort(sorter)
	case SortDescend:
		sort.Sort(sort.Reverse(sorter))
	}
}

type kvSorter struct {
	kvs  []*mvccpb.KeyValue
	less func(a, b *mvccpb.KeyValue) bool
}

func (s kvSorter) Len() int           { return len(s.kvs) }
func (s kvSorter) Swap(i, j int)      { s.kvs[i], s.kvs[j] = s.kvs[j], s.kvs[i] }
func (s kvSorter) Less(i, j int) bool { return s.less(s.kvs[i], s.kvs[j]) }

// rangeKeys is the keyspace-level range: the key-values in sp at ro.rev (at
// rc.rev if <= 0), in key order, at most ro.limit of them (0: all), and the
// number of keys in sp at that revision regardless of the limit.
func (s *Store) rangeKeys(rc *readCtx, sp span, ro rangeOpts) ([]*mvccpb.KeyValue, int64, error) {
	locked := rc.locked
	if !locked {
		s.mu.RLock()
		rc.rev = s.rev.Load()
	}
	unlock := func() {
		if !locked {
			locked = true
			s.mu.RUnlock()
		}
	}
	defer unlock()

	rev := ro.rev
	if rev > rc.rev {
		return nil, 0, ErrFutureRev
	}
	if rev <= 0 {
		rev = rc.rev
	}
	if rev < s.compactRev.Load() {
		return nil, 0, ErrCompacted
	}

	var count int64
	if ro.countOnly {
		s.idx.ascend(sp, func(ki *keyIndex) bool {
			if _, _, _, ok := ki.at(rev); ok {
				count++
			}
			return true
		})
		return nil, count, nil
	}
	full := func() bool { return ro.limit > 0 && count >= ro.limit }
	if ro.fastKeysOnly {
		var kvs []*mvccpb.KeyValue
		s.idx.ascend(sp, func(ki *keyIndex) bool {
			if r, created, ver, ok := ki.at(rev); ok {
				if !full() {
					kvs = append(kvs, &mvccpb.KeyValue{
						Key:            bytes.Clone(ki.key),
						CreateRevision: created,
						ModRevision:    r.main,
						Version:        ver,
					})
				}
				count++
			}
			return true
		})
		return kvs, count, nil
	}

	var revs []revision
	s.idx.ascend(sp, func(ki *keyIndex) bool {
		if r, _, _, ok := ki.at(rev); ok {
			if !full() {
				revs = append(revs, r)
			}
			count++
		}
		return true
	})
	if len(revs) == 0 {
		return nil, count, nil
	}
	// Pin the view before the index lock is released: compaction cannot
	// then remove these revisions from what the view sees.
	v, err := s.be.View()
	unlock()
	if err != nil {
		return nil, 0, err
	}
	defer v.Release()
	kvs := make([]*mvccpb.KeyValue, len(revs))
	for i, r := range revs {
		val := v.Get(revKey(r))
		if val == nil {
			panic(fmt.Sprintf("mvcc: indexed revision %d.%d missing from the backend", r.main, r.sub))
		}
		rec, err := decodeRecord(val)
		if err != nil {
			return nil, 0, fmt.Errorf("mvcc: revision %d.%d: %w", r.main, r.sub, err)
		}
		kvs[i] = rec.kv()
	}
	return kvs, count, nil
}
