package raftnode

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/confchange"
	"go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
)

// Membership changes.
//
// A change is one raft conf change with a single step (add a voter, add a
// learner, promote a learner by adding it as a voter, remove, or update),
// proposed by the leader only: it alone can see whether raft took the
// change or quietly replaced it because another one is still pending
// (checkConfProposals), so a proposer never waits in vain. The change's
// context is the request ID, the member's peer URLs (encodeConfContext),
// then the application's payload. The peer URLs are raftnode's own: the raft
// loop points the transport at an added or updated member, and away from a
// removed one, as soon as raft applies the change.
//
// When a change commits, the raft loop decides it before raft sees it
// (decideConfChange): the change is refused if raft could not make it
// (removing the last voter, say) or if Config.CheckConfChange refuses it.
// The decision depends only on the membership raft has at that point in the
// log and on the entry, so every member, and the same member replaying its
// log after a restart, decides every change the same way. A refused change
// is never given to raft (raft asks exactly that); the state machine still
// sees it, with the reason, so the proposer gets an answer and the entry
// counts as applied.

// ConfChange is a membership change as the state machine sees it.
type ConfChange struct {
	Type   raftpb.ConfChangeType
	NodeID uint64
	// PeerURLs are the member's peer URLs, for an addition or an update.
	PeerURLs []string
	// Context is the application's payload (Peer.Context at bootstrap).
	Context []byte
}

func (c ConfChange) String() string { return fmt.Sprintf("%s %x", c.Type, c.NodeID) }

// confDecision is the raft loop's verdict on one committed conf change.
type confDecision struct {
	v2       *raftpb.ConfChangeV2
	cc       ConfChange
	id       uint64 // request ID of the proposer, 0 for none
	rejected error
}

// Progress is the leader's view of one member's replication.
type Progress struct {
	Match        uint64 // highest log index known to be on the member
	Learner      bool
	RecentActive bool // connected: streams open both ways, heard from within an election timeout
}

func isConfChange(e *raftpb.Entry) bool {
	t := e.GetType()
	return t == raftpb.EntryConfChange || t == raftpb.EntryConfChangeV2
}

// decodeConfChange reads a conf change entry of either version.
func decodeConfChange(e *raftpb.Entry) (*raftpb.ConfChangeV2, error) {
	if e.GetType() == raftpb.EntryConfChange {
		var c raftpb.ConfChange
		if err := unmarshal(e.GetData(), &c); err != nil {
			return nil, err
		}
		return c.AsV2(), nil
	}
	var c raftpb.ConfChangeV2
	if err := unmarshal(e.GetData(), &c); err != nil {
		return nil, err
	}
	return &c, nil
}

// encodeConfContext lays out a conf change's context: the request ID (8
// bytes, big endian), the number of peer URLs and each URL's length as
// uvarints followed by its bytes, then the application's payload.
func encodeConfContext(id uint64, urls []string, payload []byte) []byte {
	b := binary.BigEndian.AppendUint64(nil, id)
	b = binary.AppendUvarint(b, uint64(len(urls)))
	for _, u := range urls {
		b = binary.AppendUvarint(b, uint64(len(u)))
		b = append(b, u...)
	}
	return append(b, payload...)
}

// decodeConfContext reverses encodeConfContext. An empty context (the
// bootstrap changes of logs written before contexts were laid out) has no
// request ID, no URLs and no payload.
func decodeConfContext(ctx []byte) (id uint64, urls []string, payload []byte, err error) {
	if len(ctx) == 0 {
		return 0, nil, nil, nil
	}
	if len(ctx) < requestIDSize {
		return 0, nil, nil, fmt.Errorf("context of %d bytes is shorter than a request ID", len(ctx))
	}
	id, rest := binary.BigEndian.Uint64(ctx), ctx[requestIDSize:]
	next := func() (uint64, bool) {
		v, n := binary.Uvarint(rest)
		if n <= 0 {
			return 0, false
		}
		rest = rest[n:]
		return v, true
	}
	count, ok := next()
	if !ok || count > uint64(len(rest)) {
		return 0, nil, nil, errors.New("context has a malformed URL count")
	}
	for range count {
		l, ok := next()
		if !ok || l > uint64(len(rest)) {
			return 0, nil, nil, errors.New("context has a malformed URL")
		}
		urls = append(urls, string(rest[:l]))
		rest = rest[l:]
	}
	return id, urls, rest, nil
}

// decideConfChange decodes a committed conf change and decides whether
// raft applies it. Raft loop only.
func (n *Node) decideConfChange(e *raftpb.Entry) confDecision {
	v2, err := decodeConfChange(e)
	if err != nil {
		return confDecision{rejected: fmt.Errorf("raftnode: decode conf change at %d: %w", e.GetIndex(), err)}
	}
	id, urls, payload, err := decodeConfContext(v2.GetContext())
	d := confDecision{v2: v2, id: id}
	if err != nil {
		d.rejected = fmt.Errorf("%w: entry %d: %w", ErrConfChangeUnsupported, e.GetIndex(), err)
		return d
	}
	changes := v2.GetChanges()
	if len(changes) != 1 || v2.GetTransition() != raftpb.ConfChangeTransitionAuto {
		d.rejected = fmt.Errorf("%w: %d steps, transition %s", ErrConfChangeUnsupported, len(changes), v2.GetTransition())
		return d
	}
	d.cc = ConfChange{Type: changes[0].GetType(), NodeID: changes[0].GetNodeId(), PeerURLs: urls, Context: payload}
	if err := raftCanApply(n.confView, changes[0]); err != nil {
		d.rejected = fmt.Errorf("%w: %w", ErrConfChangeRefused, err)
		return d
	}
	if check := n.cfg.CheckConfChange; check != nil {
		d.rejected = check(n.confView, d.cc)
	}
	return d
}

// raftCanApply reports whether raft accepts the change on top of cs: raft
// panics on a change it cannot make, so each one is tried on a copy first.
func raftCanApply(cs *raftpb.ConfState, c *raftpb.ConfChangeSingle) error {
	chg := confchange.Changer{Tracker: tracker.MakeProgressTracker(1, 0), LastIndex: 1}
	cfg, trk, err := confchange.Restore(chg, cs)
	if err != nil {
		return err
	}
	chg.Tracker.Config, chg.Tracker.Progress = cfg, trk
	_, _, err = chg.Simple(c)
	return err
}

// checkConfProposals fails every membership change this leader proposed
// since the last Ready that is not among the Ready's new entries: raft
// replaced it with an empty entry because a change was still pending.
func (n *Node) checkConfProposals(ents []*raftpb.Entry) {
	appended := map[uint64]bool{}
	for _, e := range ents {
		if !isConfChange(e) {
			continue
		}
		if v2, err := decodeConfChange(e); err == nil {
			if id, _, _, err := decodeConfContext(v2.GetContext()); err == nil {
				appended[id] = true
			}
		}
	}
	for _, id := range n.confProposed {
		if !appended[id] {
			n.waits.Trigger(id, result{err: fmt.Errorf("%w: another membership change is still being applied", ErrProposalDropped)})
		}
	}
	n.confProposed = n.confProposed[:0]
}

// ProposeConfChange replicates a membership change and waits until this
// member has applied it, returning the state machine's result. Only the
// leader proposes changes: elsewhere it fails with ErrNotLeader at once.
// Other errors are those of Propose; ErrProposalDropped (nothing committed)
// includes a change refused because another one is still pending.
func (n *Node) ProposeConfChange(ctx context.Context, cc ConfChange) (any, error) {
	id := n.ids.Next()
	v2 := &raftpb.ConfChangeV2{
		Changes: []*raftpb.ConfChangeSingle{{Type: cc.Type.Enum(), NodeId: &cc.NodeID}},
		Context: encodeConfContext(id, cc.PeerURLs, cc.Context),
	}
	return n.proposeAndWait(ctx, proposal{id: id, conf: v2})
}

// TransferLeadership asks the leader to hand leadership to transferee (a
// voter) and waits until this member sees transferee lead. It may be called
// on any member: raft forwards the request to the leader. Raft sends the
// transferee a MsgTimeoutNow as soon as its log is complete, and gives up
// after an election timeout; the context bounds the wait.
func (n *Node) TransferLeadership(ctx context.Context, transferee uint64) error {
	// Raft abandons a transfer that did not finish within an election
	// timeout without a word; asking again then starts a new one.
	retry := time.NewTicker(n.cfg.TickInterval * time.Duration(n.cfg.ElectionTicks))
	defer retry.Stop()
	for {
		changed := n.LeaderChanged()
		if n.Leader() == transferee {
			return nil
		}
		select {
		case n.transferc <- transferee:
		default: // a request is queued already; raft ignores repeats
		}
		select {
		case <-changed:
		case <-retry.C:
		case <-ctx.Done():
			return ctx.Err()
		case <-n.stopc:
			return n.stoppedErr()
		}
	}
}

// progress is the leader's view of every member, nil on a follower.
// Raft loop only.
func (n *Node) progress() map[uint64]Progress {
	st := n.rn.Status()
	if st.RaftState != raft.StateLeader {
		return nil
	}
	// Connected: both streams open and a message within an election
	// timeout. Raft's own RecentActive is no good here: check-quorum clears
	// it for every follower at each election timeout (so it is briefly false
	// for healthy members) and a member that just died keeps it until then.
	window := n.cfg.TickInterval * time.Duration(n.cfg.ElectionTicks)
	out := make(map[uint64]Progress, len(st.Progress))
	for id, pr := range st.Progress {
		active := id == n.cfg.ID
		if !active {
			ps, ok := n.tr.Stats(id)
			active = ok && ps.Active && time.Since(n.tr.LastReceived(id)) <= window
		}
		out[id] = Progress{Match: pr.Match, Learner: pr.IsLearner, RecentActive: active}
	}
	return out
}

// Progress returns the leader's view of each member's replication, or nil
// if this member is not the leader.
func (n *Node) Progress(ctx context.Context) (map[uint64]Progress, error) {
	reply := make(chan map[uint64]Progress, 1)
	select {
	case n.progressc <- reply:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-n.stopc:
		return nil, n.stoppedErr()
	}
	select {
	case p := <-reply:
		return p, nil
	case <-n.stopc:
		return nil, n.stoppedErr()
	}
}

// followConfChange points the transport at the membership raft now has.
// Raft loop only.
func (n *Node) followConfChange(cc ConfChange) {
	switch cc.Type {
	case raftpb.ConfChangeRemoveNode:
		n.queuePeerUpdate(peerUpdate{id: cc.NodeID, remove: true})
	default:
		if len(cc.PeerURLs) > 0 {
			n.queuePeerUpdate(peerUpdate{id: cc.NodeID, urls: cc.PeerURLs})
		}
	}
}

// syncPeers points the transport at the members a restored state machine
// names, if it can name them (PeerSource), and away from those it says
// were removed. Raft loop only, after a snapshot install.
func (n *Node) syncPeers() {
	ps, ok := n.sm.(PeerSource)
	if !ok {
		return
	}
	members, removed := ps.Peers()
	for _, id := range removed {
		n.queuePeerUpdate(peerUpdate{id: id, remove: true})
	}
	for _, p := range members {
		if len(p.URLs) > 0 {
			n.queuePeerUpdate(peerUpdate{id: p.ID, urls: p.URLs})
		}
	}
}

// peerUpdate is a change to the transport's peers, applied in order by the
// peer goroutine: RemovePeer waits for the peer's goroutines, which must
// not hold up the raft loop.
type peerUpdate struct {
	id     uint64
	urls   []string
	remove bool
}

func (n *Node) queuePeerUpdate(u peerUpdate) {
	if u.id == n.cfg.ID {
		return
	}
	select {
	case n.peerUpdates <- u:
	case <-n.stopc:
	}
}

func (n *Node) peerLoop() {
	defer n.wg.Done()
	for {
		select {
		case u := <-n.peerUpdates:
			if u.remove {
				n.tr.MarkRemoved(u.id)
				n.tr.RemovePeer(u.id)
			} else {
				n.tr.AddPeer(u.id, u.urls)
			}
		case <-n.stopc:
			return
		}
	}
}

// removeSelf ends this member after it applied its own removal: the state
// machine is made durable with the removal in it, then the node stops with
// ErrRemoved.
func (n *Node) removeSelf(index uint64) error {
	if err := n.sm.Sync(); err != nil {
		return fmt.Errorf("raftnode: sync state machine after this member's removal: %w", err)
	}
	n.applied.Store(max(index, n.applied.Load()))
	return fmt.Errorf("%w (applied the removal at index %d)", ErrRemoved, index)
}

// removedByPeer is the transport's report that a peer refused us as a
// removed member.
func (n *Node) removedByPeer(peer uint64) {
	n.fatal(fmt.Errorf("%w (member %x refuses our messages)", ErrRemoved, peer))
}
