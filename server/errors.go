package server

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cairnkv/cairn/mvcc"
)

// Errors as they cross the wire. etcd's clients recognise errors by gRPC
// code and exact message, so these texts are part of the API.
var (
	errEmptyKey        = status.Error(codes.InvalidArgument, "etcdserver: key is not provided")
	errKeyNotFound     = status.Error(codes.InvalidArgument, "etcdserver: key not found")
	errValueProvided   = status.Error(codes.InvalidArgument, "etcdserver: value is provided")
	errLeaseProvided   = status.Error(codes.InvalidArgument, "etcdserver: lease is provided")
	errTooManyOps      = status.Error(codes.InvalidArgument, "etcdserver: too many operations in txn request")
	errDuplicateKey    = status.Error(codes.InvalidArgument, "etcdserver: duplicate key given in txn request")
	errCompacted       = status.Error(codes.OutOfRange, "etcdserver: mvcc: required revision has been compacted")
	errFutureRev       = status.Error(codes.OutOfRange, "etcdserver: mvcc: required revision is a future revision")
	errNoSpace         = status.Error(codes.ResourceExhausted, "etcdserver: mvcc: database space exceeded")
	errLeaseNotFound   = status.Error(codes.NotFound, "etcdserver: requested lease not found")
	errLeaseExist      = status.Error(codes.FailedPrecondition, "etcdserver: lease already exists")
	errLeaseTTLTooBig  = status.Error(codes.OutOfRange, "etcdserver: too large lease TTL")
	errRequestTooLarge = status.Error(codes.InvalidArgument, "etcdserver: request is too large")
	errMemberNotFound  = status.Error(codes.NotFound, "etcdserver: member not found")
	errAuthNotEnabled  = status.Error(codes.FailedPrecondition, "etcdserver: authentication is not enabled")

	errNoLeader       = status.Error(codes.Unavailable, "etcdserver: no leader")
	errNotLeader      = status.Error(codes.FailedPrecondition, "etcdserver: not leader")
	errLeaderChanged  = status.Error(codes.Unavailable, "etcdserver: leader changed")
	errStopped        = status.Error(codes.Unavailable, "etcdserver: server stopped")
	errTimeout        = status.Error(codes.Unavailable, "etcdserver: request timed out")
	errTimeoutLeader  = status.Error(codes.Unavailable, "etcdserver: request timed out, possibly due to previous leader failure")
	errCorrupt        = status.Error(codes.DataLoss, "etcdserver: corrupt cluster")
	errBadTransferee  = status.Error(codes.FailedPrecondition, "etcdserver: bad leader transferee")
	errNotImplemented = status.Error(codes.Unimplemented, "cairn: not implemented yet")
)

// isStatus reports whether err already carries a gRPC status.
func isStatus(err error) bool {
	_, ok := status.FromError(err)
	return ok
}

// ctxError maps a context's end to the status a client expects.
func ctxError(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		return status.FromContextError(ctx.Err()).Err()
	case errors.Is(err, context.DeadlineExceeded):
		return errTimeout
	}
	return err
}

// mvccErrors maps the keyspace's sentinel errors to their wire form.
var mvccErrors = []struct {
	err  error
	wire error
}{
	{mvcc.ErrCompacted, errCompacted},
	{mvcc.ErrFutureRev, errFutureRev},
	{mvcc.ErrKeyNotFound, errKeyNotFound},
	{mvcc.ErrLeaseNotFound, errLeaseNotFound},
	{mvcc.ErrDuplicateKey, errDuplicateKey},
	{mvcc.ErrEmptyKey, errEmptyKey},
	{mvcc.ErrValueProvided, errValueProvided},
	{mvcc.ErrLeaseProvided, errLeaseProvided},
	{mvcc.ErrTooManyOps, errTooManyOps},
	{mvcc.ErrInvalidSortOption, errInvalidSortOption},
	{mvcc.ErrClosed, errStopped},
}

var errInvalidSortOption = status.Error(codes.InvalidArgument, "etcdserver: invalid sort option")

// toWire turns an internal error into the status a client should see.
// Errors without a known mapping become Internal with their text, which
// names the operation that failed.
func toWire(err error) error {
	if err == nil || isStatus(err) {
		return err
	}
	for _, m := range mvccErrors {
		if errors.Is(err, m.err) {
			return m.wire
		}
	}
	return status.Error(codes.Internal, err.Error())
}
