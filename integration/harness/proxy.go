package harness

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// PeerNet is a fault proxy on the peer path of a cluster. With
// Options.PeerProxy each member listens on its own peer port
// (Member.ListenPeerURL) but advertises the address of a proxy in front of
// it (Member.PeerURL), so every connection another member opens to it
// passes through that proxy.
//
// A peer request names its sender in the X-Cairn-From header (raft message
// streams, snapshots and forwarded lease calls all do). The proxy for
// member B reads the HTTP request head of each incoming connection, learns
// the sender from that header, then copies bytes both ways without looking
// at them again; a connection carries one sender's traffic for its whole
// life, so the first head is enough. A cut from A to B makes B's proxy
// close the connections it holds from A and refuse new ones from A; the
// other direction, B to A, runs on connections B opens to A's proxy and is
// untouched. Cutting both directions is two one-way cuts. Heal lifts every
// cut; the members reconnect on their own.
//
// Connections whose sender is unknown (no X-Cairn-From, or an ID not
// registered with SetID) are never cut: they are not member traffic the
// harness knows about. Test hooks are posted to the members' real peer
// ports and never pass through a proxy.
//
// Every method is safe for concurrent use. Close stops the proxies and
// waits for all their goroutines.
type PeerNet struct {
	mu      sync.Mutex
	names   map[string]string // X-Cairn-From value (member ID in hex) → member name
	cut     map[link]bool     // from → to
	proxies map[string]*peerProxy
	closed  bool

	accepted atomic.Int64 // connections piped to a member
	refused  atomic.Int64 // connections refused because their link was cut
	severed  atomic.Int64 // open connections closed by a cut
}

type link struct{ from, to string }

// PeerNetStats counts what the proxies did.
type PeerNetStats struct {
	Accepted, Refused, Severed int64
}

// NewPeerNet returns an empty fault network; add a proxy per member with
// Listen.
func NewPeerNet() *PeerNet {
	return &PeerNet{names: map[string]string{}, cut: map[link]bool{}, proxies: map[string]*peerProxy{}}
}

// Listen starts the proxy for member name on listenAddr (host:port),
// forwarding to the member's real peer address target.
func (n *PeerNet) Listen(name, listenAddr, target string) error {
	ln, err := net.Listen("tcp", listenAddr)
	if err != nil {
		return fmt.Errorf("harness: proxy for %s: %w", name, err)
	}
	p := &peerProxy{net: n, name: name, ln: ln, target: target, conns: map[*proxyConn]struct{}{}}
	n.mu.Lock()
	if n.closed || n.proxies[name] != nil {
		n.mu.Unlock()
		_ = ln.Close()
		return fmt.Errorf("harness: proxy for %s: closed or already listening", name)
	}
	n.proxies[name] = p
	n.mu.Unlock()
	p.wg.Add(1)
	go p.accept()
	return nil
}

// SetID tells the proxies which member a sender ID (as in X-Cairn-From)
// belongs to.
func (n *PeerNet) SetID(name string, id uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.names[strconv.FormatUint(id, 16)] = name
}

// Cut drops all traffic from member from to member to (one way): to's proxy
// closes the connections it holds from from and refuses new ones.
func (n *PeerNet) Cut(from, to string) {
	n.mu.Lock()
	n.cut[link{from, to}] = true
	p := n.proxies[to]
	n.mu.Unlock()
	if p != nil {
		p.sever(from)
	}
}

// CutBoth cuts the traffic between a and b in both directions.
func (n *PeerNet) CutBoth(a, b string) {
	n.Cut(a, b)
	n.Cut(b, a)
}

// Isolate cuts member name off from every other member, both ways.
func (n *PeerNet) Isolate(name string) {
	for _, other := range n.members() {
		if other != name {
			n.CutBoth(name, other)
		}
	}
}

// Heal lifts every cut.
func (n *PeerNet) Heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	clear(n.cut)
}

// Cuts lists the links cut now, as "from->to", sorted.
func (n *PeerNet) Cuts() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for l := range n.cut {
		out = append(out, l.from+"->"+l.to)
	}
	sort.Strings(out)
	return out
}

// Stats returns the proxies' counters.
func (n *PeerNet) Stats() PeerNetStats {
	return PeerNetStats{Accepted: n.accepted.Load(), Refused: n.refused.Load(), Severed: n.severed.Load()}
}

// Close stops every proxy, closes their connections and waits for their
// goroutines.
func (n *PeerNet) Close() {
	n.mu.Lock()
	n.closed = true
	ps := make([]*peerProxy, 0, len(n.proxies))
	for _, p := range n.proxies {
		ps = append(ps, p)
	}
	n.mu.Unlock()
	for _, p := range ps {
		p.close()
	}
}

func (n *PeerNet) members() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	set := map[string]bool{}
	for name := range n.proxies {
		set[name] = true
	}
	for _, name := range n.names {
		set[name] = true
	}
	out := make([]string, 0, len(set))
	for name := range set {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// sender maps an X-Cairn-From value to a member name ("" if unknown).
func (n *PeerNet) sender(from string) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.names[strings.ToLower(strings.TrimSpace(from))]
}

func (n *PeerNet) isCut(from, to string) bool {
	if from == "" {
		return false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cut[link{from, to}]
}

// peerProxy fronts one member. It owns its accept goroutine and, per
// connection, a handler goroutine and a copying goroutine; close ends them
// all and waits.
type peerProxy struct {
	net    *PeerNet
	name   string
	ln     net.Listener
	target string

	mu     sync.Mutex
	conns  map[*proxyConn]struct{}
	closed bool
	wg     sync.WaitGroup
}

type proxyConn struct {
	// fromID is the sender's X-Cairn-From ("" until the head is read),
	// guarded by the proxy's mu. It is mapped to a member name when a cut
	// is checked, not when the connection opens: the streams that members
	// open at start come in before the harness has learned their IDs.
	fromID string
	client net.Conn

	mu      sync.Mutex
	backend net.Conn
	closed  bool
}

// setBackend attaches the connection to the member; it fails (and closes
// backend) if the connection was closed meanwhile.
func (c *proxyConn) setBackend(backend net.Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		_ = backend.Close()
		return false
	}
	c.backend = backend
	return true
}

func (c *proxyConn) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	_ = c.client.Close()
	if c.backend != nil {
		_ = c.backend.Close()
	}
}

const (
	proxyHeadTimeout = 10 * time.Second
	proxyDialTimeout = time.Second
	maxProxyHead     = 64 << 10
)

func (p *peerProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		p.wg.Add(1)
		go p.handle(c)
	}
}

func (p *peerProxy) handle(client net.Conn) {
	defer p.wg.Done()
	pc := &proxyConn{client: client}
	// Register at once, so close and sever reach a connection still
	// reading its head.
	if !p.track(pc, true) {
		pc.close()
		return
	}
	defer p.track(pc, false)
	defer pc.close()

	_ = client.SetReadDeadline(time.Now().Add(proxyHeadTimeout))
	br := bufio.NewReaderSize(client, 4096)
	head, from, err := readHead(br)
	if err != nil {
		return
	}
	_ = client.SetReadDeadline(time.Time{})
	p.mu.Lock()
	pc.fromID = from
	refuse := p.closed || p.net.isCut(p.net.sender(from), p.name)
	p.mu.Unlock()
	if refuse {
		p.net.refused.Add(1)
		return
	}
	backend, err := net.DialTimeout("tcp", p.target, proxyDialTimeout)
	if err != nil {
		return // the member is down: the sender sees a closed connection
	}
	if !pc.setBackend(backend) {
		return // severed or closed while dialing
	}
	p.net.accepted.Add(1)
	if _, err := backend.Write(head); err != nil {
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		_, _ = io.Copy(client, backend)
		pc.close()
	}()
	_, _ = io.Copy(backend, br) // the rest of the buffer first, then the socket
}

// track adds (or removes) a connection; adding fails once the proxy is
// closed.
func (p *peerProxy) track(pc *proxyConn, add bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !add {
		delete(p.conns, pc)
		return true
	}
	if p.closed {
		return false
	}
	p.conns[pc] = struct{}{}
	return true
}

// sever closes every connection from member from.
func (p *peerProxy) sever(from string) {
	p.mu.Lock()
	var victims []*proxyConn
	for pc := range p.conns {
		if pc.fromID != "" && p.net.sender(pc.fromID) == from {
			victims = append(victims, pc)
		}
	}
	p.mu.Unlock()
	for _, pc := range victims {
		p.net.severed.Add(1)
		pc.close()
	}
}

func (p *peerProxy) close() {
	p.mu.Lock()
	p.closed = true
	conns := make([]*proxyConn, 0, len(p.conns))
	for pc := range p.conns {
		conns = append(conns, pc)
	}
	p.mu.Unlock()
	_ = p.ln.Close()
	for _, pc := range conns {
		pc.close()
	}
	p.wg.Wait()
}

// readHead reads an HTTP/1.1 request head (request line and headers, up to
// the blank line) and returns its raw bytes and the X-Cairn-From value.
func readHead(br *bufio.Reader) (head []byte, from string, err error) {
	var buf bytes.Buffer
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return nil, "", fmt.Errorf("harness: proxy: read request head: %w", err)
		}
		buf.Write(line)
		if buf.Len() > maxProxyHead {
			return nil, "", errors.New("harness: proxy: request head too large")
		}
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			break
		}
	}
	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(buf.Bytes())))
	if _, err := tp.ReadLine(); err != nil {
		return nil, "", fmt.Errorf("harness: proxy: request line: %w", err)
	}
	hdr, err := tp.ReadMIMEHeader()
	if err != nil {
		return nil, "", fmt.Errorf("harness: proxy: headers: %w", err)
	}
	return buf.Bytes(), hdr.Get("X-Cairn-From"), nil
}
