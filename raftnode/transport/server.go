package transport

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3/raftpb"
)

// inStream is an inbound message stream: a hijacked connection served by the
// handler goroutine that hijacked it.
type inStream struct {
	from     uint64
	conn     net.Conn
	done     chan struct{} // closed when the handler is finished with Raft
	replaced atomic.Bool   // closed because a newer stream from the same peer arrived
	lastRecv atomic.Int64  // unix nanoseconds when the last message was processed
}

// inSnapshot is an inbound snapshot request in progress.
type inSnapshot struct {
	rc *http.ResponseController
}

// checkHeaders validates the identity headers of a peer request and answers
// it if they fail: 400 if malformed, 412 if they name another cluster or
// another member as the target. It returns the sender's ID.
func (t *Transport) checkHeaders(w http.ResponseWriter, r *http.Request) (uint64, bool) {
	reject := func(code int, msg string, attrs ...any) (uint64, bool) {
		t.log.Warn("rejected peer request: "+msg, append(attrs,
			slog.String("path", r.URL.Path), slog.String("remote", r.RemoteAddr))...)
		http.Error(w, "transport: "+msg, code)
		return 0, false
	}
	t.mu.RLock()
	stopped := t.stopped
	t.mu.RUnlock()
	if stopped {
		http.Error(w, "transport: stopped", http.StatusServiceUnavailable)
		return 0, false
	}
	cid, err := parseID(r.Header.Get(headerClusterID))
	if err != nil {
		return reject(http.StatusBadRequest, "bad "+headerClusterID+" header")
	}
	if cid != t.cfg.ClusterID {
		return reject(http.StatusPreconditionFailed, "cluster ID mismatch",
			idAttr("cluster", cid), idAttr("want", t.cfg.ClusterID))
	}
	to, err := parseID(r.Header.Get(headerTo))
	if err != nil {
		return reject(http.StatusBadRequest, "bad "+headerTo+" header")
	}
	if to != t.cfg.ID {
		return reject(http.StatusPreconditionFailed, "target member mismatch", idAttr("to", to))
	}
	from, err := parseID(r.Header.Get(headerFrom))
	if err != nil || from == 0 || from == t.cfg.ID {
		return reject(http.StatusBadRequest, "bad "+headerFrom+" header")
	}
	t.mu.RLock()
	removed := t.removed[from]
	t.mu.RUnlock()
	if removed {
		return reject(http.StatusGone, removedMessage, idAttr("from", from))
	}
	return from, true
}

// serveStream accepts an inbound message stream: it validates the headers,
// answers 101, hijacks the connection and hands each frame to Raft.Process
// until the stream ends or misbehaves. Anything malformed closes this stream
// only; the sender redials.
func (t *Transport) serveStream(w http.ResponseWriter, r *http.Request) {
	from, ok := t.checkHeaders(w, r)
	if !ok {
		return
	}
	t.learnPeer(from, r.Header.Get(headerFromURLs))
	if !headerHasToken(r.Header, "Connection", "upgrade") || !strings.EqualFold(r.Header.Get("Upgrade"), streamProtocol) {
		t.log.Warn("rejected peer request: stream without upgrade", idAttr("from", from), slog.String("remote", r.RemoteAddr))
		w.Header().Set("Connection", "Upgrade")
		w.Header().Set("Upgrade", streamProtocol)
		http.Error(w, "transport: stream requires Upgrade: "+streamProtocol, http.StatusUpgradeRequired)
		return
	}
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		t.log.Error("cannot hijack stream connection", slog.Any("err", err))
		http.Error(w, "transport: cannot hijack connection", http.StatusInternalServerError)
		return
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(t.cfg.WriteTimeout))
	_, err = io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: "+streamProtocol+"\r\n\r\n")
	_ = conn.SetDeadline(time.Time{})
	if err != nil {
		t.log.Warn("cannot accept stream", idAttr("from", from), slog.Any("err", err))
		return
	}

	in := &inStream{from: from, conn: conn, done: make(chan struct{})}
	old, ok := t.registerInbound(in)
	if !ok {
		return
	}
	defer t.unregisterInbound(in)
	// One stream per sender: a new one means the sender gave up on the old
	// one. Close it and wait for its handler, so messages from one peer are
	// never processed by two handlers at once, and stay in order.
	if old != nil {
		old.replaced.Store(true)
		old.conn.Close()
		select {
		case <-old.done:
		case <-t.ctx.Done():
			return
		}
	}
	t.log.Debug("inbound stream open", idAttr("from", from), slog.String("remote", r.RemoteAddr))
	err = t.readStream(in, rw.Reader)
	switch {
	case errors.Is(err, io.EOF):
		t.log.Debug("inbound stream closed by peer", idAttr("from", from))
	case t.ctx.Err() != nil || in.replaced.Load():
		t.log.Debug("inbound stream closed", idAttr("from", from), slog.Any("err", err))
	default:
		t.log.Warn("closing inbound stream", idAttr("from", from), slog.String("remote", r.RemoteAddr), slog.Any("err", err))
	}
}

func (t *Transport) readStream(in *inStream, r *bufio.Reader) error {
	fr := frameReader{r: r, max: uint32(t.cfg.MaxFrameSize)}
	for {
		m, err := fr.next()
		if err != nil {
			return err
		}
		if err := checkMessage(m, t.cfg.ID, in.from); err != nil {
			return err
		}
		if m.GetType() == raftpb.MsgSnap {
			return errors.New("transport: MsgSnap on a message stream")
		}
		if err := t.cfg.Raft.Process(t.ctx, m); err != nil {
			return err
		}
		in.lastRecv.Store(time.Now().UnixNano())
	}
}

// registerInbound records in as the live stream from its sender and returns
// the one it replaces. It fails once Stop has begun.
func (t *Transport) registerInbound(in *inStream) (old *inStream, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return nil, false
	}
	t.handlers.Add(1)
	old = t.inbound[in.from]
	t.inbound[in.from] = in
	return old, true
}

func (t *Transport) unregisterInbound(in *inStream) {
	t.mu.Lock()
	if t.inbound[in.from] == in {
		delete(t.inbound, in.from)
	}
	t.mu.Unlock()
	close(in.done)
	t.handlers.Done()
}

// serveSnapshot receives a MsgSnap and its data. The store spools the data;
// only if it succeeds and the checksum verified is the message processed.
// The answer is 204 on success, 400 for a malformed or cut stream, 500 if the
// store failed and 503 if the node did not take the message.
func (t *Transport) serveSnapshot(w http.ResponseWriter, r *http.Request) {
	from, ok := t.checkHeaders(w, r)
	if !ok {
		return
	}
	t.learnPeer(from, r.Header.Get(headerFromURLs))
	in := &inSnapshot{rc: http.NewResponseController(w)}
	t.mu.Lock()
	if t.stopped {
		t.mu.Unlock()
		http.Error(w, "transport: stopped", http.StatusServiceUnavailable)
		return
	}
	t.snapIn[in] = struct{}{}
	t.handlers.Add(1)
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		delete(t.snapIn, in)
		t.mu.Unlock()
		t.handlers.Done()
	}()

	log := t.log.With(idAttr("from", from), slog.String("remote", r.RemoteAddr))
	fail := func(code int, msg string, err error) {
		log.Warn("snapshot rejected: "+msg, slog.Any("err", err))
		http.Error(w, "transport: snapshot rejected: "+msg, code)
	}
	sr := &snapReader{r: bufio.NewReaderSize(r.Body, 64<<10)}
	m, err := sr.message(uint32(t.cfg.MaxFrameSize))
	if err != nil {
		fail(http.StatusBadRequest, "bad message frame", err)
		return
	}
	if err := checkMessage(m, t.cfg.ID, from); err != nil {
		fail(http.StatusBadRequest, "bad message", err)
		return
	}
	if m.GetType() != raftpb.MsgSnap {
		fail(http.StatusBadRequest, "not a MsgSnap", errors.New(m.GetType().String()))
		return
	}
	log = log.With(slog.Uint64("index", m.GetSnapshot().GetMetadata().GetIndex()),
		slog.Uint64("term", m.GetSnapshot().GetMetadata().GetTerm()))
	start := time.Now()
	err = t.cfg.Snapshots.ReceiveSnapshot(m, sr)
	if err == nil {
		err = sr.finish()
	}
	if err != nil {
		if sr.err != nil {
			fail(http.StatusBadRequest, "bad data stream", err)
		} else {
			fail(http.StatusInternalServerError, "store failed", err)
		}
		return
	}
	if err := t.cfg.Raft.Process(t.ctx, m); err != nil {
		fail(http.StatusServiceUnavailable, "node did not take it", err)
		return
	}
	log.Info("snapshot received", slog.Int64("bytes", sr.total), slog.Duration("took", time.Since(start)))
	w.WriteHeader(http.StatusNoContent)
}

// headerHasToken reports whether the comma-separated header name contains
// token, ignoring case.
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, part := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(part), token) {
				return true
			}
		}
	}
	return false
}
