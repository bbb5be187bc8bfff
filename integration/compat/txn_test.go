package compat

import (
	"fmt"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// testTxn covers compares of every target, missing-key semantics, nested
// txns, read-only and serializable reads.
func testTxn(t *testing.T, e *env) {
	cli, p := e.cli, prefix(t)
	v, l, none := p+"v", p+"l", p+"none"
	r1 := mustPut(t, cli, v, "bar")
	r2 := mustPut(t, cli, v, "bar")
	lease, err := cli.Grant(ctx(t), 60)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = cli.Revoke(ctx(t), lease.ID) })
	mustPut(t, cli, l, "leased", clientv3.WithLease(lease.ID))
	mustPut(t, cli, p+"r/1", "x")
	mustPut(t, cli, p+"r/2", "x")

	t.Run("Compare", func(t *testing.T) {
		cases := []struct {
			name string
			cmps []clientv3.Cmp
			want bool
		}{
			{"value =", []clientv3.Cmp{clientv3.Compare(clientv3.Value(v), "=", "bar")}, true},
			{"value !=", []clientv3.Cmp{clientv3.Compare(clientv3.Value(v), "!=", "bar")}, false},
			{"value >", []clientv3.Cmp{clientv3.Compare(clientv3.Value(v), ">", "baa")}, true},
			{"value <", []clientv3.Cmp{clientv3.Compare(clientv3.Value(v), "<", "baa")}, false},
			{"version =", []clientv3.Cmp{clientv3.Compare(clientv3.Version(v), "=", 2)}, true},
			{"version >", []clientv3.Cmp{clientv3.Compare(clientv3.Version(v), ">", 1)}, true},
			{"version <", []clientv3.Cmp{clientv3.Compare(clientv3.Version(v), "<", 2)}, false},
			{"create revision =", []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(v), "=", r1)}, true},
			{"create revision !=", []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(v), "!=", r1)}, false},
			{"mod revision =", []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(v), "=", r2)}, true},
			{"mod revision <", []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(v), "<", r2)}, false},
			{"mod revision >", []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(v), ">", r1)}, true},
			{"lease =", []clientv3.Cmp{clientv3.Compare(clientv3.LeaseValue(l), "=", lease.ID)}, true},
			{"lease !=", []clientv3.Cmp{clientv3.Compare(clientv3.LeaseValue(l), "!=", lease.ID)}, false},
			{"lease = 0 on a key without lease", []clientv3.Cmp{clientv3.Compare(clientv3.LeaseValue(v), "=", 0)}, true},
			{"all compares must hold", []clientv3.Cmp{
				clientv3.Compare(clientv3.Value(v), "=", "bar"),
				clientv3.Compare(clientv3.Version(v), "=", 1),
			}, false},
			{"no compares", nil, true},
			{"version over a prefix", []clientv3.Cmp{clientv3.Compare(clientv3.Version(p+"r/"), "=", 1).WithPrefix()}, true},
			{"value over a range", []clientv3.Cmp{clientv3.Compare(clientv3.Value(p+"r/1"), "=", "x").WithRange(p + "r/3")}, true},
			// A value compare on a missing key is false whatever the operator.
			{"missing: value =", []clientv3.Cmp{clientv3.Compare(clientv3.Value(none), "=", "")}, false},
			{"missing: value !=", []clientv3.Cmp{clientv3.Compare(clientv3.Value(none), "!=", "x")}, false},
			{"missing: value >", []clientv3.Cmp{clientv3.Compare(clientv3.Value(none), ">", "")}, false},
			{"missing: value <", []clientv3.Cmp{clientv3.Compare(clientv3.Value(none), "<", "zzz")}, false},
			// Version, create and mod revision treat a missing key as 0.
			{"missing: version = 0", []clientv3.Cmp{clientv3.Compare(clientv3.Version(none), "=", 0)}, true},
			{"missing: version > 0", []clientv3.Cmp{clientv3.Compare(clientv3.Version(none), ">", 0)}, false},
			{"missing: create revision = 0", []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(none), "=", 0)}, true},
			{"missing: mod revision < 1", []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(none), "<", 1)}, true},
			{"missing: lease = 0", []clientv3.Cmp{clientv3.Compare(clientv3.LeaseValue(none), "=", 0)}, true},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				resp, err := cli.Txn(ctx(t)).If(tc.cmps...).Then(clientv3.OpGet(v)).Else(clientv3.OpGet(l)).Commit()
				if err != nil {
					t.Fatalf("txn: %v", err)
				}
				if resp.Succeeded != tc.want {
					t.Fatalf("succeeded = %v, want %v", resp.Succeeded, tc.want)
				}
				want := v
				if !tc.want {
					want = l
				}
				rr := resp.Responses[0].GetResponseRange()
				if len(resp.Responses) != 1 || rr == nil || len(rr.Kvs) != 1 || string(rr.Kvs[0].Key) != want {
					t.Fatalf("responses: got %v, want the get of %s", resp.Responses, want)
				}
			})
		}
	})

	t.Run("NestedThenElse", func(t *testing.T) {
		before := mustPut(t, cli, p+"n/seed", "s")
		resp, err := cli.Txn(ctx(t)).
			If(clientv3.Compare(clientv3.Value(v), "=", "bar")).
			Then(
				clientv3.OpTxn(
					[]clientv3.Cmp{clientv3.Compare(clientv3.Version(v), "=", 99)},
					[]clientv3.Op{clientv3.OpPut(p+"n/a", "inner-then")},
					[]clientv3.Op{clientv3.OpPut(p+"n/a", "inner-else"), clientv3.OpGet(p + "n/seed")},
				),
				clientv3.OpPut(p+"n/b", "outer-then"),
			).
			Else(clientv3.OpPut(p+"n/c", "outer-else")).
			Commit()
		if err != nil {
			t.Fatalf("nested txn: %v", err)
		}
		if !resp.Succeeded || len(resp.Responses) != 2 {
			t.Fatalf("outer: succeeded=%v with %d responses; want true with 2", resp.Succeeded, len(resp.Responses))
		}
		inner := resp.Responses[0].GetResponseTxn()
		if inner == nil || inner.Succeeded || len(inner.Responses) != 2 {
			t.Fatalf("inner: %v; want a failed txn with 2 responses", inner)
		}
		if rr := inner.Responses[1].GetResponseRange(); rr == nil || len(rr.Kvs) != 1 || string(rr.Kvs[0].Value) != "s" {
			t.Errorf("inner get: %v, want n/seed=s", inner.Responses[1])
		}
		if resp.Header.Revision != before+1 {
			t.Errorf("a txn with two puts moved the revision from %d to %d; want one revision", before, resp.Header.Revision)
		}
		got, err := cli.Get(ctx(t), p+"n/", clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		if s := kvString(got); s != fmt.Sprintf("[%sn/a=inner-else %sn/b=outer-then %sn/seed=s]", p, p, p) {
			t.Errorf("after nested txn: %s", s)
		}
		for _, kv := range got.Kvs {
			if string(kv.Key) != p+"n/seed" && kv.ModRevision != resp.Header.Revision {
				t.Errorf("%s mod revision %d, want the txn's %d", kv.Key, kv.ModRevision, resp.Header.Revision)
			}
		}
	})

	t.Run("ReadOnlyMakesNoRevision", func(t *testing.T) {
		cur := mustPut(t, cli, p+"ro", "x")
		resp, err := cli.Txn(ctx(t)).
			If(clientv3.Compare(clientv3.Value(p+"ro"), "=", "x")).
			Then(clientv3.OpGet(p+"ro"), clientv3.OpGet(p+"r/", clientv3.WithPrefix(), clientv3.WithCountOnly())).
			Commit()
		if err != nil {
			t.Fatal(err)
		}
		if !resp.Succeeded || resp.Header.Revision != cur {
			t.Fatalf("read-only txn: succeeded=%v at revision %d; want true at %d", resp.Succeeded, resp.Header.Revision, cur)
		}
		if n := resp.Responses[1].GetResponseRange().GetCount(); n != 2 {
			t.Errorf("count in txn: %d, want 2", n)
		}
		// A txn whose branch writes but whose compare fails into an
		// empty else branch writes nothing either.
		resp, err = cli.Txn(ctx(t)).If(clientv3.Compare(clientv3.Value(p+"ro"), "=", "nope")).Then(clientv3.OpPut(p+"ro", "y")).Commit()
		if err != nil {
			t.Fatal(err)
		}
		if resp.Succeeded || resp.Header.Revision != cur {
			t.Errorf("failed compare with empty else: succeeded=%v at revision %d; want false at %d", resp.Succeeded, resp.Header.Revision, cur)
		}
	})

	t.Run("Serializable", func(t *testing.T) {
		rev := mustPut(t, cli, p+"ser", "fresh")
		for _, m := range e.c.Members {
			one := newClient(t, m.Addr())
			waitFor(t, "a serializable get on "+m.Name+" to see the write", func() error {
				resp, err := one.Get(ctx(t), p+"ser", clientv3.WithSerializable())
				if err != nil {
					return err
				}
				if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "fresh" || resp.Header.Revision < rev {
					return fmt.Errorf("got %s at revision %d", kvString(resp), resp.Header.Revision)
				}
				return nil
			})
			tr, err := one.Txn(ctx(t)).Then(clientv3.OpGet(p+"ser", clientv3.WithSerializable())).Commit()
			if err != nil {
				t.Fatalf("serializable txn on %s: %v", m.Name, err)
			}
			if rr := tr.Responses[0].GetResponseRange(); len(rr.Kvs) != 1 || string(rr.Kvs[0].Value) != "fresh" {
				t.Errorf("serializable txn get on %s: %v", m.Name, rr)
			}
		}
	})
}
