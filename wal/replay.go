package wal

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"path/filepath"
)

// replayer rebuilds the log's state from segment bytes. It does no I/O:
// Open feeds it one segment at a time, which is also how tests drive it.
//
// Invariants while replaying:
//   - last is the index of the last entry of the log as it stood after the
//     records seen so far (overwrites and snapshot jumps included); before
//     the first record of the first segment read it is that segment's first
//     index - 1, which is exactly the log's last index when it was cut.
//   - ents holds the entries with index > from.Index, consecutive, ending
//     at last whenever last > from.Index.
type replayer struct {
	dir     string
	from    Snapshot
	md      Metadata
	mdSet   bool
	hs      HardState
	ents    []Entry
	last    uint64
	crc     uint32 // chain value after the last record read
	chained bool   // crc is valid (a previous segment was read)
	found   bool   // a marker equal to from was seen
	other   bool   // a marker at from.Index with another term was seen
	maxSnap uint64 // highest marker index seen
	arena   []byte // backing store for replayed entry data
}

// scanResult is where a segment's valid records end. If torn is set, the
// bytes from end on are a torn final write to be cut off.
type scanResult struct {
	end  int
	torn frameFault
}

// arenaChunk is the allocation unit for replayed entry data: entries share
// chunks instead of one allocation each, and never alias a segment buffer.
const arenaChunk = 1 << 20

func (r *replayer) copyData(d []byte) []byte {
	if len(d) == 0 {
		return nil
	}
	if len(d) > arenaChunk/4 {
		return bytes.Clone(d)
	}
	if cap(r.arena)-len(r.arena) < len(d) {
		r.arena = make([]byte, 0, arenaChunk)
	}
	s := len(r.arena)
	r.arena = append(r.arena, d...)
	return r.arena[s:len(r.arena):len(r.arena)]
}

// scan replays the records of one segment whose whole contents are b.
// isLast says whether this is the newest segment, the only one that may end
// in a torn write. It returns a *CorruptError for damage it cannot
// attribute to a torn tail, and other errors for a log that cannot serve
// the requested replay.
func (r *replayer) scan(seg segment, b []byte, isLast bool) (scanResult, error) {
	path := filepath.Join(r.dir, seg.name)
	corrupt := func(off int, format string, args ...any) error {
		return &CorruptError{File: path, Offset: int64(off), Reason: fmt.Sprintf(format, args...)}
	}

	// The head: segment header, metadata, hard state. It was fsynced before
	// the file got its name, so any fault in it is corruption.
	seed := r.crc
	if !r.chained && len(b) >= frameHeaderSize+segmentPayloadSize {
		// The first segment read carries its chain seed in its header.
		seed = binary.LittleEndian.Uint32(b[frameHeaderSize+32:])
	}
	off := 0
	wants := [...]recordType{recSegment, recMetadata, recHardState}
	for _, want := range wants {
		rec, n, fault := decodeRecord(b[off:], seed)
		if fault == faultCRC && want == recSegment {
			// Say so if the header is intact but chained to another value:
			// the previous segment lost records or is not this one's.
			own := binary.LittleEndian.Uint32(b[frameHeaderSize+32:])
			if _, _, f := decodeRecord(b, own); f == faultNone {
				return scanResult{}, corrupt(off, "segment does not continue the previous one (it ends at chain value %08x, this header expects %08x)", seed, own)
			}
		}
		if fault != faultNone {
			return scanResult{}, corrupt(off, "segment head: %s reading %s", fault, want)
		}
		if rec.typ != want {
			return scanResult{}, corrupt(off, "segment head: found %s record, want %s", rec.typ, want)
		}
		switch rec.typ {
		case recSegment:
			if rec.seg.Seq != seg.seq || rec.seg.FirstIndex != seg.first {
				return scanResult{}, corrupt(off, "segment header says sequence %d, first index %d; the file name disagrees", rec.seg.Seq, rec.seg.FirstIndex)
			}
			if rec.seg.PrevCRC != seed {
				return scanResult{}, corrupt(off, "segment header's chain seed %08x is not the value it was chained from (%08x)", rec.seg.PrevCRC, seed)
			}
		case recMetadata:
			if r.mdSet && rec.md != r.md {
				return scanResult{}, corrupt(off, "metadata %+v differs from earlier segments' %+v", rec.md, r.md)
			}
			r.md, r.mdSet = rec.md, true
		case recHardState:
			r.hs = rec.hs
		}
		seed = rec.crc
		off += n
	}

	crc := seed
	for off < len(b) {
		rest := b[off:]
		rec, n, fault := decodeRecord(rest, crc)
		if fault != faultNone {
			if allZero(rest) {
				break // the end of written data: preallocated zeros follow
			}
			if fault == faultZero {
				return scanResult{}, corrupt(off, "zero frame header followed by written data")
			}
			if !isLast {
				return scanResult{}, corrupt(off, "%s", fault)
			}
			// A torn final write leaves a frame that does not decode with
			// nothing written after it. Where the frame ends is known if
			// its header verified; otherwise only the header's extent is.
			extent := n
			if extent == 0 {
				extent = frameHeaderSize
			}
			if fault == faultShort || allZero(rest[min(extent, len(rest)):]) {
				r.crc, r.chained = crc, true
				return scanResult{end: off, torn: fault}, nil
			}
			return scanResult{}, corrupt(off, "%s, with written data after the record", fault)
		}
		switch rec.typ {
		case recHardState:
			r.hs = rec.hs
		case recEntry:
			if reason := r.entry(&rec.entry); reason != "" {
				return scanResult{}, corrupt(off, "%s", reason)
			}
		case recSnapshot:
			if err := r.snapshot(rec.snap); err != nil {
				return scanResult{}, fmt.Errorf("wal: open: %s at offset %d: %w", path, off, err)
			}
		case recInstall:
			if err := r.install(rec.snap); err != nil {
				return scanResult{}, fmt.Errorf("wal: open: %s at offset %d: %w", path, off, err)
			}
		default:
			return scanResult{}, corrupt(off, "%s record outside a segment head", rec.typ)
		}
		crc = rec.crc
		off += n
	}
	r.crc, r.chained = crc, true
	return scanResult{end: off}, nil
}

// entry applies one entry record; a non-empty result says why the log is
// corrupt.
func (r *replayer) entry(e *Entry) string {
	if e.Index == 0 || e.Index > r.last+1 {
		return fmt.Sprintf("entry index %d does not follow the log's last index %d", e.Index, r.last)
	}
	if e.Index <= r.last && len(r.ents) > 0 {
		// Raft replaced the suffix from e.Index on.
		first := r.ents[0].Index
		if e.Index <= first {
			r.ents = r.ents[:0]
		} else if e.Index <= r.ents[len(r.ents)-1].Index {
			r.ents = r.ents[:e.Index-first]
		}
	}
	r.last = e.Index
	if e.Index <= r.from.Index {
		return ""
	}
	if len(r.ents) == 0 && e.Index != r.from.Index+1 {
		return fmt.Sprintf("entry index %d leaves a gap after the marker at %d", e.Index, r.from.Index)
	}
	r.ents = append(r.ents, Entry{Index: e.Index, Term: e.Term, Type: e.Type, Data: r.copyData(e.Data)})
	return ""
}

// marker notes a marker record of either kind.
func (r *replayer) marker(s Snapshot) {
	r.maxSnap = max(r.maxSnap, s.Index)
	if r.from != (Snapshot{}) && s.Index == r.from.Index {
		if s.Term == r.from.Term {
			r.found = true
		} else {
			r.other = true
		}
	}
}

// install applies an install marker: the log was replaced by the snapshot,
// so every entry before the record is gone, including stale entries beyond
// the snapshot's index that an older leader had sent.
func (r *replayer) install(s Snapshot) error {
	r.marker(s)
	if s.Index > r.from.Index {
		return fmt.Errorf("replay from index %d: the log was replaced by a snapshot at %d; open from that marker: %w",
			r.from.Index, s.Index, ErrIndexGap)
	}
	r.ents = r.ents[:0]
	r.last = s.Index
	return nil
}

// snapshot applies one marker record.
func (r *replayer) snapshot(s Snapshot) error {
	r.marker(s)
	if s.Index > r.last {
		// The log jumps forward: a follower installed a snapshot past its
		// last entry, and the log continues after the marker.
		if s.Index > r.from.Index {
			return fmt.Errorf("replay from index %d: the log skips from index %d to a snapshot at %d; open from that marker: %w",
				r.from.Index, r.last, s.Index, ErrIndexGap)
		}
		r.ents = r.ents[:0]
		r.last = s.Index
	}
	return nil
}
