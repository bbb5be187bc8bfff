package mvcc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cairnkv/cairn/mvcc/backend"
)

// Keys of mvcc's compaction marks in backend.MetaBucket.
var (
	scheduledCompactKey = []byte("scheduled_compact_rev")
	finishedCompactKey  = []byte("finished_compact_rev")
)

// Defaults for Options.
const (
	DefaultCompactionBatch = 1000
	DefaultCompactionPause = 10 * time.Millisecond
)

// Options configure a Store. The zero value is usable.
type Options struct {
	// Backend configures the backend Open creates (New takes a backend).
	Backend backend.Options
	// Observer, if set, receives every write's events (the watch hub).
	Observer Observer
	// Leases, if set, is the lease table. Without it every lease is
	// missing: a put with a lease fails with ErrLeaseNotFound.
	Leases Leases
	// CompactionBatch is the number of revision records examined per
	// physical compaction step. Zero means DefaultCompactionBatch.
	CompactionBatch int
	// CompactionPause is the pause between physical compaction steps.
	// Zero means DefaultCompactionPause; negative means none.
	CompactionPause time.Duration
}

// Store is the revisioned keyspace. See the package documentation for the
// concurrency contract: one writing goroutine, any number of readers.
type Store struct {
	be          *backend.Backend
	ownsBackend bool
	opts        Options

	// writeMu serialises writers. The writer reads the index without mu: no
	// one else changes it.
	writeMu sync.Mutex
	// mu guards idx. Readers hold it shared while they walk the index and
	// pin a backend view; the writer holds it exclusively only while it
	// changes the index or publishes a revision.
	mu  sync.RWMutex
	idx *index
	// rev and compactRev change under mu (exclusive) and may be loaded
	// without it.
	rev        atomic.Int64
	compactRev atomic.Int64

	compactor *compactor
	closed    atomic.Bool
}

// Open opens or creates the bbolt file at path, rebuilds the index, and
// resumes an unfinished compaction. The store owns the backend.
func Open(path string, opts Options) (*Store, error) {
	be, err := backend.Open(path, opts.Backend)
	if err != nil {
		return nil, err
	}
	s, err := newStore(be, opts, true)
	if err != nil {
		return nil, errors.Join(err, be.Close())
	}
	return s, nil
}

// New builds a store on an open backend, which the caller keeps and closes
// after the store (so that mvcc/lease can open its bucket first).
func New(be *backend.Backend, opts Options) (*Store, error) {
	return newStore(be, opts, false)
}

func newStore(be *backend.Backend, opts Options, owns bool) (*Store, error) {
	if opts.CompactionBatch <= 0 {
		opts.CompactionBatch = DefaultCompactionBatch
	}
	if opts.CompactionPause == 0 {
		opts.CompactionPause = DefaultCompactionPause
	}
	s := &Store{be: be, ownsBackend: owns, opts: opts}
	v, err := be.View()
	if err != nil {
		return nil, err
	}
	st, err := loadState(v)
	v.Release()
	if err != nil {
		return nil, err
	}
	s.install(st)
	s.compactor = newCompactor(s)
	if st.resume >= 0 {
		s.compactor.enqueue(st.resume)
	}
	return s, nil
}

// loaded is the in-memory state rebuilt from a file.
type loaded struct {
	idx        *index
	rev        int64
	compactRev int64
	resume     int64 // compaction to finish physically, or -1
	leases     map[string]int64
}

// loadState rebuilds the index from the revision bucket. A compaction that
// was scheduled is in force at once (its mark is persisted before any
// record is removed); if it did not finish, resume says so.
func loadState(v *backend.View) (*loaded, error) {
	st := &loaded{idx: newIndex(), rev: 1, compactRev: -1, resume: -1, leases: map[string]int64{}}
	var err error
	v.Scan(nil, nil, func(k, val []byte) bool {
		var r revision
		if r, err = parseRevKey(k); err != nil {
			return false
		}
		var rec record
		if rec, err = decodeRecord(val); err != nil {
			err = fmt.Errorf("mvcc: revision %d.%d: %w", r.main, r.sub, err)
			return false
		}
		ki := st.idx.get(rec.key)
		if ki == nil {
			ki = &keyIndex{key: bytes.Clone(rec.key)}
			st.idx.insert(ki)
		}
		if rec.tombstone() {
			if ki.live() {
				ki.tombstone(r)
			} else {
				// Compaction kept the tombstone but not the puts before it.
				ki.gens = append(ki.gens, generation{revs: []revision{r}, closed: true})
			}
			delete(st.leases, string(rec.key))
		} else {
			ki.put(r, rec.create, rec.ver)
			if rec.lease != 0 {
				st.leases[string(rec.key)] = rec.lease
			} else {
				delete(st.leases, string(rec.key))
			}
		}
		st.rev = max(st.rev, r.main)
		return true
	})
	if err != nil {
		return nil, err
	}
	scheduled, hasScheduled, err := readRev(v, scheduledCompactKey)
	if err != nil {
		return nil, err
	}
	finished, hasFinished, err := readRev(v, finishedCompactKey)
	if err != nil {
		return nil, err
	}
	if hasFinished {
		st.compactRev = finished
	}
	if hasScheduled && (!hasFinished || scheduled > finished) {
		st.compactRev = scheduled
		st.resume = scheduled
	}
	// Every record of the last revisions may be gone if they were
	// tombstones at or below the compaction point.
	st.rev = max(st.rev, st.compactRev)
	if st.compactRev >= 0 {
		var empty []*keyIndex
		st.idx.tree.Ascend(func(ki *keyIndex) bool {
			if ki.compact(st.compactRev) {
				empty = append(empty, ki)
			}
			return true
		})
		for _, ki := range empty {
			st.idx.remove(ki)
		}
	}
	st.idx.tree.Ascend(func(ki *keyIndex) bool {
		if ki.live() {
			ki.lease = st.leases[string(ki.key)]
		}
		return true
	})
	return st, nil
}

func readRev(v *backend.View, key []byte) (int64, bool, error) {
	b := v.BucketGet(backend.MetaBucket, key)
	if b == nil {
		return 0, false, nil
	}
	if len(b) != 8 {
		return 0, false, fmt.Errorf("mvcc: meta %s has %d bytes", key, len(b))
	}
	return int64(binary.BigEndian.Uint64(b)), true, nil
}

func encodeRev(rev int64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, uint64(rev))
	return b
}

// install makes st the store's state and attaches leases. The caller holds
// writeMu, or is the constructor.
func (s *Store) install(st *loaded) {
	s.mu.Lock()
	s.idx = st.idx
	s.rev.Store(st.rev)
	s.compactRev.Store(st.compactRev)
	s.mu.Unlock()
	if s.opts.Leases != nil {
		for key, id := range st.leases {
			s.opts.Leases.Attach(id, []byte(key))
		}
	}
}

// Close stops compaction and, when the store owns its backend, closes it.
// Writes of an entry still being applied are dropped (see the backend's
// Close); the applier calls ForceCommit first to keep them.
func (s *Store) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return ErrClosed
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.compactor.stop()
	if s.ownsBackend {
		return s.be.Close()
	}
	return nil
}

// Rev returns the current revision: that of the last write that changed
// something (1 for a new store).
func (s *Store) Rev() int64 { return s.rev.Load() }

// CompactRev returns the compaction point, or -1 if the store was never
// compacted (as etcd reports it).
func (s *Store) CompactRev() int64 { return s.compactRev.Load() }

// Backend returns the backend, for mvcc/lease to keep its bucket in the
// same batch.
func (s *Store) Backend() *backend.Backend { return s.be }

// SetConsistentIndex records the raft entry being applied; see
// backend.Backend.SetConsistentIndex. Writer only.
func (s *Store) SetConsistentIndex(index, term uint64) { s.be.SetConsistentIndex(index, term) }

// ConsistentIndex returns the last index and term given to
// SetConsistentIndex, or those stored in the file after Open or Restore.
func (s *Store) ConsistentIndex() (index, term uint64) { return s.be.ConsistentIndex() }

// ForceCommit commits everything written, the current entry included.
// Writer only, between entries.
func (s *Store) ForceCommit() error { return s.be.ForceCommit() }
