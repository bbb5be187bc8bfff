//go:build !unix || solaris || aix

package wal

import (
	"fmt"
	"path/filepath"
	"sync"
)

// Without flock (Windows, Solaris, AIX, ...), the lock only excludes other WALs in this process: the
// directory's absolute path is held in a process-wide set.
var (
	lockMu   sync.Mutex
	lockHeld = map[string]bool{}
)

type dirLock struct {
	path string
}

func lockDir(dir string) (*dirLock, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("wal: lock %s: %w", dir, err)
	}
	lockMu.Lock()
	defer lockMu.Unlock()
	if lockHeld[abs] {
		return nil, fmt.Errorf("wal: lock %s: %w", abs, ErrLocked)
	}
	lockHeld[abs] = true
	return &dirLock{path: abs}, nil
}

func (l *dirLock) release() error {
	lockMu.Lock()
	defer lockMu.Unlock()
	delete(lockHeld, l.path)
	return nil
}
