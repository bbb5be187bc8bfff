package transport

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
)

func TestNewRejectsBadConfig(t *testing.T) {
	ok := Config{ID: 1, ClusterID: 2, Raft: newFakeRaft(nil), Snapshots: &fakeStore{},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	tests := []struct {
		name string
		edit func(*Config)
	}{
		{"zero ID", func(c *Config) { c.ID = 0 }},
		{"zero cluster", func(c *Config) { c.ClusterID = 0 }},
		{"no raft", func(c *Config) { c.Raft = nil }},
		{"no snapshots", func(c *Config) { c.Snapshots = nil }},
		{"huge frames", func(c *Config) { c.MaxFrameSize = 1 << 32 }},
		{"backoff order", func(c *Config) { c.MinBackoff, c.MaxBackoff = time.Second, time.Millisecond }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ok
			tt.edit(&cfg)
			if _, err := New(cfg); !errors.Is(err, ErrConfig) {
				t.Fatalf("New: %v, want ErrConfig", err)
			}
		})
	}
	tr, err := New(ok)
	if err != nil {
		t.Fatal(err)
	}
	tr.Stop()
}

func TestStreamDeliversInOrderInBatches(t *testing.T) {
	a, b := startNode(t, 1), startNode(t, 2)
	connect(a, b)
	const total = 1000
	for i := uint64(1); i <= total; i += 10 {
		var msgs []*raftpb.Message
		for j := i; j < i+10; j++ {
			msgs = append(msgs, appMsg(1, 2, j, []byte("payload")))
		}
		a.tr.Send(msgs)
	}
	b.tr.Send([]*raftpb.Message{appMsg(2, 1, 7, nil)})

	eventually(t, "1000 messages at B", func() bool { return len(b.raft.messages()) == total })
	if got := indices(b.raft.messages()); !slices.Equal(got, seq(1, total)) {
		t.Fatalf("B received indices %v..., want 1..%d in order", got[:min(20, len(got))], total)
	}
	for _, m := range b.raft.messages() {
		if m.GetFrom() != 1 || string(m.GetEntries()[0].GetData()) != "payload" {
			t.Fatalf("message altered in transit: %v", m)
		}
	}
	eventually(t, "reply at A", func() bool { return a.raft.hasIndex(raftpb.MsgApp, 7) })

	eventually(t, "sender's count", func() bool { return stats(t, a, 2).Sent == total })
	s := stats(t, a, 2)
	if s.Sent != total || s.Dropped != 0 || s.Batches == 0 || s.Batches >= total {
		t.Fatalf("stats %+v: want %d sent in fewer batches, none dropped", s, total)
	}
	t.Logf("%d messages in %d batches", s.Sent, s.Batches)
	if got := a.tr.ActivePeers(); !slices.Equal(got, []uint64{2}) {
		t.Fatalf("ActivePeers = %v, want [2]", got)
	}
	if n := a.raft.unreachableCount(2); n != 0 {
		t.Fatalf("%d unreachable reports on a healthy link", n)
	}
}

// freeAddr returns a loopback address nobody listens on (for now).
func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestConnectsOncePeerStarts(t *testing.T) {
	a := startNode(t, 1)
	addr := freeAddr(t)
	a.tr.AddPeer(2, []string{"http://" + addr})
	a.tr.Send([]*raftpb.Message{appMsg(1, 2, 1, nil)})
	eventually(t, "unreachable report", func() bool { return a.raft.unreachableCount(2) > 0 })
	eventually(t, "several dial failures", func() bool { return stats(t, a, 2).DialFailures >= 3 })
	if s := stats(t, a, 2); s.Active || s.Connects != 0 {
		t.Fatalf("stats %+v: connected to nothing", s)
	}

	b := startNodeAt(t, 2, addr)
	eventually(t, "queued message at B", func() bool { return b.raft.hasIndex(raftpb.MsgApp, 1) })
	a.tr.Send([]*raftpb.Message{appMsg(1, 2, 2, nil)})
	eventually(t, "second message at B", func() bool { return b.raft.hasIndex(raftpb.MsgApp, 2) })
	if got := a.tr.ActivePeers(); !slices.Equal(got, []uint64{2}) {
		t.Fatalf("ActivePeers = %v, want [2]", got)
	}
}

func TestReconnectsAfterPeerRestart(t *testing.T) {
	a, b := startNode(t, 1), startNode(t, 2)
	connect(a, b)
	a.tr.Send([]*raftpb.Message{appMsg(1, 2, 1, nil)})
	eventually(t, "first message", func() bool { return b.raft.hasIndex(raftpb.MsgApp, 1) })

	b.stop()
	eventually(t, "A notices B is gone", func() bool {
		return a.raft.unreachableCount(2) > 0 && len(a.tr.ActivePeers()) == 0
	})
	b2 := startNodeAt(t, 2, b.addr)
	eventually(t, "stream reopened", func() bool { s := stats(t, a, 2); return s.Active && s.Connects >= 2 })
	a.tr.Send([]*raftpb.Message{appMsg(1, 2, 2, nil)})
	eventually(t, "message after restart", func() bool { return b2.raft.hasIndex(raftpb.MsgApp, 2) })
	if b2.raft.hasIndex(raftpb.MsgApp, 1) {
		t.Fatal("message delivered twice")
	}
}

func TestUpdatePeerRedials(t *testing.T) {
	a := startNode(t, 1, func(c *Config) { c.MinBackoff, c.MaxBackoff = time.Minute, time.Minute })
	b := startNode(t, 2)
	a.tr.AddPeer(2, []string{"http://" + freeAddr(t)})
	eventually(t, "dial failure", func() bool { return stats(t, a, 2).DialFailures > 0 })
	// The sender now waits a minute; UpdatePeer must cut that short, or
	// eventually gives up first.
	a.tr.UpdatePeer(2, []string{b.url})
	a.tr.Send([]*raftpb.Message{appMsg(1, 2, 1, nil)})
	eventually(t, "message via new URL", func() bool { return b.raft.hasIndex(raftpb.MsgApp, 1) })
	// Same URLs again: no redial.
	a.tr.UpdatePeer(2, []string{b.url, "http://" + freeAddr(t)})
	a.tr.Send([]*raftpb.Message{appMsg(1, 2, 2, nil)})
	eventually(t, "second message", func() bool { return b.raft.hasIndex(raftpb.MsgApp, 2) })
	if s := stats(t, a, 2); s.Connects != 1 {
		t.Fatalf("stats %+v: the stream was reopened though its URL is still listed", s)
	}
}

func TestRemovePeer(t *testing.T) {
	a, b := startNode(t, 1), startNode(t, 2)
	connect(a, b)
	a.tr.Send([]*raftpb.Message{appMsg(1, 2, 1, nil)})
	eventually(t, "message", func() bool { return b.raft.hasIndex(raftpb.MsgApp, 1) })
	a.tr.RemovePeer(2)
	a.tr.RemovePeer(2)
	if _, ok := a.tr.Stats(2); ok {
		t.Fatal("stats of a removed peer")
	}
	a.tr.Send([]*raftpb.Message{appMsg(1, 2, 2, nil), snapMsg(1, 2, 9)}) // dropped, no panic
	if len(a.tr.ActivePeers()) != 0 {
		t.Fatal("removed peer still active")
	}
}

func TestOversizedMessageDroppedBySender(t *testing.T) {
	a, b := startNode(t, 1, func(c *Config) { c.MaxFrameSize = 1024 }), startNode(t, 2)
	connect(a, b)
	a.tr.Send([]*raftpb.Message{appMsg(1, 2, 1, make([]byte, 2048)), appMsg(1, 2, 2, nil)})
	eventually(t, "small message", func() bool { return b.raft.hasIndex(raftpb.MsgApp, 2) })
	if b.raft.hasIndex(raftpb.MsgApp, 1) {
		t.Fatal("oversized message delivered")
	}
	if s := stats(t, a, 2); s.Dropped != 1 {
		t.Fatalf("stats %+v: want 1 dropped", s)
	}
}

func TestQueueFullDrops(t *testing.T) {
	// Nobody listens, so the queue only fills.
	a := startNode(t, 1, func(c *Config) { c.QueueSize = 8 })
	a.tr.AddPeer(2, []string{"http://" + freeAddr(t)})
	var msgs []*raftpb.Message
	for i := range uint64(20) {
		msgs = append(msgs, appMsg(1, 2, i, nil))
	}
	a.tr.Send(msgs)
	if s := stats(t, a, 2); s.Dropped < 20-8-1 { // the sender may hold one
		t.Fatalf("stats %+v: want at least 11 dropped", s)
	}
}

func TestStopIsIdempotentAndFinal(t *testing.T) {
	a, b := startNode(t, 1), startNode(t, 2)
	connect(a, b)
	a.tr.Send([]*raftpb.Message{appMsg(1, 2, 1, nil)})
	eventually(t, "message", func() bool { return b.raft.hasIndex(raftpb.MsgApp, 1) })
	a.tr.Stop()
	a.tr.Stop()
	a.tr.Send([]*raftpb.Message{appMsg(1, 2, 2, nil)})
	a.tr.AddPeer(3, []string{b.url})
	if len(a.tr.ActivePeers()) != 0 {
		t.Fatal("peers after Stop")
	}
	// A stopped transport refuses new streams.
	b.tr.Stop()
	a2 := startNode(t, 5)
	a2.tr.AddPeer(2, []string{b.url})
	eventually(t, "refused", func() bool { return stats(t, a2, 2).DialFailures > 0 })
}

// TestStopUnblocks stops transports while a handler is stuck in Process, a
// sender is stuck writing to a peer that does not read, and a snapshot
// transfer is in the middle of its data.
func TestStopUnblocks(t *testing.T) {
	// A peer that accepts the stream and never reads from it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		buf := make([]byte, 4096)
		n, _ := conn.Read(buf) // the upgrade request, in one segment on loopback
		_ = n
		_, _ = conn.Write([]byte("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + streamProtocol + "\r\n\r\n"))
		accepted <- conn
	}()
	hold := make(chan struct{})
	a := startNode(t, 1, func(c *Config) { c.WriteTimeout = time.Minute })
	a.store.size, a.store.holdAt, a.store.hold = 4<<20, 1<<20, hold
	b := startNode(t, 2)
	b.raft.block = make(chan struct{}) // never closed: Process blocks until Stop
	connect(a, b)
	a.tr.AddPeer(3, []string{"http://" + ln.Addr().String()})
	sink := <-accepted
	if sink == nil {
		t.Fatal("sink did not accept")
	}
	defer sink.Close()

	big := make([]byte, 1<<20)
	for i := range uint64(64) {
		a.tr.Send([]*raftpb.Message{appMsg(1, 3, i, big)})
	}
	a.tr.Send([]*raftpb.Message{appMsg(1, 2, 1, nil), snapMsg(1, 2, 50)})
	eventually(t, "sender blocked on the sink", func() bool { s := stats(t, a, 3); return s.Sent+s.Dropped < 64 && s.Active })
	eventually(t, "B stuck in Process", func() bool { return b.logs.count("inbound stream open") > 0 })

	stopped := make(chan struct{})
	go func() {
		b.stop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("B's Stop is stuck")
	}
	if len(b.raft.messages()) != 0 {
		t.Fatal("Process completed on B")
	}
	close(hold) // let A's WriteSnapshot finish; the transfer fails
	eventually(t, "snapshot failure at A", func() bool { return len(a.raft.reports()) == 1 })
	stopped = make(chan struct{})
	go func() {
		a.stop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("A's Stop is stuck")
	}
}
