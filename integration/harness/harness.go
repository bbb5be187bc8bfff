// Package harness runs clusters of real cairn processes on loopback for
// tests: it builds the binary once per test process, starts members with
// free ports and their own data dirs, and kills, stops, pauses and restarts
// them.
//
// Every member's output goes to a log file in its directory; when a test
// fails the last lines of each log are printed. Members still running at
// the end of a test are killed by its cleanup.
package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	buildDir  string
)

// Main builds the binary, runs the tests and removes the build. Call it
// from TestMain.
func Main(m *testing.M) int {
	code := m.Run()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	return code
}

// Binary returns the path of a cairn binary built from this source tree,
// building it on first use. CAIRN_TEST_RACE=1 builds it with the race
// detector.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "cairn-bin-")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(buildDir, "cairn")
		args := []string{"build", "-o", binPath}
		if os.Getenv("CAIRN_TEST_RACE") == "1" {
			args = append(args, "-race")
		}
		args = append(args, "github.com/cairnkv/cairn/cmd/cairn")
		// Build inside cairn's own module, so the binary has the root
		// go.mod's dependencies even when the tests live in another module
		// (integration/compat) that replaces cairn with this tree.
		var root string
		root, buildErr = moduleDir("github.com/cairnkv/cairn")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", args...)
		cmd.Dir = root
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			buildErr = fmt.Errorf("go build cairn: %w\n%s", err, out.String())
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// moduleDir returns the directory of a module in the current build (the
// main module or a replacement of it).
func moduleDir(path string) (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", path).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", fmt.Errorf("go list -m %s: %w\n%s", path, err, ee.Stderr)
		}
		return "", fmt.Errorf("go list -m %s: %w", path, err)
	}
	dir := strings.TrimSpace(string(out))
	if dir == "" {
		return "", fmt.Errorf("go list -m %s: no directory", path)
	}
	return dir, nil
}

// Cluster is a set of members started together, and those added to it
// later (NewMember).
type Cluster struct {
	t       testing.TB
	Members []*Member
	token   string
	opts    Options
	// Net is the fault proxy on the peer path (Options.PeerProxy), nil
	// without one.
	Net *PeerNet
}

// Member is one cairn process (running or not) with its flags and data.
type Member struct {
	t         testing.TB
	Name      string
	Dir       string // data dir
	ClientURL string // http://127.0.0.1:port
	PeerURL   string // the advertised peer URL: the fault proxy's with Options.PeerProxy
	// ListenPeerURL is where the member itself listens for peers; the
	// same as PeerURL unless the cluster has a fault proxy.
	ListenPeerURL string
	// ID is the member's ID, learned from its status once the cluster
	// has a leader (set only with Options.PeerProxy, which needs it).
	ID uint64
	// Removed marks a member taken out of the cluster (Cluster.Forget):
	// it is left out of the --initial-cluster of members added later and
	// of the leader checks.
	Removed bool
	args    []string
	env     []string
	logPath string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	err  error // exit status once done is closed
}

// Options adjust a cluster.
type Options struct {
	// Flags are extra flags for every member.
	Flags []string
	// Token is the initial cluster token (default: unique per cluster).
	Token string
	// Env holds extra environment variables (KEY=VALUE) for every member,
	// on top of the test process's environment.
	Env []string
	// PeerProxy puts a fault proxy in front of each member's peer port
	// (see PeerNet); the cluster's Net controls it.
	PeerProxy bool
}

// NewCluster starts size members and waits until they have a leader.
func NewCluster(t testing.TB, size int, opts Options) *Cluster {
	t.Helper()
	bin := Binary(t)
	token := opts.Token
	if token == "" {
		token = fmt.Sprintf("test-%d", time.Now().UnixNano())
	}
	c := &Cluster{t: t, token: token, opts: opts}
	if opts.PeerProxy {
		c.Net = NewPeerNet()
	}
	for i := range size {
		c.Members = append(c.Members, c.newMember(fmt.Sprintf("m%d", i+1)))
	}
	initial := c.initialCluster()
	for _, m := range c.Members {
		m.args = c.memberArgs(m, initial, "new")
		m.binary(bin)
	}
	t.Cleanup(func() {
		for _, m := range c.Members {
			m.kill()
		}
		if c.Net != nil {
			c.Net.Close()
		}
		if t.Failed() {
			for _, m := range c.Members {
				t.Logf("--- last lines of %s's log (%s):\n%s", m.Name, m.logPath, tail(m.logPath, 40))
			}
		}
	})
	for _, m := range c.Members {
		m.Start()
	}
	c.WaitLeader()
	for _, m := range c.Members {
		if !m.Running() {
			t.Fatalf("%s exited while the cluster started: %s", m.Name, tail(m.logPath, 5))
		}
	}
	if c.Net != nil {
		for _, m := range c.Members {
			WaitFor(t, 10*time.Second, "the ID of "+m.Name, func() bool {
				st, err := m.Status()
				m.ID = st.GetHeader().GetMemberId()
				return err == nil && m.ID != 0
			})
			c.Net.SetID(m.Name, m.ID)
		}
	}
	return c
}

// newMember allocates ports, a data dir and (with a fault proxy) the
// proxy listener of a member; it does not set its flags.
func (c *Cluster) newMember(name string) *Member {
	c.t.Helper()
	perMember := 2
	if c.opts.PeerProxy {
		perMember = 3
	}
	ports := FreePorts(c.t, perMember)
	m := &Member{
		t:         c.t,
		Name:      name,
		Dir:       filepath.Join(c.t.TempDir(), name),
		ClientURL: fmt.Sprintf("http://127.0.0.1:%d", ports[0]),
		PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", ports[1]),
		env:       c.opts.Env,
	}
	m.ListenPeerURL = m.PeerURL
	if c.opts.PeerProxy {
		m.ListenPeerURL = fmt.Sprintf("http://127.0.0.1:%d", ports[2])
		if err := c.Net.Listen(name, strings.TrimPrefix(m.PeerURL, "http://"), strings.TrimPrefix(m.ListenPeerURL, "http://")); err != nil {
			c.Net.Close()
			c.t.Fatal(err)
		}
	}
	m.logPath = m.Dir + ".log"
	return m
}

// initialCluster is --initial-cluster for the members not removed.
func (c *Cluster) initialCluster() string {
	var parts []string
	for _, m := range c.Members {
		if !m.Removed {
			parts = append(parts, m.Name+"="+m.PeerURL)
		}
	}
	return strings.Join(parts, ",")
}

func (c *Cluster) memberArgs(m *Member, initial, state string) []string {
	return append([]string{
		"--name", m.Name,
		"--data-dir", m.Dir,
		"--listen-client-urls", m.ClientURL,
		"--advertise-client-urls", m.ClientURL,
		"--listen-peer-urls", m.ListenPeerURL,
		"--initial-advertise-peer-urls", m.PeerURL,
		"--initial-cluster", initial,
		"--initial-cluster-state", state,
		"--initial-cluster-token", c.token,
		"--heartbeat-interval", "50",
		"--election-timeout", "500",
	}, c.opts.Flags...)
}

// NewMember prepares a member that joins the running cluster: ports, a data
// dir, and flags with --initial-cluster-state existing and an
// --initial-cluster of every member not removed plus itself, as `etcdctl
// member add` prints them. It is not started, nor added to the cluster's
// membership: add it (MemberAdd with its PeerURL) and then Start it. extra
// flags go after the cluster's own.
func (c *Cluster) NewMember(name string, extra ...string) *Member {
	c.t.Helper()
	m := c.newMember(name)
	c.Members = append(c.Members, m)
	m.args = append(c.memberArgs(m, c.initialCluster(), "existing"), extra...)
	m.binary(Binary(c.t))
	return m
}

// Forget marks m as removed from the cluster (after MemberRemove): it no
// longer counts for leader checks or the --initial-cluster of new members.
// The process is left alone; a removed member exits by itself.
func (c *Cluster) Forget(m *Member) { m.Removed = true }

// Member returns the member named name, or nil.
func (c *Cluster) Member(name string) *Member {
	for _, m := range c.Members {
		if m.Name == name {
			return m
		}
	}
	return nil
}

func (m *Member) binary(bin string) { m.args = append([]string{bin}, m.args...) }

// AddFlags appends flags to the member's command line for its next Start;
// a flag given again overrides the earlier value (for example the
// --initial-cluster that `etcdctl member add` printed, or a second
// --listen-peer-urls).
func (m *Member) AddFlags(flags ...string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.args = append(m.args, flags...)
}

// Wait waits up to timeout for the process to exit on its own and returns
// its exit error (nil for status 0).
func (m *Member) Wait(timeout time.Duration) error {
	m.t.Helper()
	m.mu.Lock()
	cmd, done := m.cmd, m.done
	m.mu.Unlock()
	if cmd == nil {
		return fmt.Errorf("%s is not running", m.Name)
	}
	select {
	case <-done:
	case <-time.After(timeout):
		return fmt.Errorf("%s did not exit within %v", m.Name, timeout)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cmd = nil
	return m.err
}

// MemberID asks the running member for its ID.
func (m *Member) MemberID() (uint64, error) {
	st, err := m.Status()
	if err != nil {
		return 0, err
	}
	return st.GetHeader().GetMemberId(), nil
}

// Endpoints returns every member's client address (host:port).
func (c *Cluster) Endpoints() []string {
	var eps []string
	for _, m := range c.Members {
		eps = append(eps, m.Addr())
	}
	return eps
}

// LogPath is the file the member's output goes to.
func (m *Member) LogPath() string { return m.logPath }

// Addr is the member's client address (host:port).
func (m *Member) Addr() string { return strings.TrimPrefix(m.ClientURL, "http://") }

// Start launches the member (again) with its flags and data dir.
func (m *Member) Start() {
	m.t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil {
		m.t.Fatalf("%s is already running", m.Name)
	}
	logf, err := os.OpenFile(m.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		m.t.Fatalf("open log of %s: %v", m.Name, err)
	}
	cmd := exec.Command(m.args[0], m.args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if len(m.env) > 0 {
		cmd.Env = append(os.Environ(), m.env...)
	}
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		m.t.Fatalf("start %s: %v", m.Name, err)
	}
	done := make(chan struct{})
	go func() {
		err := cmd.Wait()
		_ = logf.Close()
		m.mu.Lock()
		m.err = err
		m.mu.Unlock()
		close(done)
	}()
	m.cmd, m.done = cmd, done
}

// Kill sends SIGKILL and waits for the process to go.
func (m *Member) Kill() {
	m.t.Helper()
	if !m.kill() {
		m.t.Fatalf("kill %s: not running", m.Name)
	}
}

func (m *Member) kill() bool {
	m.mu.Lock()
	cmd, done := m.cmd, m.done
	m.mu.Unlock()
	if cmd == nil {
		return false
	}
	_ = cmd.Process.Signal(syscall.SIGCONT) // a paused process must die too
	_ = cmd.Process.Kill()
	<-done
	m.mu.Lock()
	m.cmd = nil
	m.mu.Unlock()
	return true
}

// Stop sends SIGTERM and waits up to timeout for a clean exit, returning
// the exit error (nil for status 0).
func (m *Member) Stop(timeout time.Duration) error {
	m.t.Helper()
	m.mu.Lock()
	cmd, done := m.cmd, m.done
	m.mu.Unlock()
	if cmd == nil {
		m.t.Fatalf("stop %s: not running", m.Name)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		m.t.Fatalf("signal %s: %v", m.Name, err)
	}
	select {
	case <-done:
	case <-time.After(timeout):
		m.kill()
		return fmt.Errorf("%s did not exit within %v of SIGTERM", m.Name, timeout)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cmd = nil
	return m.err
}

// Hook posts to one of the member's test hooks (server/testhooks.go; the
// member needs CAIRN_TEST_HOOKS=1 in Options.Env), for example
// Hook("/cairn/test/fsync-delay", "d=50ms"). It goes to the member's own
// peer port, never through the fault proxy, and fails after timeout.
func (m *Member) Hook(path, query string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	u := m.ListenPeerURL + path
	if query != "" {
		u += "?" + query
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("hook %s on %s: %w", path, m.Name, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("hook %s on %s: %s: %s", path, m.Name, resp.Status, bytes.TrimSpace(body))
	}
	return nil
}

// Pause freezes the process (SIGSTOP); Resume thaws it.
func (m *Member) Pause()  { m.signal(syscall.SIGSTOP) }
func (m *Member) Resume() { m.signal(syscall.SIGCONT) }

func (m *Member) signal(sig syscall.Signal) {
	m.t.Helper()
	m.mu.Lock()
	cmd := m.cmd
	m.mu.Unlock()
	if cmd == nil {
		m.t.Fatalf("signal %s: not running", m.Name)
	}
	if err := cmd.Process.Signal(sig); err != nil {
		m.t.Fatalf("signal %v to %s: %v", sig, m.Name, err)
	}
}

// Running reports whether the process is alive.
func (m *Member) Running() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil {
		return false
	}
	select {
	case <-m.done:
		return false
	default:
		return true
	}
}

// Conn dials the member's gRPC port.
func (m *Member) Conn() *grpc.ClientConn {
	m.t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+m.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		m.t.Fatalf("dial %s: %v", m.Name, err)
	}
	m.t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// Status asks the member for its status, with a short timeout. See
// status.go for why the answer is decoded by hand.
func (m *Member) Status() (*Status, error) {
	conn, err := grpc.NewClient("passthrough:///"+m.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return callStatus(ctx, conn)
}

// Healthy reports whether the member answers /health with "true".
func (m *Member) Healthy() bool {
	client := http.Client{Timeout: 3 * time.Second}
	resp, err := client.Get(m.ClientURL + "/health")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	return resp.StatusCode == http.StatusOK && strings.Contains(buf.String(), `"health":"true"`)
}

// WaitLeader waits until every running member reports the same leader, and
// returns it.
func (c *Cluster) WaitLeader() *Member {
	c.t.Helper()
	var lead *Member
	WaitFor(c.t, 30*time.Second, "a leader every running member agrees on", func() bool {
		lead = c.agreedLeader()
		return lead != nil
	})
	return lead
}

func (c *Cluster) agreedLeader() *Member {
	var id uint64
	for _, m := range c.Members {
		if !m.Running() || m.Removed {
			continue
		}
		st, err := m.Status()
		if err != nil || st.GetLeader() == 0 || (id != 0 && st.GetLeader() != id) {
			return nil
		}
		id = st.GetLeader()
	}
	for _, m := range c.Members {
		if st, err := m.Status(); err == nil && m.Running() && !m.Removed && st.GetHeader().GetMemberId() == id {
			return m
		}
	}
	return nil
}

// Running returns the running members that are not removed.
func (c *Cluster) Running() []*Member {
	var out []*Member
	for _, m := range c.Members {
		if m.Running() && !m.Removed {
			out = append(out, m)
		}
	}
	return out
}

// WaitFor polls cond every 20ms until it holds or d passes.
func WaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// FreePorts returns n distinct loopback ports that were free a moment ago.
// They are drawn at random from below the kernel's ephemeral range: a port
// the kernel hands out (to a listener on port 0, or as the local end of an
// outgoing connection: the tests make many) could be taken again between
// this check and the member's own bind.
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	lo, hi := portRange()
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}()
	ports := make([]int, 0, n)
	for tries := 0; len(ports) < n; tries++ {
		if tries > 1000 {
			t.Fatalf("find %d free ports in [%d, %d]: only %d after %d tries", n, lo, hi, len(ports), tries)
		}
		p := lo + rand.IntN(hi-lo+1)
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue // in use
		}
		lns = append(lns, ln)
		ports = append(ports, p)
	}
	return ports
}

// portRange is where FreePorts draws from: the 10,000 ports below the
// start of the ephemeral range (Linux's ip_local_port_range; 32768 if it
// cannot be read).
func portRange() (lo, hi int) {
	start := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil && v > 12000 {
				start = v
			}
		}
	}
	return start - 10000, start - 1
}

// ExitCode runs the binary with args to completion and returns its exit
// code and combined output.
func ExitCode(t testing.TB, timeout time.Duration, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, Binary(t), args...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &ee):
		return ee.ExitCode(), string(out)
	}
	t.Fatalf("run cairn %v: %v", args, err)
	return -1, ""
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
