package lease

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cairnkv/cairn/mvcc"
	"github.com/cairnkv/cairn/mvcc/backend"
)

func TestMinTTL(t *testing.T) {
	for _, tc := range []struct {
		ticks     int
		heartbeat time.Duration
		want      int64
	}{
		{10, 100 * time.Millisecond, 2}, // etcd's defaults: 1.5s
		{11, 100 * time.Millisecond, 2}, // 16 ticks (integer division)
		{5, 100 * time.Millisecond, 1},  // 0.7s
		{10, time.Second, 15},
		{20, 100 * time.Millisecond, 3},
		{3, 10 * time.Millisecond, 1},
	} {
		if got := MinTTL(tc.ticks, tc.heartbeat); got != tc.want {
			t.Errorf("MinTTL(%d, %v) = %d, want %d", tc.ticks, tc.heartbeat, got, tc.want)
		}
	}
	if DefaultMinTTL != MinTTL(10, 100*time.Millisecond) {
		t.Errorf("DefaultMinTTL = %d, want MinTTL of etcd's defaults", DefaultMinTTL)
	}
}

func TestRecordEncoding(t *testing.T) {
	for _, tc := range []struct {
		r    record
		want []byte
	}{
		// etcd's leasepb.Lease wire bytes.
		{record{id: 1, ttl: 10}, []byte{0x08, 0x01, 0x10, 0x0a}},
		{record{id: 300, ttl: 5, remaining: 2}, []byte{0x08, 0xac, 0x02, 0x10, 0x05, 0x18, 0x02}},
		{record{id: -1, ttl: MaxLeaseTTL}, nil},
	} {
		b := tc.r.encode()
		if tc.want != nil && !bytes.Equal(b, tc.want) {
			t.Errorf("encode %+v = %x, want %x", tc.r, b, tc.want)
		}
		got, err := decodeEntry(leaseKey(tc.r.id), b)
		if err != nil || got != tc.r {
			t.Errorf("decode(encode(%+v)) = %+v, %v", tc.r, got, err)
		}
	}
	// Unknown fields are skipped; a mismatched key or garbage is an error.
	if r, err := decodeRecord([]byte{0x08, 0x07, 0x22, 0x01, 0x00, 0x10, 0x03}); err != nil || r != (record{id: 7, ttl: 3}) {
		t.Errorf("decode with unknown field = %+v, %v", r, err)
	}
	if _, err := decodeEntry(leaseKey(2), record{id: 1, ttl: 1}.encode()); err == nil {
		t.Error("decode with a key of another ID succeeded")
	}
	if _, err := decodeEntry(leaseKey(1), []byte{0x08}); err == nil {
		t.Error("decode of a truncated record succeeded")
	}
}

func TestGrant(t *testing.T) {
	e := newEnv(t, Options{MinTTL: 5})
	e.grant(100, 60)
	for _, tc := range []struct {
		name    string
		id, ttl int64
		wantTTL int64
		wantErr error
	}{
		{"explicit id", 1, 10, 10, nil},
		{"negative id", -7, 10, 10, nil},
		{"min ttl raised", 2, 3, 5, nil},
		{"zero ttl raised", 3, 0, 5, nil},
		{"negative ttl raised", 4, -10, 5, nil},
		{"max ttl", 5, MaxLeaseTTL, MaxLeaseTTL, nil},
		{"too large", 6, MaxLeaseTTL + 1, 0, ErrLeaseTTLTooLarge},
		{"duplicate", 100, 10, 0, ErrLeaseExists},
		{"id zero", 0, 10, 0, ErrLeaseNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := e.le.Grant(tc.id, tc.ttl)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Grant(%d, %d) error = %v, want %v", tc.id, tc.ttl, err, tc.wantErr)
			}
			if tc.wantErr != nil {
				if tc.id != 100 && e.le.Exists(tc.id) {
					t.Errorf("lease %d exists after a failed grant", tc.id)
				}
				return
			}
			if l.ID != tc.id || l.TTL != tc.wantTTL || l.RemainingTTL != 0 {
				t.Errorf("Grant = %+v, want ID %d TTL %d", l, tc.id, tc.wantTTL)
			}
			if !e.le.Exists(tc.id) {
				t.Errorf("lease %d does not exist", tc.id)
			}
			if r, ok := e.record(tc.id); !ok || r != (record{id: tc.id, ttl: tc.wantTTL}) {
				t.Errorf("record = %+v, %v", r, ok)
			}
		})
	}
	// The duplicate left the first lease as it was.
	if r, _ := e.record(100); r.ttl != 60 {
		t.Errorf("lease 100 ttl = %d after duplicate grant, want 60", r.ttl)
	}
	if got, want := e.le.Leases(), []int64{-7, 1, 2, 3, 4, 5, 100}; !slices.Equal(got, want) {
		t.Errorf("Leases = %v, want %v", got, want)
	}
}

func TestRevoke(t *testing.T) {
	for _, tc := range []struct {
		name      string
		keys      []string
		wantWrite []string // events of the one write, nil for none
	}{
		{"three keys", []string{"b", "c", "a"}, []string{"DELETE a", "DELETE b", "DELETE c"}},
		{"one key", []string{"k"}, []string{"DELETE k"}},
		{"no keys", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, Options{})
			e.grant(1, 10)
			e.grant(2, 10)
			e.put("other", 2)
			e.put("plain", 0)
			for _, k := range tc.keys {
				e.put(k, 1)
			}
			e.obs.take()
			rev := e.s.Rev()

			e.revoke(1)

			writes := e.obs.take()
			if tc.wantWrite == nil {
				if len(writes) != 0 || e.s.Rev() != rev {
					t.Fatalf("revoke without keys: writes %v, rev %d -> %d", writes, rev, e.s.Rev())
				}
			} else {
				if len(writes) != 1 || writes[0].rev != rev+1 || e.s.Rev() != rev+1 {
					t.Fatalf("writes = %+v, rev %d -> %d; want one write at %d", writes, rev, e.s.Rev(), rev+1)
				}
				if !slices.Equal(writes[0].events, tc.wantWrite) {
					t.Errorf("events = %v, want %v", writes[0].events, tc.wantWrite)
				}
			}
			if got, want := e.liveKeys(), []string{"other@2", "plain@0"}; !slices.Equal(got, want) {
				t.Errorf("keys = %v, want %v", got, want)
			}
			if e.le.Exists(1) {
				t.Error("lease 1 still exists")
			}
			if _, ok := e.record(1); ok {
				t.Error("lease 1 still in the bucket")
			}
			if got := e.keysOf(2); !slices.Equal(got, []string{"other"}) {
				t.Errorf("lease 2 keys = %v", got)
			}
			if err := e.le.Revoke(1); !errors.Is(err, ErrLeaseNotFound) {
				t.Errorf("second revoke: %v, want ErrLeaseNotFound", err)
			}
			// The key can be put again with a new lease.
			e.grant(1, 10)
			if _, err := e.s.Put(mvcc.PutRequest{Key: []byte("a"), Lease: 1}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestRevokeNotFound(t *testing.T) {
	e := newEnv(t, Options{})
	for _, id := range []int64{0, 1, -1} {
		if err := e.le.Revoke(id); !errors.Is(err, ErrLeaseNotFound) {
			t.Errorf("Revoke(%d) = %v, want ErrLeaseNotFound", id, err)
		}
	}
}

// TestRevokeAtomic: with a consistent index, the revoke's tombstones and
// the record's removal belong to one entry: a crash before the entry is
// complete keeps both, and completing it removes both.
func TestRevokeAtomic(t *testing.T) {
	e := newEnv(t, Options{})
	e.s.SetConsistentIndex(1, 1)
	e.grant(1, 10)
	e.put("a", 1)
	e.put("b", 1)
	e.s.SetConsistentIndex(2, 1)
	e.revoke(1)
	e.reopen() // entry 2 was never completed: dropped
	if !e.le.Exists(1) || !slices.Equal(e.keysOf(1), []string{"a", "b"}) {
		t.Fatalf("after crash mid-entry: lease exists %v, keys %v", e.le.Exists(1), e.keysOf(1))
	}
	if i, _ := e.s.ConsistentIndex(); i != 1 {
		t.Fatalf("consistent index = %d, want 1", i)
	}
	e.s.SetConsistentIndex(2, 1)
	e.revoke(1)
	if err := e.s.ForceCommit(); err != nil {
		t.Fatal(err)
	}
	e.reopen()
	if e.le.Exists(1) || len(e.liveKeys()) != 0 {
		t.Fatalf("after revoke: lease exists %v, keys %v", e.le.Exists(1), e.liveKeys())
	}
}

func TestAttachDetach(t *testing.T) {
	e := newEnv(t, Options{})
	e.grant(1, 10)
	e.grant(2, 10)
	steps := []struct {
		name   string
		do     func() error
		want1  []string
		want2  []string
		errIs  error
		action string
	}{
		{name: "put with lease", do: func() error { return putErr(e, "a", 1) }, want1: []string{"a"}, want2: []string{}},
		{name: "second key", do: func() error { return putErr(e, "b", 1) }, want1: []string{"a", "b"}, want2: []string{}},
		{name: "same lease again", do: func() error { return putErr(e, "a", 1) }, want1: []string{"a", "b"}, want2: []string{}},
		{name: "overwrite with another lease", do: func() error { return putErr(e, "a", 2) }, want1: []string{"b"}, want2: []string{"a"}},
		{name: "ignore lease keeps it", do: func() error {
			_, err := e.s.Put(mvcc.PutRequest{Key: []byte("a"), Value: []byte("x"), IgnoreLease: true})
			return err
		}, want1: []string{"b"}, want2: []string{"a"}},
		{name: "overwrite without lease", do: func() error { return putErr(e, "b", 0) }, want1: []string{}, want2: []string{"a"}},
		{name: "missing lease", do: func() error { return putErr(e, "c", 3) }, errIs: mvcc.ErrLeaseNotFound, want1: []string{}, want2: []string{"a"}},
		{name: "txn put", do: func() error {
			_, err := e.s.Txn(mvcc.TxnRequest{Success: []mvcc.RequestOp{{Put: &mvcc.PutRequest{Key: []byte("t"), Lease: 1}}}})
			return err
		}, want1: []string{"t"}, want2: []string{"a"}},
		{name: "delete", do: func() error {
			_, err := e.s.DeleteRange(mvcc.DeleteRangeRequest{Key: []byte("a")})
			return err
		}, want1: []string{"t"}, want2: []string{}},
	}
	for _, st := range steps {
		err := st.do()
		if !errors.Is(err, st.errIs) {
			t.Fatalf("%s: error %v, want %v", st.name, err, st.errIs)
		}
		if got1, got2 := e.keysOf(1), e.keysOf(2); !slices.Equal(got1, st.want1) || !slices.Equal(got2, st.want2) {
			t.Fatalf("%s: lease 1 keys %v (want %v), lease 2 keys %v (want %v)", st.name, got1, st.want1, got2, st.want2)
		}
	}
	// Attach and Detach of an unknown lease are ignored.
	e.le.Attach(9, []byte("x"))
	e.le.Detach(9, []byte("x"))
	if e.le.Exists(9) {
		t.Error("Attach created a lease")
	}
}

func putErr(e *env, key string, lease int64) error {
	_, err := e.s.Put(mvcc.PutRequest{Key: []byte(key), Value: []byte("v"), Lease: lease})
	return err
}

func TestPersistence(t *testing.T) {
	e := newEnv(t, Options{MinTTL: 3})
	e.grant(1, 10)
	e.grant(2, 600)
	e.grant(3, 1)
	e.grant(4, 20)
	e.put("a", 1)
	e.put("b", 1)
	e.put("c", 2)
	e.put("d", 4)
	if err := e.le.Checkpoint(2, 250); err != nil {
		t.Fatal(err)
	}
	e.revoke(4)
	e.reopen()

	if got, want := e.le.Leases(), []int64{1, 2, 3}; !slices.Equal(got, want) {
		t.Fatalf("Leases after reopen = %v, want %v", got, want)
	}
	for _, tc := range []struct {
		id         int64
		ttl, remTT int64
		keys       []string
	}{
		{1, 10, 10, []string{"a", "b"}},
		{2, 600, 250, []string{"c"}},
		{3, 3, 3, []string{}},
	} {
		st, err := e.le.TimeToLive(tc.id, true)
		if err != nil {
			t.Fatal(err)
		}
		var keys []string
		for _, k := range st.Keys {
			keys = append(keys, string(k))
		}
		if st.GrantedTTL != tc.ttl || st.TTL != tc.remTT || st.Primary || !slices.Equal(keys, tc.keys) && len(tc.keys)+len(keys) > 0 {
			t.Errorf("lease %d after reopen: %+v keys %v; want ttl %d remaining %d keys %v", tc.id, st, keys, tc.ttl, tc.remTT, tc.keys)
		}
	}
	if got, want := e.liveKeys(), []string{"a@1", "b@1", "c@2"}; !slices.Equal(got, want) {
		t.Errorf("keys = %v, want %v", got, want)
	}
	// A smaller minimum at restart raises nothing; a larger one raises the
	// TTL in memory, as etcd does, not in the file.
	e.opts.MinTTL = 15
	e.reopen()
	if st, _ := e.le.TimeToLive(1, false); st.GrantedTTL != 15 {
		t.Errorf("lease 1 ttl with min 15 = %d, want 15", st.GrantedTTL)
	}
	if r, _ := e.record(1); r.ttl != 10 {
		t.Errorf("lease 1 record ttl = %d, want 10", r.ttl)
	}
	// Revoking after reopen deletes the re-attached keys.
	e.revoke(1)
	if got, want := e.liveKeys(), []string{"c@2"}; !slices.Equal(got, want) {
		t.Errorf("keys after revoke = %v, want %v", got, want)
	}
}

func TestRecoverAfterRestore(t *testing.T) {
	src := newEnv(t, Options{})
	src.grant(1, 10)
	src.grant(2, 600)
	src.put("a", 1)
	src.put("b", 1)
	src.put("c", 0)
	if err := src.le.Checkpoint(2, 100); err != nil {
		t.Fatal(err)
	}
	var snap bytes.Buffer
	if _, err := src.s.Snapshot(&snap); err != nil {
		t.Fatal(err)
	}

	dst := newEnv(t, Options{})
	dst.grant(1, 30)
	dst.grant(3, 10)
	dst.put("z", 3)
	dst.put("y", 1)
	if err := dst.s.Restore(&snap); err != nil {
		t.Fatal(err)
	}
	if got, want := dst.le.Leases(), []int64{1, 2}; !slices.Equal(got, want) {
		t.Fatalf("Leases after restore = %v, want %v", got, want)
	}
	if got := dst.keysOf(1); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("lease 1 keys = %v, want [a b]", got)
	}
	if st, _ := dst.le.TimeToLive(1, false); st.GrantedTTL != 10 {
		t.Errorf("lease 1 ttl = %d, want the snapshot's 10", st.GrantedTTL)
	}
	if st, _ := dst.le.TimeToLive(2, false); st.TTL != 100 {
		t.Errorf("lease 2 remaining = %d, want the snapshot's checkpoint 100", st.TTL)
	}
	if dst.le.Exists(3) {
		t.Error("lease 3, absent from the snapshot, survived")
	}
	dst.revoke(1)
	if got, want := dst.liveKeys(), []string{"c@0"}; !slices.Equal(got, want) {
		t.Errorf("keys after revoke = %v, want %v", got, want)
	}
	// And the restored table persists.
	dst.reopen()
	if got, want := dst.le.Leases(), []int64{2}; !slices.Equal(got, want) {
		t.Errorf("Leases after reopen = %v, want %v", got, want)
	}
}

func TestTimeToLiveAndLeases(t *testing.T) {
	e := newEnv(t, Options{})
	e.grant(5, 10)
	e.grant(-2, 20)
	e.grant(3, 30)
	e.put("k2", 5)
	e.put("k1", 5)
	e.put("k3", 3)
	if got, want := e.le.Leases(), []int64{-2, 3, 5}; !slices.Equal(got, want) {
		t.Errorf("Leases = %v, want %v", got, want)
	}
	for _, tc := range []struct {
		id       int64
		withKeys bool
		want     Status
		keys     []string
		err      error
	}{
		{id: 5, withKeys: true, want: Status{ID: 5, TTL: 10, GrantedTTL: 10}, keys: []string{"k1", "k2"}},
		{id: 5, withKeys: false, want: Status{ID: 5, TTL: 10, GrantedTTL: 10}},
		{id: -2, withKeys: true, want: Status{ID: -2, TTL: 20, GrantedTTL: 20}, keys: []string{}},
		{id: 4, err: ErrLeaseNotFound},
	} {
		st, err := e.le.TimeToLive(tc.id, tc.withKeys)
		if !errors.Is(err, tc.err) {
			t.Fatalf("TimeToLive(%d) error %v, want %v", tc.id, err, tc.err)
		}
		if err != nil {
			continue
		}
		var keys []string
		if st.Keys != nil {
			keys = []string{}
			for _, k := range st.Keys {
				keys = append(keys, string(k))
			}
		}
		if st.ID != tc.want.ID || st.TTL != tc.want.TTL || st.GrantedTTL != tc.want.GrantedTTL || st.Primary || !slices.Equal(keys, tc.keys) || (tc.withKeys != (keys != nil)) {
			t.Errorf("TimeToLive(%d, %v) = %+v keys %v, want %+v keys %v", tc.id, tc.withKeys, st, keys, tc.want, tc.keys)
		}
	}
	// On the primary the remaining TTL runs on the clock, truncated.
	e.le.Promote(0)
	e.clock.Advance(2500 * time.Millisecond)
	st, _ := e.le.TimeToLive(5, false)
	if st.TTL != 7 || !st.Primary || st.GrantedTTL != 10 {
		t.Errorf("primary TimeToLive = %+v, want TTL 7 (7.5s left), primary", st)
	}
	e.clock.Advance(time.Hour)
	if got := e.ttl(5); got != 0 {
		t.Errorf("expired lease TTL = %d, want 0", got)
	}
}

// TestRecoverOnPrimary: a restore on the primary restarts the new leases'
// expiries and settles Renew calls waiting on the old table.
func TestRecoverOnPrimary(t *testing.T) {
	src := newEnv(t, Options{})
	src.grant(1, 50)
	src.grant(2, 600)
	if err := src.le.Checkpoint(2, 100); err != nil {
		t.Fatal(err)
	}
	var snap bytes.Buffer
	if _, err := src.s.Snapshot(&snap); err != nil {
		t.Fatal(err)
	}

	dst := newEnv(t, Options{})
	dst.le.Promote(0)
	dst.grant(1, 5)
	dst.grant(3, 5)
	dst.clock.Advance(5 * time.Second)
	ctx := context.Background()
	gone, kept := renewAsync(ctx, dst.le, 3), renewAsync(ctx, dst.le, 1)
	// Both leases are expired, so the calls wait, unless they run after the
	// restore; either way the answers below are the same.
	if got := dst.le.Expired(0); !slices.Equal(got, []int64{1, 3}) {
		t.Fatalf("Expired = %v", got)
	}
	if err := dst.s.Restore(&snap); err != nil {
		t.Fatal(err)
	}
	if err := <-gone; !errors.Is(err, ErrLeaseNotFound) {
		t.Errorf("Renew of a lease the snapshot lacks = %v, want ErrLeaseNotFound", err)
	}
	if err := <-kept; err != nil {
		t.Errorf("Renew of a lease the snapshot has = %v, want success", err)
	}
	if got := dst.ttl(2); got != 100 {
		t.Errorf("lease 2 TTL = %d, want its checkpoint 100", got)
	}
	dst.clock.Advance(50 * time.Second)
	if got := dst.le.Expired(0); !slices.Equal(got, []int64{1}) {
		t.Errorf("Expired 50s after recover = %v, want [1]", got)
	}
}

func TestCorruptBucket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	be, err := backend.Open(path, backend.Options{InitialMmapSize: 1 << 30, BatchInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	be.Put(Bucket, leaseKey(1), []byte{0x08})
	be.Seal()
	if _, err := New(be, Options{}); err == nil {
		t.Fatal("New on a corrupt lease record succeeded")
	}
}
