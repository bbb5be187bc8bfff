package raftnode

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/cairnkv/cairn/raftnode/transport"
)

// logSM is the trivial replicated state machine of these tests: it records
// every applied payload in order. Its state is durable only at Sync and
// Restore (a JSON file), like a backend that commits in batches; entries
// applied since the last Sync are replayed from the WAL after a restart.
type logSM struct {
	path string

	mu       sync.Mutex
	applied  uint64
	entries  []string
	confs    []string // membership changes applied in this process
	members  map[uint64][]string
	removed  []uint64
	restores int
	durable  uint64
}

type smImage struct {
	Applied uint64   `json:"applied"`
	Entries []string `json:"entries"`
	// Members maps member IDs to the peer URLs membership changes gave
	// them; Removed lists removed IDs (the state machine's PeerSource).
	Members map[uint64][]string `json:"members,omitempty"`
	Removed []uint64            `json:"removed,omitempty"`
}

func openLogSM(t testing.TB, path string) *logSM {
	t.Helper()
	sm := &logSM{path: path}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return sm
	}
	if err != nil {
		t.Fatalf("read state machine file: %v", err)
	}
	var img smImage
	if err := json.Unmarshal(b, &img); err != nil {
		t.Fatalf("decode state machine file %s: %v", path, err)
	}
	sm.applied, sm.entries, sm.durable = img.Applied, img.Entries, img.Applied
	sm.members, sm.removed = img.Members, img.Removed
	return sm
}

func (s *logSM) AppliedIndex() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.durable
}

func (s *logSM) Apply(index, term uint64, data []byte) any {
	s.mu.Lock()
	defer s.mu.Unlock()
	if index <= s.applied {
		panic(fmt.Sprintf("entry %d applied twice (state machine at %d)", index, s.applied))
	}
	s.applied = index
	s.entries = append(s.entries, string(data))
	return len(s.entries)
}

// ApplyConfChange records membership changes apart from the entries, so
// that tests about payloads need not account for the bootstrap changes.
func (s *logSM) ApplyConfChange(index, term uint64, cc ConfChange, rejected error) any {
	s.mu.Lock()
	defer s.mu.Unlock()
	if index <= s.applied {
		panic(fmt.Sprintf("entry %d applied twice (state machine at %d)", index, s.applied))
	}
	s.applied = index
	if rejected != nil {
		s.confs = append(s.confs, fmt.Sprintf("%d refused %s: %v", index, cc, rejected))
		return rejected
	}
	s.confs = append(s.confs, fmt.Sprintf("%d %s", index, cc))
	if s.members == nil {
		s.members = map[uint64][]string{}
	}
	switch cc.Type {
	case raftpb.ConfChangeRemoveNode:
		delete(s.members, cc.NodeID)
		s.removed = append(s.removed, cc.NodeID)
	default:
		if len(cc.PeerURLs) > 0 {
			s.members[cc.NodeID] = slices.Clone(cc.PeerURLs)
		}
	}
	return nil
}

// Peers makes logSM a PeerSource.
func (s *logSM) Peers() ([]Peer, []uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var peers []Peer
	for id, urls := range s.members {
		peers = append(peers, Peer{ID: id, URLs: slices.Clone(urls)})
	}
	return peers, slices.Clone(s.removed)
}

func (s *logSM) confLog() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.confs)
}

func (s *logSM) image() smImage {
	s.mu.Lock()
	defer s.mu.Unlock()
	members := make(map[uint64][]string, len(s.members))
	for id, urls := range s.members {
		members[id] = slices.Clone(urls)
	}
	return smImage{Applied: s.applied, Entries: slices.Clone(s.entries), Members: members, Removed: slices.Clone(s.removed)}
}

func (s *logSM) Sync() error {
	img := s.image()
	if err := s.persist(img); err != nil {
		return err
	}
	s.mu.Lock()
	s.durable = img.Applied
	s.mu.Unlock()
	return nil
}

func (s *logSM) persist(img smImage) error {
	b, err := json.Marshal(img)
	if err != nil {
		return err
	}
	return writeFileDurable(s.path, func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	})
}

func (s *logSM) WriteSnapshot(w io.Writer) error {
	return json.NewEncoder(w).Encode(s.image())
}

func (s *logSM) Restore(r io.Reader) error {
	var img smImage
	if err := json.NewDecoder(r).Decode(&img); err != nil {
		return fmt.Errorf("decode snapshot: %w", err)
	}
	if err := s.persist(img); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.applied, s.entries, s.durable = img.Applied, img.Entries, img.Applied
	s.members, s.removed = img.Members, img.Removed
	s.restores++
	return nil
}

func (s *logSM) snapshotOf() ([]string, uint64, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.entries), s.applied, s.restores
}

// member is one node of a test cluster with its own peer listener.
type member struct {
	id   uint64
	dir  string
	addr string
	srv  *http.Server
	node *Node
	sm   *logSM
	done chan struct{} // closed when srv.Serve returns
	join bool          // started with Config.Join: it joined a running cluster
	// peers, if set, replaces the cluster's peer list when the member
	// starts: what a member that was down while membership changed knows.
	peers []Peer
}

type cluster struct {
	t       *testing.T
	faults  *transport.Faults
	members []*member
	peers   []Peer
	tweak   func(*Config)
}

const (
	testTick      = 10 * time.Millisecond
	testElection  = 10 // ticks
	clusterID     = 0xc1
	waitDeadline  = 20 * time.Second
	electionDelay = testTick * testElection
)

// newCluster starts size members on loopback listeners. tweak, if not nil,
// adjusts each member's config before it starts.
func newCluster(t *testing.T, size int, tweak func(*Config)) *cluster {
	t.Helper()
	c := &cluster{t: t, faults: &transport.Faults{}, tweak: tweak}
	listeners := make([]net.Listener, size)
	for i := range size {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("listen: %v", err)
		}
		listeners[i] = ln
		id := uint64(i + 1)
		c.members = append(c.members, &member{id: id, dir: t.TempDir(), addr: ln.Addr().String()})
		c.peers = append(c.peers, Peer{ID: id, URLs: []string{"http://" + ln.Addr().String()}})
	}
	for i, m := range c.members {
		c.startMember(m, listeners[i])
	}
	t.Cleanup(c.stopAll)
	return c
}

func (c *cluster) startMember(m *member, ln net.Listener) {
	c.t.Helper()
	if ln == nil {
		var err error
		ln, err = net.Listen("tcp", m.addr)
		if err != nil {
			c.t.Fatalf("relisten on %s: %v", m.addr, err)
		}
	}
	m.sm = openLogSM(c.t, filepath.Join(m.dir, "sm.json"))
	cfg := Config{
		ID:                     m.id,
		ClusterID:              clusterID,
		Peers:                  c.peers,
		Dir:                    filepath.Join(m.dir, "member"),
		StateMachine:           m.sm,
		TickInterval:           testTick,
		ElectionTicks:          testElection,
		SnapshotCount:          1000,
		SnapshotCatchUpEntries: 100,
		WALSegmentSize:         1 << 20,
		Logger:                 slog.New(slog.NewTextHandler(io.Discard, nil)),
		Faults:                 c.faults,
		Join:                   m.join,
	}
	if testing.Verbose() {
		cfg.Logger = slog.Default()
	}
	if m.peers != nil {
		cfg.Peers = m.peers
	}
	if c.tweak != nil {
		c.tweak(&cfg)
	}
	n, err := Start(cfg)
	if err != nil {
		c.t.Fatalf("start member %d: %v", m.id, err)
	}
	m.node = n
	mux := http.NewServeMux()
	mux.Handle("/raft/", n.Handler())
	m.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	m.done = make(chan struct{})
	go func(srv *http.Server, done chan struct{}) {
		defer close(done)
		_ = srv.Serve(ln) // returns http.ErrServerClosed on Close
	}(m.srv, m.done)
}

// stopMember stops the member's node and listener, as a crash-free shutdown
// would; its data dir stays.
func (c *cluster) stopMember(m *member) {
	c.t.Helper()
	if m.node == nil {
		return
	}
	if err := m.srv.Close(); err != nil {
		c.t.Errorf("close peer server of %d: %v", m.id, err)
	}
	<-m.done
	if err := m.node.Stop(); err != nil && !errors.Is(err, ErrRemoved) {
		c.t.Errorf("stop member %d: %v", m.id, err)
	}
	m.node = nil
}

func (c *cluster) stopAll() {
	for _, m := range c.members {
		c.stopMember(m)
	}
}

func (c *cluster) member(id uint64) *member { return c.members[id-1] }

// newMember makes (without starting it) a member that will join the
// running cluster; its addition must be proposed before startMember. Every
// member's Peers include it from now on, for restarts.
func (c *cluster) newMember() *member {
	c.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		c.t.Fatalf("listen: %v", err)
	}
	m := &member{id: uint64(len(c.members) + 1), dir: c.t.TempDir(), addr: ln.Addr().String(), join: true}
	if err := ln.Close(); err != nil {
		c.t.Fatal(err)
	}
	c.members = append(c.members, m)
	c.peers = append(c.peers, Peer{ID: m.id, URLs: []string{"http://" + m.addr}})
	return m
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// leaderOf returns the leader that every running member in ids agrees on and
// that claims leadership itself, or 0.
func (c *cluster) leaderOf(ids []uint64) uint64 {
	var lead uint64
	for _, id := range ids {
		m := c.member(id)
		if m.node == nil {
			continue
		}
		st := m.node.Status()
		if st.Leader == 0 || (lead != 0 && st.Leader != lead) {
			return 0
		}
		lead = st.Leader
	}
	if lead == 0 || !slices.Contains(ids, lead) || c.member(lead).node == nil || !c.member(lead).node.Status().IsLeader {
		return 0
	}
	return lead
}

func (c *cluster) waitLeader(ids []uint64) uint64 {
	c.t.Helper()
	var lead uint64
	waitFor(c.t, waitDeadline, fmt.Sprintf("one leader among %v", ids), func() bool {
		lead = c.leaderOf(ids)
		return lead != 0
	})
	return lead
}

func (c *cluster) ids() []uint64 {
	ids := make([]uint64, len(c.members))
	for i, m := range c.members {
		ids[i] = m.id
	}
	return ids
}

// propose proposes through member id and retries while the outcome is a
// clean refusal (no leader yet); it fails the test otherwise.
func (c *cluster) propose(id uint64, data string) {
	c.t.Helper()
	deadline := time.Now().Add(waitDeadline)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := c.member(id).node.Propose(ctx, []byte(data))
		cancel()
		if err == nil {
			return
		}
		if !errors.Is(err, ErrProposalDropped) || time.Now().After(deadline) {
			c.t.Fatalf("propose %q on %d: %v", data, id, err)
		}
		time.Sleep(electionDelay / 2)
	}
}

// waitConverged waits until every running member in ids has applied the same
// entries, at least want of them, and returns them.
func (c *cluster) waitConverged(ids []uint64, want int) []string {
	c.t.Helper()
	var got []string
	waitFor(c.t, waitDeadline, fmt.Sprintf("members %v to apply the same %d+ entries", ids, want), func() bool {
		var first []string
		for i, id := range ids {
			ents, _, _ := c.member(id).sm.snapshotOf()
			if len(ents) < want {
				return false
			}
			if i == 0 {
				first = ents
			} else if !slices.Equal(first, ents) {
				return false
			}
		}
		got = first
		return true
	})
	return got
}

// counter is a source of unique payloads.
type counter struct{ n atomic.Int64 }

func (c *counter) next(prefix string) string { return fmt.Sprintf("%s-%d", prefix, c.n.Add(1)) }
