package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/cairnkv/cairn/api/cairnpb"
	pb "github.com/cairnkv/cairn/api/etcdserverpb"
	"github.com/cairnkv/cairn/raftnode"
)

// Membership changes.
//
// Every change runs on the leader: a follower forwards MemberAdd, Remove,
// Update and Promote to it over the peer port (leaderOnly). The leader
// serializes them (memberOps), checks them against the membership it has
// applied and, with --strict-reconfig-check, against the health of the
// cluster, then proposes one raft conf change and waits until it is
// applied. When the change commits, every member checks it once more
// against raft's own membership at that point of the log (checkConfChange,
// deterministic, so a change racing another one is refused the same way
// everywhere) and the applier records it in the members buckets.
//
// Removing the leader first hands leadership to another voter, and the new
// leader proposes the removal: the cluster never waits out an election
// timeout for it. A graceful stop of the leader does the same.

// Errors of membership changes, with etcd's codes and messages.
var (
	errMemberExist      = status.Error(codes.FailedPrecondition, "etcdserver: member ID already exist")
	errPeerURLExist     = status.Error(codes.FailedPrecondition, "etcdserver: Peer URLs already exists")
	errNotEnoughStarted = status.Error(codes.FailedPrecondition, "etcdserver: re-configuration failed due to not enough started members")
	errMemberBadURLs    = status.Error(codes.InvalidArgument, "etcdserver: given member URLs are invalid")
	errMemberNotLearner = status.Error(codes.FailedPrecondition, "etcdserver: can only promote a learner member")
	errLearnerNotReady  = status.Error(codes.FailedPrecondition, "etcdserver: can only promote a learner member which is in sync with leader")
	errTooManyLearners  = status.Error(codes.FailedPrecondition, "etcdserver: too many learner members in cluster")
	errUnhealthy        = status.Error(codes.Unavailable, "etcdserver: unhealthy cluster")
	errLearnerRPC       = status.Error(codes.FailedPrecondition, "etcdserver: rpc not supported for learner")
	// etcd sends this one with code Unknown: it has no gRPC mapping there.
	errLeaderTransferTimeout = status.Error(codes.Unknown, "etcdserver: request timed out, leader transfer took too long")
)

// learnerReadyFraction is how much of the leader's log a learner must hold
// before it may be promoted (etcd's threshold).
const learnerReadyFraction = 0.9

// Peer paths of the membership calls a follower forwards to the leader.
const (
	peerPathMemberAdd     = "/cairn/member/add"
	peerPathMemberRemove  = "/cairn/member/remove"
	peerPathMemberUpdate  = "/cairn/member/update"
	peerPathMemberPromote = "/cairn/member/promote"
	peerPathMembers       = "/cairn/members"
)

// clusterService is etcd's Cluster service.
type clusterService struct {
	pb.UnimplementedClusterServer
	s *Server
}

func (c *clusterService) MemberList(ctx context.Context, r *pb.MemberListRequest) (*pb.MemberListResponse, error) {
	if r.GetLinearizable() {
		if err := c.s.linearizableRead(ctx); err != nil {
			return nil, err
		}
	}
	return &pb.MemberListResponse{Header: c.s.header(c.s.store.Rev()), Members: c.s.members.list()}, nil
}

func (c *clusterService) MemberAdd(ctx context.Context, r *pb.MemberAddRequest) (*pb.MemberAddResponse, error) {
	if err := checkPeerURLs(r.GetPeerURLs()); err != nil {
		return nil, errMemberBadURLs
	}
	return leaderOnly(ctx, c.s, peerPathMemberAdd, r, func() *pb.MemberAddResponse { return &pb.MemberAddResponse{} }, c.s.addMember)
}

func (c *clusterService) MemberRemove(ctx context.Context, r *pb.MemberRemoveRequest) (*pb.MemberRemoveResponse, error) {
	return leaderOnly(ctx, c.s, peerPathMemberRemove, r, func() *pb.MemberRemoveResponse { return &pb.MemberRemoveResponse{} }, c.s.removeMember)
}

func (c *clusterService) MemberUpdate(ctx context.Context, r *pb.MemberUpdateRequest) (*pb.MemberUpdateResponse, error) {
	if err := checkPeerURLs(r.GetPeerURLs()); err != nil {
		return nil, errMemberBadURLs
	}
	return leaderOnly(ctx, c.s, peerPathMemberUpdate, r, func() *pb.MemberUpdateResponse { return &pb.MemberUpdateResponse{} }, c.s.updateMember)
}

func (c *clusterService) MemberPromote(ctx context.Context, r *pb.MemberPromoteRequest) (*pb.MemberPromoteResponse, error) {
	return leaderOnly(ctx, c.s, peerPathMemberPromote, r, func() *pb.MemberPromoteResponse { return &pb.MemberPromoteResponse{} }, c.s.promoteMember)
}

// registerMemberHandlers serves the leader's side of forwarded membership
// calls, and the member list a joining member asks for.
func (s *Server) registerMemberHandlers(mux *http.ServeMux) {
	handleLeaderCall(s, mux, peerPathMemberAdd, func() *pb.MemberAddRequest { return &pb.MemberAddRequest{} }, s.addMember)
	handleLeaderCall(s, mux, peerPathMemberRemove, func() *pb.MemberRemoveRequest { return &pb.MemberRemoveRequest{} }, s.removeMember)
	handleLeaderCall(s, mux, peerPathMemberUpdate, func() *pb.MemberUpdateRequest { return &pb.MemberUpdateRequest{} }, s.updateMember)
	handleLeaderCall(s, mux, peerPathMemberPromote, func() *pb.MemberPromoteRequest { return &pb.MemberPromoteRequest{} }, s.promoteMember)
	mux.HandleFunc("GET "+peerPathMembers, func(w http.ResponseWriter, r *http.Request) {
		// A linearizable read: a member that has not applied the
		// `member add` the operator just saw succeed must not send the
		// new member away.
		if err := s.linearizableRead(r.Context()); err != nil {
			http.Error(w, "cannot confirm the membership: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		body, err := proto.Marshal(&pb.MemberListResponse{Header: s.header(s.store.Rev()), Members: s.members.list()})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(body)
	})
}

// checkPeerURLs accepts what --initial-advertise-peer-urls accepts.
func checkPeerURLs(urls []string) error {
	if len(urls) == 0 {
		return errors.New("no peer URLs")
	}
	for _, u := range urls {
		if err := checkURL(u); err != nil {
			return err
		}
	}
	return nil
}

// memberHealth is the leader's view of the voters, for the strict checks.
type memberHealth struct {
	voters  []uint64
	learner map[uint64]bool
	started map[uint64]bool // published its attributes
	active  map[uint64]bool // heard from within an election timeout
	match   map[uint64]uint64
}

func (s *Server) memberHealth(ctx context.Context) (memberHealth, error) {
	prog, err := s.node.Progress(ctx)
	if err != nil {
		return memberHealth{}, s.raftError(ctx, err)
	}
	if prog == nil {
		return memberHealth{}, errForwardRetry
	}
	h := memberHealth{learner: map[uint64]bool{}, started: map[uint64]bool{}, active: map[uint64]bool{}, match: map[uint64]uint64{}}
	for id, p := range prog {
		h.match[id] = p.Match
		h.active[id] = p.RecentActive
		if p.Learner {
			h.learner[id] = true
		} else {
			h.voters = append(h.voters, id)
		}
	}
	for _, m := range s.members.list() {
		h.started[m.GetID()] = m.GetName() != ""
	}
	slices.Sort(h.voters)
	return h, nil
}

func quorum(n int) int { return n/2 + 1 }

// count returns how many voters other than except satisfy f.
func (h memberHealth) count(except uint64, f map[uint64]bool) int {
	n := 0
	for _, id := range h.voters {
		if id != except && f[id] {
			n++
		}
	}
	return n
}

// proposeMemberChange proposes cc on this member (the leader) and waits for
// it to apply. A change refused because another is still being applied is
// retried; ErrNotLeader becomes errForwardRetry.
func (s *Server) proposeMemberChange(ctx context.Context, cc raftnode.ConfChange) ([]*pb.Member, error) {
	for {
		v, err := s.node.ProposeConfChange(ctx, cc)
		switch {
		case err == nil:
			res := v.(applyResult)
			if res.err != nil {
				return nil, toWire(res.err)
			}
			return s.members.list(), nil
		case errors.Is(err, raftnode.ErrNotLeader):
			return nil, errForwardRetry
		case errors.Is(err, raftnode.ErrProposalDropped):
			select {
			case <-time.After(s.cfg.HeartbeatInterval):
				continue
			case <-ctx.Done():
				return nil, s.raftError(ctx, ctx.Err())
			case <-s.stopc:
				return nil, errStopped
			}
		}
		return nil, s.raftError(ctx, err)
	}
}

func memberChangeContext(promote bool) []byte {
	if !promote {
		return nil
	}
	b, err := proto.Marshal(&cairnpb.MemberChange{Promote: true})
	if err != nil {
		panic(fmt.Sprintf("marshal member change: %v", err)) // a plain bool
	}
	return b
}

func (s *Server) addMember(ctx context.Context, r *pb.MemberAddRequest) (*pb.MemberAddResponse, error) {
	s.memberOps.Lock()
	defer s.memberOps.Unlock()
	urls := r.GetPeerURLs()
	for _, u := range urls {
		if s.members.peerURLOwner(u, 0) != 0 {
			return nil, errPeerURLExist
		}
	}
	h, err := s.memberHealth(ctx)
	if err != nil {
		return nil, err
	}
	if r.GetIsLearner() {
		if len(h.learner) >= s.cfg.MaxLearners {
			return nil, errTooManyLearners
		}
	} else if s.cfg.StrictReconfigCheck {
		// The new voter counts in the quorum but is neither started nor
		// connected yet. A lone member may add a second one, or it could
		// never grow.
		n := len(h.voters) + 1
		if started := h.count(0, h.started); started < quorum(n) && !(len(h.voters) == 1 && started == 1) {
			return nil, errNotEnoughStarted
		}
		if active := h.count(0, h.active); active < quorum(n) && len(h.voters) > 1 {
			return nil, errUnhealthy
		}
	}
	id := newMemberID(urls, time.Now())
	if s.members.getRaw(id) != nil || s.members.isRemoved(id) {
		return nil, errMemberExist
	}
	typ := raftpb.ConfChangeAddNode
	if r.GetIsLearner() {
		typ = raftpb.ConfChangeAddLearnerNode
	}
	members, err := s.proposeMemberChange(ctx, raftnode.ConfChange{Type: typ, NodeID: id, PeerURLs: urls})
	if err != nil {
		return nil, err
	}
	s.log.Info("member added", "id", formatID(id), "peer-urls", urls, "learner", r.GetIsLearner())
	return &pb.MemberAddResponse{
		Header:  s.header(s.store.Rev()),
		Member:  &pb.Member{ID: id, PeerURLs: slices.Clone(urls), IsLearner: r.GetIsLearner()},
		Members: members,
	}, nil
}

func (s *Server) removeMember(ctx context.Context, r *pb.MemberRemoveRequest) (*pb.MemberRemoveResponse, error) {
	s.memberOps.Lock()
	defer s.memberOps.Unlock()
	id := r.GetID()
	if s.members.getRaw(id) == nil {
		return nil, errMemberNotFound
	}
	h, err := s.memberHealth(ctx)
	if err != nil {
		return nil, err
	}
	if s.cfg.StrictReconfigCheck && !h.learner[id] {
		n := len(h.voters) - 1
		if h.count(id, h.started) < quorum(n) {
			return nil, errNotEnoughStarted // also: the last voter
		}
		// A member that is down is safe to remove; otherwise the rest must
		// still make a quorum of connected voters.
		if h.active[id] && h.count(id, h.active) < quorum(n) {
			return nil, errUnhealthy
		}
	} else if !h.learner[id] && len(h.voters) == 1 {
		return nil, errNotEnoughStarted // raft cannot remove its last voter
	}
	if id == s.id {
		// Hand leadership over first; the new leader proposes the removal.
		if err := s.transferLeadership(ctx, h, id); err != nil {
			return nil, err
		}
		return nil, errForwardRetry
	}
	members, err := s.proposeMemberChange(ctx, raftnode.ConfChange{Type: raftpb.ConfChangeRemoveNode, NodeID: id})
	if err != nil {
		return nil, err
	}
	s.log.Info("member removed", "id", formatID(id))
	return &pb.MemberRemoveResponse{Header: s.header(s.store.Rev()), Members: members}, nil
}

func (s *Server) updateMember(ctx context.Context, r *pb.MemberUpdateRequest) (*pb.MemberUpdateResponse, error) {
	s.memberOps.Lock()
	defer s.memberOps.Unlock()
	id := r.GetID()
	if s.members.getRaw(id) == nil {
		return nil, errMemberNotFound
	}
	for _, u := range r.GetPeerURLs() {
		if s.members.peerURLOwner(u, id) != 0 {
			return nil, errPeerURLExist
		}
	}
	members, err := s.proposeMemberChange(ctx, raftnode.ConfChange{Type: raftpb.ConfChangeUpdateNode, NodeID: id, PeerURLs: r.GetPeerURLs()})
	if err != nil {
		return nil, err
	}
	s.log.Info("member updated", "id", formatID(id), "peer-urls", r.GetPeerURLs())
	return &pb.MemberUpdateResponse{Header: s.header(s.store.Rev()), Members: members}, nil
}

func (s *Server) promoteMember(ctx context.Context, r *pb.MemberPromoteRequest) (*pb.MemberPromoteResponse, error) {
	s.memberOps.Lock()
	defer s.memberOps.Unlock()
	id := r.GetID()
	m := s.members.getRaw(id)
	if m == nil {
		return nil, errMemberNotFound
	}
	if !m.GetIsLearner() {
		return nil, errMemberNotLearner
	}
	h, err := s.memberHealth(ctx)
	if err != nil {
		return nil, err
	}
	if !learnerReady(h, id, s.id) {
		return nil, errLearnerNotReady
	}
	if s.cfg.StrictReconfigCheck {
		// The learner counts, as started, toward the larger quorum.
		if h.count(0, h.started)+1 < quorum(len(h.voters)+1) {
			return nil, errNotEnoughStarted
		}
	}
	members, err := s.proposeMemberChange(ctx, raftnode.ConfChange{Type: raftpb.ConfChangeAddNode, NodeID: id, Context: memberChangeContext(true)})
	if err != nil {
		return nil, err
	}
	s.log.Info("learner promoted", "id", formatID(id))
	return &pb.MemberPromoteResponse{Header: s.header(s.store.Rev()), Members: members}, nil
}

// learnerReady reports whether the learner holds enough of the leader's log.
func learnerReady(h memberHealth, learner, leader uint64) bool {
	lead := h.match[leader]
	return lead > 0 && float64(h.match[learner]) >= learnerReadyFraction*float64(lead)
}

// transferLeadership hands leadership from this member to the voter most
// caught up among those recently heard from (not except), and waits until
// it leads.
func (s *Server) transferLeadership(ctx context.Context, h memberHealth, except uint64) error {
	var to uint64
	for _, id := range h.voters {
		if id == s.id || id == except || !h.active[id] {
			continue
		}
		if to == 0 || h.match[id] > h.match[to] {
			to = id
		}
	}
	if to == 0 {
		return errUnhealthy
	}
	return s.moveLeader(ctx, to)
}

// moveLeader transfers leadership to transferee within a few election
// timeouts (raft gives up after one, so it is asked again).
func (s *Server) moveLeader(ctx context.Context, transferee uint64) error {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, 3*s.cfg.ElectionTimeout)
	defer cancel()
	if err := s.node.TransferLeadership(ctx, transferee); err != nil {
		if ctx.Err() != nil {
			return errLeaderTransferTimeout
		}
		return s.raftError(ctx, err)
	}
	s.log.Info("leadership transferred", "to", formatID(transferee), "took", time.Since(start))
	return nil
}

// MoveLeader hands leadership to the given voter. As in etcd, only the
// leader takes the request (etcdctl move-leader finds it).
func (m *maintenanceService) MoveLeader(ctx context.Context, r *pb.MoveLeaderRequest) (*pb.MoveLeaderResponse, error) {
	s := m.s
	if !s.node.Status().IsLeader {
		return nil, errNotLeader
	}
	target := s.members.getRaw(r.GetTargetID())
	if target == nil || target.GetIsLearner() {
		return nil, errBadTransferee
	}
	if r.GetTargetID() != s.id {
		if err := s.moveLeader(ctx, r.GetTargetID()); err != nil {
			return nil, err
		}
	}
	return &pb.MoveLeaderResponse{Header: s.header(s.store.Rev())}, nil
}

// handOverLeadership is the graceful stop's first step: a leader of a
// cluster with other voters transfers leadership, so the cluster does not
// wait out an election timeout for its absence.
func (s *Server) handOverLeadership(ctx context.Context) {
	if !s.node.Status().IsLeader {
		return
	}
	h, err := s.memberHealth(ctx)
	if err != nil || len(h.voters) < 2 {
		return
	}
	if err := s.transferLeadership(ctx, h, 0); err != nil {
		s.log.Warn("could not hand over leadership before stopping", "err", err)
	}
}

// autoPromote promotes every learner that has caught up (leader only, with
// --auto-promote-learners).
func (s *Server) autoPromote(ctx context.Context) {
	var learners []uint64
	for _, m := range s.members.list() {
		if m.GetIsLearner() {
			learners = append(learners, m.GetID())
		}
	}
	if len(learners) == 0 {
		return
	}
	h, err := s.memberHealth(ctx)
	if err != nil {
		return
	}
	for _, id := range learners {
		if !learnerReady(h, id, s.id) || !h.active[id] {
			continue
		}
		if _, err := s.promoteMember(ctx, &pb.MemberPromoteRequest{ID: id}); err != nil {
			s.log.Debug("automatic promotion failed", "id", formatID(id), "err", err)
		}
	}
}

// checkConfChange is raftnode's Config.CheckConfChange: it refuses, at
// apply time and identically on every member, a committed change that
// raced another one, judged only on raft's membership just before it.
func checkConfChange(cs *raftpb.ConfState, cc raftnode.ConfChange) error {
	voter := slices.Contains(cs.GetVoters(), cc.NodeID)
	learner := slices.Contains(cs.GetLearners(), cc.NodeID)
	var change cairnpb.MemberChange
	if err := proto.Unmarshal(cc.Context, &change); err != nil {
		return fmt.Errorf("decode membership change: %w", err)
	}
	switch cc.Type {
	case raftpb.ConfChangeAddNode:
		switch {
		case change.GetPromote() && voter:
			return errMemberNotLearner
		case change.GetPromote() && !learner:
			return errMemberNotFound
		case !change.GetPromote() && (voter || learner):
			return errMemberExist
		}
	case raftpb.ConfChangeAddLearnerNode:
		if voter || learner {
			return errMemberExist
		}
	case raftpb.ConfChangeRemoveNode, raftpb.ConfChangeUpdateNode:
		if !voter && !learner {
			return errMemberNotFound
		}
	}
	return nil
}

// applyConfChange records a committed membership change (applier).
func (a *applier) applyConfChange(cc raftnode.ConfChange) {
	switch cc.Type {
	case raftpb.ConfChangeAddNode:
		var change cairnpb.MemberChange
		_ = proto.Unmarshal(cc.Context, &change) // checkConfChange decoded it already
		if change.GetPromote() {
			a.members.promote(cc.NodeID)
		} else {
			a.members.add(cc.NodeID, cc.PeerURLs, false)
		}
	case raftpb.ConfChangeAddLearnerNode:
		a.members.add(cc.NodeID, cc.PeerURLs, true)
	case raftpb.ConfChangeRemoveNode:
		a.members.remove(cc.NodeID)
	case raftpb.ConfChangeUpdateNode:
		a.members.updatePeerURLs(cc.NodeID, cc.PeerURLs)
	}
}

// learnerAllowed says which calls a learner serves (as etcd): Status, a
// serializable Range, and the Snapshot stream.
func learnerAllowed(req any) bool {
	switch r := req.(type) {
	case *pb.StatusRequest:
		return true
	case *pb.RangeRequest:
		return r.GetSerializable()
	}
	return false
}
