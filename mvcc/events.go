package mvcc

import (
	"github.com/cairnkv/cairn/api/mvccpb"
	"github.com/cairnkv/cairn/mvcc/backend"
)

// Events replays history for the watch hub: the events of revisions from
// through to (to <= 0 or above the current revision: the current one) on
// keys in [key, end) — end read as in RangeRequest — from the backend,
// committed and buffered alike. With limit > 0 it stops once it has at
// least limit events, at the end of a revision (a revision's events are
// never split), so the caller resumes at the last event's revision + 1.
// from below the compaction point fails with ErrCompacted. A DELETE event's
// key-value holds the key and mod_revision only. Any goroutine may call it.
func (s *Store) Events(from, to int64, key, end []byte, limit int) ([]*mvccpb.Event, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	s.mu.RLock()
	compact := s.compactRev.Load()
	if from < compact {
		s.mu.RUnlock()
		return nil, ErrCompacted
	}
	if cur := s.rev.Load(); to <= 0 || to > cur {
		to = cur
	}
	v, err := s.be.View()
	if err != nil {
		s.mu.RUnlock()
		return nil, err
	}
	defer v.Release()
	// Records at exactly the compaction point may be on their way out (a
	// key changed twice in that revision keeps only its last change): ask
	// the index, so the answer does not depend on the removal's progress.
	var gone map[revision]bool
	if compact > 0 && from <= compact && compact <= to {
		gone, err = s.doomedAt(v, compact)
	}
	s.mu.RUnlock()
	if err != nil {
		return nil, err
	}
	if from < 1 {
		from = 1
	}
	if from > to {
		return nil, nil
	}
	sp := span{key, end}
	var evs []*mvccpb.Event
	var lastMain int64
	var derr error
	v.Scan(revKeyMain(from), revKeyMain(to+1), func(k, val []byte) bool {
		r, err := parseRevKey(k)
		if err != nil {
			derr = err
			return false
		}
		if limit > 0 && len(evs) >= limit && r.main != lastMain {
			return false
		}
		if gone[r] {
			return true
		}
		rec, err := decodeRecord(val)
		if err != nil {
			derr = err
			return false
		}
		if !sp.contains(rec.key) {
			return true
		}
		ev := &mvccpb.Event{Type: mvccpb.Event_PUT, Kv: rec.kv()}
		if rec.tombstone() {
			ev.Type = mvccpb.Event_DELETE
			ev.Kv = &mvccpb.KeyValue{Key: ev.Kv.Key, ModRevision: r.main}
		}
		evs = append(evs, ev)
		lastMain = r.main
		return true
	})
	return evs, derr
}

// doomedAt returns the records of revision main that the index no longer
// holds. The caller holds mu.
func (s *Store) doomedAt(v *backend.View, main int64) (map[revision]bool, error) {
	var gone map[revision]bool
	var err error
	v.Scan(revKeyMain(main), revKeyMain(main+1), func(k, val []byte) bool {
		var r revision
		if r, err = parseRevKey(k); err != nil {
			return false
		}
		var rec record
		if rec, err = decodeRecord(val); err != nil {
			return false
		}
		if ki := s.idx.get(rec.key); ki == nil || !ki.has(r) {
			if gone == nil {
				gone = map[revision]bool{}
			}
			gone[r] = true
		}
		return true
	})
	return gone, err
}
