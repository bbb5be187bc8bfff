package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

var testMD = Metadata{MemberID: 0x1111, ClusterID: 0xc1c1}

// ents returns entries lo..hi at term, with data that is never zero bytes
// and differs by index and term.
func ents(lo, hi, term uint64) []Entry {
	var out []Entry
	for i := lo; i <= hi; i++ {
		out = append(out, Entry{Index: i, Term: term, Type: uint8(i % 3), Data: []byte(fmt.Sprintf("entry-%d-term-%d!", i, term))})
	}
	return out
}

func cat(parts ...[]Entry) []Entry {
	var out []Entry
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func mustCreate(t testing.TB, dir string, opts Options) *WAL {
	t.Helper()
	w, err := Create(dir, testMD, opts)
	if err != nil {
		t.Fatalf("Create(%s): %v", dir, err)
	}
	return w
}

func mustOpen(t testing.TB, dir string, from Snapshot, opts Options) (*WAL, Replay) {
	t.Helper()
	w, rp, err := Open(dir, from, opts)
	if err != nil {
		t.Fatalf("Open(%s, %+v): %v", dir, from, err)
	}
	return w, rp
}

func mustSave(t testing.TB, w *WAL, hs HardState, es []Entry) {
	t.Helper()
	if err := w.Save(hs, es); err != nil {
		t.Fatalf("Save(%+v, %d entries): %v", hs, len(es), err)
	}
}

func mustSnap(t testing.TB, w *WAL, s Snapshot) {
	t.Helper()
	if err := w.SaveSnapshot(s); err != nil {
		t.Fatalf("SaveSnapshot(%+v): %v", s, err)
	}
}

func mustClose(t testing.TB, w *WAL) {
	t.Helper()
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// saveBatches saves es in batches of n.
func saveBatches(t testing.TB, w *WAL, es []Entry, n int) {
	t.Helper()
	for len(es) > 0 {
		k := min(n, len(es))
		mustSave(t, w, HardState{}, es[:k])
		es = es[k:]
	}
}

func checkEntries(t testing.TB, got, want []Entry) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("replayed %d entries %s, want %d %s", len(got), span(got), len(want), span(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.Index != w.Index || g.Term != w.Term || g.Type != w.Type || string(g.Data) != string(w.Data) {
			t.Fatalf("entry %d: got {%d %d %d %q}, want {%d %d %d %q}", i, g.Index, g.Term, g.Type, g.Data, w.Index, w.Term, w.Type, w.Data)
		}
	}
}

func span(es []Entry) string {
	if len(es) == 0 {
		return "[]"
	}
	return fmt.Sprintf("[%d..%d]", es[0].Index, es[len(es)-1].Index)
}

// segmentPaths lists dir's segment files in order.
func segmentPaths(t testing.TB, dir string) []string {
	t.Helper()
	segs, err := listSegments(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range segs {
		out = append(out, filepath.Join(dir, s.name))
	}
	return out
}

// copyDir copies the segment files of src into a new temp dir.
func copyDir(t testing.TB, src string) string {
	t.Helper()
	dst := t.TempDir()
	for _, p := range segmentPaths(t, src) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, filepath.Base(p)), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// frameOffsets walks the frames of a segment by their length fields and
// returns the offset of each, stopping at the first zero header.
func frameOffsets(b []byte) []int {
	var offs []int
	for off := 0; off+frameHeaderSize <= len(b); {
		n := binary.LittleEndian.Uint32(b[off:])
		if n == 0 {
			break
		}
		offs = append(offs, off)
		off += frameSize(int(n))
	}
	return offs
}

func modifyFile(t testing.TB, path string, fn func([]byte) []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b = fn(slices.Clone(b))
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// faultFile wraps a segment file and fails on demand.
type faultFile struct {
	segmentFile
	writeErr   error // WriteAt fails with it, writing nothing
	shortWrite bool  // WriteAt writes half and reports it without error
	syncErr    error // Datasync and Sync fail with it
}

func (f *faultFile) WriteAt(p []byte, off int64) (int, error) {
	if f.writeErr != nil {
		return 0, f.writeErr
	}
	if f.shortWrite {
		return f.segmentFile.WriteAt(p[:len(p)/2], off)
	}
	return f.segmentFile.WriteAt(p, off)
}

func (f *faultFile) Datasync() error {
	if f.syncErr != nil {
		return f.syncErr
	}
	return f.segmentFile.Datasync()
}

func (f *faultFile) Sync() error {
	if f.syncErr != nil {
		return f.syncErr
	}
	return f.segmentFile.Sync()
}

var errInjected = errors.New("injected disk fault")

var _ io.WriterAt = (*faultFile)(nil)
