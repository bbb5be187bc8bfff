package mvcc

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestDefragmentUnderLoad runs a writer (puts and compactions) and readers
// while Defragment rewrites a file of several MB, and checks that no
// operation waited for the defragmentation (etcd's design blocks every
// request for all of it), that the data is intact, and that the file
// shrank.
func TestDefragmentUnderLoad(t *testing.T) {
	keys := 12000
	if testing.Short() {
		keys = 4000
	}
	opts := testOptions()
	opts.Backend.BatchInterval = 10 * time.Millisecond
	opts.Backend.BatchLimit = 1000
	s, path := openTestStore(t, opts)

	big := bytes.Repeat([]byte("x"), 1000)
	for round := range 2 {
		for i := 0; i < keys; i += 200 {
			var ops []RequestOp
			for j := i; j < i+200 && j < keys; j++ {
				ops = append(ops, RequestOp{Put: &PutRequest{Key: []byte(fmt.Sprintf("k%05d", j)), Value: append(big[:len(big):len(big)], byte(round))}})
			}
			if _, err := s.Txn(TxnRequest{Success: ops}); err != nil {
				t.Fatal(err)
			}
		}
	}
	done, err := s.Compact(s.Rev())
	if err != nil {
		t.Fatal(err)
	}
	<-done

	var (
		stop      = make(chan struct{})
		wg        sync.WaitGroup
		started   sync.WaitGroup
		inWindow  atomic.Bool
		windowOps [2]atomic.Int64 // reads, writes completed during the defrag
		maxLat    [2]atomic.Int64 // nanoseconds, over operations that overlapped it
		failure   atomic.Pointer[error]
		lastVal   = map[string]string{}
	)
	fail := func(err error) { failure.CompareAndSwap(nil, &err) }
	observe := func(kind int, start time.Time, overlapped bool) {
		d := time.Since(start)
		if overlapped || inWindow.Load() {
			for {
				cur := maxLat[kind].Load()
				if int64(d) <= cur || maxLat[kind].CompareAndSwap(cur, int64(d)) {
					break
				}
			}
		}
		if inWindow.Load() {
			windowOps[kind].Add(1)
		}
	}
	wg.Add(1)
	started.Add(1)
	go func() { // the writer: puts, and a compaction now and then
		defer wg.Done()
		first := true
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			k, v := fmt.Sprintf("load%03d", i%300), fmt.Sprint(i)
			begin, was := time.Now(), inWindow.Load()
			if _, err := s.Put(PutRequest{Key: []byte(k), Value: []byte(v)}); err != nil {
				fail(err)
				return
			}
			lastVal[k] = v
			if i%500 == 499 {
				if _, err := s.Compact(s.Rev() - 100); err != nil {
					fail(err)
					return
				}
			}
			observe(1, begin, was)
			if first {
				first = false
				started.Done()
			}
		}
	}()
	for r := range 3 {
		wg.Add(1)
		started.Add(1)
		go func() { // readers: single keys and 100-key ranges
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(r), 1))
			first := true
			for {
				select {
				case <-stop:
					return
				default:
				}
				i := rnd.IntN(keys - 100)
				req := RangeRequest{Key: []byte(fmt.Sprintf("k%05d", i))}
				if rnd.IntN(2) == 0 {
					req.RangeEnd = []byte(fmt.Sprintf("k%05d", i+100))
				}
				begin, was := time.Now(), inWindow.Load()
				resp, err := s.Range(req)
				if err != nil {
					fail(err)
					return
				}
				if n := len(resp.Kvs); (req.RangeEnd == nil && n != 1) || (req.RangeEnd != nil && n != 100) {
					fail(fmt.Errorf("range %s: %d keys", req.Key, n))
					return
				}
				observe(0, begin, was)
				if first {
					first = false
					started.Done()
				}
			}
		}()
	}
	started.Wait()

	inWindow.Store(true)
	t0 := time.Now()
	st, err := s.Defragment()
	took := time.Since(t0)
	inWindow.Store(false)
	close(stop)
	wg.Wait()
	if p := failure.Load(); p != nil {
		t.Fatal(*p)
	}
	if err != nil {
		t.Fatal(err)
	}
	reads, writes := windowOps[0].Load(), windowOps[1].Load()
	maxRead, maxWrite := time.Duration(maxLat[0].Load()), time.Duration(maxLat[1].Load())
	t.Logf("defrag %v (pause %v, %d rounds, %d records): size %d -> %d, in use %d -> %d; during it %d reads (max %v), %d writes (max %v)",
		took, st.Pause, st.Rounds, st.Copied, st.SizeBefore, st.SizeAfter, st.InUseBefore, st.InUseAfter, reads, maxRead, writes, maxWrite)

	if st.SizeAfter >= st.SizeBefore*3/4 {
		t.Errorf("file did not shrink: %d -> %d", st.SizeBefore, st.SizeAfter)
	}
	if reads < 20 || writes < 20 {
		t.Errorf("too few operations completed during the defragmentation: %d reads, %d writes", reads, writes)
	}
	// etcd would hold every request for the whole copy; here none may wait
	// for more than a fraction of it (generously, for the race detector).
	bound := max(took/3, 150*time.Millisecond)
	if maxRead > bound || maxWrite > bound {
		t.Errorf("an operation waited %v (read) / %v (write) during a %v defragmentation; bound %v", maxRead, maxWrite, took, bound)
	}

	// Data intact: every value, and the same state after a reopen.
	all := mustRange(t, s, RangeRequest{Key: []byte("k"), RangeEnd: []byte("l")})
	for i, kv := range all.Kvs {
		want := append(big[:len(big):len(big)], 1)
		if string(kv.Key) != fmt.Sprintf("k%05d", i) || !bytes.Equal(kv.Value, want) || kv.Version != 2 {
			t.Fatalf("%s: version %d, %d bytes", kv.Key, kv.Version, len(kv.Value))
		}
	}
	for k, v := range lastVal {
		if got := get(t, s, k); got == nil || string(got.Value) != v {
			t.Fatalf("%s = %v, want %s", k, got, v)
		}
	}
	if len(all.Kvs) != keys {
		t.Errorf("%d keys, want %d", len(all.Kvs), keys)
	}
	hashNow, err := s.HashKV(0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ForceCommit(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if h, err := s2.HashKV(0); err != nil || h != hashNow {
		t.Errorf("after reopen: %+v, want %+v (%v)", h, hashNow, err)
	}
}
