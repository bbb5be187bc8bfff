package watch

import (
	"sync"
	"time"

	"github.com/cairnkv/cairn/api/mvccpb"
	"github.com/cairnkv/cairn/mvcc"
)

// Source is the keyspace history the hub replays from. *mvcc.Store
// satisfies it. The hub calls it from its own goroutine and from OnWrite
// (prev_kv lookups), never while the store's writer waits on the hub.
type Source interface {
	// Rev returns the current revision.
	Rev() int64
	// CompactRev returns the compaction point (-1 if never compacted).
	CompactRev() int64
	// Events returns the events of revisions from..to on [key, end), never
	// splitting a revision, stopping once it has at least limit events; it
	// fails with mvcc.ErrCompacted when from is below the compaction point.
	Events(from, to int64, key, end []byte, limit int) ([]*mvccpb.Event, error)
	// Range reads keys; the hub uses it for prev_kv (the key at rev-1).
	Range(mvcc.RangeRequest) (*mvcc.RangeResponse, error)
}

// Defaults for Options.
const (
	DefaultProgressInterval = 10 * time.Minute
	DefaultChanSize         = 128
	DefaultReplayBatch      = 1000
	DefaultReplayRevisions  = 1000
	DefaultMaxParked        = 4096
	DefaultRetryInterval    = 10 * time.Millisecond
)

// Options configure a Hub. The zero value gives etcd's defaults.
type Options struct {
	// ProgressInterval is how long a ProgressNotify watcher must be idle
	// before it gets a progress notification. Zero means
	// DefaultProgressInterval; negative disables them.
	ProgressInterval time.Duration
	// ChanSize is the buffer of each stream's channel.
	ChanSize int
	// ReplayBatch is the number of events an unsynced watcher reads from
	// history per round (a revision is never split, so a round may read a
	// few more).
	ReplayBatch int
	// ReplayRevisions caps the revisions one history read spans, so a read
	// for a rarely changing key does not scan the whole history at once.
	ReplayRevisions int
	// MaxParked is the number of events a synced watcher may hold parked
	// (its stream's channel full) before it drops them and falls back to
	// replaying history, which keeps a stalled stream's memory bounded.
	MaxParked int
	// RetryInterval is the pause between delivery attempts to full
	// channels, and between history reads that failed.
	RetryInterval time.Duration
	// Clock is the source of time; nil means RealClock().
	Clock Clock
}

func (o *Options) setDefaults() {
	if o.ProgressInterval == 0 {
		o.ProgressInterval = DefaultProgressInterval
	}
	if o.ChanSize <= 0 {
		o.ChanSize = DefaultChanSize
	}
	if o.ReplayBatch <= 0 {
		o.ReplayBatch = DefaultReplayBatch
	}
	if o.ReplayRevisions <= 0 {
		o.ReplayRevisions = DefaultReplayRevisions
	}
	if o.MaxParked <= 0 {
		o.MaxParked = DefaultMaxParked
	}
	if o.RetryInterval <= 0 {
		o.RetryInterval = DefaultRetryInterval
	}
	if o.Clock == nil {
		o.Clock = RealClock()
	}
}

// Limits of the recent-revision buffer (see replay.go). Fields of Hub carry
// them so that tests can shrink them.
const (
	recentMinRevs   = 16
	recentMaxRevs   = 256
	recentMaxEvents = 4096
	recentMaxBytes  = 4 << 20
)

// Hub is the watch hub: an mvcc.Observer and mvcc.RestoreObserver that
// fans the store's events out to watchers. See the package documentation.
type Hub struct {
	opts Options

	// mu guards everything below. It is never held while waiting on a
	// channel: every send under it is non-blocking.
	mu      sync.Mutex
	src     Source
	started bool
	closed  bool
	// rev is the last revision given to OnWrite (or by Start/OnRestore):
	// every synced watcher has been given, or holds parked, every event up
	// to rev. It may trail the store's revision while an OnWrite is on its
	// way.
	rev int64

	// recent holds the events of revisions coverFrom..rev, in order.
	recent                  []revEvents
	recentEvents, recentLen int
	coverFrom               int64
	recentMinRevs           int
	recentMaxRevs           int
	recentMaxEvents         int
	recentMaxBytes          int

	synced       *index
	unsynced     map[*watcher]struct{}
	victims      map[*watcher]struct{} // watchers holding parked responses
	progress     map[*watcher]struct{} // ProgressNotify watchers
	wantProgress map[*Stream]struct{}  // streams owed a RequestProgress answer
	streams      map[*Stream]struct{}
	readFailed   bool   // a history read failed: retry after a pause
	pass         uint64 // delivery pass, to skip streams found full
	seq          uint64 // OnWrite call, for per-watcher batching

	// OnWrite scratch, reused under mu.
	matched []*watcher
	touched []*watcher

	ticker Ticker
	wakec  chan struct{}
	syncc  chan chan struct{}
	stopc  chan struct{}
	donec  chan struct{}
}

// NewHub returns a hub that is not yet started: give it to mvcc.Open as
// the Observer, then call Start with the store.
func NewHub(opts Options) *Hub {
	opts.setDefaults()
	return &Hub{
		opts:            opts,
		recentMinRevs:   recentMinRevs,
		recentMaxRevs:   recentMaxRevs,
		recentMaxEvents: recentMaxEvents,
		recentMaxBytes:  recentMaxBytes,
		synced:          newIndex(),
		unsynced:        map[*watcher]struct{}{},
		victims:         map[*watcher]struct{}{},
		progress:        map[*watcher]struct{}{},
		wantProgress:    map[*Stream]struct{}{},
		streams:         map[*Stream]struct{}{},
		wakec:           make(chan struct{}, 1),
		syncc:           make(chan chan struct{}),
		stopc:           make(chan struct{}),
		donec:           make(chan struct{}),
	}
}

// Start gives the hub its history source and starts its goroutine. Call it
// once, after mvcc.Open and before the store's writer starts (the hub
// takes the source's current revision as its own). Watch fails with
// ErrNotStarted before Start.
func (h *Hub) Start(src Source) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.started {
		panic("watch: Hub.Start called twice")
	}
	if h.closed {
		return
	}
	h.src = src
	h.started = true
	h.rev = src.Rev()
	h.resetRecent(h.rev + 1)
	if h.opts.ProgressInterval > 0 {
		h.ticker = h.opts.Clock.NewTicker(h.opts.ProgressInterval)
	}
	go h.run()
}

// Close stops the hub's goroutine and closes every stream still open (their
// channels close). OnWrite and OnRestore do nothing afterwards.
func (h *Hub) Close() {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.closed = true
	for s := range h.streams {
		h.closeStream(s)
	}
	started := h.started
	h.mu.Unlock()
	if started {
		close(h.stopc)
		<-h.donec
		if h.ticker != nil {
			h.ticker.Stop()
		}
	}
}

// Rev returns the revision up to which watchers have been notified. The
// server should put it in a Created response's header: a watch from
// revision 0 starts right after it.
func (h *Hub) Rev() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.rev
}

// OnWrite implements mvcc.Observer: it hands the revision's events to the
// synced watchers they match, one Response per watcher, without ever
// waiting for a consumer. Cost: an index lookup per event plus constant
// work per matching watcher (and one Range per event for prev_kv watchers).
func (h *Hub) OnWrite(rev int64, evs []*mvccpb.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.remember(rev, evs)
	h.seq++
	seq := h.seq
	touched := h.touched[:0]
	var withPrev []*mvccpb.Event
	for i, ev := range evs {
		h.matched = h.synced.collect(ev.Kv.Key, h.matched[:0])
		for _, w := range h.matched {
			if rev < w.minRev || w.filtered(ev) {
				continue
			}
			// A one-event batch shares the caller's array (cap 1, so an
			// append copies).
			one := evs[i : i+1 : i+1]
			if w.prevKV {
				if withPrev == nil {
					withPrev = make([]*mvccpb.Event, len(evs))
				}
				if withPrev[i] == nil {
					withPrev[i] = h.prevOf(ev)
				}
				one = withPrev[i : i+1 : i+1]
			}
			if w.seq != seq {
				w.seq = seq
				w.batch = one
				touched = append(touched, w)
			} else {
				w.batch = append(w.batch, one[0])
			}
		}
	}
	clear(h.matched)
	// Deliver only now: delivering may move a watcher out of the index.
	for _, w := range touched {
		b := w.batch
		w.batch = nil
		h.deliver(w, Response{WatchID: w.id, Events: b, Revision: rev})
	}
	clear(touched)
	h.touched = touched[:0]
	for s := range h.wantProgress {
		h.tryStreamProgress(s)
	}
}

// OnRestore implements mvcc.RestoreObserver: the keyspace was replaced, so
// every watcher goes back to unsynced at the first revision it has not
// been given, and replays it from the new history (or is compacted).
func (h *Hub) OnRestore(rev, compactRev int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	for s := range h.streams {
		for _, w := range s.watchers {
			switch w.state {
			case stSynced:
				next := h.resumeRev(w)
				h.synced.remove(w)
				h.dropPending(w)
				w.minRev = next
				w.state = stUnsynced
				h.unsynced[w] = struct{}{}
			case stUnsynced:
				next := h.resumeRev(w)
				h.dropPending(w)
				w.minRev = next
			default:
				continue
			}
			w.gen++ // a history read in flight is void
			h.refresh(w)
		}
	}
	h.rev = rev
	h.resetRecent(rev + 1)
	h.kick()
}

// prevOf returns ev with PrevKv set to the key as of the revision before
// (as etcd: none for a creation, none if that revision is compacted).
func (h *Hub) prevOf(ev *mvccpb.Event) *mvccpb.Event {
	kv := ev.Kv
	if kv.ModRevision <= 1 || (ev.Type == mvccpb.Event_PUT && kv.CreateRevision == kv.ModRevision) {
		return ev
	}
	resp, err := h.src.Range(mvcc.RangeRequest{Key: kv.Key, Revision: kv.ModRevision - 1})
	if err != nil || len(resp.Kvs) == 0 {
		return ev
	}
	return &mvccpb.Event{Type: ev.Type, Kv: kv, PrevKv: resp.Kvs[0]}
}

// kick wakes the hub's goroutine. The caller holds mu.
func (h *Hub) kick() {
	select {
	case h.wakec <- struct{}{}:
	default:
	}
}

// run is the hub's goroutine: it retries parked deliveries, replays history
// for unsynced watchers, and sends idle progress notifications. Close stops
// it.
func (h *Hub) run() {
	defer close(h.donec)
	var tick <-chan time.Time
	if h.ticker != nil {
		tick = h.ticker.C()
	}
	var idleWaiters []chan struct{}
	for {
		select {
		case <-h.stopc:
			return
		case <-tick:
			h.progressTick()
		default:
		}
		busy := h.flush()
		if h.replay() {
			busy = true
		}
		if busy {
			continue
		}
		select {
		case <-h.wakec:
			continue // woken meanwhile: look again before calling it idle
		default:
		}
		var retry <-chan time.Time
		if h.needRetry() {
			retry = h.opts.Clock.After(h.opts.RetryInterval)
		}
		for _, done := range idleWaiters {
			close(done)
		}
		idleWaiters = idleWaiters[:0]
		select {
		case <-h.stopc:
			return
		case <-h.wakec:
		case <-retry:
		case <-tick:
			h.progressTick()
		case done := <-h.syncc:
			idleWaiters = append(idleWaiters, done)
		}
	}
}

// idle blocks until the hub's goroutine has nothing left it can do at once
// (tests use it as a barrier before asserting that nothing was sent).
func (h *Hub) idle() {
	done := make(chan struct{})
	select {
	case h.syncc <- done:
	case <-h.donec:
		return
	}
	select {
	case <-done:
	case <-h.donec:
	}
}

// needRetry reports whether something waits on a full channel or a failed
// read, so the goroutine must try again after a pause even if not woken.
func (h *Hub) needRetry() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.victims) > 0 || h.readFailed {
		return true
	}
	for s := range h.wantProgress {
		if s.progressFull {
			return true
		}
	}
	return false
}

// progressTick sends a progress notification to every ProgressNotify
// watcher that got no events since the last tick and is caught up, as
// etcd's server does; a full channel skips it (the stream is busy anyway).
func (h *Hub) progressTick() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for w := range h.progress {
		if w.idle && h.caughtUp(w) {
			trySend(w.s.ch, Response{WatchID: w.id, Revision: h.rev, Progress: true})
		}
		w.idle = true
	}
}

// Watchers reports how many watchers are registered, live or compacted but
// not yet cancelled (for metrics).
func (h *Hub) Watchers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for s := range h.streams {
		n += len(s.watchers)
	}
	return n
}
