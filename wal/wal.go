package wal

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Entry is one raft log entry. The WAL treats Type and Data as opaque.
type Entry struct {
	Index uint64
	Term  uint64
	Type  uint8
	Data  []byte
}

// HardState is raft's persistent vote state. The zero value means
// "unchanged" in Save.
type HardState struct{ Term, Vote, Commit uint64 }

// IsEmpty reports whether h is the zero HardState.
func (h HardState) IsEmpty() bool { return h == HardState{} }

// Snapshot is a snapshot marker: raft state up to Index (at Term) lives in a
// snapshot elsewhere.
type Snapshot struct{ Index, Term uint64 }

// Metadata identifies the log's owner; written at creation and repeated at
// the head of every segment.
type Metadata struct{ MemberID, ClusterID uint64 }

// Replay is what Open recovered: the metadata, the latest hard state, and
// the entries after the marker.
type Replay struct {
	Metadata  Metadata
	HardState HardState
	// Entries are those with index > from.Index, consecutive, with
	// overwritten suffixes already replaced. Empty Data is returned as nil.
	Entries []Entry
}

// DefaultSegmentSize is the segment size used when Options.SegmentSize is 0.
const DefaultSegmentSize = 64 << 20

// minSegmentSize leaves room for a segment's head and a few records.
const minSegmentSize = 4 * headSize

// Options tune a WAL. The zero value is ready to use.
type Options struct {
	// SegmentSize is the size segments are preallocated to; default 64 MiB,
	// at least 512 bytes. A batch larger than a segment gets a segment of
	// its own size.
	SegmentSize int64
	// Logger receives notices about torn tails repaired, segments released
	// and failures; nil means slog.Default().
	Logger *slog.Logger
	// AfterSync, if set, is called with the duration of every fdatasync
	// (for metrics). It runs with the WAL's lock held: keep it short.
	AfterSync func(time.Duration)
	// BeforeSync, if set, is called before every fdatasync (a test hook for
	// slow-disk faults). It runs with the WAL's lock held.
	BeforeSync func()
}

func (o Options) withDefaults() Options {
	if o.SegmentSize <= 0 {
		o.SegmentSize = DefaultSegmentSize
	}
	o.SegmentSize = max(o.SegmentSize, minSegmentSize)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// maxRetainedBuf bounds the encode buffer kept between calls, so that one
// huge batch does not pin its buffer for the life of the WAL.
const maxRetainedBuf = 4 << 20

// WAL is an open write-ahead log. All methods are safe for concurrent use;
// they are serialised by one mutex.
type WAL struct {
	mu   sync.Mutex
	dir  string
	opts Options
	log  *slog.Logger
	lock *dirLock

	md       Metadata
	hs       HardState // last hard state saved
	last     uint64    // index of the log's last entry (or of a marker past it)
	maxSnap  uint64    // highest snapshot marker index saved or replayed
	segs     []segment // retained segments, oldest first; the last is the tail
	tail     segmentFile
	tailSize int64  // preallocated size of the tail
	off      int64  // where the next record goes in the tail
	crc      uint32 // chain value after the last record written
	buf      []byte // encode buffer, reused
	spare    *spare // the next segment's file, being prepared; see spare.go

	err    error // sticky: set by the first failed write, sync or close
	closed bool

	maxEntrySize int // MaxEntrySize; tests lower it

	// wrapFile turns a freshly opened segment into the segmentFile the WAL
	// writes through; tests replace it to inject faults.
	wrapFile func(*os.File) segmentFile
}

func newWAL(dir string, opts Options, lock *dirLock) *WAL {
	return &WAL{
		dir:          dir,
		opts:         opts,
		log:          opts.Logger.With("component", "wal", "dir", dir),
		lock:         lock,
		maxEntrySize: MaxEntrySize,
		wrapFile:     func(f *os.File) segmentFile { return osFile{f: f} },
	}
}

// Exists reports whether dir holds a log (at least one segment file).
func Exists(dir string) bool {
	segs, err := listSegments(dir)
	return err == nil && len(segs) > 0
}

// Create makes a new log in dir (creating dir if needed; it must not hold a
// log), writes the first segment with md, and syncs the file and the
// directory. The returned WAL is empty: its first entry will be index 1,
// unless a snapshot marker moves the log forward first.
func Create(dir string, md Metadata, opts Options) (*WAL, error) {
	opts = opts.withDefaults()
	if Exists(dir) {
		return nil, fmt.Errorf("wal: create %s: %w", dir, ErrExist)
	}
	_, statErr := os.Stat(dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("wal: create %s: %w", dir, err)
	}
	if errors.Is(statErr, os.ErrNotExist) {
		if err := syncDir(filepath.Dir(filepath.Clean(dir))); err != nil {
			return nil, err
		}
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	w := newWAL(dir, opts, lock)
	w.md = md
	// Checked again under the lock: another Create may have won the race.
	if Exists(dir) {
		return nil, w.abandon(fmt.Errorf("wal: create %s: %w", dir, ErrExist))
	}
	if err := removeTemps(dir); err != nil {
		return nil, w.abandon(err)
	}
	first := segment{seq: 0, first: 1, name: segmentName(0, 1)}
	f, crc, err := w.newSegment(first.seq, first.first, opts.SegmentSize, nil)
	if err != nil {
		return nil, w.abandon(err)
	}
	w.tail, w.tailSize, w.off, w.crc = f, opts.SegmentSize, headSize, crc
	w.segs = []segment{first}
	return w, nil
}

// Open locks dir, replays the log from the marker from (zero Snapshot =
// from the start) and returns the WAL ready for appends.
//
// The marker must be present in the log (or be zero) else
// ErrSnapshotNotFound; a marker at that index with another term is
// ErrSnapshotMismatch. A zero marker needs the log's first segment, so it
// fails with ErrSnapshotNotFound once segments have been released. A torn
// last record is cut off (and the last segment re-extended to its
// preallocated size); corruption anywhere else is a *CorruptError naming
// file and offset.
func Open(dir string, from Snapshot, opts Options) (*WAL, Replay, error) {
	opts = opts.withDefaults()
	lock, err := lockDir(dir)
	if err != nil {
		return nil, Replay{}, err
	}
	w := newWAL(dir, opts, lock)
	rp, err := w.replay(from)
	if err != nil {
		return nil, Replay{}, w.abandon(err)
	}
	w.maybeStartSpare()
	return w, rp, nil
}

// replay reads the segments needed to replay from the marker, repairs a torn
// tail and opens the last segment for appends.
func (w *WAL) replay(from Snapshot) (Replay, error) {
	if err := removeTemps(w.dir); err != nil {
		return Replay{}, err
	}
	segs, err := listSegments(w.dir)
	if err != nil {
		return Replay{}, err
	}
	if len(segs) == 0 {
		return Replay{}, fmt.Errorf("wal: open %s: %w", w.dir, ErrNotExist)
	}
	if err := checkSegments(w.dir, segs); err != nil {
		return Replay{}, err
	}
	start := 0
	if from == (Snapshot{}) {
		if segs[0].seq != 0 {
			return Replay{}, fmt.Errorf("wal: open %s: replay from the start, but segments before %s were released: %w",
				w.dir, segs[0].name, ErrSnapshotNotFound)
		}
	} else if start = replayStart(segs, from.Index); start < 0 {
		return Replay{}, fmt.Errorf("wal: open %s: marker at index %d is older than the log (first segment %s): %w",
			w.dir, from.Index, segs[0].name, ErrSnapshotNotFound)
	}

	r := replayer{dir: w.dir, from: from, last: segs[start].first - 1}
	var buf []byte
	for i := start; i < len(segs); i++ {
		path := filepath.Join(w.dir, segs[i].name)
		if i < len(segs)-1 {
			f, err := os.Open(path)
			if err != nil {
				return Replay{}, fmt.Errorf("wal: open %s: %w", path, err)
			}
			buf, err = readFileInto(f, buf)
			if err != nil {
				return Replay{}, closeAfter(fmt.Errorf("wal: read %s: %w", path, err), f, path)
			}
			if err := f.Close(); err != nil {
				return Replay{}, fmt.Errorf("wal: close %s: %w", path, err)
			}
			if _, err := r.scan(segs[i], buf, false); err != nil {
				return Replay{}, err
			}
			continue
		}
		if err := w.openTail(&r, segs[i], buf); err != nil {
			return Replay{}, err
		}
	}
	if from != (Snapshot{}) && !r.found {
		if r.other {
			return Replay{}, fmt.Errorf("wal: open %s: marker at index %d has another term than %d: %w", w.dir, from.Index, from.Term, ErrSnapshotMismatch)
		}
		return Replay{}, fmt.Errorf("wal: open %s: no marker at index %d: %w", w.dir, from.Index, ErrSnapshotNotFound)
	}
	w.segs = segs
	w.md, w.hs = r.md, r.hs
	w.last, w.crc = r.last, r.crc
	w.maxSnap = max(r.maxSnap, from.Index)
	var ents []Entry
	if len(r.ents) > 0 {
		ents = r.ents
	}
	return Replay{Metadata: r.md, HardState: r.hs, Entries: ents}, nil
}

// openTail replays the last segment and makes it the append target: a torn
// tail is cut off and the file re-extended to its preallocated size.
func (w *WAL) openTail(r *replayer, seg segment, buf []byte) error {
	path := filepath.Join(w.dir, seg.name)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("wal: open %s: %w", path, err)
	}
	fail := func(err error) error { return closeAfter(err, f, path) }
	buf, err = readFileInto(f, buf)
	if err != nil {
		return fail(fmt.Errorf("wal: read %s: %w", path, err))
	}
	res, err := r.scan(seg, buf, true)
	if err != nil {
		return fail(err)
	}
	size := max(w.opts.SegmentSize, int64(len(buf)))
	if res.torn != faultNone {
		w.log.Warn("cutting off torn final write", "file", path, "offset", res.end,
			"discarded_bytes", len(buf)-res.end, "reason", res.torn.String())
		if err := f.Truncate(int64(res.end)); err != nil {
			return fail(fmt.Errorf("wal: truncate %s at %d: %w", path, res.end, err))
		}
	}
	if res.torn != faultNone || int64(len(buf)) < size {
		if err := preallocate(f, size); err != nil {
			return fail(fmt.Errorf("wal: preallocate %s: %w", path, err))
		}
		if err := f.Sync(); err != nil {
			return fail(fmt.Errorf("wal: sync %s: %w", path, err))
		}
	}
	w.tail = w.wrapFile(f)
	w.tailSize = size
	w.off = int64(res.end)
	return nil
}

// abandon releases what a failed Create or Open acquired.
func (w *WAL) abandon(err error) error {
	if w.tail != nil {
		err = closeAfter(err, w.tail, "tail segment")
		w.tail = nil
	}
	if rerr := w.lock.release(); rerr != nil {
		err = fmt.Errorf("%w (and %v)", err, rerr)
	}
	return err
}

// usable returns the error every call must fail with, if any.
func (w *WAL) usable() error {
	if w.err != nil {
		return w.err
	}
	if w.closed {
		return ErrClosed
	}
	return nil
}

// fail breaks the WAL: after a failed write, sync or close the file's
// contents past the last successful sync are unknown, so no later append
// may follow them.
func (w *WAL) fail(err error) error {
	w.err = fmt.Errorf("%w (the WAL is broken; reopen it to recover)", err)
	w.log.Error("write-ahead log broken", "err", err)
	return w.err
}

// Save appends the hard state (if non-empty) and entries as one write and
// one fdatasync. Nothing is durable, and the caller must not acknowledge
// anything, until Save returns nil.
//
// Entries must be consecutive and may start anywhere from 1 to the last
// saved index + 1; starting at or below the last saved index means raft
// overwrote that suffix, and replay replaces it (ErrIndexGap otherwise,
// with nothing written). Save does not retain ents or their Data.
func (w *WAL) Save(hs HardState, ents []Entry) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usable(); err != nil {
		return err
	}
	if hs.IsEmpty() && len(ents) == 0 {
		return nil
	}
	size, err := w.checkEntries(ents)
	if err != nil {
		return err
	}
	if !hs.IsEmpty() {
		size += int64(frameSize(hardStatePayloadSize))
	}
	if err := w.makeRoom(size); err != nil {
		return err
	}
	buf, crc := w.buf[:0], w.crc
	if !hs.IsEmpty() {
		buf, crc = appendRecord(buf, crc, &record{typ: recHardState, hs: hs})
	}
	for i := range ents {
		buf, crc = appendEntryRecord(buf, crc, &ents[i])
	}
	if err := w.append(buf, crc); err != nil {
		return err
	}
	if !hs.IsEmpty() {
		w.hs = hs
	}
	if len(ents) > 0 {
		w.last = ents[len(ents)-1].Index
	}
	return nil
}

// appendEntryRecord encodes e without copying the Entry into a record.
func appendEntryRecord(buf []byte, seed uint32, e *Entry) ([]byte, uint32) {
	r := record{typ: recEntry, entry: *e}
	return appendRecord(buf, seed, &r)
}

// checkEntries validates a batch and returns its encoded size.
func (w *WAL) checkEntries(ents []Entry) (int64, error) {
	if len(ents) == 0 {
		return 0, nil
	}
	if first := ents[0].Index; first == 0 || first > w.last+1 {
		return 0, fmt.Errorf("wal: save: first entry index %d, but the log's last index is %d: %w", first, w.last, ErrIndexGap)
	}
	var size int64
	for i := range ents {
		if i > 0 && ents[i].Index != ents[i-1].Index+1 {
			return 0, fmt.Errorf("wal: save: entry index %d follows %d: %w", ents[i].Index, ents[i-1].Index, ErrIndexGap)
		}
		if len(ents[i].Data) > w.maxEntrySize {
			return 0, fmt.Errorf("wal: save: entry %d has %d bytes of data: %w", ents[i].Index, len(ents[i].Data), ErrTooLarge)
		}
		size += int64(frameSize(entryFixedSize + len(ents[i].Data)))
	}
	return size, nil
}

// SaveSnapshot appends a snapshot marker and syncs it. The caller must have
// made the state up to s.Index durable elsewhere first.
//
// A marker normally lies at or below the last saved entry. A marker beyond
// it (a follower installing a leader's snapshot) moves the log forward: the
// next entries saved continue at s.Index+1, and a later Open must replay
// from this marker or a later one (an older one gets ErrIndexGap).
func (w *WAL) SaveSnapshot(s Snapshot) error {
	return w.saveMarker(recSnapshot, s)
}

// InstallSnapshot records that the whole log was replaced by the snapshot at
// s, as when a follower installs its leader's snapshot: on replay every entry
// saved before this record is dropped — including entries beyond s.Index,
// which raft discarded with its old log — and the log continues at
// s.Index+1. A later Open must replay from this marker or a later one (an
// older one gets ErrIndexGap). The caller must have made the snapshot's state
// durable first.
func (w *WAL) InstallSnapshot(s Snapshot) error {
	return w.saveMarker(recInstall, s)
}

func (w *WAL) saveMarker(typ recordType, s Snapshot) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usable(); err != nil {
		return err
	}
	if err := w.makeRoom(int64(frameSize(snapshotPayloadSize))); err != nil {
		return err
	}
	buf, crc := appendRecord(w.buf[:0], w.crc, &record{typ: typ, snap: s})
	if err := w.append(buf, crc); err != nil {
		return err
	}
	if typ == recInstall {
		w.last = s.Index
	} else {
		w.last = max(w.last, s.Index)
	}
	w.maxSnap = max(w.maxSnap, s.Index)
	return nil
}

// makeRoom cuts a new segment if size more bytes do not fit in the tail.
func (w *WAL) makeRoom(size int64) error {
	if w.off+size <= w.tailSize {
		return nil
	}
	prev := w.segs[len(w.segs)-1]
	next := segment{seq: prev.seq + 1, first: w.last + 1}
	next.name = segmentName(next.seq, next.first)
	segSize := max(w.opts.SegmentSize, headSize+size)
	var spareFile *os.File
	if w.spare != nil && w.spare.size == segSize {
		f, err := w.spare.take()
		w.spare = nil
		if err != nil {
			w.log.Warn("spare segment unavailable; creating the segment inline", "err", err)
		}
		spareFile = f
	}
	f, crc, err := w.newSegment(next.seq, next.first, segSize, spareFile)
	if err != nil {
		return w.fail(err)
	}
	old := w.tail
	w.tail, w.tailSize, w.off, w.crc = f, segSize, headSize, crc
	w.segs = append(w.segs, next)
	if err := old.Close(); err != nil {
		return w.fail(fmt.Errorf("wal: close %s: %w", filepath.Join(w.dir, prev.name), err))
	}
	return nil
}

// maybeStartSpare starts preparing the next segment once the tail is half
// full, so that it is ready long before the cut.
func (w *WAL) maybeStartSpare() {
	if w.spare == nil && w.off >= w.tailSize/2 {
		w.spare = startSpare(w.dir, w.opts.SegmentSize)
	}
}

// append writes buf at the tail's write offset, syncs it and, on success,
// advances the offset and the chain. Any failure breaks the WAL.
func (w *WAL) append(buf []byte, crc uint32) error {
	if cap(buf) <= maxRetainedBuf {
		w.buf = buf[:0]
	} else {
		w.buf = nil
	}
	name := w.segs[len(w.segs)-1].name
	n, err := w.tail.WriteAt(buf, w.off)
	if err == nil && n < len(buf) {
		err = io.ErrShortWrite
	}
	if err != nil {
		return w.fail(fmt.Errorf("wal: write %s at %d: %w", filepath.Join(w.dir, name), w.off, err))
	}
	if err := w.syncWith(w.tail.Datasync); err != nil {
		return w.fail(fmt.Errorf("wal: fdatasync %s: %w", filepath.Join(w.dir, name), err))
	}
	w.off += int64(len(buf))
	w.crc = crc
	w.maybeStartSpare()
	return nil
}

// syncWith runs one sync with the BeforeSync and AfterSync hooks around it.
func (w *WAL) syncWith(sync func() error) error {
	if w.opts.BeforeSync != nil {
		w.opts.BeforeSync()
	}
	if w.opts.AfterSync == nil {
		return sync()
	}
	start := time.Now()
	err := sync()
	w.opts.AfterSync(time.Since(start))
	return err
}

// ReleaseTo deletes the segment files that hold nothing needed to replay
// from a marker at index: every segment older than the newest one cut at or
// before index (first index <= index). That segment holds or precedes the
// marker record and every entry above index, and the last segment is never
// deleted. While first indexes increase this is exactly "a segment goes if
// the next one exists and its first index is <= index"; after an overwrite
// that reached back into an older segment it also frees the older ones.
// The caller must have saved a marker at index (ErrSnapshotNotFound if no
// marker at or beyond index was saved or replayed) and made the state it
// stands for durable elsewhere.
func (w *WAL) ReleaseTo(index uint64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usable(); err != nil {
		return err
	}
	if index > w.maxSnap {
		return fmt.Errorf("wal: release to %d: the latest marker is at %d: %w", index, w.maxSnap, ErrSnapshotNotFound)
	}
	n := max(replayStart(w.segs, index), 0)
	var rmErr error
	removed := 0
	for ; removed < n; removed++ {
		path := filepath.Join(w.dir, w.segs[0].name)
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			// Keeping the file loses nothing; the log stays usable.
			rmErr = fmt.Errorf("wal: release to %d: remove %s: %w", index, path, err)
			break
		}
		w.log.Debug("released segment", "file", path, "release_to", index)
		w.segs = w.segs[1:]
	}
	if removed > 0 {
		if err := syncDir(w.dir); err != nil {
			return w.fail(err)
		}
	}
	return rmErr
}

// Close closes the tail segment and releases the directory lock. It does
// not sync: everything Save and SaveSnapshot acknowledged is already
// durable. Close of a broken WAL releases the same resources and returns
// the error that broke it; a second Close returns ErrClosed.
func (w *WAL) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ErrClosed
	}
	w.closed = true
	var errs []error
	if w.spare != nil {
		if err := w.spare.discard(); err != nil {
			errs = append(errs, err)
		}
		w.spare = nil
	}
	if err := w.tail.Close(); err != nil {
		errs = append(errs, fmt.Errorf("wal: close %s: %w", filepath.Join(w.dir, w.segs[len(w.segs)-1].name), err))
	}
	if err := w.lock.release(); err != nil {
		errs = append(errs, err)
	}
	if w.err != nil {
		errs = append([]error{w.err}, errs...)
	}
	return errors.Join(errs...)
}
