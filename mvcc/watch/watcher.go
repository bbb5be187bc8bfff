package watch

import (
	"bytes"

	"github.com/cairnkv/cairn/api/mvccpb"
)

// Watcher states. A watcher is in exactly one; its parked responses
// (pending) are orthogonal to it.
const (
	// stSynced: in the index; OnWrite gives it each revision >= minRev.
	stSynced = iota
	// stUnsynced: in Hub.unsynced; the hub's goroutine replays history
	// from minRev.
	stUnsynced
	// stCompacted: its history was compacted; it got (or holds parked) its
	// compacted response and receives nothing more. Its ID stays taken
	// until Cancel or Close, as in etcd.
	stCompacted
	// stRemoved: cancelled or its stream closed.
	stRemoved
)

// watcher is one watch. Its request fields never change after Watch, so
// the hub's goroutine reads them without the lock; the rest is guarded by
// Hub.mu.
type watcher struct {
	s  *Stream
	id int64

	key []byte
	// reqEnd is the range end as the store reads it: nil (single key),
	// "\x00" (every key >= key) or the end. end is the index's form: nil
	// is +infinity.
	reqEnd, end    []byte
	single         bool
	prevKV         bool
	noPut          bool
	noDelete       bool
	progressNotify bool

	state int
	// minRev: synced, the first revision it may receive (its start, or the
	// revision after the one it joined at); unsynced, the next revision to
	// read from history.
	minRev int64
	// pending holds responses that found the stream's channel full, in
	// order; while it is not empty, new responses queue behind it.
	pending       queue
	pendingEvents int
	// blocked: counted in Stream.blocked (unsynced, or holding parked
	// responses), so the stream cannot yet answer RequestProgress.
	blocked bool
	// idle: no events since the last progress tick.
	idle bool
	// gen changes whenever the watcher changes state, voiding history read
	// for it without the lock.
	gen  uint64
	slot int // in its index set

	// OnWrite scratch: the events of the current call (seq) for it.
	seq   uint64
	batch []*mvccpb.Event
}

func (w *watcher) contains(key []byte) bool {
	switch {
	case w.single:
		return bytes.Equal(key, w.key)
	case w.end == nil:
		return bytes.Compare(key, w.key) >= 0
	default:
		return bytes.Compare(key, w.key) >= 0 && bytes.Compare(key, w.end) < 0
	}
}

func (w *watcher) filtered(ev *mvccpb.Event) bool {
	if ev.Type == mvccpb.Event_PUT {
		return w.noPut
	}
	return w.noDelete
}

func trySend(ch chan Response, r Response) bool {
	select {
	case ch <- r:
		return true
	default:
		return false
	}
}

// deliver sends r to w's stream, or parks it behind w's earlier parked
// responses. A synced watcher holding more than MaxParked events falls
// back to history. The caller holds mu.
func (h *Hub) deliver(w *watcher, r Response) {
	if len(r.Events) > 0 {
		w.idle = false
	}
	if w.pending.len() == 0 {
		if trySend(w.s.ch, r) {
			return
		}
		h.victims[w] = struct{}{}
		h.kick()
	}
	w.pending.push(r)
	w.pendingEvents += len(r.Events)
	h.refresh(w)
	if w.state == stSynced && w.pendingEvents > h.opts.MaxParked {
		h.desync(w)
	}
}

// resumeRev is the first revision w has not been given (delivered to the
// channel): its first parked event, else, if synced, the revision after
// both its start and the last OnWrite, else the next one to read.
func (h *Hub) resumeRev(w *watcher) int64 {
	for _, r := range w.pending.items() {
		if len(r.Events) > 0 {
			return r.Events[0].Kv.ModRevision
		}
	}
	if w.state == stSynced {
		return max(w.minRev, h.rev+1)
	}
	return w.minRev
}

func (h *Hub) dropPending(w *watcher) {
	w.pending.reset()
	w.pendingEvents = 0
	delete(h.victims, w)
}

// desync moves a synced watcher to unsynced, dropping what it had parked:
// it will read that again from history.
func (h *Hub) desync(w *watcher) {
	next := h.resumeRev(w)
	h.synced.remove(w)
	h.dropPending(w)
	w.minRev = next
	w.state = stUnsynced
	w.gen++
	h.unsynced[w] = struct{}{}
	h.refresh(w)
	h.kick()
}

// join moves an unsynced watcher that has been given everything up to
// h.rev to synced.
func (h *Hub) join(w *watcher) {
	delete(h.unsynced, w)
	w.minRev = max(w.minRev, h.rev+1)
	w.state = stSynced
	w.gen++
	h.synced.add(w)
	h.refresh(w)
}

// compact ends an unsynced watcher whose next revision is below the
// compaction point c with a compacted response, as etcd does.
func (h *Hub) compact(w *watcher, c int64) {
	delete(h.unsynced, w)
	delete(h.progress, w)
	w.state = stCompacted
	w.gen++
	w.s.live--
	h.deliver(w, Response{WatchID: w.id, CompactRevision: c, Canceled: true})
	h.refresh(w)
}

// remove takes w out of the hub (Cancel, Close).
func (h *Hub) remove(w *watcher) {
	switch w.state {
	case stSynced:
		h.synced.remove(w)
		w.s.live--
	case stUnsynced:
		delete(h.unsynced, w)
		w.s.live--
	}
	h.dropPending(w)
	delete(h.progress, w)
	w.state = stRemoved
	w.gen++
	h.refresh(w)
}

// refresh keeps Stream.blocked in step with w, and answers a deferred
// RequestProgress when the last blocking watcher of the stream clears.
func (h *Hub) refresh(w *watcher) {
	b := w.state == stUnsynced || (w.state != stRemoved && w.pending.len() > 0)
	if b == w.blocked {
		return
	}
	w.blocked = b
	s := w.s
	if b {
		s.blocked++
		return
	}
	s.blocked--
	if s.blocked == 0 && s.progressWanted {
		h.tryStreamProgress(s)
	}
}

// caughtUp reports whether a progress notification at h.rev is true for
// w: it is synced, holds nothing parked, and does not start after h.rev+1
// (a client resumes after a progress revision, so telling a watcher that
// starts later would widen it).
func (h *Hub) caughtUp(w *watcher) bool {
	return w.state == stSynced && w.pending.len() == 0 && w.minRev <= h.rev+1
}

// tryStreamProgress answers a RequestProgress owed to s, if every watcher
// of s is caught up: one response with WatchID -1 at h.rev, behind
// everything already in the channel. A stream with no live watcher gets
// nothing, as in etcd.
func (h *Hub) tryStreamProgress(s *Stream) {
	if !s.progressWanted {
		return
	}
	s.progressFull = false
	if s.live == 0 {
		h.unwant(s)
		return
	}
	if s.blocked > 0 {
		return
	}
	for _, w := range s.watchers {
		if w.state == stSynced && w.minRev > h.rev+1 {
			return
		}
	}
	if trySend(s.ch, Response{WatchID: -1, Revision: h.rev, Progress: true}) {
		h.unwant(s)
	} else {
		s.progressFull = true // the goroutine retries
	}
}

func (h *Hub) unwant(s *Stream) {
	s.progressWanted = false
	delete(h.wantProgress, s)
}

// flush retries parked responses, in order per watcher, and owed progress
// answers. It reports whether it delivered anything.
func (h *Hub) flush() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.pass++
	progressed := false
	for w := range h.victims {
		s := w.s
		if s.fullPass == h.pass {
			continue // a watcher of this stream already found it full
		}
		for w.pending.len() > 0 && trySend(s.ch, w.pending.front()) {
			w.pendingEvents -= len(w.pending.front().Events)
			w.pending.pop()
			progressed = true
		}
		if w.pending.len() > 0 {
			s.fullPass = h.pass
			continue
		}
		delete(h.victims, w)
		h.refresh(w)
	}
	for s := range h.wantProgress {
		h.tryStreamProgress(s)
	}
	return progressed
}

// queue is a FIFO of parked responses that keeps its array for reuse once
// drained (unless it grew large).
type queue struct {
	buf  []Response
	head int
}

func (q *queue) len() int          { return len(q.buf) - q.head }
func (q *queue) front() Response   { return q.buf[q.head] }
func (q *queue) items() []Response { return q.buf[q.head:] }

func (q *queue) push(r Response) {
	if q.head > 0 && len(q.buf) == cap(q.buf) {
		n := copy(q.buf, q.buf[q.head:])
		clear(q.buf[n:])
		q.buf, q.head = q.buf[:n], 0
	}
	q.buf = append(q.buf, r)
}

func (q *queue) pop() {
	q.buf[q.head] = Response{}
	q.head++
	if q.head == len(q.buf) {
		q.reset()
	}
}

// reset empties the queue.
func (q *queue) reset() {
	if cap(q.buf) > 64 {
		q.buf = nil
	} else {
		clear(q.buf)
		q.buf = q.buf[:0]
	}
	q.head = 0
}
