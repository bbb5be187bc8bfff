package server

import (
	pb "github.com/cairnkv/cairn/api/etcdserverpb"
	"github.com/cairnkv/cairn/mvcc"
)

// The keyspace has its own request types (it knows nothing of the wire);
// these functions translate between them and etcd's messages, field for
// field. Enum values are equal on both sides by construction.

func rangeReq(r *pb.RangeRequest) mvcc.RangeRequest {
	return mvcc.RangeRequest{
		Key:               r.GetKey(),
		RangeEnd:          r.GetRangeEnd(),
		Limit:             r.GetLimit(),
		Revision:          r.GetRevision(),
		SortOrder:         mvcc.SortOrder(r.GetSortOrder()),
		SortTarget:        mvcc.SortTarget(r.GetSortTarget()),
		Serializable:      r.GetSerializable(),
		KeysOnly:          r.GetKeysOnly(),
		CountOnly:         r.GetCountOnly(),
		MinModRevision:    r.GetMinModRevision(),
		MaxModRevision:    r.GetMaxModRevision(),
		MinCreateRevision: r.GetMinCreateRevision(),
		MaxCreateRevision: r.GetMaxCreateRevision(),
	}
}

func rangeResp(r *mvcc.RangeResponse) *pb.RangeResponse {
	return &pb.RangeResponse{Kvs: r.Kvs, More: r.More, Count: r.Count}
}

func putReq(r *pb.PutRequest) mvcc.PutRequest {
	return mvcc.PutRequest{
		Key:         r.GetKey(),
		Value:       r.GetValue(),
		Lease:       r.GetLease(),
		PrevKv:      r.GetPrevKv(),
		IgnoreValue: r.GetIgnoreValue(),
		IgnoreLease: r.GetIgnoreLease(),
	}
}

func putResp(r *mvcc.PutResponse) *pb.PutResponse {
	return &pb.PutResponse{PrevKv: r.PrevKv}
}

func deleteReq(r *pb.DeleteRangeRequest) mvcc.DeleteRangeRequest {
	return mvcc.DeleteRangeRequest{Key: r.GetKey(), RangeEnd: r.GetRangeEnd(), PrevKv: r.GetPrevKv()}
}

func deleteResp(r *mvcc.DeleteRangeResponse) *pb.DeleteRangeResponse {
	return &pb.DeleteRangeResponse{Deleted: r.Deleted, PrevKvs: r.PrevKvs}
}

func txnReq(r *pb.TxnRequest) mvcc.TxnRequest {
	t := mvcc.TxnRequest{
		Compare: make([]mvcc.Compare, len(r.GetCompare())),
		Success: requestOps(r.GetSuccess()),
		Failure: requestOps(r.GetFailure()),
	}
	for i, c := range r.GetCompare() {
		t.Compare[i] = mvcc.Compare{
			Result:         mvcc.CompareResult(c.GetResult()),
			Target:         mvcc.CompareTarget(c.GetTarget()),
			Key:            c.GetKey(),
			RangeEnd:       c.GetRangeEnd(),
			Version:        c.GetVersion(),
			CreateRevision: c.GetCreateRevision(),
			ModRevision:    c.GetModRevision(),
			Value:          c.GetValue(),
			Lease:          c.GetLease(),
		}
	}
	return t
}

func requestOps(ops []*pb.RequestOp) []mvcc.RequestOp {
	if len(ops) == 0 {
		return nil
	}
	out := make([]mvcc.RequestOp, len(ops))
	for i, op := range ops {
		switch {
		case op.GetRequestRange() != nil:
			r := rangeReq(op.GetRequestRange())
			out[i].Range = &r
		case op.GetRequestPut() != nil:
			p := putReq(op.GetRequestPut())
			out[i].Put = &p
		case op.GetRequestDeleteRange() != nil:
			d := deleteReq(op.GetRequestDeleteRange())
			out[i].DeleteRange = &d
		case op.GetRequestTxn() != nil:
			t := txnReq(op.GetRequestTxn())
			out[i].Txn = &t
		}
	}
	return out
}

// txnResp converts a txn's response; h is the header for nested txns
// (etcd gives nested responses a header without a revision).
func txnResp(r *mvcc.TxnResponse, h func(rev int64) *pb.ResponseHeader) *pb.TxnResponse {
	out := &pb.TxnResponse{Succeeded: r.Succeeded, Responses: make([]*pb.ResponseOp, len(r.Responses))}
	for i, op := range r.Responses {
		switch {
		case op.Range != nil:
			rr := rangeResp(op.Range)
			rr.Header = h(op.Range.Revision)
			out.Responses[i] = &pb.ResponseOp{Response: &pb.ResponseOp_ResponseRange{ResponseRange: rr}}
		case op.Put != nil:
			pr := putResp(op.Put)
			pr.Header = h(op.Put.Revision)
			out.Responses[i] = &pb.ResponseOp{Response: &pb.ResponseOp_ResponsePut{ResponsePut: pr}}
		case op.DeleteRange != nil:
			dr := deleteResp(op.DeleteRange)
			dr.Header = h(op.DeleteRange.Revision)
			out.Responses[i] = &pb.ResponseOp{Response: &pb.ResponseOp_ResponseDeleteRange{ResponseDeleteRange: dr}}
		case op.Txn != nil:
			tr := txnResp(op.Txn, h)
			tr.Header = h(op.Txn.Revision)
			out.Responses[i] = &pb.ResponseOp{Response: &pb.ResponseOp_ResponseTxn{ResponseTxn: tr}}
		}
	}
	return out
}

// revHeader is the header of a response nested in a txn: etcd fills in only
// the revision there; the outer header carries the member's identity.
func revHeader(rev int64) *pb.ResponseHeader { return &pb.ResponseHeader{Revision: rev} }

// isReadOnlyTxn reports whether a txn has no write on either branch, at any
// depth: such a txn changes nothing and need not go through raft.
func isReadOnlyTxn(r *pb.TxnRequest) bool {
	for _, ops := range [][]*pb.RequestOp{r.GetSuccess(), r.GetFailure()} {
		for _, op := range ops {
			switch {
			case op.GetRequestPut() != nil, op.GetRequestDeleteRange() != nil:
				return false
			case op.GetRequestTxn() != nil && !isReadOnlyTxn(op.GetRequestTxn()):
				return false
			}
		}
	}
	return true
}

// isSerializableTxn reports whether every range in a read-only txn asked for
// a serializable read.
func isSerializableTxn(r *pb.TxnRequest) bool {
	for _, ops := range [][]*pb.RequestOp{r.GetSuccess(), r.GetFailure()} {
		for _, op := range ops {
			switch {
			case op.GetRequestRange() != nil && !op.GetRequestRange().GetSerializable():
				return false
			case op.GetRequestTxn() != nil && !isSerializableTxn(op.GetRequestTxn()):
				return false
			}
		}
	}
	return true
}
