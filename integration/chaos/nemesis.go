package chaos

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cairnkv/cairn/integration/harness"
)

// nemesis injects faults into the cluster. It runs on the test's goroutine
// (the harness's member controls may fail the test) and keeps track of
// what it broke, so that healAll can mend everything at the end.
type nemesis struct {
	e       *Env
	killed  map[int]bool
	paused  map[int]bool
	slow    map[int]bool
	counts  map[FaultKind]int
	records []FaultRecord
	crashes []string
}

func newNemesis(e *Env) *nemesis {
	return &nemesis{e: e, killed: map[int]bool{}, paused: map[int]bool{}, slow: map[int]bool{}, counts: map[FaultKind]int{}}
}

// runSchedule injects the schedule's faults at their planned times, until
// ctx ends or the plan is done, and heals each after its hold.
func (n *nemesis) runSchedule(ctx context.Context, s Schedule) {
	start := n.e.Rec.Start()
	for _, f := range s.Faults {
		if !sleepCtx(ctx, time.Until(start.Add(f.At))) {
			return
		}
		n.checkAlive()
		heal := n.inject(f)
		held := sleepCtx(ctx, f.Hold)
		heal()
		if !held {
			return
		}
	}
}

// inject starts fault f and returns the function that heals it.
func (n *nemesis) inject(f Fault) (heal func()) {
	members := n.e.Cluster.Members
	targets := resolve(f.Targets, n.leader(), len(members), f.Step)
	var names []string
	for _, i := range targets {
		names = append(names, members[i].Name)
	}
	rec := FaultRecord{Step: f.Step, Kind: string(f.Kind), Start: n.e.Rec.Now()}
	rec.Targets = strings.Join(names, ",")
	switch f.Kind {
	case CutOneWay:
		rec.Targets = names[0] + "->" + names[1]
	case CutPair:
		rec.Targets = names[0] + "<->" + names[1]
	case SlowDisk:
		rec.Note = fmt.Sprintf("fsync delay %v", f.Delay)
	}
	if i := slices.Index(f.Targets, LeaderTarget); i >= 0 {
		rec.Note = strings.TrimSpace(rec.Note + " (leader " + members[targets[i]].Name + ")")
	}
	n.counts[f.Kind]++
	n.e.logf("fault %s", rec.describe())
	net := n.e.Cluster.Net
	finish := func(note string) {
		rec.End = n.e.Rec.Now()
		if note != "" {
			rec.Note = strings.TrimSpace(rec.Note + " " + note)
		}
		n.records = append(n.records, rec)
	}
	switch f.Kind {
	case Kill:
		for _, i := range targets {
			n.kill(i)
		}
		return func() {
			for _, i := range targets {
				n.restart(i)
			}
			finish("")
		}
	case Pause:
		for _, i := range targets {
			n.pause(i)
		}
		return func() {
			for _, i := range targets {
				n.resume(i)
			}
			finish("")
		}
	case Isolate:
		in := map[int]bool{}
		for _, i := range targets {
			in[i] = true
		}
		for _, i := range targets {
			for j := range members {
				if !in[j] {
					net.CutBoth(members[i].Name, members[j].Name)
				}
			}
		}
		return func() { net.Heal(); finish("") }
	case CutPair:
		net.CutBoth(members[targets[0]].Name, members[targets[1]].Name)
		return func() { net.Heal(); finish("") }
	case CutOneWay:
		net.Cut(members[targets[0]].Name, members[targets[1]].Name)
		return func() { net.Heal(); finish("") }
	case SlowDisk:
		var notes []string
		for _, i := range targets {
			if err := n.setFsyncDelay(i, f.Delay); err != nil {
				notes = append(notes, err.Error())
			}
		}
		return func() {
			for _, i := range targets {
				if err := n.setFsyncDelay(i, 0); err != nil {
					notes = append(notes, err.Error())
				}
			}
			finish(strings.Join(notes, "; "))
		}
	}
	panic("chaos: unknown fault " + string(f.Kind))
}

func (r FaultRecord) describe() string {
	s := fmt.Sprintf("#%d %s %s", r.Step, r.Kind, r.Targets)
	if r.Note != "" {
		s += " " + r.Note
	}
	return s
}

func (n *nemesis) kill(i int) {
	m := n.e.Cluster.Members[i]
	if !m.Running() {
		n.crashed(i)
		return
	}
	m.Kill()
	n.killed[i] = true
	delete(n.paused, i)
	delete(n.slow, i) // the hooks' state dies with the process
}

func (n *nemesis) restart(i int) {
	if !n.killed[i] {
		return
	}
	n.e.Cluster.Members[i].Start()
	delete(n.killed, i)
}

func (n *nemesis) pause(i int) {
	m := n.e.Cluster.Members[i]
	if !m.Running() {
		n.crashed(i)
		return
	}
	m.Pause()
	n.paused[i] = true
}

func (n *nemesis) resume(i int) {
	if !n.paused[i] {
		return
	}
	m := n.e.Cluster.Members[i]
	if m.Running() {
		m.Resume()
	}
	delete(n.paused, i)
}

func (n *nemesis) setFsyncDelay(i int, d time.Duration) error {
	m := n.e.Cluster.Members[i]
	if !m.Running() {
		return fmt.Errorf("%s not running", m.Name)
	}
	if d > 0 {
		n.slow[i] = true
	} else {
		delete(n.slow, i)
	}
	return m.Hook("/cairn/test/fsync-delay", "d="+d.String(), 5*time.Second)
}

// crashed notes a member that exited without being killed, and starts it
// again so the run goes on; the run fails at the end.
func (n *nemesis) crashed(i int) {
	m := n.e.Cluster.Members[i]
	msg := fmt.Sprintf("%s exited on its own at %v (log %s)", m.Name, time.Duration(n.e.Rec.Now()).Round(time.Millisecond), m.LogPath())
	n.crashes = append(n.crashes, msg)
	n.e.logf("CRASH: %s", msg)
	m.Start()
}

// checkAlive finds members that died although nobody killed them.
func (n *nemesis) checkAlive() {
	for i, m := range n.e.Cluster.Members {
		if !n.killed[i] && !m.Running() {
			n.crashed(i)
		}
	}
}

// healAll ends every fault: restart, resume, reconnect, fast disks.
func (n *nemesis) healAll() {
	for i := range n.e.Cluster.Members {
		n.resume(i)
		n.restart(i)
	}
	n.e.Cluster.Net.Heal()
	for i := range n.slow {
		if err := n.setFsyncDelay(i, 0); err != nil {
			n.e.logf("heal: %v", err)
		}
	}
	n.checkAlive()
}

// leader returns the index of the member a majority of the reachable
// members name as leader, or -1.
func (n *nemesis) leader() int {
	return leaderIndex(n.e.Cluster, func(i int) bool { return !n.killed[i] && !n.paused[i] })
}

// leaderIndex asks every member that ask allows for its status, in
// parallel, and returns the index of the leader named by the most of them
// (at the highest term), or -1 if there is none.
func leaderIndex(c *harness.Cluster, ask func(i int) bool) int {
	type vote struct {
		leader uint64
		term   uint64
	}
	votes := make([]vote, len(c.Members))
	var wg sync.WaitGroup
	for i, m := range c.Members {
		if !ask(i) || !m.Running() {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if st, err := m.Status(); err == nil {
				votes[i] = vote{st.GetLeader(), st.GetRaftTerm()}
			}
		}()
	}
	wg.Wait()
	count := map[uint64]int{}
	var bestTerm uint64
	for _, v := range votes {
		if v.leader != 0 {
			count[v.leader]++
			bestTerm = max(bestTerm, v.term)
		}
	}
	var best uint64
	for _, v := range votes {
		if v.leader != 0 && v.term == bestTerm && (best == 0 || count[v.leader] > count[best]) {
			best = v.leader
		}
	}
	for i, m := range c.Members {
		if best != 0 && m.ID == best {
			return i
		}
	}
	return -1
}
