package transport

import (
	"math/rand/v2"
	"sync"
	"time"
)

// Faults is a test-only fault hook shared by the transports of one process.
// A transport whose Config.Faults is set asks it about every message and
// snapshot it is about to send; the receiving side never consults it, so
// every transport of an in-process cluster must share the same *Faults for
// the rules to act in both directions.
//
// A message that a rule discards is dropped silently: the sender does not
// report the peer unreachable, so raft has to notice the partition by
// itself, as it would on a real network that loses packets. A discarded
// snapshot is reported as raft.SnapshotFailure, as a real broken connection
// would be; otherwise raft would wait for it forever.
//
// The zero value has no rules. All methods are safe for concurrent use.
type Faults struct {
	mu       sync.RWMutex
	cut      map[link]struct{}
	isolated map[uint64]struct{}
	delay    map[link]time.Duration
	drop     map[link]float64
}

// link is one direction between two members.
type link struct{ from, to uint64 }

// Cut discards all traffic between a and b, both ways.
func (f *Faults) Cut(a, b uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cutLocked(a, b)
	f.cutLocked(b, a)
}

// CutOneWay discards traffic from from to to; the other direction is left alone.
func (f *Faults) CutOneWay(from, to uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cutLocked(from, to)
}

func (f *Faults) cutLocked(from, to uint64) {
	if f.cut == nil {
		f.cut = make(map[link]struct{})
	}
	f.cut[link{from, to}] = struct{}{}
}

// Isolate discards all traffic to and from id.
func (f *Faults) Isolate(id uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.isolated == nil {
		f.isolated = make(map[uint64]struct{})
	}
	f.isolated[id] = struct{}{}
}

// Delay holds every message from from to to for d after it was handed to
// Send. Messages keep their order; d <= 0 removes the delay.
func (f *Faults) Delay(from, to uint64, d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if d <= 0 {
		delete(f.delay, link{from, to})
		return
	}
	if f.delay == nil {
		f.delay = make(map[link]time.Duration)
	}
	f.delay[link{from, to}] = d
}

// DropRate discards each message from from to to with probability p
// (0 removes the rule, 1 or more drops everything).
func (f *Faults) DropRate(from, to uint64, p float64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p <= 0 {
		delete(f.drop, link{from, to})
		return
	}
	if f.drop == nil {
		f.drop = make(map[link]float64)
	}
	f.drop[link{from, to}] = p
}

// Heal removes every rule: cuts, isolation, delays and drop rates.
func (f *Faults) Heal() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cut, f.isolated, f.delay, f.drop = nil, nil, nil, nil
}

// verdict says whether a message from from to to is discarded and, if not,
// how long after its Send it may be written. A nil *Faults has no rules.
func (f *Faults) verdict(from, to uint64) (drop bool, delay time.Duration) {
	if f == nil {
		return false, 0
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	l := link{from, to}
	if _, ok := f.cut[l]; ok {
		return true, 0
	}
	if _, ok := f.isolated[from]; ok {
		return true, 0
	}
	if _, ok := f.isolated[to]; ok {
		return true, 0
	}
	if p := f.drop[l]; p > 0 && (p >= 1 || rand.Float64() < p) {
		return true, 0
	}
	return false, f.delay[l]
}
