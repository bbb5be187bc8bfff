//go:build !linux

package wal

import (
	"os"
	"runtime"
)

// Windows cannot open a directory for fsync; elsewhere it works and matters.
const dirSyncSupported = runtime.GOOS != "windows"

// datasync falls back to a full sync where fdatasync is not available
// (on Darwin, os.File.Sync issues F_FULLFSYNC).
func datasync(f *os.File) error { return f.Sync() }

// preallocate gives f the length size; the space is not reserved.
func preallocate(f *os.File, size int64) error { return extend(f, size) }
