//go:build linux

package wal

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

const dirSyncSupported = true

// datasync flushes f's data and the metadata needed to read it back, but
// not timestamps: one device flush instead of fsync's journal commit when
// the file's size and extents are unchanged.
func datasync(f *os.File) error {
	// f.Fd is safe here: segment files are regular files (never in
	// non-blocking mode) and the WAL's mutex keeps Close away.
	fd := int(f.Fd())
	for {
		err := syscall.Fdatasync(fd)
		if err != syscall.EINTR {
			return err
		}
	}
}

// preallocate reserves size bytes for f and makes size its length, so later
// appends do not grow the file. Filesystems without fallocate get a sparse
// file of the right length instead.
func preallocate(f *os.File, size int64) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) {
		for {
			ferr = syscall.Fallocate(int(fd), 0, 0, size)
			if ferr != syscall.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	if ferr == nil {
		return nil
	}
	if !errors.Is(ferr, syscall.EOPNOTSUPP) && !errors.Is(ferr, syscall.ENOSYS) {
		return fmt.Errorf("fallocate: %w", ferr)
	}
	return extend(f, size)
}
