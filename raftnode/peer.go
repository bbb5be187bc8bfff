package raftnode

import (
	"context"
	"io"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// peerSide is the node as the peer transport sees it. It is a separate type
// so that these methods stay off Node's public surface.
type peerSide struct{ n *Node }

// Process queues a message from a peer for the raft loop.
func (p peerSide) Process(ctx context.Context, m *raftpb.Message) error {
	select {
	case p.n.recvc <- m:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-p.n.stopc:
		return ErrStopped
	}
}

// ReportUnreachable tells raft that a peer's stream broke, so it stops
// pipelining appends to it. Dropped if the queue is full: raft will hear of
// it again.
func (p peerSide) ReportUnreachable(id uint64) {
	select {
	case p.n.reportc <- peerReport{id: id}:
	default:
	}
}

// ReportSnapshot tells raft how a snapshot send ended. Never dropped: raft
// waits for it before sending that peer anything else.
func (p peerSide) ReportSnapshot(id uint64, status raft.SnapshotStatus) {
	select {
	case p.n.reportc <- peerReport{id: id, snapshot: true, snapSuccess: status == raft.SnapshotFinish}:
	case <-p.n.stopc:
	}
}

// WriteSnapshot streams the state machine's current image for an outgoing
// MsgSnap. The image covers at least the snapshot's index, since raft only
// snapshots applied state.
func (p peerSide) WriteSnapshot(_ *raftpb.Message, w io.Writer) error {
	return p.n.sm.WriteSnapshot(w)
}

// ReceiveSnapshot spools an incoming snapshot's data to the snap directory,
// where installSnapshot finds it once raft accepts the message.
func (p peerSide) ReceiveSnapshot(m *raftpb.Message, r io.Reader) error {
	return p.n.snaps.receive(m.GetSnapshot().GetMetadata(), r)
}
