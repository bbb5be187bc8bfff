package backend

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Bucket names owned by the backend.
const (
	// RevisionBucket holds the append-only, revision-keyed log written with
	// Append. It cannot be written with Put or Delete.
	RevisionBucket = "key"
	// MetaBucket holds small metadata: the consistent index, and whatever the
	// layers above keep there (mvcc's compaction marks).
	MetaBucket = "meta"
)

var (
	revBucketName  = []byte(RevisionBucket)
	metaBucketName = []byte(MetaBucket)
	ciKey          = []byte("consistent_index")
	termKey        = []byte("consistent_term")
)

// Defaults for Options.
const (
	DefaultBatchInterval   = 100 * time.Millisecond
	DefaultBatchLimit      = 10000
	DefaultInitialMmapSize = 10 << 30
	DefaultOpenTimeout     = 10 * time.Second
)

// Options configure a Backend. The zero value is usable.
type Options struct {
	// BatchInterval is the longest time sealed writes wait before a commit.
	// Zero means DefaultBatchInterval; a negative value disables the timer
	// (commits then happen only on BatchLimit, Commit or ForceCommit).
	BatchInterval time.Duration
	// BatchLimit is the number of sealed writes that triggers a commit.
	// Zero means DefaultBatchLimit.
	BatchLimit int
	// MaxPending is the number of sealed but uncommitted writes at which
	// sealing blocks until the committer catches up (back-pressure on the
	// applier). Zero means 8 × BatchLimit.
	MaxPending int
	// InitialMmapSize is bbolt's initial mapping. A commit that must grow the
	// mapping waits for every open read transaction, so keep it above the
	// expected file size. Zero means DefaultInitialMmapSize (address space
	// only, not memory).
	InitialMmapSize int
	// OpenTimeout bounds the wait for bbolt's file lock. Zero means
	// DefaultOpenTimeout.
	OpenTimeout time.Duration
	// OnFailure, when set, is called once, from the committer goroutine,
	// when a background commit fails. The failure is sticky (every later
	// Commit and Err report it): the owner should stop taking writes, as
	// nothing buffered will reach the file any more.
	OnFailure func(error)
	// OnCommit, when set, is called after each successful bbolt commit with
	// its duration (for the server's histogram). It runs on the committing
	// goroutine and must not call back into the backend.
	OnCommit func(time.Duration)
}

func (o Options) withDefaults() Options {
	if o.BatchInterval == 0 {
		o.BatchInterval = DefaultBatchInterval
	}
	if o.BatchLimit <= 0 {
		o.BatchLimit = DefaultBatchLimit
	}
	if o.MaxPending <= 0 {
		o.MaxPending = 8 * o.BatchLimit
	}
	if o.InitialMmapSize <= 0 {
		o.InitialMmapSize = DefaultInitialMmapSize
	}
	if o.OpenTimeout <= 0 {
		o.OpenTimeout = DefaultOpenTimeout
	}
	return o
}

// entry is one record of the revision bucket held in memory until it is
// committed. Neither slice is ever modified once appended.
type entry struct {
	key, val []byte
}

// op is one buffered write to an ordinary bucket.
type op struct {
	bucket string
	key    []byte
	val    []byte
	del    bool
}

type ciPair struct{ index, term uint64 }

// Backend is a bbolt file written through an in-memory batch. See the
// package documentation for the contract.
type Backend struct {
	path string
	opts Options

	// maintMu serializes Defragment, Restore and Close.
	maintMu sync.Mutex
	// commitMu serializes bbolt write transactions and file swaps. Held for
	// the duration of a commit and for defragmentation's final pause.
	commitMu sync.Mutex
	// defragDels records revision keys deleted while a defragmentation copies
	// the file; guarded by commitMu, nil when no defragmentation runs.
	defragDels [][]byte

	mu   sync.Mutex
	cond *sync.Cond // on mu; broadcast after each commit and on close

	db  *dbHandle // current file; the backend holds one reference
	cur *readTx   // shared read transaction on db, nil during a commit

	log       []entry // revision-bucket writes not yet committed, keys ascending
	gops      []op    // ordinary-bucket writes not yet committed, in order
	sealedLog int     // log[:sealedLog] belongs to complete units
	sealedG   int     // gops[:sealedG] likewise
	oob       []op    // PutUnordered writes for the next commit
	dels      [][]byte
	lastKey   []byte // greatest revision key ever appended or committed

	ci          ciPair // set by SetConsistentIndex: the entry being applied
	sealedCI    ciPair // consistent index of the sealed prefix
	committedCI ciPair // consistent index in the file
	ciMode      bool   // SetConsistentIndex was called since Open

	err     error // sticky: a failed commit stops all further commits
	closed  bool
	retired []*dbHandle // files swapped out, closed when their views end

	size  atomic.Int64
	inUse atomic.Int64

	kick  chan struct{}
	stopc chan struct{}
	donec chan struct{}
}

// Open opens or creates the bbolt file at path and starts the committer.
func Open(path string, opts Options) (*Backend, error) {
	opts = opts.withDefaults()
	db, err := openDB(path, opts)
	if err != nil {
		return nil, fmt.Errorf("backend: open %s: %w", path, err)
	}
	ci, last, err := initDB(db)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("backend: open %s: %w", path, err), closeDB(db))
	}
	b := &Backend{
		path:        path,
		opts:        opts,
		db:          newHandle(db),
		ci:          ci,
		sealedCI:    ci,
		committedCI: ci,
		lastKey:     last,
		kick:        make(chan struct{}, 1),
		stopc:       make(chan struct{}),
		donec:       make(chan struct{}),
	}
	b.cond = sync.NewCond(&b.mu)
	rt, err := newReadTx(b.db)
	if err != nil {
		b.db.release()
		<-b.db.closedc
		return nil, errors.Join(err, b.db.closeErr)
	}
	b.cur = rt
	b.updateSizes(rt.tx)
	go b.run()
	return b, nil
}

func openDB(path string, opts Options) (*bolt.DB, error) {
	return bolt.Open(path, 0o600, &bolt.Options{
		Timeout:         opts.OpenTimeout,
		InitialMmapSize: opts.InitialMmapSize,
		FreelistType:    bolt.FreelistMapType,
		NoFreelistSync:  true,
	})
}

func closeDB(db *bolt.DB) error {
	if err := db.Close(); err != nil {
		return fmt.Errorf("backend: close: %w", err)
	}
	return nil
}

// initDB creates the backend's buckets and reads the consistent index and
// the last revision key.
func initDB(db *bolt.DB) (ci ciPair, last []byte, err error) {
	err = db.Update(func(tx *bolt.Tx) error {
		kb, err := tx.CreateBucketIfNotExists(revBucketName)
		if err != nil {
			return err
		}
		mb, err := tx.CreateBucketIfNotExists(metaBucketName)
		if err != nil {
			return err
		}
		ci = readCI(mb)
		if k, _ := kb.Cursor().Last(); k != nil {
			last = bytes.Clone(k)
		}
		return nil
	})
	return ci, last, err
}

func readCI(mb *bolt.Bucket) ciPair {
	var ci ciPair
	if v := mb.Get(ciKey); len(v) == 8 {
		ci.index = binary.BigEndian.Uint64(v)
	}
	if v := mb.Get(termKey); len(v) == 8 {
		ci.term = binary.BigEndian.Uint64(v)
	}
	return ci
}

// Path returns the file path.
func (b *Backend) Path() string { return b.path }

// Err returns the sticky error that stopped commits (wrapped, with the
// operation that failed), ErrClosed after Close, or nil.
func (b *Backend) Err() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	return b.err
}

// Append buffers one record of the revision bucket. Keys must be strictly
// increasing across the life of the file; neither slice may be modified
// afterwards (readers share them). Only the applier calls it.
func (b *Backend) Append(key, val []byte) {
	b.mu.Lock()
	if b.lastKey != nil && bytes.Compare(key, b.lastKey) <= 0 {
		b.mu.Unlock()
		panic(fmt.Sprintf("backend: revision key %x not above %x", key, b.lastKey))
	}
	b.log = append(b.log, entry{key: key, val: val})
	b.lastKey = key
	b.mu.Unlock()
}

// Put buffers a write to an ordinary bucket, created on first use. The value
// may not be modified afterwards. Only the applier calls it.
func (b *Backend) Put(bucket string, key, val []byte) {
	b.bufferOp(op{bucket: bucket, key: bytes.Clone(key), val: val})
}

// Delete buffers the removal of a key from an ordinary bucket.
func (b *Backend) Delete(bucket string, key []byte) {
	b.bufferOp(op{bucket: bucket, key: bytes.Clone(key), del: true})
}

func (b *Backend) bufferOp(o op) {
	if o.bucket == RevisionBucket {
		panic("backend: the revision bucket is written with Append")
	}
	b.mu.Lock()
	b.gops = append(b.gops, o)
	b.mu.Unlock()
}

// PutUnordered writes a key of an ordinary bucket in the next commit,
// whatever the entry boundaries: for idempotent metadata written outside the
// applier (mvcc's finished-compaction mark). Reads do not see it until it is
// committed.
func (b *Backend) PutUnordered(bucket string, key, val []byte) {
	if bucket == RevisionBucket {
		panic("backend: the revision bucket is written with Append")
	}
	b.mu.Lock()
	b.oob = append(b.oob, op{bucket: bucket, key: bytes.Clone(key), val: bytes.Clone(val)})
	b.mu.Unlock()
}

// Purge removes records from the revision bucket and returns once the
// removal is committed. It is for compaction: the caller guarantees no
// reader that could still ask for these keys pins a view taken after Purge
// starts.
func (b *Backend) Purge(keys [][]byte) error {
	if len(keys) == 0 {
		return nil
	}
	b.mu.Lock()
	b.dels = append(b.dels, keys...)
	b.mu.Unlock()
	return b.Commit()
}

// SetConsistentIndex records the raft entry now being applied. Everything
// buffered before the call belongs to entries that are complete, so it is
// sealed: the next commit may take it, and stores the previous index with
// it. Only the applier calls it.
func (b *Backend) SetConsistentIndex(index, term uint64) {
	b.mu.Lock()
	b.sealLocked()
	b.ci = ciPair{index, term}
	b.ciMode = true
	b.mu.Unlock()
}

// ConsistentIndex returns the index and term last given to
// SetConsistentIndex, or the ones in the file right after Open or Restore.
func (b *Backend) ConsistentIndex() (index, term uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ci.index, b.ci.term
}

// Seal marks everything buffered so far as complete, so that it may be
// committed. SetConsistentIndex and ForceCommit seal; a process that never
// sets a consistent index calls Seal (or EndWrite) after each logical write.
func (b *Backend) Seal() {
	b.mu.Lock()
	b.sealLocked()
	b.mu.Unlock()
}

// EndWrite is called by the store after each of its write transactions: it
// seals when no consistent index was ever set since Open (standalone use),
// and does nothing otherwise, as entry boundaries then come from
// SetConsistentIndex.
func (b *Backend) EndWrite() {
	b.mu.Lock()
	if !b.ciMode {
		b.sealLocked()
	}
	b.mu.Unlock()
}

func (b *Backend) sealLocked() {
	b.sealedLog, b.sealedG, b.sealedCI = len(b.log), len(b.gops), b.ci
	n := b.sealedLog + b.sealedG
	if n >= b.opts.BatchLimit {
		b.kickLocked()
	}
	for n >= b.opts.MaxPending && b.err == nil && !b.closed {
		b.kickLocked()
		b.cond.Wait()
		n = b.sealedLog + b.sealedG
	}
}

func (b *Backend) kickLocked() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// ForceCommit seals everything buffered, the entry in progress included,
// and commits it. Only the applier calls it, between entries (it declares
// the current entry complete): before a raft snapshot, or at shutdown.
func (b *Backend) ForceCommit() error {
	b.Seal()
	return b.Commit()
}

// Commit commits the sealed writes now and returns when they are durable.
// Any goroutine may call it.
func (b *Backend) Commit() error {
	b.commitMu.Lock()
	defer b.commitMu.Unlock()
	return b.commitLocked()
}

type batch struct {
	log     []entry
	gops    []op
	oob     []op
	dels    [][]byte
	ci      ciPair
	writeCI bool
}

func (bt *batch) empty() bool {
	return len(bt.log) == 0 && len(bt.gops) == 0 && len(bt.oob) == 0 && len(bt.dels) == 0 && !bt.writeCI
}

// commitLocked writes the sealed prefix in one bbolt transaction. The
// caller holds commitMu.
func (b *Backend) commitLocked() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ErrClosed
	}
	if b.err != nil {
		err := b.err
		b.mu.Unlock()
		return err
	}
	nLog, nG := b.sealedLog, b.sealedG
	bt := batch{
		log:     b.log[:nLog],
		gops:    b.gops[:nG],
		oob:     b.oob,
		dels:    b.dels,
		ci:      b.sealedCI,
		writeCI: b.sealedCI != b.committedCI,
	}
	b.oob, b.dels = nil, nil
	h := b.db
	b.mu.Unlock()
	if bt.empty() {
		return nil
	}

	start := time.Now()
	werr := b.writeBatch(h, &bt)
	// Publish a fresh shared read transaction whatever happened: writeBatch
	// unpublished the old one.
	rt, rerr := newReadTx(h)
	b.mu.Lock()
	if werr == nil {
		b.log = b.log[nLog:]
		b.sealedLog -= nLog
		b.gops = b.gops[nG:]
		b.sealedG -= nG
		b.committedCI = bt.ci
	} else {
		werr = fmt.Errorf("backend: commit: %w", werr)
		b.err = werr
	}
	if rerr != nil && b.err == nil {
		b.err = rerr
	}
	old := b.cur
	b.cur = rt
	b.cond.Broadcast()
	b.mu.Unlock()
	if old != nil {
		old.release()
	}
	if rt != nil {
		b.updateSizes(rt.tx)
	}
	if werr != nil {
		return werr
	}
	if rerr != nil {
		return rerr
	}
	if b.opts.OnCommit != nil {
		b.opts.OnCommit(time.Since(start))
	}
	return nil
}

func (b *Backend) writeBatch(h *dbHandle, bt *batch) (err error) {
	tx, err := h.db.Begin(true)
	if err != nil {
		return err
	}
	committed := false
	defer func() {
		if !committed {
			if rbErr := tx.Rollback(); rbErr != nil && !errors.Is(rbErr, berrors.ErrTxClosed) {
				err = errors.Join(err, rbErr)
			}
		}
	}()
	kb := tx.Bucket(revBucketName)
	if kb == nil {
		return fmt.Errorf("bucket %q missing", RevisionBucket)
	}
	// The revision bucket only grows at its end: pack pages tightly.
	kb.FillPercent = 0.9
	for _, e := range bt.log {
		if err := kb.Put(e.key, e.val); err != nil {
			return fmt.Errorf("put revision %x: %w", e.key, err)
		}
	}
	if err := applyOps(tx, bt.gops); err != nil {
		return err
	}
	if err := applyOps(tx, bt.oob); err != nil {
		return err
	}
	if bt.writeCI {
		mb := tx.Bucket(metaBucketName)
		if mb == nil {
			return fmt.Errorf("bucket %q missing", MetaBucket)
		}
		if err := mb.Put(ciKey, be64(bt.ci.index)); err != nil {
			return fmt.Errorf("put consistent index: %w", err)
		}
		if err := mb.Put(termKey, be64(bt.ci.term)); err != nil {
			return fmt.Errorf("put consistent term: %w", err)
		}
	}
	for _, k := range bt.dels {
		if err := kb.Delete(k); err != nil {
			return fmt.Errorf("delete revision %x: %w", k, err)
		}
	}
	if b.defragDels != nil {
		b.defragDels = append(b.defragDels, bt.dels...)
	}

	// A commit that grows the file past the mapping remaps it, and a remap
	// waits for every open read transaction: stop sharing ours first.
	// Readers arriving until the next one is published open their own.
	b.mu.Lock()
	old := b.cur
	b.cur = nil
	b.mu.Unlock()
	if old != nil {
		old.release()
	}
	committed = true
	return tx.Commit()
}

func applyOps(tx *bolt.Tx, ops []op) error {
	for i := range ops {
		o := &ops[i]
		if o.del {
			bk := tx.Bucket([]byte(o.bucket))
			if bk == nil {
				continue
			}
			if err := bk.Delete(o.key); err != nil {
				return fmt.Errorf("delete %s/%q: %w", o.bucket, o.key, err)
			}
			continue
		}
		bk, err := tx.CreateBucketIfNotExists([]byte(o.bucket))
		if err != nil {
			return fmt.Errorf("create bucket %s: %w", o.bucket, err)
		}
		if err := bk.Put(o.key, o.val); err != nil {
			return fmt.Errorf("put %s/%q: %w", o.bucket, o.key, err)
		}
	}
	return nil
}

func be64(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}

// run is the committer: it commits the sealed prefix on every tick and
// whenever the batch limit is reached.
func (b *Backend) run() {
	defer close(b.donec)
	var tick <-chan time.Time
	if b.opts.BatchInterval > 0 {
		t := time.NewTicker(b.opts.BatchInterval)
		defer t.Stop()
		tick = t.C
	}
	reported := false
	for {
		select {
		case <-b.stopc:
			return
		case <-tick:
		case <-b.kick:
		}
		// A failure is sticky and reported by Err and by every later
		// Commit; the committer tells the owner once.
		if err := b.Commit(); err != nil && !reported && !errors.Is(err, ErrClosed) {
			reported = true
			if b.opts.OnFailure != nil {
				b.opts.OnFailure(err)
			}
		}
	}
}

// Close commits the sealed writes, stops the committer and closes the file
// once every view is released. Writes of an entry still in progress (not
// sealed) are dropped: raft replays that entry after the consistent index.
func (b *Backend) Close() error {
	b.maintMu.Lock()
	defer b.maintMu.Unlock()
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ErrClosed
	}
	b.mu.Unlock()
	close(b.stopc)
	<-b.donec
	cerr := b.Commit()

	b.commitMu.Lock()
	b.mu.Lock()
	b.closed = true
	cur, h := b.cur, b.db
	b.cur = nil
	b.cond.Broadcast()
	b.mu.Unlock()
	b.commitMu.Unlock()
	if cur != nil {
		cur.release()
	}
	h.release()
	<-h.closedc
	err := errors.Join(cerr, h.closeErr)
	b.mu.Lock()
	retired := b.retired
	b.retired = nil
	b.mu.Unlock()
	for _, r := range retired {
		<-r.closedc
		err = errors.Join(err, r.closeErr)
	}
	return err
}

// retireLocked drops the backend's reference to a file that was swapped
// out; Close waits for it to be closed. The caller holds mu.
func (b *Backend) retireLocked(h *dbHandle) {
	kept := b.retired[:0]
	for _, r := range b.retired {
		select {
		case <-r.closedc:
			if r.closeErr != nil && b.err == nil {
				b.err = r.closeErr
			}
		default:
			kept = append(kept, r)
		}
	}
	b.retired = append(kept, h)
	h.release()
}

// Size returns the size of the file as of the last commit.
func (b *Backend) Size() int64 { return b.size.Load() }

// SizeInUse returns Size less the pages on bbolt's free list.
func (b *Backend) SizeInUse() int64 { return b.inUse.Load() }

func (b *Backend) updateSizes(tx *bolt.Tx) {
	size := tx.Size()
	free := int64(tx.DB().Stats().FreePageN) * int64(os.Getpagesize())
	b.size.Store(size)
	b.inUse.Store(size - free)
}

// dbHandle counts the users of one bbolt file: the backend while it is
// current, and each read transaction on it. The last release closes it.
type dbHandle struct {
	db       *bolt.DB
	refs     atomic.Int64
	closedc  chan struct{}
	closeErr error
	txErr    atomic.Pointer[error]
}

func newHandle(db *bolt.DB) *dbHandle {
	h := &dbHandle{db: db, closedc: make(chan struct{})}
	h.refs.Store(1)
	return h
}

// acquire adds a reference; the caller must already hold one (directly or
// through the backend's mutex while h is current).
func (h *dbHandle) acquire() { h.refs.Add(1) }

func (h *dbHandle) release() {
	switch n := h.refs.Add(-1); {
	case n == 0:
		err := closeDB(h.db)
		if p := h.txErr.Load(); p != nil {
			err = errors.Join(err, *p)
		}
		h.closeErr = err
		close(h.closedc)
	case n < 0:
		panic("backend: db handle released too often")
	}
}

// readTx is a bbolt read transaction shared by views, closed by the last
// release.
type readTx struct {
	tx   *bolt.Tx
	h    *dbHandle
	refs atomic.Int64
}

// newReadTx begins a read transaction on h and takes a reference on h for it.
func newReadTx(h *dbHandle) (*readTx, error) {
	h.acquire()
	tx, err := h.db.Begin(false)
	if err != nil {
		h.release()
		return nil, fmt.Errorf("backend: begin read: %w", err)
	}
	rt := &readTx{tx: tx, h: h}
	rt.refs.Store(1)
	return rt, nil
}

func (rt *readTx) release() {
	switch n := rt.refs.Add(-1); {
	case n == 0:
		if err := rt.tx.Rollback(); err != nil {
			err = fmt.Errorf("backend: close read: %w", err)
			rt.h.txErr.Store(&err)
		}
		rt.h.release()
	case n < 0:
		panic("backend: read transaction released too often")
	}
}
