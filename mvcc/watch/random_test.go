package watch

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cairnkv/cairn/api/mvccpb"
	"github.com/cairnkv/cairn/mvcc"
)

// tee records every OnWrite before handing it to the hub: the model's
// history. Embedding the hub keeps OnRestore.
type tee struct {
	*Hub
	mu   sync.Mutex
	revs []int64
	evs  [][]*mvccpb.Event
}

func (t *tee) OnWrite(rev int64, evs []*mvccpb.Event) {
	t.mu.Lock()
	t.revs = append(t.revs, rev)
	t.evs = append(t.evs, evs)
	t.mu.Unlock()
	t.Hub.OnWrite(rev, evs)
}

// modelEvent is one event of the history with the key as it was at the
// revision before (nil if absent or a creation).
type modelEvent struct {
	ev   *mvccpb.Event
	prev *mvccpb.KeyValue
}

// spec is one watcher of the randomized test and what is known of it.
type spec struct {
	stream int
	id     int64
	req    Request
	// start is known to lie in [startLo, startHi] (StartRev 0 is resolved
	// against the hub's revision around the Watch call).
	startLo, startHi int64
	cancelled        bool
	seq              int // creator step at which it was created
}

// progressReq is a RequestProgress call: on which stream, at which
// creator step.
type progressReq struct {
	stream, seq int
}

// TestRandomized runs random writes and compactions on a store, while
// watchers with random ranges, start revisions, filters and prev_kv come
// and go on streams whose consumers stall at random, and RequestProgress
// is called now and then. Afterwards every watcher must have received
// exactly the events a model computes from the recorded history: all of
// them from its start, or a prefix followed by a compacted response, or
// (cancelled) a prefix; each revision whole, in order. A progress answer
// at revision R must come after every event up to R of the watchers that
// existed when it was requested. WATCH_SEED=n replays a seed.
func TestRandomized(t *testing.T) {
	seeds := []uint64{uint64(time.Now().UnixNano()), 1, 2}
	if s := os.Getenv("WATCH_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		seeds = []uint64{n}
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			t.Logf("replay with WATCH_SEED=%d", seed)
			runRandomized(t, seed)
		})
	}
}

func runRandomized(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 1))
	opts := Options{
		ChanSize:        1 + rng.IntN(8),
		ReplayBatch:     1 + rng.IntN(20),
		ReplayRevisions: 1 + rng.IntN(200),
		MaxParked:       1 + rng.IntN(100),
		RetryInterval:   time.Millisecond,
	}
	t.Logf("options %+v", opts)
	var rec *tee
	e := newEnv(t, opts, func(h *Hub) mvcc.Observer {
		rec = &tee{Hub: h}
		return rec
	})
	shrinkRecent(e.hub, 1+rng.IntN(20))

	const nKeys = 12
	key := func(r *rand.Rand) []byte { return fmt.Appendf(nil, "k%02d", r.IntN(nKeys)) }

	// Streams and their consumers, some of them slow.
	const nStreams = 4
	streams := make([]*Stream, nStreams)
	got := make([][]Response, nStreams) // per stream, in order
	var readers sync.WaitGroup
	for i := range streams {
		streams[i] = e.hub.NewStream()
		slow := i%2 == 1
		rr := rand.New(rand.NewPCG(seed, uint64(100+i)))
		readers.Add(1)
		go func() {
			defer readers.Done()
			for r := range streams[i].Chan() {
				got[i] = append(got[i], r)
				if slow && rr.IntN(10) == 0 {
					time.Sleep(time.Duration(rr.IntN(2000)) * time.Microsecond)
				}
			}
		}()
	}

	// The writer.
	wr := rand.New(rand.NewPCG(seed, 2))
	writerErr := make(chan error, 1)
	go func() {
		writerErr <- randomWrites(e.store, wr, key, 800)
	}()

	// Watchers come and go meanwhile.
	cr := rand.New(rand.NewPCG(seed, 3))
	var specs []*spec
	var progress []progressReq
	for step := range 300 {
		switch p := cr.IntN(100); {
		case p < 8 && len(specs) > 0:
			sp := specs[cr.IntN(len(specs))]
			if !sp.cancelled {
				if err := streams[sp.stream].Cancel(sp.id); err != nil {
					t.Fatalf("cancel: %v", err)
				}
				sp.cancelled = true
			}
		case p < 15:
			si := cr.IntN(nStreams)
			streams[si].RequestProgress()
			progress = append(progress, progressReq{stream: si, seq: step})
		default:
			sp := &spec{stream: cr.IntN(nStreams), seq: step}
			req := Request{Key: key(cr), PrevKV: cr.IntN(3) == 0}
			switch cr.IntN(5) {
			case 0: // single key
			case 1:
				req.RangeEnd = []byte{0}
			case 2:
				req.Key, req.RangeEnd = []byte{0}, []byte{0}
			default:
				end := key(cr)
				if bytes.Compare(req.Key, end) < 0 {
					req.RangeEnd = end
				}
			}
			switch cr.IntN(6) {
			case 0:
				req.NoPut = true
			case 1:
				req.NoDelete = true
			}
			cur := e.store.Rev()
			if p := cr.IntN(4); p > 0 {
				if p == 1 { // anywhere, often compacted
					req.StartRev = 1 + cr.Int64N(cur+3)
				} else { // recent, or a little ahead
					req.StartRev = max(1, cur-cr.Int64N(40)+3)
				}
				sp.startLo, sp.startHi = req.StartRev, req.StartRev
			} else {
				sp.startLo = e.hub.Rev() + 1
			}
			id, err := streams[sp.stream].Watch(req)
			if err != nil {
				t.Fatalf("watch %+v: %v", req, err)
			}
			if req.StartRev == 0 {
				sp.startHi = e.hub.Rev() + 1
			}
			sp.id, sp.req = id, req
			specs = append(specs, sp)
		}
		if cr.IntN(4) == 0 {
			time.Sleep(time.Duration(cr.IntN(300)) * time.Microsecond)
		}
	}
	if err := <-writerErr; err != nil {
		t.Fatal(err)
	}

	// Let every watcher catch up, then close the streams.
	waitFor(t, func() bool {
		e.hub.mu.Lock()
		defer e.hub.mu.Unlock()
		if len(e.hub.unsynced) > 0 || len(e.hub.victims) > 0 {
			return false
		}
		for _, s := range streams {
			if len(s.ch) > 0 {
				return false
			}
		}
		return true
	})
	for _, s := range streams {
		s.Close()
	}
	readers.Wait()

	m := buildModel(t, rec)
	finalCompact := e.store.CompactRev()
	stats := map[string]int{}
	for _, sp := range specs {
		checkWatcher(t, sp, got[sp.stream], m, finalCompact, stats)
	}
	checkProgress(t, specs, progress, got, m, stats)
	t.Logf("final revision %d, compacted at %d; %v", e.store.Rev(), finalCompact, stats)
}

// randomWrites runs n random write operations: puts, deletes of a key or a
// range, txns of several puts (sometimes with a delete "from key onwards"
// that covers one of them, which etcd allows), and compactions.
func randomWrites(s *mvcc.Store, r *rand.Rand, key func(*rand.Rand) []byte, n int) error {
	for i := range n {
		var err error
		switch p := r.IntN(100); {
		case p < 55:
			_, err = s.Put(mvcc.PutRequest{Key: key(r), Value: fmt.Appendf(nil, "v%d", i)})
		case p < 65:
			_, err = s.DeleteRange(mvcc.DeleteRangeRequest{Key: key(r)})
		case p < 72:
			a, b := key(r), key(r)
			if bytes.Compare(a, b) > 0 {
				a, b = b, a
			}
			_, err = s.DeleteRange(mvcc.DeleteRangeRequest{Key: a, RangeEnd: b})
		case p < 92:
			var ops []mvcc.RequestOp
			seen := map[string]bool{}
			if r.IntN(4) == 0 {
				ops = append(ops, mvcc.RequestOp{DeleteRange: &mvcc.DeleteRangeRequest{Key: key(r), RangeEnd: []byte{0}}})
			}
			for range 1 + r.IntN(4) {
				k := key(r)
				if seen[string(k)] {
					continue
				}
				seen[string(k)] = true
				ops = append(ops, mvcc.RequestOp{Put: &mvcc.PutRequest{Key: k, Value: fmt.Appendf(nil, "t%d", i)}})
			}
			_, err = s.Txn(mvcc.TxnRequest{Success: ops})
		case p < 94:
			// Mostly well behind the head, now and then right at it.
			lo, hi := s.CompactRev()+1, s.Rev()
			if r.IntN(10) > 0 {
				hi -= 150
			}
			if lo <= hi {
				_, err = s.Compact(lo + r.Int64N(hi-lo+1))
			}
		}
		if err != nil {
			return fmt.Errorf("write %d: %w", i, err)
		}
		if r.IntN(8) == 0 {
			time.Sleep(time.Duration(r.IntN(200)) * time.Microsecond)
		}
	}
	return nil
}

// model is the whole history, with each event's previous key-value.
type model struct {
	events []modelEvent // in revision order
}

func buildModel(t *testing.T, rec *tee) *model {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	m := &model{}
	state := map[string]*mvccpb.KeyValue{}
	for i, rev := range rec.revs {
		if i > 0 && rev != rec.revs[i-1]+1 {
			t.Fatalf("history not contiguous at %d", rev)
		}
		// PrevKv reads the revision before: the state before any event of
		// this one.
		var prevs []*mvccpb.KeyValue
		for _, ev := range rec.evs[i] {
			var prev *mvccpb.KeyValue
			if !(ev.Type == mvccpb.Event_PUT && ev.Kv.CreateRevision == ev.Kv.ModRevision) {
				prev = state[string(ev.Kv.Key)]
			}
			prevs = append(prevs, prev)
		}
		for j, ev := range rec.evs[i] {
			if ev.Type == mvccpb.Event_PUT {
				state[string(ev.Kv.Key)] = ev.Kv
			} else {
				delete(state, string(ev.Kv.Key))
			}
			m.events = append(m.events, modelEvent{ev: ev, prev: prevs[j]})
		}
	}
	return m
}

// expected returns the model's events for a watcher starting at start.
func (m *model) expected(req Request, start int64) []modelEvent {
	w := &watcher{key: req.Key}
	switch {
	case len(req.RangeEnd) == 0:
		w.single = true
	case len(req.RangeEnd) == 1 && req.RangeEnd[0] == 0:
	default:
		w.end = req.RangeEnd
	}
	w.noPut, w.noDelete = req.NoPut, req.NoDelete
	var out []modelEvent
	for _, me := range m.events {
		if me.ev.Kv.ModRevision >= start && w.contains(me.ev.Kv.Key) && !w.filtered(me.ev) {
			out = append(out, me)
		}
	}
	return out
}

func sameKV(a, b *mvccpb.KeyValue) bool {
	return bytes.Equal(a.Key, b.Key) && bytes.Equal(a.Value, b.Value) &&
		a.CreateRevision == b.CreateRevision && a.ModRevision == b.ModRevision &&
		a.Version == b.Version && a.Lease == b.Lease
}

func checkWatcher(t *testing.T, sp *spec, stream []Response, m *model, finalCompact int64, stats map[string]int) {
	t.Helper()
	var evs []*mvccpb.Event
	var compactRev int64
	lastRev := int64(0)
	for _, r := range stream {
		if r.WatchID != sp.id || r.Progress {
			continue
		}
		if compactRev != 0 {
			t.Fatalf("watcher %d (%+v): response after the compacted one: %s", sp.id, sp.req, respString(r))
		}
		if r.CompactRevision != 0 {
			compactRev = r.CompactRevision
			continue
		}
		if len(r.Events) == 0 {
			t.Fatalf("watcher %d: empty response", sp.id)
		}
		// Whole revisions, in order, never split across responses.
		if first := r.Events[0].Kv.ModRevision; first <= lastRev {
			t.Fatalf("watcher %d: response starting at %d after revision %d", sp.id, first, lastRev)
		}
		for _, ev := range r.Events {
			if ev.Kv.ModRevision < lastRev || ev.Kv.ModRevision > r.Revision {
				t.Fatalf("watcher %d: event at %d (previous %d, header %d)", sp.id, ev.Kv.ModRevision, lastRev, r.Revision)
			}
			lastRev = ev.Kv.ModRevision
		}
		evs = append(evs, r.Events...)
	}

	// Some start in [startLo, startHi] must explain what it got.
	var why string
	for start := sp.startLo; start <= sp.startHi; start++ {
		want := m.expected(sp.req, start)
		why = matchEvents(sp, evs, want, compactRev, finalCompact)
		if why == "" {
			break
		}
	}
	if why != "" {
		t.Fatalf("watcher %d on stream %d, %+v, start in [%d, %d], compacted %d: %s",
			sp.id, sp.stream, sp.req, sp.startLo, sp.startHi, compactRev, why)
	}
	if os.Getenv("WATCH_DEBUG") != "" && compactRev != 0 {
		t.Logf("w%d s%d start [%d,%d] compacted %d after %d events, seq %d", sp.id, sp.stream, sp.startLo, sp.startHi, compactRev, len(evs), sp.seq)
	}
	switch {
	case compactRev != 0:
		stats["compacted"]++
	case sp.cancelled:
		stats["cancelled"]++
	default:
		stats["complete"]++
	}
	stats["events"] += len(evs)
}

// matchEvents explains why got is not what the model wants, or returns "".
func matchEvents(sp *spec, got []*mvccpb.Event, want []modelEvent, compactRev, finalCompact int64) string {
	prefixOnly := compactRev != 0 || sp.cancelled
	if len(got) > len(want) || !prefixOnly && len(got) != len(want) {
		return fmt.Sprintf("got %d events, want %d", len(got), len(want))
	}
	if compactRev != 0 {
		if compactRev > finalCompact || compactRev <= sp.startLo {
			return fmt.Sprintf("compacted at %d: start %d, final compaction %d", compactRev, sp.startLo, finalCompact)
		}
	}
	for i, ev := range got {
		w := want[i]
		if ev.Type != w.ev.Type || !sameKV(ev.Kv, w.ev.Kv) && !(ev.Type == mvccpb.Event_DELETE &&
			bytes.Equal(ev.Kv.Key, w.ev.Kv.Key) && ev.Kv.ModRevision == w.ev.Kv.ModRevision) {
			return fmt.Sprintf("event %d: got %s, want %s", i, evString(ev), evString(w.ev))
		}
		if compactRev != 0 && ev.Kv.ModRevision >= compactRev {
			return fmt.Sprintf("event %s at or after the compaction %d", evString(ev), compactRev)
		}
		switch {
		case !sp.req.PrevKV:
			if ev.PrevKv != nil {
				return fmt.Sprintf("event %d: prev_kv not asked for", i)
			}
		case ev.PrevKv != nil:
			if w.prev == nil || !sameKV(ev.PrevKv, w.prev) {
				return fmt.Sprintf("event %d (%s): wrong prev_kv", i, evString(ev))
			}
		case w.prev != nil && ev.Kv.ModRevision-1 >= finalCompact:
			// Missing prev_kv is only right if its revision was compacted
			// when it was read.
			return fmt.Sprintf("event %d (%s): prev_kv missing", i, evString(ev))
		}
	}
	return ""
}

// checkProgress: the j-th progress answer on a stream is sent after the
// j-th request on it was made, so every watcher created on that stream
// before that request, and neither cancelled nor compacted, must have
// received all its events up to the answer's revision before it.
func checkProgress(t *testing.T, specs []*spec, reqs []progressReq, got [][]Response, m *model, stats map[string]int) {
	t.Helper()
	for si, stream := range got {
		var streamReqs []progressReq
		for _, r := range reqs {
			if r.stream == si {
				streamReqs = append(streamReqs, r)
			}
		}
		answers := 0
		for pos, r := range stream {
			if !r.Progress || r.WatchID != -1 {
				continue
			}
			if answers >= len(streamReqs) {
				t.Fatalf("stream %d: %d progress answers for %d requests", si, answers+1, len(streamReqs))
			}
			req := streamReqs[answers]
			answers++
			stats["progress"]++
			for _, sp := range specs {
				if sp.stream != si || sp.seq > req.seq || sp.cancelled || sp.startLo != sp.startHi {
					continue
				}
				received := map[int64]bool{}
				compacted := false
				for _, before := range stream[:pos] {
					if before.WatchID == sp.id {
						for _, ev := range before.Events {
							received[ev.Kv.ModRevision] = true
						}
						compacted = compacted || before.CompactRevision != 0
					}
				}
				if compacted {
					continue
				}
				for _, me := range m.expected(sp.req, sp.startLo) {
					if rev := me.ev.Kv.ModRevision; rev <= r.Revision && !received[rev] {
						t.Fatalf("stream %d: progress at %d before watcher %d's event at %d", si, r.Revision, sp.id, rev)
					}
				}
			}
		}
	}
}
