package wal

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestCrashCuts simulates a crash during the last write of a log: for every
// byte offset inside the last record, the segment is cut there (truncated,
// as a filesystem that lost the write's tail leaves it, or zero-filled from
// there on, as a preallocated file looks). Reopening must keep every record
// before the last, drop the last, and accept appends that survive another
// reopen.
func TestCrashCuts(t *testing.T) {
	const segSize = 1024
	prefixHS := HardState{Term: 1, Vote: 1, Commit: 15}
	prefix := ents(1, 20, 1)
	tests := []struct {
		name string
		// last writes the final record and returns the state a replay from
		// zero shows with it.
		last     func(t *testing.T, w *WAL) (HardState, []Entry)
		freshSeg bool // cut a new segment just before the last record
	}{
		{name: "entry", last: func(t *testing.T, w *WAL) (HardState, []Entry) {
			mustSave(t, w, HardState{}, ents(21, 21, 1))
			return prefixHS, ents(1, 21, 1)
		}},
		{name: "hard state", last: func(t *testing.T, w *WAL) (HardState, []Entry) {
			mustSave(t, w, HardState{Term: 2, Vote: 3, Commit: 20}, nil)
			return HardState{Term: 2, Vote: 3, Commit: 20}, prefix
		}},
		{name: "snapshot marker", last: func(t *testing.T, w *WAL) (HardState, []Entry) {
			mustSnap(t, w, Snapshot{Index: 12, Term: 1})
			return prefixHS, prefix
		}},
		{name: "overwriting entry", last: func(t *testing.T, w *WAL) (HardState, []Entry) {
			mustSave(t, w, HardState{}, ents(18, 18, 2))
			return prefixHS, cat(ents(1, 17, 1), ents(18, 18, 2))
		}},
		{name: "first record of a fresh segment", freshSeg: true, last: func(t *testing.T, w *WAL) (HardState, []Entry) {
			mustSave(t, w, HardState{}, ents(21, 21, 1))
			return prefixHS, ents(1, 21, 1)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := t.TempDir()
			opts := Options{SegmentSize: segSize}
			w := mustCreate(t, src, opts)
			mustSave(t, w, prefixHS, nil)
			saveBatches(t, w, prefix, 3)
			if tt.freshSeg {
				if err := w.makeRoom(w.tailSize - w.off + 1); err != nil {
					t.Fatal(err)
				}
			}
			if len(w.segs) < 2 {
				t.Fatalf("test setup: want several segments, have %d", len(w.segs))
			}
			start := w.off
			fullHS, full := tt.last(t, w)
			end := w.off
			lastName := w.segs[len(w.segs)-1].name
			mustClose(t, w)
			orig, err := os.ReadFile(filepath.Join(src, lastName))
			if err != nil {
				t.Fatal(err)
			}

			for _, mode := range []string{"truncate", "zero-fill"} {
				for cut := start; cut < end; cut++ {
					dir := copyDir(t, src)
					path := filepath.Join(dir, lastName)
					if mode == "truncate" {
						if err := os.Truncate(path, cut); err != nil {
							t.Fatal(err)
						}
					} else {
						modifyFile(t, path, func(b []byte) []byte { clear(b[cut:]); return b })
					}
					// Zero-filling the frame's padding changes nothing.
					intact := mode == "zero-fill" && allZero(orig[cut:end])
					wantHS, want := prefixHS, prefix
					if intact {
						wantHS, want = fullHS, full
					}

					w, rp, err := Open(dir, Snapshot{}, opts)
					if err != nil {
						t.Fatalf("%s at %d (record %d..%d): Open: %v", mode, cut, start, end, err)
					}
					if rp.HardState != wantHS {
						t.Fatalf("%s at %d: hard state %+v, want %+v", mode, cut, rp.HardState, wantHS)
					}
					checkEntries(t, rp.Entries, want)
					if fi, err := os.Stat(path); err != nil || fi.Size() != segSize {
						t.Fatalf("%s at %d: last segment not re-extended to %d bytes: %v %v", mode, cut, segSize, fi.Size(), err)
					}

					next := lastIndex(want) + 1
					more := ents(next, next+1, 7)
					mustSave(t, w, HardState{Term: 7, Commit: next}, more)
					mustClose(t, w)
					w, rp = mustOpen(t, dir, Snapshot{}, opts)
					checkEntries(t, rp.Entries, cat(want, more))
					if rp.HardState != (HardState{Term: 7, Commit: next}) {
						t.Fatalf("%s at %d: hard state after append %+v", mode, cut, rp.HardState)
					}
					mustClose(t, w)
				}
			}
		})
	}
}

// TestCorruption damages a log in places a crash cannot explain and checks
// that Open reports a *CorruptError naming the file and the record's offset.
func TestCorruption(t *testing.T) {
	const segSize = 1024
	opts := Options{SegmentSize: segSize}
	src := t.TempDir()
	w := mustCreate(t, src, opts)
	mustSave(t, w, HardState{Term: 1, Vote: 1}, nil)
	saveBatches(t, w, ents(1, 60, 1), 4)
	mustClose(t, w)
	segs := segmentPaths(t, src)
	if len(segs) < 3 {
		t.Fatalf("test setup: %d segments", len(segs))
	}
	frames := func(path string) []int {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return frameOffsets(b)
	}
	lastFrames := frames(segs[len(segs)-1])
	if len(lastFrames) < 3+4 {
		t.Fatalf("test setup: last segment has %d frames", len(lastFrames))
	}
	mid := lastFrames[4] // a body record with valid records after it
	firstFrames := frames(segs[0])
	lastOfFirst := firstFrames[len(firstFrames)-1]

	flip := func(at int) func([]byte) []byte {
		return func(b []byte) []byte { b[at] ^= 0x20; return b }
	}
	tests := []struct {
		name   string
		seg    int // index into segs; -1 = last
		damage func(dir string, path string)
		file   int // which segment the error must name
		offset int
	}{
		{name: "entry payload mid-log", seg: -1, offset: mid,
			damage: func(_, p string) { modifyFile(t, p, flip(mid+frameHeaderSize+20)) }},
		{name: "entry index mid-log", seg: -1, offset: mid,
			damage: func(_, p string) { modifyFile(t, p, flip(mid+frameHeaderSize)) }},
		{name: "frame length byte mid-log", seg: -1, offset: mid,
			damage: func(_, p string) { modifyFile(t, p, flip(mid)) }},
		{name: "frame length high byte mid-log", seg: -1, offset: mid,
			damage: func(_, p string) { modifyFile(t, p, flip(mid+3)) }},
		{name: "frame type byte mid-log", seg: -1, offset: mid,
			damage: func(_, p string) { modifyFile(t, p, flip(mid+4)) }},
		{name: "frame CRC byte mid-log", seg: -1, offset: mid,
			damage: func(_, p string) { modifyFile(t, p, flip(mid+9)) }},
		{name: "frame header check byte mid-log", seg: -1, offset: mid,
			damage: func(_, p string) { modifyFile(t, p, flip(mid+14)) }},
		{name: "zeroed record mid-log", seg: -1, offset: mid,
			damage: func(_, p string) {
				modifyFile(t, p, func(b []byte) []byte { clear(b[mid:lastFrames[5]]); return b })
			}},
		{name: "hard state in a segment head", seg: -1, offset: lastFrames[2],
			damage: func(_, p string) { modifyFile(t, p, flip(lastFrames[2]+frameHeaderSize+1)) }},
		{name: "last record of a non-last segment", seg: 0, offset: lastOfFirst,
			damage: func(_, p string) { modifyFile(t, p, flip(lastOfFirst+frameHeaderSize+2)) }},
		{name: "zeroed tail of a non-last segment", seg: 0, offset: 0,
			damage: func(_, p string) {
				modifyFile(t, p, func(b []byte) []byte { clear(b[lastOfFirst:]); return b })
			}},
		{name: "segment header of a later segment", seg: 1, offset: 0,
			damage: func(_, p string) { modifyFile(t, p, flip(frameHeaderSize+17)) }},
		{name: "missing middle segment", seg: 1, offset: 0,
			damage: func(_, p string) {
				if err := os.Remove(p); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "file name disagrees with header", seg: -1, offset: 0,
			damage: func(dir, p string) {
				s, _ := parseSegmentName(filepath.Base(p))
				if err := os.Rename(p, filepath.Join(dir, segmentName(s.seq, s.first+1))); err != nil {
					t.Fatal(err)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := copyDir(t, src)
			paths := segmentPaths(t, dir)
			i := tt.seg
			if i < 0 {
				i = len(paths) + i
			}
			tt.damage(dir, paths[i])
			w, _, err := Open(dir, Snapshot{}, opts)
			if err == nil {
				mustClose(t, w)
				t.Fatal("Open succeeded on a corrupt log")
			}
			var ce *CorruptError
			if !errors.As(err, &ce) || !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Open: %v, want a *CorruptError", err)
			}
			t.Log(err)
			wantFile := paths[i]
			switch tt.name {
			case "zeroed tail of a non-last segment", "missing middle segment":
				wantFile = paths[i+1] // detected where the next segment fails to continue
			case "file name disagrees with header":
				wantFile = segmentPaths(t, dir)[i]
			}
			if ce.File != wantFile || ce.Offset != int64(tt.offset) {
				t.Fatalf("corruption reported in %s at %d (%s), want %s at %d", ce.File, ce.Offset, ce.Reason, wantFile, tt.offset)
			}
			// The lock was released: a repaired log could be opened again.
			if _, _, err2 := Open(dir, Snapshot{}, opts); err2 == nil || errors.Is(err2, ErrLocked) {
				t.Fatalf("second Open: %v", err2)
			}
		})
	}
}

// A damaged last record with nothing written after it is indistinguishable
// from a torn write: it is cut off, not reported.
func TestDamagedFinalRecordIsATornTail(t *testing.T) {
	dir := t.TempDir()
	w := mustCreate(t, dir, Options{})
	mustSave(t, w, HardState{}, ents(1, 5, 1))
	start := w.off
	mustSave(t, w, HardState{}, ents(6, 6, 1))
	mustClose(t, w)
	modifyFile(t, segmentPaths(t, dir)[0], func(b []byte) []byte { b[start+frameHeaderSize+3] ^= 1; return b })
	w, rp := mustOpen(t, dir, Snapshot{}, Options{})
	defer mustClose(t, w)
	checkEntries(t, rp.Entries, ents(1, 5, 1))
}
