package compat

import (
	"errors"
	"fmt"
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// testCompact compacts (physically) and checks reads below the compaction
// point fail with etcd's error on every member.
func testCompact(t *testing.T, e *env) {
	cli, p := e.cli, prefix(t)
	k := p + "k"
	r1 := mustPut(t, cli, k, "1")
	r2 := mustPut(t, cli, k, "2")
	r3 := mustPut(t, cli, k, "3")

	if _, err := cli.Compact(ctx(t), r2, clientv3.WithCompactPhysical()); err != nil {
		t.Fatalf("compact at %d: %v", r2, err)
	}
	cases := []struct {
		name    string
		rev     int64
		wantErr error
		want    string
	}{
		{"below the compaction", r1, rpctypes.ErrCompacted, ""},
		{"at the compaction", r2, nil, "2"},
		{"after the compaction", r3, nil, "3"},
		{"current", 0, nil, "3"},
	}
	for _, m := range e.c.Members {
		one := newClient(t, m.Addr())
		for _, tc := range cases {
			t.Run(fmt.Sprintf("%s/%s", m.Name, tc.name), func(t *testing.T) {
				// Every member applies the compaction; a serializable read
				// sees it once this member has.
				waitFor(t, fmt.Sprintf("get at revision %d on %s", tc.rev, m.Name), func() error {
					resp, err := one.Get(ctx(t), k, clientv3.WithRev(tc.rev), clientv3.WithSerializable())
					if tc.wantErr != nil {
						if !errors.Is(err, tc.wantErr) {
							return fmt.Errorf("got %v, want %v", err, tc.wantErr)
						}
						return nil
					}
					if err != nil {
						return err
					}
					if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != tc.want {
						return fmt.Errorf("got %s, want %s", kvString(resp), tc.want)
					}
					return nil
				})
			})
		}
	}
	t.Run("compact again below", func(t *testing.T) {
		if _, err := cli.Compact(ctx(t), r1); !errors.Is(err, rpctypes.ErrCompacted) {
			t.Errorf("compact at %d after compacting at %d: got %v, want %v", r1, r2, err, rpctypes.ErrCompacted)
		}
	})
	t.Run("compact a future revision", func(t *testing.T) {
		if _, err := cli.Compact(ctx(t), r3+1000); !errors.Is(err, rpctypes.ErrFutureRev) {
			t.Errorf("compact at %d: got %v, want %v", r3+1000, err, rpctypes.ErrFutureRev)
		}
	})
	t.Run("compacted txn read", func(t *testing.T) {
		_, err := cli.Txn(ctx(t)).Then(clientv3.OpGet(k, clientv3.WithRev(r1))).Commit()
		if !errors.Is(err, rpctypes.ErrCompacted) {
			t.Errorf("txn get at %d: got %v, want %v", r1, err, rpctypes.ErrCompacted)
		}
	})
}
