package lease

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// miniServer runs the lessor as the server would: one applier goroutine
// applies proposals in order; everything else proposes and waits.
type miniServer struct {
	entries chan func()
	stop    chan struct{}
}

func (m *miniServer) propose(ctx context.Context, op func()) error {
	done := make(chan struct{})
	select {
	case m.entries <- func() { op(); close(done) }:
	case <-m.stop:
		return errors.New("stopped")
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-m.stop:
		return errors.New("stopped")
	}
}

// TestConcurrent drives the lessor from every side at once under -race:
// the applier grants, puts, checkpoints and revokes; keep-alives renew
// (through the checkpointer); readers ask TimeToLive and Leases; the leader
// loop expires and checkpoints; leadership flips; the clock runs. At the
// end the table and the keyspace must agree.
func TestConcurrent(t *testing.T) {
	m := &miniServer{entries: make(chan func()), stop: make(chan struct{})}
	var le *Lessor
	cp := func(ctx context.Context, cps []Checkpoint) error {
		return m.propose(ctx, func() {
			for _, c := range cps {
				_ = le.Checkpoint(c.ID, c.RemainingTTL)
			}
		})
	}
	e := newEnv(t, Options{Checkpointer: cp, CheckpointInterval: time.Second, ExpiredRetryInterval: 200 * time.Millisecond})
	le = e.le
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var applier sync.WaitGroup
	applier.Add(1)
	go func() {
		defer applier.Done()
		for {
			select {
			case op := <-m.entries:
				op()
			case <-m.stop:
				return
			}
		}
	}()

	var wg sync.WaitGroup
	const maxID = 64
	// Clients: grant, put, revoke through "raft".
	for c := range 2 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(c), 1))
			for i := range 300 {
				id := int64(r.IntN(maxID) + 1)
				var op func()
				switch r.IntN(4) {
				case 0:
					op = func() { _, _ = le.Grant(id, int64(1+r.IntN(3))) }
				case 1, 2:
					key := fmt.Sprintf("k%d-%d", c, i%20)
					op = func() { _ = putErr(e, key, id) }
				case 3:
					op = func() { _ = le.Revoke(id) }
				}
				if m.propose(ctx, op) != nil {
					return
				}
			}
		})
	}
	var renewed, expired, checkpointed atomic.Int64
	var bg sync.WaitGroup
	// Keep-alives and readers.
	for w := range 4 {
		bg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 2))
			for ctx.Err() == nil {
				id := int64(r.IntN(maxID) + 1)
				switch r.IntN(4) {
				case 0:
					rctx, rcancel := context.WithTimeout(ctx, 20*time.Millisecond)
					if _, err := le.Renew(rctx, id); err == nil {
						renewed.Add(1)
					}
					rcancel()
				case 1:
					_, _ = le.TimeToLive(id, true)
				case 2:
					_ = le.Leases()
				case 3:
					_ = le.Exists(id)
				}
			}
		})
	}
	// The leader loop, leadership changes and the clock.
	bg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			ids := le.Expired(0)
			expired.Add(int64(len(ids)))
			for _, id := range ids {
				_ = m.propose(ctx, func() { _ = le.Revoke(id) })
			}
			if cps := le.CheckpointsDue(0); len(cps) > 0 {
				checkpointed.Add(int64(len(cps)))
				_ = cp(ctx, cps)
			}
			e.clock.Advance(50 * time.Millisecond)
			switch i % 40 {
			case 0:
				le.Promote(100 * time.Millisecond)
			case 30:
				le.Demote()
			}
		}
	})

	wg.Wait()
	cancel()
	bg.Wait()
	close(m.stop)
	applier.Wait()

	t.Logf("renewed %d, expired %d, checkpointed %d, %d leases left",
		renewed.Load(), expired.Load(), checkpointed.Load(), len(le.Leases()))

	// The table and the keyspace agree.
	byLease := map[int64][]string{}
	for _, kl := range e.liveKeys() {
		at := strings.LastIndexByte(kl, '@')
		id, err := strconv.ParseInt(kl[at+1:], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		if id != 0 {
			byLease[id] = append(byLease[id], kl[:at])
		}
	}
	for _, id := range le.Leases() {
		got := e.keysOf(id)
		want := byLease[id]
		slices.Sort(want)
		if len(got)+len(want) > 0 && !slices.Equal(got, want) {
			t.Errorf("lease %d: attached %v, keyspace %v", id, got, want)
		}
		delete(byLease, id)
	}
	if len(byLease) != 0 {
		t.Errorf("keys carry missing leases: %v", byLease)
	}
}
