package chaos

import (
	"fmt"
	"math/rand/v2"
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
)

// FaultKinds lists every kind, in the order summaries print them.
var FaultKinds = []FaultKind{Kill, Pause, Isolate, CutPair, CutOneWay, SlowDisk}

// Target picks a member: an index into the cluster's members, or
// LeaderTarget for whichever member leads when the fault starts.
type Target int

// LeaderTarget is the member leading when the fault starts.
const LeaderTarget Target = -1

func (t Target) String() string {
	if t == LeaderTarget {
		return "leader"
	}
	return fmt.Sprintf("m%d", int(t)+1)
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
	}
	return fmt.Sprintf("#%-3d at %7.2fs hold %5.2fs  %-11s %s", f.Step, f.At.Seconds(), f.Hold.Seconds(), f.Kind, what)
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

// NewSchedule plans faults for a run of duration d on a cluster of members
// members. Faults do not overlap: each is healed before the next starts,
// after a quiet gap of 0.3 to 2.5 s. Most faults hit one member; on five
// members some hit two, and now and then a kill takes out a majority (the
// cluster must then recover once they restart) or lasts long enough that
// the member must catch up from a snapshot. Half of the faults aimed at a
// single member aim at the leader.
func NewSchedule(seed int64, members int, d time.Duration) Schedule {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x6361697266))
	s := Schedule{Seed: seed, Members: members, Duration: d}
	between := func(lo, hi time.Duration) time.Duration {
		return lo + time.Duration(rng.Int64N(int64(hi-lo)+1))
	}
	// distinct picks n different members; the first is the leader with
	// probability 1/2.
	distinct := func(n int, leaderFirst bool) []Target {
		perm := rng.Perm(members)
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
	minority := (members - 1) / 2
	at := warmUp
	for step := 1; ; step++ {
		f := Fault{Step: step, At: at + between(300*time.Millisecond, 2500*time.Millisecond)}
		leader := rng.IntN(2) == 0
		n := 1
		if minority > 1 && rng.IntN(3) == 0 {
			n = minority
		}
		switch r := rng.IntN(100); {
		case r < 22:
			f.Kind, f.Hold = Kill, between(500*time.Millisecond, 5*time.Second)
			switch rng.IntN(10) {
			case 0:
				n = minority + 1 // quorum lost until they restart
			case 1, 2:
				// Long enough for the others to compact their logs past
				// the member's (thousands of entries): it must catch up
				// from a snapshot.
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
			n = 2
			// Either the leader stops reaching a follower, or a follower
			// stops reaching the leader.
			if leader {
				f.Targets = distinct(2, true)
			} else {
				f.Targets = distinct(1, false)
				f.Targets = append(f.Targets, LeaderTarget)
			}
		default:
			f.Kind, f.Hold = SlowDisk, between(2*time.Second, 6*time.Second)
			f.Delay = between(20*time.Millisecond, 150*time.Millisecond).Round(time.Millisecond)
		}
		if f.Targets == nil {
			f.Targets = distinct(n, leader)
		}
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
	}
	return s
}

func (s Schedule) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "schedule: seed=%d members=%d duration=%v, %d faults\n", s.Seed, s.Members, s.Duration, len(s.Faults))
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

// resolve turns targets into member indices given the current leader (-1
// if none is known: a LeaderTarget then becomes a member chosen from the
// step number). Indices stay distinct: a planned member that turns out to
// be the leader is swapped for the next member not yet used.
func resolve(targets []Target, leader, members, step int) []int {
	if leader < 0 {
		leader = step % members
	}
	used := map[int]bool{}
	out := make([]int, len(targets))
	for i, t := range targets {
		if t == LeaderTarget {
			out[i] = leader
			used[leader] = true
		}
	}
	for i, t := range targets {
		if t == LeaderTarget {
			continue
		}
		m := int(t)
		for used[m] {
			m = (m + 1) % members
		}
		out[i] = m
		used[m] = true
	}
	return out
}
