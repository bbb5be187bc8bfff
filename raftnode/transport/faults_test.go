package transport

import (
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

var probeIndex atomic.Uint64

// probe sends one message from a to b and reports whether it was delivered.
// Every message is either written or discarded by the fault hook, both
// counted, so the answer needs no timeout guess.
func probe(t *testing.T, a, b *node) bool {
	t.Helper()
	before := stats(t, a, b.id)
	index := probeIndex.Add(1)
	a.tr.Send([]*raftpb.Message{appMsg(a.id, b.id, index, nil)})
	eventually(t, fmt.Sprintf("%x→%x decided", a.id, b.id), func() bool {
		s := stats(t, a, b.id)
		return s.Sent+s.FaultDropped == before.Sent+before.FaultDropped+1
	})
	if stats(t, a, b.id).FaultDropped > before.FaultDropped {
		return false
	}
	eventually(t, fmt.Sprintf("%x→%x delivered", a.id, b.id), func() bool { return b.raft.hasIndex(raftpb.MsgApp, index) })
	return true
}

func TestFaultsCutAndHeal(t *testing.T) {
	type link struct{ from, to uint64 }
	all := []link{{1, 2}, {2, 1}, {1, 3}, {3, 1}, {2, 3}, {3, 2}}
	tests := []struct {
		name    string
		apply   func(f *Faults)
		blocked []link
	}{
		{"none", func(f *Faults) {}, nil},
		{"cut", func(f *Faults) { f.Cut(1, 2) }, []link{{1, 2}, {2, 1}}},
		{"cut one way", func(f *Faults) { f.CutOneWay(1, 2) }, []link{{1, 2}}},
		{"isolate", func(f *Faults) { f.Isolate(1) }, []link{{1, 2}, {2, 1}, {1, 3}, {3, 1}}},
		{"drop all", func(f *Faults) { f.DropRate(3, 2, 1) }, []link{{3, 2}}},
		{"drop rate removed", func(f *Faults) { f.DropRate(3, 2, 1); f.DropRate(3, 2, 0) }, nil},
		{"heal", func(f *Faults) { f.Isolate(2); f.Cut(1, 3); f.Delay(1, 2, time.Hour); f.Heal() }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &Faults{}
			withFaults := func(c *Config) { c.Faults = f }
			nodes := map[uint64]*node{1: startNode(t, 1, withFaults), 2: startNode(t, 2, withFaults), 3: startNode(t, 3, withFaults)}
			connect(nodes[1], nodes[2], nodes[3])
			tt.apply(f)
			for _, l := range all {
				want := !slices.Contains(tt.blocked, l)
				if got := probe(t, nodes[l.from], nodes[l.to]); got != want {
					t.Errorf("%x→%x delivered = %v, want %v", l.from, l.to, got, want)
				}
			}
			// A cut is not a dead peer: raft must find out by itself. Only a
			// real failure (none is expected here) may cause a report.
			for id, n := range nodes {
				for peer := range nodes {
					if peer == id {
						continue
					}
					s := stats(t, n, peer)
					if c := n.raft.unreachableCount(peer); uint64(c) > s.DialFailures+s.Connects-1 {
						t.Errorf("member %x reported %x unreachable %d times; stats %+v", id, peer, c, s)
					}
				}
			}
			if t.Failed() {
				return
			}
			// Healing restores every link.
			f.Heal()
			for _, l := range all {
				if !probe(t, nodes[l.from], nodes[l.to]) {
					t.Errorf("%x→%x blocked after Heal", l.from, l.to)
				}
			}
		})
	}
}

func TestFaultsDelayKeepsOrder(t *testing.T) {
	f := &Faults{}
	a, b := startNode(t, 1, func(c *Config) { c.Faults = f }), startNode(t, 2)
	connect(a, b)
	a.tr.Send([]*raftpb.Message{appMsg(1, 2, 1, nil)})
	eventually(t, "stream up", func() bool { return b.raft.hasIndex(raftpb.MsgApp, 1) })

	const delay = 150 * time.Millisecond
	f.Delay(1, 2, delay)
	start := time.Now()
	for i := uint64(2); i <= 6; i++ {
		a.tr.Send([]*raftpb.Message{appMsg(1, 2, i, nil)})
	}
	eventually(t, "delayed messages", func() bool { return len(b.raft.messages()) == 6 })
	b.raft.mu.Lock()
	defer b.raft.mu.Unlock()
	if got := indices(b.raft.msgs); !slices.Equal(got, seq(1, 6)) {
		t.Fatalf("order %v", got)
	}
	for i, at := range b.raft.arrived[1:] {
		if d := at.Sub(start); d < delay {
			t.Fatalf("message %d arrived after %v, before the %v delay", i+2, d, delay)
		}
	}
}

func TestFaultsDropRate(t *testing.T) {
	f := &Faults{}
	a, b := startNode(t, 1, func(c *Config) { c.Faults = f }), startNode(t, 2)
	connect(a, b)
	f.DropRate(1, 2, 0.5)
	const total = 400
	for i := uint64(1); i <= total; i++ {
		a.tr.Send([]*raftpb.Message{appMsg(1, 2, i, nil)})
	}
	eventually(t, "all decided", func() bool { s := stats(t, a, 2); return s.Sent+s.FaultDropped == total })
	s := stats(t, a, 2)
	eventually(t, "survivors delivered", func() bool { return uint64(len(b.raft.messages())) == s.Sent })
	if s.Sent == 0 || s.FaultDropped == 0 {
		t.Fatalf("stats %+v: want some delivered and some dropped at p=0.5", s)
	}
	if got := indices(b.raft.messages()); !slices.IsSorted(got) {
		t.Fatalf("survivors out of order: %v", got)
	}
}

func TestFaultsSnapshot(t *testing.T) {
	f := &Faults{}
	a, b := startNode(t, 1, func(c *Config) { c.Faults = f }), startNode(t, 2)
	a.store.size = 1000
	connect(a, b)
	f.Cut(1, 2)
	a.tr.Send([]*raftpb.Message{snapMsg(1, 2, 10)})
	eventually(t, "report", func() bool { return len(a.raft.reports()) == 1 })
	if r := a.raft.reports()[0]; r.status != raft.SnapshotFailure {
		t.Fatalf("report %+v, want failure", r)
	}
	if len(b.store.receivedAll()) != 0 || a.raft.unreachableCount(2) != 0 {
		t.Fatal("a cut snapshot reached the peer or reported it unreachable")
	}
	f.Heal()
	a.tr.Send([]*raftpb.Message{snapMsg(1, 2, 11)})
	eventually(t, "report", func() bool { return len(a.raft.reports()) == 2 })
	if r := a.raft.reports()[1]; r.status != raft.SnapshotFinish {
		t.Fatalf("report %+v, want finish", r)
	}
}

func TestFaultsNilAndZero(t *testing.T) {
	var nilFaults *Faults
	if drop, d := nilFaults.verdict(1, 2); drop || d != 0 {
		t.Fatal("nil Faults has rules")
	}
	var f Faults
	f.Heal()
	f.Delay(1, 2, 0)
	if drop, d := f.verdict(1, 2); drop || d != 0 {
		t.Fatal("zero Faults has rules")
	}
}
