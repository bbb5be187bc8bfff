package wal

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// FuzzDecodeRecord feeds arbitrary bytes and chain seeds to the record
// decoder. It must never panic, and whatever it accepts must re-encode to
// exactly the bytes it consumed (so no two encodings mean the same record,
// and nothing the decoder accepts is lost on a rewrite).
func FuzzDecodeRecord(f *testing.F) {
	// The seed corpus is committed under testdata/fuzz/FuzzDecodeRecord.
	f.Fuzz(func(t *testing.T, data []byte, seed uint32) {
		checkDecode(t, data, seed)
		// Random bytes almost never carry valid checksums, so also decode
		// the input with its checksums recomputed: that drives the
		// payload checks (lengths, magic, reserved bytes, padding).
		if len(data) >= frameHeaderSize {
			fixed := bytes.Clone(data)
			n := int(binary.LittleEndian.Uint32(fixed))
			if frameHeaderSize+n <= len(fixed) {
				sealFrame(fixed, recordType(fixed[4]), n, seed)
				copy(fixed[5:8], data[5:8]) // keep the reserved bytes as fuzzed
				binary.LittleEndian.PutUint32(fixed[12:], crc32.Checksum(fixed[:12], castagnoli))
				checkDecode(t, fixed, seed)
			}
		}
	})
}

func checkDecode(t *testing.T, data []byte, seed uint32) {
	rec, n, fault := decodeRecord(data, seed)
	if fault != faultNone {
		if fault == faultShort && n != 0 && n <= len(data) {
			t.Fatalf("short frame of %d bytes in %d bytes of data", n, len(data))
		}
		if (fault == faultCRC || fault == faultPayload) && (n < frameHeaderSize || n > len(data)) {
			t.Fatalf("%s with frame size %d in %d bytes", fault, n, len(data))
		}
		return
	}
	if n < frameHeaderSize || n > len(data) || n%frameAlign != 0 {
		t.Fatalf("decoded a frame of %d bytes from %d bytes", n, len(data))
	}
	out, crc := appendRecord(nil, seed, &rec)
	if !bytes.Equal(out, data[:n]) {
		t.Fatalf("%s record re-encodes differently:\n got %x\nwant %x", rec.typ, out, data[:n])
	}
	if crc != rec.crc {
		t.Fatalf("re-encoded chain value %08x, decoded %08x", crc, rec.crc)
	}
}

type fuzzSeed struct {
	name  string
	data  []byte
	seed  uint32
	fault frameFault // what decodeRecord must say about it
}

// fuzzSeeds are the committed seed corpus: a valid record of each type and
// a few damaged ones. TestFuzzCorpus keeps testdata/ in step with them.
func fuzzSeeds() []fuzzSeed {
	const seed = 0x5eed1e55
	enc := func(r record) []byte {
		b, _ := appendRecord(nil, seed, &r)
		return b
	}
	entry := enc(record{typ: recEntry, entry: Entry{Index: 42, Term: 7, Type: 1, Data: []byte("put key=value")}})
	damage := func(b []byte, at int, x byte) []byte {
		b = bytes.Clone(b)
		b[at] ^= x
		return b
	}
	padded := bytes.Clone(entry)
	padded[len(padded)-1] = 1 // non-zero padding byte
	return []fuzzSeed{
		{"segment-header", enc(record{typ: recSegment, seg: segmentHeader{Seq: 3, FirstIndex: 1001, PrevCRC: seed}}), seed, faultNone},
		{"metadata", enc(record{typ: recMetadata, md: Metadata{MemberID: 0x8e9e05c52164694d, ClusterID: 0xcdf818194e3a8c32}}), seed, faultNone},
		{"hard-state", enc(record{typ: recHardState, hs: HardState{Term: 7, Vote: 2, Commit: 40}}), seed, faultNone},
		{"snapshot", enc(record{typ: recSnapshot, snap: Snapshot{Index: 40, Term: 6}}), seed, faultNone},
		{"install", enc(record{typ: recInstall, snap: Snapshot{Index: 90, Term: 8}}), seed, faultNone},
		{"entry", entry, seed, faultNone},
		{"entry-empty", enc(record{typ: recEntry, entry: Entry{Index: 1, Term: 1}}), seed, faultNone},
		{"two-records", append(bytes.Clone(entry), enc(record{typ: recSnapshot, snap: Snapshot{Index: 1, Term: 1}})...), seed, faultNone},
		{"bad-crc-payload-flip", damage(entry, frameHeaderSize+3, 0x10), seed, faultCRC},
		{"bad-crc-wrong-seed", entry, seed + 1, faultCRC},
		{"bad-header-length-flip", damage(entry, 0, 0x01), seed, faultHeader},
		{"bad-padding", padded, seed, faultPayload},
		{"truncated", entry[:len(entry)-9], seed, faultShort},
		{"zero-header", make([]byte, 32), seed, faultZero},
	}
}

var updateCorpus = flag.Bool("update-corpus", false, "rewrite testdata/fuzz/FuzzDecodeRecord from fuzzSeeds")

// TestFuzzCorpus checks that each seed decodes as its name says and that the
// committed corpus files hold exactly the seeds.
func TestFuzzCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecodeRecord")
	for _, c := range fuzzSeeds() {
		if _, _, fault := decodeRecord(c.data, c.seed); fault != c.fault {
			t.Errorf("seed %s: decodes with %q, want %q", c.name, fault, c.fault)
		}
		file := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\nuint32(%d)\n", strconv.Quote(string(c.data)), c.seed)
		path := filepath.Join(dir, c.name)
		if *updateCorpus {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(file), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != file {
			t.Errorf("corpus file %s is missing or stale (err %v); run go test -run TestFuzzCorpus -update-corpus", path, err)
		}
	}
}
