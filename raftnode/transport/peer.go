package transport

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// maxPendingSnapshots bounds the MsgSnaps waiting behind the one in flight;
// raft sends one per follower at a time, so more means a confused caller.
const maxPendingSnapshots = 2

// queued is a message waiting for its peer's stream.
type queued struct {
	m  *raftpb.Message
	at time.Time // when Send took it; set only when Faults is configured
}

type peerStats struct {
	active                 atomic.Bool
	sent, batches, dropped atomic.Uint64
	faultDropped, connects atomic.Uint64
	dialFailures           atomic.Uint64
	snapSent, snapFailed   atomic.Uint64
}

// peer is the sending side toward one remote member. It owns two goroutines,
// both started by start and ended by stop: runStream (the message stream,
// plus one reader goroutine per open connection that it waits for) and
// runSnapshots (one snapshot at a time, plus the body writer of the snapshot
// in flight, which it waits for).
type peer struct {
	t      *Transport
	id     uint64
	log    *slog.Logger
	ctx    context.Context // canceled by stop
	cancel context.CancelFunc
	wg     sync.WaitGroup

	queue    chan queued
	kick     chan struct{} // URLs changed: drop the stream or the backoff, redial
	snapWake chan struct{}

	mu           sync.Mutex
	urls         []string
	next         int    // index in urls of the next URL to dial
	connURL      string // URL of the open stream, "" if none
	snapQ        []*raftpb.Message
	snapOverflow int // MsgSnaps refused because snapQ was full, not yet reported

	lastUnreachable atomic.Int64 // unix nanoseconds of the last ReportUnreachable
	down            atomic.Bool  // last attempt failed; quiets repeated warnings
	stats           peerStats
}

func newPeer(t *Transport, id uint64) *peer {
	ctx, cancel := context.WithCancel(t.ctx)
	return &peer{
		t:        t,
		id:       id,
		log:      t.log.With(idAttr("peer", id)),
		ctx:      ctx,
		cancel:   cancel,
		queue:    make(chan queued, t.cfg.QueueSize),
		kick:     make(chan struct{}, 1),
		snapWake: make(chan struct{}, 1),
	}
}

func (p *peer) start() {
	p.wg.Add(2)
	go p.runStream()
	go p.runSnapshots()
}

func (p *peer) stop() {
	p.cancel()
	p.wg.Wait()
}

func (p *peer) setURLs(urls []string) {
	var valid []string
	for _, raw := range urls {
		u, err := url.Parse(raw)
		if err != nil || u.Scheme != "http" || u.Host == "" {
			p.log.Warn("ignoring peer URL: want http://host:port", slog.String("url", raw))
			continue
		}
		valid = append(valid, u.Scheme+"://"+u.Host)
	}
	p.mu.Lock()
	// Redial only if the open stream's URL is gone, or, while disconnected,
	// if there is something new to try.
	kick := !slices.Equal(valid, p.urls)
	if p.connURL != "" {
		kick = !slices.Contains(valid, p.connURL)
	}
	p.urls, p.next = valid, 0
	p.mu.Unlock()
	if kick {
		select {
		case p.kick <- struct{}{}:
		default:
		}
	}
}

// pickURL returns the URL to use next: the open stream's, else the one the
// rotation points at.
func (p *peer) pickURL() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.connURL != "" {
		return p.connURL
	}
	if len(p.urls) == 0 {
		return ""
	}
	return p.urls[p.next%len(p.urls)]
}

func (p *peer) rotateURL() {
	p.mu.Lock()
	p.next++
	p.mu.Unlock()
}

func (p *peer) setConnURL(u string) {
	p.mu.Lock()
	p.connURL = u
	p.mu.Unlock()
	p.stats.active.Store(u != "")
}

// unreachable logs a failed or broken stream (a warning on the first failure
// after success, debug after that) and tells raft, at most once per
// UnreachableInterval.
func (p *peer) unreachable(what string, err error) {
	if p.down.Swap(true) {
		p.log.Debug(what, slog.Any("err", err))
	} else {
		p.log.Warn(what, slog.Any("err", err))
	}
	now := time.Now().UnixNano()
	last := p.lastUnreachable.Load()
	if now-last >= int64(p.t.cfg.UnreachableInterval) && p.lastUnreachable.CompareAndSwap(last, now) {
		p.t.cfg.Raft.ReportUnreachable(p.id)
	}
}

// sleep waits for d; it returns false if the peer is stopped first. A kick
// ends the wait early.
func (p *peer) sleep(d time.Duration) bool {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-p.ctx.Done():
		return false
	case <-p.kick:
		return true
	case <-tm.C:
		return true
	}
}

// runStream keeps one message stream open to the peer and feeds it from the
// queue, redialing with exponential backoff when it fails.
func (p *peer) runStream() {
	defer p.wg.Done()
	cfg := &p.t.cfg
	backoff := cfg.MinBackoff
	for {
		// This attempt uses the current URLs, so an earlier kick is moot.
		select {
		case <-p.kick:
		default:
		}
		u := p.pickURL()
		conn, br, err := p.t.dialStream(p.ctx, u, p.id)
		if err != nil {
			if p.ctx.Err() != nil {
				return
			}
			if errors.Is(err, ErrRemoved) && p.t.cfg.OnRemoved != nil {
				p.log.Warn("peer says this member was removed from the cluster", slog.Any("err", err))
				p.t.cfg.OnRemoved(p.id)
			}
			p.stats.dialFailures.Add(1)
			p.unreachable("cannot open stream", err)
			p.rotateURL()
			if !p.sleep(backoff) {
				return
			}
			backoff = min(2*backoff, cfg.MaxBackoff)
			continue
		}
		p.stats.connects.Add(1)
		if p.down.Swap(false) || p.stats.connects.Load() == 1 {
			p.log.Info("stream open", slog.String("url", u))
		}
		opened := time.Now()
		err = p.serveConn(conn, br, u)
		switch {
		case p.ctx.Err() != nil:
			return
		case errors.Is(err, errKicked):
			p.log.Info("peer URLs changed, redialing")
			backoff = cfg.MinBackoff
			continue
		}
		p.unreachable("stream broken", err)
		// A peer that accepts and then drops every stream must not make us
		// spin: only a stream that lived a while resets the backoff.
		if time.Since(opened) > cfg.MaxBackoff {
			backoff = cfg.MinBackoff
		}
		if !p.sleep(backoff) {
			return
		}
		backoff = min(2*backoff, cfg.MaxBackoff)
	}
}

// serveConn writes queued messages to conn in batches until the connection
// fails, the peer is kicked or stopped. It closes conn and waits for the
// reader goroutine before returning.
func (p *peer) serveConn(conn net.Conn, br *bufio.Reader, u string) error {
	// The receiver never writes after the handshake, so any byte or EOF on
	// the read side means the stream is over. Watching for it lets a restart
	// of the peer be noticed before the next batch is lost in a dead socket.
	broken := make(chan struct{})
	go func() {
		defer close(broken)
		_, _ = br.ReadByte()
	}()
	// Stop must not wait for a write stuck on a peer that does not read.
	unwatch := context.AfterFunc(p.ctx, func() { conn.Close() })
	p.setConnURL(u)
	defer func() {
		unwatch()
		p.setConnURL("")
		conn.Close()
		<-broken
	}()
	w := &outStream{peer: p, conn: conn, broken: broken}
	w.bw = bufio.NewWriterSize(deadlineWriter{conn, p.t.cfg.WriteTimeout}, 64<<10)
	batch := make([]queued, 0, 64)
	for {
		select {
		case <-p.ctx.Done():
			return p.ctx.Err()
		case <-broken:
			return errPeerClosed
		case <-p.kick:
			return errKicked
		case q := <-p.queue:
			batch = append(batch[:0], q)
		}
		// Take whatever else is queued, but no more than a queue's worth so
		// a fast producer cannot keep one batch open forever.
	drain:
		for len(batch) < cap(p.queue) {
			select {
			case q := <-p.queue:
				batch = append(batch, q)
			default:
				break drain
			}
		}
		err := w.writeBatch(batch)
		clear(batch) // let the messages be collected
		if err != nil {
			return err
		}
	}
}

// deadlineWriter gives every write on the stream WriteTimeout to complete.
type deadlineWriter struct {
	conn    net.Conn
	timeout time.Duration
}

func (d deadlineWriter) Write(b []byte) (int, error) {
	if err := d.conn.SetWriteDeadline(time.Now().Add(d.timeout)); err != nil {
		return 0, err
	}
	return d.conn.Write(b)
}

// outStream is the state of one open outgoing stream.
type outStream struct {
	*peer
	conn    net.Conn
	bw      *bufio.Writer
	broken  <-chan struct{}
	scratch []byte // for frames larger than the write buffer
	pending uint64 // messages buffered since the last flush
}

func (s *outStream) flush() error {
	if err := s.bw.Flush(); err != nil {
		return fmt.Errorf("transport: write stream to %x: %w", s.id, err)
	}
	if s.pending > 0 {
		s.stats.sent.Add(s.pending)
		s.stats.batches.Add(1)
		s.pending = 0
	}
	return nil
}

func (s *outStream) writeBatch(batch []queued) error {
	faults := s.t.cfg.Faults
	for _, q := range batch {
		if faults != nil {
			drop, delay := faults.verdict(s.t.cfg.ID, s.id)
			if drop {
				s.stats.faultDropped.Add(1)
				continue
			}
			if wait := time.Until(q.at.Add(delay)); delay > 0 && wait > 0 {
				// Deliver what is already due before holding this one back.
				if err := s.flush(); err != nil {
					return err
				}
				tm := time.NewTimer(wait)
				select {
				case <-s.ctx.Done():
					tm.Stop()
					return s.ctx.Err()
				case <-s.broken:
					tm.Stop()
					return errPeerClosed
				case <-tm.C:
				}
			}
		}
		if err := s.writeMessage(q.m); err != nil {
			return err
		}
	}
	return s.flush()
}

func (s *outStream) writeMessage(m *raftpb.Message) error {
	size := proto.Size(m)
	if size > s.t.cfg.MaxFrameSize {
		s.stats.dropped.Add(1)
		s.log.Warn("message too large, dropped", slog.String("type", m.GetType().String()),
			slog.Int("bytes", size), slog.Int("limit", s.t.cfg.MaxFrameSize))
		return nil
	}
	need := frameHeaderLen + size
	if need > s.bw.Available() && need <= s.bw.Size() {
		if err := s.flush(); err != nil {
			return err
		}
	}
	// Marshal straight into the write buffer when the frame fits.
	var b []byte
	if need <= s.bw.Available() {
		b = s.bw.AvailableBuffer()
	} else {
		b = s.scratch[:0]
	}
	b, err := appendFrame(b, m, size)
	if err != nil {
		s.stats.dropped.Add(1)
		s.log.Warn("cannot marshal message, dropped", slog.String("type", m.GetType().String()), slog.Any("err", err))
		return nil
	}
	if _, err := s.bw.Write(b); err != nil {
		return fmt.Errorf("transport: write stream to %x: %w", s.id, err)
	}
	if need > s.bw.Size() && cap(b) <= retainBuf {
		s.scratch = b
	}
	s.pending++
	return nil
}

// dialStream opens a message stream to peer to at base: a TCP connection on
// which an HTTP/1.1 upgrade request was accepted with 101.
func (t *Transport) dialStream(ctx context.Context, base string, to uint64) (net.Conn, *bufio.Reader, error) {
	if base == "" {
		return nil, nil, errNoURL
	}
	u, err := url.Parse(base)
	if err != nil {
		return nil, nil, fmt.Errorf("transport: dial %s: %w", base, err)
	}
	// Data the peer does not acknowledge within WriteTimeout breaks the
	// connection (TCP_USER_TIMEOUT where the OS has it). Without that, a
	// stream across a network partition looks healthy until the socket
	// buffer fills, and after the partition heals the first message waits
	// for TCP's backed-off retransmission timer: tens of seconds.
	d := net.Dialer{Timeout: t.cfg.DialTimeout, Control: userTimeout(t.cfg.WriteTimeout)}
	conn, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil, nil, fmt.Errorf("transport: dial %s: %w", base, err)
	}
	// The handshake gets DialTimeout too, and Stop interrupts it.
	_ = conn.SetDeadline(time.Now().Add(t.cfg.DialTimeout))
	stopWatch := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	br, err := t.handshake(conn, u.Host, to)
	if !stopWatch() || err != nil {
		conn.Close()
		if err == nil {
			err = ctx.Err()
		}
		return nil, nil, fmt.Errorf("transport: dial %s: %w", base, err)
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, br, nil
}

func (t *Transport) handshake(conn net.Conn, host string, to uint64) (*bufio.Reader, error) {
	var req strings.Builder
	fmt.Fprintf(&req, "POST %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: %s\r\n", streamPath, host, streamProtocol)
	fmt.Fprintf(&req, "%s: %s\r\n%s: %s\r\n%s: %s\r\n",
		headerClusterID, formatID(t.cfg.ClusterID), headerFrom, formatID(t.cfg.ID), headerTo, formatID(to))
	if len(t.cfg.URLs) > 0 {
		fmt.Fprintf(&req, "%s: %s\r\n", headerFromURLs, strings.Join(t.cfg.URLs, ","))
	}
	req.WriteString("\r\n")
	if _, err := io.WriteString(conn, req.String()); err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(conn, 512)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodPost})
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return nil, rejection(resp)
	}
	return br, nil
}

// rejection turns a peer's error response into an error carrying the start
// of its body, which says why.
func rejection(resp *http.Response) error {
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	resp.Body.Close()
	if resp.StatusCode == http.StatusGone {
		return fmt.Errorf("%w: %s: %s", ErrRemoved, resp.Status, strings.TrimSpace(string(msg)))
	}
	return fmt.Errorf("%w: %s: %s", ErrRejected, resp.Status, strings.TrimSpace(string(msg)))
}

// enqueueSnapshot hands m to the snapshot goroutine without blocking.
func (p *peer) enqueueSnapshot(m *raftpb.Message) {
	p.mu.Lock()
	if len(p.snapQ) < maxPendingSnapshots {
		p.snapQ = append(p.snapQ, m)
	} else {
		p.snapOverflow++
	}
	p.mu.Unlock()
	select {
	case p.snapWake <- struct{}{}:
	default:
	}
}

// runSnapshots sends the peer's snapshots one at a time and reports each
// outcome to raft.
func (p *peer) runSnapshots() {
	defer p.wg.Done()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-p.snapWake:
		}
		for {
			p.mu.Lock()
			var m *raftpb.Message
			if len(p.snapQ) > 0 {
				m = p.snapQ[0]
				p.snapQ = slices.Delete(p.snapQ, 0, 1)
			}
			overflow := p.snapOverflow
			p.snapOverflow = 0
			p.mu.Unlock()
			for range overflow {
				p.stats.snapFailed.Add(1)
				p.log.Warn("snapshot refused: another is pending")
				p.t.cfg.Raft.ReportSnapshot(p.id, raft.SnapshotFailure)
			}
			if m == nil {
				break
			}
			start := time.Now()
			err := p.sendSnapshot(m)
			if p.ctx.Err() != nil {
				return
			}
			attrs := []any{slog.Uint64("index", m.GetSnapshot().GetMetadata().GetIndex()), slog.Duration("took", time.Since(start))}
			if err != nil {
				p.stats.snapFailed.Add(1)
				if !errors.Is(err, errFaultDropped) {
					p.log.Warn("snapshot failed", append(attrs, slog.Any("err", err))...)
				}
				p.t.cfg.Raft.ReportSnapshot(p.id, raft.SnapshotFailure)
				continue
			}
			p.stats.snapSent.Add(1)
			p.log.Info("snapshot sent", attrs...)
			p.t.cfg.Raft.ReportSnapshot(p.id, raft.SnapshotFinish)
		}
	}
}

// sendSnapshot posts m and its data to the peer and waits for its verdict.
// The body is produced by a writer goroutine through an io.Pipe, so the data
// is never held in memory as a whole; sendSnapshot waits for that goroutine.
func (p *peer) sendSnapshot(m *raftpb.Message) error {
	cfg := &p.t.cfg
	if cfg.Faults != nil {
		drop, delay := cfg.Faults.verdict(cfg.ID, p.id)
		if drop {
			p.stats.faultDropped.Add(1)
			return errFaultDropped
		}
		if delay > 0 && !p.sleep(delay) {
			return p.ctx.Err()
		}
	}
	base := p.pickURL()
	if base == "" {
		return errNoURL
	}
	ctx, cancel := context.WithCancelCause(p.ctx)
	defer cancel(nil)
	// The watchdog aborts the request when the data stops moving; each chunk
	// rearms it, and it is disarmed once the body is complete, because the
	// receiver may take long to make the data durable before it answers.
	watchdog := time.AfterFunc(cfg.SnapshotIdleTimeout, func() { cancel(errStalled) })
	defer watchdog.Stop()

	pr, pw := io.Pipe()
	var werr error
	written := make(chan struct{})
	go func() {
		defer close(written)
		sw := newSnapWriter(pw, func() { watchdog.Reset(cfg.SnapshotIdleTimeout) })
		werr = sw.message(m, cfg.MaxFrameSize)
		if werr == nil {
			if err := cfg.Snapshots.WriteSnapshot(m, sw); err != nil {
				werr = fmt.Errorf("transport: write snapshot data: %w", err)
			}
		}
		if werr == nil {
			werr = sw.finish()
		}
		watchdog.Stop()
		pw.CloseWithError(werr) // nil ends the body cleanly
	}()

	resp, err := p.postSnapshot(ctx, base, pr)
	pr.CloseWithError(errAborted) // unblocks the writer if the peer answered early
	<-written
	if err != nil {
		if cause := context.Cause(ctx); cause != nil && p.ctx.Err() == nil {
			err = fmt.Errorf("%w (%w)", err, cause)
		}
		if werr != nil && !errors.Is(werr, errAborted) && !errors.Is(werr, io.ErrClosedPipe) {
			err = werr // the store failed: that is the root cause
		}
		return fmt.Errorf("transport: send snapshot to %s: %w", base, err)
	}
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("transport: send snapshot to %s: %w", base, rejection(resp))
	}
	resp.Body.Close()
	if werr != nil { // cannot happen: the peer accepted a body we did not finish
		return fmt.Errorf("transport: send snapshot to %s: %w", base, werr)
	}
	return nil
}

func (p *peer) postSnapshot(ctx context.Context, base string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+snapshotPath, body)
	if err != nil {
		return nil, err
	}
	cfg := &p.t.cfg
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set(headerClusterID, formatID(cfg.ClusterID))
	req.Header.Set(headerFrom, formatID(cfg.ID))
	req.Header.Set(headerTo, formatID(p.id))
	if len(cfg.URLs) > 0 {
		req.Header.Set(headerFromURLs, strings.Join(cfg.URLs, ","))
	}
	return p.t.snapClient.Do(req)
}
