package watch

import (
	"fmt"
	"sync"
	"testing"

	"github.com/cairnkv/cairn/api/mvccpb"
)

// BenchmarkWatchFanout measures OnWrite alone (the applier's cost), on a
// hub over a history-less source, with consumers draining every stream.
// One op is one revision with one PUT event; ns/event is ns/op, and
// ns/delivery divides it by the watchers it reaches.
//
//   - same-key/watchers=N: N watchers on the written key (100 per stream).
//     The cost grows with N: one response per matching watcher.
//   - distinct/others=N: one watcher on the written key while N others sit
//     on other keys (half single keys, half ranges not holding it). The
//     cost must stay flat as N grows.
func BenchmarkWatchFanout(b *testing.B) {
	for _, n := range []int{1, 10, 100, 1000, 10000} {
		b.Run(fmt.Sprintf("same-key/watchers=%d", n), func(b *testing.B) {
			benchFanout(b, n, 0)
		})
	}
	for _, n := range []int{0, 100, 1000, 10000} {
		b.Run(fmt.Sprintf("distinct/others=%d", n), func(b *testing.B) {
			benchFanout(b, 1, n)
		})
	}
}

func benchFanout(b *testing.B, onKey, others int) {
	h := NewHub(Options{ChanSize: 1024})
	h.Start(&fakeSource{rev: 1})
	defer h.Close()
	const perStream = 100
	var streams []*Stream
	var drained sync.WaitGroup
	add := func(req Request) {
		if len(streams) == 0 || len(streams[len(streams)-1].watchers) == perStream {
			s := h.NewStream()
			streams = append(streams, s)
			drained.Add(1)
			go func() {
				defer drained.Done()
				for range s.Chan() {
				}
			}()
		}
		if _, err := streams[len(streams)-1].Watch(req); err != nil {
			b.Fatal(err)
		}
	}
	key := []byte("bench/target")
	for range onKey {
		add(Request{Key: key})
	}
	for i := range others {
		k := fmt.Appendf(nil, "other/%06d", i)
		if i%2 == 0 {
			add(Request{Key: k})
		} else {
			add(Request{Key: k, RangeEnd: fmt.Appendf(nil, "other/%06d", i+1)})
		}
	}
	value := []byte("v")
	rev := int64(1)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		rev++
		// A fresh event per revision, as the store makes (2 allocations).
		evs := []*mvccpb.Event{{Type: mvccpb.Event_PUT, Kv: &mvccpb.KeyValue{
			Key: key, Value: value, CreateRevision: 2, ModRevision: rev, Version: rev - 1}}}
		h.OnWrite(rev, evs)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/event")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*onKey), "ns/delivery")
	for _, s := range streams {
		s.Close()
	}
	drained.Wait()
}
