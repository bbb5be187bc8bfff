package mvcc

import "errors"

// Sentinel errors of the keyspace, compared with errors.Is. Their text is
// etcd's, byte for byte: the server maps each to etcd's gRPC status (the
// two mvcc errors gain etcd's "etcdserver: " prefix there), and clients
// recognise errors by that text.
var (
	// ErrCompacted: a read, watch history, hash or compaction asked for a
	// revision below the compaction point.
	ErrCompacted = errors.New("mvcc: required revision has been compacted")
	// ErrFutureRev: a revision above the current one.
	ErrFutureRev = errors.New("mvcc: required revision is a future revision")

	// ErrKeyNotFound: a put with ignore_value or ignore_lease on a missing
	// key, or an empty operation in a txn (as etcd reports it).
	ErrKeyNotFound = errors.New("etcdserver: key not found")
	// ErrLeaseNotFound: a put attaching a lease that does not exist.
	ErrLeaseNotFound = errors.New("etcdserver: requested lease not found")
	// ErrDuplicateKey: a txn puts a key twice, or puts a key it deletes.
	ErrDuplicateKey = errors.New("etcdserver: duplicate key given in txn request")

	// Request validation (ValidateRange, ValidatePut, ValidateDeleteRange,
	// ValidateTxn); the store checks them again when it applies.
	ErrEmptyKey          = errors.New("etcdserver: key is not provided")
	ErrValueProvided     = errors.New("etcdserver: value is provided")
	ErrLeaseProvided     = errors.New("etcdserver: lease is provided")
	ErrTooManyOps        = errors.New("etcdserver: too many operations in txn request")
	ErrInvalidSortOption = errors.New("etcdserver: invalid sort option")

	// ErrClosed: the store was closed.
	ErrClosed = errors.New("mvcc: closed")
)
