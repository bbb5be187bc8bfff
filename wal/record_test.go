package wal

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"testing"
)

func TestRecordRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		rec  record
		size int // frame size on disk
	}{
		{"segment header", record{typ: recSegment, seg: segmentHeader{Seq: 9, FirstIndex: 1 << 40, PrevCRC: 0xdeadbeef}}, 56},
		{"metadata", record{typ: recMetadata, md: Metadata{MemberID: 1, ClusterID: 2}}, 32},
		{"hard state", record{typ: recHardState, hs: HardState{Term: 3, Vote: 4, Commit: 5}}, 40},
		{"snapshot", record{typ: recSnapshot, snap: Snapshot{Index: 6, Term: 7}}, 32},
		{"entry without data", record{typ: recEntry, entry: Entry{Index: 8, Term: 9, Type: 2}}, 40},
		{"entry, padded", record{typ: recEntry, entry: Entry{Index: 8, Term: 9, Data: []byte("abc")}}, 40},
		{"entry, exact fit", record{typ: recEntry, entry: Entry{Index: 8, Term: 9, Data: []byte("1234567")}}, 40},
		{"entry, one over", record{typ: recEntry, entry: Entry{Index: 8, Term: 9, Data: []byte("12345678")}}, 48},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const seed = 0x12345678
			// Encode into a reused buffer full of stale bytes: the
			// padding must still come out zero.
			buf := bytes.Repeat([]byte{0xff}, 80)
			buf, crc := appendRecord(buf[:8], seed, &tt.rec)
			frame := buf[8:]
			if len(frame) != tt.size {
				t.Fatalf("frame is %d bytes, want %d", len(frame), tt.size)
			}
			if got := binary.LittleEndian.Uint32(frame[8:]); got != crc {
				t.Fatalf("CRC field %08x, returned %08x", got, crc)
			}
			got, n, fault := decodeRecord(frame, seed)
			if fault != faultNone || n != tt.size || got.crc != crc || got.typ != tt.rec.typ {
				t.Fatalf("decode: %s, %d bytes, crc %08x, type %s", fault, n, got.crc, got.typ)
			}
			if got.seg != tt.rec.seg || got.md != tt.rec.md || got.hs != tt.rec.hs || got.snap != tt.rec.snap ||
				got.entry.Index != tt.rec.entry.Index || got.entry.Term != tt.rec.entry.Term ||
				got.entry.Type != tt.rec.entry.Type || string(got.entry.Data) != string(tt.rec.entry.Data) {
				t.Fatalf("decoded %+v, want %+v", got, tt.rec)
			}
			// The chain: the same bytes under another seed do not verify.
			if _, _, fault := decodeRecord(frame, seed+1); fault != faultCRC {
				t.Fatalf("decode with another seed: %s, want CRC mismatch", fault)
			}
			// Any shorter prefix is short, or zero; never a record.
			for i := 0; i < len(frame); i++ {
				if _, _, fault := decodeRecord(frame[:i], seed); fault != faultShort {
					t.Fatalf("prefix of %d bytes: %s", i, fault)
				}
			}
		})
	}
}

func TestHeadSize(t *testing.T) {
	head, _ := appendHead(nil, segmentHeader{Seq: 1, FirstIndex: 2}, testMD, HardState{Term: 1})
	if len(head) != headSize {
		t.Fatalf("head is %d bytes, headSize says %d", len(head), headSize)
	}
}

func TestDecodeFaults(t *testing.T) {
	good, _ := appendRecord(nil, 0, &record{typ: recHardState, hs: HardState{Term: 1}})
	reseal := func(mut func(b []byte)) []byte {
		b := append([]byte(nil), good...)
		mut(b)
		binary.LittleEndian.PutUint32(b[12:], crc32c(b[:12]))
		return b
	}
	tests := []struct {
		name string
		data []byte
		want frameFault
	}{
		{"empty", nil, faultShort},
		{"zeros", make([]byte, 40), faultZero},
		{"flipped check", func() []byte { b := append([]byte(nil), good...); b[13] ^= 1; return b }(), faultHeader},
		{"reserved byte set", reseal(func(b []byte) { b[6] = 1 }), faultHeader},
		{"unknown type", reseal(func(b []byte) { b[4] = 9 }), faultHeader},
		{"type zero", reseal(func(b []byte) { b[4] = 0 }), faultHeader},
		{"wrong length for type", reseal(func(b []byte) { b[0] = 16 }), faultHeader},
		{"payload flipped", func() []byte { b := append([]byte(nil), good...); b[20] ^= 1; return b }(), faultCRC},
		{"length past the data", reseal(func(b []byte) { b[4] = byte(recEntry); b[0] = 200 }), faultShort},
	}
	for _, tt := range tests {
		if _, _, got := decodeRecord(tt.data, 0); got != tt.want {
			t.Errorf("%s: %s, want %s", tt.name, got, tt.want)
		}
	}
}

func crc32c(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }
