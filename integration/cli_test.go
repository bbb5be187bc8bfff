package integration

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/cairnkv/cairn/api/etcdserverpb"
	"github.com/cairnkv/cairn/integration/harness"
)

// TestBadStartsExitWithOneLine checks that a bad flag or an unusable data
// dir ends the process with exit code 1 and a one-line error, before it
// serves anything.
func TestBadStartsExitWithOneLine(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "not-a-dir")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	ports := harness.FreePorts(t, 2)
	urls := func(client, peer string) []string {
		return []string{"--listen-client-urls", client, "--advertise-client-urls", client,
			"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer}
	}
	free := urls(fmt.Sprintf("http://127.0.0.1:%d", ports[0]), fmt.Sprintf("http://127.0.0.1:%d", ports[1]))
	tests := []struct {
		name string
		args []string
		want string // part of the message
	}{
		{"unknown flag", []string{"--no-such-flag"}, "no-such-flag"},
		{"bad number", []string{"--snapshot-count", "lots"}, "snapshot-count"},
		{"bad cluster state", append([]string{"--initial-cluster-state", "maybe", "--data-dir", dir + "/a"}, free...), "initial-cluster-state"},
		{"election below 5 heartbeats", append([]string{"--heartbeat-interval", "100", "--election-timeout", "200", "--data-dir", dir + "/b"}, free...), "election-timeout"},
		{"data dir is a file", append([]string{"--data-dir", file}, free...), "not a directory"},
		{"name missing from initial cluster", append([]string{"--data-dir", dir + "/c", "--initial-cluster", "other=http://127.0.0.1:1"}, free...), "initial-cluster"},
		{"client port in use", append([]string{"--data-dir", dir + "/d"},
			urls("http://"+busy.Addr().String(), fmt.Sprintf("http://127.0.0.1:%d", ports[1]))...), "listen-client-urls"},
		{"bad log level", append([]string{"--log-level", "chatty", "--data-dir", dir + "/e"}, free...), "log-level"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out := harness.ExitCode(t, 30*time.Second, tt.args...)
			out = strings.TrimSpace(out)
			lines := strings.Split(out, "\n")
			last := lines[len(lines)-1]
			if code != 1 {
				t.Fatalf("exit code %d, want 1; output:\n%s", code, out)
			}
			if !strings.HasPrefix(last, "cairn: ") || !strings.Contains(last, tt.want) {
				t.Fatalf("last line %q, want a one-line 'cairn: ...' error mentioning %q; output:\n%s", last, tt.want, out)
			}
		})
	}
	// The refused starts left nothing behind in the data dirs they named.
	for _, d := range []string{"a", "b", "c", "e"} {
		if _, err := os.Stat(filepath.Join(dir, d)); !os.IsNotExist(err) {
			t.Errorf("refused start created %s", filepath.Join(dir, d))
		}
	}
}

func TestVersionFlag(t *testing.T) {
	code, out := harness.ExitCode(t, 10*time.Second, "--version")
	if code != 0 || !strings.HasPrefix(out, "cairn ") {
		t.Fatalf("--version: exit %d, output %q", code, out)
	}
}

type proc struct {
	cmd    *exec.Cmd
	exited chan struct{}
	err    error // valid once exited is closed
}

func dial(t *testing.T, url string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+strings.TrimPrefix(url, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// TestFlagsFromEnvironmentAndGracefulStop starts a member configured only
// through CAIRN_* variables, writes, stops it with SIGTERM (exit code 0),
// and restarts it from its data dir with the write intact.
func TestFlagsFromEnvironmentAndGracefulStop(t *testing.T) {
	ports := harness.FreePorts(t, 2)
	client := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peer := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	dataDir := filepath.Join(t.TempDir(), "env.cairn")
	env := append(os.Environ(),
		"CAIRN_NAME=envy",
		"CAIRN_DATA_DIR="+dataDir,
		"CAIRN_LISTEN_CLIENT_URLS="+client,
		"CAIRN_ADVERTISE_CLIENT_URLS="+client,
		"CAIRN_LISTEN_PEER_URLS="+peer,
		"CAIRN_INITIAL_ADVERTISE_PEER_URLS="+peer,
	)
	start := func() *proc {
		logf, err := os.OpenFile(dataDir+".log", os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(harness.Binary(t))
		cmd.Env = env
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		p := &proc{cmd: cmd, exited: make(chan struct{})}
		go func() {
			p.err = cmd.Wait()
			_ = logf.Close()
			close(p.exited)
		}()
		t.Cleanup(func() { _ = cmd.Process.Kill(); <-p.exited })
		return p
	}
	m := &harness.Member{Name: "envy", ClientURL: client}
	p := start()
	harness.WaitFor(t, 30*time.Second, "the member to become healthy", m.Healthy)
	if _, err := os.Stat(filepath.Join(dataDir, "member", "wal")); err != nil {
		t.Fatalf("CAIRN_DATA_DIR not used: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn := dial(t, client)
	if _, err := pb.NewKVClient(conn).Put(ctx, &pb.PutRequest{Key: []byte("durable"), Value: []byte("yes")}); err != nil {
		t.Fatalf("put: %v", err)
	}
	// Long-lived streams must not hold the shutdown up: a client's open
	// watch and keep-alive streams end when the member stops.
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	watch, err := pb.NewWatchClient(conn).Watch(wctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := watch.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{Key: []byte("durable")}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil { // created
		t.Fatal(err)
	}
	keepAlive, err := pb.NewLeaseClient(conn).LeaseKeepAlive(wctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := keepAlive.Send(&pb.LeaseKeepAliveRequest{ID: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := keepAlive.Recv(); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
		if p.err != nil {
			t.Fatalf("exit after SIGTERM: %v, want status 0", p.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("member did not exit within 10s of SIGTERM with streams open (graceful stop waits on them)")
	}
	t.Logf("exited %v after SIGTERM with a watch and a keep-alive stream open", time.Since(stopped))

	start()
	harness.WaitFor(t, 30*time.Second, "the restarted member to become healthy", m.Healthy)
	resp, err := pb.NewKVClient(dial(t, client)).Range(ctx, &pb.RangeRequest{Key: []byte("durable")})
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "yes" {
		t.Fatalf("after restart: %v %v", err, resp)
	}
}
