package raftnode

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
)

// confChange proposes cc on the current leader of ids, retrying while raft
// is busy with another change or leadership moves, and returns the state
// machine's answer.
func (c *cluster) confChange(ids []uint64, cc ConfChange) any {
	c.t.Helper()
	deadline := time.Now().Add(waitDeadline)
	for {
		lead := c.waitLeader(ids)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		v, err := c.member(lead).node.ProposeConfChange(ctx, cc)
		cancel()
		if err == nil {
			return v
		}
		if !errors.Is(err, ErrProposalDropped) && !errors.Is(err, ErrNotLeader) || time.Now().After(deadline) {
			c.t.Fatalf("propose %s on %d: %v", cc, lead, err)
		}
		time.Sleep(electionDelay / 2)
	}
}

func TestMembershipGrowPromoteShrink(t *testing.T) {
	c := newCluster(t, 3, nil)
	var seq counter
	c.waitLeader(c.ids())
	for range 20 {
		c.propose(1, seq.next("p"))
	}

	// A learner joins, catches up from the log, and does not vote.
	m4 := c.newMember()
	if v := c.confChange(c.ids()[:3], ConfChange{Type: raftpb.ConfChangeAddLearnerNode, NodeID: 4, PeerURLs: []string{"http://" + m4.addr}, Context: []byte("m4")}); v != nil {
		t.Fatalf("add learner 4: state machine answered %v", v)
	}
	c.startMember(m4, nil)
	all := []uint64{1, 2, 3, 4}
	c.propose(1, seq.next("p"))
	c.waitConverged(all, 21)
	if st := m4.node.Status(); st.Leader == 0 || st.IsLeader {
		t.Fatalf("learner status %+v: want a follower that knows the leader", st)
	}

	// Promoted, it counts toward the quorum: with two of the old voters
	// stopped, 1 and 4 alone would not be a majority of four, so commit
	// needs one of them back: stop just one and still commit.
	c.confChange(all, ConfChange{Type: raftpb.ConfChangeAddNode, NodeID: 4})
	down := uint64(3)
	if c.waitLeader(all) == down {
		down = 2
	}
	c.stopMember(c.member(down))
	others := slices.DeleteFunc(slices.Clone(all), func(id uint64) bool { return id == down })
	c.propose(4, seq.next("p"))
	c.waitConverged(others, 22)
	c.startMember(c.member(down), nil)
	c.waitConverged(all, 22)

	// Removing a voter (a follower: removing the leader costs an
	// election here; the server transfers leadership first) stops it with
	// ErrRemoved; the rest go on.
	lead := c.waitLeader(all)
	victim := uint64(2)
	if lead == victim {
		victim = 3
	}
	c.confChange(all, ConfChange{Type: raftpb.ConfChangeRemoveNode, NodeID: victim})
	m2 := c.member(victim)
	select {
	case <-m2.node.Done():
	case <-time.After(waitDeadline):
		t.Fatal("removed member 2 did not stop")
	}
	if err := m2.node.Err(); !errors.Is(err, ErrRemoved) {
		t.Fatalf("removed member's Err = %v, want ErrRemoved", err)
	}
	c.stopMember(m2)
	rest := slices.DeleteFunc(slices.Clone(all), func(id uint64) bool { return id == victim })
	c.propose(4, seq.next("p"))
	c.waitConverged(rest, 23)

	// Every member applied the same changes in the same order, bootstrap
	// included, each once (a restarted member applied, in this process,
	// those after its durable state: a suffix).
	want := c.member(1).sm.confLog()
	if len(want) != 6 { // 3 bootstrap adds, add learner, promote, remove
		t.Fatalf("member 1 applied membership changes %q, want 6", want)
	}
	for _, id := range rest[1:] {
		if got := c.member(id).sm.confLog(); len(got) > len(want) || !slices.Equal(got, want[len(want)-len(got):]) {
			t.Fatalf("member %d applied %q, member 1 %q", id, got, want)
		}
	}
	if got := m4.sm.confLog(); !slices.Equal(got, want) {
		t.Fatalf("joined member applied %q, member 1 %q", got, want)
	}

	// The removed member, restarted on its old data, is refused by its
	// peers and stops again instead of disturbing them.
	c.startMember(m2, nil)
	select {
	case <-m2.node.Done():
	case <-time.After(waitDeadline):
		t.Fatal("removed member restarted with its old data did not stop")
	}
	if err := m2.node.Err(); !errors.Is(err, ErrRemoved) {
		t.Fatalf("restarted removed member's Err = %v, want ErrRemoved", err)
	}
	c.propose(1, seq.next("p"))
	c.waitConverged(rest, 24)
}

func TestConfChangeRefusals(t *testing.T) {
	refuseOdd := func(cs *raftpb.ConfState, cc ConfChange) error {
		if cc.NodeID%2 == 1 && cc.Type == raftpb.ConfChangeAddLearnerNode {
			return fmt.Errorf("odd learners refused (voters %v)", cs.GetVoters())
		}
		return nil
	}
	c := newCluster(t, 1, func(cfg *Config) { cfg.CheckConfChange = refuseOdd })
	c.waitLeader(c.ids())
	tests := []struct {
		name string
		cc   ConfChange
		want error // nil: accepted
	}{
		{"the last voter cannot be removed", ConfChange{Type: raftpb.ConfChangeRemoveNode, NodeID: 1}, ErrConfChangeRefused},
		{"the application refuses", ConfChange{Type: raftpb.ConfChangeAddLearnerNode, NodeID: 7}, nil},
		{"the application accepts", ConfChange{Type: raftpb.ConfChangeAddLearnerNode, NodeID: 8}, nil},
		{"a voter cannot be demoted by adding it as a learner", ConfChange{Type: raftpb.ConfChangeAddLearnerNode, NodeID: 1}, ErrConfChangeRefused},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := c.confChange(c.ids(), tt.cc)
			err, _ := v.(error)
			switch {
			case tt.want != nil && !errors.Is(err, tt.want):
				t.Fatalf("%s: state machine got %v, want %v", tt.cc, v, tt.want)
			case tt.want == nil && tt.cc.NodeID == 7 && err == nil:
				t.Fatalf("%s: accepted, want the application's refusal", tt.cc)
			case tt.want == nil && tt.cc.NodeID == 8 && err != nil:
				t.Fatalf("%s: refused: %v", tt.cc, err)
			}
		})
	}
	// Still serving, and a refused change never reached raft: 7 is no
	// learner, 8 is.
	c.propose(1, "after")
	log := c.member(1).sm.confLog()
	accepted := ConfChange{Type: raftpb.ConfChangeAddLearnerNode, NodeID: 8}.String()
	if !slices.ContainsFunc(log, func(s string) bool { return strings.HasSuffix(s, " "+accepted) }) {
		t.Fatalf("membership log %q lacks the accepted learner", log)
	}
	p, err := c.member(1).node.Progress(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := p[7]; ok {
		t.Fatalf("refused learner 7 is in raft's progress %v", p)
	}
	if pr, ok := p[8]; !ok || !pr.Learner {
		t.Fatalf("accepted learner 8 not in raft's progress as a learner: %v", p)
	}
}

func TestConfChangeOnlyOnTheLeader(t *testing.T) {
	c := newCluster(t, 3, nil)
	lead := c.waitLeader(c.ids())
	follower := c.ids()[(slices.Index(c.ids(), lead)+1)%3]
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.member(follower).node.ProposeConfChange(ctx, ConfChange{Type: raftpb.ConfChangeAddLearnerNode, NodeID: 9})
	if !errors.Is(err, ErrNotLeader) {
		t.Fatalf("conf change on a follower: %v, want ErrNotLeader", err)
	}
	if p, err := c.member(follower).node.Progress(ctx); err != nil || p != nil {
		t.Fatalf("follower's Progress = %v, %v; want nil", p, err)
	}
}

// Two changes proposed at once: raft takes one at a time, and the leader
// tells the other proposer at once instead of leaving it to time out.
func TestConcurrentConfChangeFailsFast(t *testing.T) {
	c := newCluster(t, 1, nil)
	c.waitLeader(c.ids())
	n := c.member(1).node
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errs := make(chan error, 8)
	for i := range 8 {
		go func() {
			_, err := n.ProposeConfChange(ctx, ConfChange{Type: raftpb.ConfChangeAddLearnerNode, NodeID: uint64(10 + i)})
			errs <- err
		}()
	}
	ok, dropped := 0, 0
	for range 8 {
		switch err := <-errs; {
		case err == nil:
			ok++
		case errors.Is(err, ErrProposalDropped):
			dropped++
		default:
			t.Fatalf("concurrent conf change: %v", err)
		}
	}
	if ok == 0 || ctx.Err() != nil {
		t.Fatalf("%d accepted, %d dropped, context %v: want at least one accepted, all answered before the deadline", ok, dropped, ctx.Err())
	}
}

func TestTransferLeadership(t *testing.T) {
	c := newCluster(t, 3, nil)
	lead := c.waitLeader(c.ids())
	var seq counter
	c.propose(lead, seq.next("p"))
	for _, from := range []string{"leader", "follower"} {
		t.Run("asked on the "+from, func(t *testing.T) {
			lead := c.waitLeader(c.ids())
			target := c.ids()[(slices.Index(c.ids(), lead)+1)%3]
			asker := lead
			if from == "follower" {
				asker = target
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			start := time.Now()
			if err := c.member(asker).node.TransferLeadership(ctx, target); err != nil {
				t.Fatalf("transfer %d -> %d: %v", lead, target, err)
			}
			took := time.Since(start)
			if got := c.waitLeader(c.ids()); got != target {
				t.Fatalf("leader after transfer: %d, want %d", got, target)
			}
			// A transfer is not an election timeout's worth of waiting.
			if took > electionDelay*3 {
				t.Fatalf("transfer took %v, more than three election timeouts (%v)", took, electionDelay*3)
			}
			c.propose(target, seq.next("p"))
		})
	}
}

// A member that was down while the membership changed, and whose log fell
// behind the leader's snapshot, catches up from a leader it has never heard
// of: it learns the leader's URLs from the leader's own stream (it could not
// answer it otherwise), then the whole membership from the snapshot.
func TestSnapshotTeachesNewMembers(t *testing.T) {
	c := newCluster(t, 3, nil)
	var seq counter
	c.waitLeader(c.ids())
	m3 := c.member(3)
	m3.peers = slices.Clone(c.peers) // all it will know on restart
	c.stopMember(m3)
	up := []uint64{1, 2}

	m4 := c.newMember()
	c.confChange(up, ConfChange{Type: raftpb.ConfChangeAddNode, NodeID: 4, PeerURLs: []string{"http://" + m4.addr}})
	c.startMember(m4, nil)
	up = []uint64{1, 2, 4}
	c.propose(1, seq.next("p"))
	c.waitConverged(up, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.member(c.waitLeader(up)).node.TransferLeadership(ctx, 4); err != nil {
		t.Fatalf("transfer to 4: %v", err)
	}
	c.confChange(up, ConfChange{Type: raftpb.ConfChangeRemoveNode, NodeID: 1})
	up = []uint64{2, 4}
	// Enough entries for a snapshot and a compaction past everything 3 has.
	for range 1100 {
		c.propose(4, seq.next("p"))
	}
	c.startMember(m3, nil)
	all := []uint64{2, 3, 4}
	got := c.waitConverged(all, 1101)
	if _, _, restores := m3.sm.snapshotOf(); restores == 0 {
		t.Fatalf("member 3 caught up (%d entries) without a snapshot: the test did not test", len(got))
	}
	if c.waitLeader(all) != 4 {
		t.Fatalf("leader is not member 4")
	}
}
