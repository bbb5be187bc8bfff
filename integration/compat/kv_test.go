package compat

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// testKV covers Put, Get with every range option, and Delete.
func testKV(t *testing.T, e *env) {
	cli, p := e.cli, prefix(t)
	k := func(s string) string { return p + s }

	// a=1 b=2 c=3 d=4 e=5 at revisions rev[0..4], then a=10 at rev[5].
	var rev []int64
	for i, name := range []string{"a", "b", "c", "d", "e"} {
		rev = append(rev, mustPut(t, cli, k(name), fmt.Sprint(i+1)))
	}
	rev = append(rev, mustPut(t, cli, k("a"), "10"))
	for i := 1; i < len(rev); i++ {
		if rev[i] != rev[i-1]+1 {
			t.Fatalf("each put must make exactly one revision; got revisions %v", rev)
		}
	}

	t.Run("Get", func(t *testing.T) {
		cases := []struct {
			name      string
			key       string
			opts      []clientv3.OpOption
			wantKeys  []string // nil: no kvs expected
			wantCount int64
			wantMore  bool
			check     func(t *testing.T, resp *clientv3.GetResponse)
		}{
			{name: "single key", key: k("a"), wantKeys: []string{"a"}, wantCount: 1,
				check: func(t *testing.T, resp *clientv3.GetResponse) {
					kv := resp.Kvs[0]
					if string(kv.Value) != "10" || kv.Version != 2 || kv.CreateRevision != rev[0] || kv.ModRevision != rev[5] {
						t.Errorf("a: got value=%s version=%d create=%d mod=%d; want 10, 2, %d, %d",
							kv.Value, kv.Version, kv.CreateRevision, kv.ModRevision, rev[0], rev[5])
					}
				}},
			{name: "missing key", key: k("zz"), wantCount: 0},
			{name: "prefix", key: p, opts: []clientv3.OpOption{clientv3.WithPrefix()},
				wantKeys: []string{"a", "b", "c", "d", "e"}, wantCount: 5},
			{name: "range [b,d)", key: k("b"), opts: []clientv3.OpOption{clientv3.WithRange(k("d"))},
				wantKeys: []string{"b", "c"}, wantCount: 2},
			{name: "from key with limit", key: k("c"), opts: []clientv3.OpOption{clientv3.WithFromKey(), clientv3.WithLimit(2)},
				wantKeys: []string{"c", "d"}, wantCount: 3, wantMore: true}, // nothing sorts after e here
			{name: "limit", key: p, opts: []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithLimit(2)},
				wantKeys: []string{"a", "b"}, wantCount: 5, wantMore: true},
			{name: "sort by value descending", key: p,
				opts:     []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByValue, clientv3.SortDescend)},
				wantKeys: []string{"e", "d", "c", "b", "a"}, wantCount: 5}, // "5" > "4" > ... > "10" as bytes
			{name: "sort by mod revision descending", key: p,
				opts:     []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByModRevision, clientv3.SortDescend)},
				wantKeys: []string{"a", "e", "d", "c", "b"}, wantCount: 5},
			{name: "sort by create revision ascending", key: p,
				opts:     []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend)},
				wantKeys: []string{"a", "b", "c", "d", "e"}, wantCount: 5},
			{name: "sort by key descending with limit", key: p,
				opts:     []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(2)},
				wantKeys: []string{"e", "d"}, wantCount: 5, wantMore: true},
			{name: "count only", key: p, opts: []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithCountOnly()},
				wantCount: 5},
			{name: "keys only", key: p, opts: []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithKeysOnly()},
				wantKeys: []string{"a", "b", "c", "d", "e"}, wantCount: 5,
				check: func(t *testing.T, resp *clientv3.GetResponse) {
					for _, kv := range resp.Kvs {
						if len(kv.Value) != 0 {
							t.Errorf("keys-only get returned value %q for %s", kv.Value, kv.Key)
						}
					}
				}},
			{name: "old revision of one key", key: k("a"), opts: []clientv3.OpOption{clientv3.WithRev(rev[0])},
				wantKeys: []string{"a"}, wantCount: 1,
				check: func(t *testing.T, resp *clientv3.GetResponse) {
					if v := string(resp.Kvs[0].Value); v != "1" || resp.Kvs[0].Version != 1 {
						t.Errorf("a at revision %d: got %s version %d, want 1 version 1", rev[0], v, resp.Kvs[0].Version)
					}
				}},
			{name: "prefix at old revision", key: p, opts: []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithRev(rev[2])},
				wantKeys: []string{"a", "b", "c"}, wantCount: 3},
			{name: "min mod revision", key: p, opts: []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithMinModRev(rev[3])},
				wantKeys: []string{"a", "d", "e"}, wantCount: 5}, // count is before the filters, as in etcd
			{name: "max mod revision", key: p, opts: []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithMaxModRev(rev[2])},
				wantKeys: []string{"b", "c"}, wantCount: 5},
			{name: "min create revision", key: p, opts: []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithMinCreateRev(rev[3])},
				wantKeys: []string{"d", "e"}, wantCount: 5},
			{name: "max create revision", key: p, opts: []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithMaxCreateRev(rev[1])},
				wantKeys: []string{"a", "b"}, wantCount: 5},
			{name: "revision filter then limit", key: p, opts: []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithMinModRev(rev[3]), clientv3.WithLimit(2)},
				wantKeys: []string{"a", "d"}, wantCount: 5, wantMore: true},
			{name: "sort by version descending with limit", key: p,
				opts:     []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByVersion, clientv3.SortDescend), clientv3.WithLimit(1)},
				wantKeys: []string{"a"}, wantCount: 5, wantMore: true},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				resp, err := cli.Get(ctx(t), tc.key, tc.opts...)
				if err != nil {
					t.Fatalf("get %q: %v", tc.key, err)
				}
				var got []string
				for _, key := range keys(resp) {
					got = append(got, strings.TrimPrefix(key, p))
				}
				if !slices.Equal(got, tc.wantKeys) {
					t.Fatalf("keys: got %v, want %v (response %s)", got, tc.wantKeys, kvString(resp))
				}
				if resp.Count != tc.wantCount {
					t.Errorf("count: got %d, want %d", resp.Count, tc.wantCount)
				}
				if resp.More != tc.wantMore {
					t.Errorf("more: got %v, want %v", resp.More, tc.wantMore)
				}
				if resp.Header.Revision < rev[5] {
					t.Errorf("header revision %d is below the last write %d", resp.Header.Revision, rev[5])
				}
				if tc.check != nil && len(resp.Kvs) > 0 {
					tc.check(t, resp)
				}
			})
		}
	})

	t.Run("PutPrevKV", func(t *testing.T) {
		resp, err := cli.Put(ctx(t), k("pk"), "first", clientv3.WithPrevKV())
		if err != nil {
			t.Fatal(err)
		}
		if resp.PrevKv != nil {
			t.Errorf("put of a new key returned prev_kv %v", resp.PrevKv)
		}
		resp, err = cli.Put(ctx(t), k("pk"), "second", clientv3.WithPrevKV())
		if err != nil {
			t.Fatal(err)
		}
		if resp.PrevKv == nil || string(resp.PrevKv.Value) != "first" || resp.PrevKv.Version != 1 {
			t.Errorf("prev_kv: got %v, want first at version 1", resp.PrevKv)
		}
	})

	t.Run("IgnoreValueAndLease", func(t *testing.T) {
		lease, err := cli.Grant(ctx(t), 60)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _, _ = cli.Revoke(ctx(t), lease.ID) }()
		check := func(what, value string, version int64, lease clientv3.LeaseID) {
			t.Helper()
			kv := getOne(t, cli, k("ig"))
			if string(kv.Value) != value || kv.Version != version || kv.Lease != int64(lease) {
				t.Errorf("after %s: got value=%q version=%d lease=%x; want %q, %d, %x", what, kv.Value, kv.Version, kv.Lease, value, version, lease)
			}
		}
		mustPut(t, cli, k("ig"), "keep")
		// ignore_value keeps the value; the lease is the request's.
		if _, err := cli.Put(ctx(t), k("ig"), "", clientv3.WithIgnoreValue(), clientv3.WithLease(lease.ID)); err != nil {
			t.Fatalf("put with ignore_value: %v", err)
		}
		check("ignore_value with a lease", "keep", 2, lease.ID)
		// ignore_lease keeps the lease; the value is the request's.
		if _, err := cli.Put(ctx(t), k("ig"), "new", clientv3.WithIgnoreLease()); err != nil {
			t.Fatalf("put with ignore_lease: %v", err)
		}
		check("ignore_lease", "new", 3, lease.ID)
		// ignore_value alone detaches the lease, as in etcd.
		if _, err := cli.Put(ctx(t), k("ig"), "", clientv3.WithIgnoreValue()); err != nil {
			t.Fatalf("put with ignore_value: %v", err)
		}
		check("ignore_value without a lease", "new", 4, 0)
		// Both need the key to exist.
		for name, opt := range map[string]clientv3.OpOption{"ignore_value": clientv3.WithIgnoreValue(), "ignore_lease": clientv3.WithIgnoreLease()} {
			_, err := cli.Put(ctx(t), k("ig-missing"), "", opt)
			if !errors.Is(err, rpctypes.ErrKeyNotFound) {
				t.Errorf("%s on a missing key: got %v, want %v", name, err, rpctypes.ErrKeyNotFound)
			}
		}
	})

	t.Run("Delete", func(t *testing.T) {
		for _, name := range []string{"x/1", "x/2", "x/3", "y"} {
			mustPut(t, cli, k(name), "v-"+name)
		}
		resp, err := cli.Delete(ctx(t), k("x/"), clientv3.WithPrefix(), clientv3.WithPrevKV())
		if err != nil {
			t.Fatal(err)
		}
		if resp.Deleted != 3 || len(resp.PrevKvs) != 3 {
			t.Fatalf("delete prefix: deleted %d with %d prev_kvs, want 3 and 3", resp.Deleted, len(resp.PrevKvs))
		}
		for i, kv := range resp.PrevKvs {
			if want := k(fmt.Sprintf("x/%d", i+1)); string(kv.Key) != want || string(kv.Value) != "v-x/"+fmt.Sprint(i+1) {
				t.Errorf("prev_kvs[%d] = %s=%s, want %s=v-x/%d", i, kv.Key, kv.Value, want, i+1)
			}
		}
		// A multi-key delete is one revision.
		after, err := cli.Get(ctx(t), k("y"))
		if err != nil {
			t.Fatal(err)
		}
		if after.Header.Revision != resp.Header.Revision {
			t.Errorf("revision moved from %d to %d with no write in between", resp.Header.Revision, after.Header.Revision)
		}
		if got, _ := cli.Get(ctx(t), k("x/"), clientv3.WithPrefix(), clientv3.WithCountOnly()); got.Count != 0 {
			t.Errorf("%d keys left under x/ after deleting the prefix", got.Count)
		}
		// Deleting nothing makes no revision.
		none, err := cli.Delete(ctx(t), k("x/"), clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		if none.Deleted != 0 || none.Header.Revision != resp.Header.Revision {
			t.Errorf("delete of nothing: deleted %d at revision %d; want 0 at %d (no new revision)",
				none.Deleted, none.Header.Revision, resp.Header.Revision)
		}
		// Delete without prev_kv returns none; a single key.
		one, err := cli.Delete(ctx(t), k("y"))
		if err != nil {
			t.Fatal(err)
		}
		if one.Deleted != 1 || len(one.PrevKvs) != 0 {
			t.Errorf("delete y: deleted %d with %d prev_kvs; want 1 and none", one.Deleted, len(one.PrevKvs))
		}
	})

	t.Run("RevisionsAcrossDeleteAndReput", func(t *testing.T) {
		key := k("gen")
		r1 := mustPut(t, cli, key, "1")
		r2 := mustPut(t, cli, key, "2")
		kv := getOne(t, cli, key)
		if kv.CreateRevision != r1 || kv.ModRevision != r2 || kv.Version != 2 {
			t.Fatalf("after two puts: create=%d mod=%d version=%d; want %d, %d, 2", kv.CreateRevision, kv.ModRevision, kv.Version, r1, r2)
		}
		del, err := cli.Delete(ctx(t), key)
		if err != nil || del.Deleted != 1 {
			t.Fatalf("delete: %v (deleted %v)", err, del)
		}
		if got, _ := cli.Get(ctx(t), key); len(got.Kvs) != 0 {
			t.Fatalf("key still there after delete: %s", kvString(got))
		}
		r4 := mustPut(t, cli, key, "3")
		kv = getOne(t, cli, key)
		if kv.CreateRevision != r4 || kv.ModRevision != r4 || kv.Version != 1 {
			t.Errorf("after re-put: create=%d mod=%d version=%d; want %d, %d, 1 (a new generation)", kv.CreateRevision, kv.ModRevision, kv.Version, r4, r4)
		}
		if r4 != del.Header.Revision+1 || del.Header.Revision != r2+1 {
			t.Errorf("revisions put %d, put %d, delete %d, put %d are not consecutive", r1, r2, del.Header.Revision, r4)
		}
		// The old generation is still readable at its revisions.
		old, err := cli.Get(ctx(t), key, clientv3.WithRev(r2))
		if err != nil || len(old.Kvs) != 1 || string(old.Kvs[0].Value) != "2" {
			t.Errorf("get at revision %d: %v %v; want value 2", r2, err, old)
		}
		gone, err := cli.Get(ctx(t), key, clientv3.WithRev(del.Header.Revision))
		if err != nil || len(gone.Kvs) != 0 {
			t.Errorf("get at the delete's revision %d: %v %v; want no key", del.Header.Revision, err, gone)
		}
	})
}

func getOne(t testing.TB, cli *clientv3.Client, key string) *mvccpb.KeyValue {
	t.Helper()
	resp, err := cli.Get(ctx(t), key)
	if err != nil {
		t.Fatalf("get %q: %v", key, err)
	}
	if len(resp.Kvs) != 1 {
		t.Fatalf("get %q: got %s, want one key", key, kvString(resp))
	}
	return resp.Kvs[0]
}

// testKVErrors checks that the client sees etcd's own error values, as
// clients compare them.
func testKVErrors(t *testing.T, e *env) {
	cli, p := e.cli, prefix(t)
	rev := mustPut(t, cli, p+"k", "v")

	tooManyOps := make([]clientv3.Op, 129)
	for i := range tooManyOps {
		tooManyOps[i] = clientv3.OpPut(fmt.Sprintf("%sop/%03d", p, i), "v")
	}
	cases := []struct {
		name string
		call func() error
		want error
	}{
		{"put empty key", func() error { _, err := cli.Put(ctx(t), "", "v"); return err }, rpctypes.ErrEmptyKey},
		{"get empty key", func() error { _, err := cli.Get(ctx(t), ""); return err }, rpctypes.ErrEmptyKey},
		{"delete empty key", func() error { _, err := cli.Delete(ctx(t), ""); return err }, rpctypes.ErrEmptyKey},
		{"future revision", func() error { _, err := cli.Get(ctx(t), p+"k", clientv3.WithRev(rev+1000)); return err }, rpctypes.ErrFutureRev},
		{"request too large", func() error {
			_, err := cli.Put(ctx(t), p+"big", strings.Repeat("x", 1572864+16))
			return err
		}, rpctypes.ErrRequestTooLarge},
		{"too many txn ops", func() error { _, err := cli.Txn(ctx(t)).Then(tooManyOps...).Commit(); return err }, rpctypes.ErrTooManyOps},
		{"duplicate put in txn", func() error {
			_, err := cli.Txn(ctx(t)).Then(clientv3.OpPut(p+"d", "1"), clientv3.OpPut(p+"d", "2")).Commit()
			return err
		}, rpctypes.ErrDuplicateKey},
		{"put of a deleted key in txn", func() error {
			_, err := cli.Txn(ctx(t)).Then(clientv3.OpDelete(p, clientv3.WithPrefix()), clientv3.OpPut(p+"d", "1")).Commit()
			return err
		}, rpctypes.ErrDuplicateKey},
		{"put with unknown lease", func() error {
			_, err := cli.Put(ctx(t), p+"l", "v", clientv3.WithLease(clientv3.LeaseID(0x7e57)))
			return err
		}, rpctypes.ErrLeaseNotFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if err == nil {
				t.Fatalf("got no error, want %v", tc.want)
			}
			if !errors.Is(err, tc.want) || err != tc.want {
				t.Fatalf("got %v (%T), want etcd's %v", err, err, tc.want)
			}
		})
	}

	t.Run("just under the limit", func(t *testing.T) {
		if _, err := cli.Put(ctx(t), p+"big", strings.Repeat("x", 1<<20)); err != nil {
			t.Fatalf("put of a 1 MiB value: %v", err)
		}
		if _, err := cli.Delete(ctx(t), p+"big"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("128 txn ops are allowed", func(t *testing.T) {
		if _, err := cli.Txn(ctx(t)).Then(tooManyOps[:128]...).Commit(); err != nil {
			t.Fatalf("txn with 128 puts: %v", err)
		}
	})
}
