package transport

import (
	"net"
	"syscall"
	"testing"
	"time"
)

// TestStreamDialSetsUserTimeout checks that stream connections carry
// TCP_USER_TIMEOUT = WriteTimeout, so a peer behind a silent partition is
// given up on (and redialed) instead of waiting on TCP's retransmit timer.
func TestStreamDialSetsUserTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := net.Dialer{Control: userTimeout(3 * time.Second)}
	conn, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	raw, err := conn.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var got int
	var gerr error
	if err := raw.Control(func(fd uintptr) {
		got, gerr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpUserTimeout)
	}); err != nil || gerr != nil {
		t.Fatalf("getsockopt: %v %v", err, gerr)
	}
	if got != 3000 {
		t.Fatalf("TCP_USER_TIMEOUT = %d ms, want 3000", got)
	}
}
