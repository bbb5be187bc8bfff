// Package mvcc is cairn's revisioned keyspace: etcd's v3 key-value
// semantics (Range, Put, DeleteRange, Txn, Compact, HashKV) over the
// batched bbolt backend of package backend. It knows nothing of raft, gRPC
// or etcdserverpb: the server translates requests into the plain Go types
// here, which carry every field of etcd's messages and keep etcd's
// semantics exactly, down to its quirks (each is noted where it is kept).
//
// # Revisions
//
// A revision is (main, sub). main grows by one for each write transaction
// that changes something; sub numbers the changes inside it. A new store
// is at revision 1 with no keys, so the first write is revision 2. Writes
// that change nothing (deleting no key, a read-only or failed txn with no
// write) create no revision. Each key carries create_revision, mod_revision,
// version (1 at creation, +1 per put; a delete ends the key's generation
// and a later put starts a new one at version 1) and lease.
//
// # Layout
//
// The backend's revision bucket maps each revision (16 bytes: main, sub,
// big-endian) to the key-value it wrote; a delete writes a tombstone
// (version 0). An in-memory B-tree index maps each key to its generations
// of revisions and is rebuilt from the bucket at Open. Reads look revisions
// up in the index, then fetch the records from a backend view.
//
// # Concurrency
//
// One goroutine writes (Put, DeleteRange, a Txn with writes, DeleteKeys,
// Compact, Restore, SetConsistentIndex, ForceCommit): the applier. Writers
// are serialised by a mutex, so a second one only waits. Reads (Range, a
// read-only Txn, Events, HashKV, Snapshot, Defragment, Rev) may come from
// any number of goroutines at once.
//
// The index is guarded by a sync.RWMutex. A reader holds it shared only
// while it walks the index and pins a backend view; it fetches values
// afterwards, lock-free. The writer builds a transaction in place — records
// go to the backend buffer, revisions into the index — taking the lock
// exclusively for each index change only. Readers ignore revisions above
// the published current revision, so a transaction in progress is
// invisible; it becomes visible at once when the writer publishes its
// revision. A read-only Txn holds the lock shared for its whole run, so all
// its reads see one revision.
//
// # Invariants
//
//   - Every revision the index holds is in the backend (buffered or
//     committed) and stays there while a reader may ask for it: compaction
//     removes a record only after dropping it from the index, and readers
//     pin their view before releasing the index lock.
//   - Records are never modified; a record's key is its revision.
//   - The compaction point is persisted before any record is removed, so a
//     restart resumes an interrupted compaction instead of exposing a
//     partial history.
//
// # Compaction
//
// Compact(rev) is logical at once: reads below rev fail with ErrCompacted,
// and the index keeps, per key, the latest revision at or below rev (if
// the key is live there) and everything after. As in etcd since 3.5.16, a
// tombstone at exactly rev survives until the next compaction, so history
// replayed from rev still shows the delete. The records themselves are
// removed in the background, a batch (default 1000 records) per bbolt
// commit with a pause between batches; the channel Compact returns closes
// when that is done.
//
// # Hooks for watch and lease
//
// Options.Observer receives each write transaction's events after its
// revision is visible (see Observer for the ordering contract), and Events
// replays history from the backend. Options.Leases is the lease table:
// puts check that a lease exists and attach keys to it; puts and deletes
// detach; Open and Restore re-attach. DeleteKeys deletes a list of keys in
// one revision (lease revocation). Backend exposes the backend, so that the
// lease package keeps its bucket in the same batch, consistent with the
// keys.
//
// # Durability
//
// The applier calls SetConsistentIndex before applying each raft entry;
// see the backend package for how commits follow entry boundaries, so that
// after a crash the file's consistent index says exactly which entries it
// holds. Compact must be the only store write of its entry: it commits at
// once, as etcd's does.
//
// # Kept etcd behaviours worth knowing
//
//   - Range: with a sort target other than KEY and order NONE the result is
//     sorted ascending, but a limit still caps the fetch (limit+1 keys in key
//     order), and only those are sorted. With an explicit order or a revision
//     filter, everything is fetched, filtered, sorted, then cut. count is the
//     number of keys in the range at the revision, ignoring limit and
//     filters; count_only ignores both. keys_only answers from the index:
//     no value, and lease 0 (as etcd 3.7).
//   - Txn: compares, nested ones included, read the state before the txn.
//     The duplicate-key check compares range ends as plain strings, so a
//     delete to "\x00" (from a key onwards) conflicts with no put, and a
//     nested txn's delete is not checked against an earlier nested txn's put.
//     A nested TxnResponse has revision 0. Inside a txn a range with a
//     negative revision fails with ErrCompacted once the store was compacted.
//   - A new store's compact revision is -1, and Compact(0) succeeds once.
package mvcc
