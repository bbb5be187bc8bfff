package backend

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testOpts() Options {
	return Options{InitialMmapSize: 1 << 30, BatchInterval: -1}
}

func openTest(t testing.TB, opts Options) (*Backend, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "db")
	b, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("close: %v", err)
		}
	})
	return b, path
}

func rk(i uint64) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, i)
	return k
}

func scanAll(t testing.TB, v *View) []uint64 {
	var out []uint64
	v.Scan(nil, nil, func(k, _ []byte) bool {
		out = append(out, binary.BigEndian.Uint64(k))
		return true
	})
	return out
}

// committed lists the revision bucket of a file opened on its own.
func committed(t *testing.T, path string) (keys []uint64, ci uint64) {
	t.Helper()
	cp := filepath.Join(t.TempDir(), "copy")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(cp, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return err
		}
		c := tx.Bucket(revBucketName).Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			keys = append(keys, binary.BigEndian.Uint64(k))
		}
		ci = readCI(tx.Bucket(metaBucketName)).index
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return keys, ci
}

func seq(from, to uint64) []uint64 {
	var out []uint64
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

func TestSealAndCommit(t *testing.T) {
	var commits atomic.Int64
	opts := testOpts()
	opts.OnCommit = func(time.Duration) { commits.Add(1) }
	b, path := openTest(t, opts)

	b.SetConsistentIndex(1, 1)
	b.Append(rk(1), []byte("a"))
	b.Append(rk(2), []byte("b"))
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	if keys, ci := committed(t, path); len(keys) != 0 || ci != 0 {
		t.Fatalf("entry 1 in progress was committed: %v ci %d", keys, ci)
	}
	b.SetConsistentIndex(2, 1) // entry 1 is complete
	b.Append(rk(3), []byte("c"))
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	if keys, ci := committed(t, path); !slices.Equal(keys, seq(1, 2)) || ci != 1 {
		t.Fatalf("after sealing entry 1: %v ci %d", keys, ci)
	}
	if err := b.ForceCommit(); err != nil {
		t.Fatal(err)
	}
	if keys, ci := committed(t, path); !slices.Equal(keys, seq(1, 3)) || ci != 2 {
		t.Fatalf("after ForceCommit: %v ci %d", keys, ci)
	}
	if i, term := b.ConsistentIndex(); i != 2 || term != 1 {
		t.Errorf("consistent index %d/%d", i, term)
	}
	if commits.Load() != 2 {
		t.Errorf("OnCommit called %d times, want 2", commits.Load())
	}
	// Reads saw everything all along.
	v, err := b.View()
	if err != nil {
		t.Fatal(err)
	}
	defer v.Release()
	if got := scanAll(t, v); !slices.Equal(got, seq(1, 3)) {
		t.Errorf("view %v", got)
	}
	if string(v.Get(rk(3))) != "c" || v.Get(rk(4)) != nil {
		t.Errorf("get")
	}
}

func TestBatchLimitAndTimer(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"limit", Options{InitialMmapSize: 1 << 30, BatchInterval: -1, BatchLimit: 10}},
		{"timer", Options{InitialMmapSize: 1 << 30, BatchInterval: 5 * time.Millisecond}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			committedc := make(chan struct{}, 100)
			tc.opts.OnCommit = func(time.Duration) { committedc <- struct{}{} }
			b, _ := openTest(t, tc.opts)
			for i := uint64(1); i <= 12; i++ {
				b.Append(rk(i), nil)
				b.Seal()
			}
			select {
			case <-committedc:
			case <-time.After(10 * time.Second):
				t.Fatal("no commit")
			}
		})
	}
}

func TestBuckets(t *testing.T) {
	b, path := openTest(t, testOpts())
	b.Put("lease", []byte("b"), []byte("2"))
	b.Put("lease", []byte("a"), []byte("1"))
	b.Seal()
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	b.Put("lease", []byte("c"), []byte("3"))
	b.Delete("lease", []byte("a"))
	b.Put("lease", []byte("b"), []byte("22"))
	b.PutUnordered(MetaBucket, []byte("mark"), []byte("x"))
	if v, _ := b.Get(MetaBucket, []byte("mark")); v != nil {
		t.Errorf("unordered put visible before its commit")
	}
	var got []string
	collect := func() {
		got = got[:0]
		if err := b.ForEach("lease", func(k, v []byte) error {
			got = append(got, string(k)+"="+string(v))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	collect()
	if want := []string{"b=22", "c=3"}; !slices.Equal(got, want) {
		t.Errorf("merged view %v, want %v", got, want)
	}
	if v, _ := b.Get("lease", []byte("a")); v != nil {
		t.Errorf("deleted key visible")
	}
	if err := b.ForceCommit(); err != nil {
		t.Fatal(err)
	}
	collect()
	if want := []string{"b=22", "c=3"}; !slices.Equal(got, want) {
		t.Errorf("committed %v, want %v", got, want)
	}
	if v, _ := b.Get(MetaBucket, []byte("mark")); string(v) != "x" {
		t.Errorf("unordered put after commit: %q", v)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b2, err := Open(path, testOpts())
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	if v, _ := b2.Get("lease", []byte("b")); string(v) != "22" {
		t.Errorf("after reopen: %q", v)
	}
}

// TestViewsUnderCommits checks, under the race detector, that a view taken
// after a write sees it and sees a gap-free prefix, while the committer
// commits as fast as it can (so views often fall in a commit window and
// open their own transaction).
func TestViewsUnderCommits(t *testing.T) {
	opts := testOpts()
	opts.BatchInterval = time.Millisecond
	opts.BatchLimit = 50
	b, _ := openTest(t, opts)
	var appended atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var bad atomic.Pointer[string]
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				floor := appended.Load()
				v, err := b.View()
				if err != nil {
					msg := err.Error()
					bad.Store(&msg)
					return
				}
				keys := scanAll(t, v)
				var last uint64
				if l := v.Last(); l != nil {
					last = binary.BigEndian.Uint64(l) // before Release: the slice dies with the view
				}
				v.Release()
				if uint64(len(keys)) < floor || (len(keys) > 0 && last != keys[len(keys)-1]) {
					msg := fmt.Sprintf("view has %d keys (last %d), %d were appended before it", len(keys), last, floor)
					bad.Store(&msg)
					return
				}
				for i, k := range keys {
					if k != uint64(i+1) {
						msg := fmt.Sprintf("view not a prefix at %d: %d", i, k)
						bad.Store(&msg)
						return
					}
				}
			}
		}()
	}
	for i := uint64(1); i <= 3000; i++ {
		b.Append(rk(i), []byte("v"))
		appended.Store(i)
		b.Seal()
	}
	close(stop)
	wg.Wait()
	if p := bad.Load(); p != nil {
		t.Fatal(*p)
	}
}

func TestPurge(t *testing.T) {
	b, path := openTest(t, testOpts())
	for i := uint64(1); i <= 10; i++ {
		b.Append(rk(i), nil)
	}
	if err := b.ForceCommit(); err != nil {
		t.Fatal(err)
	}
	old, err := b.View()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Purge([][]byte{rk(2), rk(3), rk(7)}); err != nil {
		t.Fatal(err)
	}
	if keys, _ := committed(t, path); !slices.Equal(keys, []uint64{1, 4, 5, 6, 8, 9, 10}) {
		t.Errorf("after purge: %v", keys)
	}
	// A view taken before still sees the purged records.
	if got := scanAll(t, old); !slices.Equal(got, seq(1, 10)) {
		t.Errorf("old view %v", got)
	}
	old.Release()
}

func TestSnapshotRestoreBackend(t *testing.T) {
	a, _ := openTest(t, testOpts())
	for i := uint64(1); i <= 100; i++ {
		a.Append(rk(i), bytes.Repeat([]byte{byte(i)}, 100))
	}
	a.Put("lease", []byte("l"), []byte("1"))
	a.SetConsistentIndex(7, 3)
	a.Append(rk(101), nil) // entry 7 still open: not in the snapshot
	var buf bytes.Buffer
	if _, err := a.Snapshot(&buf); err != nil {
		t.Fatal(err)
	}

	b, path := openTest(t, testOpts())
	b.Append(rk(5000), []byte("old"))
	if err := b.ForceCommit(); err != nil {
		t.Fatal(err)
	}
	b.Append(rk(5001), []byte("buffered, dropped by the restore"))
	oldView, err := b.View()
	if err != nil {
		t.Fatal(err)
	}
	p, err := b.PrepareRestore(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if i, _ := p.ConsistentIndex(); i != 0 {
		t.Errorf("snapshot ci %d, want 0 (entry 7 was not sealed)", i)
	}
	if swapped, err := p.Commit(); err != nil || !swapped {
		t.Fatal(swapped, err)
	}
	// The view from before the swap still reads the old file.
	if got := scanAll(t, oldView); !slices.Equal(got, []uint64{5000, 5001}) {
		t.Errorf("old view %v", got)
	}
	oldView.Release()
	v, err := b.View()
	if err != nil {
		t.Fatal(err)
	}
	if got := scanAll(t, v); !slices.Equal(got, seq(1, 100)) {
		t.Errorf("restored %d keys", len(got))
	}
	v.Release()
	if l, _ := b.Get("lease", []byte("l")); string(l) != "1" {
		t.Errorf("lease bucket %q", l)
	}
	b.Append(rk(101), []byte("next"))
	if err := b.ForceCommit(); err != nil {
		t.Fatal(err)
	}
	if keys, _ := committed(t, path); !slices.Equal(keys, seq(1, 101)) {
		t.Errorf("on disk %d keys", len(keys))
	}
}

// TestDefragmentConsistent defragments while records are appended and
// purged, and checks the new file against what must be there.
func TestDefragmentConsistent(t *testing.T) {
	opts := testOpts()
	opts.BatchInterval = time.Millisecond
	b, path := openTest(t, opts)
	val := bytes.Repeat([]byte("v"), 500)
	const n = 20000
	for i := uint64(1); i <= n; i++ {
		b.Append(rk(i), val)
	}
	b.Put("lease", []byte("x"), []byte("1"))
	if err := b.ForceCommit(); err != nil {
		t.Fatal(err)
	}
	var purged [][]byte
	for i := uint64(1); i <= n; i += 2 {
		purged = append(purged, rk(i))
	}
	if err := b.Purge(purged[:len(purged)/2]); err != nil {
		t.Fatal(err)
	}

	done := make(chan struct{})
	var next atomic.Uint64
	next.Store(n + 1)
	go func() { // keep appending and purging while the defragmentation runs
		defer close(done)
		rest := purged[len(purged)/2:]
		for len(rest) > 0 {
			i := next.Load()
			b.Append(rk(i), val)
			next.Store(i + 1)
			b.Seal()
			if err := b.Purge(rest[:min(500, len(rest))]); err != nil {
				t.Error(err)
				return
			}
			rest = rest[min(500, len(rest)):]
		}
	}()
	st, err := b.Defragment()
	<-done
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", st)
	b.Delete("lease", []byte("x"))
	b.Put("lease", []byte("y"), []byte("2"))
	if err := b.ForceCommit(); err != nil {
		t.Fatal(err)
	}
	var want []uint64
	for i := uint64(2); i <= n; i += 2 {
		want = append(want, i)
	}
	want = append(want, seq(n+1, next.Load()-1)...)
	keys, _ := committed(t, path)
	if !slices.Equal(keys, want) {
		t.Fatalf("after defrag: %d keys, want %d", len(keys), len(want))
	}
	if v, _ := b.Get("lease", []byte("y")); string(v) != "2" {
		t.Errorf("small bucket lost writes")
	}
	if st.SizeAfter >= st.SizeBefore {
		t.Errorf("no shrink: %d -> %d", st.SizeBefore, st.SizeAfter)
	}
	if leftovers, _ := filepath.Glob(path + ".*"); len(leftovers) != 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}
}

func TestClosed(t *testing.T) {
	b, _ := openTest(t, testOpts())
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.View(); !errors.Is(err, ErrClosed) {
		t.Errorf("view after close: %v", err)
	}
	if err := b.Commit(); !errors.Is(err, ErrClosed) {
		t.Errorf("commit after close: %v", err)
	}
	if err := b.Err(); !errors.Is(err, ErrClosed) {
		t.Errorf("Err after close: %v", err)
	}
}

// TestCommitFailureIsReported makes a background commit fail (a write to a
// bucket with no name, which bbolt refuses) and checks that the owner hears
// of it once, that it is sticky, and that later commits report it too.
func TestCommitFailureIsReported(t *testing.T) {
	failures := make(chan error, 10)
	opts := testOpts()
	opts.BatchInterval = 5 * time.Millisecond
	opts.OnFailure = func(err error) { failures <- err }
	b, err := Open(filepath.Join(t.TempDir(), "db"), opts)
	if err != nil {
		t.Fatal(err)
	}
	b.Put("", []byte("k"), []byte("v"))
	b.Seal()
	var first error
	select {
	case first = <-failures:
	case <-time.After(10 * time.Second):
		t.Fatal("a failed commit was not reported")
	}
	if err := b.Err(); err == nil || err.Error() != first.Error() {
		t.Fatalf("Err() = %v, want the reported failure %v", err, first)
	}
	if err := b.Commit(); err == nil {
		t.Fatal("Commit after a failure succeeded")
	}
	b.Append(rk(1), nil)
	b.Seal()
	if err := b.ForceCommit(); err == nil {
		t.Fatal("ForceCommit after a failure succeeded")
	}
	if err := b.Close(); err == nil {
		t.Fatal("Close of a failed backend reported no error")
	}
	select {
	case err := <-failures:
		t.Fatalf("failure reported twice: %v", err)
	default:
	}
}
