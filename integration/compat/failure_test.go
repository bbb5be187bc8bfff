package compat

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cairnkv/cairn/integration/harness"
)

// TestMemberFailure kills and restarts members under etcd's client, on a
// cluster of its own.
func TestMemberFailure(t *testing.T) {
	c := harness.NewCluster(t, 3, harness.Options{})
	cli := newClient(t, c.Endpoints()...)

	t.Run("ClientSurvivesKill", func(t *testing.T) {
		cases := []struct {
			name   string
			victim func() *harness.Member
		}{
			{"follower", func() *harness.Member { return follower(t, c) }},
			{"leader", func() *harness.Member { return c.WaitLeader() }},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				p := prefix(t)
				mustPut(t, cli, p+"before", "1")
				victim := tc.victim()
				victim.Kill()
				t.Logf("killed %s", victim.Name)

				// The first call after the kill may meet the dead member or
				// a leader election; after one success, every call must work.
				waitFor(t, "a put through the client with "+victim.Name+" down", func() error {
					pctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
					defer cancel()
					_, err := cli.Put(pctx, p+"first", "x")
					return err
				})
				for i := range 20 {
					key := fmt.Sprintf("%sdown/%02d", p, i)
					mustPut(t, cli, key, "v")
					if kv := getOne(t, cli, key); string(kv.Value) != "v" {
						t.Fatalf("%s = %q", key, kv.Value)
					}
				}
				last := mustPut(t, cli, p+"last", "down")

				victim.Start()
				// The restarted member catches up, answers on its own, and
				// the shared client keeps working across all three.
				one := newClient(t, victim.Addr())
				waitFor(t, victim.Name+" to catch up after restart", func() error {
					resp, err := one.Get(ctx(t), p+"last", clientv3.WithSerializable())
					if err != nil {
						return err
					}
					if len(resp.Kvs) != 1 || resp.Header.Revision < last {
						return fmt.Errorf("at revision %d: %s", resp.Header.Revision, kvString(resp))
					}
					return nil
				})
				c.WaitLeader()
				for _, m := range c.Members {
					resp, err := newClient(t, m.Addr()).Get(ctx(t), p+"down/", clientv3.WithPrefix(), clientv3.WithCountOnly())
					if err != nil || resp.Count != 20 {
						t.Errorf("linearizable count on %s: %v %v; want 20", m.Name, err, resp)
					}
				}
				for i := range 10 {
					mustPut(t, cli, fmt.Sprintf("%safter/%02d", p, i), "v")
				}
			})
		}
	})

	t.Run("WatchSurvivesRestart", func(t *testing.T) {
		p := prefix(t)
		victim := follower(t, c)
		wcli := newClient(t, victim.Addr())
		wch, _ := watch(t, wcli, p, clientv3.WithPrefix())
		mustPut(t, cli, p+"1", "a")
		expectOnly(t, wch, fmt.Sprintf("[PUT %s1=a]", p))

		// Written through the leader alone: a put that etcd's client sends
		// to the member just killed fails, and is not retried.
		lcli := newClient(t, c.WaitLeader().Addr())
		victim.Kill()
		mustPut(t, lcli, p+"2", "b")
		if _, err := lcli.Delete(ctx(t), p+"1"); err != nil {
			t.Fatal(err)
		}
		victim.Start()

		// The client reconnects to the restarted member and resumes the
		// watch after the last revision it saw: nothing lost, nothing twice.
		var evs []*clientv3.Event
		deadline := time.After(waitTimeout)
		for len(evs) < 2 {
			select {
			case resp, ok := <-wch:
				if !ok {
					t.Fatal("watch channel closed across the restart")
				}
				if err := resp.Err(); err != nil {
					t.Fatalf("watch error across the restart: %v", err)
				}
				evs = append(evs, resp.Events...)
			case <-deadline:
				t.Fatalf("after %v, the watch had delivered %s since the restart", waitTimeout, eventsString(evs))
			}
		}
		if got, want := eventsString(evs), fmt.Sprintf("[PUT %s2=b, DELETE %s1]", p, p); got != want {
			t.Fatalf("events across the restart: %s, want %s", got, want)
		}
		mustPut(t, cli, p+"3", "c")
		expectOnly(t, wch, fmt.Sprintf("[PUT %s3=c]", p))
	})
}
