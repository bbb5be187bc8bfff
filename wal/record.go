package wal

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"slices"
)

// recordType is the byte at offset 4 of every frame header.
type recordType uint8

const (
	recInvalid   recordType = 0 // never written; a zero header marks the end of data
	recSegment   recordType = 1 // segment header: magic, version, sequence, first index, chain seed
	recMetadata  recordType = 2 // Metadata
	recHardState recordType = 3 // HardState
	recEntry     recordType = 4 // Entry
	recSnapshot  recordType = 5 // Snapshot marker
	recInstall   recordType = 6 // Snapshot marker that replaces the whole log (a follower's install)
)

func (t recordType) String() string {
	switch t {
	case recSegment:
		return "segment header"
	case recMetadata:
		return "metadata"
	case recHardState:
		return "hard state"
	case recEntry:
		return "entry"
	case recSnapshot:
		return "snapshot marker"
	case recInstall:
		return "snapshot install marker"
	}
	return "invalid"
}

// Frame layout; doc.go describes it byte by byte.
const (
	frameHeaderSize = 16
	frameAlign      = 8

	segmentPayloadSize   = 40
	metadataPayloadSize  = 16
	hardStatePayloadSize = 24
	snapshotPayloadSize  = 16
	entryFixedSize       = 17 // index, term, type; the data follows

	// maxPayload bounds a record's payload so that a length that passes
	// the header check can never make a reader allocate or skip absurdly.
	maxPayload = 1 << 30

	// MaxEntrySize is the largest Entry.Data that Save accepts.
	MaxEntrySize = maxPayload - entryFixedSize

	// headSize is the size of the head every segment starts with: the
	// segment header, the metadata and the hard state records.
	headSize = 3*frameHeaderSize + segmentPayloadSize + metadataPayloadSize + hardStatePayloadSize

	formatVersion = 1
)

var (
	castagnoli   = crc32.MakeTable(crc32.Castagnoli)
	segmentMagic = [8]byte{'C', 'A', 'I', 'R', 'N', 'W', 'A', 'L'}
)

// segmentHeader is the payload of the first record of every segment.
type segmentHeader struct {
	Seq        uint64 // sequence number, as in the file name
	FirstIndex uint64 // index of the first entry the segment may hold, as in the file name
	PrevCRC    uint32 // chain value at the end of the previous segment (0 for the first)
}

// record is one decoded frame. Only the field named by typ is meaningful;
// entry.Data aliases the decoded buffer.
type record struct {
	typ   recordType
	crc   uint32 // chain value after this record
	entry Entry
	hs    HardState
	snap  Snapshot
	md    Metadata
	seg   segmentHeader
}

// frameSize is the on-disk size of a frame carrying n payload bytes.
func frameSize(n int) int {
	return frameHeaderSize + (n+frameAlign-1)&^(frameAlign-1)
}

// payloadSize returns the payload length the record will be encoded with.
func (r *record) payloadSize() int {
	switch r.typ {
	case recSegment:
		return segmentPayloadSize
	case recMetadata:
		return metadataPayloadSize
	case recHardState:
		return hardStatePayloadSize
	case recSnapshot, recInstall:
		return snapshotPayloadSize
	case recEntry:
		return entryFixedSize + len(r.entry.Data)
	}
	panic("wal: encoding a record of invalid type")
}

// appendRecord appends r's frame to buf, chained from seed, and returns the
// extended buffer and the chain value after the record. It never allocates
// when buf has room.
func appendRecord(buf []byte, seed uint32, r *record) ([]byte, uint32) {
	n := r.payloadSize()
	start := len(buf)
	size := frameSize(n)
	buf = slices.Grow(buf, size)[:start+size]
	frame := buf[start:]
	p := frame[frameHeaderSize : frameHeaderSize+n]
	le := binary.LittleEndian
	switch r.typ {
	case recSegment:
		copy(p[0:8], segmentMagic[:])
		le.PutUint32(p[8:], formatVersion)
		le.PutUint32(p[12:], 0)
		le.PutUint64(p[16:], r.seg.Seq)
		le.PutUint64(p[24:], r.seg.FirstIndex)
		le.PutUint32(p[32:], r.seg.PrevCRC)
		le.PutUint32(p[36:], 0)
	case recMetadata:
		le.PutUint64(p[0:], r.md.MemberID)
		le.PutUint64(p[8:], r.md.ClusterID)
	case recHardState:
		le.PutUint64(p[0:], r.hs.Term)
		le.PutUint64(p[8:], r.hs.Vote)
		le.PutUint64(p[16:], r.hs.Commit)
	case recSnapshot, recInstall:
		le.PutUint64(p[0:], r.snap.Index)
		le.PutUint64(p[8:], r.snap.Term)
	case recEntry:
		le.PutUint64(p[0:], r.entry.Index)
		le.PutUint64(p[8:], r.entry.Term)
		p[16] = r.entry.Type
		copy(p[entryFixedSize:], r.entry.Data)
	}
	clear(frame[frameHeaderSize+n:]) // padding; buf may hold old bytes
	return buf, sealFrame(frame, r.typ, n, seed)
}

// sealFrame fills in the header of a frame whose payload is already in
// place and returns the frame's chained CRC.
func sealFrame(frame []byte, typ recordType, n int, seed uint32) uint32 {
	h := frame[:frameHeaderSize]
	le := binary.LittleEndian
	le.PutUint32(h[0:], uint32(n))
	h[4] = byte(typ)
	h[5], h[6], h[7] = 0, 0, 0
	crc := crc32.Update(seed, castagnoli, h[:8])
	crc = crc32.Update(crc, castagnoli, frame[frameHeaderSize:frameHeaderSize+n])
	le.PutUint32(h[8:], crc)
	le.PutUint32(h[12:], crc32.Checksum(h[:12], castagnoli))
	return crc
}

// frameFault says why a frame did not decode. The scanner uses the kind,
// together with what follows the frame, to tell a torn tail from corruption.
type frameFault uint8

const (
	faultNone    frameFault = iota
	faultShort              // the data ends before the frame does
	faultZero               // the header is sixteen zero bytes: no record was written here
	faultHeader             // header check, reserved bytes, type or length invalid
	faultCRC                // the chained CRC does not match
	faultPayload            // the CRC matches but the payload is malformed
)

func (f frameFault) String() string {
	switch f {
	case faultNone:
		return "ok"
	case faultShort:
		return "frame runs past the end of the file"
	case faultZero:
		return "zero header"
	case faultHeader:
		return "frame header check failed"
	case faultCRC:
		return "record CRC mismatch"
	case faultPayload:
		return "malformed record payload"
	}
	return "unknown fault"
}

// validPayloadSize reports whether n is a legal payload length for t.
func validPayloadSize(t recordType, n uint32) bool {
	switch t {
	case recSegment:
		return n == segmentPayloadSize
	case recMetadata:
		return n == metadataPayloadSize
	case recHardState:
		return n == hardStatePayloadSize
	case recSnapshot, recInstall:
		return n == snapshotPayloadSize
	case recEntry:
		return n >= entryFixedSize && n <= maxPayload
	}
	return false
}

// decodeRecord decodes the frame at the start of b, chained from seed. On
// success it returns the record and the frame's size. On failure it returns
// the fault and, when the header was valid, the frame's size (which may
// exceed len(b) for faultShort); otherwise 0. It does not allocate: an
// entry's Data aliases b.
//
// Whatever decodes re-encodes to the same bytes: reserved bytes and padding
// must be zero and fixed-size payloads must have their exact size.
func decodeRecord(b []byte, seed uint32) (record, int, frameFault) {
	var r record
	if len(b) < frameHeaderSize {
		return r, 0, faultShort
	}
	h := b[:frameHeaderSize]
	le := binary.LittleEndian
	if le.Uint64(h[0:]) == 0 && le.Uint64(h[8:]) == 0 {
		return r, 0, faultZero
	}
	if crc32.Checksum(h[:12], castagnoli) != le.Uint32(h[12:]) {
		return r, 0, faultHeader
	}
	n := le.Uint32(h[0:])
	typ := recordType(h[4])
	if h[5]|h[6]|h[7] != 0 || !validPayloadSize(typ, n) {
		return r, 0, faultHeader
	}
	size := frameSize(int(n))
	if len(b) < size {
		return r, size, faultShort
	}
	p := b[frameHeaderSize : frameHeaderSize+int(n)]
	crc := crc32.Update(seed, castagnoli, h[:8])
	crc = crc32.Update(crc, castagnoli, p)
	if crc != le.Uint32(h[8:]) {
		return r, size, faultCRC
	}
	if !allZero(b[frameHeaderSize+int(n) : size]) {
		return r, size, faultPayload
	}
	r.typ = typ
	r.crc = crc
	switch typ {
	case recSegment:
		if !bytes.Equal(p[0:8], segmentMagic[:]) || le.Uint32(p[8:]) != formatVersion ||
			le.Uint32(p[12:]) != 0 || le.Uint32(p[36:]) != 0 {
			return record{}, size, faultPayload
		}
		r.seg = segmentHeader{Seq: le.Uint64(p[16:]), FirstIndex: le.Uint64(p[24:]), PrevCRC: le.Uint32(p[32:])}
	case recMetadata:
		r.md = Metadata{MemberID: le.Uint64(p[0:]), ClusterID: le.Uint64(p[8:])}
	case recHardState:
		r.hs = HardState{Term: le.Uint64(p[0:]), Vote: le.Uint64(p[8:]), Commit: le.Uint64(p[16:])}
	case recSnapshot, recInstall:
		r.snap = Snapshot{Index: le.Uint64(p[0:]), Term: le.Uint64(p[8:])}
	case recEntry:
		r.entry = Entry{
			Index: le.Uint64(p[0:]),
			Term:  le.Uint64(p[8:]),
			Type:  p[16],
			Data:  p[entryFixedSize:len(p):len(p)],
		}
	}
	return r, size, faultNone
}

// zeroBlock is compared against in allZero: bytes.Equal runs at memory
// speed, and Open checks up to a whole segment's tail.
var zeroBlock [64 << 10]byte

// allZero reports whether every byte of b is zero.
func allZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeroBlock))
		if !bytes.Equal(b[:n], zeroBlock[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}
