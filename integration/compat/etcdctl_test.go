package compat

import (
	"bufio"
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

// parseMemberAdd reads
//
//	Member 8e9e05c52164694d added to cluster cdf818194e3a8c32
//
//	ETCD_NAME="m4"
//	ETCD_INITIAL_CLUSTER="m1=http://...,m4=http://..."
//	ETCD_INITIAL_ADVERTISE_PEER_URLS="http://..."
//	ETCD_INITIAL_CLUSTER_STATE="existing"
func parseMemberAdd(out string) (memberAddOutput, error) {
	res := memberAddOutput{env: map[string]string{}}
	sc := bufio.NewScanner(strings.NewReader(out))
	sawHead := false
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "":
		case strings.HasPrefix(line, "Member "):
			f := strings.Fields(line)
			if len(f) < 4 || f[2] != "added" {
				return res, fmt.Errorf("unexpected line %q", line)
			}
			id, err := strconv.ParseUint(f[1], 16, 64)
			if err != nil {
				return res, fmt.Errorf("member ID in %q: %w", line, err)
			}
			res.id = id
			res.learner = strings.Contains(line, " added as learner to cluster ")
			sawHead = true
		case strings.HasPrefix(line, "ETCD_"):
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				return res, fmt.Errorf("unexpected line %q", line)
			}
			uq, err := strconv.Unquote(v)
			if err != nil {
				return res, fmt.Errorf("value in %q: %w", line, err)
			}
			res.env[k] = uq
		default:
			return res, fmt.Errorf("unexpected line %q", line)
		}
	}
	if !sawHead || res.id == 0 {
		return res, fmt.Errorf("no \"Member <id> added\" line in %q", out)
	}
	for _, k := range []string{"ETCD_NAME", "ETCD_INITIAL_CLUSTER", "ETCD_INITIAL_ADVERTISE_PEER_URLS", "ETCD_INITIAL_CLUSTER_STATE"} {
		if _, ok := res.env[k]; !ok {
			return res, fmt.Errorf("no %s in %q", k, out)
		}
	}
	return res, nil
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
	var ms []ctlMember
	for line := range strings.Lines(out) {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		f := strings.Split(line, ", ")
		if len(f) != 6 {
			return nil, fmt.Errorf("member list line %q: %d fields, want 6", line, len(f))
		}
		id, err := strconv.ParseUint(f[0], 16, 64)
		if err != nil {
			return nil, fmt.Errorf("member list line %q: %w", line, err)
		}
		if f[1] != "started" && f[1] != "unstarted" {
			return nil, fmt.Errorf("member list line %q: status %q", line, f[1])
		}
		if f[5] != "true" && f[5] != "false" {
			return nil, fmt.Errorf("member list line %q: is-learner %q", line, f[5])
		}
		ms = append(ms, ctlMember{id: id, started: f[1] == "started", name: f[2], peerURLs: f[3], clientURLs: f[4], learner: f[5] == "true"})
	}
	return ms, nil
}

func hexID(id uint64) string { return strconv.FormatUint(id, 16) }
