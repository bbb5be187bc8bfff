//go:build unix && !solaris && !aix

package wal

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// dirLock is an exclusive flock on dir/LOCK. flock locks belong to the open
// file description, so a second open of the file, in this process or any
// other, conflicts with the first. The kernel drops the lock when the file
// is closed or the process dies, so a crash leaves no stale lock.
type dirLock struct {
	f *os.File
}

func lockDir(dir string) (*dirLock, error) {
	path := filepath.Join(dir, lockName)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("wal: open lock %s: %w", path, err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, closeAfter(fmt.Errorf("wal: lock %s: %w", path, err), f, path)
	}
	var lerr error
	if err := rc.Control(func(fd uintptr) {
		for {
			lerr = syscall.Flock(int(fd), syscall.LOCK_EX|syscall.LOCK_NB)
			if lerr != syscall.EINTR {
				return
			}
		}
	}); err != nil {
		lerr = err
	}
	if lerr != nil {
		if errors.Is(lerr, syscall.EWOULDBLOCK) {
			lerr = ErrLocked
		}
		return nil, closeAfter(fmt.Errorf("wal: lock %s: %w", path, lerr), f, path)
	}
	return &dirLock{f: f}, nil
}

func (l *dirLock) release() error {
	if err := l.f.Close(); err != nil {
		return fmt.Errorf("wal: release lock %s: %w", l.f.Name(), err)
	}
	return nil
}
