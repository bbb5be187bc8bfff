package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/cairnkv/cairn/api/cairnpb"
	pb "github.com/cairnkv/cairn/api/etcdserverpb"
	"github.com/cairnkv/cairn/raftnode"
	"github.com/cairnkv/cairn/wal"
)

// ErrRemoved is the cause a member stops with once it learns it was
// removed from the cluster (cmd/cairn exits 0 on it). The member then
// refuses to start again on the same data dir.
var ErrRemoved = errors.New("this member was removed from the cluster")

// removedFileName, in the member dir, records that the member was removed;
// its presence refuses a start. (The applied removal is also in the
// backend; the file covers a member that learned it from a peer.)
const removedFileName = "REMOVED"

// joinTimeout bounds how long a joining member looks for the cluster: it
// may be started at the same time as the `member add` that admits it.
const joinTimeout = 30 * time.Second

// identity is who this member is and how it starts.
type identity struct {
	id, clusterID uint64
	// join: the log is empty and must come from the cluster's leader.
	join bool
	// bootstrap is the initial cluster of a new log; nil otherwise.
	bootstrap []raftnode.Peer
	// seeds are members known before the log says so (see memberTable).
	seeds []*cairnpb.Member
}

// identify decides the member's identity, as etcd does: a member with a log
// is who the log says, whatever the flags; a new member of a new cluster
// derives every ID from --initial-cluster and the token; a new member of an
// existing cluster (--initial-cluster-state existing) asks the cluster's
// members for the ID that `member add` gave its peer URLs.
func (s *Server) identify(memberDir string) (identity, error) {
	cfg := &s.cfg
	switch b, err := os.ReadFile(s.removedFile); {
	case err == nil:
		return identity{}, fmt.Errorf("%w: %s (%s); to bring this machine back, add it again with `member add` and start it on an empty data dir",
			ErrRemoved, strings.TrimSpace(string(b)), s.removedFile)
	case !errors.Is(err, os.ErrNotExist):
		return identity{}, fmt.Errorf("read %s: %w", s.removedFile, err)
	}
	initial, err := cfg.initialMembers()
	if err != nil {
		return identity{}, err
	}
	walDir := filepath.Join(memberDir, "wal")
	if wal.Exists(walDir) {
		md, err := wal.ReadMetadata(walDir)
		if err != nil {
			return identity{}, fmt.Errorf("read the identity of %s: %w", cfg.DataDir, err)
		}
		ident := identity{id: md.MemberID, clusterID: md.ClusterID}
		if cfg.InitialClusterState == "existing" {
			// A joined member's IDs are not derived from its flags; if it
			// stopped before applying anything, the cluster tells it where
			// its peers are.
			ident.join = true
			if _, members, err := s.fetchCluster(initial, 2*time.Second); err == nil {
				ident.seeds = members
			}
		} else {
			ident.seeds = derivedMembers(initial, cfg.InitialClusterToken)
		}
		return ident, nil
	}
	if cfg.InitialClusterState == "existing" {
		return s.joinIdentity(initial)
	}
	ident := identity{seeds: derivedMembers(initial, cfg.InitialClusterToken)}
	ids := make([]uint64, 0, len(initial))
	for i, m := range initial {
		id := ident.seeds[i].GetId()
		ids = append(ids, id)
		ident.bootstrap = append(ident.bootstrap, raftnode.Peer{ID: id, URLs: m.PeerURLs})
		if m.Name == cfg.Name {
			ident.id = id
		}
	}
	ident.clusterID = clusterID(ids)
	return ident, nil
}

// derivedMembers are the initial cluster's members with their derived IDs,
// in the initial cluster's order. Names are left out: a member is started
// once it has published its own.
func derivedMembers(initial []clusterMember, token string) []*cairnpb.Member {
	out := make([]*cairnpb.Member, len(initial))
	for i, m := range initial {
		out[i] = &cairnpb.Member{Id: memberID(m.PeerURLs, token), PeerUrls: slices.Clone(m.PeerURLs)}
	}
	return out
}

// joinIdentity finds this member among the running cluster's members, which
// must be exactly those of --initial-cluster (as etcdctl member add prints
// it).
func (s *Server) joinIdentity(initial []clusterMember) (identity, error) {
	cfg := &s.cfg
	cid, members, err := s.fetchCluster(initial, joinTimeout)
	if err != nil {
		return identity{}, err
	}
	var self *cairnpb.Member
	for _, m := range members {
		if sameURLs(m.GetPeerUrls(), cfg.InitialAdvertisePeerURLs) {
			self = m
		}
	}
	if self == nil {
		return identity{}, fmt.Errorf("--initial-cluster-state existing: the cluster has no member with peer URLs %v; add it first (etcdctl member add %s --peer-urls=%s)",
			cfg.InitialAdvertisePeerURLs, cfg.Name, strings.Join(cfg.InitialAdvertisePeerURLs, ","))
	}
	if self.GetName() != "" {
		return identity{}, fmt.Errorf("--initial-cluster-state existing: member %x (%s) with peer URLs %v has started before and %s holds no log: its data is gone; remove it and add it again",
			self.GetId(), self.GetName(), self.GetPeerUrls(), cfg.DataDir)
	}
	if err := matchInitialCluster(initial, members); err != nil {
		return identity{}, err
	}
	return identity{id: self.GetId(), clusterID: cid, join: true, seeds: members}, nil
}

// matchInitialCluster checks that --initial-cluster names exactly the
// cluster's members, by peer URLs.
func matchInitialCluster(initial []clusterMember, members []*cairnpb.Member) error {
	if len(initial) != len(members) {
		return fmt.Errorf("--initial-cluster has %d members, the cluster %d (%s): use the --initial-cluster that member add printed",
			len(initial), len(members), describeMembers(members))
	}
	for _, m := range members {
		if !slices.ContainsFunc(initial, func(c clusterMember) bool { return sameURLs(c.PeerURLs, m.GetPeerUrls()) }) {
			return fmt.Errorf("--initial-cluster lacks the cluster's member %x at %v (cluster: %s)", m.GetId(), m.GetPeerUrls(), describeMembers(members))
		}
	}
	return nil
}

func describeMembers(members []*cairnpb.Member) string {
	parts := make([]string, len(members))
	for i, m := range members {
		parts[i] = fmt.Sprintf("%x=%s", m.GetId(), strings.Join(m.GetPeerUrls(), "|"))
	}
	return strings.Join(parts, ",")
}

// fetchCluster asks the members of the initial cluster other than this one
// for the cluster's ID and members, trying each in turn until one answers
// or patience runs out.
func (s *Server) fetchCluster(initial []clusterMember, patience time.Duration) (uint64, []*cairnpb.Member, error) {
	var urls []string
	for _, m := range initial {
		if !sameURLs(m.PeerURLs, s.cfg.InitialAdvertisePeerURLs) {
			urls = append(urls, m.PeerURLs...)
		}
	}
	if len(urls) == 0 {
		return 0, nil, errors.New("--initial-cluster-state existing: --initial-cluster names no other member to join")
	}
	deadline := time.Now().Add(patience)
	var lastErr error
	for {
		for _, u := range urls {
			cid, members, err := s.fetchMembers(u)
			if err == nil {
				return cid, members, nil
			}
			lastErr = err
		}
		if time.Now().After(deadline) {
			return 0, nil, fmt.Errorf("--initial-cluster-state existing: no member of the cluster answered at %v: %w", urls, lastErr)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (s *Server) fetchMembers(peerURL string) (uint64, []*cairnpb.Member, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(peerURL, "/")+peerPathMembers, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := s.peerClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxForwardBody))
	if err != nil {
		return 0, nil, fmt.Errorf("read members from %s: %w", peerURL, err)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, nil, fmt.Errorf("members from %s: %s", peerURL, resp.Status)
	}
	var list pb.MemberListResponse
	if err := proto.Unmarshal(body, &list); err != nil {
		return 0, nil, fmt.Errorf("decode members from %s: %w", peerURL, err)
	}
	var members []*cairnpb.Member
	for _, m := range list.GetMembers() {
		members = append(members, &cairnpb.Member{
			Id: m.GetID(), Name: m.GetName(), PeerUrls: m.GetPeerURLs(), ClientUrls: m.GetClientURLs(), IsLearner: m.GetIsLearner(),
		})
	}
	if list.GetHeader().GetClusterId() == 0 || len(members) == 0 {
		return 0, nil, fmt.Errorf("members from %s: empty answer", peerURL)
	}
	return list.GetHeader().GetClusterId(), members, nil
}

// markRemoved records durably that this member was removed, so it refuses
// to start on this data dir again.
func (s *Server) markRemoved(cause error) {
	s.log.Warn("the member has been permanently removed from the cluster; stopping", "err", cause)
	line := fmt.Sprintf("member %x was removed from cluster %x: %v\n", s.id, s.clusterID, cause)
	if err := writeFileSynced(s.removedFile, []byte(line)); err != nil {
		s.log.Error("cannot record the removal", "file", s.removedFile, "err", err)
	}
}

func removedError(id uint64, dataDir string) error {
	return fmt.Errorf("%w: member %x is recorded as removed in %s; to bring this machine back, add it again with `member add` and start it on an empty data dir",
		ErrRemoved, id, dataDir)
}

// writeFileSynced writes path whole and fsyncs it and its directory.
func writeFileSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close() // the write error is the one to report
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return fmt.Errorf("fsync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	if err := d.Sync(); err != nil {
		_ = d.Close()
		return fmt.Errorf("fsync %s: %w", filepath.Dir(path), err)
	}
	return d.Close()
}
