package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/cairnkv/cairn/api/etcdserverpb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startMember runs a one-member server in this process.
func startMember(t *testing.T) (*Server, *grpc.ClientConn) {
	t.Helper()
	cfg := NewConfig()
	client := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	peer := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	cfg.DataDir = filepath.Join(t.TempDir(), "default.cairn")
	cfg.ListenClientURLs, cfg.AdvertiseClientURLs = []string{client}, []string{client}
	cfg.ListenPeerURLs, cfg.InitialAdvertisePeerURLs = []string{peer}, []string{peer}
	cfg.HeartbeatInterval, cfg.ElectionTimeout = 10*time.Millisecond, 100*time.Millisecond
	s, err := Start(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	conn, err := grpc.NewClient("passthrough:///"+client[len("http://"):], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	return s, conn
}

// TestStopEndsEverything runs a member with every kind of long-lived
// stream open, stops it, and checks that no goroutine it started survives
// (goleak in TestMain) and that Stop does not wait for the streams.
func TestStopEndsEverything(t *testing.T) {
	s, conn := startMember(t)
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	kv := pb.NewKVClient(conn)
	if _, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("k"), Value: []byte("v")}); err != nil {
		t.Fatalf("put: %v", err)
	}
	grant, err := pb.NewLeaseClient(conn).LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: 60})
	if err != nil {
		t.Fatalf("grant: %v", err)
	}
	ka, err := pb.NewLeaseClient(conn).LeaseKeepAlive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := ka.Send(&pb.LeaseKeepAliveRequest{ID: grant.ID}); err != nil {
		t.Fatal(err)
	}
	if resp, err := ka.Recv(); err != nil || resp.TTL <= 0 {
		t.Fatalf("keep-alive: %v %v", resp, err)
	}
	w, err := pb.NewWatchClient(conn).Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{Key: []byte("k")}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("k"), Value: []byte("v2")}); err != nil {
		t.Fatal(err)
	}
	if resp, err := w.Recv(); err != nil || len(resp.Events) != 1 {
		t.Fatalf("watch event: %v %v", resp, err)
	}

	stopCtx, stopCancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer stopCancel()
	start := time.Now()
	if err := s.Stop(stopCtx); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Stop took %v with streams open", d)
	}
	if _, err := w.Recv(); err == nil {
		t.Fatal("watch stream still open after Stop")
	}
}

// TestRestartKeepsData stops a member and starts it again on the same data
// dir and ports.
func TestRestartKeepsData(t *testing.T) {
	s, conn := startMember(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := pb.NewKVClient(conn).Put(ctx, &pb.PutRequest{Key: []byte("k"), Value: []byte("v")}); err != nil {
		t.Fatalf("put: %v", err)
	}
	conn.Close()
	cfg := s.cfg
	if err := s.Stop(ctx); err != nil {
		t.Fatalf("stop: %v", err)
	}
	s2, err := Start(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	defer func() {
		if err := s2.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
	}()
	conn2, err := grpc.NewClient("passthrough:///"+cfg.ListenClientURLs[0][len("http://"):], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	resp, err := pb.NewKVClient(conn2).Range(ctx, &pb.RangeRequest{Key: []byte("k")})
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("after restart: %v %v", resp, err)
	}
}
