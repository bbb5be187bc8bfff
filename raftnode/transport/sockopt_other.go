//go:build !linux

package transport

import (
	"syscall"
	"time"
)

// userTimeout is a no-op where TCP_USER_TIMEOUT does not exist; there a
// partitioned stream is detected only when writes time out.
func userTimeout(time.Duration) func(network, address string, c syscall.RawConn) error {
	return nil
}
