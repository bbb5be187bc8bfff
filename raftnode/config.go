package raftnode

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/cairnkv/cairn/raftnode/transport"
)

// Peer is one member of the cluster as this member knows it at start.
type Peer struct {
	ID   uint64
	URLs []string // peer URLs, e.g. http://127.0.0.1:2380
	// Context describes the member to the state machine: a new log's
	// bootstrap conf change for this peer carries it, and
	// StateMachine.ApplyConfChange receives it as ConfChange.Context.
	Context []byte
}

// Config configures a Node. Zero values take the defaults noted on each field.
type Config struct {
	// ID is this member's raft ID; ClusterID identifies the cluster. Both are
	// written into the WAL at creation and checked on every restart.
	ID, ClusterID uint64
	// Peers are the cluster's members as known at start, this member
	// included unless it is joining: the initial cluster of a new log, which
	// bootstraps it, or the last membership the state machine recorded. The
	// transport reaches them until membership changes say otherwise.
	Peers []Peer
	// Join means the member joins a running cluster: its log starts empty,
	// is never bootstrapped, and fills from the leader's log or snapshot.
	Join bool
	// Removed lists members removed from the cluster: the transport refuses
	// their messages.
	Removed []uint64
	// CheckConfChange, if set, vets each committed membership change before
	// raft applies it; a non-nil error refuses the change (see membership.go).
	// It runs on the raft loop and must depend only on its arguments, cs
	// being the membership raft has just before the change, so that every
	// member and every replay decide alike.
	CheckConfChange func(cs *raftpb.ConfState, cc ConfChange) error
	// Dir is the member directory; the log lives in Dir/wal and snapshot
	// markers and incoming snapshot data in Dir/snap.
	Dir string

	// StateMachine receives committed entries. Required.
	StateMachine StateMachine

	// TickInterval is raft's heartbeat interval (default 100ms).
	TickInterval time.Duration
	// ElectionTicks is the election timeout in ticks (default 10).
	ElectionTicks int
	// SnapshotCount is the number of applied entries between snapshots
	// (default 10,000).
	SnapshotCount uint64
	// SnapshotCatchUpEntries is how many entries before a snapshot raft keeps
	// in memory so slightly slow followers catch up without a full snapshot
	// (default 5,000).
	SnapshotCatchUpEntries uint64
	// MaxSizePerMsg bounds the entries in one append message (default 1 MiB).
	MaxSizePerMsg uint64
	// MaxInflightMsgs bounds in-flight append messages per follower (default 256).
	MaxInflightMsgs int
	// MaxProposalBytes bounds one proposal's payload (default 8 MiB).
	MaxProposalBytes int
	// WALSegmentSize overrides the WAL's segment size (tests use small ones).
	WALSegmentSize int64
	// WALAfterSync and WALBeforeSync are handed to the WAL (metrics, and the
	// test-only slow-disk hook).
	WALAfterSync  func(time.Duration)
	WALBeforeSync func()

	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Faults is the test-only fault hook of the peer transport.
	Faults *transport.Faults
}

func (c *Config) applyDefaults() {
	if c.TickInterval == 0 {
		c.TickInterval = 100 * time.Millisecond
	}
	if c.ElectionTicks == 0 {
		c.ElectionTicks = 10
	}
	if c.SnapshotCount == 0 {
		c.SnapshotCount = 10_000
	}
	if c.SnapshotCatchUpEntries == 0 {
		c.SnapshotCatchUpEntries = 5_000
	}
	if c.MaxSizePerMsg == 0 {
		c.MaxSizePerMsg = 1 << 20
	}
	if c.MaxInflightMsgs == 0 {
		c.MaxInflightMsgs = 256
	}
	if c.MaxProposalBytes == 0 {
		c.MaxProposalBytes = 8 << 20
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// selfURLs are this member's own peer URLs, from Peers.
func (c *Config) selfURLs() []string {
	for _, p := range c.Peers {
		if p.ID == c.ID {
			return p.URLs
		}
	}
	return nil
}

func (c *Config) validate() error {
	switch {
	case c.ID == 0:
		return errors.New("raftnode: config: ID must not be 0")
	case c.Dir == "":
		return errors.New("raftnode: config: Dir is required")
	case c.StateMachine == nil:
		return errors.New("raftnode: config: StateMachine is required")
	case c.ElectionTicks < 2:
		return fmt.Errorf("raftnode: config: ElectionTicks %d must be at least 2", c.ElectionTicks)
	}
	self := false
	for _, p := range c.Peers {
		if p.ID == 0 {
			return errors.New("raftnode: config: peer ID must not be 0")
		}
		if p.ID == c.ID {
			self = true
		}
	}
	if !self && !c.Join {
		return fmt.Errorf("raftnode: config: member %x is not in Peers", c.ID)
	}
	return nil
}
