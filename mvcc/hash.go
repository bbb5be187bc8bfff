package mvcc

import (
	"hash/crc32"

	"github.com/cairnkv/cairn/mvcc/backend"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// HashKV hashes the revision bucket up to rev (0: the current revision), as
// etcd's HashKV, for comparing members. It covers, in revision order, the
// bucket name then the key and value bytes of every record with main
// revision <= rev, except records at or below the compaction point that
// are not the version of their key live at rev, and a tombstone at exactly
// the compaction point (etcd's rules, so that the result does not depend on
// how far the physical removal has got). Members that applied the same log
// give the same hash. Any goroutine may call it.
func (s *Store) HashKV(rev int64) (HashKVResult, error) {
	if s.closed.Load() {
		return HashKVResult{}, ErrClosed
	}
	s.mu.RLock()
	compact, cur := s.compactRev.Load(), s.rev.Load()
	if rev > 0 && rev < compact {
		s.mu.RUnlock()
		return HashKVResult{}, ErrCompacted
	}
	if rev > 0 && rev > cur {
		s.mu.RUnlock()
		return HashKVResult{Revision: cur}, ErrFutureRev
	}
	if rev == 0 {
		rev = cur
	}
	// The versions live at rev among those at or below the compaction point.
	keep := make(map[revision]struct{})
	s.idx.tree.Ascend(func(ki *keyIndex) bool {
		if r, _, _, ok := ki.at(rev); ok && r.main <= compact {
			keep[r] = struct{}{}
		}
		return true
	})
	v, err := s.be.View()
	s.mu.RUnlock()
	if err != nil {
		return HashKVResult{}, err
	}
	defer v.Release()

	h := crc32.New(castagnoli)
	h.Write([]byte(backend.RevisionBucket))
	var herr error
	if rev < 0 {
		// etcd hashes nothing but the bucket name for a negative revision.
		return HashKVResult{Hash: h.Sum32(), CompactRevision: compact, HashRevision: rev, Revision: cur}, nil
	}
	v.Scan(nil, revKeyMain(rev+1), func(k, val []byte) bool {
		r, err := parseRevKey(k)
		if err != nil {
			herr = err
			return false
		}
		if r.main <= compact {
			if _, ok := keep[r]; !ok {
				return true
			}
		}
		h.Write(k)
		h.Write(val)
		return true
	})
	if herr != nil {
		return HashKVResult{}, herr
	}
	return HashKVResult{Hash: h.Sum32(), CompactRevision: compact, HashRevision: rev, Revision: cur}, nil
}
