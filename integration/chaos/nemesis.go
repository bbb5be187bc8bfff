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
// what it broke, so that healAll can mend everything at the end. Member
// indices are those of the harness's Cluster.Members and the run's member
// table (membership.go).
type nemesis struct {
	e        *Env
	killed   map[int]bool
	paused   map[int]bool
	slow     map[int]bool
	isolated map[int]bool // the members an isolate fault in progress cut off
	until    time.Time    // the end of the fault a membership change happens during (zero if none)
	counts   map[FaultKind]int
	records  []FaultRecord
	crashes  []string

	// Membership.
	mstats        memberStats
	addedAt       map[int]time.Time
	addRec        map[int]int // the step that added a member
	removedAt     map[int]time.Time
	exits         map[int]string // how each removed member ended ("" while it still runs)
	replaceKilled map[int]bool   // killed by a replacement, to be restarted if its removal did not happen
	pendingStep   map[int]int    // the step of a change with an unknown outcome, by member
	deficit       []int          // steps of replacements whose new member is still to be added
	// membershipProblems are findings of the run itself (a new member that
	// never became a voter) for the membership check.
	membershipProblems []string
}

// memberStats counts what became of the membership changes.
type memberStats struct {
	added, removed, refused, skipped int
}

func newNemesis(e *Env) *nemesis {
	return &nemesis{e: e, killed: map[int]bool{}, paused: map[int]bool{}, slow: map[int]bool{}, isolated: map[int]bool{},
		counts: map[FaultKind]int{}, addedAt: map[int]time.Time{}, addRec: map[int]int{}, removedAt: map[int]time.Time{},
		exits: map[int]string{}, replaceKilled: map[int]bool{}, pendingStep: map[int]int{}}
}

// runSchedule injects the schedule's faults at their planned times, until
// ctx ends or the plan is done, and heals each after its hold. A
// membership change planned within another fault happens during that
// fault's hold, at its planned offset from the fault's start.
func (n *nemesis) runSchedule(ctx context.Context, s Schedule) {
	start := n.e.Rec.Start()
	for k := 0; k < len(s.Faults); k++ {
		f := s.Faults[k]
		if !n.waitUntil(ctx, start.Add(f.At)) {
			return
		}
		began := time.Now()
		n.checkAlive()
		heal := n.inject(f)
		held := true
		for held && k+1 < len(s.Faults) && s.Faults[k+1].Within == f.Step {
			k++
			g := s.Faults[k]
			if held = n.waitUntil(ctx, began.Add(g.At-f.At)); held {
				n.checkAlive()
				n.until = began.Add(f.Hold)
				n.inject(g)()
				n.until = time.Time{}
			}
		}
		if held {
			held = n.waitUntil(ctx, began.Add(f.Hold))
		}
		heal()
		if !held {
			return
		}
		n.afterHeal()
	}
}

// waitUntil waits until t or the end of ctx (reporting whether t came),
// meanwhile moving new members into the rotation once they serve and
// noting how removed members exit.
func (n *nemesis) waitUntil(ctx context.Context, t time.Time) bool {
	for {
		d := time.Until(t)
		if d <= 0 {
			return ctx.Err() == nil
		}
		if n.busy() {
			d = min(d, 500*time.Millisecond)
		}
		if !sleepCtx(ctx, d) {
			return false
		}
		if n.busy() {
			n.checkJoining()
			n.pollJoining()
			n.collectExits()
		}
	}
}

// busy reports whether members are joining or removed members are still
// to exit.
func (n *nemesis) busy() bool {
	if len(n.e.inState(stateJoining)) > 0 {
		return true
	}
	for _, res := range n.exits {
		if res == "" {
			return true
		}
	}
	return false
}

// afterHeal settles what a fault left open once it is healed: membership
// changes with unknown outcomes, a replacement still missing its new
// member.
func (n *nemesis) afterHeal() {
	n.reconcile(3 * time.Second)
	if len(n.deficit) > 0 {
		n.restoreSize(5 * time.Second)
	}
}

// inject starts fault f and returns the function that heals it. Targets
// are resolved against the members serving now.
func (n *nemesis) inject(f Fault) (heal func()) {
	rec := FaultRecord{Step: f.Step, Kind: string(f.Kind), Start: n.e.Rec.Now()}
	n.counts[f.Kind]++
	if f.Kind.IsMembership() {
		if f.Within != 0 {
			rec.Note = fmt.Sprintf("(during #%d)", f.Within)
		}
		if n.until.IsZero() {
			// On its own, a change has its hold (3 s at least) to be made.
			n.until = time.Now().Add(max(f.Hold, 3*time.Second))
			defer func() { n.until = time.Time{} }()
		}
		n.memberFault(f, &rec)
		rec.End = n.e.Rec.Now()
		n.records = append(n.records, rec)
		n.e.logf("fault %s", rec.describe())
		return func() {}
	}
	current := n.e.serving()
	targets := resolve(f.Targets, n.leader(), current, f.Step)
	if len(targets) < len(f.Targets) && (f.Kind == CutPair || f.Kind == CutOneWay) {
		rec.Note = "skipped: too few members"
		rec.End = rec.Start
		n.records = append(n.records, rec)
		n.e.logf("fault %s", rec.describe())
		return func() {}
	}
	members := n.e.Cluster.Members
	var names []string
	for _, i := range targets {
		names = append(names, members[i].Name)
	}
	rec.Targets = strings.Join(names, ",")
	switch f.Kind {
	case CutOneWay:
		rec.Targets = names[0] + "->" + names[1]
	case CutPair:
		rec.Targets = names[0] + "<->" + names[1]
	case SlowDisk:
		rec.Note = fmt.Sprintf("fsync delay %v", f.Delay)
	}
	if i := slices.Index(f.Targets, LeaderTarget); i >= 0 && i < len(targets) {
		rec.Note = strings.TrimSpace(rec.Note + " (leader " + members[targets[i]].Name + ")")
	}
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
		for _, i := range targets {
			n.isolated[i] = true
		}
		for _, i := range targets {
			for _, j := range n.e.inState(stateJoining, stateServing, stateLeaving) {
				if !n.isolated[j] {
					net.CutBoth(members[i].Name, members[j].Name)
				}
			}
		}
		return func() { net.Heal(); clear(n.isolated); finish("") }
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
				if !n.slow[i] {
					continue // removed meanwhile
				}
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

// restart starts a member the nemesis killed, unless it has left the
// cluster meanwhile (it would refuse to start on its old data).
func (n *nemesis) restart(i int) {
	if !n.killed[i] {
		return
	}
	delete(n.killed, i)
	delete(n.replaceKilled, i)
	if !n.e.state(i).inCluster() {
		return
	}
	n.e.Cluster.Members[i].Start()
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

// crashed notes a member that exited without being killed (or removed),
// and starts it again so the run goes on; the run fails at the end.
func (n *nemesis) crashed(i int) {
	m := n.e.Cluster.Members[i]
	how := "exit 0"
	if err := m.Wait(time.Second); err != nil {
		how = err.Error()
	}
	msg := fmt.Sprintf("%s exited on its own (%s) at %v (log %s)", m.Name, how, time.Duration(n.e.Rec.Now()).Round(time.Millisecond), m.LogPath())
	n.crashes = append(n.crashes, msg)
	n.e.logf("CRASH: %s", msg)
	m.Start()
}

// checkAlive finds members that died although nobody killed or removed
// them. A member whose removal has an unknown outcome may have exited
// because it was removed: the member list decides.
func (n *nemesis) checkAlive() {
	n.collectExits()
	for _, mi := range n.e.allMembers() {
		i := mi.idx
		st := n.e.state(i)
		if !st.inCluster() || n.killed[i] || mi.m.Running() {
			continue
		}
		if st == stateLeaving {
			n.reconcile(5 * time.Second)
			if n.e.state(i) == stateRemoved {
				n.collectExits()
				continue
			}
		}
		n.crashed(i)
	}
}

// checkJoining restarts a joining member that exited (a crash, counted
// as one), so that it is not waited for in vain.
func (n *nemesis) checkJoining() {
	for _, i := range n.e.inState(stateJoining) {
		if !n.killed[i] && !n.e.member(i).m.Running() {
			n.crashed(i)
		}
	}
}

// healAll ends every fault: restart, resume, reconnect, fast disks.
func (n *nemesis) healAll() {
	for _, mi := range n.e.allMembers() {
		n.resume(mi.idx)
		n.restart(mi.idx)
	}
	n.e.Cluster.Net.Heal()
	clear(n.isolated)
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
	return leaderIndex(n.e.Cluster, func(i int) bool {
		return i < n.e.memberCount() && n.e.state(i).inCluster() && !n.killed[i] && !n.paused[i]
	})
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
