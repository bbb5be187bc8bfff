package compat

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/cairnkv/cairn/integration/harness"
)

// TestMain runs the tests, removes the binaries built for them (cairn's
// and etcdctl's), then checks that nothing they started is still running
// once every client is closed.
func TestMain(m *testing.M) {
	code := harness.Main(m)
	removeEtcdctl()
	if code == 0 {
		http.DefaultClient.CloseIdleConnections()
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goroutines left behind: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// opTimeout bounds a single client call; waitTimeout bounds waiting for a
// condition that takes a leader election or a lease expiry.
const (
	opTimeout   = 10 * time.Second
	waitTimeout = 30 * time.Second
)

// newClient connects etcd's client to the given endpoints (host:port) and
// closes it when the test ends. Its logs are dropped: a test reports what
// went wrong itself.
func newClient(t testing.TB, endpoints ...string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatalf("clientv3.New(%v): %v", endpoints, err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// ctx returns a context that ends after opTimeout or with the test.
func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), opTimeout)
	t.Cleanup(cancel)
	return c
}

// prefix gives each test its own corner of the shared keyspace.
func prefix(t testing.TB) string {
	return strings.ReplaceAll(t.Name(), " ", "_") + "/"
}

// waitFor polls cond until it returns nil or waitTimeout passes, then fails
// with the last reason cond gave.
func waitFor(t testing.TB, what string, cond func() error) {
	t.Helper()
	waitForWithin(t, waitTimeout, what, cond)
}

func waitForWithin(t testing.TB, d time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %v", d, what, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// mustPut puts k=v and returns the revision of the write.
func mustPut(t testing.TB, cli *clientv3.Client, k, v string, opts ...clientv3.OpOption) int64 {
	t.Helper()
	resp, err := cli.Put(ctx(t), k, v, opts...)
	if err != nil {
		t.Fatalf("put %q: %v", k, err)
	}
	return resp.Header.Revision
}

// kvString renders key=value pairs for failure messages.
func kvString(resp *clientv3.GetResponse) string {
	var b strings.Builder
	for i, kv := range resp.Kvs {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%s=%s", kv.Key, kv.Value)
	}
	return "[" + b.String() + "]"
}

// keys lists the keys of a get response.
func keys(resp *clientv3.GetResponse) []string {
	out := make([]string, len(resp.Kvs))
	for i, kv := range resp.Kvs {
		out[i] = string(kv.Key)
	}
	return out
}

// env is a cluster and a client that knows every member.
type env struct {
	c   *harness.Cluster
	cli *clientv3.Client
}

// TestEtcdClient runs etcd's client against one three-member cluster; each
// group works under its own key prefix.
func TestEtcdClient(t *testing.T) {
	c := harness.NewCluster(t, 3, harness.Options{})
	e := &env{c: c, cli: newClient(t, c.Endpoints()...)}
	for _, g := range []struct {
		name string
		fn   func(*testing.T, *env)
	}{
		{"KV", testKV},
		{"KVErrors", testKVErrors},
		{"Txn", testTxn},
		{"Compact", testCompact},
		{"Watch", testWatch},
		{"Lease", testLease},
		{"Concurrency", testConcurrency},
		{"Maintenance", testMaintenance},
		{"Cluster", testCluster},
		{"Gateway", testGateway},
	} {
		t.Run(g.name, func(t *testing.T) { g.fn(t, e) })
	}
}

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
