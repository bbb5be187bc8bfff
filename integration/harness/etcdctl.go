package harness

import (
	"fmt"
	"strconv"
	"strings"
)

// Parsers for what etcdctl (3.4 to 3.7) prints about membership, for the
// tests that drive cairn with etcd's own tool.

// EtcdctlMember is one line of `etcdctl member list` in its simple format:
//
//	5dc6e1c1ccd6d5b2, started, m4, http://127.0.0.1:42380, http://127.0.0.1:42379, false
type EtcdctlMember struct {
	ID         uint64
	Started    bool
	Name       string
	PeerURLs   string
	ClientURLs string
	Learner    bool
}

// ParseMemberList reads the output of `etcdctl member list`.
func ParseMemberList(out string) ([]EtcdctlMember, error) {
	var ms []EtcdctlMember
	for line := range strings.Lines(out) {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		f := strings.Split(line, ", ")
		if len(f) != 6 {
			return nil, fmt.Errorf("member list line %q: %d fields, want 6 (ID, status, name, peer URLs, client URLs, learner)", line, len(f))
		}
		id, err := strconv.ParseUint(f[0], 16, 64)
		if err != nil {
			return nil, fmt.Errorf("member list line %q: ID: %w", line, err)
		}
		if f[1] != "started" && f[1] != "unstarted" {
			return nil, fmt.Errorf("member list line %q: status %q", line, f[1])
		}
		learner, err := strconv.ParseBool(f[5])
		if err != nil {
			return nil, fmt.Errorf("member list line %q: learner: %w", line, err)
		}
		ms = append(ms, EtcdctlMember{ID: id, Started: f[1] == "started", Name: f[2], PeerURLs: f[3], ClientURLs: f[4], Learner: learner})
	}
	return ms, nil
}

// EtcdctlAdded is what `etcdctl member add` printed: the new member's ID
// and its settings as etcd's environment variables (ETCD_NAME,
// ETCD_INITIAL_CLUSTER, ...).
type EtcdctlAdded struct {
	ID      uint64
	Learner bool
	Env     map[string]string
}

// ParseMemberAdd reads
//
//	Member 8e9e05c52164694d added to cluster cdf818194e3a8c32
//
//	ETCD_NAME="m4"
//	ETCD_INITIAL_CLUSTER="m1=http://...,m4=http://..."
//	ETCD_INITIAL_ADVERTISE_PEER_URLS="http://..."
//	ETCD_INITIAL_CLUSTER_STATE="existing"
//
// (etcdctl pads IDs with spaces to 16 characters). It needs the first line
// and ETCD_INITIAL_CLUSTER; any other line is an error.
func ParseMemberAdd(out string) (EtcdctlAdded, error) {
	res := EtcdctlAdded{Env: map[string]string{}}
	for line := range strings.Lines(out) {
		line = strings.TrimSpace(line)
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
			res.ID = id
			res.Learner = strings.Contains(line, " added as learner to cluster ")
		case strings.HasPrefix(line, "ETCD_"):
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				return res, fmt.Errorf("unexpected line %q", line)
			}
			uq, err := strconv.Unquote(v) // etcdctl prints them with %q
			if err != nil {
				return res, fmt.Errorf("value in %q: %w", line, err)
			}
			res.Env[k] = uq
		default:
			return res, fmt.Errorf("unexpected line %q", line)
		}
	}
	if res.ID == 0 {
		return res, fmt.Errorf("no \"Member <ID> added\" line in %q", out)
	}
	if _, ok := res.Env["ETCD_INITIAL_CLUSTER"]; !ok {
		return res, fmt.Errorf("no ETCD_INITIAL_CLUSTER in %q", out)
	}
	return res, nil
}
