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
)
