// Package wal is cairn's write-ahead log: the durable, append-only record of
// raft's entries, hard state and snapshot markers for one member.
//
// raftnode writes every Ready's entries and hard state with one Save (one
// write, one fdatasync) before it acknowledges anything, records a snapshot
// marker with SaveSnapshot after the snapshot it stands for is durable, and
// calls ReleaseTo to delete segments the marker makes unnecessary. On
// restart it calls Open with the latest snapshot's marker and gets back the
// metadata, the last hard state and every entry after the marker. The
// package knows nothing of raft beyond these shapes: entry types and data
// are opaque bytes. It uses the standard library only.
//
// # Using it
//
//	if !wal.Exists(dir) {
//		w, err := wal.Create(dir, wal.Metadata{MemberID: id, ClusterID: cid}, wal.Options{})
//		...
//	}
//	w, rp, err := wal.Open(dir, wal.Snapshot{Index: snap.Index, Term: snap.Term}, wal.Options{})
//	// restore raft from the snapshot, then rp.HardState and rp.Entries
//	for rd := range ready {
//		if err := w.Save(hs, rd.Entries); err != nil {
//			// stop: the WAL is broken and nothing of this Ready is durable
//		}
//		...
//	}
//	// elsewhere, after the snapshot file at index i (term t) is durable:
//	w.SaveSnapshot(wal.Snapshot{Index: i, Term: t})
//	w.ReleaseTo(i)
//
// All methods of *WAL may be called concurrently; they are serialised by
// one mutex (the raft loop's Save waits while a ReleaseTo deletes files).
// The Options hooks run with that mutex held.
//
// # Directory and segments
//
// The log is a directory of segment files plus a LOCK file. Open and Create
// hold an exclusive flock on LOCK (LOCK_EX|LOCK_NB) until Close; a second
// WAL on the same directory, in this process or another, gets ErrLocked.
// The kernel drops the lock when the process dies.
//
// A segment is named
//
//	%016x-%016x.wal   sequence number, first index
//
// in lower-case hex. Sequence numbers are consecutive from 0. The first
// index is the log's last index + 1 when the segment was cut: no entry
// above first-1 existed before this segment, so every entry of the final
// log above that index was written into it or a later one. (It is not a
// lower bound on the indexes inside: raft may overwrite a suffix that began
// in an earlier segment, so first indexes can go down from one segment to
// the next.)
//
// Segments are preallocated to Options.SegmentSize (default 64 MiB; a batch
// that does not fit in an empty segment gets a segment of its own size), so
// appends never change a file's size. Unwritten space reads as zeros. Once
// the tail is half full, a goroutine owned by the WAL prepares the next
// segment's file ("spare.wal.tmp": fallocated, then written full of zeros
// and fsynced, so that later fdatasyncs need no extent conversion; see
// spare.go for the measurement); Close stops it and deletes the file. A
// segment is cut when the next batch does not fit: the spare (or, if it
// could not be made, a fresh fallocated ".tmp" file) gets its head, is
// synced, renamed into place, and the directory is fsynced; only then does
// the batch go into it. A crash leaves either no new segment or a complete
// one; Open deletes leftover ".tmp" files.
//
// Every segment starts with a head of three records: the segment header,
// the metadata and the hard state current when it was cut. A run of
// segments that starts anywhere is therefore self-sufficient once older
// segments are released.
//
// # Record frames
//
// Everything in a segment is a frame, little-endian, 8-byte aligned:
//
//	offset size
//	0      4    payload length n
//	4      1    record type
//	5      3    reserved, zero
//	8      4    CRC: CRC-32C (Castagnoli) of bytes 0..7 and the payload,
//	            seeded with the previous record's CRC
//	12     4    header check: CRC-32C of bytes 0..11
//	16     n    payload
//	16+n   pad  zeros up to a multiple of 8
//
// The CRC chains every record to the one before it, across segment
// boundaries too: each segment header carries the chain value at the end of
// the previous segment (0 in the first segment ever), and its own CRC is
// seeded with it. A lost or reordered record, or a segment that is not its
// predecessor's successor, breaks the chain. The header check protects the
// length and type on their own, so a damaged length is recognised as damage
// rather than read as the end of the data, and the frame's extent is known
// before the payload is trusted.
//
// Record types and payloads (all integers little-endian uint64 unless noted):
//
//	1 segment header  40 bytes: magic "CAIRNWAL", format version (uint32, 1),
//	                  zero (uint32), sequence, first index,
//	                  previous chain value (uint32), zero (uint32)
//	2 metadata        16 bytes: member ID, cluster ID
//	3 hard state      24 bytes: term, vote, commit
//	4 entry           17+len(data) bytes: index, term, type (1 byte), data
//	5 snapshot marker 16 bytes: index, term
//	6 install marker  16 bytes: index, term (a snapshot that replaced the log)
//
// Type 0 is never written. A decoder accepts only canonical frames (exact
// payload sizes, zero reserved bytes and padding), so everything it accepts
// re-encodes to the same bytes; FuzzDecodeRecord checks this.
//
// # What is durable
//
// Save and SaveSnapshot encode all their records into one buffer, write it
// with one pwrite at the end of the last segment and fdatasync the file.
// When they return nil, those records and everything before them survive a
// crash. Before that, nothing may be acknowledged: a crash can keep any part
// of an unsynced write. After any failed write, fsync, rename or close the
// WAL is broken (what the file holds past the last sync is unknown, so
// nothing may be appended after it): every later call returns that error;
// Close still releases the file and lock. Reopen to recover.
//
// # Torn tails and corruption
//
// Open reads the segments in order and verifies every frame. Where a frame
// fails to verify, the data that follows decides what it was:
//
//   - All bytes from the frame to the end of the file are zero: the end of
//     the written data (preallocated space). This is the normal end.
//   - In the last segment, the frame runs past the end of the file, or
//     nothing but zeros follows the frame (its header's extent if the header
//     is damaged): a torn final write. It, and everything after it, is cut
//     off (the file is truncated there and re-extended to its preallocated
//     size) and a warning is logged. Only writes that were never
//     acknowledged can be lost this way; a damaged last record that was
//     acknowledged looks the same and is lost too.
//   - Anything else (written data after the failing frame, a failure in a
//     segment that is not the last, a zero header followed by data, a broken
//     head or chain, a missing segment): a *CorruptError naming the file and
//     the frame's byte offset, matched by errors.Is(err, ErrCorrupt). The
//     WAL does not try to repair it. A crash that persists later pages of a
//     write but not earlier ones is reported this way too, since it cannot
//     be told from damage to acknowledged data.
//
// A last segment shorter than its preallocated size (truncated by a tool or
// a filesystem) is re-extended with zeros and appended to normally.
//
// # Replay
//
// Open(dir, from, opts) starts at the newest segment whose first index is
// at or below from.Index (or at segment 0 for the zero marker, which
// therefore fails once segments were released) and applies records in
// order:
//
//   - hard state: the last one seen wins (segment heads included);
//   - entry: an index at or below the last replayed one means raft
//     overwrote that suffix, so entries from that index on are dropped
//     before it is added; entries at or below from.Index are not returned;
//     an index that skips ahead is corruption;
//   - snapshot marker: the one equal to from must be seen, else
//     ErrSnapshotNotFound (ErrSnapshotMismatch if only another term was
//     found at that index). A marker beyond the last entry moves the log
//     forward (a follower installed a snapshot): later entries continue
//     after it, and replaying from an older marker fails with ErrIndexGap.
//   - install marker (InstallSnapshot): counts as a marker for from, and
//     drops every entry replayed so far, even those beyond its index: a
//     follower that installs its leader's snapshot discards its whole log,
//     and stale entries from an older term must not come back on restart.
//     Replaying from a marker older than an install fails with ErrIndexGap.
//
// Replay.Entries are consecutive from from.Index+1, and do not alias any
// buffer of the WAL.
//
// # Releasing segments
//
// ReleaseTo(index) deletes every segment older than the newest segment
// whose first index is at or below index, then fsyncs the directory. That
// segment holds (or precedes) the marker at index and every entry above
// index, so a replay from that marker still works; the last segment is
// never deleted. With first indexes increasing this is the rule "a segment
// goes if the next segment exists and starts at or below index". The caller
// must have saved a marker at index (ReleaseTo refuses an index above the
// latest marker) and made the state it stands for durable elsewhere.
package wal
