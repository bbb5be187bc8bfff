package backend

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

const (
	// copyChunk is the number of records per write transaction while copying
	// into the new file.
	copyChunk = 10000
	// defragRounds bounds the catch-up rounds before the final pause.
	defragRounds = 4
	// defragSmallDelta is a delta small enough to copy during the pause.
	defragSmallDelta = 2000
)

// DefragStats describes one defragmentation.
type DefragStats struct {
	SizeBefore, InUseBefore int64 // file size and size in use before
	SizeAfter, InUseAfter   int64 // and after
	Copied                  int   // records copied into the new file
	Rounds                  int   // catch-up rounds before the pause
	// Pause is how long commits were held for the final delta and the swap.
	// Reads and buffered writes were never held.
	Pause    time.Duration
	Duration time.Duration
}

// Defragment rewrites the file compactly while the backend keeps serving;
// see the package documentation for the design. Only commits wait, during
// the final pause.
func (b *Backend) Defragment() (st DefragStats, err error) {
	start := time.Now()
	b.maintMu.Lock()
	defer b.maintMu.Unlock()
	if err := b.Commit(); err != nil {
		return st, err
	}
	st.SizeBefore, st.InUseBefore = b.Size(), b.SizeInUse()

	tmp := b.path + ".defrag"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return st, fmt.Errorf("backend: defrag: %w", err)
	}
	ndb, err := openDB(tmp, b.opts)
	if err != nil {
		return st, fmt.Errorf("backend: defrag: %w", err)
	}
	// The new file becomes durable with one sync before it is renamed in.
	ndb.NoSync, ndb.NoGrowSync = true, true
	swapped := false
	defer func() {
		b.commitMu.Lock()
		b.defragDels = nil
		b.commitMu.Unlock()
		if !swapped {
			if cerr := errors.Join(closeDB(ndb), os.Remove(tmp)); cerr != nil {
				err = errors.Join(err, fmt.Errorf("backend: defrag cleanup: %w", cerr))
			}
		}
	}()

	b.mu.Lock()
	h := b.db
	h.acquire()
	b.mu.Unlock()
	defer h.release()

	// Phase 1: copy the revision bucket as of now; writes go on.
	wm, n, err := b.copyRound(h, ndb, nil)
	st.Copied += n
	if err != nil {
		return st, fmt.Errorf("backend: defrag: %w", err)
	}
	// Phase 2: catch up with what was committed meanwhile, until the delta
	// is small.
	for st.Rounds < defragRounds {
		var n int
		wm, n, err = b.copyRound(h, ndb, wm)
		st.Copied += n
		st.Rounds++
		if err != nil {
			return st, fmt.Errorf("backend: defrag: %w", err)
		}
		if n <= defragSmallDelta {
			break
		}
	}
	// Phase 3: hold commits, copy the last delta and the small buckets, swap.
	b.commitMu.Lock()
	pause := time.Now()
	n, err = b.finishDefrag(h, ndb, wm, tmp)
	st.Copied += n
	if err == nil || errors.Is(err, errSwapped) {
		swapped = true
	}
	st.Pause = time.Since(pause)
	b.commitMu.Unlock()
	if err != nil {
		return st, fmt.Errorf("backend: defrag: %w", err)
	}
	st.SizeAfter, st.InUseAfter = b.Size(), b.SizeInUse()
	st.Duration = time.Since(start)
	return st, nil
}

var errSwapped = errors.New("file swapped but directory not synced")

// copyRound copies revision records above wm (all if nil) from a fresh read
// transaction, and replays the deletions committed since the previous
// round. The read transaction and the deletion log are taken together under
// commitMu, so the new file matches the old one as of that instant.
func (b *Backend) copyRound(h *dbHandle, ndb *bolt.DB, wm []byte) ([]byte, int, error) {
	b.commitMu.Lock()
	tx, err := h.db.Begin(false)
	dels := b.defragDels
	b.defragDels = [][]byte{}
	b.commitMu.Unlock()
	if err != nil {
		return wm, 0, err
	}
	n, last, err := copyBucket(tx, ndb, revBucketName, wm)
	err = errors.Join(err, tx.Rollback())
	if err == nil {
		err = deleteKeys(ndb, dels)
	}
	return last, n + len(dels), err
}

// finishDefrag runs with commitMu held: nothing commits to the old file.
func (b *Backend) finishDefrag(h *dbHandle, ndb *bolt.DB, wm []byte, tmp string) (int, error) {
	if err := b.Err(); err != nil {
		return 0, err
	}
	tx, err := h.db.Begin(false)
	if err != nil {
		return 0, err
	}
	n, _, err := copyBucket(tx, ndb, revBucketName, wm)
	if err == nil {
		err = deleteKeys(ndb, b.defragDels)
	}
	b.defragDels = nil
	if err == nil {
		var m int
		m, err = copySmallBuckets(tx, ndb)
		n += m
	}
	err = errors.Join(err, tx.Rollback())
	if err == nil {
		_, _, err = initDB(ndb)
	}
	if err != nil {
		return n, err
	}
	ndb.NoSync, ndb.NoGrowSync = false, false
	if err := ndb.Sync(); err != nil {
		return n, fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, b.path); err != nil {
		return n, fmt.Errorf("rename: %w", err)
	}
	// The path now names the new file: it must become current.
	syncErr := fsyncDir(filepath.Dir(b.path))
	nh := newHandle(ndb)
	rt, rtErr := newReadTx(nh)
	b.mu.Lock()
	oldCur := b.cur
	b.db, b.cur = nh, rt
	if rtErr != nil && b.err == nil {
		b.err = rtErr
	}
	b.retireLocked(h)
	b.mu.Unlock()
	if oldCur != nil {
		oldCur.release()
	}
	if rt != nil {
		b.updateSizes(rt.tx)
	}
	if err := errors.Join(syncErr, rtErr); err != nil {
		return n, errors.Join(errSwapped, err)
	}
	return n, nil
}

// copyBucket copies the records of one bucket with keys above after (all
// when nil) from src into dst, in write transactions of copyChunk records.
func copyBucket(src *bolt.Tx, dst *bolt.DB, name, after []byte) (int, []byte, error) {
	sb := src.Bucket(name)
	if sb == nil {
		return 0, after, nil
	}
	c := sb.Cursor()
	var k, v []byte
	if after == nil {
		k, v = c.First()
	} else {
		k, v = c.Seek(after)
		if k != nil && bytes.Equal(k, after) {
			k, v = c.Next()
		}
	}
	n, last := 0, after
	for k != nil {
		err := dst.Update(func(tx *bolt.Tx) error {
			db, err := tx.CreateBucketIfNotExists(name)
			if err != nil {
				return err
			}
			// Keys arrive in order: fill pages completely.
			db.FillPercent = 1.0
			for i := 0; k != nil && i < copyChunk; i++ {
				if v != nil {
					if err := db.Put(k, v); err != nil {
						return err
					}
					n++
					last = k
				}
				k, v = c.Next()
			}
			return nil
		})
		if err != nil {
			return n, bytes.Clone(last), fmt.Errorf("copy bucket %s: %w", name, err)
		}
	}
	return n, bytes.Clone(last), nil
}

func deleteKeys(dst *bolt.DB, keys [][]byte) error {
	if len(keys) == 0 {
		return nil
	}
	return dst.Update(func(tx *bolt.Tx) error {
		kb := tx.Bucket(revBucketName)
		if kb == nil {
			return nil
		}
		for _, k := range keys {
			if err := kb.Delete(k); err != nil {
				return fmt.Errorf("delete revision %x: %w", k, err)
			}
		}
		return nil
	})
}

// copySmallBuckets replaces every bucket of dst but the revision bucket
// with the one in src.
func copySmallBuckets(src *bolt.Tx, dst *bolt.DB) (int, error) {
	err := dst.Update(func(tx *bolt.Tx) error {
		var names [][]byte
		err := tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
			if !bytes.Equal(name, revBucketName) {
				names = append(names, bytes.Clone(name))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, name := range names {
			if err := tx.DeleteBucket(name); err != nil {
				return fmt.Errorf("drop bucket %s: %w", name, err)
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	var names [][]byte
	err = src.ForEach(func(name []byte, _ *bolt.Bucket) error {
		if !bytes.Equal(name, revBucketName) {
			names = append(names, name)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	total := 0
	for _, name := range names {
		n, _, err := copyBucket(src, dst, name, nil)
		total += n
		if err != nil {
			return total, err
		}
		// An empty bucket still exists in the source: keep it.
		if n == 0 {
			if err := dst.Update(func(tx *bolt.Tx) error {
				_, err := tx.CreateBucketIfNotExists(name)
				return err
			}); err != nil {
				return total, err
			}
		}
	}
	return total, nil
}
