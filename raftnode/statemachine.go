package raftnode

import "io"

// StateMachine is the replicated application that committed entries drive.
//
// Concurrency: Apply, ApplyConfChange, Sync, Restore and AppliedIndex are called from a single
// goroutine at a time (the node's apply goroutine, or its raft loop while the
// apply goroutine is idle), never concurrently with each other. WriteSnapshot
// may run on another goroutine (the peer transport) concurrently with Apply.
type StateMachine interface {
	// AppliedIndex returns the raft index of the last entry whose effects are
	// durable in the state machine (its consistent index). raftnode skips
	// entries at or below it, so replaying the log after a crash is
	// idempotent. Called at start and after Restore.
	AppliedIndex() uint64

	// Apply applies the committed entry at index, whose payload is data (the
	// bytes given to Propose). Entries arrive in index order, each once per
	// process lifetime. The returned value is handed to the proposer if it is
	// waiting on this member; it is dropped otherwise. Apply must record index
	// as its consistent index in the same durable step as its effects.
	Apply(index, term uint64, data []byte) any

	// ApplyConfChange applies the committed membership change at index, in
	// log order with Apply and under the same rules (consistent index, each
	// once). rejected is non-nil when the change was refused (see
	// Config.CheckConfChange): the membership must then stay as it is. The
	// returned value goes to the proposer, as with Apply.
	ApplyConfChange(index, term uint64, cc ConfChange, rejected error) any

	// Sync makes every applied entry durable. raftnode calls it before it
	// writes a snapshot marker, after which log entries up to that index may
	// be released.
	Sync() error

	// WriteSnapshot streams a consistent image of the current state, covering
	// at least every entry applied before the call, into w.
	WriteSnapshot(w io.Writer) error

	// Restore replaces the whole state with an image written by WriteSnapshot
	// (possibly on another member). It returns only when the new state is
	// durable; on error the old state must be intact.
	Restore(r io.Reader) error
}

// PeerSource may be implemented by a StateMachine that records the members'
// peer URLs. After installing a snapshot from the leader, raftnode points
// the transport at the members it names: the log entries that would have
// told it of members added or removed meanwhile are gone.
type PeerSource interface {
	// Peers returns the members as of the state machine's applied index,
	// and the IDs of members removed from the cluster.
	Peers() (members []Peer, removed []uint64)
}
