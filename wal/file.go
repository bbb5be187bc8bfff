package wal

import (
	"fmt"
	"os"
	"path/filepath"
)

// segmentFile is what the WAL needs from an open segment. *os.File-backed
// segments use osFile; tests substitute a file that fails on demand.
type segmentFile interface {
	// WriteAt writes p at off; a short write is an error.
	WriteAt(p []byte, off int64) (int, error)
	// Datasync makes every completed write durable (fdatasync on Linux).
	Datasync() error
	// Sync is a full fsync, used once for a new segment so that its
	// length and extents are durable before it is renamed into place.
	Sync() error
	Close() error
}

// osFile is a segment file on disk.
type osFile struct {
	f *os.File
}

func (o osFile) WriteAt(p []byte, off int64) (int, error) { return o.f.WriteAt(p, off) }
func (o osFile) Datasync() error                          { return datasync(o.f) }
func (o osFile) Sync() error                              { return o.f.Sync() }
func (o osFile) Close() error                             { return o.f.Close() }

// syncDir fsyncs a directory so that creations, renames and removals in it
// are durable.
func syncDir(dir string) error {
	if !dirSyncSupported {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("wal: sync dir %s: %w", dir, err)
	}
	serr := d.Sync()
	cerr := d.Close()
	if serr != nil {
		return fmt.Errorf("wal: sync dir %s: %w", dir, serr)
	}
	if cerr != nil {
		return fmt.Errorf("wal: close dir %s: %w", dir, cerr)
	}
	return nil
}

// closeAfter closes f after an earlier failure, keeping err as the result but
// not losing a close error.
func closeAfter(err error, f interface{ Close() error }, name string) error {
	if cerr := f.Close(); cerr != nil {
		return fmt.Errorf("%w (and close %s: %v)", err, name, cerr)
	}
	return err
}

// removeTemps deletes segment files a crashed cut left behind; they were
// never renamed into place, so they hold nothing acknowledged.
func removeTemps(dir string) error {
	matches, err := filepath.Glob(filepath.Join(dir, "*"+tmpSuffix))
	if err != nil {
		return fmt.Errorf("wal: list temp files in %s: %w", dir, err)
	}
	for _, m := range matches {
		if err := os.Remove(m); err != nil {
			return fmt.Errorf("wal: remove %s: %w", m, err)
		}
	}
	if len(matches) > 0 {
		return syncDir(dir)
	}
	return nil
}

// extend makes f at least size bytes long; the new bytes read as zeros.
func extend(f *os.File, size int64) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() >= size {
		return nil
	}
	return f.Truncate(size)
}
