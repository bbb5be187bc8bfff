package lease

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/cairnkv/cairn/mvcc"
	"github.com/cairnkv/cairn/mvcc/backend"
)

// Limits and defaults, etcd's values.
const (
	// MaxLeaseTTL is the largest TTL Grant accepts, in seconds.
	MaxLeaseTTL = 9_000_000_000
	// DefaultMinTTL is MinTTL(10, 100ms): etcd's default election timeout
	// of 10 ticks of 100ms gives ceil(1.5s) = 2s.
	DefaultMinTTL = 2
	// DefaultCheckpointInterval is how often the primary checkpoints the
	// remaining TTL of a lease longer than the interval.
	DefaultCheckpointInterval = 5 * time.Minute
	// MaxCheckpointBatch caps the checkpoints CheckpointsDue returns, so one
	// raft entry carries at most this many.
	MaxCheckpointBatch = 1000
	// DefaultExpiredRetryInterval is how long an expired lease that was
	// reported by Expired stays unreported while its revoke goes through
	// raft; if it is still there afterwards, it is reported again.
	DefaultExpiredRetryInterval = 3 * time.Second
	// DefaultRevokeRate is the most expired leases Expired reports per
	// second.
	DefaultRevokeRate = 1000
	// PollInterval is how often the server is expected to call Expired and
	// CheckpointsDue on the primary (etcd's lessor loop runs every 500ms;
	// the revoke budget refills continuously, so any period works).
	PollInterval = 500 * time.Millisecond
)

// MinTTL is etcd's minimum lease TTL, in seconds, for a raft configuration
// of electionTicks ticks of heartbeat each: one and a half election
// timeouts, counted in whole ticks (3*electionTicks/2, integer division),
// rounded up to a whole second. A shorter lease could expire during a
// leader election, before any member could have renewed it.
func MinTTL(electionTicks int, heartbeat time.Duration) int64 {
	d := time.Duration(3*electionTicks/2) * heartbeat
	return int64(math.Ceil(d.Seconds()))
}

// Checkpoint is one lease's remaining TTL, etcd's LeaseCheckpoint.
type Checkpoint struct {
	ID           int64
	RemainingTTL int64
}

// Checkpointer proposes checkpoints through raft and returns once they are
// applied on this member (or with the error that stopped them, including
// ctx's). The primary's Renew calls it, without holding any lessor lock, to
// reset a checkpointed lease's remaining TTL before extending it.
type Checkpointer func(ctx context.Context, cps []Checkpoint) error

// Options configure a Lessor. The zero value is usable.
type Options struct {
	// MinTTL, in seconds, is the least TTL a lease gets: Grant raises
	// shorter ones (see MinTTL). Zero or less means DefaultMinTTL.
	MinTTL int64
	// Clock is the time source of the primary. Nil means SystemClock.
	Clock Clock
	// Checkpointer, if set, enables lease checkpointing: CheckpointsDue
	// yields checkpoints for the server to propose, and Renew resets a
	// checkpointed lease through it. Nil disables checkpointing (etcd's
	// default); applied Checkpoint entries are still honoured.
	Checkpointer Checkpointer
	// CheckpointInterval is the checkpoint period for leases longer than
	// it. Zero means DefaultCheckpointInterval; negative disables
	// checkpointing like a nil Checkpointer.
	CheckpointInterval time.Duration
	// ExpiredRetryInterval: see DefaultExpiredRetryInterval. Zero or less
	// means the default.
	ExpiredRetryInterval time.Duration
	// RevokeRate caps Expired at this many leases per second, with bursts
	// of half a second's worth. Zero or less means DefaultRevokeRate.
	RevokeRate int
}

func (o Options) withDefaults() Options {
	if o.MinTTL <= 0 {
		o.MinTTL = DefaultMinTTL
	}
	if o.Clock == nil {
		o.Clock = SystemClock{}
	}
	if o.CheckpointInterval == 0 {
		o.CheckpointInterval = DefaultCheckpointInterval
	}
	if o.CheckpointInterval < 0 {
		o.Checkpointer = nil
	}
	if o.ExpiredRetryInterval <= 0 {
		o.ExpiredRetryInterval = DefaultExpiredRetryInterval
	}
	if o.RevokeRate <= 0 {
		o.RevokeRate = DefaultRevokeRate
	}
	return o
}

// Lease is a copy of one lease's replicated state, as Grant made it.
type Lease struct {
	ID int64
	// TTL is the granted TTL in seconds, after raising it to the minimum.
	TTL int64
	// RemainingTTL is the last checkpointed remaining TTL, or 0 if none
	// (the lease then restarts from TTL after a leader change).
	RemainingTTL int64
}

// Status answers etcd's LeaseTimeToLive.
type Status struct {
	ID int64
	// TTL is the remaining time to live in whole seconds, truncated (the
	// lease expires in under TTL+1 seconds), never negative. See Primary.
	TTL int64
	// GrantedTTL is the lease's TTL.
	GrantedTTL int64
	// Keys are the attached keys in ascending order, when asked for.
	Keys [][]byte
	// Primary reports that TTL comes from the primary's expiry clock. On
	// any other member TTL is the best local knowledge, the checkpointed
	// remaining TTL or else GrantedTTL; etcd forwards TimeToLive to the
	// leader instead, and so should a server that wants etcd's answer.
	Primary bool
}

// Deleter deletes a lease's keys on revocation: *mvcc.Store. DeleteKeys
// deletes those of the keys that exist in one revision (none if none
// exists) and calls the lessor's Detach for each, on the same goroutine.
type Deleter interface {
	DeleteKeys(keys [][]byte) (*mvcc.DeleteRangeResponse, error)
}

// The store drives the lessor through these interfaces.
var (
	_ mvcc.Leases         = (*Lessor)(nil)
	_ mvcc.LeaseRecoverer = (*Lessor)(nil)
	_ Deleter             = (*mvcc.Store)(nil)
)

// Lessor is the lease table. See the package documentation for the
// construction order and the concurrency contract.
type Lessor struct {
	be   *backend.Backend
	opts Options

	// mu guards everything below. It is never held while calling the
	// Deleter or the Checkpointer, and the store never holds a lock of its
	// own that a lessor method takes after mu, so the two cannot deadlock.
	mu      sync.RWMutex
	leases  map[int64]*lease
	deleter Deleter

	// Primary state: meaningful only while primary is set.
	primary bool
	// demoted is closed by Demote, waking Renew calls that wait.
	demoted chan struct{}
	// expiries holds every lease, at its expiry or, once reported by
	// Expired, at its retry time.
	expiries *timeQueue
	// checkpoints holds leases long enough to need checkpointing, at their
	// next checkpoint time.
	checkpoints *timeQueue
	// tokens is the revoke budget, refilled at RevokeRate from tokensAt.
	tokens   float64
	tokensAt time.Time
}

// lease is one entry of the table. id, ttl, remaining and keys are
// replicated state, changed only by apply-path calls; expiry is the
// primary's alone.
type lease struct {
	id        int64
	ttl       int64
	remaining int64
	keys      map[string]struct{}
	// expiry is zero on a member that is not the primary.
	expiry time.Time
	// revoked is made by a Renew that waits for the revoke of this expired
	// lease, and closed by Revoke (or by Recover dropping the lease).
	revoked chan struct{}
	gone    bool
}

// remainingOrTTL is what a new primary counts from: the checkpointed
// remaining TTL if there is one, else the TTL.
func (l *lease) remainingOrTTL() int64 {
	if l.remaining > 0 {
		return l.remaining
	}
	return l.ttl
}

func (l *lease) snapshot() *Lease {
	return &Lease{ID: l.id, TTL: l.ttl, RemainingTTL: l.remaining}
}

// New loads the lease table from be's lease bucket. Keys are attached
// afterwards by the store (mvcc.New calls Attach for each key with a
// lease), and revocation needs SetDeleter. The lessor starts as a
// follower: no lease expires until Promote.
func New(be *backend.Backend, opts Options) (*Lessor, error) {
	le := &Lessor{
		be:          be,
		opts:        opts.withDefaults(),
		expiries:    newTimeQueue(),
		checkpoints: newTimeQueue(),
	}
	leases, err := le.load()
	if err != nil {
		return nil, err
	}
	le.leases = leases
	return le, nil
}

// load reads the lease bucket. As etcd does, a TTL below the configured
// minimum is raised in memory (the record keeps its value).
func (le *Lessor) load() (map[int64]*lease, error) {
	v, err := le.be.View()
	if err != nil {
		return nil, fmt.Errorf("lease: load: %w", err)
	}
	defer v.Release()
	leases := make(map[int64]*lease)
	err = v.BucketForEach(Bucket, func(k, val []byte) error {
		r, err := decodeEntry(k, val)
		if err != nil {
			return err
		}
		leases[r.id] = &lease{id: r.id, ttl: max(r.ttl, le.opts.MinTTL), remaining: r.remaining}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return leases, nil
}

// SetDeleter gives the lessor the store whose keys Revoke deletes. Call it
// once the store is open, before applying any entry.
func (le *Lessor) SetDeleter(d Deleter) {
	le.mu.Lock()
	le.deleter = d
	le.mu.Unlock()
}

// persist buffers l's record in the backend batch, with the keyspace
// writes of the same raft entry. The caller is the applier.
func (le *Lessor) persist(l *lease) {
	le.be.Put(Bucket, leaseKey(l.id), record{id: l.id, ttl: l.ttl, remaining: l.remaining}.encode())
}

// Grant creates lease id with ttl seconds. Apply path. It fails with
// ErrLeaseNotFound for id 0 (the server picks an ID before proposing),
// ErrLeaseTTLTooLarge above MaxLeaseTTL, and ErrLeaseExists for an ID in
// use. A TTL below the minimum (zero and negative ones included) is raised
// to it. On the primary the lease expires TTL seconds from now.
func (le *Lessor) Grant(id, ttl int64) (*Lease, error) {
	if id == 0 {
		return nil, ErrLeaseNotFound
	}
	if ttl > MaxLeaseTTL {
		return nil, ErrLeaseTTLTooLarge
	}
	ttl = max(ttl, le.opts.MinTTL)
	le.mu.Lock()
	defer le.mu.Unlock()
	if _, ok := le.leases[id]; ok {
		return nil, ErrLeaseExists
	}
	l := &lease{id: id, ttl: ttl}
	le.leases[id] = l
	le.persist(l)
	le.be.EndWrite()
	if le.primary {
		now := le.opts.Clock.Now()
		le.setExpiry(l, now.Add(seconds(ttl)))
		le.scheduleCheckpoint(l, now)
	}
	return l.snapshot(), nil
}

// Revoke deletes lease id and every key attached to it. Apply path. The
// keys go in one revision through the Deleter (none if no key is
// attached), the lease record in the same backend batch, so that after a
// crash either both or neither are in the file. It fails with
// ErrLeaseNotFound if the lease does not exist, or with the Deleter's
// error, leaving the lease in place.
func (le *Lessor) Revoke(id int64) error {
	le.mu.Lock()
	l, ok := le.leases[id]
	if !ok {
		le.mu.Unlock()
		return ErrLeaseNotFound
	}
	keys := make([][]byte, 0, len(l.keys))
	for k := range l.keys {
		keys = append(keys, []byte(k))
	}
	d := le.deleter
	le.mu.Unlock()
	if len(keys) > 0 && d == nil {
		panic("lease: Revoke with keys attached before SetDeleter")
	}

	// The record's removal is buffered first, so that DeleteKeys's end of
	// write seals it together with the tombstones when no consistent index
	// is in use; with one, the entry boundary does. Keys are deleted in
	// sorted order, the same on every member. DeleteKeys calls Detach:
	// mu must not be held here.
	le.be.Delete(Bucket, leaseKey(id))
	if len(keys) > 0 {
		slices.SortFunc(keys, bytes.Compare)
		if _, err := d.DeleteKeys(keys); err != nil {
			le.persist(l)
			le.be.EndWrite()
			return fmt.Errorf("lease: revoke %d: %w", id, err)
		}
	} else {
		le.be.EndWrite()
	}

	le.mu.Lock()
	delete(le.leases, id)
	le.expiries.remove(id)
	le.checkpoints.remove(id)
	l.markGone()
	le.mu.Unlock()
	return nil
}

// markGone wakes the Renew calls waiting for l's revocation. The caller
// holds mu.
func (l *lease) markGone() {
	l.gone = true
	if l.revoked != nil {
		close(l.revoked)
		l.revoked = nil
	}
}

// Checkpoint records lease id's remaining TTL (0 clears it: the lease
// counts from its TTL again). Apply path. A lease that no longer exists is
// ignored, as etcd does, since its revoke may have been applied after the
// checkpoint was proposed. It changes no expiry: the primary's clock is
// authoritative; a checkpoint matters when another member is promoted.
func (le *Lessor) Checkpoint(id, remainingTTL int64) error {
	le.mu.Lock()
	defer le.mu.Unlock()
	l, ok := le.leases[id]
	if !ok {
		return nil
	}
	l.remaining = max(remainingTTL, 0)
	le.persist(l)
	le.be.EndWrite()
	if le.primary {
		le.scheduleCheckpoint(l, le.opts.Clock.Now())
	}
	return nil
}

// Exists reports whether lease id is granted (and not revoked). It depends
// on applied entries only, never on expiry: an expired lease exists until
// its revoke is applied.
func (le *Lessor) Exists(id int64) bool {
	le.mu.RLock()
	_, ok := le.leases[id]
	le.mu.RUnlock()
	return ok
}

// Attach records that key carries lease id. Called by the store on the
// apply path (and when it opens or restores). A lease that does not exist
// is ignored: the store checks Exists before a put, so that only happens
// when a file holds keys of a lease it lacks, and etcd ignores it too.
func (le *Lessor) Attach(id int64, key []byte) {
	le.mu.Lock()
	if l, ok := le.leases[id]; ok {
		if l.keys == nil {
			l.keys = make(map[string]struct{})
		}
		l.keys[string(key)] = struct{}{}
	}
	le.mu.Unlock()
}

// Detach records that key no longer carries lease id. Called by the store
// on the apply path, including from within Revoke's DeleteKeys.
func (le *Lessor) Detach(id int64, key []byte) {
	le.mu.Lock()
	if l, ok := le.leases[id]; ok {
		delete(l.keys, string(key))
	}
	le.mu.Unlock()
}

// Recover reloads the table from the backend after the store's Restore
// swapped the file; the store attaches the keys afterwards. It runs on the
// apply path. Renew calls waiting on a lease the new table lacks return
// ErrLeaseNotFound. On the primary (a leader does not normally receive
// snapshots) every lease restarts its expiry from now, as Promote(0)
// would. An unreadable lease bucket panics: the member could not go on
// consistently with the others.
func (le *Lessor) Recover() {
	leases, err := le.load()
	if err != nil {
		panic(fmt.Sprintf("lease: recover: %v", err))
	}
	le.mu.Lock()
	defer le.mu.Unlock()
	for id, l := range le.leases {
		if _, ok := leases[id]; !ok {
			l.markGone()
		} else if l.revoked != nil {
			// Waiters re-read the table and find the new lease.
			close(l.revoked)
			l.revoked = nil
		}
	}
	le.leases = leases
	if le.primary {
		le.refreshAll(le.opts.Clock.Now(), 0)
	}
}

// TimeToLive reports lease id's remaining and granted TTL, and its keys if
// withKeys. It fails with ErrLeaseNotFound if the lease does not exist;
// the server answers that with TTL -1, as etcd does. Any goroutine.
func (le *Lessor) TimeToLive(id int64, withKeys bool) (*Status, error) {
	le.mu.RLock()
	defer le.mu.RUnlock()
	l, ok := le.leases[id]
	if !ok {
		return nil, ErrLeaseNotFound
	}
	st := &Status{ID: id, GrantedTTL: l.ttl, TTL: l.remainingOrTTL()}
	if le.primary {
		st.Primary = true
		st.TTL = max(int64(l.expiry.Sub(le.opts.Clock.Now())/time.Second), 0)
	}
	if withKeys {
		st.Keys = make([][]byte, 0, len(l.keys))
		for k := range l.keys {
			st.Keys = append(st.Keys, []byte(k))
		}
		slices.SortFunc(st.Keys, bytes.Compare)
	}
	return st, nil
}

// Leases returns the IDs of all leases, ascending. (etcd orders them by
// expiry; clients cannot rely on either.) Any goroutine.
func (le *Lessor) Leases() []int64 {
	le.mu.RLock()
	ids := make([]int64, 0, len(le.leases))
	for id := range le.leases {
		ids = append(ids, id)
	}
	le.mu.RUnlock()
	slices.Sort(ids)
	return ids
}

func seconds(n int64) time.Duration {
	// MaxLeaseTTL seconds fit in a Duration (about 292 years > 285 years).
	return time.Duration(n) * time.Second
}
