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
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

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

	// Owned by the apply goroutine (and by the raft loop while the apply
	// goroutine is parked at a barrier during a snapshot install).
	smApplied uint64 // entries at or below this are already in the state machine
	snapIndex uint64 // index of the latest snapshot marker
	confState *raftpb.ConfState

	// Shared state, readable from any goroutine.
	lead          atomic.Uint64
	term          atomic.Uint64
	committed     atomic.Uint64
	applied       atomic.Uint64
	leaderEpoch   atomic.Uint64
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
	data []byte // request ID followed by the payload
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
		cfg:        cfg,
		log:        cfg.Logger.With("member", fmt.Sprintf("%x", cfg.ID)),
		sm:         cfg.StateMachine,
		storage:    raft.NewMemoryStorage(),
		snaps:      snapDir{dir: filepath.Join(cfg.Dir, "snap")},
		waits:      newWaitRegistry(),
		ids:        newIDGenerator(cfg.ID, time.Now()),
		propc:      make(chan proposal, 4096),
		recvc:      make(chan *raftpb.Message, 4096),
		reportc:    make(chan peerReport, 256),
		readIndexc: make(chan []byte, 16),
		readStatec: make(chan raft.ReadState, 64),
		applyc:     make(chan applyTask, 256),
		appliedc:   make(chan struct{}, 1),
		stopc:      make(chan struct{}),
		confState:  &raftpb.ConfState{},
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
		Logger:                    raftLogger{n.log},
	}
	rn, err := raft.NewRawNode(rcfg)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("raftnode: start raft: %w", err), n.wal.Close())
	}
	if bootstrap {
		peers := make([]raft.Peer, len(cfg.Peers))
		for i, p := range cfg.Peers {
			peers[i] = raft.Peer{ID: p.ID}
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
		// A peer that acknowledges nothing for two election timeouts is
		// cut off; redialing then finds it as soon as the network heals.
		WriteTimeout: max(2*cfg.TickInterval*time.Duration(cfg.ElectionTicks), time.Second),
	})
	if err != nil {
		return nil, errors.Join(fmt.Errorf("raftnode: start transport: %w", err), n.wal.Close())
	}
	n.tr = tr
	for _, p := range cfg.Peers {
		if p.ID != cfg.ID {
			tr.AddPeer(p.ID, p.URLs)
		}
	}

	n.wg.Add(3)
	go n.raftLoop()
	go n.applyLoop()
	go n.readLoop()
	n.log.Info("raft member started", "bootstrap", bootstrap, "snapshot-index", n.snapIndex,
		"applied-index", n.applied.Load(), "peers", len(cfg.Peers))
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
	buf := make([]byte, requestIDSize+len(data))
	binary.BigEndian.PutUint64(buf, id)
	copy(buf[requestIDSize:], data)
	ch := n.waits.Register(id, n.leaderEpoch.Load())
	select {
	case n.propc <- proposal{id: id, data: buf}:
	case <-ctx.Done():
		n.waits.Cancel(id)
		return nil, ctx.Err()
	case <-n.stopc:
		n.waits.Cancel(id)
		return nil, n.stoppedErr()
	}
	select {
	case r := <-ch:
		return r.value, r.err
	case <-ctx.Done():
		n.waits.Cancel(id)
		return nil, ctx.Err()
	case <-n.stopc:
		n.waits.Cancel(id)
		return nil, n.stoppedErr()
	}
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
	n.errMu.Lock()
	if n.err == nil {
		n.err = err
	}
	n.errMu.Unlock()
	n.log.Error("raft member stopping on a fatal error", "err", err)
	n.signalStop()
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

func (n *Node) propose(p proposal) {
	if err := n.rn.Propose(p.data); err != nil {
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

func (n *Node) updateLeader(ss *raft.SoftState) {
	n.isLeader.Store(ss.RaftState == raft.StateLeader)
	old := n.lead.Swap(ss.Lead)
	if old == ss.Lead {
		return
	}
	n.leaderChanges.Add(1)
	epoch := n.leaderEpoch.Add(1)
	n.log.Info("leader changed", "from", fmt.Sprintf("%x", old), "to", fmt.Sprintf("%x", ss.Lead),
		"state", ss.RaftState.String())
	if old != 0 {
		// Proposals forwarded to the old leader may be lost without a trace;
		// tell their callers now rather than at their deadline.
		n.waits.FailBefore(epoch, ErrLeaderChanged)
	}
}

// handOff applies configuration changes to raft (which must see them on the
// raft loop) and queues the batch for the apply goroutine.
func (n *Node) handOff(ents []*raftpb.Entry) error {
	var cs *raftpb.ConfState
	for _, e := range ents {
		var cc raftpb.ConfChangeI
		switch e.GetType() {
		case raftpb.EntryConfChange:
			var c raftpb.ConfChange
			if err := unmarshal(e.GetData(), &c); err != nil {
				return fmt.Errorf("raftnode: decode conf change at %d: %w", e.GetIndex(), err)
			}
			cc = &c
		case raftpb.EntryConfChangeV2:
			var c raftpb.ConfChangeV2
			if err := unmarshal(e.GetData(), &c); err != nil {
				return fmt.Errorf("raftnode: decode conf change at %d: %w", e.GetIndex(), err)
			}
			cc = &c
		default:
			continue
		}
		cs = n.rn.ApplyConfChange(cc)
	}
	select {
	case n.applyc <- applyTask{entries: ents, confState: cs}:
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
	n.applied.Store(max(smApplied, n.snapIndex))
	n.notifyApplied()
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
