package raftnode

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/cairnkv/cairn/raftnode/transport"
	"github.com/cairnkv/cairn/wal"
)

// requestIDSize is the length of the request ID that prefixes every proposal
// in the log, so that the applier can wake the proposer.
const requestIDSize = 8

// maxDrain bounds how many queued inputs the raft loop takes before it looks
// at Ready again: large enough to batch a burst of proposals into one fsync,
// small enough to keep heartbeats timely.
const maxDrain = 1024

// Node is one member of a raft group: it owns the RawNode, the WAL, the peer
// transport and the apply goroutine. See doc.go for the Ready cycle.
type Node struct {
	cfg     Config
	log     *slog.Logger
	sm      StateMachine
	storage *raft.MemoryStorage
	wal     *wal.WAL
	snaps   snapDir
	tr      *transport.Transport
	waits   *waitRegistry
	ids     *idGenerator

	// rn is touched only by the raft loop goroutine, as is unsavedHS: a
	// hard state whose only change was the commit index, not yet written.
	rn        *raft.RawNode
	unsavedHS wal.HardState

	propc      chan proposal
	recvc      chan *raftpb.Message
	reportc    chan peerReport
	readIndexc chan []byte
	readStatec chan raft.ReadState
	applyc     chan applyTask

	// appliedc is signalled (without blocking) after every apply batch.
	appliedc chan struct{}
	reads    readQueue

	// confView is the membership as raft has it after the last conf change
	// handed off, and confProposed the IDs of conf changes proposed since
	// the last Ready; both owned by the raft loop.
	confView     *raftpb.ConfState
	confProposed []uint64

	// Owned by the apply goroutine (and by the raft loop while the apply
	// goroutine is parked at a barrier during a snapshot install).
	smApplied   uint64 // entries at or below this are already in the state machine
	snapIndex   uint64 // index of the latest snapshot marker
	confState   *raftpb.ConfState
	appliedTerm uint64 // term of the last entry applied

	progressc   chan chan map[uint64]Progress
	transferc   chan uint64
	peerUpdates chan peerUpdate

	leadMu      sync.Mutex
	leadChanged chan struct{} // closed and replaced at every leader change

	// Shared state, readable from any goroutine.
	lead          atomic.Uint64
	term          atomic.Uint64
	committed     atomic.Uint64
	applied       atomic.Uint64
	isLeader      atomic.Bool
	leaderChanges atomic.Uint64
	failedProps   atomic.Uint64
	snapshots     atomic.Uint64

	stopc    chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
	errMu    sync.Mutex
	err      error // the fatal error that stopped the node, if any
	closeErr error
	closed   sync.Once
}

type proposal struct {
	id   uint64
	data []byte               // request ID followed by the payload
	conf *raftpb.ConfChangeV2 // set instead of data for a membership change
	ch   chan result          // where the result goes; room for one
}

type peerReport struct {
	id          uint64
	snapshot    bool
	snapSuccess bool
}

// applyTask is one batch of committed entries for the apply goroutine, or a
// barrier that the raft loop uses to wait until the goroutine is idle.
type applyTask struct {
	entries   []*raftpb.Entry
	confs     []confDecision    // the batch's conf changes, in log order, as the raft loop decided them
	confState *raftpb.ConfState // membership after this batch's conf changes
	barrier   chan struct{}
}

// Start opens the member in cfg.Dir: a new log is bootstrapped with cfg.Peers;
// an existing one is replayed from its latest snapshot marker. The returned
// node is running; serve Handler on the peer listener and call Stop when done.
func Start(cfg Config) (*Node, error) {
	cfg.applyDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	n := &Node{
		cfg:         cfg,
		log:         cfg.Logger.With("member", fmt.Sprintf("%x", cfg.ID)),
		sm:          cfg.StateMachine,
		storage:     raft.NewMemoryStorage(),
		snaps:       snapDir{dir: filepath.Join(cfg.Dir, "snap")},
		waits:       newWaitRegistry(),
		ids:         newIDGenerator(cfg.ID, time.Now()),
		propc:       make(chan proposal, 4096),
		recvc:       make(chan *raftpb.Message, 4096),
		reportc:     make(chan peerReport, 256),
		readIndexc:  make(chan []byte, 16),
		readStatec:  make(chan raft.ReadState, 64),
		applyc:      make(chan applyTask, 256),
		appliedc:    make(chan struct{}, 1),
		stopc:       make(chan struct{}),
		confState:   &raftpb.ConfState{},
		progressc:   make(chan chan map[uint64]Progress),
		transferc:   make(chan uint64, 1),
		peerUpdates: make(chan peerUpdate, 64),
		leadChanged: make(chan struct{}),
	}
	n.reads.init()
	if err := os.MkdirAll(n.snaps.dir, 0o700); err != nil {
		return nil, fmt.Errorf("raftnode: create %s: %w", n.snaps.dir, err)
	}
	bootstrap, err := n.openLog()
	if err != nil {
		return nil, err
	}
	rcfg := &raft.Config{
		ID:                        cfg.ID,
		ElectionTick:              cfg.ElectionTicks,
		HeartbeatTick:             1,
		Storage:                   n.storage,
		Applied:                   n.snapIndex,
		MaxSizePerMsg:             cfg.MaxSizePerMsg,
		MaxInflightMsgs:           cfg.MaxInflightMsgs,
		MaxUncommittedEntriesSize: 1 << 30,
		CheckQuorum:               true,
		PreVote:                   true,
		// A leader that applies its own removal must not go on leading a
		// group it is no longer part of.
		StepDownOnRemoval: true,
		Logger:            raftLogger{n.log},
	}
	rn, err := raft.NewRawNode(rcfg)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("raftnode: start raft: %w", err), n.wal.Close())
	}
	n.confView = proto.Clone(n.confState).(*raftpb.ConfState)
	if bootstrap && cfg.Join {
		// A member joining a running cluster learns the membership from
		// the leader's log or snapshot; it must never make up its own.
		bootstrap = false
	}
	if bootstrap {
		peers := make([]raft.Peer, len(cfg.Peers))
		for i, p := range cfg.Peers {
			// The bootstrap conf changes carry a zero request ID: nobody
			// waits for them.
			peers[i] = raft.Peer{ID: p.ID, Context: encodeConfContext(0, p.URLs, p.Context)}
		}
		if err := rn.Bootstrap(peers); err != nil {
			return nil, errors.Join(fmt.Errorf("raftnode: bootstrap: %w", err), n.wal.Close())
		}
	}
	n.rn = rn
	n.smApplied = n.sm.AppliedIndex()
	n.applied.Store(max(n.smApplied, n.snapIndex))

	tr, err := transport.New(transport.Config{
		ID:        cfg.ID,
		ClusterID: cfg.ClusterID,
		Raft:      peerSide{n},
		Snapshots: peerSide{n},
		Logger:    n.log,
		Faults:    cfg.Faults,
		OnRemoved: n.removedByPeer,
		URLs:      cfg.selfURLs(),
		// A peer that acknowledges nothing for two election timeouts is
		// cut off; redialing then finds it as soon as the network heals.
		WriteTimeout: max(2*cfg.TickInterval*time.Duration(cfg.ElectionTicks), time.Second),
	})
	if err != nil {
		return nil, errors.Join(fmt.Errorf("raftnode: start transport: %w", err), n.wal.Close())
	}
	n.tr = tr
	for _, id := range cfg.Removed {
		tr.MarkRemoved(id)
	}
	for _, p := range cfg.Peers {
		if p.ID != cfg.ID && !slices.Contains(cfg.Removed, p.ID) {
			tr.AddPeer(p.ID, p.URLs)
		}
	}

	n.log.Info("raft member started", "bootstrap", bootstrap, "join", cfg.Join, "snapshot-index", n.snapIndex,
		"applied-index", n.applied.Load(), "peers", len(cfg.Peers))
	n.wg.Add(4)
	go n.raftLoop()
	go n.applyLoop()
	go n.readLoop()
	go n.peerLoop()
	return n, nil
}

// openLog creates the WAL or replays it into n.storage. It reports whether
// raft must be bootstrapped (a new log, or one that crashed before its first
// save).
func (n *Node) openLog() (bootstrap bool, err error) {
	dir := filepath.Join(n.cfg.Dir, "wal")
	opts := wal.Options{
		SegmentSize: n.cfg.WALSegmentSize,
		Logger:      n.log,
		AfterSync:   n.cfg.WALAfterSync,
		BeforeSync:  n.cfg.WALBeforeSync,
	}
	md := wal.Metadata{MemberID: n.cfg.ID, ClusterID: n.cfg.ClusterID}
	if !wal.Exists(dir) {
		w, err := wal.Create(dir, md, opts)
		if err != nil {
			return false, fmt.Errorf("raftnode: %w", err)
		}
		n.wal = w
		return true, nil
	}
	w, snap, rep, err := n.replayLog(dir, opts)
	if err != nil {
		return false, err
	}
	n.wal = w
	if rep.Metadata != md {
		_ = w.Close() // the mismatch is the error worth reporting
		return false, fmt.Errorf("%w: log in %s has member %x cluster %x, config says member %x cluster %x",
			ErrClusterMismatch, dir, rep.Metadata.MemberID, rep.Metadata.ClusterID, md.MemberID, md.ClusterID)
	}
	if snap != nil {
		if err := n.storage.ApplySnapshot(&raftpb.Snapshot{Metadata: snap}); err != nil {
			return false, errors.Join(fmt.Errorf("raftnode: load snapshot: %w", err), w.Close())
		}
		n.snapIndex = snap.GetIndex()
		n.confState = snap.GetConfState()
	}
	hs := rep.HardState
	// The marker and the hard state that follows it are separate writes; a
	// crash between them leaves a commit index below the snapshot's, which
	// is committed by definition.
	hs.Commit = max(hs.Commit, n.snapIndex)
	if err := n.storage.SetHardState(&raftpb.HardState{Term: &hs.Term, Vote: &hs.Vote, Commit: &hs.Commit}); err != nil {
		return false, errors.Join(fmt.Errorf("raftnode: load hard state: %w", err), w.Close())
	}
	if err := n.storage.Append(fromWAL(rep.Entries)); err != nil {
		return false, errors.Join(fmt.Errorf("raftnode: load entries: %w", err), w.Close())
	}
	n.term.Store(hs.Term)
	n.committed.Store(hs.Commit)
	return snap == nil && hs.IsEmpty() && len(rep.Entries) == 0, nil
}

// replayLog opens the WAL from the newest snapshot whose marker the WAL
// holds. A metadata file without its marker is a snapshot whose marker write
// was cut by a crash; the previous snapshot still stands.
func (n *Node) replayLog(dir string, opts wal.Options) (*wal.WAL, *raftpb.SnapshotMetadata, wal.Replay, error) {
	names, err := n.snaps.metaNames()
	if err != nil {
		return nil, nil, wal.Replay{}, err
	}
	for _, name := range names {
		meta, err := n.snaps.loadMeta(name)
		if err != nil {
			return nil, nil, wal.Replay{}, err
		}
		w, rep, err := wal.Open(dir, wal.Snapshot{Index: meta.GetIndex(), Term: meta.GetTerm()}, opts)
		if errors.Is(err, wal.ErrSnapshotNotFound) {
			n.log.Warn("snapshot marker missing from the log; trying an older snapshot", "file", name)
			continue
		}
		if err != nil {
			return nil, nil, wal.Replay{}, fmt.Errorf("raftnode: %w", err)
		}
		return w, meta, rep, nil
	}
	w, rep, err := wal.Open(dir, wal.Snapshot{}, opts)
	if err != nil {
		return nil, nil, wal.Replay{}, fmt.Errorf("raftnode: %w", err)
	}
	return w, nil, rep, nil
}

// Handler serves the peer transport; mount it at "/raft/" on the peer listener.
func (n *Node) Handler() http.Handler { return n.tr.Handler() }

// Propose replicates data through raft and waits until this member has
// applied it, returning the state machine's result. It fails with
// ErrProposalDropped (nothing committed), ErrLeaderChanged (outcome unknown),
// ErrStopped, or the context's error (outcome unknown).
func (n *Node) Propose(ctx context.Context, data []byte) (any, error) {
	if len(data) > n.cfg.MaxProposalBytes {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(data), n.cfg.MaxProposalBytes)
	}
	id := n.ids.Next()
	return n.proposeAndWait(ctx, proposal{id: id, data: withRequestID(id, data)})
}

// proposeAndWait hands p to the raft loop, which registers it in the wait
// registry and proposes it, and waits for its result. A caller that gives
// up before the raft loop took the proposal leaves a registration behind;
// it goes when the entry applies or its term is over.
func (n *Node) proposeAndWait(ctx context.Context, p proposal) (any, error) {
	p.ch = make(chan result, 1)
	select {
	case n.propc <- p:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-n.stopc:
		return nil, n.stoppedErr()
	}
	select {
	case r := <-p.ch:
		return r.value, r.err
	case <-ctx.Done():
		n.waits.Cancel(p.id)
		return nil, ctx.Err()
	case <-n.stopc:
		n.waits.Cancel(p.id)
		return nil, n.stoppedErr()
	}
}

// withRequestID prefixes payload with the 8-byte request ID.
func withRequestID(id uint64, payload []byte) []byte {
	buf := make([]byte, requestIDSize+len(payload))
	binary.BigEndian.PutUint64(buf, id)
	copy(buf[requestIDSize:], payload)
	return buf
}

// Status is a point-in-time view of the member's raft state.
type Status struct {
	ID            uint64
	Leader        uint64 // 0 when no leader is known
	IsLeader      bool
	Term          uint64
	CommitIndex   uint64
	AppliedIndex  uint64
	SnapshotIndex uint64
	// Counters for metrics.
	LeaderChanges    uint64
	ProposalsPending int
	ProposalsFailed  uint64
	SnapshotsTaken   uint64
}

// Status reports the member's current raft state. Safe from any goroutine.
func (n *Node) Status() Status {
	return Status{
		ID:               n.cfg.ID,
		Leader:           n.lead.Load(),
		IsLeader:         n.isLeader.Load(),
		Term:             n.term.Load(),
		CommitIndex:      n.committed.Load(),
		AppliedIndex:     n.applied.Load(),
		LeaderChanges:    n.leaderChanges.Load(),
		ProposalsPending: n.waits.Len(),
		ProposalsFailed:  n.failedProps.Load(),
		SnapshotsTaken:   n.snapshots.Load(),
	}
}

// Term is the current raft term (cheaper than Status, for response headers).
func (n *Node) Term() uint64 { return n.term.Load() }

// Leader is the leader's ID as this member knows it, or 0.
func (n *Node) Leader() uint64 { return n.lead.Load() }

// ID is this member's raft ID.
func (n *Node) ID() uint64 { return n.cfg.ID }

// LeaderChanged returns a channel that is closed the next time the leader
// this member knows changes (including to and from none).
func (n *Node) LeaderChanged() <-chan struct{} {
	n.leadMu.Lock()
	defer n.leadMu.Unlock()
	return n.leadChanged
}

// Done is closed when the node stops, by Stop or by a fatal error (see Err).
func (n *Node) Done() <-chan struct{} { return n.stopc }

// Err returns the fatal error that stopped the node, or nil.
func (n *Node) Err() error {
	n.errMu.Lock()
	defer n.errMu.Unlock()
	return n.err
}

func (n *Node) stoppedErr() error {
	if err := n.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrStopped, err)
	}
	return ErrStopped
}

// Stop stops every goroutine the node started, fails waiting proposals with
// ErrStopped and closes the WAL. The state machine is not closed: the caller
// owns it and may close it once Stop returns. Safe to call more than once.
func (n *Node) Stop() error {
	n.closed.Do(func() {
		n.signalStop()
		n.tr.Stop()
		n.wg.Wait()
		n.waits.FailBefore(math.MaxUint64, ErrStopped)
		n.closeErr = n.wal.Close()
		n.log.Info("raft member stopped")
	})
	return errors.Join(n.closeErr, n.Err())
}

func (n *Node) signalStop() { n.stopOnce.Do(func() { close(n.stopc) }) }

// fatal records err and stops the node's goroutines: after a failed WAL
// write or state-machine sync nothing more may be acknowledged.
func (n *Node) fatal(err error) {
	if errors.Is(err, ErrRemoved) {
		n.stopWith(err)
		return
	}
	n.log.Error("raft member stopping on a fatal error", "err", err)
	n.setErr(err)
	n.signalStop()
}

// stopWith stops the node because it was removed from the cluster: not a
// failure, but Err reports it.
func (n *Node) stopWith(err error) {
	n.log.Warn("raft member stopping: it was removed from the cluster", "err", err)
	n.setErr(err)
	n.signalStop()
}

func (n *Node) setErr(err error) {
	n.errMu.Lock()
	if n.err == nil {
		n.err = err
	}
	n.errMu.Unlock()
}

// raftLoop is the only goroutine that touches the RawNode. Each turn it takes
// one input (tick, proposals, peer messages, read requests, peer reports),
// drains whatever else is queued so a burst becomes one Ready, then handles
// the Ready.
func (n *Node) raftLoop() {
	defer n.wg.Done()
	ticker := time.NewTicker(n.cfg.TickInterval)
	defer ticker.Stop()
	for {
		// Handle what is ready before waiting for input: Advance can make
		// more ready (a lone member commits its own entries on Advance), and
		// nothing else would wake the loop before the next tick.
		if n.rn.HasReady() {
			if err := n.handleReady(n.rn.Ready()); err != nil {
				if !errors.Is(err, ErrStopped) {
					n.fatal(err)
				}
				return
			}
			select {
			case <-n.stopc:
				return
			default:
			}
			n.drainInputs()
			continue
		}
		select {
		case <-ticker.C:
			n.rn.Tick()
		case p := <-n.propc:
			n.propose(p)
		case m := <-n.recvc:
			n.step(m)
		case rctx := <-n.readIndexc:
			n.rn.ReadIndex(rctx)
		case r := <-n.reportc:
			n.report(r)
		case reply := <-n.progressc:
			reply <- n.progress()
		case to := <-n.transferc:
			n.rn.TransferLeader(to)
		case <-n.stopc:
			return
		}
		n.drainInputs()
	}
}

func (n *Node) drainInputs() {
	for range maxDrain {
		select {
		case p := <-n.propc:
			n.propose(p)
		case m := <-n.recvc:
			n.step(m)
		case rctx := <-n.readIndexc:
			n.rn.ReadIndex(rctx)
		case r := <-n.reportc:
			n.report(r)
		default:
			return
		}
	}
}

// propose registers p's waiter under the current term and hands p to raft.
func (n *Node) propose(p proposal) {
	n.waits.Register(p.id, n.term.Load(), p.ch)
	var err error
	switch {
	case p.conf == nil:
		err = n.rn.Propose(p.data)
	case !n.isLeader.Load():
		// Only the leader can tell whether raft took a membership change
		// (see checkConfProposals); the caller forwards it there.
		n.waits.Trigger(p.id, result{err: ErrNotLeader})
		return
	default:
		if err = n.rn.ProposeConfChange(p.conf); err == nil {
			n.confProposed = append(n.confProposed, p.id)
		}
	}
	if err != nil {
		n.failedProps.Add(1)
		n.waits.Trigger(p.id, result{err: fmt.Errorf("%w: %w", ErrProposalDropped, err)})
	}
}

func (n *Node) step(m *raftpb.Message) {
	if err := n.rn.Step(m); err != nil {
		n.log.Debug("raft step", "type", m.GetType().String(), "from", m.GetFrom(), "err", err)
	}
}

func (n *Node) report(r peerReport) {
	if !r.snapshot {
		n.rn.ReportUnreachable(r.id)
		return
	}
	status := raft.SnapshotFailure
	if r.snapSuccess {
		status = raft.SnapshotFinish
	}
	n.rn.ReportSnapshot(r.id, status)
}

// handleReady carries out one Ready cycle; see doc.go for why the steps come
// in this order.
func (n *Node) handleReady(rd raft.Ready) error {
	if rd.SoftState != nil {
		n.updateLeader(rd.SoftState)
	}
	for _, rs := range rd.ReadStates {
		select {
		case n.readStatec <- rs:
		default: // the read loop retries a request whose answer it missed
		}
	}
	leader := n.isLeader.Load()
	if leader {
		// A leader may replicate while it writes its own log: its entries
		// count toward commit only once its own Save has returned.
		n.tr.Send(rd.Messages)
	}
	if !raft.IsEmptySnap(rd.Snapshot) {
		if err := n.installSnapshot(rd.Snapshot); err != nil {
			return err
		}
	}
	var hs wal.HardState
	if rd.HardState != nil {
		hs = wal.HardState{Term: rd.HardState.GetTerm(), Vote: rd.HardState.GetVote(), Commit: rd.HardState.GetCommit()}
	}
	switch {
	case rd.MustSync:
		if hs.IsEmpty() {
			hs = n.unsavedHS
		}
		if err := n.wal.Save(hs, toWAL(rd.Entries)); err != nil {
			return fmt.Errorf("raftnode: save to log: %w", err)
		}
		n.unsavedHS = wal.HardState{}
	case !hs.IsEmpty():
		// Only the commit index moved. It need not be durable (a restarted
		// member relearns it from the leader), so it waits for the next
		// write that must be synced instead of costing an fsync on the
		// path from commit to apply.
		n.unsavedHS = hs
	}
	if rd.HardState != nil {
		if err := n.storage.SetHardState(rd.HardState); err != nil {
			return fmt.Errorf("raftnode: set hard state: %w", err)
		}
		n.term.Store(hs.Term)
		n.committed.Store(hs.Commit)
	}
	if len(rd.Entries) > 0 {
		if err := n.storage.Append(rd.Entries); err != nil {
			return fmt.Errorf("raftnode: append to raft storage: %w", err)
		}
	}
	if len(n.confProposed) > 0 {
		n.checkConfProposals(rd.Entries)
	}
	if !leader {
		// A follower's answers (append acks, votes) promise what is now on disk.
		n.tr.Send(rd.Messages)
	}
	if len(rd.CommittedEntries) > 0 {
		if err := n.handOff(rd.CommittedEntries); err != nil {
			return err
		}
	}
	n.rn.Advance(rd)
	return nil
}

// updateLeader records a leader change. Proposals in flight are not failed
// here: those the new leader holds still commit (a leadership transfer
// loses none), and the apply goroutine fails the rest once an entry of a
// later term is applied (see waiter).
func (n *Node) updateLeader(ss *raft.SoftState) {
	n.isLeader.Store(ss.RaftState == raft.StateLeader)
	old := n.lead.Swap(ss.Lead)
	if old == ss.Lead {
		return
	}
	n.leaderChanges.Add(1)
	n.leadMu.Lock()
	close(n.leadChanged)
	n.leadChanged = make(chan struct{})
	n.leadMu.Unlock()
	n.log.Info("leader changed", "from", fmt.Sprintf("%x", old), "to", fmt.Sprintf("%x", ss.Lead),
		"state", ss.RaftState.String())
}

// handOff decides and applies configuration changes to raft (which must
// see them on the raft loop, in log order) and queues the batch for the
// apply goroutine.
func (n *Node) handOff(ents []*raftpb.Entry) error {
	var cs *raftpb.ConfState
	var confs []confDecision
	for _, e := range ents {
		if !isConfChange(e) {
			continue
		}
		d := n.decideConfChange(e)
		confs = append(confs, d)
		if d.rejected == nil {
			cs = n.rn.ApplyConfChange(d.v2)
			n.confView = cs
			n.followConfChange(d.cc)
		} else {
			n.log.Warn("membership change refused", "index", e.GetIndex(), "change", d.cc.String(), "err", d.rejected)
		}
	}
	select {
	case n.applyc <- applyTask{entries: ents, confs: confs, confState: cs}:
		return nil
	case <-n.stopc:
		return ErrStopped
	}
}

// installSnapshot makes a snapshot received from the leader this member's
// state. The state machine is restored (durably) first, then the metadata
// file, then the WAL marker: after a crash at any point the member restarts
// either from its old state or from the new one, and entries it skips are
// at or below the restored state machine's applied index.
func (n *Node) installSnapshot(s *raftpb.Snapshot) error {
	meta := s.GetMetadata()
	if err := n.waitApplyIdle(); err != nil {
		return err
	}
	f, err := n.snaps.openIncoming(meta)
	if err != nil {
		return err
	}
	err = n.sm.Restore(f)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("raftnode: close snapshot data: %w", cerr)
	}
	if err != nil {
		return fmt.Errorf("raftnode: restore snapshot %d: %w", meta.GetIndex(), err)
	}
	smApplied := n.sm.AppliedIndex()
	if smApplied < meta.GetIndex() {
		return fmt.Errorf("raftnode: snapshot at index %d restored a state machine at index %d", meta.GetIndex(), smApplied)
	}
	if err := n.snaps.saveMeta(meta); err != nil {
		return err
	}
	// An install marker, not a plain one: raft dropped its whole log for the
	// snapshot, including entries beyond it from an older term, and a replay
	// must drop them too.
	if err := n.wal.InstallSnapshot(wal.Snapshot{Index: meta.GetIndex(), Term: meta.GetTerm()}); err != nil {
		return fmt.Errorf("raftnode: save snapshot marker: %w", err)
	}
	if err := n.storage.ApplySnapshot(s); err != nil {
		return fmt.Errorf("raftnode: apply snapshot to raft storage: %w", err)
	}
	// The apply goroutine is parked at the barrier: these writes happen
	// before its next receive from applyc.
	n.smApplied = smApplied
	n.snapIndex = meta.GetIndex()
	n.confState = meta.GetConfState()
	n.confView = proto.Clone(n.confState).(*raftpb.ConfState)
	n.applied.Store(max(smApplied, n.snapIndex))
	n.notifyApplied()
	n.syncPeers()
	if err := n.snaps.purge(meta.GetIndex()); err != nil {
		n.log.Warn("purge snapshot files", "err", err)
	}
	n.log.Info("installed snapshot from leader", "index", meta.GetIndex(), "term", meta.GetTerm(),
		"state-machine-index", smApplied)
	return nil
}

// waitApplyIdle returns once the apply goroutine has finished every batch
// queued so far and is parked waiting for the next.
func (n *Node) waitApplyIdle() error {
	barrier := make(chan struct{})
	select {
	case n.applyc <- applyTask{barrier: barrier}:
	case <-n.stopc:
		return ErrStopped
	}
	select {
	case <-barrier:
		return nil
	case <-n.stopc:
		return ErrStopped
	}
}

func (n *Node) notifyApplied() {
	select {
	case n.appliedc <- struct{}{}:
	default:
	}
}
