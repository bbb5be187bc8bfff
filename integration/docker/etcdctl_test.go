package docker

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cairnkv/cairn/integration/harness"
)

// Membership changes go through etcdctl, as an operator would make them:
// Debian's etcd-client (etcd 3.4), API v3, against the members' published
// client ports on 127.0.0.1.

// findEtcdctl is the etcdctl that CAIRN_ETCDCTL names, else the one on
// PATH.
func findEtcdctl() (string, error) {
	name := "etcdctl"
	if e := os.Getenv("CAIRN_ETCDCTL"); e != "" {
		name = e
	}
	return exec.LookPath(name)
}

// runEtcdctl runs etcdctl against the client ports of ms (none: no
// --endpoints) with a command timeout; the error carries the command line
// and the output. The caller's ETCDCTL_* variables are dropped, so only
// the flags given here count.
func (c *cluster) runEtcdctl(ms []*member, timeout time.Duration, args ...string) (string, error) {
	var full []string
	if len(ms) > 0 {
		eps := make([]string, len(ms))
		for i, m := range ms {
			eps[i] = m.addr
		}
		full = append(full, "--endpoints="+strings.Join(eps, ","))
	}
	full = append(full, "--dial-timeout=2s", "--command-timeout="+timeout.String())
	full = append(full, args...)
	ctx, cancel := context.WithTimeout(c.ctx, timeout+5*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.etcdctl, full...)
	cmd.Env = append(slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "ETCDCTL_") }), "ETCDCTL_API=3")
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("etcdctl %s: %w: %s", strings.Join(full, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// etcdctlVersion is etcdctl's path and version, for the log.
func (c *cluster) etcdctlVersion() string {
	out, err := c.runEtcdctl(nil, 5*time.Second, "version")
	if err != nil {
		c.t.Fatal(err)
	}
	v, _, _ := strings.Cut(strings.TrimSpace(out), "\n")
	return c.etcdctl + ": " + v
}

// memberAdded is what `etcdctl member add` printed:
//
//	Member 5dc6e1c1ccd6d5b2 added to cluster 9c4b6f7bbf3c6f0e
//
//	ETCD_NAME="cairn4"
//	ETCD_INITIAL_CLUSTER="cairn1=http://cairn1-peer:2380,...,cairn4=http://cairn4-peer:2380"
//	ETCD_INITIAL_ADVERTISE_PEER_URLS="http://cairn4-peer:2380"
//	ETCD_INITIAL_CLUSTER_STATE="existing"
type memberAdded struct {
	id             uint64
	name           string
	initialCluster string
	state          string
}

// parseMemberAdd reads `etcdctl member add`'s output (harness.ParseMemberAdd).
func parseMemberAdd(out string) (memberAdded, error) {
	a, err := harness.ParseMemberAdd(out)
	if err != nil {
		return memberAdded{}, err
	}
	return memberAdded{id: a.ID, name: a.Env["ETCD_NAME"], initialCluster: a.Env["ETCD_INITIAL_CLUSTER"], state: a.Env["ETCD_INITIAL_CLUSTER_STATE"]}, nil
}

// listedMember is one line of `etcdctl member list` (its simple format):
//
//	5dc6e1c1ccd6d5b2, started, cairn4, http://cairn4-peer:2380, http://cairn4:2379, false
type listedMember struct {
	id       uint64
	started  bool
	name     string
	peerURLs string
	learner  bool
}

func (m listedMember) String() string {
	s := fmt.Sprintf("%x=%s(%s)", m.id, m.name, m.peerURLs)
	if !m.started {
		s += " unstarted"
	}
	if m.learner {
		s += " learner"
	}
	return s
}

func parseMemberList(out string) ([]listedMember, error) {
	list, err := harness.ParseMemberList(out)
	if err != nil {
		return nil, err
	}
	ms := make([]listedMember, len(list))
	for i, m := range list {
		ms[i] = listedMember{id: m.ID, started: m.Started, name: m.Name, peerURLs: m.PeerURLs, learner: m.Learner}
	}
	return ms, nil
}

// memberList is `etcdctl member list` through cairn1..3.
func (c *cluster) memberList() ([]listedMember, error) {
	out, err := c.runEtcdctl(c.members, 5*time.Second, "member", "list")
	if err != nil {
		return nil, err
	}
	return parseMemberList(out)
}

// unappliedChange reports whether etcdctl's output is a refusal of a
// membership change that left the membership as it was, so that trying
// again cannot apply it twice: --strict-reconfig-check's refusals, which
// the leader makes before it proposes anything. (Others, such as a
// timeout, may come after the change was proposed: not retried.)
func unappliedChange(out string) bool {
	for _, s := range []string{
		"etcdserver: unhealthy cluster",
		"etcdserver: re-configuration failed due to not enough started members",
	} {
		if strings.Contains(out, s) {
			return true
		}
	}
	return false
}

// TestParseEtcdctl checks the parsers on etcdctl 3.4's output; it needs no
// Docker.
func TestParseEtcdctl(t *testing.T) {
	add := "Member 9c7e419887a19db5 added to cluster 66b1881c476e9ceb\n\n" +
		"ETCD_NAME=\"cairn4\"\n" +
		"ETCD_INITIAL_CLUSTER=\"cairn2=http://cairn2-peer:2380,cairn4=http://cairn4-peer:2380,cairn1=http://cairn1-peer:2380\"\n" +
		"ETCD_INITIAL_ADVERTISE_PEER_URLS=\"http://cairn4-peer:2380\"\n" +
		"ETCD_INITIAL_CLUSTER_STATE=\"existing\"\n"
	a, err := parseMemberAdd(add)
	if err != nil {
		t.Fatal(err)
	}
	want := memberAdded{id: 0x9c7e419887a19db5, name: "cairn4", state: "existing",
		initialCluster: "cairn2=http://cairn2-peer:2380,cairn4=http://cairn4-peer:2380,cairn1=http://cairn1-peer:2380"}
	if a != want {
		t.Errorf("parseMemberAdd = %+v, want %+v", a, want)
	}
	// An ID below 1<<60 is padded with spaces.
	padded := "Member  1fa6be501cf9b70 added to cluster  f7b85d881bb42f3\n\nETCD_NAME=\"cairn5\"\nETCD_INITIAL_CLUSTER=\"cairn5=http://cairn5-peer:2380\"\n"
	if a, err := parseMemberAdd(padded); err != nil || a.id != 0x1fa6be501cf9b70 {
		t.Errorf("parseMemberAdd(padded) = %+v, %v; want ID 1fa6be501cf9b70", a, err)
	}
	if _, err := parseMemberAdd("Error: etcdserver: unhealthy cluster\n"); err == nil {
		t.Error("parseMemberAdd accepted an error message")
	}

	list := "c14002d01409c34, started, cairn2, http://cairn2-peer:2380, http://cairn2:2379, false\n" +
		"9c7e419887a19db5, unstarted, , http://cairn4-peer:2380, , false\n"
	ms, err := parseMemberList(list)
	if err != nil {
		t.Fatal(err)
	}
	wantList := []listedMember{
		{id: 0xc14002d01409c34, started: true, name: "cairn2", peerURLs: "http://cairn2-peer:2380"},
		{id: 0x9c7e419887a19db5, peerURLs: "http://cairn4-peer:2380"},
	}
	if !slices.Equal(ms, wantList) {
		t.Errorf("parseMemberList = %v, want %v", ms, wantList)
	}
	if _, err := parseMemberList("{\"header\":{}}\n"); err == nil {
		t.Error("parseMemberList accepted JSON")
	}
}
