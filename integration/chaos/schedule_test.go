package chaos

import (
	"slices"
	"testing"
	"time"
)

func TestScheduleIsAFunctionOfItsSeed(t *testing.T) {
	a := NewSchedule(42, 3, 5*time.Minute)
	b := NewSchedule(42, 3, 5*time.Minute)
	if a.String() != b.String() {
		t.Fatal("the same seed planned different schedules")
	}
	if c := NewSchedule(43, 3, 5*time.Minute); c.String() == a.String() {
		t.Fatal("two seeds planned the same schedule")
	}
	t.Logf("%s", a)
}

func TestScheduleShape(t *testing.T) {
	for _, members := range []int{3, 5} {
		kinds := map[FaultKind]int{}
		leader, multi, majority, nested, learners, dead := 0, 0, 0, 0, 0, 0
		for seed := range int64(20) {
			d := 5 * time.Minute
			s := NewSchedule(seed, members, d)
			var end time.Duration
			var outer Fault
			size := members
			for _, f := range s.Faults {
				kinds[f.Kind]++
				if f.Within != 0 {
					nested++
					if !f.Kind.IsMembership() || f.Within != outer.Step || f.At <= outer.At || f.At >= outer.At+outer.Hold {
						t.Fatalf("seed %d: fault %s is not within its fault %s", seed, f, outer)
					}
				} else {
					if f.At < warmUp || f.At < end {
						t.Fatalf("seed %d: fault %s starts before the previous one ended (%v)", seed, f, end)
					}
					end = f.At + f.Hold
					if end > d {
						t.Fatalf("seed %d: fault %s outlasts the run", seed, f)
					}
					if f.Hold <= 0 {
						t.Fatalf("seed %d: fault %s has no hold", seed, f)
					}
					outer = f
				}
				if f.Kind.IsMembership() {
					switch f.Kind {
					case AddMember:
						size++
					case RemoveMember, RemoveLeader:
						size--
					}
					if f.Size != size || size < minMembers(members) || size > maxMembers(members) {
						t.Fatalf("seed %d: fault %s leaves %d members (planned %d), outside [%d, %d]", seed, f, size, f.Size, minMembers(members), maxMembers(members))
					}
					if f.Learner {
						learners++
					}
					if f.Dead {
						dead++
					}
					if f.Kind == RemoveLeader && f.Targets[0] != LeaderTarget {
						t.Fatalf("seed %d: %s does not aim at the leader", seed, f)
					}
				}
				if len(f.Targets) > 0 && (f.Targets[0] == LeaderTarget || (f.Kind == CutOneWay && f.Targets[1] == LeaderTarget)) {
					leader++
				}
				if len(f.Targets) > 1 && f.Kind != CutPair && f.Kind != CutOneWay {
					multi++
				}
				if len(f.Targets) > size/2 && f.Kind != CutPair && f.Kind != CutOneWay {
					if f.Kind != Kill {
						t.Fatalf("seed %d: %s takes out a majority of %d", seed, f, size)
					}
					majority++
				}
				// Whatever the membership and the leader turn out to be,
				// targets are distinct members of the cluster.
				for _, current := range [][]int{{0, 1, 2}, {0, 2, 5, 7}, {1, 3, 4, 6, 8}, {0, 1, 2, 3, 4, 5, 6}} {
					for l := -1; l < len(current); l++ {
						lead := -1
						if l >= 0 {
							lead = current[l]
						}
						got := resolve(f.Targets, lead, current, f.Step)
						sorted := slices.Clone(got)
						slices.Sort(sorted)
						if len(slices.Compact(sorted)) != len(got) || len(got) != min(len(f.Targets), len(current)) {
							t.Fatalf("seed %d: %s resolves to %v with members %v, leader %d", seed, f, got, current, lead)
						}
						for _, i := range got {
							if !slices.Contains(current, i) {
								t.Fatalf("seed %d: %s resolves to %v, not all in %v", seed, f, got, current)
							}
						}
						if len(f.Targets) > 0 && f.Targets[0] == LeaderTarget && lead >= 0 && got[0] != lead {
							t.Fatalf("seed %d: %s resolves to %v, not the leader %d first", seed, f, got, lead)
						}
					}
				}
			}
			if last := s.Faults[len(s.Faults)-1]; last.At+last.Hold < d-lastCall {
				t.Fatalf("seed %d: the last fault, %s, ends before the run does", seed, last)
			}
			if len(s.Faults) < 40 {
				t.Fatalf("seed %d: only %d faults in %v", seed, len(s.Faults), d)
			}
		}
		for _, k := range FaultKinds {
			if kinds[k] == 0 {
				t.Errorf("%d members: no %s fault in 20 schedules", members, k)
			}
		}
		if leader == 0 || majority == 0 || (members == 5 && multi == 0) || nested == 0 || learners == 0 || dead == 0 {
			t.Errorf("%d members: %d faults aimed at the leader, %d at several members, %d at a majority, %d membership changes during other faults, %d learners, %d dead replacements",
				members, leader, multi, majority, nested, learners, dead)
		}
		t.Logf("%d members, 20 seeds: %v; %d at the leader, %d multi-member, %d majority kills, %d nested membership changes", members, kinds, leader, multi, majority, nested)
	}
}

// TestChaosShort's schedule has every kind of membership change.
func TestShortScheduleChangesMembership(t *testing.T) {
	s := NewSchedule(shortSeed, 3, shortDuration)
	counts := s.CountByKind()
	for _, k := range []FaultKind{AddMember, RemoveMember, Replace, RemoveLeader} {
		if counts[k] == 0 {
			t.Errorf("no %s in TestChaosShort's schedule:\n%s", k, s)
		}
	}
	t.Logf("%s", s)
}

func TestResolve(t *testing.T) {
	cases := []struct {
		targets []Target
		leader  int
		members []int
		want    []int
	}{
		{[]Target{LeaderTarget}, 2, []int{0, 1, 2}, []int{2}},
		{[]Target{LeaderTarget}, -1, []int{0, 1, 2}, []int{1}}, // step 4 of 3 members
		{[]Target{1}, 1, []int{0, 1, 2}, []int{1}},
		{[]Target{LeaderTarget, 2}, 2, []int{0, 1, 2}, []int{2, 0}},
		{[]Target{0, LeaderTarget}, 0, []int{0, 1, 2}, []int{1, 0}},
		{[]Target{0, 1}, 2, []int{0, 1, 2}, []int{0, 1}},
		// After membership changes: positions in the current members.
		{[]Target{1}, 5, []int{0, 3, 5}, []int{3}},
		{[]Target{4}, 5, []int{0, 3, 5}, []int{3}},            // wraps around
		{[]Target{LeaderTarget}, 7, []int{0, 3, 5}, []int{3}}, // a leader no longer in the cluster: by the step
		{[]Target{LeaderTarget, 0, 1}, 3, []int{0, 3}, []int{3, 0}},
		{[]Target{0, 1, LeaderTarget}, 3, []int{0, 3}, []int{0, 3}},
	}
	for _, c := range cases {
		if got := resolve(c.targets, c.leader, c.members, 4); !slices.Equal(got, c.want) {
			t.Errorf("resolve(%v, leader %d, members %v) = %v, want %v", c.targets, c.leader, c.members, got, c.want)
		}
	}
}
