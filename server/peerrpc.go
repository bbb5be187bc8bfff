package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Calls that only the leader can answer, made by a follower on behalf of a
// client, go to the leader's peer port as POSTs: the body is the marshaled
// request; the answer is 200 with the marshaled response, 409 Conflict if
// the member asked is not the leader (the caller waits for the leader to
// settle and asks again), or 422 with a marshaled google.rpc.Status that the
// caller returns to its client as it is (etcd's codes and messages).

// statusNotLeader answers a forwarded call that reached a member which is
// not, or no longer, the leader.
const statusNotLeader = http.StatusConflict

// leaderOnly runs a call that must run on the leader: here if this member
// leads, else on the leader through its peer port. local reports
// errForwardRetry when it finds it is not the leader after all; both paths
// then wait for the leadership to settle and try again, until ctx ends.
func leaderOnly[Req, Resp proto.Message](ctx context.Context, s *Server, path string, req Req, newResp func() Resp, local func(context.Context, Req) (Resp, error)) (Resp, error) {
	ctx, cancel := context.WithTimeout(ctx, s.reqTimeout)
	defer cancel()
	for {
		var resp Resp
		var err error
		if s.node.Status().IsLeader {
			resp, err = local(ctx, req)
		} else {
			resp = newResp()
			err = s.callLeader(ctx, path, req, resp)
		}
		if !errors.Is(err, errForwardRetry) {
			return resp, err
		}
		if err := s.awaitLeader(ctx); err != nil {
			var zero Resp
			return zero, err
		}
	}
}

// postToLeader posts req to path on the leader's peer port and returns the
// answer's status code and body. errForwardRetry means no leader could be
// asked (none known, or it did not answer).
func (s *Server) postToLeader(ctx context.Context, path string, req proto.Message) (int, []byte, error) {
	lead := s.node.Leader()
	if lead == 0 || lead == s.id {
		return 0, nil, errForwardRetry
	}
	m := s.members.get(lead)
	if m == nil || len(m.GetPeerURLs()) == 0 {
		return 0, nil, errForwardRetry
	}
	body, err := proto.Marshal(req)
	if err != nil {
		return 0, nil, fmt.Errorf("forward %s: %w", path, err)
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, m.GetPeerURLs()[0]+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, fmt.Errorf("forward %s: %w", path, err)
	}
	hreq.Header.Set(headerClusterID, formatID(s.clusterID))
	hreq.Header.Set(headerFrom, formatID(s.id)) // lets a test's fault proxy tell who is calling
	hresp, err := s.peerClient.Do(hreq)
	if err != nil {
		if ctx.Err() != nil {
			return 0, nil, ctxError(ctx, ctx.Err())
		}
		return 0, nil, errForwardRetry
	}
	defer hresp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(hresp.Body, maxForwardBody))
	if err != nil {
		return 0, nil, errForwardRetry
	}
	return hresp.StatusCode, data, nil
}

// callLeader posts req to path on the leader's peer port and decodes the
// answer into resp.
func (s *Server) callLeader(ctx context.Context, path string, req, resp proto.Message) error {
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
	case statusNotLeader:
		return errForwardRetry
	case http.StatusUnprocessableEntity:
		var st spb.Status
		if err := proto.Unmarshal(data, &st); err != nil {
			return fmt.Errorf("forward %s: decode error: %w", path, err)
		}
		return status.FromProto(&st).Err()
	}
	return status.Errorf(codes.Unavailable, "etcdserver: leader answered %d: %s", code, bytes.TrimSpace(data))
}

// handleLeaderCall serves the leader's side of a forwarded call: newReq
// makes the request message, run answers it on this member (errForwardRetry
// if it is not the leader).
func handleLeaderCall[Req, Resp proto.Message](s *Server, mux *http.ServeMux, path string, newReq func() Req, run func(context.Context, Req) (Resp, error)) {
	mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
		req := newReq()
		if !s.readPeerRequest(w, r, req) {
			return
		}
		if !s.node.Status().IsLeader {
			http.Error(w, "not the leader", statusNotLeader)
			return
		}
		resp, err := run(r.Context(), req)
		switch {
		case errors.Is(err, errForwardRetry):
			http.Error(w, "not the leader", statusNotLeader)
			return
		case err != nil:
			body, merr := proto.Marshal(status.Convert(toWire(err)).Proto())
			if merr != nil {
				http.Error(w, merr.Error(), http.StatusInternalServerError)
				return
			}
			w.Header().Set("Content-Type", "application/x-protobuf")
			w.WriteHeader(http.StatusUnprocessableEntity)
			_, _ = w.Write(body)
			return
		}
		body, err := proto.Marshal(resp)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(body)
	})
}
