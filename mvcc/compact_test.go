package mvcc

import (
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cairnkv/cairn/mvcc/backend"
)

// records lists the revision bucket as "main.sub key" strings.
func records(t *testing.T, s *Store) []string {
	t.Helper()
	v, err := s.be.View()
	if err != nil {
		t.Fatal(err)
	}
	defer v.Release()
	var out []string
	v.Scan(nil, nil, func(k, val []byte) bool {
		r, err := parseRevKey(k)
		if err != nil {
			t.Fatal(err)
		}
		rec, err := decodeRecord(val)
		if err != nil {
			t.Fatal(err)
		}
		tomb := ""
		if rec.tombstone() {
			tomb = " (t)"
		}
		out = append(out, fmt.Sprintf("%d.%d %s%s", r.main, r.sub, rec.key, tomb))
		return true
	})
	return out
}

func TestCompactErrors(t *testing.T) {
	s := newTestStore(t)
	// As in etcd, a new store has compact revision -1, and 0 is accepted once.
	done, err := s.Compact(0)
	if err != nil {
		t.Fatalf("compact 0: %v", err)
	}
	<-done
	if _, err := s.Compact(2); !errors.Is(err, ErrFutureRev) {
		t.Errorf("future: %v", err)
	}
	mustPut(t, s, "a", "1")
	mustPut(t, s, "a", "2")
	if _, err := s.Compact(2); err != nil {
		t.Fatal(err)
	}
	for _, rev := range []int64{0, 1, 2} {
		done, err := s.Compact(rev)
		if !errors.Is(err, ErrCompacted) {
			t.Errorf("compact %d: %v", rev, err)
		}
		<-done // a barrier behind the queued compactions
	}
	if s.Rev() != 3 || s.CompactRev() != 2 {
		t.Errorf("compaction changed the revision: %d %d", s.Rev(), s.CompactRev())
	}
}

func TestCompactKeepsLatest(t *testing.T) {
	s := newTestStore(t)
	mustPut(t, s, "a", "1") // 2
	mustPut(t, s, "a", "2") // 3
	mustPut(t, s, "b", "1") // 4
	mustDelete(t, s, "b", "")
	mustPut(t, s, "c", "1") // 6
	mustDelete(t, s, "c", "")
	mustPut(t, s, "a", "3") // 8
	mustPut(t, s, "d", "1") // 9
	mustDelete(t, s, "d", "")
	mustPut(t, s, "d", "2") // 11

	done, err := s.Compact(7)
	if err != nil {
		t.Fatal(err)
	}
	<-done
	// a@3 is live at 7 (kept); b and c died before or at 7: their tombstone
	// at exactly 7 survives this compaction, the rest goes.
	want := []string{"3.0 a", "7.0 c (t)", "8.0 a", "9.0 d", "10.0 d (t)", "11.0 d"}
	if got := records(t, s); !slices.Equal(got, want) {
		t.Errorf("records %v\nwant %v", got, want)
	}
	if got := kvString(mustRange(t, s, RangeRequest{Key: []byte("a"), Revision: 7}).Kvs[0]); got != `a="2" c2 m3 v2 l0` {
		t.Errorf("a at 7: %s", got)
	}
	if r := mustRange(t, s, RangeRequest{Key: []byte("\x00"), RangeEnd: []byte("\x00"), Revision: 7}); !slices.Equal(keysOf(r.Kvs), []string{"a"}) || r.Count != 1 {
		t.Errorf("at 7: %v", keysOf(r.Kvs))
	}
	done, err = s.Compact(11)
	if err != nil {
		t.Fatal(err)
	}
	<-done
	if got, want := records(t, s), []string{"8.0 a", "11.0 d"}; !slices.Equal(got, want) {
		t.Errorf("records %v, want %v", got, want)
	}
	if got := kvString(get(t, s, "d")); got != `d="2" c11 m11 v1 l0` {
		t.Errorf("d: %s", got)
	}
	if s.idx.len() != 2 {
		t.Errorf("index keeps %d keys", s.idx.len())
	}
}

func TestCompactInBatchesWhileServing(t *testing.T) {
	opts := testOptions()
	opts.CompactionBatch = 7
	s, _ := openTestStore(t, opts)
	for i := range 300 {
		mustPut(t, s, fmt.Sprintf("k%02d", i%30), fmt.Sprint(i))
	}
	done, err := s.Compact(s.Rev() - 5)
	if err != nil {
		t.Fatal(err)
	}
	// Writes and reads go on while the records are removed.
	for i := range 50 {
		mustPut(t, s, fmt.Sprintf("k%02d", i%30), "late")
		mustRange(t, s, RangeRequest{Key: []byte("\x00"), RangeEnd: []byte("\x00"), Revision: s.CompactRev()})
	}
	<-done
	if n := len(records(t, s)); n != 30+5+50 {
		t.Errorf("%d records left, want 85", n)
	}
}

// A compaction whose mark is durable but whose removal never ran (a crash)
// is in force at the next Open and finishes there.
func TestCompactResumesAfterReopen(t *testing.T) {
	s, path := openTestStore(t, testOptions())
	for i := range 20 {
		mustPut(t, s, "k", fmt.Sprint(i))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	be, err := backend.Open(path, testOptions().Backend)
	if err != nil {
		t.Fatal(err)
	}
	be.Put(backend.MetaBucket, scheduledCompactKey, encodeRev(15))
	if err := be.ForceCommit(); err != nil {
		t.Fatal(err)
	}
	if err := be.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.CompactRev() != 15 {
		t.Fatalf("compact rev %d", s.CompactRev())
	}
	if _, err := s.Range(RangeRequest{Key: []byte("k"), Revision: 14}); !errors.Is(err, ErrCompacted) {
		t.Errorf("below the resumed compaction: %v", err)
	}
	done, err := s.Compact(15)
	if !errors.Is(err, ErrCompacted) {
		t.Fatal(err)
	}
	<-done
	if got, want := records(t, s), []string{"15.0 k", "16.0 k", "17.0 k", "18.0 k", "19.0 k", "20.0 k", "21.0 k"}; !slices.Equal(got, want) {
		t.Errorf("records %v", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v, err := s.be.Get(backend.MetaBucket, finishedCompactKey); err != nil || len(v) != 8 {
		t.Errorf("finished mark %x %v", v, err)
	}
}

// Revision after reopen when the newest records were tombstones that a
// compaction removed.
func TestRevisionSurvivesCompactedTail(t *testing.T) {
	s, path := openTestStore(t, testOptions())
	mustPut(t, s, "a", "1")
	mustDelete(t, s, "a", "") // 3
	if _, err := s.Compact(3); err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, "b", "1")   // 4
	mustDelete(t, s, "b", "") // 5
	done, err := s.Compact(5)
	if err != nil {
		t.Fatal(err)
	}
	<-done
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Rev() != 5 || s.CompactRev() != 5 {
		t.Errorf("rev %d compact %d, want 5 5", s.Rev(), s.CompactRev())
	}
	if r := mustPut(t, s, "c", "1"); r.Revision != 6 {
		t.Errorf("next put at %d", r.Revision)
	}
}

func TestHashKV(t *testing.T) {
	a, b := newTestStore(t), newTestStore(t)
	apply := func(s *Store) {
		for i := range 40 {
			mustPut(t, s, fmt.Sprintf("k%d", i%7), fmt.Sprint(i))
			if i%9 == 0 {
				mustDelete(t, s, fmt.Sprintf("k%d", i%5), "")
			}
		}
		if _, err := s.Txn(TxnRequest{Success: []RequestOp{put("t1", "x"), del("k1", "k3")}}); err != nil {
			t.Fatal(err)
		}
	}
	apply(a)
	apply(b)
	for _, rev := range []int64{0, 10, 30, a.Rev()} {
		ha, err := a.HashKV(rev)
		if err != nil {
			t.Fatal(err)
		}
		hb, err := b.HashKV(rev)
		if err != nil {
			t.Fatal(err)
		}
		if ha != hb {
			t.Errorf("rev %d: %+v != %+v", rev, ha, hb)
		}
	}
	// Compaction: the hash must not depend on how far the removal got.
	opts := testOptions()
	opts.CompactionBatch = 1
	c, _ := openTestStore(t, opts)
	apply(c)
	compactAt := a.Rev() - 5
	da, err := a.Compact(compactAt)
	if err != nil {
		t.Fatal(err)
	}
	<-da
	if _, err := c.Compact(compactAt); err != nil {
		t.Fatal(err)
	}
	ha, _ := a.HashKV(0)
	hc, _ := c.HashKV(0) // c's removal is likely still running
	if ha != hc || ha.CompactRevision != compactAt || ha.HashRevision != a.Rev() {
		t.Errorf("after compaction: %+v vs %+v", ha, hc)
	}
	if _, err := a.HashKV(compactAt - 1); !errors.Is(err, ErrCompacted) {
		t.Errorf("below compaction: %v", err)
	}
	if _, err := a.HashKV(a.Rev() + 1); !errors.Is(err, ErrFutureRev) {
		t.Errorf("future: %v", err)
	}
	if h, err := a.HashKV(-1); err != nil || h.Hash != crc32.Checksum([]byte("key"), castagnoli) {
		t.Errorf("negative revision: %+v %v", h, err)
	}
	// A divergent write changes the hash from its revision on.
	before := a.Rev()
	mustPut(t, a, "k1", "divergent")
	mustPut(t, b, "k1", "other")
	ha, _ = a.HashKV(0)
	hb, _ := b.HashKV(0)
	if ha.Hash == hb.Hash {
		t.Errorf("divergent stores hash alike: %x", ha.Hash)
	}
	ha, _ = a.HashKV(before)
	if hc, _ = c.HashKV(before); ha.Hash != hc.Hash || ha.HashRevision != hc.HashRevision {
		t.Errorf("history before the divergence differs: %+v %+v", ha, hc)
	}
}

// TestReadsDuringCompaction reads history while the writer compacts it in
// tiny batches and the committer commits every millisecond: a reader must
// get either its answer or ErrCompacted, never a missing record.
func TestReadsDuringCompaction(t *testing.T) {
	opts := testOptions()
	opts.Backend.BatchInterval = time.Millisecond
	opts.CompactionBatch = 5
	s, _ := openTestStore(t, opts)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	for r := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(r), 2))
			for {
				select {
				case <-stop:
					return
				default:
				}
				lo, hi := max(s.CompactRev(), 1), s.Rev()
				rev := lo + rnd.Int64N(hi-lo+1)
				resp, err := s.Range(RangeRequest{Key: []byte("\x00"), RangeEnd: []byte("\x00"), Revision: rev})
				if errors.Is(err, ErrCompacted) {
					continue
				}
				if err != nil {
					errc <- err
					return
				}
				for _, kv := range resp.Kvs {
					if kv.ModRevision > rev {
						errc <- fmt.Errorf("read at %d returned %s", rev, kvString(kv))
						return
					}
				}
				if _, err := s.Events(rev, 0, []byte("\x00"), []byte("\x00"), 50); err != nil && !errors.Is(err, ErrCompacted) {
					errc <- err
					return
				}
			}
		}()
	}
	for i := range 1500 {
		mustPut(t, s, fmt.Sprintf("k%02d", i%50), fmt.Sprint(i))
		if i%100 == 99 {
			if _, err := s.Compact(s.Rev() - 20); err != nil {
				t.Fatal(err)
			}
		}
	}
	close(stop)
	wg.Wait()
	select {
	case err := <-errc:
		t.Fatal(err)
	default:
	}
}
