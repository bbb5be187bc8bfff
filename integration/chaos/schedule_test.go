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
		leader, multi, majority := 0, 0, 0
		for seed := range int64(20) {
			d := 5 * time.Minute
			s := NewSchedule(seed, members, d)
			var end time.Duration
			for _, f := range s.Faults {
				kinds[f.Kind]++
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
				if f.Targets[0] == LeaderTarget || (f.Kind == CutOneWay && f.Targets[1] == LeaderTarget) {
					leader++
				}
				if len(f.Targets) > 1 && f.Kind != CutPair && f.Kind != CutOneWay {
					multi++
				}
				if len(f.Targets) > members/2 && f.Kind != CutPair && f.Kind != CutOneWay {
					if f.Kind != Kill {
						t.Fatalf("seed %d: %s takes out a majority", seed, f)
					}
					majority++
				}
				// Whatever the leader turns out to be, targets are distinct.
				for l := -1; l < members; l++ {
					got := resolve(f.Targets, l, members, f.Step)
					sorted := slices.Clone(got)
					slices.Sort(sorted)
					if len(slices.Compact(sorted)) != len(got) {
						t.Fatalf("seed %d: %s resolves to %v with leader %d", seed, f, got, l)
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
		if leader == 0 || majority == 0 || (members == 5 && multi == 0) {
			t.Errorf("%d members: %d faults aimed at the leader, %d at several members, %d at a majority", members, leader, multi, majority)
		}
		t.Logf("%d members, 20 seeds: %v; %d at the leader, %d multi-member, %d majority kills", members, kinds, leader, multi, majority)
	}
}

func TestResolve(t *testing.T) {
	cases := []struct {
		targets []Target
		leader  int
		want    []int
	}{
		{[]Target{LeaderTarget}, 2, []int{2}},
		{[]Target{LeaderTarget}, -1, []int{1}}, // step 4 of 3 members
		{[]Target{1}, 1, []int{1}},
		{[]Target{LeaderTarget, 2}, 2, []int{2, 0}},
		{[]Target{0, LeaderTarget}, 0, []int{1, 0}},
		{[]Target{0, 1}, 2, []int{0, 1}},
	}
	for _, c := range cases {
		if got := resolve(c.targets, c.leader, 3, 4); !slices.Equal(got, c.want) {
			t.Errorf("resolve(%v, leader %d) = %v, want %v", c.targets, c.leader, got, c.want)
		}
	}
}
