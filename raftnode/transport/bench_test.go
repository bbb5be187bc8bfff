package transport

import (
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
)

// BenchmarkTransportSend measures messages per second from A to B over
// loopback: MsgApp with one 256-byte entry, handed to Send 64 at a time (a
// busy Ready), with at most half a queue outstanding so nothing is dropped.
func BenchmarkTransportSend(b *testing.B) {
	a, r := startNode(b, 1), startNode(b, 2)
	r.raft.discard = true
	a.tr.AddPeer(2, []string{r.url})
	const perSend = 64
	msgs := make([]*raftpb.Message, perSend)
	for i := range msgs {
		msgs[i] = appMsg(1, 2, uint64(i), make([]byte, 256))
	}
	a.tr.Send(msgs[:1])
	eventually(b, "warm-up message", func() bool { return r.raft.count.Load() == 1 })
	window := uint64(a.tr.cfg.QueueSize / 2)

	b.ReportAllocs()
	b.ResetTimer()
	var sent uint64
	for sent < uint64(b.N) {
		n := min(perSend, uint64(b.N)-sent)
		for sent-(r.raft.count.Load()-1) > window {
			time.Sleep(20 * time.Microsecond)
		}
		a.tr.Send(msgs[:n])
		sent += n
	}
	for r.raft.count.Load()-1 < sent {
		time.Sleep(20 * time.Microsecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	s := stats(b, a, 2)
	if s.Dropped != 0 {
		b.Fatalf("%d messages dropped", s.Dropped)
	}
	b.ReportMetric(float64(s.Sent)/float64(s.Batches), "msgs/batch")
}
