package watch

import (
	"errors"

	"github.com/cairnkv/cairn/api/mvccpb"
	"github.com/cairnkv/cairn/mvcc"
)

// revEvents is one revision in the recent buffer.
type revEvents struct {
	rev  int64
	evs  []*mvccpb.Event
	size int
}

// remember appends a revision to the recent buffer and makes it h.rev. The
// buffer holds the last few revisions' events exactly as OnWrite got them
// (shared, not copied), so that an unsynced watcher can cover the last
// gap to h.rev under the lock without reading the store: see catchUp.
func (h *Hub) remember(rev int64, evs []*mvccpb.Event) {
	if rev != h.rev+1 {
		// Not contiguous (a write before Start, or a restore we were not
		// told of): what the buffer holds no longer leads up to rev.
		h.resetRecent(rev)
	}
	h.rev = rev
	size := 0
	for _, ev := range evs {
		size += len(ev.Kv.Key) + len(ev.Kv.Value)
	}
	h.recent = append(h.recent, revEvents{rev: rev, evs: evs, size: size})
	h.recentEvents += len(evs)
	h.recentLen += size
	for len(h.recent) > h.recentMinRevs &&
		(len(h.recent) > h.recentMaxRevs || h.recentEvents > h.recentMaxEvents || h.recentLen > h.recentMaxBytes) {
		old := h.recent[0]
		h.recent[0] = revEvents{}
		h.recent = h.recent[1:]
		h.recentEvents -= len(old.evs)
		h.recentLen -= old.size
		h.coverFrom = old.rev + 1
	}
}

// resetRecent empties the buffer; the next revision it will hold is from.
func (h *Hub) resetRecent(from int64) {
	clear(h.recent)
	h.recent = h.recent[:0]
	h.recentEvents, h.recentLen = 0, 0
	h.coverFrom = from
}

// catchUp tries to finish an unsynced watcher (holding nothing parked)
// under the lock: compacted if its next revision is below the compaction
// point; joined to synced if it needs nothing up to h.rev, or if the recent
// buffer holds everything from its next revision, which it is given first.
// It reports false when the watcher must read history first.
//
// This is where the race with OnWrite is closed. h.rev only moves under
// mu, and OnWrite gives a revision to the synced watchers under mu too, so
// a watcher that was given everything up to h.rev and joins synced in the
// same hold of mu receives every later revision exactly once.
func (h *Hub) catchUp(w *watcher) bool {
	if c := h.src.CompactRev(); w.minRev < c {
		h.compact(w, c)
		return true
	}
	if w.minRev <= h.rev {
		if w.minRev < h.coverFrom {
			return false
		}
		var out []*mvccpb.Event
		for _, re := range h.recent[w.minRev-h.coverFrom:] {
			for _, ev := range re.evs {
				if w.contains(ev.Kv.Key) && !w.filtered(ev) {
					if w.prevKV {
						ev = h.prevOf(ev)
					}
					out = append(out, ev)
				}
			}
		}
		if len(out) > 0 {
			h.deliver(w, Response{WatchID: w.id, Events: out, Revision: h.rev})
		}
	}
	h.join(w)
	return true
}

// maxReadsPerRound bounds the history reads of one replay round, so that
// the lock is taken again (to apply them) after a bounded amount of I/O.
const maxReadsPerRound = 64

// read is one history read for one unsynced watcher, done without the
// lock.
type read struct {
	w        *watcher
	gen      uint64
	from, to int64
	hdr      int64 // h.rev when planned: the responses' header revision
	evs      []*mvccpb.Event
	next     int64
	err      error
}

// replay runs one round for the unsynced watchers: under the lock, each
// one that holds nothing parked is caught up if it can be, otherwise a
// read of revisions [minRev, min(h.rev, minRev+ReplayRevisions-1)] is
// planned; the reads run without the lock; under the lock again, each
// result still current (same gen) is delivered as one response, minRev
// moves past it, and the watcher tries to catch up. Reads never go above
// the h.rev of their planning: every revision up to it is visible in the
// store, and OnWrite has handed it out, so nothing the watcher misses
// while unsynced lies below what it read. It reports whether anything
// moved.
func (h *Hub) replay() bool {
	h.mu.Lock()
	if h.closed || len(h.unsynced) == 0 {
		h.mu.Unlock()
		return false
	}
	h.readFailed = false
	moved := false
	var reads []read
	for w := range h.unsynced {
		if w.pending.len() > 0 {
			continue // its last chunk waits in the victim queue
		}
		if h.catchUp(w) {
			moved = true
			continue
		}
		to := min(h.rev, w.minRev+int64(h.opts.ReplayRevisions)-1)
		reads = append(reads, read{w: w, gen: w.gen, from: w.minRev, to: to, hdr: h.rev})
		if len(reads) == maxReadsPerRound {
			break
		}
	}
	h.mu.Unlock()
	if len(reads) == 0 {
		return moved
	}

	for i := range reads {
		h.readHistory(&reads[i])
	}

	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	for i := range reads {
		r := &reads[i]
		w := r.w
		if w.gen != r.gen {
			continue // cancelled, restored, ...: the read is void
		}
		switch {
		case errors.Is(r.err, mvcc.ErrCompacted):
			h.compact(w, h.src.CompactRev())
		case r.err != nil:
			h.readFailed = true
			continue
		default:
			if len(r.evs) > 0 {
				h.deliver(w, Response{WatchID: w.id, Events: r.evs, Revision: r.hdr})
			}
			w.minRev = r.next
			if w.pending.len() == 0 {
				h.catchUp(w)
			}
		}
		moved = true
	}
	return moved
}

// readHistory reads one chunk for r.w and prepares its events (filters,
// prev_kv). It runs without the lock; it reads only the watcher's fields
// that never change.
func (h *Hub) readHistory(r *read) {
	w := r.w
	evs, err := h.src.Events(r.from, r.to, w.key, w.reqEnd, h.opts.ReplayBatch)
	if err != nil {
		r.err = err
		return
	}
	r.next = r.to + 1
	if len(evs) >= h.opts.ReplayBatch {
		// The read may have stopped early, at the end of a revision.
		if last := evs[len(evs)-1].Kv.ModRevision; last < r.to {
			r.next = last + 1
		}
	}
	out := evs[:0] // the slice is ours; the events are left as they are
	for _, ev := range evs {
		if w.filtered(ev) {
			continue
		}
		if w.prevKV {
			ev = h.prevOf(ev)
		}
		out = append(out, ev)
	}
	clear(evs[len(out):])
	r.evs = out
}
