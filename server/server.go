package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"

	"github.com/cairnkv/cairn/api/cairnpb"
	pb "github.com/cairnkv/cairn/api/etcdserverpb"
	"github.com/cairnkv/cairn/mvcc"
	"github.com/cairnkv/cairn/mvcc/backend"
	"github.com/cairnkv/cairn/mvcc/lease"
	"github.com/cairnkv/cairn/mvcc/watch"
	"github.com/cairnkv/cairn/raftnode"
)

// Version is cairn's own version; APIVersion is the etcd API version cairn
// reports to clients (in Status and /version), which they use to pick
// features.
const (
	Version    = "0.1.0"
	APIVersion = "3.7.0"
)

// grpcOverheadBytes is how far the gRPC receive limit sits above
// --max-request-bytes, so that a request just over the limit reaches the
// server and gets etcd's "request is too large" rather than a transport error.
const grpcOverheadBytes = 512 * 1024

// Server is one running cairn member.
type Server struct {
	cfg        Config
	log        *slog.Logger
	id         uint64
	clusterID  uint64
	reqTimeout time.Duration
	quota      int64

	be      *backend.Backend
	store   *mvcc.Store
	lessor  *lease.Lessor
	hub     *watch.Hub
	members *memberTable
	node    *raftnode.Node
	metrics *metrics

	grpc        *grpc.Server
	clientMuxes []*protoMux
	clientHTTP  []*http.Server
	peerHTTP    []*http.Server
	gatewayConn interface{ Close() error }

	peerClient *http.Client
	hooks      *testHooks // nil unless CAIRN_TEST_HOOKS=1

	memberOps   sync.Mutex  // one membership change at a time (on the leader)
	promoting   atomic.Bool // an automatic promotion is running
	removedFile string      // written once this member learns it was removed

	// ctx ends when Stop begins; background work derives from it.
	ctx      context.Context
	cancel   context.CancelFunc
	stopc    chan struct{}
	failc    chan struct{}
	wg       sync.WaitGroup
	stopOnce sync.Once
	failOnce sync.Once
	errMu    sync.Mutex
	err      error
}

// Start opens the member's data dir, joins or bootstraps the cluster and
// serves clients and peers. Nothing is left running if it fails.
func Start(cfg Config, log *slog.Logger) (s *Server, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s = &Server{
		cfg:        cfg,
		log:        log,
		reqTimeout: 5*time.Second + 2*cfg.ElectionTimeout,
		quota:      cfg.QuotaBackendBytes,
		stopc:      make(chan struct{}),
		failc:      make(chan struct{}),
		peerClient: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16, IdleConnTimeout: time.Minute}},
		hooks:      newTestHooks(),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if s.quota == 0 {
		s.quota = DefaultQuotaBackendBytes
	}

	// Undo whatever was started if a later step fails.
	var cleanup []func() error
	defer func() {
		if err == nil {
			return
		}
		for i := len(cleanup) - 1; i >= 0; i-- {
			if cerr := cleanup[i](); cerr != nil {
				s.log.Warn("cleanup after a failed start", "err", cerr)
			}
		}
		s = nil
	}()

	// Listen first: a port in use must fail before any data is touched.
	peerLns, err := listenAll(cfg.ListenPeerURLs)
	if err != nil {
		return nil, fmt.Errorf("--listen-peer-urls: %w", err)
	}
	cleanup = append(cleanup, closeAll(peerLns))
	clientLns, err := listenAll(cfg.ListenClientURLs)
	if err != nil {
		return nil, fmt.Errorf("--listen-client-urls: %w", err)
	}
	cleanup = append(cleanup, closeAll(clientLns))

	memberDir := filepath.Join(cfg.DataDir, "member")
	if err := prepareDataDir(cfg.DataDir, memberDir); err != nil {
		return nil, err
	}
	s.removedFile = filepath.Join(memberDir, removedFileName)
	ident, err := s.identify(memberDir)
	if err != nil {
		return nil, err
	}
	s.id, s.clusterID = ident.id, ident.clusterID
	s.log = log.With("member", fmt.Sprintf("%x", s.id))

	s.metrics = newMetrics()
	s.be, err = backend.Open(filepath.Join(memberDir, "snap", "db"), backend.Options{
		OnCommit: s.metrics.observeCommit,
		// Nothing buffered can reach the file after a failed commit: stop
		// the member rather than serve writes that only the WAL holds.
		OnFailure: func(err error) { s.fail(fmt.Errorf("backend: %w", err)) },
	})
	if err != nil {
		return nil, fmt.Errorf("open backend in %s: %w", cfg.DataDir, err)
	}
	cleanup = append(cleanup, s.be.Close)
	if err := s.openKeyspace(); err != nil {
		return nil, err
	}
	cleanup = append(cleanup, s.closeKeyspace)
	if s.members, err = newMemberTable(s.be, ident.seeds); err != nil {
		return nil, err
	}
	if s.members.isRemoved(s.id) {
		return nil, removedError(s.id, cfg.DataDir)
	}
	peers := ident.bootstrap
	if peers == nil {
		for _, m := range s.members.list() {
			peers = append(peers, raftnode.Peer{ID: m.GetID(), URLs: m.GetPeerURLs()})
		}
	}

	electionTicks := int(cfg.ElectionTimeout / cfg.HeartbeatInterval)
	var beforeSync func()
	if s.hooks != nil {
		beforeSync = s.hooks.beforeSync
	}
	s.node, err = raftnode.Start(raftnode.Config{
		ID:              s.id,
		ClusterID:       s.clusterID,
		Peers:           peers,
		Join:            ident.join,
		Removed:         s.members.removedIDs(),
		CheckConfChange: checkConfChange,
		Dir:             memberDir,
		StateMachine:    &applier{store: s.store, lessor: s.lessor, members: s.members, log: s.log},
		TickInterval:    cfg.HeartbeatInterval,
		ElectionTicks:   electionTicks,
		SnapshotCount:   cfg.SnapshotCount,
		// A proposal's envelope may exceed the request a little.
		MaxProposalBytes: cfg.MaxRequestBytes + 1024,
		WALAfterSync:     s.metrics.observeFsync,
		WALBeforeSync:    beforeSync,
		Logger:           log, // raftnode tags its lines with the member ID itself
	})
	if err != nil {
		return nil, err
	}
	cleanup = append(cleanup, s.node.Stop)

	// Peers.
	peerMux := http.NewServeMux()
	peerMux.Handle("/raft/", s.node.Handler())
	s.registerPeerHandlers(peerMux)
	s.registerMemberHandlers(peerMux)
	s.registerTestHooks(peerMux)
	for _, ln := range peerLns {
		srv := &http.Server{Handler: peerMux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slogErrorLog(s.log, "peer http")}
		s.peerHTTP = append(s.peerHTTP, srv)
		s.serve("peer", func() error { return srv.Serve(ln) })
	}

	// Clients: gRPC and HTTP on each client listener.
	s.grpc = grpc.NewServer(
		grpc.MaxRecvMsgSize(cfg.MaxRequestBytes+grpcOverheadBytes),
		grpc.MaxSendMsgSize(math.MaxInt32),
		grpc.MaxConcurrentStreams(math.MaxUint32),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 2 * time.Hour, Timeout: 20 * time.Second}),
		grpc.ChainUnaryInterceptor(s.unaryInterceptor),
		grpc.ChainStreamInterceptor(s.streamInterceptor),
	)
	s.registerServices(s.grpc)
	httpHandler, gwConn, err := s.httpHandler(clientLns[0].Addr().String())
	if err != nil {
		return nil, err
	}
	s.gatewayConn = gwConn
	for _, ln := range clientLns {
		mux := newProtoMux(ln, s.log)
		s.clientMuxes = append(s.clientMuxes, mux)
		srv := &http.Server{Handler: httpHandler, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slogErrorLog(s.log, "client http")}
		s.clientHTTP = append(s.clientHTTP, srv)
		s.serve("client mux", func() error { mux.serve(); return nil })
		s.serve("grpc", func() error { return s.grpc.Serve(mux.grpc) })
		s.serve("client http", func() error { return srv.Serve(mux.http) })
	}

	s.wg.Add(2)
	go s.publish()
	go s.leaderDuties()
	go func() {
		// A fatal raft error stops the member; so does its removal.
		select {
		case <-s.node.Done():
			err := s.node.Err()
			if errors.Is(err, raftnode.ErrRemoved) {
				s.markRemoved(err)
				err = fmt.Errorf("%w: %w", ErrRemoved, err)
			}
			if err != nil {
				s.fail(err)
			}
		case <-s.stopc:
		}
	}()
	s.log.Info("cairn member serving", "name", cfg.Name, "cluster", fmt.Sprintf("%x", s.clusterID),
		"client-urls", cfg.ListenClientURLs, "peer-urls", cfg.ListenPeerURLs, "data-dir", cfg.DataDir)
	return s, nil
}

// openKeyspace builds the lease table, the watch hub and the keyspace over
// the backend, in the order their mutual references require.
func (s *Server) openKeyspace() error {
	minTTL := lease.MinTTL(int(s.cfg.ElectionTimeout/s.cfg.HeartbeatInterval), s.cfg.HeartbeatInterval)
	var err error
	s.lessor, err = lease.New(s.be, lease.Options{MinTTL: minTTL, Checkpointer: s.checkpoint})
	if err != nil {
		return fmt.Errorf("open lease table: %w", err)
	}
	s.hub = watch.NewHub(watch.Options{})
	s.store, err = mvcc.New(s.be, mvcc.Options{Observer: s.hub, Leases: s.lessor})
	if err != nil {
		s.hub.Close()
		return fmt.Errorf("open keyspace: %w", err)
	}
	s.lessor.SetDeleter(s.store)
	s.hub.Start(s.store)
	return nil
}

func (s *Server) closeKeyspace() error {
	s.hub.Close()
	return s.store.Close()
}

func prepareDataDir(dataDir, memberDir string) error {
	if fi, err := os.Stat(dataDir); err == nil && !fi.IsDir() {
		return fmt.Errorf("--data-dir %s is not a directory", dataDir)
	}
	if err := os.MkdirAll(filepath.Join(memberDir, "snap"), 0o700); err != nil {
		return fmt.Errorf("--data-dir %s: %w", dataDir, err)
	}
	probe, err := os.CreateTemp(memberDir, ".probe-*")
	if err != nil {
		return fmt.Errorf("--data-dir %s is not writable: %w", dataDir, err)
	}
	name := probe.Name()
	if err := errors.Join(probe.Close(), os.Remove(name)); err != nil {
		return fmt.Errorf("--data-dir %s: %w", dataDir, err)
	}
	return nil
}

func listenAll(urls []string) ([]net.Listener, error) {
	var lns []net.Listener
	for _, raw := range urls {
		u, err := url.Parse(raw)
		if err != nil {
			_ = closeAll(lns)()
			return nil, err
		}
		ln, err := net.Listen("tcp", u.Host)
		if err != nil {
			_ = closeAll(lns)()
			return nil, err
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

func closeAll(lns []net.Listener) func() error {
	return func() error {
		var errs []error
		for _, ln := range lns {
			if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}
}

// serve runs a server loop in a goroutine the Server owns; an unexpected
// end stops the member.
func (s *Server) serve(what string, fn func() error) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		err := fn()
		select {
		case <-s.stopc:
			return
		default:
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, grpc.ErrServerStopped) {
			s.fail(fmt.Errorf("%s server: %w", what, err))
		}
	}()
}

// publish announces this member's name and client URLs through the log, so
// MemberList everywhere shows them; it retries until it succeeds.
func (s *Server) publish() {
	defer s.wg.Done()
	req := &cairnpb.Request{Request: &cairnpb.Request_MemberAttributes{MemberAttributes: &cairnpb.MemberAttributes{
		Id: s.id, Name: s.cfg.Name, ClientUrls: s.cfg.AdvertiseClientURLs,
	}}}
	for {
		_, err := s.propose(s.ctx, req)
		if err == nil {
			s.log.Info("published member attributes", "name", s.cfg.Name, "client-urls", s.cfg.AdvertiseClientURLs)
			return
		}
		select {
		case <-s.stopc:
			return
		case <-time.After(s.cfg.HeartbeatInterval):
		}
	}
}

// Done is closed when the member fails on its own (see Err).
func (s *Server) Done() <-chan struct{} { return s.failc }

// Err reports why the member failed, or nil.
func (s *Server) Err() error {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	return s.err
}

func (s *Server) fail(err error) {
	s.errMu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.errMu.Unlock()
	s.log.Error("member failing", "err", err)
	s.failOnce.Do(func() { close(s.failc) })
}

// Stop shuts the member down gracefully: stop accepting clients, let
// in-flight requests finish (until ctx ends), stop raft, commit and close
// the keyspace.
func (s *Server) Stop(ctx context.Context) error {
	var errs []error
	s.stopOnce.Do(func() {
		// While everything still runs: a leader hands leadership over, so
		// the others need not wait out an election timeout for it.
		hctx, hcancel := context.WithTimeout(ctx, 3*s.cfg.ElectionTimeout)
		s.handOverLeadership(hctx)
		hcancel()
		s.cancel()
		close(s.stopc)
		for _, m := range s.clientMuxes {
			if err := m.close(); err != nil && !errors.Is(err, net.ErrClosed) {
				errs = append(errs, err)
			}
		}
		stopped := make(chan struct{})
		go func() {
			s.grpc.GracefulStop()
			close(stopped)
		}()
		select {
		case <-stopped:
		case <-ctx.Done():
			s.grpc.Stop()
			<-stopped
		}
		for _, srv := range s.clientHTTP {
			if err := srv.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("client http shutdown: %w", err))
			}
		}
		if err := s.gatewayConn.Close(); err != nil {
			errs = append(errs, fmt.Errorf("gateway connection: %w", err))
		}
		if err := s.node.Stop(); err != nil && !errors.Is(err, raftnode.ErrStopped) && !errors.Is(err, raftnode.ErrRemoved) {
			errs = append(errs, err)
		}
		for _, srv := range s.peerHTTP {
			if err := srv.Close(); err != nil {
				errs = append(errs, fmt.Errorf("peer http close: %w", err))
			}
		}
		s.wg.Wait()
		s.peerClient.CloseIdleConnections()
		if err := s.closeKeyspace(); err != nil {
			errs = append(errs, err)
		}
		if err := s.be.Close(); err != nil {
			errs = append(errs, err)
		}
		s.log.Info("cairn member stopped")
	})
	return errors.Join(errs...)
}

// header is a response header at revision rev.
func (s *Server) header(rev int64) *pb.ResponseHeader {
	return &pb.ResponseHeader{ClusterId: s.clusterID, MemberId: s.id, Revision: rev, RaftTerm: s.node.Term()}
}

// fillHeader adds the member's identity to a header the applier made.
func (s *Server) fillHeader(h *pb.ResponseHeader) {
	if h == nil {
		return
	}
	h.ClusterId, h.MemberId, h.RaftTerm = s.clusterID, s.id, s.node.Term()
}

// propose replicates req and waits for this member to apply it. A proposal
// raft drops (no leader yet) is retried until a leader appears or the
// request times out.
func (s *Server) propose(ctx context.Context, req *cairnpb.Request) (applyResult, error) {
	data, err := proto.Marshal(req)
	if err != nil {
		return applyResult{}, toWire(fmt.Errorf("marshal request: %w", err))
	}
	if len(data) > s.cfg.MaxRequestBytes {
		return applyResult{}, errRequestTooLarge
	}
	ctx, cancel := context.WithTimeout(ctx, s.reqTimeout)
	defer cancel()
	start := time.Now()
	for {
		v, err := s.node.Propose(ctx, data)
		if err == nil {
			s.metrics.proposalApplied(time.Since(start))
			res := v.(applyResult)
			return res, toWire(res.err)
		}
		if errors.Is(err, raftnode.ErrProposalDropped) {
			if werr := s.awaitLeader(ctx); werr != nil {
				s.metrics.proposalFailed()
				return applyResult{}, werr
			}
			continue
		}
		s.metrics.proposalFailed()
		return applyResult{}, s.raftError(ctx, err)
	}
}

// headered is a response with a header the applier started.
type headered interface {
	proto.Message
	GetHeader() *pb.ResponseHeader
}

// proposeFor proposes req and returns the applier's response as T, its
// header completed with the member's identity.
func proposeFor[T headered](ctx context.Context, s *Server, req *cairnpb.Request) (T, error) {
	res, err := s.propose(ctx, req)
	if err != nil {
		var zero T
		return zero, err
	}
	out := res.resp.(T)
	s.fillHeader(out.GetHeader())
	return out, nil
}

// awaitLeader returns once a leader is known and either it changed since
// the call or a heartbeat interval has passed. Callers retry what raft
// dropped while leadership moved: waking on the change itself makes the
// retry follow a leadership transfer within its own few milliseconds, not
// a heartbeat later.
func (s *Server) awaitLeader(ctx context.Context) error {
	changed := s.node.LeaderChanged()
	pause := time.NewTimer(s.cfg.HeartbeatInterval)
	defer pause.Stop()
	for {
		select {
		case <-changed:
			if s.node.Leader() != 0 {
				return nil
			}
			changed = s.node.LeaderChanged()
		case <-pause.C:
			if s.node.Leader() != 0 {
				return nil
			}
			pause.Reset(s.cfg.HeartbeatInterval)
		case <-ctx.Done():
			if s.node.Leader() == 0 {
				return errNoLeader
			}
			return ctxError(ctx, ctx.Err())
		case <-s.stopc:
			return errStopped
		}
	}
}

// raftError maps a raftnode error to etcd's wire error.
func (s *Server) raftError(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, raftnode.ErrLeaderChanged):
		return errLeaderChanged
	case errors.Is(err, raftnode.ErrStopped):
		return errStopped
	case errors.Is(err, raftnode.ErrTooLarge):
		return errRequestTooLarge
	case errors.Is(err, raftnode.ErrNoLeader):
		return errNoLeader
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
		if ctx.Err() != nil && s.node.Leader() == 0 {
			return errNoLeader
		}
		return ctxError(ctx, err)
	}
	return toWire(err)
}

// linearizableRead returns once a read of the local keyspace reflects every
// write committed before the call.
func (s *Server) linearizableRead(ctx context.Context) error {
	if s.hooks.skipReadIndex() {
		return nil // deliberately broken, for the chaos checker's self-test
	}
	ctx, cancel := context.WithTimeout(ctx, s.reqTimeout)
	defer cancel()
	if err := s.node.ReadIndex(ctx); err != nil {
		return s.raftError(ctx, err)
	}
	return nil
}

// checkQuota refuses writes once the backend is over its quota.
func (s *Server) checkQuota() error {
	if s.be.Size() > s.quota {
		return errNoSpace
	}
	return nil
}

// registerServices installs every etcd v3 service on g.
func (s *Server) registerServices(g *grpc.Server) {
	pb.RegisterKVServer(g, &kvService{s: s})
	pb.RegisterWatchServer(g, &watchService{s: s})
	pb.RegisterLeaseServer(g, &leaseService{s: s})
	pb.RegisterClusterServer(g, &clusterService{s: s})
	pb.RegisterMaintenanceServer(g, &maintenanceService{s: s})
	pb.RegisterAuthServer(g, &authService{})
}
