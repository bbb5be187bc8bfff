package wal

import (
	"errors"
	"fmt"
)

// Sentinel errors. Compare with errors.Is: the WAL wraps them with the
// operation and the file it was working on.
var (
	// ErrExist is returned by Create when the directory already holds a log.
	ErrExist = errors.New("wal: log already exists")
	// ErrNotExist is returned by Open when the directory holds no segment.
	ErrNotExist = errors.New("wal: no log in directory")
	// ErrLocked is returned by Create and Open when another WAL (in this
	// process or another) holds the directory's lock.
	ErrLocked = errors.New("wal: directory is locked by another WAL")
	// ErrClosed is returned by every method after Close.
	ErrClosed = errors.New("wal: closed")
	// ErrCorrupt is matched by every *CorruptError.
	ErrCorrupt = errors.New("wal: corrupt log")
	// ErrSnapshotNotFound is returned by Open when the log holds no marker at
	// the requested index (or no longer reaches back to it), and by ReleaseTo
	// when no marker at or beyond the index has been saved.
	ErrSnapshotNotFound = errors.New("wal: snapshot marker not found")
	// ErrSnapshotMismatch is returned by Open when the log holds a marker at
	// the requested index but with a different term.
	ErrSnapshotMismatch = errors.New("wal: snapshot marker term mismatch")
	// ErrIndexGap is returned by Save when the entries are not consecutive or
	// would leave a hole after the last saved index, and by Open when the log
	// cannot supply every entry after the requested marker.
	ErrIndexGap = errors.New("wal: entry index gap")
	// ErrTooLarge is returned by Save for an entry whose record would exceed
	// the format's limit (MaxEntrySize bytes of data).
	ErrTooLarge = errors.New("wal: entry too large")
)

// CorruptError reports a record that cannot be trusted: a checksum or frame
// that does not verify where more written data follows it, or a segment that
// does not continue the one before it. Offset is the byte offset of the
// record's frame in File (0 for problems with the file as a whole).
type CorruptError struct {
	File   string
	Offset int64
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("wal: corrupt log: %s at offset %d: %s", e.File, e.Offset, e.Reason)
}

// Is makes errors.Is(err, ErrCorrupt) true for every *CorruptError.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }
