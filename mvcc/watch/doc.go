// Package watch is cairn's watch hub: it fans the keyspace's events out to
// watchers with etcd v3's watch semantics. It knows the store only through
// Source (history and prev_kv reads) and the mvcc.Observer calls it gets;
// it knows nothing of gRPC: the server turns Responses into etcd
// WatchResponses and owns Created responses, fragmenting and sending.
//
// # Wiring
//
//	hub := watch.NewHub(watch.Options{})
//	store, err := mvcc.Open(path, mvcc.Options{Observer: hub})
//	hub.Start(store)                  // before the applier writes
//	...
//	s := hub.NewStream()              // one per client Watch stream
//	id, err := s.Watch(watch.Request{Key: k, RangeEnd: end, StartRev: rev})
//	for r := range s.Chan() { ... }   // send r to the client
//	s.Cancel(id); s.RequestProgress(); s.Close()
//	...
//	hub.Close()                       // stops the goroutine, closes streams
//	store.Close()
//
// For the server: put Hub.Rev in a Created response's header (a watch from
// revision 0 starts right after it); responses for a watcher can reach the
// channel before Watch returns its ID, so hold them until its Created
// response is out, as etcd's server does; a Response with CompactRevision
// set becomes a canceled WatchResponse carrying it.
//
// # What is kept from etcd
//
//   - Ranges read as in Range: an empty RangeEnd watches one key, "\x00"
//     every key from Key on; an empty Key is "\x00"; a RangeEnd not after
//     Key is ErrEmptyWatcherRange; a negative start is mvcc.ErrCompacted.
//   - IDs are per stream: WatchID 0 takes the next unused ID counting from
//     0; an explicit ID in use is ErrWatcherDuplicateID. A compacted
//     watcher keeps its ID until Cancel.
//   - StartRev 0 watches from the next revision; a past one replays
//     history first; a future one waits. A start (or replay position)
//     below the compaction point ends the watcher with one response
//     carrying the store's compact revision, whenever the hub finds it.
//   - Every response holds whole revisions, in order: a live write is one
//     response per revision (all its events: a txn's puts, a range
//     delete's keys); a history replay may put several revisions in one.
//     Filters drop events; a response left empty is not sent. prev_kv is
//     the key at the event's revision - 1 (none for a creation, none if
//     that revision is compacted by the time it is read).
//   - ProgressNotify watchers get a progress response (no events, header
//     revision = the hub's) after a tick of Options.ProgressInterval in
//     which they got no events, if caught up; RequestProgress answers with
//     WatchID -1 for the whole stream (see Stream.RequestProgress).
//
// # Groups
//
// A watcher is in one state (watcher.go):
//
//   - synced: caught up. It sits in the index (index.go): single keys in a
//     map, ranges in an interval tree, so OnWrite finds the watchers of an
//     event in O(log r + m), for r distinct ranges and m matches, however
//     many other watchers there are.
//   - unsynced: its next revision (minRev) is behind. The hub's goroutine
//     replays history for it in chunks (Options.ReplayBatch events,
//     Options.ReplayRevisions revisions), one chunk per round per watcher,
//     then moves it to synced.
//   - compacted: finished by a compaction, waiting for Cancel.
//
// Orthogonally a watcher may hold parked responses (a victim): they found
// the stream's channel full. New responses for it queue behind them, and
// the goroutine retries them in order.
//
// # Ordering guarantees
//
//  1. Per watcher, events arrive in revision order, each exactly once,
//     each revision whole, with no gap (until a compacted response, which
//     is last).
//  2. A progress response at revision R (per watcher, or -1 for the
//     stream) comes after every event up to R of the watchers it speaks
//     for: it is only sent while they are synced, hold nothing parked and
//     do not start after R+1, and the channel is FIFO.
//  3. Nothing is promised across watchers beyond that: two watchers'
//     responses of one revision may arrive in either order, and a parked
//     watcher may lag its stream mates.
//
// # The race with OnWrite
//
// The store makes a revision visible to readers, then calls OnWrite. So a
// history read may already see revision R while OnWrite(R) is still to
// come, and a watcher that read R from history and then joined synced
// would get R twice; one that joined before the read could miss it. The
// hub avoids both with its own revision, Hub.rev: the last revision
// OnWrite handed out, updated under the hub's mutex in the same hold that
// hands it out.
//
//   - A history read is planned under the mutex up to Hub.rev at that
//     moment (never the store's revision), and runs without the mutex.
//   - Applying it takes the mutex again: the watcher has everything up to
//     the planned revision. If OnWrite moved Hub.rev on meanwhile, the
//     revisions in between went to synced watchers only; the watcher gets
//     them from the recent buffer — the last few revisions' events as
//     OnWrite received them (shared, bounded by revisions, events and
//     bytes) — and joins synced in that same hold of the mutex, so every
//     later revision reaches it exactly once through OnWrite. If the gap is
//     older than the buffer, it stays unsynced and reads again.
//   - A Watch from revision 0 or from the future joins synced at once with
//     minRev = max(start, Hub.rev+1); OnWrite skips revisions below a
//     synced watcher's minRev.
//
// Every step that moves a watcher changes its generation, so a read in
// flight for a watcher that was cancelled, restored or moved meanwhile is
// dropped.
//
// # Slow consumers
//
// OnWrite never waits on a channel: every send under the mutex is
// non-blocking. A response that finds the channel full is parked on its
// watcher. A synced watcher whose parked events exceed Options.MaxParked
// drops them and becomes unsynced at its first undelivered revision: it
// replays from history, holding at most one chunk parked, so a stalled
// stream's memory stays bounded however long it stalls (and it ends with
// a compacted response if compaction overtakes it, as in etcd).
//
// # Restore
//
// OnRestore (the keyspace was replaced by a snapshot) moves every synced
// and unsynced watcher to unsynced at its first revision not yet given,
// drops what it had parked, and empties the recent buffer; each then
// replays from the new history, joins synced, or is compacted.
//
// # Goroutines and locking
//
// The hub has one goroutine, started by Start and stopped by Close. It
// retries parked responses (at once while they make progress, else after
// Options.RetryInterval), runs history replay rounds, answers deferred
// RequestProgress calls, and sends idle progress notifications on the
// ticker. Streams have no goroutine; Stream.Close (or Hub.Close) closes a
// stream's channel. Time comes from Options.Clock, so tests drive the
// ticker and retries without sleeping.
//
// One mutex guards all of the hub's state; it is never held across a
// blocking operation or a history read. Under it the hub may call
// Source.CompactRev and Source.Range (prev_kv); the store calls the
// Observer methods with its index lock released, so the lock order is the
// hub's mutex, then the store's locks.
package watch
