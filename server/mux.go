package server

import (
	"bufio"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"
)

// The client port serves gRPC and HTTP/1.1 on one listener. Every gRPC
// client opens with the HTTP/2 connection preface; anything else is handed
// to the HTTP server (the JSON gateway, /health, /metrics). Connections are
// told apart by their first bytes, read with a deadline so that an idle or
// garbage connection cannot hold the accept loop.

var http2Preface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

const sniffTimeout = 10 * time.Second

// protoMux splits one listener into a gRPC listener and an HTTP listener.
type protoMux struct {
	root net.Listener
	log  *slog.Logger
	grpc *chanListener
	http *chanListener
	wg   sync.WaitGroup

	mu       sync.Mutex
	closed   bool
	sniffing map[net.Conn]struct{} // connections not yet classified
}

func newProtoMux(root net.Listener, log *slog.Logger) *protoMux {
	return &protoMux{
		root:     root,
		log:      log,
		grpc:     newChanListener(root.Addr()),
		http:     newChanListener(root.Addr()),
		sniffing: map[net.Conn]struct{}{},
	}
}

// serve accepts until the root listener closes, then closes both children.
func (m *protoMux) serve() {
	defer func() {
		m.wg.Wait()
		m.grpc.Close()
		m.http.Close()
	}()
	for {
		c, err := m.root.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			_ = c.Close()
			continue
		}
		m.sniffing[c] = struct{}{}
		m.wg.Add(1)
		m.mu.Unlock()
		go func() {
			defer m.wg.Done()
			m.route(c)
			m.mu.Lock()
			delete(m.sniffing, c)
			m.mu.Unlock()
		}()
	}
}

// route reads enough of the connection to classify it.
func (m *protoMux) route(c net.Conn) {
	if err := c.SetReadDeadline(time.Now().Add(sniffTimeout)); err != nil {
		_ = c.Close()
		return
	}
	br := bufio.NewReaderSize(c, len(http2Preface))
	// Compare byte by byte: an HTTP/1 request differs from the preface
	// within its first two bytes, so a short request is never kept waiting
	// for bytes it will not send.
	isGRPC := true
	for n := 1; n <= len(http2Preface); n++ {
		head, err := br.Peek(n)
		if err != nil {
			_ = c.Close() // gone, silent or garbage before it could be classified
			return
		}
		if head[n-1] != http2Preface[n-1] {
			isGRPC = false
			break
		}
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		_ = c.Close()
		return
	}
	pc := &peekedConn{Conn: c, r: br}
	target := m.http
	if isGRPC {
		target = m.grpc
	}
	if !target.deliver(pc) {
		_ = c.Close()
	}
}

// close stops accepting and drops connections still being classified;
// serve then closes the children.
func (m *protoMux) close() error {
	m.mu.Lock()
	m.closed = true
	for c := range m.sniffing {
		_ = c.Close()
	}
	m.mu.Unlock()
	return m.root.Close()
}

type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// chanListener is a net.Listener fed by protoMux.
type chanListener struct {
	addr   net.Addr
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *chanListener) deliver(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.closed:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }
