package compat

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairnkv/cairn/integration/harness"
)

// etcdctl 3.7 is a tool dependency of this module (go.mod's tool line); it
// is built once per test process, on first use, into a temporary directory
// that TestMain removes.
var (
	etcdctlOnce sync.Once
	etcdctlDir  string
	etcdctlBin  string
	etcdctlErr  error
)

// etcdctlBinary returns the path of etcdctl built from the module's pinned
// version.
func etcdctlBinary(t testing.TB) string {
	t.Helper()
	etcdctlOnce.Do(func() {
		etcdctlDir, etcdctlErr = os.MkdirTemp("", "cairn-etcdctl-")
		if etcdctlErr != nil {
			return
		}
		etcdctlBin = filepath.Join(etcdctlDir, "etcdctl")
		cmd := exec.Command("go", "build", "-o", etcdctlBin, "go.etcd.io/etcd/etcdctl/v3")
		// The test binary runs in this package's directory, inside the
		// compat module whose go.mod pins etcdctl.
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			etcdctlErr = fmt.Errorf("go build etcdctl: %w\n%s", err, out.String())
		}
	})
	if etcdctlErr != nil {
		t.Fatal(etcdctlErr)
	}
	return etcdctlBin
}

// removeEtcdctl deletes the build directory (TestMain, after the run).
func removeEtcdctl() {
	if etcdctlDir != "" {
		_ = os.RemoveAll(etcdctlDir)
	}
}

// ctlResult is what one etcdctl run printed and how it exited.
type ctlResult struct {
	args   []string
	stdout string
	stderr string
	code   int
}

func (r ctlResult) String() string {
	return fmt.Sprintf("etcdctl %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

// runEtcdctl runs etcdctl with --endpoints and a command timeout (the
// process itself is killed a few seconds after that), and returns what it
// printed and its exit code. Only a failure to run it at all fails the test.
func runEtcdctl(t testing.TB, endpoints []string, timeout time.Duration, args ...string) ctlResult {
	t.Helper()
	full := append([]string{
		"--endpoints", strings.Join(endpoints, ","),
		"--dial-timeout", "3s",
		"--command-timeout", timeout.String(),
	}, args...)
	c, cancel := context.WithTimeout(context.Background(), timeout+10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(c, etcdctlBinary(t), full...)
	// Nothing from the environment (ETCDCTL_*) may change what it does.
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.TempDir()}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := ctlResult{args: args, stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case c.Err() != nil:
		t.Fatalf("etcdctl %s did not finish within %v", strings.Join(args, " "), timeout+10*time.Second)
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("run etcdctl %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// mustEtcdctl is runEtcdctl that fails the test unless etcdctl exits 0.
func mustEtcdctl(t testing.TB, endpoints []string, args ...string) ctlResult {
	t.Helper()
	r := runEtcdctl(t, endpoints, 10*time.Second, args...)
	if r.code != 0 {
		t.Fatalf("%v", r)
	}
	return r
}

// memberAddOutput is what `etcdctl member add` printed: the new member's
// ID and its settings as etcd's environment variables.
type memberAddOutput struct {
	id      uint64
	learner bool
	env     map[string]string // ETCD_NAME, ETCD_INITIAL_CLUSTER, ...
}

// parseMemberAdd reads `etcdctl member add`'s output (harness.ParseMemberAdd),
// which must give every setting a new member needs.
func parseMemberAdd(out string) (memberAddOutput, error) {
	a, err := harness.ParseMemberAdd(out)
	if err != nil {
		return memberAddOutput{}, err
	}
	for _, k := range []string{"ETCD_NAME", "ETCD_INITIAL_CLUSTER", "ETCD_INITIAL_ADVERTISE_PEER_URLS", "ETCD_INITIAL_CLUSTER_STATE"} {
		if _, ok := a.Env[k]; !ok {
			return memberAddOutput{}, fmt.Errorf("no %s in %q", k, out)
		}
	}
	return memberAddOutput{id: a.ID, learner: a.Learner, env: a.Env}, nil
}

// ctlMember is one row of `etcdctl member list` (simple format: ID,
// status, name, peer URLs, client URLs, is learner).
type ctlMember struct {
	id         uint64
	started    bool
	name       string
	peerURLs   string
	clientURLs string
	learner    bool
}

func parseMemberList(out string) ([]ctlMember, error) {
	list, err := harness.ParseMemberList(out)
	if err != nil {
		return nil, err
	}
	ms := make([]ctlMember, len(list))
	for i, m := range list {
		ms[i] = ctlMember{id: m.ID, started: m.Started, name: m.Name, peerURLs: m.PeerURLs, clientURLs: m.ClientURLs, learner: m.Learner}
	}
	return ms, nil
}

func hexID(id uint64) string { return strconv.FormatUint(id, 16) }
