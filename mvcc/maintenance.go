package mvcc

import (
	"errors"
	"io"

	"github.com/cairnkv/cairn/mvcc/backend"
)

// Snapshot streams a consistent copy of the bbolt file (the committed
// state: see backend.Backend.Snapshot) and returns its size. Any
// goroutine; the store keeps serving.
func (s *Store) Snapshot(w io.Writer) (int64, error) {
	if s.closed.Load() {
		return 0, ErrClosed
	}
	return s.be.Snapshot(w)
}

// Restore replaces the whole keyspace with a snapshot read from r. Writer
// only. The file is received and the new index built while the store keeps
// serving its old state; then, in one step, the file is swapped in and the
// index replaced. Leases are re-attached (after LeaseRecoverer.Recover),
// an unfinished compaction in the snapshot resumes, and a RestoreObserver
// is told.
func (s *Store) Restore(r io.Reader) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.closed.Load() {
		return ErrClosed
	}
	p, err := s.be.PrepareRestore(r)
	if err != nil {
		return err
	}
	v, err := p.View()
	if err != nil {
		return errors.Join(err, p.Abort())
	}
	st, err := loadState(v)
	v.Release()
	if err != nil {
		return errors.Join(err, p.Abort())
	}

	s.compactor.stop()
	s.mu.Lock()
	swapped, err := p.Commit()
	if swapped {
		s.idx = st.idx
		s.rev.Store(st.rev)
		s.compactRev.Store(st.compactRev)
	}
	s.mu.Unlock()
	s.compactor = newCompactor(s)
	if !swapped {
		// The old state stays; its interrupted compaction (if any) resumes.
		if c := s.compactRev.Load(); c >= 0 {
			s.compactor.enqueue(c)
		}
		return err
	}
	if st.resume >= 0 {
		s.compactor.enqueue(st.resume)
	}
	if l, ok := s.opts.Leases.(LeaseRecoverer); ok {
		l.Recover()
	}
	if s.opts.Leases != nil {
		for key, id := range st.leases {
			s.opts.Leases.Attach(id, []byte(key))
		}
	}
	if o, ok := s.opts.Observer.(RestoreObserver); ok {
		o.OnRestore(st.rev, st.compactRev)
	}
	return err
}

// Defragment rewrites the bbolt file compactly while the store serves reads
// and writes; see the backend package documentation.
func (s *Store) Defragment() (backend.DefragStats, error) {
	if s.closed.Load() {
		return backend.DefragStats{}, ErrClosed
	}
	return s.be.Defragment()
}

// Size returns the size of the bbolt file.
func (s *Store) Size() int64 { return s.be.Size() }

// SizeInUse returns the size of the file less its free pages.
func (s *Store) SizeInUse() int64 { return s.be.SizeInUse() }
