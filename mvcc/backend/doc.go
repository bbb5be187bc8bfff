// Package backend is cairn's storage file: one bbolt database written
// through an in-memory batch, with a consistent index, snapshots, and
// defragmentation that does not stop the service.
//
// # Layout
//
// The file holds the revision bucket ("key"), an append-only log of records
// keyed by strictly increasing byte strings (mvcc's revisions), written
// with Append; the meta bucket ("meta"), holding the consistent index and
// whatever small metadata the layers above keep; and any other ordinary
// bucket a caller writes with Put and Delete (mvcc/lease keeps "lease").
//
// # Who calls what
//
// Writes (Append, Put, Delete, SetConsistentIndex, Seal, EndWrite,
// ForceCommit) come from one goroutine, the applier. Reads (View, Get,
// ForEach), Commit, Snapshot, Defragment, Purge and PutUnordered may come
// from any goroutine.
//
// # The write path and when commits happen
//
// A write never touches bbolt. It is appended to an in-memory buffer and is
// visible to every view taken afterwards. A committer goroutine turns the
// buffer into one bbolt write transaction:
//
//   - every BatchInterval (default 100ms),
//   - as soon as BatchLimit (default 10,000) sealed writes are waiting,
//   - when Commit, ForceCommit, Purge, Snapshot or Defragment asks.
//
// The applier therefore never waits for a commit or an fsync. It waits only
// when MaxPending sealed writes pile up (the committer is far behind, or
// held by a defragmentation's pause): that is the back-pressure.
//
// # Sealing and the consistent index
//
// A commit takes only the sealed prefix of the buffer, never a raft entry
// in the middle. SetConsistentIndex(i, t) is called when the applier starts
// entry i: everything buffered before belongs to entries that are complete,
// so it is sealed, and a commit stores with it the index of the last
// complete entry, in the same bbolt transaction as the data. After a crash
// the file therefore holds exactly the entries up to its consistent index,
// and raft replays from the next one; an entry is never half applied. The
// writes of the entry in progress stay in memory (visible to reads) until
// the next SetConsistentIndex seals them, or ForceCommit, which the applier
// calls between entries (before a raft snapshot, at shutdown) to seal and
// commit everything. A process that never sets a consistent index (tests,
// tools) gets a seal after every store write (EndWrite).
//
// # What reads see
//
// A View is the file as of the last commit plus the buffer as it was when
// the view was taken: consistent, unaffected by later writes, commits,
// purges, defragmentation or restore. It costs one mutex acquisition: the
// view shares a bbolt read transaction that the committer opens after each
// commit, and captures the buffer by slicing it. That is safe because the
// buffer is append-only and records are immutable: a record's key is its
// revision, written once, so a view holding a prefix of the buffer never
// sees it change. Buffered revision records are all newer than committed
// ones, so a scan reads bbolt and then the buffer.
//
// During a commit the shared transaction is withdrawn (see the traps) and a
// view opens a private one; it may then see some records both committed and
// buffered, which Scan skips.
//
// # Snapshots
//
// Snapshot commits the sealed writes and streams the file with bbolt's
// Tx.WriteTo: a consistent copy as of that commit, taken while the service
// goes on. It does not include the entry in progress. PrepareRestore
// receives a snapshot into a temporary file next to the live one and
// fsyncs it; the caller rebuilds its in-memory state from it while the old
// state keeps serving; PendingRestore.Commit then renames it over the live
// file, fsyncs the directory, and swaps it in, dropping buffered writes and
// adopting the snapshot's consistent index.
//
// # Defragmentation while serving
//
// etcd defragments by copying the file into a new one while holding every
// request. cairn copies while serving, exploiting the layout: the revision
// bucket only grows at its end, and its records only disappear through
// Purge (compaction).
//
//  1. Commit, then take a read transaction R0 and its last revision key W0,
//     and start logging purged keys (both under the commit lock, so they
//     match). Copy the revision bucket of R0 into a new file, in large
//     unsynced transactions with pages filled completely. Commits go on.
//  2. Catch up: take a new read transaction Rn (and the purge log since the
//     last round), copy the records above Wn-1, replay the purges. Repeat
//     until a round copies little (at most a few thousand records).
//  3. Pause: hold the commit lock, so the old file stops changing. Copy the
//     last records and purges, replace every small bucket (meta, lease, ...)
//     with a full copy, fsync the new file, rename it over the old one,
//     fsync the directory, and make it current.
//
// Only commits wait, and only during step 3, which copies a small delta and
// the small buckets (typically milliseconds to tens of milliseconds; the
// duration is reported in DefragStats.Pause). Writes go on into the buffer,
// and reads go on against views of either file; views taken before the swap
// keep the old file open until they are released. Should the pause outlast
// MaxPending writes, the applier waits for it.
//
// # Errors
//
// A failed bbolt commit is fatal: it is kept (Err) and every later commit
// returns it; the layers above refuse writes. The buffered data stays
// readable. Errors are wrapped with the operation ("backend: commit: ...").
//
// # Traps
//
//   - Slices a View returns are valid until Release, and must not be
//     modified. Values given to Append and Put must not be modified after
//     the call: views share them.
//   - Release every View promptly. A view holds a bbolt read transaction:
//     pages freed meanwhile cannot be reused, and a commit that must grow
//     bbolt's memory mapping waits for every open read transaction. Keep
//     InitialMmapSize (default 10 GiB of address space) above the file
//     size; a Snapshot stream or a defragmentation holds a transaction for
//     its whole length and would stall commits behind such a remap.
//   - Commit and Snapshot take sealed writes only. Only the applier may
//     call ForceCommit, and only between entries: it declares the current
//     entry complete.
//   - Close commits sealed writes only; an entry in progress is dropped and
//     replayed by raft.
//   - PutUnordered writes are invisible to reads until committed.
package backend
