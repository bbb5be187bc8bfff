// Package raftnode drives go.etcd.io/raft/v3 for one cairn member: it owns
// the raft state machine (a RawNode), the write-ahead log (package wal), the
// peer transport (package raftnode/transport) and the goroutines that tie
// them together. It knows log entries, not keys: the application plugs in as
// a StateMachine and sees opaque payloads.
//
// # Starting
//
// Start opens the member directory. A directory without a log is bootstrapped
// with the initial peers, unless the member joins a running cluster
// (Config.Join: its log stays empty until the leader sends entries or a
// snapshot); one with a log is replayed: the newest snapshot
// metadata file whose marker the WAL holds is loaded into raft's storage,
// then the hard state and the entries after the marker. The state machine
// reports its own durable applied index (its consistent index) and entries at
// or below it are not applied again, so a crash between the state machine's
// commit and the WAL's is harmless in either order. Serve Handler on the peer
// listener; call Stop to shut down.
//
// # The Ready cycle
//
// One goroutine, the raft loop, owns the RawNode. It takes an input (a tick,
// proposals, peer messages, read-index requests, peer reports), drains any
// others already queued — so a burst of proposals becomes a single Ready and
// a single fsync — and then handles the Ready:
//
//  1. Soft state: note leader changes (LeaderChanged wakes those who wait
//     for one). Proposals in flight are not failed here: see Applying.
//  2. Read states go to the read loop.
//  3. A leader sends its messages now: it may replicate while it writes its
//     own log, because its own entries count toward commit only after step 5.
//  4. A snapshot from the leader is installed: wait until the apply goroutine
//     is idle, restore the state machine from the spooled data (durably),
//     write the metadata file, then the WAL marker, then raft's storage.
//  5. Hard state and entries are appended to the WAL with one fdatasync.
//     Nothing in this Ready is acknowledged before that returns. A Ready
//     whose only change is the commit index (raft's MustSync is false) is
//     not written: the commit index need not be durable, and an fsync there
//     would sit between commit and apply on every write.
//  6. The same go into raft's in-memory storage.
//  7. A follower sends its messages now, after the fsync: its acks and votes
//     promise what is on disk.
//  8. Committed entries: membership changes are decided (see Membership) and
//     applied to raft here, in log order (raft must see them on this
//     goroutine), and the transport follows them; the batch is queued to the
//     apply goroutine, which applies it while the loop persists the next
//     Ready.
//  9. Advance.
//
// # Applying, waiting and snapshots
//
// Every proposal carries an 8-byte request ID ahead of its payload. The
// proposer registers the ID in a wait registry; the apply goroutine calls
// StateMachine.Apply for each entry in order and hands the result to the
// waiter. A proposer stops waiting when its context ends, when the node
// stops, or with ErrLeaderChanged (outcome unknown) once the apply goroutine
// reaches an entry of a later term than the one its proposal was made in:
// every entry of an earlier term that will ever commit comes before the new
// term's first entry, so one still unapplied then never will be. Waiting for
// that point, rather than failing at the leader change, lets a leadership
// transfer lose no acknowledgement: the new leader holds the old one's
// entries and commits them.
//
// Every Config.SnapshotCount applied entries the apply goroutine takes a
// snapshot: StateMachine.Sync, a metadata file in snap/, a marker in the WAL,
// then raft's in-memory log is compacted (keeping SnapshotCatchUpEntries for
// slow followers) and WAL segments before the marker are released. The
// snapshot's data is the state machine itself: when raft sends a snapshot
// the transport streams StateMachine.WriteSnapshot to the follower, which
// spools it into snap/ before raft sees the message.
//
// # Membership
//
// A membership change is one raft conf change with one step: add a voter,
// add a learner, promote a learner (add it as a voter), remove, or update
// peer URLs. Only the leader proposes them (ProposeConfChange), because only
// the leader can see, in its next Ready, whether raft took the change or
// replaced it by an empty entry since another change was pending; either
// way the proposer gets an answer at once. The conf change's context carries
// the request ID, the member's peer URLs (raftnode's own) and the
// application's payload.
//
// When a change commits, the raft loop decides it before raft sees it: it is
// refused if raft could not make it (it would panic: removing the last
// voter, demoting a voter) or if Config.CheckConfChange refuses it. The
// decision depends only on raft's membership just before the entry, so every
// member, and the same member replaying its log, decides each change alike.
// An accepted change goes to raft, to the transport (new peers dialed,
// removed ones dropped and refused with 410 Gone), and with its verdict to
// StateMachine.ApplyConfChange, which answers the proposer. A member that
// applies its own removal, or is refused by a peer as removed, stops with
// ErrRemoved. After installing a snapshot the transport is pointed at the
// state machine's members if it names them (PeerSource): the entries that
// would have told it are gone. TransferLeadership hands leadership to a
// voter (raft sends it MsgTimeoutNow once its log is complete).
//
// # Linearizable reads
//
// ReadIndex batches concurrent callers: one raft ReadIndex request serves
// every caller that arrived before it was issued. Once raft answers with the
// leader's confirmed commit index, the callers are released when the apply
// goroutine has reached it. Requests that get no answer (no leader, a lost
// message) are retried every election timeout.
//
// # Invariants
//
//   - Entries reach the state machine in index order, each at most once per
//     process, and only after they are committed.
//   - A snapshot marker is written only after the state machine has made the
//     marker's index durable (Sync, or Restore for an installed snapshot), and
//     WAL segments are released only after the marker.
//   - After a WAL or state-machine error the node stops (Err reports why):
//     nothing more is acknowledged.
//
// # Goroutines
//
// Start launches the raft loop, the apply goroutine, the read loop and the
// peer loop (which applies transport changes in order, so that removing a
// peer, which waits for its goroutines, never holds up the raft loop); the
// transport runs its own. Stop ends all of them and waits.
package raftnode
