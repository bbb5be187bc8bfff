package compat

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

func newSession(t *testing.T, cli *clientv3.Client, ttl int) *concurrency.Session {
	t.Helper()
	s, err := concurrency.NewSession(cli, concurrency.WithTTL(ttl))
	if err != nil {
		t.Fatalf("new session: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// async runs fn in a goroutine; the channel yields its error.
func async(fn func() error) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- fn() }()
	return ch
}

// waitKeys waits until n keys exist under pfx: a contender has queued.
func waitKeys(t *testing.T, cli *clientv3.Client, pfx string, n int64) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d keys under %s", n, pfx), func() error {
		resp, err := cli.Get(ctx(t), pfx, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			return err
		}
		if resp.Count != n {
			return fmt.Errorf("%d keys", resp.Count)
		}
		return nil
	})
}

// notYet fails if ch has already yielded.
func notYet(t *testing.T, ch <-chan error, what string) {
	t.Helper()
	select {
	case err := <-ch:
		t.Fatalf("%s returned early (err %v)", what, err)
	default:
	}
}

func await(t *testing.T, ch <-chan error, what string) {
	t.Helper()
	select {
	case err := <-ch:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-ctx(t).Done():
		t.Fatalf("%s did not return within %v", what, opTimeout)
	}
}

// testConcurrency runs etcd's concurrency recipes: sessions, mutexes,
// elections and software transactional memory.
func testConcurrency(t *testing.T, e *env) {
	cli := e.cli

	t.Run("Session", func(t *testing.T) {
		s, err := concurrency.NewSession(cli, concurrency.WithTTL(5))
		if err != nil {
			t.Fatal(err)
		}
		ttl, err := cli.TimeToLive(ctx(t), s.Lease())
		if err != nil || ttl.GrantedTTL != 5 || ttl.TTL <= 0 {
			t.Fatalf("session lease: %v %+v; want granted ttl 5", err, ttl)
		}
		key := prefix(t) + "owned"
		mustPut(t, cli, key, "v", clientv3.WithLease(s.Lease()))
		if err := s.Close(); err != nil {
			t.Fatalf("close session: %v", err)
		}
		select {
		case <-s.Done():
		case <-ctx(t).Done():
			t.Fatal("session not done after Close")
		}
		if resp, err := cli.Get(ctx(t), key); err != nil || len(resp.Kvs) != 0 {
			t.Errorf("key of a closed session: %v %s; want it gone", err, kvString(resp))
		}
	})

	t.Run("Mutex", func(t *testing.T) {
		pfx := prefix(t) + "lock/"
		s1, s2, s3 := newSession(t, cli, 10), newSession(t, cli, 10), newSession(t, cli, 10)
		m1, m2, m3 := concurrency.NewMutex(s1, pfx), concurrency.NewMutex(s2, pfx), concurrency.NewMutex(s3, pfx)
		if err := m1.Lock(ctx(t)); err != nil {
			t.Fatalf("first lock: %v", err)
		}
		if err := m2.TryLock(ctx(t)); !errors.Is(err, concurrency.ErrLocked) {
			t.Fatalf("try lock while held: got %v, want %v", err, concurrency.ErrLocked)
		}
		// TryLock cleaned up after itself: only m1's key is there.
		waitKeys(t, cli, pfx, 1)

		// m2 queues behind m1 and gets the lock when m1 unlocks.
		got2 := async(func() error { return m2.Lock(ctx(t)) })
		waitKeys(t, cli, pfx, 2)
		notYet(t, got2, "second Lock while the first holds the lock")
		if err := m1.Unlock(ctx(t)); err != nil {
			t.Fatal(err)
		}
		await(t, got2, "second Lock after the first unlocked")

		// m3 queues behind m2 and gets the lock when m2's session ends.
		got3 := async(func() error { return m3.Lock(ctx(t)) })
		waitKeys(t, cli, pfx, 2)
		notYet(t, got3, "third Lock while the second holds the lock")
		if _, err := cli.Revoke(ctx(t), s2.Lease()); err != nil {
			t.Fatalf("end the holder's session: %v", err)
		}
		await(t, got3, "third Lock after the holder's session ended")
		owner, err := cli.Get(ctx(t), pfx, clientv3.WithFirstCreate()...)
		if err != nil || len(owner.Kvs) != 1 || string(owner.Kvs[0].Key) != m3.Key() {
			t.Errorf("lock owner: %v %s; want %s", err, kvString(owner), m3.Key())
		}
		if err := m3.Unlock(ctx(t)); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("Election", func(t *testing.T) {
		pfx := prefix(t) + "elect/"
		s1, s2 := newSession(t, cli, 10), newSession(t, cli, 10)
		e1, e2 := concurrency.NewElection(s1, pfx), concurrency.NewElection(s2, pfx)
		watcher := concurrency.NewElection(newSession(t, cli, 10), pfx)

		if _, err := watcher.Leader(ctx(t)); !errors.Is(err, concurrency.ErrElectionNoLeader) {
			t.Fatalf("leader before any campaign: got %v, want %v", err, concurrency.ErrElectionNoLeader)
		}
		if err := e1.Campaign(ctx(t), "one"); err != nil {
			t.Fatalf("first campaign: %v", err)
		}
		octx, cancel := context.WithCancel(context.Background())
		defer cancel()
		obs := watcher.Observe(octx)
		expectLeader := func(want string) {
			t.Helper()
			select {
			case resp, ok := <-obs:
				if !ok {
					t.Fatalf("observe closed while waiting for leader %q", want)
				}
				if got := string(resp.Kvs[0].Value); got != want {
					t.Fatalf("observed leader %q, want %q", got, want)
				}
			case <-ctx(t).Done():
				t.Fatalf("did not observe leader %q", want)
			}
		}
		expectLeader("one")

		won2 := async(func() error { return e2.Campaign(ctx(t), "two") })
		waitKeys(t, cli, pfx, 2)
		notYet(t, won2, "second campaign while the first leads")

		if err := e1.Proclaim(ctx(t), "one again"); err != nil {
			t.Fatalf("proclaim: %v", err)
		}
		expectLeader("one again")
		if l, err := watcher.Leader(ctx(t)); err != nil || string(l.Kvs[0].Value) != "one again" {
			t.Fatalf("leader: %v %v; want one again", err, l)
		}
		if err := e1.Resign(ctx(t)); err != nil {
			t.Fatalf("resign: %v", err)
		}
		await(t, won2, "second campaign after the leader resigned")
		expectLeader("two")
		if l, err := watcher.Leader(ctx(t)); err != nil || string(l.Kvs[0].Value) != "two" {
			t.Fatalf("leader after resign: %v %v; want two", err, l)
		}
		if err := e2.Resign(ctx(t)); err != nil {
			t.Fatal(err)
		}
		if _, err := watcher.Leader(ctx(t)); !errors.Is(err, concurrency.ErrElectionNoLeader) {
			t.Errorf("leader after everyone resigned: got %v, want %v", err, concurrency.ErrElectionNoLeader)
		}
	})

	t.Run("STM", func(t *testing.T) {
		pfx := prefix(t) + "acct/"
		const accounts, start, workers, transfers = 5, 100, 4, 8
		acct := func(i int) string { return fmt.Sprintf("%s%d", pfx, i) }
		for i := range accounts {
			mustPut(t, cli, acct(i), strconv.Itoa(start))
		}
		var attempts atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(w), 42))
				for range transfers {
					from, to := rng.IntN(accounts), rng.IntN(accounts-1)
					if to >= from {
						to++
					}
					_, err := concurrency.NewSTM(cli, func(s concurrency.STM) error {
						attempts.Add(1)
						fromBal, err1 := strconv.Atoi(s.Get(acct(from)))
						toBal, err2 := strconv.Atoi(s.Get(acct(to)))
						if err := errors.Join(err1, err2); err != nil {
							return err
						}
						amt := fromBal / 2
						s.Put(acct(from), strconv.Itoa(fromBal-amt))
						s.Put(acct(to), strconv.Itoa(toBal+amt))
						return nil
					})
					if err != nil {
						errs <- fmt.Errorf("worker %d: transfer %d -> %d: %w", w, from, to, err)
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		resp, err := cli.Get(ctx(t), pfx, clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		sum := 0
		for _, kv := range resp.Kvs {
			n, err := strconv.Atoi(string(kv.Value))
			if err != nil {
				t.Fatalf("%s = %q", kv.Key, kv.Value)
			}
			sum += n
		}
		if len(resp.Kvs) != accounts || sum != accounts*start {
			t.Fatalf("after %d transfers: %d accounts summing to %d (%s); want %d summing to %d",
				workers*transfers, len(resp.Kvs), sum, kvString(resp), accounts, accounts*start)
		}
		t.Logf("%d transfers took %d attempts", workers*transfers, attempts.Load())
	})
}
