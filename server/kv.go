package server

import (
	"context"
	"errors"

	"github.com/cairnkv/cairn/api/cairnpb"
	pb "github.com/cairnkv/cairn/api/etcdserverpb"
	"github.com/cairnkv/cairn/mvcc"
)

// kvService is etcd's KV service: writes go through raft, linearizable reads
// through a batched ReadIndex, serializable reads straight to the keyspace.
type kvService struct {
	pb.UnimplementedKVServer
	s *Server
}

func (k *kvService) Range(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error) {
	req := rangeReq(r)
	if err := mvcc.ValidateRange(&req); err != nil {
		return nil, toWire(err)
	}
	if !r.GetSerializable() {
		if err := k.s.linearizableRead(ctx); err != nil {
			return nil, err
		}
	}
	resp, err := k.s.store.Range(req)
	if errors.Is(err, mvcc.ErrFutureRev) && r.GetSerializable() {
		resp, err = retryAfterCatchUp(ctx, k.s, func() (*mvcc.RangeResponse, error) { return k.s.store.Range(req) })
	}
	if err != nil {
		return nil, toWire(err)
	}
	out := rangeResp(resp)
	out.Header = k.s.header(resp.Revision)
	return out, nil
}

// retryAfterCatchUp reruns a serializable read that asked for a revision
// this member has not applied yet, once it has caught up with the cluster's
// commit index. A client that learned the revision from another member (a
// response header) reads it here instead of getting "future revision" from
// a member a few milliseconds behind; a revision that no member has gets
// the error as before. It costs a ReadIndex only in that case.
func retryAfterCatchUp[T any](ctx context.Context, s *Server, read func() (T, error)) (T, error) {
	if err := s.linearizableRead(ctx); err != nil {
		var zero T
		return zero, err
	}
	return read()
}

func (k *kvService) Put(ctx context.Context, r *pb.PutRequest) (*pb.PutResponse, error) {
	req := putReq(r)
	if err := mvcc.ValidatePut(&req); err != nil {
		return nil, toWire(err)
	}
	if err := k.s.checkQuota(); err != nil {
		return nil, err
	}
	return proposeFor[*pb.PutResponse](ctx, k.s, &cairnpb.Request{Request: &cairnpb.Request_Put{Put: r}})
}

func (k *kvService) DeleteRange(ctx context.Context, r *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	req := deleteReq(r)
	if err := mvcc.ValidateDeleteRange(&req); err != nil {
		return nil, toWire(err)
	}
	return proposeFor[*pb.DeleteRangeResponse](ctx, k.s, &cairnpb.Request{Request: &cairnpb.Request_DeleteRange{DeleteRange: r}})
}

func (k *kvService) Txn(ctx context.Context, r *pb.TxnRequest) (*pb.TxnResponse, error) {
	req := txnReq(r)
	if err := mvcc.ValidateTxn(&req, k.s.cfg.MaxTxnOps); err != nil {
		return nil, toWire(err)
	}
	if isReadOnlyTxn(r) {
		// Nothing to replicate: confirm the read index unless every range
		// asked for a serializable read, then evaluate locally.
		if !isSerializableTxn(r) {
			if err := k.s.linearizableRead(ctx); err != nil {
				return nil, err
			}
		}
		resp, err := k.s.store.Txn(req)
		if errors.Is(err, mvcc.ErrFutureRev) && isSerializableTxn(r) {
			resp, err = retryAfterCatchUp(ctx, k.s, func() (*mvcc.TxnResponse, error) { return k.s.store.Txn(req) })
		}
		if err != nil {
			return nil, toWire(err)
		}
		out := txnResp(resp, revHeader)
		out.Header = k.s.header(resp.Revision)
		return out, nil
	}
	if err := k.s.checkQuota(); err != nil {
		return nil, err
	}
	return proposeFor[*pb.TxnResponse](ctx, k.s, &cairnpb.Request{Request: &cairnpb.Request_Txn{Txn: r}})
}

func (k *kvService) Compact(ctx context.Context, r *pb.CompactionRequest) (*pb.CompactionResponse, error) {
	res, err := k.s.propose(ctx, &cairnpb.Request{Request: &cairnpb.Request_Compaction{Compaction: r}})
	if err != nil {
		return nil, err
	}
	if r.GetPhysical() && res.compacted != nil {
		select {
		case <-res.compacted:
		case <-ctx.Done():
			return nil, ctxError(ctx, ctx.Err())
		case <-k.s.stopc:
			return nil, errStopped
		}
	}
	out := res.resp.(*pb.CompactionResponse)
	k.s.fillHeader(out.Header)
	return out, nil
}
