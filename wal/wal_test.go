package wal

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		segSize int64
		build   func(t *testing.T, w *WAL)
		from    Snapshot
		wantHS  HardState
		want    []Entry
		minSegs int
	}{
		{
			name:  "empty log",
			build: func(t *testing.T, w *WAL) {},
		},
		{
			name: "hard state and entries",
			build: func(t *testing.T, w *WAL) {
				mustSave(t, w, HardState{Term: 1, Vote: 2}, ents(1, 3, 1))
				mustSave(t, w, HardState{Term: 1, Vote: 2, Commit: 3}, ents(4, 5, 1))
			},
			wantHS: HardState{Term: 1, Vote: 2, Commit: 3},
			want:   ents(1, 5, 1),
		},
		{
			name: "hard state only",
			build: func(t *testing.T, w *WAL) {
				mustSave(t, w, HardState{Term: 4, Vote: 1}, nil)
				mustSave(t, w, HardState{Term: 5, Vote: 3}, nil)
			},
			wantHS: HardState{Term: 5, Vote: 3},
		},
		{
			name: "empty entry data",
			build: func(t *testing.T, w *WAL) {
				mustSave(t, w, HardState{}, []Entry{{Index: 1, Term: 1}, {Index: 2, Term: 1, Type: 7}})
			},
			want: []Entry{{Index: 1, Term: 1}, {Index: 2, Term: 1, Type: 7}},
		},
		{
			name: "from a marker",
			build: func(t *testing.T, w *WAL) {
				mustSave(t, w, HardState{Term: 1, Commit: 8}, ents(1, 10, 1))
				mustSnap(t, w, Snapshot{Index: 5, Term: 1})
				mustSave(t, w, HardState{}, ents(11, 12, 1))
			},
			from:   Snapshot{Index: 5, Term: 1},
			wantHS: HardState{Term: 1, Commit: 8},
			want:   ents(6, 12, 1),
		},
		{
			name: "marker at the last entry",
			build: func(t *testing.T, w *WAL) {
				mustSave(t, w, HardState{Term: 1, Commit: 10}, ents(1, 10, 1))
				mustSnap(t, w, Snapshot{Index: 10, Term: 1})
			},
			from:   Snapshot{Index: 10, Term: 1},
			wantHS: HardState{Term: 1, Commit: 10},
		},
		{
			name: "overwritten suffix",
			build: func(t *testing.T, w *WAL) {
				mustSave(t, w, HardState{}, ents(1, 10, 1))
				mustSave(t, w, HardState{Term: 2}, ents(6, 8, 2))
			},
			wantHS: HardState{Term: 2},
			want:   cat(ents(1, 5, 1), ents(6, 8, 2)),
		},
		{
			name: "overwrite then extend, twice",
			build: func(t *testing.T, w *WAL) {
				mustSave(t, w, HardState{}, ents(1, 10, 1))
				mustSave(t, w, HardState{}, ents(6, 8, 2))
				mustSave(t, w, HardState{}, ents(9, 12, 2))
				mustSave(t, w, HardState{}, ents(12, 13, 3))
			},
			want: cat(ents(1, 5, 1), ents(6, 11, 2), ents(12, 13, 3)),
		},
		{
			name: "overwrite from the first entry",
			build: func(t *testing.T, w *WAL) {
				mustSave(t, w, HardState{}, ents(1, 5, 1))
				mustSave(t, w, HardState{}, ents(1, 3, 2))
			},
			want: ents(1, 3, 2),
		},
		{
			name: "overwrite below the marker's entries is replayed after it",
			build: func(t *testing.T, w *WAL) {
				mustSave(t, w, HardState{}, ents(1, 10, 1))
				mustSnap(t, w, Snapshot{Index: 4, Term: 1})
				mustSave(t, w, HardState{}, ents(7, 9, 2))
			},
			from: Snapshot{Index: 4, Term: 1},
			want: cat(ents(5, 6, 1), ents(7, 9, 2)),
		},
		{
			name:    "many segments",
			segSize: 1024,
			build: func(t *testing.T, w *WAL) {
				mustSave(t, w, HardState{Term: 1, Vote: 1}, nil)
				saveBatches(t, w, ents(1, 300, 1), 7)
				mustSave(t, w, HardState{Term: 1, Vote: 1, Commit: 300}, nil)
			},
			wantHS:  HardState{Term: 1, Vote: 1, Commit: 300},
			want:    ents(1, 300, 1),
			minSegs: 20,
		},
		{
			name:    "overwrite across segments",
			segSize: 1024,
			build: func(t *testing.T, w *WAL) {
				saveBatches(t, w, ents(1, 100, 1), 5)
				mustSave(t, w, HardState{Term: 2}, ents(40, 45, 2))
				saveBatches(t, w, ents(46, 60, 2), 4)
			},
			wantHS:  HardState{Term: 2},
			want:    cat(ents(1, 39, 1), ents(40, 60, 2)),
			minSegs: 5,
		},
		{
			name:    "marker after rollover",
			segSize: 1024,
			build: func(t *testing.T, w *WAL) {
				saveBatches(t, w, ents(1, 200, 1), 9)
				mustSnap(t, w, Snapshot{Index: 150, Term: 1})
				saveBatches(t, w, ents(201, 220, 1), 9)
			},
			from:    Snapshot{Index: 150, Term: 1},
			want:    ents(151, 220, 1),
			minSegs: 5,
		},
		{
			name:    "batch larger than a segment",
			segSize: 512,
			build: func(t *testing.T, w *WAL) {
				mustSave(t, w, HardState{}, ents(1, 3, 1))
				mustSave(t, w, HardState{Term: 1}, ents(4, 80, 1))
				mustSave(t, w, HardState{}, ents(81, 82, 1))
			},
			wantHS:  HardState{Term: 1},
			want:    ents(1, 82, 1),
			minSegs: 3,
		},
		{
			name: "marker beyond the last entry moves the log forward",
			build: func(t *testing.T, w *WAL) {
				mustSave(t, w, HardState{}, ents(1, 5, 1))
				mustSnap(t, w, Snapshot{Index: 100, Term: 3})
				mustSave(t, w, HardState{Term: 3, Commit: 100}, ents(101, 103, 3))
			},
			from:   Snapshot{Index: 100, Term: 3},
			wantHS: HardState{Term: 3, Commit: 100},
			want:   ents(101, 103, 3),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "wal")
			opts := Options{SegmentSize: tt.segSize}
			w := mustCreate(t, dir, opts)
			tt.build(t, w)
			mustClose(t, w)
			if n := len(segmentPaths(t, dir)); n < tt.minSegs {
				t.Fatalf("log has %d segments, want at least %d", n, tt.minSegs)
			}

			w, rp := mustOpen(t, dir, tt.from, opts)
			if rp.Metadata != testMD {
				t.Fatalf("metadata %+v, want %+v", rp.Metadata, testMD)
			}
			if rp.HardState != tt.wantHS {
				t.Fatalf("hard state %+v, want %+v", rp.HardState, tt.wantHS)
			}
			checkEntries(t, rp.Entries, tt.want)

			// The reopened log takes appends that survive another reopen.
			next := max(tt.from.Index, lastIndex(tt.want)) + 1
			more := ents(next, next+1, 9)
			mustSave(t, w, HardState{Term: 9, Commit: next}, more)
			mustClose(t, w)
			w, rp = mustOpen(t, dir, tt.from, opts)
			defer mustClose(t, w)
			checkEntries(t, rp.Entries, cat(tt.want, more))
			if want := (HardState{Term: 9, Commit: next}); rp.HardState != want {
				t.Fatalf("hard state after append %+v, want %+v", rp.HardState, want)
			}
		})
	}
}

func lastIndex(es []Entry) uint64 {
	if len(es) == 0 {
		return 0
	}
	return es[len(es)-1].Index
}

func TestSegmentNamesAndHeads(t *testing.T) {
	dir := t.TempDir()
	w := mustCreate(t, dir, Options{SegmentSize: 1024})
	mustSave(t, w, HardState{Term: 1, Vote: 1}, nil)
	saveBatches(t, w, ents(1, 60, 1), 6)
	mustClose(t, w)
	var prevFirst uint64
	for i, p := range segmentPaths(t, dir) {
		s, ok := parseSegmentName(filepath.Base(p))
		if !ok || s.seq != uint64(i) || s.first < prevFirst {
			t.Fatalf("segment %d named %s", i, filepath.Base(p))
		}
		prevFirst = s.first
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() != 1024 {
			t.Fatalf("%s is %d bytes, want preallocated 1024", p, fi.Size())
		}
		b, _ := os.ReadFile(p)
		if i > 0 {
			// Every later segment's head repeats the metadata and hard state.
			r := replayer{from: Snapshot{Index: s.first - 1}, last: s.first - 1}
			if _, err := r.scan(s, b, false); err != nil {
				t.Fatalf("segment %s alone does not replay: %v", p, err)
			}
			if r.md != testMD || r.hs != (HardState{Term: 1, Vote: 1}) {
				t.Fatalf("segment %s head: md %+v hs %+v", p, r.md, r.hs)
			}
		}
	}
	for _, name := range []string{"0000000000000001-0000000000000002.wal"} {
		if s, ok := parseSegmentName(name); !ok || segmentName(s.seq, s.first) != name {
			t.Fatalf("name %s does not round-trip", name)
		}
	}
	for _, bad := range []string{"1-2.wal", "000000000000000A-0000000000000002.wal", "0000000000000001-0000000000000002.wal.tmp", "0000000000000001_0000000000000002.wal", "LOCK"} {
		if _, ok := parseSegmentName(bad); ok {
			t.Fatalf("parseSegmentName accepted %q", bad)
		}
	}
}

func TestReleaseTo(t *testing.T) {
	tests := []struct {
		name   string
		marker func(segs []segment) uint64
		kept   int // segments left, counted from the end; 0 = all
	}{
		{"below the second segment releases nothing", func(s []segment) uint64 { return s[1].first - 1 }, 0},
		{"at the second segment's first index", func(s []segment) uint64 { return s[1].first }, -1},
		{"inside the sixth segment", func(s []segment) uint64 { return s[5].first + 1 }, -5},
		{"at the last entry", func(s []segment) uint64 { return 200 }, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			opts := Options{SegmentSize: 1024}
			w := mustCreate(t, dir, opts)
			mustSave(t, w, HardState{Term: 1, Vote: 2}, nil)
			saveBatches(t, w, ents(1, 200, 1), 4)
			segs := append([]segment(nil), w.segs...)
			if len(segs) < 8 {
				t.Fatalf("only %d segments", len(segs))
			}
			marker := tt.marker(segs)
			mustSnap(t, w, Snapshot{Index: marker, Term: 1})
			mustSave(t, w, HardState{Term: 1, Vote: 2, Commit: 200}, ents(201, 203, 1))
			segs = append([]segment(nil), w.segs...)

			if err := w.ReleaseTo(marker + 1); !errors.Is(err, ErrSnapshotNotFound) {
				t.Fatalf("ReleaseTo past the latest marker: %v, want ErrSnapshotNotFound", err)
			}
			if err := w.ReleaseTo(marker); err != nil {
				t.Fatalf("ReleaseTo(%d): %v", marker, err)
			}
			// The rule: segment k goes iff segment k+1 exists and starts at
			// or below the marker.
			var want []string
			for i, s := range segs {
				if i+1 < len(segs) && segs[i+1].first <= marker {
					continue
				}
				want = append(want, filepath.Join(dir, s.name))
			}
			switch {
			case tt.kept == 0 && len(want) != len(segs),
				tt.kept < 0 && len(want) != len(segs)+tt.kept,
				tt.kept > 0 && len(want) != tt.kept:
				t.Fatalf("test setup: marker %d keeps %d of %d segments", marker, len(want), len(segs))
			}
			if got := segmentPaths(t, dir); !slices.Equal(got, want) {
				t.Fatalf("after ReleaseTo(%d): segments %v, want %v", marker, got, want)
			}
			mustClose(t, w)

			w, rp := mustOpen(t, dir, Snapshot{Index: marker, Term: 1}, opts)
			checkEntries(t, rp.Entries, ents(marker+1, 203, 1))
			if rp.HardState != (HardState{Term: 1, Vote: 2, Commit: 200}) || rp.Metadata != testMD {
				t.Fatalf("replay after release: hs %+v md %+v", rp.HardState, rp.Metadata)
			}
			mustClose(t, w)
			w, _, err := Open(dir, Snapshot{}, opts)
			if err == nil {
				mustClose(t, w)
			}
			if (tt.kept == 0) != (err == nil) || err != nil && !errors.Is(err, ErrSnapshotNotFound) {
				t.Fatalf("Open from zero after release: %v", err)
			}
		})
	}
}

// After raft overwrote a suffix that began in an older segment, later
// segments start below earlier ones; release and replay still work.
func TestReleaseAfterOverwriteAcrossSegments(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentSize: 1024}
	w := mustCreate(t, dir, opts)
	saveBatches(t, w, ents(1, 100, 1), 5)
	mustSave(t, w, HardState{Term: 2}, ents(40, 45, 2))
	saveBatches(t, w, ents(46, 90, 2), 5)
	mustSave(t, w, HardState{Term: 2, Commit: 70}, nil)
	var dips bool
	for i := 1; i < len(w.segs); i++ {
		dips = dips || w.segs[i].first < w.segs[i-1].first
	}
	if !dips {
		t.Fatalf("test setup: first indexes never decrease: %v", w.segs)
	}
	mustSnap(t, w, Snapshot{Index: 70, Term: 2})
	if err := w.ReleaseTo(70); err != nil {
		t.Fatal(err)
	}
	for _, s := range w.segs[1:] {
		if s.first <= 70 {
			t.Fatalf("kept segment %s although a later one starts at or below 70", s.name)
		}
	}
	mustClose(t, w)
	w, rp := mustOpen(t, dir, Snapshot{Index: 70, Term: 2}, opts)
	defer mustClose(t, w)
	checkEntries(t, rp.Entries, ents(71, 90, 2))
}

func TestReleaseToKeepsLastSegment(t *testing.T) {
	dir := t.TempDir()
	w := mustCreate(t, dir, Options{SegmentSize: 1024})
	saveBatches(t, w, ents(1, 50, 1), 5)
	mustSnap(t, w, Snapshot{Index: 50, Term: 1})
	if err := w.ReleaseTo(50); err != nil {
		t.Fatal(err)
	}
	if err := w.ReleaseTo(50); err != nil { // nothing more to do
		t.Fatal(err)
	}
	if n := len(segmentPaths(t, dir)); n != 1 {
		t.Fatalf("%d segments left, want 1", n)
	}
	mustSave(t, w, HardState{}, ents(51, 52, 1))
	mustClose(t, w)
	w, rp := mustOpen(t, dir, Snapshot{Index: 50, Term: 1}, Options{SegmentSize: 1024})
	defer mustClose(t, w)
	checkEntries(t, rp.Entries, ents(51, 52, 1))
}

func TestOpenMarkerErrors(t *testing.T) {
	dir := t.TempDir()
	w := mustCreate(t, dir, Options{})
	mustSave(t, w, HardState{}, ents(1, 10, 1))
	mustSnap(t, w, Snapshot{Index: 5, Term: 1})
	mustSnap(t, w, Snapshot{Index: 8, Term: 2})
	mustClose(t, w)
	tests := []struct {
		from Snapshot
		want error
	}{
		{Snapshot{Index: 7, Term: 1}, ErrSnapshotNotFound},
		{Snapshot{Index: 99, Term: 1}, ErrSnapshotNotFound},
		{Snapshot{Index: 5, Term: 2}, ErrSnapshotMismatch},
		{Snapshot{Index: 8, Term: 1}, ErrSnapshotMismatch},
		{Snapshot{Index: 5, Term: 1}, nil},
		{Snapshot{Index: 8, Term: 2}, nil},
	}
	for _, tt := range tests {
		w, _, err := Open(dir, tt.from, Options{})
		if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
			t.Fatalf("Open from %+v: %v, want %v", tt.from, err, tt.want)
		}
		if err == nil {
			mustClose(t, w)
		}
	}
}

func TestOpenOlderMarkerThanAJump(t *testing.T) {
	dir := t.TempDir()
	w := mustCreate(t, dir, Options{})
	mustSave(t, w, HardState{}, ents(1, 5, 1))
	mustSnap(t, w, Snapshot{Index: 3, Term: 1})
	mustSnap(t, w, Snapshot{Index: 50, Term: 2})
	mustSave(t, w, HardState{}, ents(51, 52, 2))
	mustClose(t, w)
	for _, from := range []Snapshot{{}, {Index: 3, Term: 1}} {
		if _, _, err := Open(dir, from, Options{}); !errors.Is(err, ErrIndexGap) {
			t.Fatalf("Open from %+v: %v, want ErrIndexGap", from, err)
		}
	}
}

func TestInstallSnapshotDropsTheOldLog(t *testing.T) {
	tests := []struct {
		name    string
		install Snapshot
		after   []Entry
		want    []Entry
	}{
		// The follower had stale entries 6..10 from term 1; the leader's
		// snapshot at 7 (term 3) replaced the log, so they must not return
		// even though some lie beyond the snapshot.
		{"stale entries beyond the snapshot", Snapshot{Index: 7, Term: 3}, nil, nil},
		{"entries after the install", Snapshot{Index: 7, Term: 3}, ents(8, 9, 3), ents(8, 9, 3)},
		{"install beyond the last entry", Snapshot{Index: 20, Term: 3}, ents(21, 22, 3), ents(21, 22, 3)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			w := mustCreate(t, dir, Options{})
			mustSave(t, w, HardState{Term: 1, Commit: 5}, ents(1, 10, 1))
			mustSnap(t, w, Snapshot{Index: 4, Term: 1})
			if err := w.InstallSnapshot(tt.install); err != nil {
				t.Fatalf("InstallSnapshot: %v", err)
			}
			mustSave(t, w, HardState{Term: 3, Commit: tt.install.Index}, tt.after)
			mustClose(t, w)

			w, rp := mustOpen(t, dir, tt.install, Options{})
			checkEntries(t, rp.Entries, tt.want)
			mustClose(t, w)
			if _, _, err := Open(dir, Snapshot{Index: 4, Term: 1}, Options{}); !errors.Is(err, ErrIndexGap) {
				t.Fatalf("Open from the marker before the install: %v, want ErrIndexGap", err)
			}
		})
	}
}

func TestCreateAndOpenErrors(t *testing.T) {
	dir := t.TempDir()
	if Exists(dir) {
		t.Fatal("Exists on an empty dir")
	}
	if _, _, err := Open(dir, Snapshot{}, Options{}); !errors.Is(err, ErrNotExist) {
		t.Fatalf("Open on an empty dir: %v, want ErrNotExist", err)
	}
	w := mustCreate(t, dir, Options{})
	if !Exists(dir) {
		t.Fatal("Exists after Create is false")
	}
	if _, _, err := Open(dir, Snapshot{}, Options{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open while open: %v, want ErrLocked", err)
	}
	if _, err := Create(dir, testMD, Options{}); !errors.Is(err, ErrExist) {
		t.Fatalf("Create on an open log: %v, want ErrExist", err)
	}
	mustClose(t, w)
	if _, err := Create(dir, testMD, Options{}); !errors.Is(err, ErrExist) {
		t.Fatalf("Create on a closed log: %v, want ErrExist", err)
	}
	w, _ = mustOpen(t, dir, Snapshot{}, Options{})
	if _, _, err := Open(dir, Snapshot{}, Options{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	mustClose(t, w)
	if err := w.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close: %v, want ErrClosed", err)
	}
	if err := w.Save(HardState{Term: 1}, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Save after Close: %v, want ErrClosed", err)
	}
	if err := w.SaveSnapshot(Snapshot{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("SaveSnapshot after Close: %v, want ErrClosed", err)
	}
	if err := w.ReleaseTo(0); !errors.Is(err, ErrClosed) {
		t.Fatalf("ReleaseTo after Close: %v, want ErrClosed", err)
	}
	w, _ = mustOpen(t, dir, Snapshot{}, Options{}) // the lock was released
	mustClose(t, w)
}

func TestSaveValidation(t *testing.T) {
	dir := t.TempDir()
	w := mustCreate(t, dir, Options{})
	w.maxEntrySize = 64 // MaxEntrySize itself would need a 1 GiB buffer
	mustSave(t, w, HardState{}, ents(1, 5, 1))
	tests := []struct {
		name string
		es   []Entry
		want error
	}{
		{"gap after the last index", ents(7, 8, 1), ErrIndexGap},
		{"index zero", []Entry{{Index: 0, Term: 1}}, ErrIndexGap},
		{"not consecutive", []Entry{{Index: 6, Term: 1}, {Index: 8, Term: 1}}, ErrIndexGap},
		{"repeated index", []Entry{{Index: 6, Term: 1}, {Index: 6, Term: 1}}, ErrIndexGap},
		{"too large", []Entry{{Index: 6, Term: 1, Data: make([]byte, 65)}}, ErrTooLarge},
		{"next index", ents(6, 6, 1), nil},
		{"overwrite", ents(3, 4, 2), nil},
		{"empty save", nil, nil},
	}
	for _, tt := range tests {
		if err := w.Save(HardState{}, tt.es); !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
			t.Fatalf("%s: Save: %v, want %v", tt.name, err, tt.want)
		}
	}
	// Rejected batches wrote nothing and left the WAL usable.
	mustSave(t, w, HardState{}, ents(5, 5, 2))
	mustClose(t, w)
	w, rp := mustOpen(t, dir, Snapshot{}, Options{})
	defer mustClose(t, w)
	checkEntries(t, rp.Entries, cat(ents(1, 2, 1), ents(3, 5, 2)))
}

func TestTruncatedFileIsReextended(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentSize: 4096}
	w := mustCreate(t, dir, opts)
	mustSave(t, w, HardState{Term: 1}, ents(1, 5, 1))
	end := w.off
	mustClose(t, w)
	path := segmentPaths(t, dir)[0]
	if err := os.Truncate(path, end); err != nil { // a record boundary, no zeros after
		t.Fatal(err)
	}
	w, rp := mustOpen(t, dir, Snapshot{}, opts)
	checkEntries(t, rp.Entries, ents(1, 5, 1))
	if fi, err := os.Stat(path); err != nil || fi.Size() != 4096 {
		t.Fatalf("segment not re-extended: %v %v", fi.Size(), err)
	}
	mustSave(t, w, HardState{}, ents(6, 7, 1))
	mustClose(t, w)
	w, rp = mustOpen(t, dir, Snapshot{}, opts)
	defer mustClose(t, w)
	checkEntries(t, rp.Entries, ents(1, 7, 1))
}

func TestLeftoverTempSegmentIsRemoved(t *testing.T) {
	dir := t.TempDir()
	w := mustCreate(t, dir, Options{})
	mustSave(t, w, HardState{}, ents(1, 2, 1))
	mustClose(t, w)
	tmp := filepath.Join(dir, segmentName(1, 3)+tmpSuffix)
	if err := os.WriteFile(tmp, []byte("half a segment"), 0o600); err != nil {
		t.Fatal(err)
	}
	w, rp := mustOpen(t, dir, Snapshot{}, Options{})
	defer mustClose(t, w)
	checkEntries(t, rp.Entries, ents(1, 2, 1))
	if _, err := os.Stat(tmp); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temp segment still there: %v", err)
	}
}

func TestSyncHooks(t *testing.T) {
	var before, after int
	opts := Options{
		SegmentSize: 1024,
		BeforeSync:  func() { before++ },
		AfterSync: func(d time.Duration) {
			if d < 0 {
				t.Errorf("negative sync duration %v", d)
			}
			after++
		},
	}
	w := mustCreate(t, t.TempDir(), opts)
	defer mustClose(t, w)
	if before != 1 || after != 1 { // the first segment
		t.Fatalf("after Create: before %d after %d, want 1 1", before, after)
	}
	mustSave(t, w, HardState{Term: 1}, ents(1, 2, 1))
	mustSnap(t, w, Snapshot{Index: 1, Term: 1})
	if before != 3 || after != 3 {
		t.Fatalf("one sync per call: before %d after %d, want 3 3", before, after)
	}
	segs := len(w.segs)
	mustSave(t, w, HardState{}, ents(3, 40, 1)) // cuts a segment: two syncs
	if len(w.segs) != segs+1 || before != 5 || after != 5 {
		t.Fatalf("cut: %d segments, before %d after %d, want %d 5 5", len(w.segs), before, after, segs+1)
	}
}

func TestFaultsBreakTheWAL(t *testing.T) {
	tests := []struct {
		name   string
		inject func(w *WAL)
		// cut makes the failing Save cut a new segment first.
		cut bool
	}{
		{"write error", func(w *WAL) { w.tail = &faultFile{segmentFile: w.tail, writeErr: errInjected} }, false},
		{"short write", func(w *WAL) { w.tail = &faultFile{segmentFile: w.tail, shortWrite: true} }, false},
		{"fdatasync error", func(w *WAL) { w.tail = &faultFile{segmentFile: w.tail, syncErr: errInjected} }, false},
		{"closed file", func(w *WAL) {
			if err := w.tail.(osFile).f.Close(); err != nil {
				panic(err)
			}
		}, false},
		{"write error in a new segment", func(w *WAL) {
			w.wrapFile = func(f *os.File) segmentFile { return &faultFile{segmentFile: osFile{f}, writeErr: errInjected} }
		}, true},
		{"sync error in a new segment", func(w *WAL) {
			w.wrapFile = func(f *os.File) segmentFile { return &faultFile{segmentFile: osFile{f}, syncErr: errInjected} }
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			opts := Options{SegmentSize: 1024}
			w := mustCreate(t, dir, opts)
			acked := ents(1, 4, 1)
			mustSave(t, w, HardState{Term: 1}, acked)
			tt.inject(w)
			batch := ents(5, 6, 1)
			if tt.cut {
				batch = ents(5, 40, 1)
			}
			err := w.Save(HardState{Term: 2}, batch)
			if err == nil {
				t.Fatal("Save succeeded through a fault")
			}
			// Broken: every later call returns the same error.
			for i, later := range []error{
				w.Save(HardState{}, ents(5, 5, 1)),
				w.SaveSnapshot(Snapshot{Index: 4, Term: 1}),
				w.ReleaseTo(0),
			} {
				if later == nil || later.Error() != err.Error() {
					t.Fatalf("call %d after the fault: %v, want %v", i, later, err)
				}
			}
			if cerr := w.Close(); cerr == nil || !strings.Contains(cerr.Error(), err.Error()) {
				t.Fatalf("Close of a broken WAL: %v, want it to report %v", cerr, err)
			}
			if len(segmentPaths(t, dir)) != 1 {
				t.Fatalf("a failed cut left segments behind: %v", segmentPaths(t, dir))
			}
			// What was acknowledged survives; the failed batch may or may
			// not (it was never acknowledged), but only as a prefix.
			w, rp := mustOpen(t, dir, Snapshot{}, opts)
			defer mustClose(t, w)
			n := len(rp.Entries)
			if n < len(acked) || n > len(acked)+len(batch) {
				t.Fatalf("replayed %d entries after the fault", n)
			}
			checkEntries(t, rp.Entries, cat(acked, batch)[:n])
		})
	}
}

func TestConcurrentUse(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentSize: 2048}
	w := mustCreate(t, dir, opts)
	const total = 600
	saved := make(chan uint64, total)
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	wg.Add(2)
	go func() { // the raft loop
		defer wg.Done()
		defer close(saved)
		for i := uint64(1); i <= total; i += 3 {
			if err := w.Save(HardState{Term: 1, Commit: i + 2}, ents(i, i+2, 1)); err != nil {
				errc <- err
				return
			}
			saved <- i + 2
		}
	}()
	var lastMarker uint64
	go func() { // the snapshotter
		defer wg.Done()
		for idx := range saved {
			if idx%30 != 0 {
				continue
			}
			if err := w.SaveSnapshot(Snapshot{Index: idx, Term: 1}); err != nil {
				errc <- err
				return
			}
			if err := w.ReleaseTo(idx); err != nil {
				errc <- err
				return
			}
			lastMarker = idx
		}
	}()
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	mustClose(t, w)
	if lastMarker == 0 {
		t.Fatal("no marker saved")
	}
	w, rp := mustOpen(t, dir, Snapshot{Index: lastMarker, Term: 1}, opts)
	defer mustClose(t, w)
	checkEntries(t, rp.Entries, ents(lastMarker+1, total, 1))
}

func TestSpareSegment(t *testing.T) {
	const segSize = 64 << 10
	dir := t.TempDir()
	opts := Options{SegmentSize: segSize}
	w := mustCreate(t, dir, opts)
	sparePath := filepath.Join(dir, spareName)
	next := uint64(1)
	for w.spare == nil {
		mustSave(t, w, HardState{}, ents(next, next, 1))
		next++
	}
	if _, err := w.spare.take(); err != nil { // wait for it to be ready
		t.Fatal(err)
	}
	if fi, err := os.Stat(sparePath); err != nil || fi.Size() != segSize {
		t.Fatalf("prepared spare: %v", err)
	}
	segs := len(w.segs)
	for len(w.segs) == segs {
		mustSave(t, w, HardState{}, ents(next, next, 1))
		next++
	}
	if _, err := os.Stat(sparePath); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("spare not renamed into the new segment: %v", err)
	}
	if w.spare != nil {
		t.Fatal("a new spare started for an empty tail")
	}
	// Close abandons a spare in preparation and deletes it.
	for w.spare == nil {
		mustSave(t, w, HardState{}, ents(next, next, 1))
		next++
	}
	mustClose(t, w)
	if _, err := os.Stat(sparePath); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("spare left after Close: %v", err)
	}

	// A spare that cannot be made only means the cut makes its segment.
	dir = t.TempDir()
	w = mustCreate(t, dir, opts)
	if err := os.Mkdir(filepath.Join(dir, spareName), 0o700); err != nil {
		t.Fatal(err)
	}
	next = 1
	for len(w.segs) < 3 {
		mustSave(t, w, HardState{}, ents(next, next+9, 1))
		next += 10
	}
	mustClose(t, w)
	w, rp := mustOpen(t, dir, Snapshot{}, opts)
	defer mustClose(t, w)
	checkEntries(t, rp.Entries, ents(1, next-1, 1))
}
