package compat

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// testMaintenance covers Status, HashKV, Snapshot, Defragment and alarms.
func testMaintenance(t *testing.T, e *env) {
	cli, p := e.cli, prefix(t)
	for i := range 20 {
		mustPut(t, cli, fmt.Sprintf("%sk%02d", p, i), strings.Repeat("v", 100))
	}
	rev := mustPut(t, cli, p+"last", "x")

	t.Run("Status", func(t *testing.T) {
		var leader uint64
		ids := map[uint64]string{}
		for _, m := range e.c.Members {
			st, err := cli.Status(ctx(t), m.Addr())
			if err != nil {
				t.Fatalf("status of %s: %v", m.Name, err)
			}
			if st.Leader == 0 || (leader != 0 && st.Leader != leader) {
				t.Errorf("%s reports leader %x, others %x", m.Name, st.Leader, leader)
			}
			leader = st.Leader
			if st.Version != "3.7.0" {
				t.Errorf("%s reports version %q, want 3.7.0", m.Name, st.Version)
			}
			if st.DbSize <= 0 || st.DbSizeInUse <= 0 || st.DbSizeInUse > st.DbSize {
				t.Errorf("%s: db size %d, in use %d", m.Name, st.DbSize, st.DbSizeInUse)
			}
			if st.RaftIndex == 0 || st.RaftTerm == 0 || st.Header.MemberId == 0 || st.Header.ClusterId == 0 {
				t.Errorf("%s: raft index %d term %d member %x cluster %x; want all set", m.Name, st.RaftIndex, st.RaftTerm, st.Header.MemberId, st.Header.ClusterId)
			}
			if len(st.Errors) != 0 {
				t.Errorf("%s reports errors %v", m.Name, st.Errors)
			}
			ids[st.Header.MemberId] = m.Name
		}
		if len(ids) != 3 {
			t.Errorf("member IDs %v are not distinct", ids)
		}
		if _, ok := ids[leader]; !ok {
			t.Errorf("leader %x is none of the members %v", leader, ids)
		}
	})

	t.Run("HashKV", func(t *testing.T) {
		var hashes []uint32
		var compactRevs []int64
		for _, m := range e.c.Members {
			var h *clientv3.HashKVResponse
			waitFor(t, "HashKV at revision "+fmt.Sprint(rev)+" on "+m.Name, func() error {
				var err error
				h, err = cli.HashKV(ctx(t), m.Addr(), rev)
				return err
			})
			compactRevs = append(compactRevs, h.CompactRevision)
			if h.HashRevision != rev || h.Hash == 0 {
				t.Errorf("%s: hash %x at revision %d, want revision %d", m.Name, h.Hash, h.HashRevision, rev)
			}
			hashes = append(hashes, h.Hash)
		}
		if len(slices.Compact(slices.Clone(hashes))) != 1 {
			t.Fatalf("members disagree on the keyspace hash at revision %d: %x", rev, hashes)
		}
		// Earlier groups compacted; every member reports the same point.
		if len(slices.Compact(slices.Clone(compactRevs))) != 1 || compactRevs[0] == 0 {
			t.Errorf("compact revisions reported with the hashes: %v; want one nonzero value", compactRevs)
		}
	})

	t.Run("Snapshot", func(t *testing.T) {
		cases := []struct {
			name string
			read func(context.Context) ([]byte, error)
		}{
			{"Snapshot", func(sctx context.Context) ([]byte, error) {
				// Deprecated for SnapshotWithVersion, but what most tools call.
				rc, err := cli.Snapshot(sctx)
				if err != nil {
					return nil, err
				}
				defer rc.Close()
				return io.ReadAll(rc)
			}},
			{"SnapshotWithVersion", func(sctx context.Context) ([]byte, error) {
				snap, err := cli.SnapshotWithVersion(sctx)
				if err != nil {
					return nil, err
				}
				defer snap.Snapshot.Close()
				if snap.Version != "3.7.0" {
					t.Errorf("snapshot version %q, want 3.7.0", snap.Version)
				}
				return io.ReadAll(snap.Snapshot)
			}},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				data, err := tc.read(sctx)
				if err != nil {
					t.Fatalf("snapshot: %v", err)
				}
				checkSnapshot(t, data)
			})
		}
	})
	t.Run("Defragment", func(t *testing.T) {
		for _, m := range e.c.Members {
			if _, err := cli.Defragment(ctx(t), m.Addr()); err != nil {
				t.Fatalf("defragment %s: %v", m.Name, err)
			}
			one := newClient(t, m.Addr())
			key := p + "after-defrag-" + m.Name
			mustPut(t, one, key, m.Name)
			if kv := getOne(t, one, key); string(kv.Value) != m.Name {
				t.Errorf("after defragmenting %s: %s=%s", m.Name, kv.Key, kv.Value)
			}
			if kv := getOne(t, one, p+"k07"); len(kv.Value) != 100 {
				t.Errorf("after defragmenting %s: old key has %d bytes", m.Name, len(kv.Value))
			}
			if _, err := one.Status(ctx(t), m.Addr()); err != nil {
				t.Errorf("status of %s after defragment: %v", m.Name, err)
			}
		}
	})

	t.Run("AlarmList", func(t *testing.T) {
		resp, err := cli.AlarmList(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Alarms) != 0 {
			t.Errorf("alarms on a healthy cluster: %v", resp.Alarms)
		}
	})
}

// testCluster checks the member list as etcd's client shows it.
func testCluster(t *testing.T, e *env) {
	byName := map[string]string{}
	for _, m := range e.c.Members {
		byName[m.Name] = m.PeerURL + " " + m.ClientURL
	}
	// Members publish their names and client URLs through the log after
	// they start; wait until every one has.
	waitFor(t, "every member to publish its name and client URLs", func() error {
		resp, err := e.cli.MemberList(ctx(t))
		if err != nil {
			return err
		}
		if len(resp.Members) != 3 {
			return fmt.Errorf("%d members: %v", len(resp.Members), resp.Members)
		}
		for _, m := range resp.Members {
			if m.ID == 0 || m.IsLearner {
				return fmt.Errorf("member %+v", m)
			}
			want, ok := byName[m.Name]
			if !ok {
				return fmt.Errorf("unknown member name %q (%+v)", m.Name, m)
			}
			if len(m.PeerURLs) != 1 || len(m.ClientURLs) != 1 {
				return fmt.Errorf("%s: peer URLs %v, client URLs %v", m.Name, m.PeerURLs, m.ClientURLs)
			}
			if got := m.PeerURLs[0] + " " + m.ClientURLs[0]; got != want {
				return fmt.Errorf("%s: peer and client URL %s, want %s", m.Name, got, want)
			}
		}
		return nil
	})
	// Sync replaces a client's endpoints with the advertised client URLs.
	synced := newClient(t, e.c.Members[0].Addr())
	if err := synced.Sync(ctx(t)); err != nil {
		t.Fatalf("sync: %v", err)
	}
	var wantEps []string
	for _, m := range e.c.Members {
		wantEps = append(wantEps, m.ClientURL)
	}
	gotEps := slices.Clone(synced.Endpoints())
	slices.Sort(gotEps)
	slices.Sort(wantEps)
	if !slices.Equal(gotEps, wantEps) {
		t.Errorf("endpoints after sync: %v, want %v", gotEps, wantEps)
	}
	if _, err := synced.Get(ctx(t), "any"); err != nil {
		t.Errorf("get through the synced endpoints: %v", err)
	}
	resp, err := e.cli.MemberList(ctx(t), clientv3.WithSerializable())
	if err != nil {
		t.Fatalf("serializable member list: %v", err)
	}
	if len(resp.Members) != 3 {
		t.Errorf("serializable member list has %d members", len(resp.Members))
	}
}

// checkSnapshot checks a snapshot as etcdutl does: the last 32 bytes are
// the SHA-256 of the rest, which is a bbolt file with etcd's buckets.
func checkSnapshot(t *testing.T, data []byte) {
	t.Helper()
	if len(data) < 4096+sha256.Size {
		t.Fatalf("snapshot of %d bytes is too small for a bbolt file and its hash", len(data))
	}
	body, sum := data[:len(data)-sha256.Size], data[len(data)-sha256.Size:]
	if want := sha256.Sum256(body); !bytes.Equal(sum, want[:]) {
		t.Fatalf("the last 32 bytes %x are not the SHA-256 of the rest %x", sum, want)
	}
	path := filepath.Join(t.TempDir(), "snap.db")
	if err := os.WriteFile(path, body, 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatalf("the snapshot does not open as a bbolt file: %v", err)
	}
	defer db.Close()
	var buckets []string
	var revisions int
	err = db.View(func(tx *bolt.Tx) error {
		if err := tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
			buckets = append(buckets, string(name))
			return nil
		}); err != nil {
			return err
		}
		if b := tx.Bucket([]byte("key")); b != nil {
			revisions = b.Stats().KeyN
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(buckets, "key") || !slices.Contains(buckets, "meta") {
		t.Errorf("snapshot buckets %v lack key and meta", buckets)
	}
	if revisions < 21 {
		t.Errorf("snapshot holds %d revisions, want at least the 21 written here", revisions)
	}
}
