package wal

import (
	"errors"
	"path/filepath"
	"testing"
)

func TestReadMetadata(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadMetadata(dir); !errors.Is(err, ErrNotExist) {
		t.Fatalf("ReadMetadata of an empty dir: %v, want ErrNotExist", err)
	}
	opts := Options{SegmentSize: 1024}
	w := mustCreate(t, dir, opts)
	mustSave(t, w, HardState{Term: 1, Vote: 2}, nil)
	// Enough entries for several segments, then release the first ones:
	// the identity must come from whatever segment is left.
	saveBatches(t, w, ents(1, 100, 1), 4)
	mustSnap(t, w, Snapshot{Index: 90, Term: 1})
	if err := w.ReleaseTo(90); err != nil {
		t.Fatal(err)
	}
	// Readable while the WAL is open and locked.
	md, err := ReadMetadata(dir)
	if err != nil || md != testMD {
		t.Fatalf("ReadMetadata = %+v, %v; want %+v", md, err, testMD)
	}
	mustClose(t, w)

	paths := segmentPaths(t, dir)
	last := paths[len(paths)-1]
	modifyFile(t, last, func(b []byte) []byte { b[frameHeaderSize+segmentPayloadSize+frameHeaderSize] ^= 0xff; return b })
	_, err = ReadMetadata(dir)
	var ce *CorruptError
	if !errors.As(err, &ce) || ce.File != last || filepath.Dir(ce.File) != dir {
		t.Fatalf("ReadMetadata of a damaged head: %v, want a CorruptError naming %s", err, last)
	}
}
