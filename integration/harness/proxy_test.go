package harness

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// echoPeer is a stand-in for a member's peer port: it reads the request
// head, answers "101" naming the sender, then echoes every byte.
type echoPeer struct {
	ln net.Listener
	wg sync.WaitGroup
}

func newEchoPeer(t *testing.T) *echoPeer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &echoPeer{ln: ln}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.wg.Add(1)
			go func() {
				defer e.wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				_, from, err := readHead(br)
				if err != nil {
					return
				}
				if _, err := fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nX-Echo-From: %s\r\n\r\n", from); err != nil {
					return
				}
				_, _ = io.Copy(c, br)
			}()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); e.wg.Wait() })
	return e
}

// dialAs opens a connection through addr as the member with the given ID
// and checks the handshake; it returns nil if the proxy refused it.
func dialAs(t *testing.T, addr string, id uint64) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "POST /raft/stream HTTP/1.1\r\nHost: x\r\nX-Cairn-From: %s\r\nX-Cairn-To: 1\r\n\r\n", strconv.FormatUint(id, 16)); err != nil {
		c.Close()
		return nil
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		c.Close()
		return nil
	}
	if !strings.Contains(line, "101") {
		t.Fatalf("handshake answered %q", line)
	}
	// The rest of the head.
	return c
}

// alive writes a byte and expects the echo: false once the connection is
// closed.
func alive(c net.Conn) bool {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("z")); err != nil {
		return false
	}
	buf := make([]byte, 1)
	for {
		if _, err := c.Read(buf); err != nil {
			return false
		}
		if buf[0] == 'z' {
			return true
		}
	}
}

func TestPeerNetCutsByHeader(t *testing.T) {
	backB := newEchoPeer(t)
	backA := newEchoPeer(t)
	n := NewPeerNet()
	defer n.Close()
	ports := FreePorts(t, 2)
	addrB := fmt.Sprintf("127.0.0.1:%d", ports[0])
	addrA := fmt.Sprintf("127.0.0.1:%d", ports[1])
	if err := n.Listen("b", addrB, backB.ln.Addr().String()); err != nil {
		t.Fatal(err)
	}
	if err := n.Listen("a", addrA, backA.ln.Addr().String()); err != nil {
		t.Fatal(err)
	}
	n.SetID("a", 0xa1)
	n.SetID("c", 0xc3)

	aToB := dialAs(t, addrB, 0xa1)
	cToB := dialAs(t, addrB, 0xc3)
	// b's ID is learned after its connection opened (members connect
	// before the harness knows their IDs): it must still be cut.
	bToA := dialAs(t, addrA, 0xb2)
	n.SetID("b", 0xb2)
	if aToB == nil || cToB == nil || bToA == nil {
		t.Fatal("a connection was refused before any cut")
	}
	defer aToB.Close()
	defer cToB.Close()
	defer bToA.Close()
	for _, c := range []net.Conn{aToB, cToB, bToA} {
		if !alive(c) {
			t.Fatal("a connection is dead before any cut")
		}
	}

	// One way, a to b: a's open connection dies and new ones are refused;
	// c to b and b to a carry on.
	n.Cut("a", "b")
	if alive(aToB) {
		t.Fatal("a->b survived the cut")
	}
	if c := dialAs(t, addrB, 0xa1); c != nil {
		c.Close()
		t.Fatal("a new a->b connection was accepted during the cut")
	}
	if !alive(cToB) || !alive(bToA) {
		t.Fatal("a one-way cut a->b broke other traffic")
	}
	if got := n.Cuts(); len(got) != 1 || got[0] != "a->b" {
		t.Fatalf("cuts = %v", got)
	}

	// An unknown sender is never cut.
	if c := dialAs(t, addrB, 0xdead); c == nil {
		t.Fatal("an unknown sender was refused")
	} else {
		c.Close()
	}

	n.Heal()
	c := dialAs(t, addrB, 0xa1)
	if c == nil || !alive(c) {
		t.Fatal("a->b still cut after Heal")
	}
	c.Close()

	n.Isolate("b")
	if alive(bToA) || alive(cToB) {
		t.Fatal("Isolate(b) left b's links open")
	}
	if st := n.Stats(); st.Refused < 1 || st.Severed < 3 {
		t.Fatalf("stats %+v", st)
	}
}

func TestPeerNetPassesBodyAfterHead(t *testing.T) {
	back := newEchoPeer(t)
	n := NewPeerNet()
	defer n.Close()
	addr := fmt.Sprintf("127.0.0.1:%d", FreePorts(t, 1)[0])
	if err := n.Listen("b", addr, back.ln.Addr().String()); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	// Head and the first body bytes in one write: the proxy must forward
	// what it buffered past the head.
	if _, err := io.WriteString(c, "POST /raft/snapshot HTTP/1.1\r\nX-Cairn-From: 1\r\n\r\nBODY"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line == "\r\n" {
			break
		}
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "BODY" {
		t.Fatalf("echoed %q, %v", got, err)
	}
}
