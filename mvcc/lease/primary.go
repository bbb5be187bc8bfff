package lease

import (
	"cmp"
	"context"
	"math"
	"slices"
	"time"
)

// Primary duties. Only the leader's lessor is the primary: it alone keeps
// expiry times, and it expires a lease by telling the server, which
// proposes a revoke through raft; no member ever deletes a lease on its
// own. Nothing here changes replicated state.

// Promote makes this lessor the primary, when its member becomes the
// leader. Every lease's expiry becomes now + extend + its remaining TTL
// (the checkpointed one if any, else its TTL): the followers kept no
// expiry, so the leases start afresh, and extend (etcd uses the election
// timeout) covers the time clients needed to find the new leader. When
// that would make many leases expire together, later ones are pushed back
// so that at most three quarters of RevokeRate expire in any second, as
// etcd spreads them, leaving room for leases expiring on their own.
// Calling it on the primary refreshes again.
func (le *Lessor) Promote(extend time.Duration) {
	le.mu.Lock()
	defer le.mu.Unlock()
	if !le.primary {
		le.primary = true
		le.demoted = make(chan struct{})
	}
	now := le.opts.Clock.Now()
	le.tokens, le.tokensAt = le.burst(), now
	le.refreshAll(now, extend)
}

// refreshAll restarts every lease's expiry from now and reschedules the
// checkpoints. The caller holds mu and the lessor is primary.
func (le *Lessor) refreshAll(now time.Time, extend time.Duration) {
	le.expiries.clear()
	le.checkpoints.clear()
	ls := make([]*lease, 0, len(le.leases))
	for _, l := range le.leases {
		l.expiry = now.Add(extend + seconds(l.remainingOrTTL()))
		ls = append(ls, l)
	}
	slices.SortFunc(ls, func(a, b *lease) int {
		return cmp.Or(a.expiry.Compare(b.expiry), cmp.Compare(a.id, b.id))
	})
	// Greedy spreading: the k-th lease in expiry order may not expire
	// within a second of the (k-target)-th. Raising one expiry keeps the
	// order (by induction, each bound is at least the previous one), so
	// any target+1 consecutive expiries span at least a second.
	target := max(3*le.opts.RevokeRate/4, 1)
	for k := target; k < len(ls); k++ {
		if floor := ls[k-target].expiry.Add(time.Second); ls[k].expiry.Before(floor) {
			ls[k].expiry = floor
		}
	}
	for _, l := range ls {
		le.expiries.set(l.id, l.expiry)
		le.scheduleCheckpoint(l, now)
	}
}

// Demote ends primacy, when the member stops being the leader (or shuts
// down): expiry times are forgotten, as followers never expire leases, and
// Renew calls waiting for a revoke return ErrNotPrimary.
func (le *Lessor) Demote() {
	le.mu.Lock()
	defer le.mu.Unlock()
	if !le.primary {
		return
	}
	le.primary = false
	close(le.demoted)
	le.demoted = nil
	for _, l := range le.leases {
		l.expiry = time.Time{}
	}
	le.expiries.clear()
	le.checkpoints.clear()
}

// Primary reports whether the lessor is the primary.
func (le *Lessor) Primary() bool {
	le.mu.RLock()
	defer le.mu.RUnlock()
	return le.primary
}

// Renew is the keep-alive: on the primary it extends lease id to expire
// TTL seconds from now and returns the TTL. Any goroutine.
//
// It fails with ErrNotPrimary off the primary (the server forwards to the
// leader) and ErrLeaseNotFound if the lease does not exist. As in etcd, a
// lease that has already expired cannot be renewed: Renew waits until its
// revoke is applied (then ErrLeaseNotFound, and the client may rely on its
// keys being gone), the lessor is demoted (ErrNotPrimary, as the revoke
// may never come), or ctx ends (ctx's error).
//
// With checkpointing enabled, a lease that carries a checkpointed remaining
// TTL is first reset to "none" through the Checkpointer (a checkpoint of
// 0 applied on every member, as etcd does), so that a later leader counts
// from the full TTL the client was just promised; a Checkpointer error is
// returned and the lease is not extended.
func (le *Lessor) Renew(ctx context.Context, id int64) (int64, error) {
	reset := false
	for {
		le.mu.Lock()
		if !le.primary {
			le.mu.Unlock()
			return -1, ErrNotPrimary
		}
		l, ok := le.leases[id]
		if !ok {
			le.mu.Unlock()
			return -1, ErrLeaseNotFound
		}
		now := le.opts.Clock.Now()
		if !now.Before(l.expiry) {
			if l.revoked == nil {
				l.revoked = make(chan struct{})
			}
			revoked, demoted := l.revoked, le.demoted
			le.mu.Unlock()
			select {
			case <-revoked:
				continue // gone, or replaced by Recover: look again
			case <-demoted:
				return -1, ErrNotPrimary
			case <-ctx.Done():
				return -1, ctx.Err()
			}
		}
		if cp := le.opts.Checkpointer; cp != nil && l.remaining > 0 && !reset {
			le.mu.Unlock()
			if err := cp(ctx, []Checkpoint{{ID: id}}); err != nil {
				return -1, err
			}
			reset = true
			continue // the lease may have been revoked, or primacy lost
		}
		le.setExpiry(l, now.Add(seconds(l.ttl)))
		ttl := l.ttl
		le.mu.Unlock()
		return ttl, nil
	}
}

// Expired returns, on the primary, leases whose expiry has passed, earliest
// first, at most limit of them (no limit if limit <= 0) and at most what
// the revoke rate allows: RevokeRate per second, in bursts of up to half a
// second's worth (etcd hands out RevokeRate/2 every 500ms). The server
// proposes a revoke for each (in the background, a few at a time). A
// lease reported is not reported again for ExpiredRetryInterval; if it is
// still there then (the proposal was lost, or the leadership changed
// hands and back), it is reported again. Off the primary, nil. The server
// calls it periodically (see PollInterval) from its leader loop.
func (le *Lessor) Expired(limit int) []int64 {
	le.mu.Lock()
	defer le.mu.Unlock()
	if !le.primary {
		return nil
	}
	now := le.opts.Clock.Now()
	le.refill(now)
	budget := int(le.tokens)
	if limit > 0 {
		budget = min(budget, limit)
	}
	var out []int64
	for len(out) < budget {
		id, at, ok := le.expiries.peek()
		if !ok || at.After(now) {
			break
		}
		l := le.leases[id]
		if l == nil { // cannot happen: Revoke unqueues
			le.expiries.remove(id)
			continue
		}
		if now.Before(l.expiry) {
			le.expiries.set(id, l.expiry)
			continue
		}
		le.expiries.set(id, now.Add(le.opts.ExpiredRetryInterval))
		out = append(out, id)
	}
	le.tokens -= float64(len(out))
	return out
}

func (le *Lessor) burst() float64 { return max(float64(le.opts.RevokeRate)/2, 1) }

// refill adds the revoke budget earned since the last call. The caller
// holds mu.
func (le *Lessor) refill(now time.Time) {
	if el := now.Sub(le.tokensAt); el > 0 {
		le.tokens = min(le.burst(), le.tokens+el.Seconds()*float64(le.opts.RevokeRate))
		le.tokensAt = now
	}
}

// CheckpointsDue returns, on the primary with checkpointing enabled, the
// checkpoints due now: for each lease longer than CheckpointInterval,
// every CheckpointInterval, its remaining TTL rounded up to a second,
// unless it is not below the TTL (just renewed) or the lease has expired.
// At most limit (capped at MaxCheckpointBatch; <= 0 means the cap). The
// server proposes them as one LeaseCheckpoint entry and calls again while
// it gets a full batch. A lease returned is scheduled again an interval
// later whether or not its checkpoint is applied, so a lost proposal is
// retried (etcd waits for the apply to schedule the next one). Off the
// primary, nil.
func (le *Lessor) CheckpointsDue(limit int) []Checkpoint {
	le.mu.Lock()
	defer le.mu.Unlock()
	if !le.primary || le.opts.Checkpointer == nil {
		return nil
	}
	if limit <= 0 || limit > MaxCheckpointBatch {
		limit = MaxCheckpointBatch
	}
	now := le.opts.Clock.Now()
	var out []Checkpoint
	for len(out) < limit {
		id, at, ok := le.checkpoints.peek()
		if !ok || at.After(now) {
			break
		}
		l := le.leases[id]
		if l == nil || !now.Before(l.expiry) {
			le.checkpoints.remove(id) // revoked, or about to be
			continue
		}
		remaining := int64(math.Ceil(l.expiry.Sub(now).Seconds()))
		le.scheduleAt(l, remaining, now)
		if remaining < l.ttl {
			out = append(out, Checkpoint{ID: id, RemainingTTL: remaining})
		}
	}
	return out
}

// scheduleCheckpoint queues l's next checkpoint, if checkpointing is on
// and l is long enough to need one. The caller holds mu, on the primary.
func (le *Lessor) scheduleCheckpoint(l *lease, now time.Time) {
	le.scheduleAt(l, l.remainingOrTTL(), now)
}

func (le *Lessor) scheduleAt(l *lease, remaining int64, now time.Time) {
	if le.opts.Checkpointer == nil {
		return
	}
	if iv := le.opts.CheckpointInterval; remaining > int64(iv/time.Second) {
		le.checkpoints.set(l.id, now.Add(iv))
	} else {
		le.checkpoints.remove(l.id)
	}
}

// setExpiry sets l's expiry and queues it. The caller holds mu, on the
// primary.
func (le *Lessor) setExpiry(l *lease, t time.Time) {
	l.expiry = t
	le.expiries.set(l.id, t)
}
