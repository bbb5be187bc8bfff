package backend

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"
)

// Snapshot commits the sealed writes and streams a consistent copy of the
// file to w, returning the bytes written. It captures the file as of that
// commit: an entry the applier has not finished (not sealed) is not in it,
// so the applier calls ForceCommit first when the snapshot must cover its
// last entry. Writes and reads go on meanwhile; the copy holds a read
// transaction for its whole duration.
func (b *Backend) Snapshot(w io.Writer) (int64, error) {
	if err := b.Commit(); err != nil {
		return 0, err
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return 0, ErrClosed
	}
	h := b.db
	h.acquire()
	b.mu.Unlock()
	defer h.release()

	tx, err := h.db.Begin(false)
	if err != nil {
		return 0, fmt.Errorf("backend: snapshot: %w", err)
	}
	if sw, ok := w.(SizedWriter); ok {
		sw.SetSize(tx.Size())
	}
	n, err := tx.WriteTo(w)
	if rbErr := tx.Rollback(); rbErr != nil {
		err = errors.Join(err, rbErr)
	}
	if err != nil {
		return n, fmt.Errorf("backend: snapshot: %w", err)
	}
	return n, nil
}

// SizedWriter is a writer that wants to know a snapshot's size before its
// first byte (to report progress); Snapshot tells it.
type SizedWriter interface {
	io.Writer
	SetSize(n int64)
}

// PendingRestore is a received snapshot, written and synced next to the
// live file but not yet in use. Read it (View) to rebuild what the layers
// above keep in memory, then Commit to swap it in, or Abort. Until one of
// them is called the backend keeps serving its old state, and no other
// Restore or Defragment can start.
type PendingRestore struct {
	b    *Backend
	path string
	h    *dbHandle
	ci   ciPair
	last []byte
	done bool
}

// PrepareRestore writes r to a temporary file in the backend's directory,
// fsyncs it, and opens it.
func (b *Backend) PrepareRestore(r io.Reader) (*PendingRestore, error) {
	b.maintMu.Lock()
	p, err := b.prepareRestore(r)
	if err != nil {
		b.maintMu.Unlock()
		return nil, err
	}
	return p, nil
}

func (b *Backend) prepareRestore(r io.Reader) (*PendingRestore, error) {
	if err := b.Err(); errors.Is(err, ErrClosed) {
		return nil, err
	}
	dir, base := filepath.Split(b.path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, base+".restore-*")
	if err != nil {
		return nil, fmt.Errorf("backend: restore: %w", err)
	}
	tmp := f.Name()
	fail := func(err error) (*PendingRestore, error) {
		if rmErr := os.Remove(tmp); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) {
			err = errors.Join(err, rmErr)
		}
		return nil, fmt.Errorf("backend: restore: %w", err)
	}
	if _, err := io.Copy(f, r); err != nil {
		return fail(errors.Join(err, f.Close()))
	}
	if err := f.Sync(); err != nil {
		return fail(errors.Join(err, f.Close()))
	}
	if err := f.Close(); err != nil {
		return fail(err)
	}
	db, err := openDB(tmp, b.opts)
	if err != nil {
		return fail(errors.Join(ErrInvalidSnapshot, err))
	}
	var hasBuckets bool
	err = db.View(func(tx *bolt.Tx) error {
		hasBuckets = tx.Bucket(revBucketName) != nil && tx.Bucket(metaBucketName) != nil
		return nil
	})
	if err == nil && !hasBuckets {
		err = ErrInvalidSnapshot
	}
	var ci ciPair
	var last []byte
	if err == nil {
		ci, last, err = initDB(db)
	}
	if err != nil {
		return fail(errors.Join(err, closeDB(db)))
	}
	return &PendingRestore{b: b, path: tmp, h: newHandle(db), ci: ci, last: last}, nil
}

// ConsistentIndex returns the consistent index stored in the snapshot.
func (p *PendingRestore) ConsistentIndex() (index, term uint64) { return p.ci.index, p.ci.term }

// View returns a read view of the snapshot (nothing buffered).
func (p *PendingRestore) View() (*View, error) {
	rt, err := newReadTx(p.h)
	if err != nil {
		return nil, err
	}
	return &View{rt: rt}, nil
}

// Abort closes and removes the received file.
func (p *PendingRestore) Abort() error {
	if p.done {
		return nil
	}
	p.done = true
	defer p.b.maintMu.Unlock()
	p.h.release()
	<-p.h.closedc
	err := p.h.closeErr
	if rmErr := os.Remove(p.path); rmErr != nil {
		err = errors.Join(err, rmErr)
	}
	if err != nil {
		return fmt.Errorf("backend: restore abort: %w", err)
	}
	return nil
}

// Commit renames the received file over the live one, fsyncs the
// directory, and makes it current. Buffered writes that were not committed
// are dropped: the snapshot replaces the whole state, and the consistent
// index becomes the snapshot's. Views taken before keep reading the old
// file, which is closed when the last of them is released. swapped reports
// whether the new file is now current: it can be, with an error, when only
// the directory sync failed.
func (p *PendingRestore) Commit() (swapped bool, err error) {
	if p.done {
		return false, fmt.Errorf("backend: restore already finished")
	}
	p.done = true
	b := p.b
	defer b.maintMu.Unlock()

	b.commitMu.Lock()
	defer b.commitMu.Unlock()
	if err := os.Rename(p.path, b.path); err != nil {
		p.h.release()
		<-p.h.closedc
		return false, errors.Join(fmt.Errorf("backend: restore: rename: %w", err), p.h.closeErr, os.Remove(p.path))
	}
	// From here on the path names the new file, so it must become current
	// even if the directory sync fails.
	syncErr := fsyncDir(filepath.Dir(b.path))
	rt, rtErr := newReadTx(p.h)

	b.mu.Lock()
	oldCur, oldDB := b.cur, b.db
	b.db, b.cur = p.h, rt
	b.log, b.gops, b.oob, b.dels = nil, nil, nil, nil
	b.sealedLog, b.sealedG = 0, 0
	b.ci, b.sealedCI, b.committedCI = p.ci, p.ci, p.ci
	b.lastKey = p.last
	if rtErr != nil && b.err == nil {
		b.err = rtErr
	}
	b.retireLocked(oldDB)
	b.cond.Broadcast()
	b.mu.Unlock()
	if oldCur != nil {
		oldCur.release()
	}
	if rt != nil {
		b.updateSizes(rt.tx)
	}
	if syncErr != nil {
		return true, fmt.Errorf("backend: restore: %w", syncErr)
	}
	return true, rtErr
}

func fsyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	serr := d.Sync()
	cerr := d.Close()
	if err := errors.Join(serr, cerr); err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}
