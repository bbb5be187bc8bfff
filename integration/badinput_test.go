package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/cairnkv/cairn/api/etcdserverpb"
	"github.com/cairnkv/cairn/integration/harness"
)

// TestBadInputGetsEtcdErrors sends requests etcd rejects and checks cairn
// answers with etcd's gRPC code and message, then still serves.
func TestBadInputGetsEtcdErrors(t *testing.T) {
	c := harness.NewCluster(t, 1, harness.Options{})
	m := c.Members[0]
	conn := m.Conn()
	kv, lease := pb.NewKVClient(conn), pb.NewLeaseClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	for i := range 5 {
		if _, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("k"), Value: []byte{byte(i)}}); err != nil {
			t.Fatalf("put: %v", err)
		}
	}
	if _, err := kv.Compact(ctx, &pb.CompactionRequest{Revision: 3, Physical: true}); err != nil {
		t.Fatalf("compact: %v", err)
	}

	justOver := make([]byte, 1572864+1)
	farOver := make([]byte, 1572864+1024*1024)
	tests := []struct {
		name string
		call func() error
		code codes.Code
		msg  string
	}{
		{"empty key put", func() error {
			_, err := kv.Put(ctx, &pb.PutRequest{Value: []byte("v")})
			return err
		}, codes.InvalidArgument, "etcdserver: key is not provided"},
		{"empty key range", func() error {
			_, err := kv.Range(ctx, &pb.RangeRequest{})
			return err
		}, codes.InvalidArgument, "etcdserver: key is not provided"},
		{"request just over --max-request-bytes", func() error {
			_, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("big"), Value: justOver})
			return err
		}, codes.InvalidArgument, "etcdserver: request is too large"},
		{"request far over the gRPC limit", func() error {
			_, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("big"), Value: farOver})
			return err
		}, codes.ResourceExhausted, ""},
		{"future revision", func() error {
			_, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte("k"), Revision: 1000})
			return err
		}, codes.OutOfRange, "etcdserver: mvcc: required revision is a future revision"},
		{"compacted revision", func() error {
			_, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte("k"), Revision: 2})
			return err
		}, codes.OutOfRange, "etcdserver: mvcc: required revision has been compacted"},
		{"compact at the compacted revision", func() error {
			_, err := kv.Compact(ctx, &pb.CompactionRequest{Revision: 3})
			return err
		}, codes.OutOfRange, "etcdserver: mvcc: required revision has been compacted"},
		{"put with an unknown lease", func() error {
			_, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("k"), Value: []byte("v"), Lease: 12345})
			return err
		}, codes.NotFound, "etcdserver: requested lease not found"},
		{"revoke an unknown lease", func() error {
			_, err := lease.LeaseRevoke(ctx, &pb.LeaseRevokeRequest{ID: 12345})
			return err
		}, codes.NotFound, "etcdserver: requested lease not found"},
		{"too many txn ops", func() error {
			ops := make([]*pb.RequestOp, 129)
			for i := range ops {
				ops[i] = &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte{'t', byte(i)}}}}
			}
			_, err := kv.Txn(ctx, &pb.TxnRequest{Success: ops})
			return err
		}, codes.InvalidArgument, "etcdserver: too many operations in txn request"},
		{"duplicate key in txn", func() error {
			put := &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("d")}}}
			_, err := kv.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{put, put}})
			return err
		}, codes.InvalidArgument, "etcdserver: duplicate key given in txn request"},
		{"ignore_value with a value", func() error {
			_, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("k"), Value: []byte("v"), IgnoreValue: true})
			return err
		}, codes.InvalidArgument, "etcdserver: value is provided"},
		{"ignore_value on a missing key", func() error {
			_, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("missing"), IgnoreValue: true})
			return err
		}, codes.InvalidArgument, "etcdserver: key not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			st, _ := status.FromError(err)
			if st.Code() != tt.code || (tt.msg != "" && st.Message() != tt.msg) {
				t.Fatalf("got %v %q, want %v %q", st.Code(), st.Message(), tt.code, tt.msg)
			}
		})
	}
	assertServing(t, m)
}

// TestGarbageOnPortsIsRejected writes junk to the client and peer ports and
// to the JSON gateway; each is refused and the member keeps serving.
func TestGarbageOnPortsIsRejected(t *testing.T) {
	c := harness.NewCluster(t, 3, harness.Options{})
	junk := make([]byte, 4096)
	_, _ = rand.Read(junk)
	for _, m := range c.Members {
		for _, addr := range []string{m.Addr(), strings.TrimPrefix(m.PeerURL, "http://")} {
			for _, payload := range [][]byte{junk, []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + string(junk)), []byte("GET / HTTP/1.1\r\n\r\n")} {
				conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
				if err != nil {
					t.Fatalf("dial %s: %v", addr, err)
				}
				_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
				_, _ = conn.Write(payload)
				_, _ = io.Copy(io.Discard, conn) // the server answers with an error or closes
				_ = conn.Close()
			}
		}
		// Peer stream from a stranger: refused with an HTTP error.
		req, _ := http.NewRequest(http.MethodPost, m.PeerURL+"/raft/stream", bytes.NewReader(junk))
		req.Header.Set("X-Cairn-Cluster-Id", "1234")
		req.Header.Set("X-Cairn-From", "1")
		req.Header.Set("X-Cairn-To", "2")
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode < 400 {
				t.Fatalf("peer stream with a wrong cluster ID answered %s", resp.Status)
			}
		}
		// Malformed JSON on the gateway: a 400 with a message.
		resp, err := http.Post(m.ClientURL+"/v3/kv/put", "application/json", strings.NewReader(`{"key": "AAA=", `))
		if err != nil {
			t.Fatalf("post malformed JSON: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), `"message"`) {
			t.Fatalf("malformed JSON: %s %s, want 400 with a message", resp.Status, body)
		}
	}
	for _, m := range c.Members {
		assertServing(t, m)
	}
}

// assertServing checks the member still takes a write and a linearizable
// read.
func assertServing(t *testing.T, m *harness.Member) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv := pb.NewKVClient(m.Conn())
	if _, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("alive-" + m.Name), Value: []byte("yes")}); err != nil {
		t.Fatalf("%s stopped serving writes: %v", m.Name, err)
	}
	resp, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte("alive-" + m.Name)})
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("%s stopped serving reads: %v %v", m.Name, err, resp)
	}
	if !m.Running() {
		t.Fatalf("%s exited", m.Name)
	}
}
