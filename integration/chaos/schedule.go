package chaos

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// FaultKind names a kind of fault.
type FaultKind string

const (
	// Kill: kill -9 the targets, restart them with the same data dir after
	// the hold.
	Kill FaultKind = "kill"
	// Pause: SIGSTOP the targets, SIGCONT after the hold.
	Pause FaultKind = "pause"
	// Isolate: cut the targets (as a group) off from every other member,
	// both ways.
	Isolate FaultKind = "isolate"
	// CutPair: cut the two targets off from each other, both ways; the
	// other members still reach both.
	CutPair FaultKind = "cut-pair"
	// CutOneWay: drop traffic from the first target to the second only.
	CutOneWay FaultKind = "cut-one-way"
	// SlowDisk: delay every WAL fsync of the targets by Delay.
	SlowDisk FaultKind = "slow-disk"

	// The membership faults change the cluster for good; their hold is
	// only the quiet time after the change.

	// AddMember: MemberAdd a new member (a voter, or a learner if Learner,
	// which the leader promotes once it has caught up), then start its
	// process on an empty data dir.
	AddMember FaultKind = "add-member"
	// RemoveMember: MemberRemove a follower; its process exits by itself.
	RemoveMember FaultKind = "remove-member"
	// Replace: remove the target (kill -9 it first if Dead: a machine that
	// died) and add a new member on a new data dir in its place.
	Replace FaultKind = "replace"
	// RemoveLeader: MemberRemove whichever member leads; it hands
	// leadership over first, then exits by itself.
	RemoveLeader FaultKind = "remove-leader"
)

// FaultKinds lists every kind, in the order summaries print them.
var FaultKinds = []FaultKind{Kill, Pause, Isolate, CutPair, CutOneWay, SlowDisk, AddMember, RemoveMember, Replace, RemoveLeader}

// IsMembership reports whether k changes the cluster's membership.
func (k FaultKind) IsMembership() bool {
	return k == AddMember || k == RemoveMember || k == Replace || k == RemoveLeader
}

// Target picks a member: a position in the cluster's current members (by
// the order they were started in, wrapping around if the cluster has
// shrunk), or LeaderTarget for whichever member leads when the fault
// starts. The members a Target names depend on the membership at the time
// of the fault: position 0 is the oldest member still in the cluster.
type Target int

// LeaderTarget is the member leading when the fault starts.
const LeaderTarget Target = -1

func (t Target) String() string {
	if t == LeaderTarget {
		return "leader"
	}
	return fmt.Sprintf("p%d", int(t)+1)
}

// Fault is one planned fault: it starts At after the run starts and is
// healed Hold later.
type Fault struct {
	Step    int
	At      time.Duration
	Hold    time.Duration
	Kind    FaultKind
	Targets []Target
	Delay   time.Duration // SlowDisk only
	// Membership faults only: the new member is added as a learner
	// (AddMember, Replace); the old one is killed -9 before its removal
	// (Replace); the planned number of members once the change is made
	// (Size); and Within, the step of the fault in whose hold this one
	// happens (0 if none): a change made while another fault has members
	// down or cut off.
	Learner bool
	Dead    bool
	Size    int
	Within  int
}

func (f Fault) String() string {
	var ts []string
	for _, t := range f.Targets {
		ts = append(ts, t.String())
	}
	what := strings.Join(ts, ",")
	switch f.Kind {
	case CutOneWay:
		what = fmt.Sprintf("%s->%s", f.Targets[0], f.Targets[1])
	case CutPair:
		what = fmt.Sprintf("%s<->%s", f.Targets[0], f.Targets[1])
	case SlowDisk:
		what += fmt.Sprintf(" fsync+%v", f.Delay)
	case AddMember:
		what = "new " + cond(f.Learner, "learner", "voter")
	case Replace:
		what = cond(f.Dead, what+" (killed first)", what) + " by a new " + cond(f.Learner, "learner", "voter")
	}
	if f.Kind.IsMembership() {
		what += fmt.Sprintf(", %d members", f.Size)
		if f.Within != 0 {
			what += fmt.Sprintf(", during #%d", f.Within)
		}
	}
	return fmt.Sprintf("#%-3d at %7.2fs hold %5.2fs  %-13s %s", f.Step, f.At.Seconds(), f.Hold.Seconds(), f.Kind, what)
}

func cond[T any](c bool, a, b T) T {
	if c {
		return a
	}
	return b
}

// Schedule is the fault plan of a run. It depends on the seed, the cluster
// size and the duration alone, so a failing run's faults can be replayed
// exactly (which member leads at a given moment, and so the member a
// LeaderTarget hits, depends on timing and may differ).
type Schedule struct {
	Seed     int64
	Members  int
	Duration time.Duration
	Faults   []Fault
}

// Timing of the plan.
const (
	warmUp   = 2 * time.Second // no fault before this
	lastCall = time.Second     // no fault starts in the last second
)

// Bounds of the membership, for a cluster started with n members: between
// changes it has n to n+2 members; only a replacement, between removing
// the old member and adding the new one, leaves it with n-1.
func minMembers(n int) int { return n }
func maxMembers(n int) int { return n + 2 }

// NewSchedule plans faults for a run of duration d on a cluster of members
// members. Faults do not overlap, but for some membership changes: each is
// healed before the next starts, after a quiet gap of 0.3 to 2.5 s. Most
// faults hit one member; on five members some hit two, and now and then a
// kill takes out a majority (the cluster must then recover once they
// restart) or lasts long enough that the member must catch up from a
// snapshot. Half of the faults aimed at a single member aim at the leader.
//
// About a quarter of the faults change the membership: add a member,
// remove a follower, replace a member, remove the leader. The plan keeps
// the number of members within [minMembers, maxMembers] (a removal planned
// at the lower bound becomes an addition, an addition at the upper bound a
// removal), and sizes the other faults by the planned membership. A third
// of the changes that follow a fault held 2 s or more happen during that
// fault (Within), while its members are down or cut off: strict reconfig
// may refuse them, which is part of the test.
func NewSchedule(seed int64, members int, d time.Duration) Schedule {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x6361697266))
	s := Schedule{Seed: seed, Members: members, Duration: d}
	between := func(lo, hi time.Duration) time.Duration {
		return lo + time.Duration(rng.Int64N(int64(hi-lo)+1))
	}
	size := members // planned membership
	// distinct picks n different members; the first is the leader with
	// probability 1/2.
	distinct := func(n int, leaderFirst bool) []Target {
		perm := rng.Perm(size)
		out := make([]Target, 0, n)
		if leaderFirst {
			out = append(out, LeaderTarget)
		}
		for _, i := range perm {
			if len(out) == n {
				break
			}
			out = append(out, Target(i))
		}
		return out
	}
	at := warmUp
	// outer is the last fault if it may still host a membership change.
	var outer Fault
	hasOuter := false
	for step := 1; ; step++ {
		f := Fault{Step: step, At: at + between(300*time.Millisecond, 2500*time.Millisecond)}
		leader := rng.IntN(2) == 0
		minority := (size - 1) / 2
		n := 1
		if minority > 1 && rng.IntN(3) == 0 {
			n = minority
		}
		if rng.IntN(100) < 24 {
			planMembership(&f, rng.IntN(24), &size, members, rng, between, distinct, leader)
			if hasOuter && rng.IntN(3) == 0 {
				// During the previous fault, at least half a second after
				// it starts and a second before it ends.
				f.Within = outer.Step
				f.At = (outer.At + between(500*time.Millisecond, outer.Hold-time.Second)).Round(10 * time.Millisecond)
				f.Hold = 0
				hasOuter = false
				s.Faults = append(s.Faults, f)
				continue
			}
		} else {
			planFault(&f, rng, n, minority, leader, between, distinct)
		}
		hasOuter = false
		f.Hold = f.Hold.Round(10 * time.Millisecond)
		f.At = f.At.Round(10 * time.Millisecond)
		if f.At > d-lastCall {
			if at >= d-lastCall {
				break
			}
			f.At = d - lastCall // a gap too long for the time left
		}
		// The last fault lasts until the end of the run, so that the
		// final heal ends a fault in progress and the recovery check
		// measures from a real fault's end.
		if f.At+f.Hold > d-lastCall {
			f.Hold = d - f.At
		}
		s.Faults = append(s.Faults, f)
		at = f.At + f.Hold
		if at >= d-lastCall {
			break
		}
		if !f.Kind.IsMembership() && f.Hold >= 2*time.Second {
			outer, hasOuter = f, true
		}
	}
	return s
}

// planFault plans one of the faults that heal.
func planFault(f *Fault, rng *rand.Rand, n, minority int, leader bool, between func(lo, hi time.Duration) time.Duration, distinct func(n int, leaderFirst bool) []Target) {
	switch r := rng.IntN(100); {
	case r < 22:
		f.Kind, f.Hold = Kill, between(500*time.Millisecond, 5*time.Second)
		switch rng.IntN(10) {
		case 0:
			n = minority + 1 // quorum lost until they restart
		case 1, 2:
			// Long enough for the others to compact their logs past the
			// member's (thousands of entries): it must catch up from a
			// snapshot.
			f.Hold = between(9*time.Second, 14*time.Second)
		}
	case r < 42:
		f.Kind, f.Hold = Pause, between(300*time.Millisecond, 4*time.Second)
	case r < 60:
		f.Kind, f.Hold = Isolate, between(time.Second, 5*time.Second)
	case r < 72:
		f.Kind, f.Hold = CutPair, between(time.Second, 5*time.Second)
		n = 2
	case r < 88:
		f.Kind, f.Hold = CutOneWay, between(time.Second, 5*time.Second)
		// Either the leader stops reaching a follower, or a follower
		// stops reaching the leader.
		if leader {
			f.Targets = distinct(2, true)
		} else {
			f.Targets = append(distinct(1, false), LeaderTarget)
		}
	default:
		f.Kind, f.Hold = SlowDisk, between(2*time.Second, 6*time.Second)
		f.Delay = between(20*time.Millisecond, 150*time.Millisecond).Round(time.Millisecond)
	}
	if f.Targets == nil {
		f.Targets = distinct(n, leader)
	}
}

// planMembership plans a membership change (r in [0,24) picks the kind)
// and updates the planned size, keeping it within the bounds.
func planMembership(f *Fault, r int, size *int, initial int, rng *rand.Rand, between func(lo, hi time.Duration) time.Duration, distinct func(n int, leaderFirst bool) []Target, leader bool) {
	switch {
	case r < 7:
		f.Kind = AddMember
	case r < 12:
		f.Kind = RemoveMember
	case r < 19:
		f.Kind = Replace
	default:
		f.Kind = RemoveLeader
	}
	switch {
	case f.Kind == AddMember && *size >= maxMembers(initial):
		f.Kind = RemoveMember
	case (f.Kind == RemoveMember || f.Kind == RemoveLeader) && *size <= minMembers(initial):
		f.Kind = AddMember
	}
	switch f.Kind {
	case AddMember:
		f.Learner = rng.IntN(2) == 0
		f.Hold = between(2*time.Second, 5*time.Second)
		*size++
	case RemoveMember:
		f.Targets = []Target{Target(rng.IntN(*size))}
		f.Hold = between(1500*time.Millisecond, 4*time.Second)
		*size--
	case RemoveLeader:
		f.Targets = []Target{LeaderTarget}
		f.Hold = between(1500*time.Millisecond, 4*time.Second)
		*size--
	case Replace:
		f.Targets = distinct(1, leader)
		f.Dead = rng.IntN(2) == 0
		f.Learner = rng.IntN(2) == 0
		f.Hold = between(3*time.Second, 6*time.Second)
	}
	f.Size = *size
}

func (s Schedule) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "schedule: seed=%d members=%d duration=%v, %d faults (pN: the Nth member of the cluster at the time, oldest first)\n", s.Seed, s.Members, s.Duration, len(s.Faults))
	for _, f := range s.Faults {
		fmt.Fprintf(&b, "  %s\n", f)
	}
	return b.String()
}

// CountByKind tallies the planned faults.
func (s Schedule) CountByKind() map[FaultKind]int {
	m := map[FaultKind]int{}
	for _, f := range s.Faults {
		m[f.Kind]++
	}
	return m
}

// resolve turns targets into member indices, given the members in the
// cluster now (their indices, oldest first) and the leader (its index, or
// -1 if none is known: a LeaderTarget then becomes a member chosen from the
// step number). A Target is a position in members, wrapping around.
// Indices stay distinct: a planned member that turns out to be the leader
// is swapped for the next member not yet used; with fewer members than
// targets, the last targets are dropped.
func resolve(targets []Target, leader int, members []int, step int) []int {
	if len(members) == 0 {
		return nil
	}
	pos := slices.Index(members, leader)
	if pos < 0 {
		pos = step % len(members)
	}
	used := map[int]bool{}
	out := make([]int, 0, len(targets))
	for _, t := range targets {
		if t == LeaderTarget && !used[pos] {
			used[pos] = true
		}
	}
	for _, t := range targets {
		if len(out) == len(members) {
			break
		}
		p := pos
		if t != LeaderTarget {
			if len(used) == len(members) {
				continue // every member is taken (one by the leader, later)
			}
			p = int(t) % len(members)
			for used[p] {
				p = (p + 1) % len(members)
			}
			used[p] = true
		}
		out = append(out, members[p])
	}
	return out
}
