package mvcc

import "github.com/cairnkv/cairn/api/mvccpb"

// The request and response types mirror etcd's etcdserverpb messages field
// for field (less the response headers' cluster fields, which the server
// fills), so the server translates them one to one. Enum values equal
// etcd's wire numbers.

// SortOrder is etcd's RangeRequest.SortOrder.
type SortOrder int32

const (
	SortNone    SortOrder = 0
	SortAscend  SortOrder = 1
	SortDescend SortOrder = 2
)

// SortTarget is etcd's RangeRequest.SortTarget.
type SortTarget int32

const (
	SortByKey     SortTarget = 0
	SortByVersion SortTarget = 1
	SortByCreate  SortTarget = 2
	SortByMod     SortTarget = 3
	SortByValue   SortTarget = 4
)

// RangeRequest is etcd's RangeRequest.
type RangeRequest struct {
	// Key is the first key; with RangeEnd empty, the only key.
	Key []byte
	// RangeEnd ends the range [Key, RangeEnd). "\x00" means every key >= Key.
	RangeEnd []byte
	// Limit caps the number of keys returned; 0 is no limit.
	Limit int64
	// Revision reads at that revision; <= 0 reads at the current one.
	Revision   int64
	SortOrder  SortOrder
	SortTarget SortTarget
	// Serializable is carried for the server (which read path to take); the
	// store ignores it.
	Serializable bool
	KeysOnly     bool
	CountOnly    bool
	// Filters on the returned keys; 0 disables each.
	MinModRevision    int64
	MaxModRevision    int64
	MinCreateRevision int64
	MaxCreateRevision int64
}

// RangeResponse is etcd's RangeResponse.
type RangeResponse struct {
	// Revision is the header revision: the store's revision when read (not
	// the requested one).
	Revision int64
	Kvs      []*mvccpb.KeyValue
	// More is set when Limit cut the result.
	More bool
	// Count is the number of keys in the range at the read revision, before
	// Limit and before the revision filters.
	Count int64
}

// PutRequest is etcd's PutRequest.
type PutRequest struct {
	Key   []byte
	Value []byte
	Lease int64
	// PrevKv returns the key-value pair before the put.
	PrevKv bool
	// IgnoreValue keeps the current value; the key must exist.
	IgnoreValue bool
	// IgnoreLease keeps the current lease; the key must exist.
	IgnoreLease bool
}

// PutResponse is etcd's PutResponse.
type PutResponse struct {
	Revision int64
	PrevKv   *mvccpb.KeyValue
}

// DeleteRangeRequest is etcd's DeleteRangeRequest. Key and RangeEnd read as
// in RangeRequest.
type DeleteRangeRequest struct {
	Key      []byte
	RangeEnd []byte
	PrevKv   bool
}

// DeleteRangeResponse is etcd's DeleteRangeResponse.
type DeleteRangeResponse struct {
	Revision int64
	Deleted  int64
	PrevKvs  []*mvccpb.KeyValue
}

// CompareResult is etcd's Compare.CompareResult.
type CompareResult int32

const (
	CompareEqual    CompareResult = 0
	CompareGreater  CompareResult = 1
	CompareLess     CompareResult = 2
	CompareNotEqual CompareResult = 3
)

// CompareTarget is etcd's Compare.CompareTarget.
type CompareTarget int32

const (
	CompareVersion CompareTarget = 0
	CompareCreate  CompareTarget = 1
	CompareMod     CompareTarget = 2
	CompareValue   CompareTarget = 3
	CompareLease   CompareTarget = 4
)

// Compare is etcd's Compare. etcd's target_union is flattened: the field
// named by Target is compared, the others are ignored, so a union holding
// another member compares against zero, as in etcd.
type Compare struct {
	Result CompareResult
	Target CompareTarget
	Key    []byte
	// RangeEnd makes the compare hold only if every key in [Key, RangeEnd)
	// satisfies it ("\x00": every key >= Key).
	RangeEnd       []byte
	Version        int64
	CreateRevision int64
	ModRevision    int64
	Value          []byte
	Lease          int64
}

// RequestOp is etcd's RequestOp: exactly one field is set. An op with none
// set is rejected with ErrKeyNotFound, as etcd does; with several, the
// first in field order is used.
type RequestOp struct {
	Range       *RangeRequest
	Put         *PutRequest
	DeleteRange *DeleteRangeRequest
	Txn         *TxnRequest
}

// ResponseOp is etcd's ResponseOp: the field matching the request is set.
type ResponseOp struct {
	Range       *RangeResponse
	Put         *PutResponse
	DeleteRange *DeleteRangeResponse
	Txn         *TxnResponse
}

// TxnRequest is etcd's TxnRequest.
type TxnRequest struct {
	Compare []Compare
	Success []RequestOp
	Failure []RequestOp
}

// TxnResponse is etcd's TxnResponse. Revision is the header revision; for a
// nested txn it is 0, as etcd leaves nested headers' revision unset.
type TxnResponse struct {
	Revision  int64
	Succeeded bool
	Responses []ResponseOp
}

// HashKVResult is what etcd's HashKV reports.
type HashKVResult struct {
	// Hash is CRC-32C over the revision bucket up to HashRevision, as
	// compaction at CompactRevision left it.
	Hash            uint32
	CompactRevision int64
	HashRevision    int64
	// Revision is the store's current revision (the response header's).
	Revision int64
}

// Observer receives the events of every write, for the watch hub.
type Observer interface {
	// OnWrite is called once per write transaction that changed something,
	// with all of its events in order (PUT carries the new key-value; DELETE
	// carries the key and mod_revision = rev). Calls come from the writing
	// goroutine, in revision order, after rev became visible to readers: a
	// reader (or Events) may already have seen rev, so a hub that replays
	// history must skip what it already sent (compare revisions). The index
	// lock is released but writes are still serialised, so OnWrite may read
	// the store and must not write to it. The events are shared and must not
	// be modified.
	OnWrite(rev int64, events []*mvccpb.Event)
}

// RestoreObserver is an optional extension of Observer: OnRestore is called
// after Restore replaced the whole keyspace, with the new current and
// compact revisions. Watchers must resynchronise from history.
type RestoreObserver interface {
	OnRestore(rev, compactRev int64)
}

// Leases is the view of the lease table the keyspace needs. The store calls
// it from the writing goroutine, with the index lock released (it may read
// the store, not write). A lessor that calls DeleteKeys (lease revoke) must
// not hold, meanwhile, a lock that Detach takes.
type Leases interface {
	// Exists reports whether the lease is granted.
	Exists(id int64) bool
	// Attach records that key now carries lease id.
	Attach(id int64, key []byte)
	// Detach records that key no longer carries lease id (overwritten by a
	// put with another lease, or deleted).
	Detach(id int64, key []byte)
}

// LeaseRecoverer is an optional extension of Leases: after Restore swapped
// the backend, Recover is called, before keys are attached again, to reload
// the lease table from the new file.
type LeaseRecoverer interface {
	Recover()
}
