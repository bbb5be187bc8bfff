// Package server is one cairn member: etcd's v3 gRPC services and JSON
// gateway on the client port, the peer port's handlers, and the applier
// that turns committed log entries into changes of the keyspace, the lease
// table and the membership.
//
// # Starting
//
// Start listens first (a port in use fails before any data is touched),
// then decides who the member is (identity.go):
//
//   - a data dir with a log: the member and cluster IDs are read from it,
//     whatever the flags say;
//   - no log, --initial-cluster-state new: every ID is derived from
//     --initial-cluster and --initial-cluster-token, and the log is
//     bootstrapped with the initial members;
//   - no log, --initial-cluster-state existing: the member asks the
//     cluster's members (the others in --initial-cluster) for the member
//     list, finds the entry `member add` made for its peer URLs, checks that
//     --initial-cluster names exactly the cluster's members, and joins with an
//     empty log that the leader fills.
//
// A member that was removed from the cluster never starts again on the same
// data dir (member/REMOVED, and the removal in the backend).
//
// # Requests
//
// Writes are wrapped in the log envelope (cairnpb.Request) and proposed;
// the proposer waits until this member has applied the entry. Linearizable
// reads wait for a confirmed read index; serializable ones read local state.
// Errors cross the wire with etcd's gRPC codes and messages (errors.go).
// A learner serves only Status, serializable Range and Snapshot, refusing
// the rest with etcd's "rpc not supported for learner".
//
// # Membership
//
// Membership changes run on the leader (membership.go); a follower forwards
// them over the peer port. The leader checks a change against its applied
// membership and, with --strict-reconfig-check, the health of the voters,
// then proposes one raft conf change. At commit, every member checks the
// change again against raft's membership at that point of the log
// (checkConfChange), which refuses a change that raced another one the same
// way everywhere; the applier then records it in the backend's members
// buckets, in the same batch as the entry's consistent index. Removing the
// leader, and stopping it gracefully, first hand leadership to a voter.
//
// # Invariants
//
//   - The applier is deterministic: its effects depend only on the entries
//     and the state earlier entries produced, never on local time or flags.
//   - Every effect of an entry is in the same backend commit as the entry's
//     consistent index, so a replay after a crash applies each entry once.
//   - Nothing is acknowledged to a client before its entry is applied here
//     (writes) or before the read index is confirmed and applied (reads).
//
// # Goroutines
//
// The Server owns the client and peer listeners' serve loops, the
// publication of its attributes, the leader's duties (lease expiry,
// checkpoints, automatic promotion of learners) and background proposals;
// Stop ends them all and waits.
package server
