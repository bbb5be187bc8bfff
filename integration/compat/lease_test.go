package compat

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cairnkv/cairn/integration/harness"
)

// follower returns a member that is not the leader.
func follower(t *testing.T, c *harness.Cluster) *harness.Member {
	t.Helper()
	lead := c.WaitLeader()
	for _, m := range c.Members {
		if m != lead && m.Running() {
			return m
		}
	}
	t.Fatal("no running follower")
	return nil
}

// testLease covers the lease API and lease expiry.
func testLease(t *testing.T, e *env) {
	cli := e.cli

	t.Run("GrantTimeToLiveLeasesRevoke", func(t *testing.T) {
		p := prefix(t)
		g, err := cli.Grant(ctx(t), 60)
		if err != nil {
			t.Fatal(err)
		}
		if g.ID == 0 || g.TTL != 60 {
			t.Fatalf("grant: id %x ttl %d; want a nonzero id and ttl 60", g.ID, g.TTL)
		}
		mustPut(t, cli, p+"k2", "v", clientv3.WithLease(g.ID))
		mustPut(t, cli, p+"k1", "v", clientv3.WithLease(g.ID))

		ttl, err := cli.TimeToLive(ctx(t), g.ID, clientv3.WithAttachedKeys())
		if err != nil {
			t.Fatal(err)
		}
		var gotKeys []string
		for _, k := range ttl.Keys {
			gotKeys = append(gotKeys, string(k))
		}
		slices.Sort(gotKeys)
		if ttl.ID != g.ID || ttl.GrantedTTL != 60 || ttl.TTL <= 50 || ttl.TTL > 60 || !slices.Equal(gotKeys, []string{p + "k1", p + "k2"}) {
			t.Errorf("time to live: id %x ttl %d granted %d keys %q; want %x, 51..60, 60, [%sk1 %sk2]", ttl.ID, ttl.TTL, ttl.GrantedTTL, gotKeys, g.ID, p, p)
		}
		noKeys, err := cli.TimeToLive(ctx(t), g.ID)
		if err != nil || len(noKeys.Keys) != 0 {
			t.Errorf("time to live without keys: %v, %d keys; want none", err, len(noKeys.Keys))
		}

		ls, err := cli.Leases(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(ls.Leases, func(s clientv3.LeaseStatus) bool { return s.ID == g.ID }) {
			t.Errorf("leases %v do not list %x", ls.Leases, g.ID)
		}

		before, err := cli.Get(ctx(t), p, clientv3.WithPrefix())
		if err != nil || len(before.Kvs) != 2 {
			t.Fatalf("before revoke: %v %v", err, before)
		}
		rv, err := cli.Revoke(ctx(t), g.ID)
		if err != nil {
			t.Fatal(err)
		}
		if rv.Header.Revision != before.Header.Revision+1 {
			t.Errorf("revoking a lease with two keys moved the revision from %d to %d; want one revision", before.Header.Revision, rv.Header.Revision)
		}
		after, err := cli.Get(ctx(t), p, clientv3.WithPrefix())
		if err != nil || len(after.Kvs) != 0 {
			t.Errorf("after revoke: %v, keys %s; want none", err, kvString(after))
		}
		// The list is the serving member's own (as in etcd), which may not
		// have applied the revoke yet: it must drop the lease soon.
		waitFor(t, "the revoked lease to leave the list", func() error {
			ls, err := cli.Leases(ctx(t))
			if err != nil {
				return err
			}
			if slices.ContainsFunc(ls.Leases, func(s clientv3.LeaseStatus) bool { return s.ID == g.ID }) {
				return fmt.Errorf("revoked lease %x still listed", g.ID)
			}
			return nil
		})
		if _, err := cli.Revoke(ctx(t), g.ID); !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			t.Errorf("second revoke: got %v, want %v", err, rpctypes.ErrLeaseNotFound)
		}
	})

	t.Run("UnknownLease", func(t *testing.T) {
		const unknown = clientv3.LeaseID(0x5eed_f00d)
		cases := []struct {
			name string
			call func() error
		}{
			{"time to live", func() error {
				resp, err := cli.TimeToLive(ctx(t), unknown)
				if err != nil {
					return err
				}
				if resp.TTL != -1 {
					return fmt.Errorf("ttl %d, want -1", resp.TTL)
				}
				return nil
			}},
			{"revoke", func() error {
				_, err := cli.Revoke(ctx(t), unknown)
				if !errors.Is(err, rpctypes.ErrLeaseNotFound) {
					return fmt.Errorf("got %v, want %v", err, rpctypes.ErrLeaseNotFound)
				}
				return nil
			}},
			{"keep alive once", func() error {
				_, err := cli.KeepAliveOnce(ctx(t), unknown)
				if !errors.Is(err, rpctypes.ErrLeaseNotFound) {
					return fmt.Errorf("got %v, want %v", err, rpctypes.ErrLeaseNotFound)
				}
				return nil
			}},
			{"keep alive channel closes", func() error {
				kctx, cancel := context.WithTimeout(context.Background(), watchWait)
				defer cancel()
				ch, err := cli.KeepAlive(kctx, unknown)
				if err != nil {
					return err
				}
				for resp := range ch {
					if resp.TTL > 0 {
						return fmt.Errorf("keep-alive answer for an unknown lease: %+v", resp)
					}
				}
				if kctx.Err() != nil {
					return fmt.Errorf("keep-alive channel of an unknown lease still open after %v", watchWait)
				}
				return nil
			}},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				if err := tc.call(); err != nil {
					t.Fatal(err)
				}
			})
		}
	})

	// Two leases of 2 s: one kept alive through a follower, one left to
	// expire. The expired one's key goes; the kept one outlives 3 TTLs.
	t.Run("KeepAliveAndExpiry", func(t *testing.T) {
		p := prefix(t)
		const ttl = 2
		f := follower(t, e.c)
		fcli := newClient(t, f.Addr())

		start := time.Now()
		kept, err := cli.Grant(ctx(t), ttl)
		if err != nil {
			t.Fatal(err)
		}
		expiring, err := cli.Grant(ctx(t), ttl)
		if err != nil {
			t.Fatal(err)
		}
		mustPut(t, cli, p+"kept", "v", clientv3.WithLease(kept.ID))
		mustPut(t, cli, p+"expiring", "v", clientv3.WithLease(expiring.ID))

		kctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		ch, err := fcli.KeepAlive(kctx, kept.ID)
		if err != nil {
			t.Fatalf("keep alive through follower %s: %v", f.Name, err)
		}
		var renewals, badTTL atomic.Int64
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			for resp := range ch {
				if resp.ID != kept.ID || resp.TTL != ttl {
					badTTL.Add(1)
				}
				renewals.Add(1)
			}
		}()

		waitFor(t, "the unrenewed lease's key to go", func() error {
			resp, err := cli.Get(ctx(t), p+"expiring")
			if err != nil {
				return err
			}
			if len(resp.Kvs) != 0 {
				return fmt.Errorf("still there %v after grant", time.Since(start).Round(time.Millisecond))
			}
			return nil
		})
		if gone := time.Since(start); gone < ttl*time.Second-500*time.Millisecond {
			t.Errorf("a lease of %ds expired after %v", ttl, gone)
		}
		if resp, err := cli.TimeToLive(ctx(t), expiring.ID); err != nil || resp.TTL != -1 {
			t.Errorf("time to live of the expired lease: %v, %+v; want ttl -1", err, resp)
		}

		// The kept lease's key stays for three TTLs, checked throughout.
		for until := start.Add(3 * ttl * time.Second); time.Now().Before(until); time.Sleep(100 * time.Millisecond) {
			resp, err := cli.Get(ctx(t), p+"kept")
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.Kvs) != 1 {
				t.Fatalf("the kept-alive lease's key went after %v (%d renewals)", time.Since(start), renewals.Load())
			}
		}
		if n := renewals.Load(); n < 3 {
			t.Errorf("only %d keep-alive answers in %v", n, time.Since(start))
		}
		if n := badTTL.Load(); n != 0 {
			t.Errorf("%d keep-alive answers had the wrong id or ttl", n)
		}
		tl, err := fcli.TimeToLive(ctx(t), kept.ID)
		if err != nil || tl.TTL <= 0 || tl.GrantedTTL != ttl {
			t.Errorf("time to live through the follower: %v %+v; want a positive ttl", err, tl)
		}
		once, err := fcli.KeepAliveOnce(ctx(t), kept.ID)
		if err != nil || once.TTL != ttl {
			t.Errorf("keep alive once through the follower: %v %+v; want ttl %d", err, once, ttl)
		}
		cancel()
		select {
		case <-drained:
		case <-time.After(watchWait):
			t.Error("keep-alive channel did not close after its context ended")
		}
		if _, err := cli.Revoke(ctx(t), kept.ID); err != nil {
			t.Errorf("revoke: %v", err)
		}
	})
}
