package lease

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

// TestExpiryOrder: on the primary, leases are reported as their expiries
// pass, earliest first (ties by ID), and each revoke removes it for good.
func TestExpiryOrder(t *testing.T) {
	e := newEnv(t, Options{})
	e.le.Promote(0)
	for _, g := range []struct{ id, ttl int64 }{{1, 10}, {2, 5}, {3, 20}, {4, 5}, {5, 15}} {
		e.grant(g.id, g.ttl)
	}
	for _, step := range []struct {
		advance time.Duration
		want    []int64
	}{
		{4 * time.Second, nil},
		{time.Second, []int64{2, 4}},
		{5 * time.Second, []int64{1}},
		{9 * time.Second, []int64{5}},
		{time.Hour, []int64{3}},
		{time.Hour, nil},
	} {
		e.clock.Advance(step.advance)
		got := e.le.Expired(0)
		if !slices.Equal(got, step.want) {
			t.Fatalf("after +%v: Expired = %v, want %v", step.advance, got, step.want)
		}
		for _, id := range got { // the server proposes, the applier revokes
			e.revoke(id)
		}
	}
	if n := len(e.le.Leases()); n != 0 {
		t.Errorf("%d leases left", n)
	}
}

func TestRenew(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Options{})
	e.grant(1, 10)
	if _, err := e.le.Renew(ctx, 1); !errors.Is(err, ErrNotPrimary) {
		t.Fatalf("Renew on a follower = %v, want ErrNotPrimary", err)
	}
	e.le.Promote(0)
	if _, err := e.le.Renew(ctx, 2); !errors.Is(err, ErrLeaseNotFound) {
		t.Fatalf("Renew of a missing lease = %v, want ErrLeaseNotFound", err)
	}
	e.clock.Advance(8 * time.Second)
	if ttl, err := e.le.Renew(ctx, 1); err != nil || ttl != 10 {
		t.Fatalf("Renew = %d, %v; want 10", ttl, err)
	}
	if got := e.ttl(1); got != 10 {
		t.Errorf("TTL after renew = %d, want 10", got)
	}
	e.clock.Advance(9 * time.Second)
	if got := e.le.Expired(0); len(got) != 0 {
		t.Fatalf("Expired 9s after renew = %v", got)
	}
	e.clock.Advance(time.Second)
	if got := e.le.Expired(0); !slices.Equal(got, []int64{1}) {
		t.Fatalf("Expired 10s after renew = %v, want [1]", got)
	}
}

// TestRenewExpired: an expired lease cannot be renewed; Renew waits for the
// outcome, as etcd's does.
func TestRenewExpired(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(e *env, cancel context.CancelFunc)
		want error
	}{
		{"revoked", func(e *env, _ context.CancelFunc) { e.revoke(1) }, ErrLeaseNotFound},
		{"demoted", func(e *env, _ context.CancelFunc) { e.le.Demote() }, ErrNotPrimary},
		{"context", func(_ *env, cancel context.CancelFunc) { cancel() }, context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, Options{})
			e.le.Promote(0)
			e.grant(1, 5)
			e.clock.Advance(5 * time.Second)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := renewAsync(ctx, e.le, 1)
			tc.end(e, cancel)
			if err := <-done; !errors.Is(err, tc.want) {
				t.Fatalf("Renew = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestDemoteStopsExpiry(t *testing.T) {
	e := newEnv(t, Options{})
	e.le.Promote(0)
	e.grant(1, 5)
	e.clock.Advance(3 * time.Second)
	e.le.Demote()
	if e.le.Primary() {
		t.Fatal("still primary after Demote")
	}
	e.clock.Advance(time.Hour)
	if got := e.le.Expired(0); got != nil {
		t.Fatalf("Expired on a follower = %v", got)
	}
	if st, _ := e.le.TimeToLive(1, false); st.Primary || st.TTL != 5 {
		t.Errorf("follower TimeToLive = %+v, want TTL 5, not primary", st)
	}
	// Granted as a follower: no expiry either.
	e.grant(2, 1)
	e.clock.Advance(time.Hour)
	if got := e.le.Expired(0); got != nil {
		t.Fatalf("Expired on a follower = %v", got)
	}
	e.le.Demote() // idempotent
}

// TestPromoteRefreshes: a new primary starts every lease afresh, extended,
// so an election does not expire leases whose holders could not reach a
// leader meanwhile.
func TestPromoteRefreshes(t *testing.T) {
	e := newEnv(t, Options{})
	e.grant(1, 10)
	e.grant(2, 20)
	e.le.Promote(0)
	e.clock.Advance(9 * time.Second)
	e.le.Demote() // the leader steps down a second before lease 1 expires
	e.clock.Advance(time.Minute)
	e.le.Promote(2 * time.Second) // and is elected again (or another is)
	for _, step := range []struct {
		advance time.Duration
		want    []int64
	}{
		{0, nil},
		{11 * time.Second, nil},
		{time.Second, []int64{1}},
		{10 * time.Second, []int64{2}},
	} {
		e.clock.Advance(step.advance)
		got := e.le.Expired(0)
		if !slices.Equal(got, step.want) {
			t.Fatalf("+%v: Expired = %v, want %v", step.advance, got, step.want)
		}
		for _, id := range got {
			e.revoke(id)
		}
	}
}

// TestPromoteSpreads: leases that would expire together after an election
// are spread to three quarters of the revoke rate per second.
func TestPromoteSpreads(t *testing.T) {
	e := newEnv(t, Options{RevokeRate: 4}) // 3 per second after Promote
	for id := int64(1); id <= 10; id++ {
		e.grant(id, 10)
	}
	e.grant(11, 30)
	e.le.Promote(0)
	var got []int64
	for id := int64(1); id <= 11; id++ {
		got = append(got, e.ttl(id))
	}
	want := []int64{10, 10, 10, 11, 11, 11, 12, 12, 12, 13, 30}
	if !slices.Equal(got, want) {
		t.Fatalf("TTLs after Promote = %v, want %v", got, want)
	}
}

// TestExpiredRetry: a reported lease is not reported again until the retry
// interval has passed without its revoke, nor after a renew.
func TestExpiredRetry(t *testing.T) {
	e := newEnv(t, Options{ExpiredRetryInterval: 3 * time.Second})
	e.le.Promote(0)
	e.grant(1, 5)
	e.grant(2, 5)
	e.clock.Advance(5 * time.Second)
	for _, step := range []struct {
		advance time.Duration
		limit   int
		want    []int64
	}{
		{0, 1, []int64{1}},
		{time.Second, 0, []int64{2}},
		{0, 0, nil},
		{1900 * time.Millisecond, 0, nil},
		{100 * time.Millisecond, 0, []int64{1}},
		{0, 0, nil},
		{time.Second, 0, []int64{2}},
		{3 * time.Second, 0, []int64{1, 2}},
	} {
		e.clock.Advance(step.advance)
		if got := e.le.Expired(step.limit); !slices.Equal(got, step.want) {
			t.Fatalf("+%v: Expired(%d) = %v, want %v", step.advance, step.limit, got, step.want)
		}
	}
	e.revoke(1)
	e.clock.Advance(3 * time.Second)
	if got := e.le.Expired(0); !slices.Equal(got, []int64{2}) {
		t.Fatalf("after revoking 1: Expired = %v, want [2]", got)
	}
}

// TestRevokeRateLimit: at most RevokeRate leases per second are reported,
// in bursts of half a second's worth.
func TestRevokeRateLimit(t *testing.T) {
	e := newEnv(t, Options{ExpiredRetryInterval: time.Hour})
	e.le.Promote(0)
	const n = 1800
	for id := int64(1); id <= n; id++ {
		e.grant(id, 10)
	}
	e.clock.Advance(10 * time.Second)
	total := 0
	for _, step := range []struct {
		advance time.Duration
		limit   int
		want    int
	}{
		{0, 0, 500}, // burst: half of DefaultRevokeRate
		{0, 0, 0},
		{100 * time.Millisecond, 0, 100},
		{250 * time.Millisecond, 10, 10},
		{0, 0, 240},
		{10 * time.Second, 0, 500}, // the budget does not grow past a burst
		{time.Second, 0, 450},
		{time.Second, 0, 0},
	} {
		e.clock.Advance(step.advance)
		got := e.le.Expired(step.limit)
		if len(got) != step.want {
			t.Fatalf("+%v: Expired(%d) gave %d leases, want %d", step.advance, step.limit, len(got), step.want)
		}
		total += len(got)
	}
	if total != n {
		t.Errorf("reported %d leases, want %d", total, n)
	}
}

// checkpointer stands in for raft: it applies each proposal at once, as
// the applier would on this member.
type checkpointer struct {
	le    *Lessor
	calls [][]Checkpoint
	err   error
}

func (c *checkpointer) propose(_ context.Context, cps []Checkpoint) error {
	c.calls = append(c.calls, cps)
	if c.err != nil {
		return c.err
	}
	for _, cp := range cps {
		if err := c.le.Checkpoint(cp.ID, cp.RemainingTTL); err != nil {
			return err
		}
	}
	return nil
}

func newCheckpointEnv(t *testing.T, opts Options) (*env, *checkpointer) {
	cp := &checkpointer{}
	opts.Checkpointer = cp.propose
	e := newEnv(t, opts)
	cp.le = e.le
	return e, cp
}

// TestCheckpointsDue: every interval, the primary yields the remaining TTL
// of each lease longer than the interval.
func TestCheckpointsDue(t *testing.T) {
	e, _ := newCheckpointEnv(t, Options{CheckpointInterval: time.Minute})
	e.grant(1, 3600)
	e.grant(2, 60) // not longer than the interval: never checkpointed
	e.grant(3, 600)
	if got := e.le.CheckpointsDue(0); got != nil {
		t.Fatalf("CheckpointsDue on a follower = %v", got)
	}
	e.le.Promote(0)
	e.clock.Advance(59 * time.Second)
	if got := e.le.CheckpointsDue(0); len(got) != 0 {
		t.Fatalf("CheckpointsDue before the interval = %v", got)
	}
	e.clock.Advance(time.Second)
	got := e.le.CheckpointsDue(0)
	want := []Checkpoint{{1, 3540}, {3, 540}}
	if !slices.Equal(got, want) {
		t.Fatalf("CheckpointsDue = %v, want %v", got, want)
	}
	if again := e.le.CheckpointsDue(0); len(again) != 0 {
		t.Fatalf("CheckpointsDue again = %v", again)
	}
	for _, cp := range got {
		if err := e.le.Checkpoint(cp.ID, cp.RemainingTTL); err != nil {
			t.Fatal(err)
		}
	}
	e.clock.Advance(90 * time.Second)
	if got, want := e.le.CheckpointsDue(0), []Checkpoint{{1, 3450}, {3, 450}}; !slices.Equal(got, want) {
		t.Fatalf("second round = %v, want %v", got, want)
	}
	// Not applied (a lost proposal): due again an interval later anyway.
	e.clock.Advance(time.Minute)
	if got, want := e.le.CheckpointsDue(1), []Checkpoint{{1, 3390}}; !slices.Equal(got, want) {
		t.Fatalf("retry with limit 1 = %v, want %v", got, want)
	}
	if got, want := e.le.CheckpointsDue(1), []Checkpoint{{3, 390}}; !slices.Equal(got, want) {
		t.Fatalf("retry, next batch = %v, want %v", got, want)
	}
	e.le.Demote()
	e.clock.Advance(time.Hour)
	if got := e.le.CheckpointsDue(0); got != nil {
		t.Fatalf("CheckpointsDue after Demote = %v", got)
	}
}

func TestCheckpointsBatch(t *testing.T) {
	e, _ := newCheckpointEnv(t, Options{CheckpointInterval: time.Minute})
	e.le.Promote(0)
	for id := int64(1); id <= 1500; id++ {
		e.grant(id, 3600)
	}
	e.clock.Advance(time.Minute)
	if got := e.le.CheckpointsDue(0); len(got) != MaxCheckpointBatch {
		t.Fatalf("first batch = %d, want %d", len(got), MaxCheckpointBatch)
	}
	if got := e.le.CheckpointsDue(5000); len(got) != 500 {
		t.Fatalf("second batch = %d, want 500", len(got))
	}
}

func TestCheckpointsDisabled(t *testing.T) {
	for _, opts := range []Options{
		{CheckpointInterval: time.Minute},
		{CheckpointInterval: -1, Checkpointer: func(context.Context, []Checkpoint) error { return nil }},
	} {
		e := newEnv(t, opts)
		e.le.Promote(0)
		e.grant(1, 3600)
		e.clock.Advance(time.Hour / 2)
		if got := e.le.CheckpointsDue(0); got != nil {
			t.Errorf("CheckpointsDue with checkpointing off = %v", got)
		}
	}
}

// TestCheckpointSurvivesAndPromote: an applied checkpoint is persisted, and
// a new primary counts from it instead of the full TTL.
func TestCheckpointSurvivesAndPromote(t *testing.T) {
	e := newEnv(t, Options{})
	e.grant(1, 600)
	e.grant(2, 600)
	if err := e.le.Checkpoint(1, 100); err != nil {
		t.Fatal(err)
	}
	if err := e.le.Checkpoint(9, 100); err != nil {
		t.Fatalf("checkpoint of a missing lease = %v, want nil", err)
	}
	e.reopen()
	if r, _ := e.record(1); r.remaining != 100 {
		t.Fatalf("record after reopen = %+v, want remaining 100", r)
	}
	e.le.Promote(time.Second)
	if got := e.ttl(1); got != 101 {
		t.Errorf("TTL after Promote = %d, want 101", got)
	}
	e.clock.Advance(100 * time.Second)
	if got := e.le.Expired(0); len(got) != 0 {
		t.Fatalf("Expired at 100s = %v", got)
	}
	e.clock.Advance(time.Second)
	if got := e.le.Expired(0); !slices.Equal(got, []int64{1}) {
		t.Fatalf("Expired at 101s = %v, want [1]", got)
	}
	// A checkpoint of 0 clears it.
	if err := e.le.Checkpoint(1, 0); err != nil {
		t.Fatal(err)
	}
	e.le.Demote()
	e.le.Promote(0)
	if got := e.ttl(1); got != 600 {
		t.Errorf("TTL after clearing the checkpoint = %d, want 600", got)
	}
}

// TestRenewResetsCheckpoint: renewing a checkpointed lease first resets its
// remaining TTL on every member, through the Checkpointer.
func TestRenewResetsCheckpoint(t *testing.T) {
	ctx := context.Background()
	e, cp := newCheckpointEnv(t, Options{CheckpointInterval: time.Minute})
	e.grant(1, 600)
	e.grant(2, 600)
	e.le.Promote(0)
	if err := e.le.Checkpoint(1, 300); err != nil {
		t.Fatal(err)
	}
	if _, err := e.le.Renew(ctx, 2); err != nil || len(cp.calls) != 0 {
		t.Fatalf("renew of an unchecked lease: %v, checkpointer calls %v", err, cp.calls)
	}
	cp.err = errors.New("proposal dropped")
	e.clock.Advance(10 * time.Second)
	if _, err := e.le.Renew(ctx, 1); !errors.Is(err, cp.err) {
		t.Fatalf("Renew with a failing checkpointer = %v", err)
	}
	if got := e.ttl(1); got != 590 {
		t.Fatalf("TTL after failed renew = %d, want 590", got)
	}
	cp.err = nil
	cp.calls = nil
	if ttl, err := e.le.Renew(ctx, 1); err != nil || ttl != 600 {
		t.Fatalf("Renew = %d, %v", ttl, err)
	}
	if want := [][]Checkpoint{{{ID: 1, RemainingTTL: 0}}}; len(cp.calls) != 1 || !slices.Equal(cp.calls[0], want[0]) {
		t.Fatalf("checkpointer calls = %v, want %v", cp.calls, want)
	}
	if r, _ := e.record(1); r.remaining != 0 {
		t.Errorf("remaining after renew = %d, want 0", r.remaining)
	}
	if _, err := e.le.Renew(ctx, 1); err != nil || len(cp.calls) != 1 {
		t.Fatalf("second renew: %v, %d checkpointer calls", err, len(cp.calls))
	}
}
