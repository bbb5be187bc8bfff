package mvcc

import (
	"bytes"
	"sync"
	"time"

	"github.com/cairnkv/cairn/mvcc/backend"
)

// indexCompactChunk is the number of keys compacted per hold of the index
// lock, so that readers are not held out for the whole index.
const indexCompactChunk = 10000

// Compact discards the history below rev, as etcd's Compact. Writer only;
// it must be the only store write of its raft entry (as compaction is in
// etcd), because it commits everything buffered, the current entry
// included.
//
// The logical part is immediate: on return, reads below rev fail with
// ErrCompacted, and the compaction point is durable. The physical removal
// of the records then runs in the background in small batches; the
// returned channel is closed when it is done. With ErrCompacted (rev at or
// below the current point), the channel closes when compactions already
// queued are done; with other errors it is nil.
func (s *Store) Compact(rev int64) (<-chan struct{}, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.closed.Load() {
		return nil, ErrClosed
	}
	if err := s.be.Err(); err != nil {
		return nil, err
	}
	if rev <= s.compactRev.Load() {
		return s.compactor.barrier(), ErrCompacted
	}
	if rev > s.rev.Load() {
		return nil, ErrFutureRev
	}
	s.mu.Lock()
	s.compactRev.Store(rev)
	s.mu.Unlock()
	// The mark must be durable before any record is removed: a restart then
	// resumes the compaction instead of exposing a half-removed history.
	s.be.Put(backend.MetaBucket, scheduledCompactKey, encodeRev(rev))
	if err := s.be.ForceCommit(); err != nil {
		return nil, err
	}
	s.compactIndex(rev)
	return s.compactor.enqueue(rev), nil
}

// compactIndex drops from the index what reads at or above rev cannot need.
// Readers at rev or above see the same answers before, during and after.
func (s *Store) compactIndex(rev int64) {
	var from []byte
	for {
		var chunk []*keyIndex
		it := func(ki *keyIndex) bool {
			chunk = append(chunk, ki)
			return len(chunk) < indexCompactChunk
		}
		if from == nil {
			s.idx.tree.Ascend(it)
		} else {
			s.idx.tree.AscendGreaterOrEqual(&keyIndex{key: from}, it)
		}
		if len(chunk) == 0 {
			return
		}
		s.mu.Lock()
		for _, ki := range chunk {
			if ki.compact(rev) {
				s.idx.remove(ki)
			}
		}
		s.mu.Unlock()
		if len(chunk) < indexCompactChunk {
			return
		}
		from = append(bytes.Clone(chunk[len(chunk)-1].key), 0)
	}
}

type compactJob struct {
	rev  int64 // -1: a barrier
	done chan struct{}
}

// compactor removes compacted records, one job at a time, in order.
type compactor struct {
	s     *Store
	mu    sync.Mutex
	jobs  []compactJob
	wake  chan struct{}
	stopc chan struct{}
	donec chan struct{}
}

func newCompactor(s *Store) *compactor {
	c := &compactor{
		s:     s,
		wake:  make(chan struct{}, 1),
		stopc: make(chan struct{}),
		donec: make(chan struct{}),
	}
	go c.run()
	return c
}

func (c *compactor) enqueue(rev int64) <-chan struct{} {
	done := make(chan struct{})
	c.mu.Lock()
	c.jobs = append(c.jobs, compactJob{rev: rev, done: done})
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return done
}

// barrier returns a channel closed once the jobs queued so far are done.
func (c *compactor) barrier() <-chan struct{} { return c.enqueue(-1) }

// stop aborts the current job between batches and waits. Jobs left undone
// have their channels closed (the compaction resumes at the next Open).
func (c *compactor) stop() {
	close(c.stopc)
	<-c.donec
	c.mu.Lock()
	for _, j := range c.jobs {
		close(j.done)
	}
	c.jobs = nil
	c.mu.Unlock()
}

func (c *compactor) run() {
	defer close(c.donec)
	for {
		c.mu.Lock()
		var job compactJob
		have := len(c.jobs) > 0
		if have {
			job = c.jobs[0]
		}
		c.mu.Unlock()
		if !have {
			select {
			case <-c.stopc:
				return
			case <-c.wake:
				continue
			}
		}
		if job.rev >= 0 && !c.s.compactRecords(job.rev, c.stopc) {
			return // stopped; stop closes the remaining channels
		}
		c.mu.Lock()
		c.jobs = c.jobs[1:]
		c.mu.Unlock()
		close(job.done)
	}
}

// compactRecords removes the revision records at or below rev that the
// index no longer holds, a batch at a time, then persists the finished
// mark. It returns false if stopped first.
//
// The index is compacted before the job runs, and revisions never return
// to it, so "not indexed" is final. Readers pin their view while holding
// the index lock, after looking revisions up; a view taken before a purge
// commits still sees the purged records.
func (s *Store) compactRecords(rev int64, stopc <-chan struct{}) bool {
	batch := s.opts.CompactionBatch
	end := revKeyMain(rev + 1)
	var from []byte
	for {
		select {
		case <-stopc:
			return false
		default:
		}
		type cand struct {
			rk  []byte
			key []byte
			r   revision
		}
		var cands []cand
		v, err := s.be.View()
		if err != nil {
			return true // backend closed or failed: nothing more can be done
		}
		var scanErr error
		v.Scan(from, end, func(k, val []byte) bool {
			r, err := parseRevKey(k)
			if err != nil {
				scanErr = err
				return false
			}
			rec, err := decodeRecord(val)
			if err != nil {
				scanErr = err
				return false
			}
			cands = append(cands, cand{rk: bytes.Clone(k), key: bytes.Clone(rec.key), r: r})
			return len(cands) < batch
		})
		v.Release()
		if scanErr != nil {
			return true // a corrupt record: leave the job for the next Open
		}
		if len(cands) == 0 {
			break
		}
		var purge [][]byte
		s.mu.RLock()
		for _, c := range cands {
			if ki := s.idx.get(c.key); ki == nil || !ki.has(c.r) {
				purge = append(purge, c.rk)
			}
		}
		s.mu.RUnlock()
		if err := s.be.Purge(purge); err != nil {
			return true
		}
		if len(cands) < batch {
			break
		}
		last := cands[len(cands)-1].rk
		from = append(append(make([]byte, 0, len(last)+1), last...), 0)
		if p := s.opts.CompactionPause; p > 0 {
			t := time.NewTimer(p)
			select {
			case <-stopc:
				t.Stop()
				return false
			case <-t.C:
			}
		}
	}
	s.be.PutUnordered(backend.MetaBucket, finishedCompactKey, encodeRev(rev))
	// A failure here is sticky in the backend and surfaces on the next write.
	_ = s.be.Commit()
	return true
}
