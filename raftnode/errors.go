package raftnode

import "errors"

// Sentinel errors returned by Node. Compare with errors.Is.
var (
	// ErrStopped is returned by calls made after Stop, or interrupted by it.
	ErrStopped = errors.New("raftnode: stopped")
	// ErrProposalDropped means raft refused the proposal (typically: no leader
	// is known, or leadership is being transferred). Nothing was committed;
	// the caller may retry.
	ErrProposalDropped = errors.New("raftnode: proposal dropped")
	// ErrLeaderChanged means the leader changed while the proposal was in
	// flight. The outcome is unknown: the entry may or may not commit.
	ErrLeaderChanged = errors.New("raftnode: leader changed while the proposal was pending; outcome unknown")
	// ErrNoLeader means no leader was known for longer than the caller's
	// patience (ReadIndex gives up with it when its context ends without one).
	ErrNoLeader = errors.New("raftnode: no leader")
	// ErrTooLarge is returned for a proposal bigger than Config.MaxProposalBytes.
	ErrTooLarge = errors.New("raftnode: proposal too large")
	// ErrClusterMismatch means the data dir belongs to another member or cluster.
	ErrClusterMismatch = errors.New("raftnode: data dir belongs to another member or cluster")
	// ErrNotLeader is returned by ProposeConfChange on a member that is not
	// the leader; nothing was proposed.
	ErrNotLeader = errors.New("raftnode: not the leader")
	// ErrRemoved means this member was removed from the cluster: it applied
	// its own removal, or a peer refused it as a removed member. The node
	// stops; the member must not come back with this data.
	ErrRemoved = errors.New("raftnode: this member was removed from the cluster")
	// ErrConfChangeRefused means raft cannot make a committed membership
	// change (for example, removing the last voter); it was not applied.
	ErrConfChangeRefused = errors.New("raftnode: membership change refused")
	// ErrConfChangeUnsupported means a committed conf change has a form
	// cairn does not propose (several steps, or joint consensus).
	ErrConfChangeUnsupported = errors.New("raftnode: unsupported membership change")
)
