package server

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	pb "github.com/cairnkv/cairn/api/etcdserverpb"
)

// httpHandler builds the HTTP side of the client port: etcd's JSON gateway
// under /v3/, health endpoints and metrics. The gateway speaks to this
// member's own gRPC server over loopback (streams such as Watch need a real
// connection); the returned closer ends that connection.
func (s *Server) httpHandler(grpcAddr string) (http.Handler, interface{ Close() error }, error) {
	conn, err := grpc.NewClient("passthrough:///"+grpcAddr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<31-1)),
	)
	if err != nil {
		return nil, nil, fmt.Errorf("gateway: connect to %s: %w", grpcAddr, err)
	}
	gw := runtime.NewServeMux(
		// etcd's gateway: proto field names as written, zero values left
		// out, 64-bit integers as strings, bytes as base64.
		runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.JSONPb{
			MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: false},
			UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: true},
		}),
		runtime.WithErrorHandler(gatewayError),
	)
	ctx := context.Background()
	for _, register := range []func(context.Context, *runtime.ServeMux, *grpc.ClientConn) error{
		pb.RegisterKVHandler, pb.RegisterWatchHandler, pb.RegisterLeaseHandler,
		pb.RegisterClusterHandler, pb.RegisterMaintenanceHandler, pb.RegisterAuthHandler,
	} {
		if err := register(ctx, gw, conn); err != nil {
			return nil, nil, fmt.Errorf("gateway: %w", err)
		}
	}
	s.metrics.registerGauges(s)

	mux := http.NewServeMux()
	mux.Handle("/v3/", gw)
	mux.HandleFunc("/health", s.handleHealth)
	mux.HandleFunc("/livez", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", s.handleReady)
	mux.HandleFunc("/version", s.handleVersion)
	mux.Handle("/metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	if s.cfg.EnablePprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux, conn, nil
}

// gatewayError answers a failed gateway call as etcd's gateway does:
// {"code": <gRPC code>, "message": <text>} with the matching HTTP status.
func gatewayError(ctx context.Context, _ *runtime.ServeMux, _ runtime.Marshaler, w http.ResponseWriter, _ *http.Request, err error) {
	st := status.Convert(err)
	body, _ := json.Marshal(struct {
		Code    int32  `json:"code"`
		Message string `json:"message"`
	}{int32(st.Code()), st.Message()})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(runtime.HTTPStatusFromCode(st.Code()))
	_, _ = w.Write(body)
}

// healthTimeout bounds the read a health check makes.
const healthTimeout = 2 * time.Second

// checkHealth reports whether the member can serve linearizable requests,
// and if not, why (in etcd's words where etcd has them).
func (s *Server) checkHealth(ctx context.Context) (bool, string) {
	if s.node.Leader() == 0 {
		return false, "RAFT NO LEADER"
	}
	if s.store.Size() > s.quota {
		return false, "ALARM NOSPACE"
	}
	ctx, cancel := context.WithTimeout(ctx, healthTimeout)
	defer cancel()
	if err := s.node.ReadIndex(ctx); err != nil {
		return false, "QGET ERROR: " + err.Error()
	}
	return true, ""
}

// handleHealth answers etcd's /health: {"health":"true","reason":""}.
func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	ok, reason := s.checkHealth(r.Context())
	w.Header().Set("Content-Type", "application/json")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	body, _ := json.Marshal(struct {
		Health string `json:"health"`
		Reason string `json:"reason"`
	}{fmt.Sprint(ok), reason})
	_, _ = w.Write(body)
}

func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	if ok, reason := s.checkHealth(r.Context()); !ok {
		http.Error(w, "not ready: "+reason, http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}

func (s *Server) handleVersion(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]string{
		"etcdserver": APIVersion, "etcdcluster": APIVersion, "storage": "3.6.0", "cairn": Version,
	})
}

// slogErrorLog routes net/http's internal errors (bad requests, TLS
// handshakes) into the structured log at debug level, tagged with where.
func slogErrorLog(l *slog.Logger, where string) *log.Logger {
	return slog.NewLogLogger(l.With("component", where).Handler(), slog.LevelDebug)
}
