package transport

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// Raft is the local raft node, as the transport sees it.
//
// The transport calls these methods only from its own goroutines (peer
// senders and inbound request handlers), never from inside Send, AddPeer,
// UpdatePeer, RemovePeer or Stop, so an implementation may take the node's
// locks or block briefly. Once Stop has returned, no call is in progress and
// none follows.
type Raft interface {
	// Process hands a message received from a peer to the local node. It may
	// block briefly; it returns an error if the node is stopped or ctx (which
	// the transport cancels on Stop) is done. Messages from one peer are
	// processed one at a time, in the order the peer sent them.
	Process(ctx context.Context, m *raftpb.Message) error
	// ReportUnreachable tells the node that the stream to peer id broke or
	// could not be opened. Calls are rate-limited per peer.
	ReportUnreachable(id uint64)
	// ReportSnapshot tells the node how sending a MsgSnap to peer id ended.
	// Every MsgSnap given to Send gets exactly one report, unless the peer is
	// removed or the transport stopped first.
	ReportSnapshot(id uint64, status raft.SnapshotStatus)
}

// SnapshotStore is the local node's snapshot data, as the transport sees it.
//
// WriteSnapshot runs on the sender goroutine of the target peer and
// ReceiveSnapshot on an inbound request handler; snapshots to and from
// different peers may run concurrently, at most one per peer and direction.
type SnapshotStore interface {
	// WriteSnapshot streams the state-machine data that goes with the outgoing
	// MsgSnap m into w. An error from w means the transfer failed; it must be
	// returned (wrapped or not) without further writes.
	WriteSnapshot(m *raftpb.Message, w io.Writer) error
	// ReceiveSnapshot durably stores the data that came with the incoming
	// MsgSnap m. The reader returns io.EOF only after the whole stream has
	// arrived and its checksum verified, and an error if the stream is cut or
	// its checksum fails; ReceiveSnapshot must then return an error too. The
	// transport hands m to Raft.Process only after ReceiveSnapshot returned
	// nil and the checksum verified.
	ReceiveSnapshot(m *raftpb.Message, r io.Reader) error
}

// Config configures a Transport. Zero durations and sizes take the defaults
// noted on each field.
type Config struct {
	// ID is this member's raft ID, ClusterID its cluster's. Both nonzero.
	ID, ClusterID uint64
	// Raft receives messages and reports. Required.
	Raft Raft
	// Snapshots streams snapshot data. Required.
	Snapshots SnapshotStore
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Faults is the test-only fault hook; nil in production.
	Faults *Faults
	// OnRemoved, if set, is called (from a peer's sender goroutine) when
	// peer answers that this member was removed from the cluster.
	OnRemoved func(peer uint64)
	// URLs are this member's advertised peer URLs, sent with every request
	// so that a receiver that does not know this member yet can answer.
	URLs []string

	// DialTimeout bounds opening a connection and its handshake (default 1s).
	DialTimeout time.Duration
	// WriteTimeout bounds one write on a message stream; a peer that takes
	// no data for this long is treated as broken (default 5s).
	WriteTimeout time.Duration
	// QueueSize is the number of messages queued per peer before Send drops
	// them (default 4096).
	QueueSize int
	// MaxFrameSize bounds one marshaled message, in both directions
	// (default 64 MiB).
	MaxFrameSize int
	// MinBackoff and MaxBackoff bound the wait between attempts to open a
	// stream; it doubles after each failure (defaults 20ms and 1s).
	MinBackoff, MaxBackoff time.Duration
	// UnreachableInterval is the least time between two ReportUnreachable
	// calls for one peer (default 500ms).
	UnreachableInterval time.Duration
	// SnapshotIdleTimeout aborts a snapshot whose data makes no progress for
	// this long (default 30s).
	SnapshotIdleTimeout time.Duration
}

func (c *Config) applyDefaults() {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	setDefault(&c.DialTimeout, time.Second)
	setDefault(&c.WriteTimeout, 5*time.Second)
	setDefault(&c.QueueSize, 4096)
	setDefault(&c.MaxFrameSize, 64<<20)
	setDefault(&c.MinBackoff, 20*time.Millisecond)
	setDefault(&c.MaxBackoff, time.Second)
	setDefault(&c.UnreachableInterval, 500*time.Millisecond)
	setDefault(&c.SnapshotIdleTimeout, 30*time.Second)
}

func setDefault[T int | time.Duration](v *T, d T) {
	if *v <= 0 {
		*v = d
	}
}

func (c *Config) validate() error {
	switch {
	case c.ID == 0:
		return fmt.Errorf("%w: ID is 0", ErrConfig)
	case c.ClusterID == 0:
		return fmt.Errorf("%w: ClusterID is 0", ErrConfig)
	case c.Raft == nil:
		return fmt.Errorf("%w: Raft is nil", ErrConfig)
	case c.Snapshots == nil:
		return fmt.Errorf("%w: Snapshots is nil", ErrConfig)
	case c.MaxFrameSize > 1<<31:
		return fmt.Errorf("%w: MaxFrameSize %d exceeds 2 GiB", ErrConfig, c.MaxFrameSize)
	case c.MinBackoff > c.MaxBackoff:
		return fmt.Errorf("%w: MinBackoff %v exceeds MaxBackoff %v", ErrConfig, c.MinBackoff, c.MaxBackoff)
	}
	return nil
}

// Transport carries raft messages between this member and its peers. See the
// package documentation for the wire format and the guarantees.
type Transport struct {
	cfg     Config
	log     *slog.Logger
	ctx     context.Context // canceled by Stop
	cancel  context.CancelFunc
	handler http.Handler

	snapHTTP   *http.Transport
	snapClient *http.Client

	mu       sync.RWMutex
	stopped  bool
	peers    map[uint64]*peer
	inbound  map[uint64]*inStream     // live inbound message stream per sender
	removed  map[uint64]bool          // members removed from the cluster: refused with 410
	snapIn   map[*inSnapshot]struct{} // inbound snapshot requests in progress
	handlers sync.WaitGroup           // inbound handlers registered above

	stopOnce sync.Once
}

// New returns a transport with no peers. Mount Handler on the peer listener,
// then add peers.
func New(cfg Config) (*Transport, error) {
	cfg.applyDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	t := &Transport{
		cfg:     cfg,
		log:     cfg.Logger.With(slog.String("component", "transport"), idAttr("local", cfg.ID)),
		ctx:     ctx,
		cancel:  cancel,
		peers:   make(map[uint64]*peer),
		inbound: make(map[uint64]*inStream),
		removed: make(map[uint64]bool),
		snapIn:  make(map[*inSnapshot]struct{}),
	}
	// Snapshots use their own client: no proxy from the environment, no idle
	// pool (snapshots are rare and each gets a fresh connection), and a pool
	// that Stop can close.
	t.snapHTTP = &http.Transport{
		DialContext:        (&net.Dialer{Timeout: cfg.DialTimeout}).DialContext,
		DisableKeepAlives:  true,
		DisableCompression: true,
	}
	t.snapClient = &http.Client{Transport: t.snapHTTP}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+streamPath, t.serveStream)
	mux.HandleFunc("POST "+snapshotPath, t.serveSnapshot)
	t.handler = mux
	return t, nil
}

// Handler serves the peer side of the transport. Mount it at "/raft/" on the
// peer listener; it routes /raft/stream and /raft/snapshot. Inbound streams
// are hijacked connections, which http.Server.Shutdown does not track: Stop
// closes them.
func (t *Transport) Handler() http.Handler { return t.handler }

// AddPeer starts sending to peer id at urls (e.g. "http://10.0.0.2:2380"; only
// scheme and host are used). Adding a known peer updates its URLs; adding
// this member itself is ignored.
func (t *Transport) AddPeer(id uint64, urls []string) {
	if id == t.cfg.ID || id == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return
	}
	if p, ok := t.peers[id]; ok {
		p.setURLs(urls)
		return
	}
	p := newPeer(t, id)
	p.setURLs(urls)
	select {
	case <-p.kick: // nothing to interrupt yet
	default:
	}
	t.peers[id] = p
	p.start()
	t.log.Info("peer added", idAttr("peer", id), slog.Any("urls", urls))
}

// UpdatePeer replaces the URLs of peer id. A stream open to a URL that is no
// longer listed is closed and reopened. An unknown peer is added.
func (t *Transport) UpdatePeer(id uint64, urls []string) { t.AddPeer(id, urls) }

// RemovePeer stops sending to peer id and waits for its goroutines to end.
// Queued messages and pending snapshots are discarded without reports.
// Inbound streams from id are left alone.
func (t *Transport) RemovePeer(id uint64) {
	t.mu.Lock()
	p, ok := t.peers[id]
	delete(t.peers, id)
	t.mu.Unlock()
	if !ok {
		return
	}
	p.stop()
	t.log.Info("peer removed", idAttr("peer", id))
}

// learnPeer adds a sender this transport does not know, at the URLs it
// advertised: a member that missed the membership change that added, say,
// the new leader could not answer it otherwise, and could never catch up.
// Known and removed senders are left as they are: URLs change only through
// membership changes.
func (t *Transport) learnPeer(id uint64, header string) {
	var urls []string
	for _, u := range strings.Split(header, ",") {
		if u = strings.TrimSpace(u); u != "" {
			urls = append(urls, u)
		}
	}
	if len(urls) == 0 {
		return
	}
	t.mu.RLock()
	_, known := t.peers[id]
	removed := t.removed[id]
	t.mu.RUnlock()
	if known || removed {
		return
	}
	t.log.Info("peer learned from its own request", idAttr("peer", id), slog.Any("urls", urls))
	t.AddPeer(id, urls)
}

// MarkRemoved records that member id was removed from the cluster: its
// streams and snapshots are refused from now on with 410 Gone (which tells
// it so) and its open inbound stream is closed. It does not stop sending to
// id: RemovePeer does that.
func (t *Transport) MarkRemoved(id uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.removed[id] {
		return
	}
	t.removed[id] = true
	if in, ok := t.inbound[id]; ok {
		in.conn.Close()
	}
	t.log.Info("peer marked removed", idAttr("peer", id))
}

// Send queues msgs for their peers and returns without blocking. A message to
// an unknown peer, or one that finds its peer's queue full, is dropped (and
// counted); raft retransmits. MsgSnap goes to the snapshot path. Send takes
// ownership of the messages: the caller must not modify them afterwards.
func (t *Transport) Send(msgs []*raftpb.Message) {
	var now time.Time
	if t.cfg.Faults != nil {
		now = time.Now()
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	for _, m := range msgs {
		p, ok := t.peers[m.GetTo()]
		if !ok {
			t.log.Debug("message to unknown peer dropped", idAttr("peer", m.GetTo()), slog.String("type", m.GetType().String()))
			continue
		}
		if m.GetType() == raftpb.MsgSnap {
			p.enqueueSnapshot(m)
			continue
		}
		select {
		case p.queue <- queued{m: m, at: now}:
		default:
			p.stats.dropped.Add(1)
		}
	}
}

// Stop stops every goroutine the transport started, closes inbound streams,
// aborts inbound snapshots and waits for the handlers that serve them. It is
// safe to call more than once; later calls wait for the first to finish.
func (t *Transport) Stop() {
	t.stopOnce.Do(func() {
		t.mu.Lock()
		t.stopped = true
		t.cancel()
		peers := t.peers
		t.peers = make(map[uint64]*peer)
		for _, in := range t.inbound {
			in.conn.Close()
		}
		for s := range t.snapIn {
			// Unblocks a handler reading the request body; its conn is not
			// ours to close.
			_ = s.rc.SetReadDeadline(time.Now())
		}
		t.mu.Unlock()
		for _, p := range peers {
			p.cancel()
		}
		for _, p := range peers {
			p.wg.Wait()
		}
		t.handlers.Wait()
		t.snapHTTP.CloseIdleConnections()
		t.log.Info("transport stopped")
	})
}

// PeerStats counts one peer's outgoing traffic since it was added.
type PeerStats struct {
	Active          bool   // an outgoing message stream is open
	Sent            uint64 // messages written to the stream
	Batches         uint64 // flushes of buffered messages: one per batch, more if a batch is large or delayed
	Dropped         uint64 // messages dropped: queue full or too large
	FaultDropped    uint64 // messages and snapshots discarded by Faults
	Connects        uint64 // streams opened
	DialFailures    uint64 // failed attempts to open a stream
	SnapshotsSent   uint64
	SnapshotsFailed uint64
}

// Stats returns the counters of peer id, and false if id is not a peer.
func (t *Transport) Stats(id uint64) (PeerStats, bool) {
	t.mu.RLock()
	p, ok := t.peers[id]
	t.mu.RUnlock()
	if !ok {
		return PeerStats{}, false
	}
	s := &p.stats
	return PeerStats{
		Active:          s.active.Load(),
		Sent:            s.sent.Load(),
		Batches:         s.batches.Load(),
		Dropped:         s.dropped.Load(),
		FaultDropped:    s.faultDropped.Load(),
		Connects:        s.connects.Load(),
		DialFailures:    s.dialFailures.Load(),
		SnapshotsSent:   s.snapSent.Load(),
		SnapshotsFailed: s.snapFailed.Load(),
	}, true
}

// LastReceived is when a message from peer id last arrived on its open
// inbound stream; zero if it has none.
func (t *Transport) LastReceived(id uint64) time.Time {
	t.mu.RLock()
	in, ok := t.inbound[id]
	t.mu.RUnlock()
	if !ok {
		return time.Time{}
	}
	if ns := in.lastRecv.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// ActivePeers returns, in ascending order, the peers with an open outgoing
// message stream.
func (t *Transport) ActivePeers() []uint64 {
	t.mu.RLock()
	defer t.mu.RUnlock()
	var ids []uint64
	for id, p := range t.peers {
		if p.stats.active.Load() {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}
