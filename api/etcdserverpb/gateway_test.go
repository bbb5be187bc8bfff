package etcdserverpb

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
)

type stubKV struct {
	UnimplementedKVServer
	got *PutRequest
}

func (s *stubKV) Put(_ context.Context, r *PutRequest) (*PutResponse, error) {
	s.got = r
	return &PutResponse{Header: &ResponseHeader{Revision: 2}}, nil
}

type stubLease struct {
	UnimplementedLeaseServer
	revoked int64
}

func (s *stubLease) LeaseRevoke(_ context.Context, r *LeaseRevokeRequest) (*LeaseRevokeResponse, error) {
	s.revoked = r.ID
	return &LeaseRevokeResponse{}, nil
}

// TestGatewayRoutes checks that the generated gateway serves etcd's paths,
// including an additional binding, and decodes the JSON body.
func TestGatewayRoutes(t *testing.T) {
	ctx := context.Background()
	mux := runtime.NewServeMux()
	kv, lease := &stubKV{}, &stubLease{}
	if err := RegisterKVHandlerServer(ctx, mux, kv); err != nil {
		t.Fatal(err)
	}
	if err := RegisterLeaseHandlerServer(ctx, mux, lease); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(mux)
	defer srv.Close()

	post := func(path, body string) string {
		t.Helper()
		resp, err := http.Post(srv.URL+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("POST %s: %d %s", path, resp.StatusCode, b)
		}
		return string(b)
	}

	// "Zm9v" and "YmFy" are base64 for "foo" and "bar".
	out := post("/v3/kv/put", `{"key":"Zm9v","value":"YmFy","lease":"7","prev_kv":true}`)
	if kv.got == nil || string(kv.got.Key) != "foo" || string(kv.got.Value) != "bar" || kv.got.Lease != 7 || !kv.got.PrevKv {
		t.Fatalf("put request = %v", kv.got)
	}
	if !strings.Contains(out, `"revision":"2"`) {
		t.Fatalf("put response = %s", out)
	}

	post("/v3/kv/lease/revoke", `{"ID":"5"}`)
	if lease.revoked != 5 {
		t.Fatalf("revoked = %d, want 5", lease.revoked)
	}
}
