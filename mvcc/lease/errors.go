package lease

import (
	"errors"

	"github.com/cairnkv/cairn/mvcc"
)

// Sentinel errors of the lease table, compared with errors.Is. The texts of
// the first three are etcd's gRPC error messages, byte for byte, so the
// server maps each to etcd's status one to one.
var (
	// ErrLeaseNotFound: Revoke, Renew or TimeToLive of a lease that does not
	// exist (etcd's TimeToLive answers TTL -1 instead: see TimeToLive), and
	// Grant of lease ID 0, as etcd reports it. It is mvcc.ErrLeaseNotFound
	// itself, so one mapping serves a put with a missing lease too.
	ErrLeaseNotFound = mvcc.ErrLeaseNotFound
	// ErrLeaseExists: Grant of an ID already granted.
	ErrLeaseExists = errors.New("etcdserver: lease already exists")
	// ErrLeaseTTLTooLarge: Grant with a TTL above MaxLeaseTTL.
	ErrLeaseTTLTooLarge = errors.New("etcdserver: too large lease TTL")

	// ErrNotPrimary: Renew on a member that is not the primary (leader), or
	// whose primacy ended while Renew waited. The server forwards the
	// keep-alive to the leader, as etcd does.
	ErrNotPrimary = errors.New("lease: not a primary lessor")
)
