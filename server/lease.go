package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/cairnkv/cairn/api/cairnpb"
	pb "github.com/cairnkv/cairn/api/etcdserverpb"
	"github.com/cairnkv/cairn/mvcc/lease"
)

// leaseService is etcd's Lease service. Grants, revokes and checkpoints go
// through raft; keep-alives and time-to-live are answered by the leader,
// whose clock alone decides expiry (a follower forwards them over the peer
// port); the list of leases is local.
type leaseService struct {
	pb.UnimplementedLeaseServer
	s *Server
}

func (l *leaseService) LeaseGrant(ctx context.Context, r *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	if r.GetTTL() > lease.MaxLeaseTTL {
		return nil, errLeaseTTLTooBig
	}
	req := proto.Clone(r).(*pb.LeaseGrantRequest)
	if req.ID == 0 {
		// Chosen here, before proposing, so every member grants the same ID.
		req.ID = newLeaseID()
	}
	return proposeFor[*pb.LeaseGrantResponse](ctx, l.s, &cairnpb.Request{Request: &cairnpb.Request_LeaseGrant{LeaseGrant: req}})
}

// newLeaseID picks a random positive lease ID.
func newLeaseID() int64 {
	var b [8]byte
	for {
		_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
		if id := int64(binary.BigEndian.Uint64(b[:]) >> 1); id != 0 {
			return id
		}
	}
}

func (l *leaseService) LeaseRevoke(ctx context.Context, r *pb.LeaseRevokeRequest) (*pb.LeaseRevokeResponse, error) {
	return proposeFor[*pb.LeaseRevokeResponse](ctx, l.s, &cairnpb.Request{Request: &cairnpb.Request_LeaseRevoke{LeaseRevoke: r}})
}

func (l *leaseService) LeaseKeepAlive(stream pb.Lease_LeaseKeepAliveServer) error {
	ctx := stream.Context()
	reqs := make(chan *pb.LeaseKeepAliveRequest)
	recvErr := make(chan error, 1)
	go func() { // ends when the stream does, at the latest when this handler returns
		for {
			req, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case reqs <- req:
			case <-ctx.Done():
				recvErr <- ctx.Err()
				return
			}
		}
	}()
	for {
		var req *pb.LeaseKeepAliveRequest
		select {
		case req = <-reqs:
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case <-l.s.stopc:
			return errStopped
		}
		ttl, err := l.s.renewLease(ctx, req.GetID())
		if errors.Is(err, lease.ErrLeaseNotFound) {
			ttl, err = 0, nil // etcd answers a keep-alive for a missing lease with TTL 0
		}
		if err != nil {
			return toWire(err)
		}
		resp := &pb.LeaseKeepAliveResponse{Header: l.s.header(l.s.store.Rev()), ID: req.GetID(), TTL: ttl}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

func (l *leaseService) LeaseTimeToLive(ctx context.Context, r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	resp, err := l.s.leaseTimeToLive(ctx, r)
	if errors.Is(err, lease.ErrLeaseNotFound) {
		return &pb.LeaseTimeToLiveResponse{Header: l.s.header(l.s.store.Rev()), ID: r.GetID(), TTL: -1}, nil
	}
	if err != nil {
		return nil, toWire(err)
	}
	resp.Header = l.s.header(l.s.store.Rev())
	return resp, nil
}

func (l *leaseService) LeaseLeases(ctx context.Context, _ *pb.LeaseLeasesRequest) (*pb.LeaseLeasesResponse, error) {
	ids := l.s.lessor.Leases()
	out := &pb.LeaseLeasesResponse{Header: l.s.header(l.s.store.Rev()), Leases: make([]*pb.LeaseStatus, len(ids))}
	for i, id := range ids {
		out.Leases[i] = &pb.LeaseStatus{ID: id}
	}
	return out, nil
}

// renewLease renews on the leader: locally if this member is primary,
// otherwise through the leader's peer port.
func (s *Server) renewLease(ctx context.Context, id int64) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, s.reqTimeout)
	defer cancel()
	for {
		if s.lessor.Primary() {
			ttl, err := s.lessor.Renew(ctx, id)
			if !errors.Is(err, lease.ErrNotPrimary) {
				return ttl, s.leaseCtxErr(ctx, err)
			}
		} else {
			var resp pb.LeaseKeepAliveResponse
			err := s.forwardToLeader(ctx, peerPathRenew, &pb.LeaseKeepAliveRequest{ID: id}, &resp)
			if !errors.Is(err, errForwardRetry) {
				return resp.GetTTL(), err
			}
		}
		// Leadership is moving: wait for it to settle, then retry.
		if err := s.awaitLeader(ctx); err != nil {
			return 0, err
		}
	}
}

func (s *Server) leaseTimeToLive(ctx context.Context, r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, s.reqTimeout)
	defer cancel()
	for {
		if s.lessor.Primary() {
			st, err := s.lessor.TimeToLive(r.GetID(), r.GetKeys())
			if err != nil {
				return nil, err
			}
			return &pb.LeaseTimeToLiveResponse{ID: st.ID, TTL: st.TTL, GrantedTTL: st.GrantedTTL, Keys: st.Keys}, nil
		}
		var resp pb.LeaseTimeToLiveResponse
		err := s.forwardToLeader(ctx, peerPathTimeToLive, r, &resp)
		if !errors.Is(err, errForwardRetry) {
			return &resp, err
		}
		if err := s.awaitLeader(ctx); err != nil {
			return nil, err
		}
	}
}

func (s *Server) leaseCtxErr(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)) {
		return ctxError(ctx, err)
	}
	return err
}

// Peer endpoints for lease calls forwarded to the leader. Bodies are the
// marshaled request and response messages.
const (
	peerPathRenew      = "/cairn/lease/renew"
	peerPathTimeToLive = "/cairn/lease/timetolive"
	headerClusterID    = "X-Cairn-Cluster-Id"
	headerFrom         = "X-Cairn-From"
	maxForwardBody     = 4 << 20
)

// errForwardRetry means the member asked is not (or no longer) the leader.
var errForwardRetry = errors.New("lease call reached a member that is not the leader")

// forwardToLeader posts req to the leader's peer endpoint and decodes its
// answer into resp.
func (s *Server) forwardToLeader(ctx context.Context, path string, req, resp proto.Message) error {
	code, data, err := s.postToLeader(ctx, path, req)
	if err != nil {
		return err
	}
	switch code {
	case http.StatusOK:
		if err := proto.Unmarshal(data, resp); err != nil {
			return fmt.Errorf("forward %s: decode answer: %w", path, err)
		}
		return nil
	case http.StatusNotFound:
		return lease.ErrLeaseNotFound
	case http.StatusConflict:
		return errForwardRetry
	}
	return status.Errorf(codes.Unavailable, "etcdserver: leader answered %d: %s", code, bytes.TrimSpace(data))
}

// registerPeerHandlers adds the leader's side of forwarded lease calls.
func (s *Server) registerPeerHandlers(mux *http.ServeMux) {
	mux.HandleFunc(peerPathRenew, func(w http.ResponseWriter, r *http.Request) {
		var req pb.LeaseKeepAliveRequest
		if !s.readPeerRequest(w, r, &req) {
			return
		}
		ttl, err := s.lessor.Renew(r.Context(), req.GetID())
		s.writePeerAnswer(w, &pb.LeaseKeepAliveResponse{ID: req.GetID(), TTL: ttl}, err)
	})
	mux.HandleFunc(peerPathTimeToLive, func(w http.ResponseWriter, r *http.Request) {
		var req pb.LeaseTimeToLiveRequest
		if !s.readPeerRequest(w, r, &req) {
			return
		}
		if !s.lessor.Primary() {
			s.writePeerAnswer(w, nil, lease.ErrNotPrimary)
			return
		}
		st, err := s.lessor.TimeToLive(req.GetID(), req.GetKeys())
		var resp *pb.LeaseTimeToLiveResponse
		if err == nil {
			resp = &pb.LeaseTimeToLiveResponse{ID: st.ID, TTL: st.TTL, GrantedTTL: st.GrantedTTL, Keys: st.Keys}
		}
		s.writePeerAnswer(w, resp, err)
	})
}

func (s *Server) readPeerRequest(w http.ResponseWriter, r *http.Request, req proto.Message) bool {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return false
	}
	if got := r.Header.Get(headerClusterID); got != formatID(s.clusterID) {
		s.log.Warn("peer lease call from another cluster rejected", "remote", r.RemoteAddr, "cluster", got)
		http.Error(w, "cluster ID mismatch", http.StatusPreconditionFailed)
		return false
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxForwardBody))
	if err == nil {
		err = proto.Unmarshal(body, req)
	}
	if err != nil {
		http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
		return false
	}
	return true
}

func (s *Server) writePeerAnswer(w http.ResponseWriter, resp proto.Message, err error) {
	switch {
	case errors.Is(err, lease.ErrLeaseNotFound):
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	case errors.Is(err, lease.ErrNotPrimary):
		http.Error(w, err.Error(), http.StatusConflict)
		return
	case err != nil:
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	body, err := proto.Marshal(resp)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(body)
}

// leaderDuties follows this member's leadership: on election it promotes the
// lease table (refreshing every expiry), on losing it demotes it; while
// leader it proposes a revoke for each expired lease and the checkpoints
// due, and promotes learners that caught up (--auto-promote-learners).
func (s *Server) leaderDuties() {
	defer s.wg.Done()
	leadTick := time.NewTicker(s.cfg.HeartbeatInterval)
	defer leadTick.Stop()
	expiryTick := time.NewTicker(lease.PollInterval)
	defer expiryTick.Stop()
	promoteTick := time.NewTicker(s.cfg.ElectionTimeout / 2)
	defer promoteTick.Stop()
	leader := false
	for {
		select {
		case <-s.stopc:
			if leader {
				s.lessor.Demote()
			}
			return
		case <-leadTick.C:
			switch now := s.node.Status().IsLeader; {
			case now && !leader:
				s.lessor.Promote(s.cfg.ElectionTimeout)
				leader = true
			case !now && leader:
				s.lessor.Demote()
				leader = false
			}
		case <-expiryTick.C:
			if !leader {
				continue
			}
			for _, id := range s.lessor.Expired(0) {
				s.goPropose(&cairnpb.Request{Request: &cairnpb.Request_LeaseRevoke{LeaseRevoke: &pb.LeaseRevokeRequest{ID: id}}})
			}
			if cps := s.lessor.CheckpointsDue(1000); len(cps) > 0 {
				s.goPropose(checkpointRequest(cps))
			}
		case <-promoteTick.C:
			if leader && s.cfg.AutoPromoteLearners && s.promoting.CompareAndSwap(false, true) {
				s.wg.Add(1)
				go func() {
					defer s.wg.Done()
					defer s.promoting.Store(false)
					ctx, cancel := context.WithTimeout(s.ctx, s.reqTimeout)
					defer cancel()
					s.autoPromote(ctx)
				}()
			}
		}
	}
}

// goPropose proposes in the background; the lease table re-reports what
// did not take effect.
func (s *Server) goPropose(req *cairnpb.Request) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if _, err := s.propose(s.ctx, req); err != nil && s.ctx.Err() == nil {
			s.log.Debug("background proposal failed", "err", err)
		}
	}()
}

func checkpointRequest(cps []lease.Checkpoint) *cairnpb.Request {
	req := &pb.LeaseCheckpointRequest{Checkpoints: make([]*pb.LeaseCheckpoint, len(cps))}
	for i, c := range cps {
		req.Checkpoints[i] = &pb.LeaseCheckpoint{ID: c.ID, Remaining_TTL: c.RemainingTTL}
	}
	return &cairnpb.Request{Request: &cairnpb.Request_LeaseCheckpoint{LeaseCheckpoint: req}}
}

// checkpoint is the lease table's Checkpointer: it proposes the checkpoints
// and returns once they are applied here.
func (s *Server) checkpoint(ctx context.Context, cps []lease.Checkpoint) error {
	_, err := s.propose(ctx, checkpointRequest(cps))
	return err
}
