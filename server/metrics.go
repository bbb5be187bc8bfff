package server

import (
	"context"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// metrics are the member's Prometheus metrics, served on /metrics. Each
// Server has its own registry, so several members in one process (tests)
// do not collide.
type metrics struct {
	reg *prometheus.Registry

	requests        *prometheus.CounterVec
	proposalsOK     prometheus.Counter
	proposalsFailed prometheus.Counter
	proposalLatency prometheus.Histogram
	fsync           prometheus.Histogram
	commit          prometheus.Histogram
}

func newMetrics() *metrics {
	buckets := prometheus.ExponentialBuckets(0.0001, 2, 16) // 100µs .. ~3.3s
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "cairn", Name: "grpc_requests_total",
			Help: "gRPC requests handled, by method and status code.",
		}, []string{"method", "code"}),
		proposalsOK: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "cairn", Subsystem: "raft", Name: "proposals_applied_total",
			Help: "Proposals from this member that were committed and applied.",
		}),
		proposalsFailed: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "cairn", Subsystem: "raft", Name: "proposals_failed_total",
			Help: "Proposals from this member that failed or whose outcome is unknown.",
		}),
		proposalLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "cairn", Subsystem: "raft", Name: "proposal_duration_seconds",
			Help: "Time from proposing to applying on this member.", Buckets: buckets,
		}),
		fsync: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "cairn", Subsystem: "wal", Name: "fsync_duration_seconds",
			Help: "Latency of WAL fdatasync calls.", Buckets: buckets,
		}),
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "cairn", Subsystem: "backend", Name: "commit_duration_seconds",
			Help: "Latency of backend (bbolt) batch commits.", Buckets: buckets,
		}),
	}
	m.reg.MustRegister(m.requests, m.proposalsOK, m.proposalsFailed, m.proposalLatency, m.fsync, m.commit,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// registerGauges adds the metrics read from the member's state at scrape
// time.
func (m *metrics) registerGauges(s *Server) {
	gauge := func(subsystem, name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "cairn", Subsystem: subsystem, Name: name, Help: help}, f)
	}
	counter := func(subsystem, name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "cairn", Subsystem: subsystem, Name: name, Help: help}, f)
	}
	m.reg.MustRegister(
		gauge("raft", "has_leader", "1 if this member knows a leader.", func() float64 {
			return b2f(s.node.Status().Leader != 0)
		}),
		gauge("raft", "is_leader", "1 if this member is the leader.", func() float64 { return b2f(s.node.Status().IsLeader) }),
		counter("raft", "leader_changes_total", "Leader changes seen by this member.", func() float64 {
			return float64(s.node.Status().LeaderChanges)
		}),
		gauge("raft", "committed_index", "Raft commit index.", func() float64 { return float64(s.node.Status().CommitIndex) }),
		gauge("raft", "applied_index", "Raft applied index.", func() float64 { return float64(s.node.Status().AppliedIndex) }),
		gauge("raft", "proposals_pending", "Proposals from this member waiting to apply.", func() float64 {
			return float64(s.node.Status().ProposalsPending)
		}),
		gauge("mvcc", "db_size_bytes", "Backend file size.", func() float64 { return float64(s.store.Size()) }),
		gauge("mvcc", "db_size_in_use_bytes", "Backend file size in use.", func() float64 { return float64(s.store.SizeInUse()) }),
		gauge("mvcc", "revision", "Current keyspace revision.", func() float64 { return float64(s.store.Rev()) }),
		gauge("mvcc", "watchers", "Registered watchers.", func() float64 { return float64(s.hub.Watchers()) }),
		gauge("lease", "leases", "Granted leases.", func() float64 { return float64(len(s.lessor.Leases())) }),
	)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (m *metrics) observeFsync(d time.Duration)  { m.fsync.Observe(d.Seconds()) }
func (m *metrics) observeCommit(d time.Duration) { m.commit.Observe(d.Seconds()) }
func (m *metrics) proposalApplied(d time.Duration) {
	m.proposalsOK.Inc()
	m.proposalLatency.Observe(d.Seconds())
}
func (m *metrics) proposalFailed() { m.proposalsFailed.Inc() }

func (m *metrics) countRequest(method string, err error) {
	m.requests.WithLabelValues(method, status.Code(err).String()).Inc()
}

// unaryInterceptor refuses what a learner does not serve and counts
// requests by method and code.
func (s *Server) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	var resp any
	var err error
	if s.members.isLearner(s.id) && !learnerAllowed(req) {
		err = errLearnerRPC
	} else {
		resp, err = handler(ctx, req)
	}
	s.metrics.countRequest(info.FullMethod, err)
	return resp, err
}

// snapshotMethod is the one stream a learner serves.
const snapshotMethod = "/etcdserverpb.Maintenance/Snapshot"

func (s *Server) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	var err error
	if s.members.isLearner(s.id) && info.FullMethod != snapshotMethod {
		err = errLearnerRPC
	} else {
		err = handler(srv, ss)
	}
	s.metrics.countRequest(info.FullMethod, err)
	return err
}

func formatID(id uint64) string { return strconv.FormatUint(id, 16) }
