// Package lease is cairn's lease table: etcd's v3 leases (grant, revoke,
// keep-alive, time-to-live, checkpoints) kept on every member, persisted in
// the backend's "lease" bucket in the same batch as the keyspace, and
// expired by the leader alone.
//
// # Two halves
//
// The table itself is a deterministic state machine. The applier feeds it
// the committed raft entries, in log order, on every member: Grant, Revoke
// and Checkpoint, plus the store's Attach and Detach as keys with leases
// are put, overwritten and deleted. Given the same entries, every member
// holds the same leases, the same TTLs, remaining TTLs and keys. These
// calls never read the clock.
//
// Expiry is a separate, leader-only layer on top: the primary. Promote,
// when this member becomes the leader, gives every lease an expiry time
// from the injected Clock; Renew (keep-alive) pushes one back; Expired
// lists those whose time has passed; Demote forgets all of it when the
// member stops leading. Followers keep no expiry at all and never expire
// anything.
//
// # Invariants
//
//   - Apply is deterministic: replicated state (the table, the bucket, the
//     keys) changes only through Grant, Revoke, Checkpoint, Attach, Detach
//     and Recover, which depend on their arguments and the table alone.
//     Exists answers from the table, never from expiry, so a put's outcome
//     is the same on every member.
//   - Expiry is a proposal, never a local delete: Expired only reports. The
//     server proposes a Revoke for each lease reported, and the lease and
//     its keys go when, and on every member because, that entry is applied.
//     A revoke proposed by a deposed leader is harmless: it is either
//     committed (and applied everywhere) or lost.
//   - A revocation is one store revision (DeleteKeys), and the lease
//     record's removal is in the same backend batch: after a crash the file
//     holds both or neither.
//   - Keys attached to a lease are exactly the live keys whose lease field
//     is that lease (the store keeps this through Attach and Detach, and
//     rebuilds it at open and restore).
//
// # Construction order
//
// The lessor needs the backend (its bucket) and the store (to delete keys);
// the store needs the lessor when it opens, since rebuilding its index
// attaches every key that carries a lease. So:
//
//  1. be := backend.Open(path, ...)
//  2. le := lease.New(be, lease.Options{MinTTL: lease.MinTTL(electionTicks,
//     heartbeat), Checkpointer: ...}) loads the table from the bucket.
//  3. s := mvcc.New(be, mvcc.Options{Leases: le}) rebuilds the index and
//     calls le.Attach for each key with a lease. (Attach of an unknown
//     lease is ignored, hence the table must be loaded first.)
//  4. le.SetDeleter(s), before the first entry is applied.
//  5. On leadership: le.Promote(electionTimeout); on losing it, and at
//     shutdown: le.Demote(). Then s.Close(), then be.Close().
//
// After the store's Restore swaps in a snapshot, the store calls Recover
// (mvcc.LeaseRecoverer) to reload the table from the new file, then
// attaches the keys again. The lessor starts no goroutine and has nothing
// to close.
//
// # The primary's duties
//
// The server's leader loop, every PollInterval:
//
//  1. ids := le.Expired(0): propose a LeaseRevoke for each, a few at a time.
//     A lease is reported again only after ExpiredRetryInterval (3s) if it
//     is still there; reports are capped at RevokeRate (1000/s) in bursts
//     of half of that, etcd's rate. Promote spreads expiries so that an
//     election cannot pile more than three quarters of that rate into one
//     second.
//  2. cps := le.CheckpointsDue(0): propose one LeaseCheckpoint entry with
//     them; repeat while a full batch (MaxCheckpointBatch) comes back.
//
// Keep-alives call Renew, which answers only on the primary (ErrNotPrimary
// elsewhere: the server forwards to the leader). TimeToLive answers
// anywhere; Status.Primary says whether the remaining TTL is the primary's
// own or the local best guess.
//
// # Checkpoints
//
// Without checkpoints a lease's expiry restarts from its full TTL at every
// leader change, so a long lease under a flapping leadership might never
// expire. With a Checkpointer (etcd: the optional lease checkpoint feature),
// the primary yields, every CheckpointInterval (5 minutes), the remaining
// TTL of each lease longer than that interval; once applied (Checkpoint, on
// every member, persisted) a new primary counts from it. Renew of a lease
// that carries a checkpoint first proposes a checkpoint of 0 through the
// Checkpointer and waits for it, as etcd does, so that the TTL the client
// is told holds across a leader change; so a checkpointed lease costs at
// most two raft entries per interval.
//
// # Concurrency
//
// Every method is safe for concurrent use. Apply-path methods (Grant,
// Revoke, Checkpoint, Attach, Detach, Recover) come from the applier, one
// at a time. Renew, TimeToLive, Leases and Exists may come from any
// goroutine; Promote, Demote, Expired and CheckpointsDue from the server's
// raft or leader loop.
//
// One RWMutex guards the table and the primary's queues. It is held only
// for in-memory work and buffered backend writes, never while calling out:
//
//   - Revoke collects the keys under the lock, releases it, then calls
//     DeleteKeys, which calls Detach (taking the lock) on the same
//     goroutine, as mvcc.Leases requires.
//   - Renew releases it before calling the Checkpointer, whose entry is
//     applied by the applier (Checkpoint takes the lock), and before
//     waiting for a revoke.
//
// The store calls Exists, Attach and Detach holding only its writer mutex;
// the lessor never calls into the store while holding its lock, so the two
// locks are never taken in opposite orders.
//
// # Semantics kept from etcd
//
//   - Grant of ID 0 fails with ErrLeaseNotFound; a TTL above MaxLeaseTTL
//     fails; a TTL below the minimum, zero or negative included, is raised
//     to it, and the raised TTL is what is persisted and returned.
//   - Checkpoint of a lease that no longer exists succeeds, doing nothing.
//   - TimeToLive's remaining TTL is truncated to whole seconds ("expires in
//     under TTL+1 seconds"); a missing lease is ErrLeaseNotFound, which the
//     server reports as TTL -1. Unlike etcd it is never negative: an expired
//     lease not yet revoked reports 0.
//   - Lease records use etcd's leasepb.Lease encoding and key layout.
package lease
