package wal

import (
	"fmt"
	"os"
	"testing"
)

// BenchmarkWALSave measures Save of batches of 256-byte entries (one write
// and one fdatasync per Save, a hard state in every batch as raft's Ready
// usually has), and, for comparison, the raw rate of 256-byte write +
// fdatasync on a preallocated file in the same directory: the ceiling for
// batch=1.
func BenchmarkWALSave(b *testing.B) {
	root := b.TempDir()
	data := make([]byte, 256)
	for i := range data {
		data[i] = byte('a' + i%26)
	}
	for _, batch := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			// The function runs once per b.N tried: a fresh log each time.
			dir, err := os.MkdirTemp(root, fmt.Sprintf("batch-%d-", batch))
			if err != nil {
				b.Fatal(err)
			}
			w, err := Create(dir, testMD, Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer func() {
				if err := w.Close(); err != nil {
					b.Fatal(err)
				}
				if err := os.RemoveAll(dir); err != nil {
					b.Fatal(err)
				}
			}()
			es := make([]Entry, batch)
			next := uint64(1)
			b.SetBytes(int64(batch * len(data)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for j := range es {
					es[j] = Entry{Index: next, Term: 1, Type: 0, Data: data}
					next++
				}
				if err := w.Save(HardState{Term: 1, Vote: 1, Commit: next - 1}, es); err != nil {
					b.Fatal(err)
				}
				if len(w.segs) > 2 {
					// Keep the disk footprint bounded; in a server a
					// snapshotter does this off the raft loop.
					b.StopTimer()
					if err := w.SaveSnapshot(Snapshot{Index: next - 1, Term: 1}); err != nil {
						b.Fatal(err)
					}
					if err := w.ReleaseTo(next - 1); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
				}
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "entries/s")
		})
	}
	b.Run("fdatasync", func(b *testing.B) {
		const size = DefaultSegmentSize
		f, err := os.CreateTemp(root, "fdatasync-")
		if err != nil {
			b.Fatal(err)
		}
		defer func() {
			if err := f.Close(); err != nil {
				b.Fatal(err)
			}
			if err := os.Remove(f.Name()); err != nil {
				b.Fatal(err)
			}
		}()
		// Prepared the way the WAL prepares its segments (spare.go).
		if err := fillSegment(f, f.Name(), size, nil); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(data)))
		b.ResetTimer()
		var off int64
		for i := 0; i < b.N; i++ {
			if _, err := f.WriteAt(data, off); err != nil {
				b.Fatal(err)
			}
			if err := datasync(f); err != nil {
				b.Fatal(err)
			}
			if off += int64(len(data)); off+int64(len(data)) > size {
				off = 0
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "syncs/s")
	})
}
