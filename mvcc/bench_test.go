package mvcc

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
)

// Benchmarks run with the default backend options (commits every 100ms or
// 10,000 writes, fsync on), as the server would.
//
//	go test ./mvcc -run '^$' -bench . -benchmem

func benchStore(b *testing.B) *Store {
	b.Helper()
	s, err := Open(filepath.Join(b.TempDir(), "db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := s.Close(); err != nil {
			b.Error(err)
		}
	})
	return s
}

func benchKeys(n int) [][]byte {
	keys := make([][]byte, n)
	for i := range keys {
		keys[i] = []byte(fmt.Sprintf("key%08d", i))
	}
	return keys
}

func BenchmarkPut(b *testing.B) {
	val := bytes.Repeat([]byte("v"), 256)
	keys := benchKeys(100000)
	for _, entries := range []bool{false, true} {
		name := "standalone"
		if entries {
			name = "raft-entries" // SetConsistentIndex before each put
		}
		b.Run(name, func(b *testing.B) {
			s := benchStore(b)
			b.SetBytes(int64(len(val)))
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if entries {
					s.SetConsistentIndex(uint64(i+1), 1)
				}
				if _, err := s.Put(PutRequest{Key: keys[i%len(keys)], Value: val}); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

func benchFill(b *testing.B, n int) (*Store, [][]byte) {
	s := benchStore(b)
	keys := benchKeys(n)
	val := bytes.Repeat([]byte("v"), 256)
	for i := 0; i < n; i += 500 {
		var ops []RequestOp
		for _, k := range keys[i:min(i+500, n)] {
			ops = append(ops, RequestOp{Put: &PutRequest{Key: k, Value: val}})
		}
		if _, err := s.Txn(TxnRequest{Success: ops}); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.ForceCommit(); err != nil {
		b.Fatal(err)
	}
	return s, keys
}

func BenchmarkRange(b *testing.B) {
	const n = 100000
	s, keys := benchFill(b, n)
	run := func(b *testing.B, span int, parallel bool) {
		do := func(rnd *rand.Rand) {
			i := rnd.IntN(n - span)
			req := RangeRequest{Key: keys[i]}
			if span > 1 {
				req.RangeEnd = keys[i+span]
			}
			resp, err := s.Range(req)
			if err != nil || len(resp.Kvs) != span {
				b.Fatalf("%v %v", resp, err)
			}
		}
		b.ReportAllocs()
		if parallel {
			b.RunParallel(func(pb *testing.PB) {
				rnd := rand.New(rand.NewPCG(rand.Uint64(), 0))
				for pb.Next() {
					do(rnd)
				}
			})
			return
		}
		rnd := rand.New(rand.NewPCG(1, 0))
		for b.Loop() {
			do(rnd)
		}
	}
	b.Run("single", func(b *testing.B) { run(b, 1, false) })
	b.Run("range100", func(b *testing.B) { run(b, 100, false) })
	b.Run("single-parallel", func(b *testing.B) { run(b, 1, true) })
	b.Run("range100-parallel", func(b *testing.B) { run(b, 100, true) })
}

// BenchmarkTxn is a compare-and-swap: compare the key's version, put.
func BenchmarkTxn(b *testing.B) {
	const n = 10000
	s, keys := benchFill(b, n)
	val := bytes.Repeat([]byte("v"), 256)
	versions := make([]int64, n)
	for i := range versions {
		versions[i] = 1
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		k := i % n
		r, err := s.Txn(TxnRequest{
			Compare: []Compare{{Key: keys[k], Target: CompareVersion, Result: CompareEqual, Version: versions[k]}},
			Success: []RequestOp{{Put: &PutRequest{Key: keys[k], Value: val}}},
		})
		if err != nil || !r.Succeeded {
			b.Fatalf("%v %v", r, err)
		}
		versions[k]++
		i++
	}
}
