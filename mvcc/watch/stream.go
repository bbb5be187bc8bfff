package watch

import (
	"bytes"

	"github.com/cairnkv/cairn/api/mvccpb"
	"github.com/cairnkv/cairn/mvcc"
)

// Request is etcd's WatchCreateRequest, less the fields the server keeps
// (fragment, created notifications).
type Request struct {
	// Key is the first key; with RangeEnd empty, the only key. An empty key
	// reads as "\x00", as etcd's server has it.
	Key []byte
	// RangeEnd ends the range [Key, RangeEnd); "\x00" means every key >=
	// Key. A RangeEnd not after Key is ErrEmptyWatcherRange.
	RangeEnd []byte
	// StartRev is the first revision to report; 0 means from the next
	// revision on. Negative is mvcc.ErrCompacted, as etcd's server answers.
	StartRev int64
	// PrevKV sets each event's PrevKv: the key as of the revision before
	// (none for a creation).
	PrevKV bool
	// NoPut and NoDelete drop events of that type.
	NoPut, NoDelete bool
	// ProgressNotify asks for a progress notification whenever the watcher
	// has been idle for Options.ProgressInterval.
	ProgressNotify bool
	// WatchID is the client's choice; 0 means assign one (the stream's
	// next unused ID, counting from 0, as etcd does).
	WatchID int64
}

// Response is what a stream's channel carries; the server turns it into an
// etcd WatchResponse. Exactly one of these shapes:
//   - events: WatchID, Events (all the events of one or more whole
//     revisions, in order), Revision (the header revision: the revision
//     of a live write, or the hub's revision when history was read);
//   - compacted: WatchID, CompactRevision (non-zero) and Canceled; the
//     watcher's start (or replay position) fell below the compaction
//     point and it is finished. Revision is 0, as etcd sends it;
//   - progress: Progress, Revision (every event up to it was delivered
//     before), WatchID (-1 for an answer to RequestProgress, on behalf of
//     every watcher of the stream).
//
// Events and the events they point to are shared between watchers and
// with the store: read them, never modify them.
type Response struct {
	WatchID         int64
	Events          []*mvccpb.Event
	Revision        int64
	CompactRevision int64
	Canceled        bool
	Progress        bool
}

// Stream is one client watch stream: its watchers share one channel. Its
// methods may be called from any goroutine.
type Stream struct {
	h  *Hub
	ch chan Response

	// Guarded by h.mu.
	watchers       map[int64]*watcher
	nextID         int64
	closed         bool
	live           int // watchers synced or unsynced
	blocked        int // watchers unsynced or holding parked responses
	progressWanted bool
	progressFull   bool // the owed answer found the channel full
	fullPass       uint64
}

// NewStream returns a new stream. On a closed hub, the stream is closed.
func (h *Hub) NewStream() *Stream {
	s := &Stream{h: h, ch: make(chan Response, h.opts.ChanSize), watchers: map[int64]*watcher{}}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		s.closed = true
		close(s.ch)
		return s
	}
	h.streams[s] = struct{}{}
	return s
}

// Chan returns the stream's responses. It is closed by Close (or
// Hub.Close). Responses for a watcher may arrive before Watch has returned
// its ID to the caller; as etcd's server does, hold them until the Created
// response is out.
func (s *Stream) Chan() <-chan Response { return s.ch }

// Watch creates a watcher and returns its ID. A start revision at or
// before the hub's revision replays history first; a compacted one is
// answered with a compacted response (not an error), as etcd does.
func (s *Stream) Watch(req Request) (int64, error) {
	if req.StartRev < 0 {
		return -1, mvcc.ErrCompacted
	}
	key := req.Key
	if len(key) == 0 {
		key = []byte{0}
	}
	w := &watcher{
		s:              s,
		key:            bytes.Clone(key),
		prevKV:         req.PrevKV,
		noPut:          req.NoPut,
		noDelete:       req.NoDelete,
		progressNotify: req.ProgressNotify,
		slot:           -1,
	}
	switch end := req.RangeEnd; {
	case len(end) == 0:
		w.single = true
	case len(end) == 1 && end[0] == 0:
		w.reqEnd = []byte{0} // end stays nil: +infinity
	default:
		if bytes.Compare(key, end) >= 0 {
			return -1, ErrEmptyWatcherRange
		}
		w.reqEnd = bytes.Clone(end)
		w.end = w.reqEnd
	}

	h := s.h
	h.mu.Lock()
	defer h.mu.Unlock()
	if s.closed || h.closed {
		return -1, ErrClosed
	}
	if !h.started {
		return -1, ErrNotStarted
	}
	id := req.WatchID
	if id == 0 {
		for s.watchers[s.nextID] != nil {
			s.nextID++
		}
		id = s.nextID
		s.nextID++
	} else if s.watchers[id] != nil {
		return -1, ErrWatcherDuplicateID
	}
	w.id = id
	s.watchers[id] = w
	s.live++
	if w.progressNotify {
		w.idle = true
		h.progress[w] = struct{}{}
	}
	if req.StartRev == 0 || req.StartRev > h.rev {
		w.minRev = max(req.StartRev, h.rev+1)
		w.state = stSynced
		h.synced.add(w)
	} else {
		w.minRev = req.StartRev
		w.state = stUnsynced
		h.unsynced[w] = struct{}{}
		h.kick()
	}
	h.refresh(w)
	return id, nil
}

// Cancel removes a watcher: nothing more is sent for it (responses already
// in the channel stay there). Unknown IDs, and any ID on a closed stream,
// are ErrWatcherNotExist. A compacted watcher keeps its ID until Cancel.
func (s *Stream) Cancel(id int64) error {
	h := s.h
	h.mu.Lock()
	defer h.mu.Unlock()
	w := s.watchers[id]
	if s.closed || w == nil {
		return ErrWatcherNotExist
	}
	h.remove(w)
	delete(s.watchers, id)
	h.tryStreamProgress(s)
	return nil
}

// RequestProgress asks for one progress notification with WatchID -1 and
// the hub's revision, sent once every watcher of the stream is caught up:
// at once if they are, else as soon as the last one is (requests made
// meanwhile are answered by that one notification). A stream with no live
// watcher gets nothing.
//
// etcd 3.5.8 to 3.5.12 deferred the answer the same way; since 3.5.13 and
// in 3.6 etcd drops a request made while a watcher is unsynced (the client
// asks again), which a deferred answer also satisfies. Either way a
// notification at revision R follows every event up to R.
func (s *Stream) RequestProgress() {
	h := s.h
	h.mu.Lock()
	defer h.mu.Unlock()
	if s.closed || h.closed {
		return
	}
	s.progressWanted = true
	h.wantProgress[s] = struct{}{}
	h.tryStreamProgress(s)
	if s.progressWanted {
		h.kick()
	}
}

// Close removes every watcher of the stream and closes its channel; the
// responses already in it can still be read. Close is idempotent.
func (s *Stream) Close() {
	h := s.h
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closeStream(s)
}

func (h *Hub) closeStream(s *Stream) {
	if s.closed {
		return
	}
	h.unwant(s)
	for _, w := range s.watchers {
		h.remove(w)
	}
	clear(s.watchers)
	s.closed = true
	delete(h.streams, s)
	close(s.ch)
}
