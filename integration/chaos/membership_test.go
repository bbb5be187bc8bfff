package chaos

import (
	"errors"
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// envWith is an Env whose member table has the given states (no
// processes, no connections).
func envWith(states ...memberState) *Env {
	e := &Env{}
	for i, st := range states {
		e.mems = append(e.mems, &memberInfo{idx: i, name: "m" + string(rune('1'+i)), state: st})
	}
	return e
}

// Clients follow the membership: they move on to serving members only,
// and never stay on one that stopped serving.
func TestClientsFollowTheMembership(t *testing.T) {
	e := envWith(stateServing, stateRemoved, stateJoining, stateServing, stateLeaving, stateNotAdded, stateServing)
	if got := e.serving(); !slices.Equal(got, []int{0, 3, 6}) {
		t.Fatalf("serving %v", got)
	}
	for _, c := range []struct{ from, next, pick int }{
		{0, 3, 0}, {1, 3, 3}, {2, 3, 3}, {3, 6, 3}, {4, 6, 6}, {5, 6, 6}, {6, 0, 6},
	} {
		if got := e.nextServing(c.from); got != c.next {
			t.Errorf("nextServing(%d) = %d, want %d", c.from, got, c.next)
		}
		if got := e.pick(c.from); got != c.pick {
			t.Errorf("pick(%d) = %d, want %d", c.from, got, c.pick)
		}
	}
	if got := e.clusterSize(); got != 5 {
		t.Errorf("cluster size %d, want 5 (joining, serving and leaving members)", got)
	}
	// A lone serving member is its own next.
	if got := envWith(stateRemoved, stateServing).nextServing(1); got != 1 {
		t.Errorf("nextServing of the only serving member = %d", got)
	}
}

func TestRefusal(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{status.Error(codes.Unavailable, "etcdserver: unhealthy cluster"), true},
		{status.Error(codes.FailedPrecondition, "etcdserver: re-configuration failed due to not enough started members"), true},
		{status.Error(codes.FailedPrecondition, "etcdserver: too many learner members in cluster"), true},
		{status.Error(codes.Unavailable, "etcdserver: no leader"), false},
		{status.Error(codes.DeadlineExceeded, "context deadline exceeded"), false},
		{status.Error(codes.NotFound, "etcdserver: member not found"), false},
		{errors.New("connection reset"), false},
	} {
		if got := refusal(c.err); got != c.want {
			t.Errorf("refusal(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
