package raftnode

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestClusterElectsOneLeader(t *testing.T) {
	for _, size := range []int{1, 3, 5} {
		t.Run(fmt.Sprintf("members=%d", size), func(t *testing.T) {
			c := newCluster(t, size, nil)
			lead := c.waitLeader(c.ids())
			leaders := 0
			for _, m := range c.members {
				if m.node.Status().IsLeader {
					leaders++
				}
			}
			if leaders != 1 {
				t.Fatalf("%d members claim leadership, want 1 (agreed leader %d)", leaders, lead)
			}
		})
	}
}

func TestClusterReplicatesInOrder(t *testing.T) {
	for _, size := range []int{3, 5} {
		t.Run(fmt.Sprintf("members=%d", size), func(t *testing.T) {
			c := newCluster(t, size, nil)
			c.waitLeader(c.ids())
			var (
				wg  sync.WaitGroup
				ctr counter
			)
			const perMember = 40
			for _, m := range c.members {
				wg.Add(1)
				go func(id uint64) {
					defer wg.Done()
					for range perMember {
						c.propose(id, ctr.next(fmt.Sprintf("m%d", id)))
					}
				}(m.id)
			}
			wg.Wait()
			got := c.waitConverged(c.ids(), size*perMember)
			if len(got) != size*perMember {
				t.Fatalf("applied %d entries, want %d", len(got), size*perMember)
			}
			// Each proposer's entries appear in the order it proposed them,
			// since each waited for the previous one to apply.
			for _, m := range c.members {
				prefix := fmt.Sprintf("m%d-", m.id)
				var seen []string
				for _, e := range got {
					if len(e) > len(prefix) && e[:len(prefix)] == prefix {
						seen = append(seen, e)
					}
				}
				if len(seen) != perMember {
					t.Fatalf("member %d: %d of its entries applied, want %d", m.id, len(seen), perMember)
				}
			}
		})
	}
}

func TestClusterMinorityCannotCommit(t *testing.T) {
	c := newCluster(t, 5, nil)
	c.waitLeader(c.ids())
	var ctr counter
	for range 10 {
		c.propose(1, ctr.next("before"))
	}
	c.waitConverged(c.ids(), 10)

	// Cut members 4 and 5 from 1, 2 and 3 (4 and 5 still see each other).
	minority, majority := []uint64{4, 5}, []uint64{1, 2, 3}
	for _, a := range minority {
		for _, b := range majority {
			c.faults.Cut(a, b)
		}
	}
	// Let the minority finish applying whatever it learned was committed
	// before the cut, then freeze its view.
	waitFor(t, waitDeadline, "minority to settle", func() bool {
		for _, id := range minority {
			st := c.member(id).node.Status()
			if st.AppliedIndex != st.CommitIndex {
				return false
			}
		}
		return true
	})
	before := map[uint64][]string{}
	for _, id := range minority {
		before[id], _, _ = c.member(id).sm.snapshotOf()
	}

	// The majority keeps committing.
	c.waitLeader(majority)
	for range 20 {
		c.propose(2, ctr.next("majority"))
	}
	c.waitConverged(majority, 30)

	// The minority cannot: its proposals fail or time out.
	for _, id := range minority {
		ctx, cancel := context.WithTimeout(context.Background(), 3*electionDelay)
		_, err := c.member(id).node.Propose(ctx, []byte(fmt.Sprintf("minority-%d", id)))
		cancel()
		if err == nil {
			t.Fatalf("member %d in the minority committed a proposal", id)
		}
	}
	for _, id := range minority {
		now, _, _ := c.member(id).sm.snapshotOf()
		if !slices.Equal(now, before[id]) {
			t.Fatalf("member %d in the minority applied %d new entries while cut off", id, len(now)-len(before[id]))
		}
	}

	// Heal: everyone converges on the majority's history, and nothing the
	// minority proposed was committed.
	c.faults.Heal()
	c.waitLeader(c.ids())
	c.propose(1, ctr.next("after"))
	got := c.waitConverged(c.ids(), 31)
	for _, e := range got {
		if len(e) >= 8 && e[:8] == "minority" {
			t.Fatalf("an entry proposed in the minority was committed: %q", e)
		}
	}
}

func TestClusterFollowerCatchesUpBySnapshot(t *testing.T) {
	c := newCluster(t, 3, func(cfg *Config) {
		cfg.SnapshotCount = 25
		cfg.SnapshotCatchUpEntries = 5
		cfg.WALSegmentSize = 16 << 10
	})
	lead := c.waitLeader(c.ids())
	var lagging uint64
	for _, m := range c.members {
		if m.id != lead {
			lagging = m.id
			break
		}
	}
	var ctr counter
	c.propose(lead, ctr.next("warmup"))
	c.waitConverged(c.ids(), 1)

	c.faults.Isolate(lagging)
	others := slices.DeleteFunc(c.ids(), func(id uint64) bool { return id == lagging })
	lead = c.waitLeader(others)
	for range 120 { // several snapshots' worth
		c.propose(lead, ctr.next("while-cut"))
	}
	if got := c.member(lead).node.Status().SnapshotsTaken; got < 3 {
		t.Fatalf("leader took %d snapshots while the follower was cut off, want at least 3", got)
	}
	c.faults.Heal()
	got := c.waitConverged(c.ids(), 121)
	if len(got) != 121 {
		t.Fatalf("converged on %d entries, want 121", len(got))
	}
	if _, _, restores := c.member(lagging).sm.snapshotOf(); restores == 0 {
		t.Fatalf("member %d caught up without a snapshot transfer", lagging)
	}

	// The member that installed the snapshot restarts from it.
	c.stopMember(c.member(lagging))
	c.startMember(c.member(lagging), nil)
	c.propose(lead, ctr.next("after-restart"))
	c.waitConverged(c.ids(), 122)
}

func TestClusterLeaderFailover(t *testing.T) {
	c := newCluster(t, 3, nil)
	old := c.waitLeader(c.ids())
	var ctr counter
	c.propose(old, ctr.next("before"))

	killed := time.Now()
	c.stopMember(c.member(old))
	rest := slices.DeleteFunc(c.ids(), func(id uint64) bool { return id == old })
	lead := c.waitLeader(rest)
	elapsed := time.Since(killed)
	if lead == old {
		t.Fatalf("stopped member %d is still the leader", old)
	}
	// Pre-vote and check-quorum: followers wait one randomized election
	// timeout (1-2x) after the last heartbeat, then one vote round. Allow a
	// wide margin for the race detector and a noisy machine.
	if limit := 10 * electionDelay; elapsed > limit {
		t.Fatalf("new leader after %v, want within %v (%d election timeouts)", elapsed, limit, limit/electionDelay)
	}
	t.Logf("new leader %d elected %v after the old leader stopped", lead, elapsed)
	c.propose(rest[0], ctr.next("after"))
	c.waitConverged(rest, 2)
}

func TestClusterRestartKeepsAcknowledged(t *testing.T) {
	c := newCluster(t, 3, func(cfg *Config) {
		cfg.SnapshotCount = 30
		cfg.SnapshotCatchUpEntries = 10
		cfg.WALSegmentSize = 16 << 10
	})
	c.waitLeader(c.ids())
	var (
		ctr   counter
		mu    sync.Mutex
		acked []string
		wg    sync.WaitGroup
	)
	for _, m := range c.members {
		wg.Add(1)
		go func(id uint64) {
			defer wg.Done()
			for range 50 {
				v := ctr.next(fmt.Sprintf("m%d", id))
				c.propose(id, v)
				mu.Lock()
				acked = append(acked, v)
				mu.Unlock()
			}
		}(m.id)
	}
	wg.Wait()
	for _, m := range c.members {
		c.stopMember(m)
	}
	for _, m := range c.members {
		c.startMember(m, nil)
	}
	c.waitLeader(c.ids())
	got := c.waitConverged(c.ids(), len(acked))
	for _, v := range acked {
		if !slices.Contains(got, v) {
			t.Fatalf("acknowledged entry %q lost across a full restart", v)
		}
	}
	// And the cluster still takes writes.
	c.propose(2, ctr.next("after-restart"))
	c.waitConverged(c.ids(), len(acked)+1)
}

func TestClusterLinearizableReadOnFollower(t *testing.T) {
	c := newCluster(t, 3, nil)
	lead := c.waitLeader(c.ids())
	var follower uint64
	for _, m := range c.members {
		if m.id != lead {
			follower = m.id
		}
	}
	// Slow the follower's inbound replication so that, without ReadIndex, it
	// would often not yet have applied what the leader just acknowledged.
	c.faults.Delay(lead, follower, 3*testTick)
	var ctr counter
	for range 10 {
		v := ctr.next("w")
		c.propose(lead, v)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := c.member(follower).node.ReadIndex(ctx)
		cancel()
		if err != nil {
			t.Fatalf("ReadIndex on follower: %v", err)
		}
		ents, _, _ := c.member(follower).sm.snapshotOf()
		if !slices.Contains(ents, v) {
			t.Fatalf("follower's linearizable read after ReadIndex misses %q acknowledged by the leader", v)
		}
	}

	// An isolated member cannot confirm a read.
	c.faults.Heal()
	c.faults.Isolate(follower)
	ctx, cancel := context.WithTimeout(context.Background(), 5*electionDelay)
	defer cancel()
	if err := c.member(follower).node.ReadIndex(ctx); err == nil {
		t.Fatal("ReadIndex succeeded on a member cut off from the cluster")
	}
}

func TestClusterBatchesConcurrentReads(t *testing.T) {
	c := newCluster(t, 3, nil)
	lead := c.waitLeader(c.ids())
	c.propose(lead, "x")
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			errs <- c.member(lead).node.ReadIndex(ctx)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("ReadIndex: %v", err)
		}
	}
	if rounds := c.member(lead).node.reads.seq; rounds >= 100 {
		t.Fatalf("200 concurrent reads took %d read-index rounds, want far fewer", rounds)
	}
}

func TestClusterBatchesConcurrentProposals(t *testing.T) {
	var syncs [4]syncCounter
	c := newCluster(t, 3, func(cfg *Config) {
		cfg.WALAfterSync = syncs[cfg.ID].observe
	})
	lead := c.waitLeader(c.ids())
	c.propose(lead, "warmup")
	before := syncs[lead].load()
	const proposals = 300
	var wg sync.WaitGroup
	for i := range proposals {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.propose(lead, fmt.Sprintf("p%d", i))
		}()
	}
	wg.Wait()
	used := syncs[lead].load() - before
	t.Logf("%d concurrent proposals took %d fsyncs on the leader", proposals, used)
	if used > proposals/3 {
		t.Fatalf("%d concurrent proposals took %d fsyncs on the leader, want batching (at most %d)", proposals, used, proposals/3)
	}
}

type syncCounter struct {
	mu sync.Mutex
	n  int
}

func (s *syncCounter) observe(time.Duration) { s.mu.Lock(); s.n++; s.mu.Unlock() }
func (s *syncCounter) load() int             { s.mu.Lock(); defer s.mu.Unlock(); return s.n }

func TestProposeFailsFastWhenLeaderLost(t *testing.T) {
	c := newCluster(t, 3, nil)
	lead := c.waitLeader(c.ids())
	var follower uint64
	for _, m := range c.members {
		if m.id != lead {
			follower = m.id
		}
	}
	c.faults.Isolate(lead)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	_, err := c.member(follower).node.Propose(ctx, []byte("lost"))
	if !errors.Is(err, ErrLeaderChanged) && !errors.Is(err, ErrProposalDropped) && err != nil {
		t.Fatalf("propose while the leader is cut off: %v, want ErrLeaderChanged or ErrProposalDropped or success", err)
	}
	if ctx.Err() != nil {
		t.Fatalf("proposal waited for its whole deadline (%v) instead of failing on the leader change", time.Since(start))
	}
}

func TestRestartWithWrongClusterFails(t *testing.T) {
	c := newCluster(t, 1, nil)
	c.waitLeader(c.ids())
	c.propose(1, "x")
	m := c.member(1)
	c.stopMember(m)
	sm := openLogSM(t, m.dir+"/sm.json")
	_, err := Start(Config{
		ID: 1, ClusterID: clusterID + 1, Peers: c.peers, Dir: m.dir + "/member", StateMachine: sm,
	})
	if !errors.Is(err, ErrClusterMismatch) {
		t.Fatalf("start with another cluster ID: %v, want ErrClusterMismatch", err)
	}
}
