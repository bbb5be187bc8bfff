package server

import (
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cairnkv/cairn/wal"
)

// Config is a member's configuration. Field names follow etcd's flags; see
// cmd/cairn for the flag names and defaults.
type Config struct {
	Name    string
	DataDir string

	ListenClientURLs    []string
	AdvertiseClientURLs []string
	ListenPeerURLs      []string
	// InitialAdvertisePeerURLs are this member's peer URLs as the others
	// reach them.
	InitialAdvertisePeerURLs []string
	// InitialCluster maps member names to their peer URLs, in the form
	// "name=url,name=url" (a name may appear several times).
	InitialCluster      string
	InitialClusterState string // "new" or "existing"
	InitialClusterToken string

	SnapshotCount     uint64
	HeartbeatInterval time.Duration
	ElectionTimeout   time.Duration

	// StrictReconfigCheck refuses membership changes that would leave the
	// cluster without a quorum of started, connected voters.
	StrictReconfigCheck bool
	// AutoPromoteLearners makes the leader promote a learner once it has
	// caught up (etcd only promotes on request).
	AutoPromoteLearners bool
	// MaxLearners bounds the learners in the cluster.
	MaxLearners int

	QuotaBackendBytes int64
	MaxRequestBytes   int
	MaxTxnOps         int

	LogLevel string
	// EnablePprof serves Go's profiler under /debug/pprof/ on the client port.
	EnablePprof bool
}

// Defaults matching etcd's flags.
const (
	DefaultName                = "default"
	DefaultInitialClusterToken = "etcd-cluster"
	DefaultSnapshotCount       = 10_000
	DefaultHeartbeatInterval   = 100 * time.Millisecond
	DefaultElectionTimeout     = 1000 * time.Millisecond
	DefaultQuotaBackendBytes   = 2 << 30
	MaxQuotaBackendBytes       = 8 << 30
	DefaultMaxRequestBytes     = 1572864
	DefaultMaxTxnOps           = 128
	DefaultMaxLearners         = 1
	DefaultClientURL           = "http://127.0.0.1:2379"
	DefaultPeerURL             = "http://127.0.0.1:2380"
)

// NewConfig returns a Config with every default set, for a single member
// named "default" on 127.0.0.1.
func NewConfig() Config {
	return Config{
		Name:                     DefaultName,
		DataDir:                  DefaultName + ".cairn",
		ListenClientURLs:         []string{DefaultClientURL},
		AdvertiseClientURLs:      []string{DefaultClientURL},
		ListenPeerURLs:           []string{DefaultPeerURL},
		InitialAdvertisePeerURLs: []string{DefaultPeerURL},
		InitialClusterState:      "new",
		InitialClusterToken:      DefaultInitialClusterToken,
		SnapshotCount:            DefaultSnapshotCount,
		HeartbeatInterval:        DefaultHeartbeatInterval,
		ElectionTimeout:          DefaultElectionTimeout,
		MaxRequestBytes:          DefaultMaxRequestBytes,
		MaxTxnOps:                DefaultMaxTxnOps,
		StrictReconfigCheck:      true,
		AutoPromoteLearners:      true,
		MaxLearners:              DefaultMaxLearners,
		LogLevel:                 "info",
	}
}

// clusterMember is one entry of the initial cluster.
type clusterMember struct {
	Name     string
	PeerURLs []string
}

// initialMembers parses InitialCluster; an empty one means just this
// member at its advertised peer URLs.
func (c *Config) initialMembers() ([]clusterMember, error) {
	if strings.TrimSpace(c.InitialCluster) == "" {
		return []clusterMember{{Name: c.Name, PeerURLs: slices.Clone(c.InitialAdvertisePeerURLs)}}, nil
	}
	var members []clusterMember
	byName := map[string]int{}
	for _, part := range strings.Split(c.InitialCluster, ",") {
		name, u, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || name == "" || u == "" {
			return nil, fmt.Errorf("--initial-cluster: %q is not name=url", part)
		}
		if err := checkURL(u); err != nil {
			return nil, fmt.Errorf("--initial-cluster: member %s: %w", name, err)
		}
		if i, seen := byName[name]; seen {
			members[i].PeerURLs = append(members[i].PeerURLs, u)
			continue
		}
		byName[name] = len(members)
		members = append(members, clusterMember{Name: name, PeerURLs: []string{u}})
	}
	return members, nil
}

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("bad URL %q: %w", s, err)
	}
	if u.Scheme != "http" {
		return fmt.Errorf("URL %q: only http:// is supported", s)
	}
	if u.Host == "" || u.Port() == "" {
		return fmt.Errorf("URL %q: needs host:port", s)
	}
	if u.Path != "" && u.Path != "/" {
		return fmt.Errorf("URL %q: must not have a path", s)
	}
	return nil
}

// Validate checks the configuration as a whole. Errors name the flag.
func (c *Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Name == "" {
		add("--name must not be empty")
	}
	if c.DataDir == "" {
		add("--data-dir must not be empty")
	}
	for flag, urls := range map[string][]string{
		"--listen-client-urls":          c.ListenClientURLs,
		"--advertise-client-urls":       c.AdvertiseClientURLs,
		"--listen-peer-urls":            c.ListenPeerURLs,
		"--initial-advertise-peer-urls": c.InitialAdvertisePeerURLs,
	} {
		if len(urls) == 0 {
			add("%s must not be empty", flag)
		}
		for _, u := range urls {
			if err := checkURL(u); err != nil {
				add("%s: %w", flag, err)
			}
		}
	}
	if c.InitialClusterState != "new" && c.InitialClusterState != "existing" {
		add("--initial-cluster-state must be new or existing, not %q", c.InitialClusterState)
	}
	if c.InitialClusterToken == "" {
		add("--initial-cluster-token must not be empty")
	}
	if c.HeartbeatInterval <= 0 {
		add("--heartbeat-interval must be positive")
	}
	if c.ElectionTimeout < 5*c.HeartbeatInterval {
		add("--election-timeout (%v) must be at least 5 times --heartbeat-interval (%v)", c.ElectionTimeout, c.HeartbeatInterval)
	}
	if c.ElectionTimeout > 50*time.Second {
		add("--election-timeout (%v) must be at most 50s", c.ElectionTimeout)
	}
	if c.SnapshotCount == 0 {
		add("--snapshot-count must be positive")
	}
	if c.QuotaBackendBytes < 0 || c.QuotaBackendBytes > MaxQuotaBackendBytes {
		add("--quota-backend-bytes must be between 0 (default %d) and %d", DefaultQuotaBackendBytes, MaxQuotaBackendBytes)
	}
	if c.MaxRequestBytes <= 0 {
		add("--max-request-bytes must be positive")
	}
	if c.MaxTxnOps <= 0 {
		add("--max-txn-ops must be positive")
	}
	if c.MaxLearners <= 0 {
		add("--max-learners must be positive")
	}
	if _, err := parseLogLevel(c.LogLevel); err != nil {
		add("--log-level: %w", err)
	}
	members, err := c.initialMembers()
	switch {
	case err != nil:
		errs = append(errs, err)
	case wal.Exists(filepath.Join(c.DataDir, "member", "wal")):
		// A member with a log is who its log says: as in etcd, the
		// initial cluster no longer matters (after a member update it is
		// out of date).
	default:
		self := slices.IndexFunc(members, func(m clusterMember) bool { return m.Name == c.Name })
		switch {
		case self < 0:
			add("--initial-cluster has no member named %q (--name)", c.Name)
		case !sameURLs(members[self].PeerURLs, c.InitialAdvertisePeerURLs):
			add("--initial-cluster gives %s the peer URLs %v, but --initial-advertise-peer-urls says %v",
				c.Name, members[self].PeerURLs, c.InitialAdvertisePeerURLs)
		}
	}
	return errors.Join(errs...)
}

func sameURLs(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
