package mvcc

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func dumpAt(t *testing.T, s *Store, rev int64) []string {
	t.Helper()
	r := mustRange(t, s, RangeRequest{Key: []byte("\x00"), RangeEnd: []byte("\x00"), Revision: rev})
	out := []string{}
	for _, kv := range r.Kvs {
		out = append(out, kvString(kv))
	}
	return out
}

func TestSnapshotRestore(t *testing.T) {
	leasesA := newFakeLeases(5)
	optsA := testOptions()
	optsA.Leases = leasesA
	a, _ := openTestStore(t, optsA)
	for i := range 50 {
		a.SetConsistentIndex(uint64(i+1), 2)
		mustPut(t, a, fmt.Sprintf("k%d", i%10), fmt.Sprint(i))
	}
	a.SetConsistentIndex(51, 2)
	if _, err := a.Put(PutRequest{Key: []byte("leased"), Value: []byte("x"), Lease: 5}); err != nil {
		t.Fatal(err)
	}
	a.SetConsistentIndex(52, 2)
	if _, err := a.Compact(30); err != nil {
		t.Fatal(err)
	}
	if err := a.ForceCommit(); err != nil {
		t.Fatal(err)
	}
	var snap bytes.Buffer
	n, err := a.Snapshot(&snap)
	if err != nil || n != int64(snap.Len()) || n == 0 {
		t.Fatalf("snapshot: %d %v", n, err)
	}

	// b has a history of its own, which the restore replaces.
	leasesB := newFakeLeases(5)
	optsB := testOptions()
	optsB.Leases = leasesB
	rec := &restoreRecorder{}
	optsB.Observer = rec
	b, pathB := openTestStore(t, optsB)
	mustPut(t, b, "old", "state")

	// The restore reads its stream slowly; until the swap b serves its old
	// state.
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() { errc <- b.Restore(pr) }()
	half := snap.Len() / 2
	if _, err := pw.Write(snap.Bytes()[:half]); err != nil {
		t.Fatal(err)
	}
	if got := dumpAt(t, b, 0); !slices.Equal(got, []string{`old="state" c2 m2 v1 l0`}) {
		t.Errorf("during restore: %v", got)
	}
	if _, err := pw.Write(snap.Bytes()[half:]); err != nil {
		t.Fatal(err)
	}
	if err := pw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}

	if b.Rev() != a.Rev() || b.CompactRev() != 30 {
		t.Fatalf("rev %d compact %d, want %d 30", b.Rev(), b.CompactRev(), a.Rev())
	}
	if i, term := b.ConsistentIndex(); i != 52 || term != 2 {
		t.Errorf("consistent index %d/%d, want 52/2", i, term)
	}
	for rev := int64(30); rev <= a.Rev(); rev++ {
		if ga, gb := dumpAt(t, a, rev), dumpAt(t, b, rev); !slices.Equal(ga, gb) {
			t.Fatalf("at %d: %v vs %v", rev, ga, gb)
		}
	}
	ha, _ := a.HashKV(0)
	hb, _ := b.HashKV(0)
	if ha != hb {
		t.Errorf("hash %+v vs %+v", ha, hb)
	}
	if got := leasesB.keys(5); !slices.Equal(got, []string{"leased"}) {
		t.Errorf("leases after restore: %v", got)
	}
	if rec.rev != a.Rev() || rec.compact != 30 {
		t.Errorf("OnRestore(%d, %d)", rec.rev, rec.compact)
	}
	// b goes on from there, and the restored file is the one on disk.
	mustPut(t, b, "new", "1")
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	optsB.Observer = nil
	b2, err := Open(pathB, optsB)
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	if b2.Rev() != a.Rev()+1 || get(t, b2, "old") != nil || get(t, b2, "new") == nil {
		t.Errorf("after reopen: rev %d", b2.Rev())
	}
	if leftovers, _ := filepath.Glob(pathB + ".*"); len(leftovers) != 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}
}

type restoreRecorder struct {
	recorder
	rev, compact int64
}

func (r *restoreRecorder) OnRestore(rev, compact int64) { r.rev, r.compact = rev, compact }

func TestRestoreRejectsGarbage(t *testing.T) {
	s, path := openTestStore(t, testOptions())
	mustPut(t, s, "a", "1")
	if err := s.Restore(bytes.NewReader([]byte("not a database"))); err == nil {
		t.Fatal("restore of garbage succeeded")
	}
	if got := kvString(get(t, s, "a")); got != `a="1" c2 m2 v1 l0` {
		t.Errorf("state after a failed restore: %s", got)
	}
	mustPut(t, s, "b", "1")
	if leftovers, _ := filepath.Glob(path + ".*"); len(leftovers) != 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestCrashConsistentIndex simulates crashes between batches by copying the
// file of a live store (no commit runs: the timer is off and the batch limit
// high) and opening the copy: the copy holds exactly the entries up to its
// consistent index, so raft would replay from the right place.
func TestCrashConsistentIndex(t *testing.T) {
	opts := testOptions()
	opts.Backend.BatchLimit = 1 << 20
	s, path := openTestStore(t, opts)
	dir := t.TempDir()
	applyEntry := func(i int) {
		s.SetConsistentIndex(uint64(i), 1)
		// An entry of two writes: a commit must never split it.
		mustPut(t, s, fmt.Sprintf("e%03d", i), "a")
		if _, err := s.Txn(TxnRequest{Success: []RequestOp{put(fmt.Sprintf("f%03d", i), "b")}}); err != nil {
			t.Fatal(err)
		}
	}
	check := func(name string, wantIndex int) {
		t.Helper()
		cp := filepath.Join(dir, name)
		copyFile(t, path, cp)
		c, err := Open(cp, opts)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		idx, term := c.ConsistentIndex()
		if int(idx) != wantIndex || (wantIndex > 0 && term != 1) {
			t.Fatalf("%s: consistent index %d/%d, want %d", name, idx, term, wantIndex)
		}
		r := mustRange(t, c, RangeRequest{Key: []byte("\x00"), RangeEnd: []byte("\x00"), CountOnly: true})
		if r.Count != int64(2*wantIndex) || c.Rev() != int64(1+2*wantIndex) {
			t.Fatalf("%s: %d keys at rev %d, want %d entries", name, r.Count, c.Rev(), wantIndex)
		}
	}

	for i := 1; i <= 10; i++ {
		applyEntry(i)
	}
	check("nothing-committed", 0)
	if err := s.ForceCommit(); err != nil {
		t.Fatal(err)
	}
	check("after-force-commit", 10)
	for i := 11; i <= 20; i++ {
		applyEntry(i)
	}
	check("uncommitted-tail", 10)
	// A commit from any goroutine takes only complete entries: entry 20 is
	// still open (no later SetConsistentIndex), so 19 is the last one.
	if err := s.Backend().Commit(); err != nil {
		t.Fatal(err)
	}
	check("commit-sealed", 19)
	// Entry 21 has begun: entry 20 is complete now.
	s.SetConsistentIndex(21, 1)
	mustPut(t, s, "e021", "a")
	if err := s.Backend().Commit(); err != nil {
		t.Fatal(err)
	}
	check("commit-mid-entry", 20)
	// The timer and the batch limit also commit whole entries only.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	check("after-close", 20)
}
