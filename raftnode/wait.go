package raftnode

import "sync"

// result is what a proposer receives: the state machine's answer, or why
// there is none.
type result struct {
	value any
	err   error
}

// waitRegistry maps request IDs to the channels their proposers wait on.
// Trigger on an unknown ID is a no-op: entries proposed on other members, or
// whose proposer gave up, have nobody waiting.
type waitRegistry struct {
	shards [16]waitShard
}

type waitShard struct {
	mu sync.Mutex
	m  map[uint64]waiter
}

// waiter is one blocked proposer. term is the raft term in which the raft
// loop handed the proposal to raft: once this member applies an entry of a
// later term, an entry proposed in an earlier term that has not been applied
// never will be (every entry that can still commit precedes the new term's
// first entry), so the waiter fails instead of waiting for its deadline.
type waiter struct {
	ch   chan result
	term uint64
}

func newWaitRegistry() *waitRegistry {
	w := &waitRegistry{}
	for i := range w.shards {
		w.shards[i].m = make(map[uint64]waiter)
	}
	return w
}

func (w *waitRegistry) shard(id uint64) *waitShard { return &w.shards[id%uint64(len(w.shards))] }

// Register arranges for id's result to be delivered on ch (which must have
// room for one value). Registering an ID twice is a bug in the ID generator.
func (w *waitRegistry) Register(id, term uint64, ch chan result) {
	s := w.shard(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.m[id]; dup {
		panic("raftnode: duplicate request ID registered")
	}
	s.m[id] = waiter{ch: ch, term: term}
}

// Trigger delivers r to id's waiter, if any, and forgets id.
func (w *waitRegistry) Trigger(id uint64, r result) {
	s := w.shard(id)
	s.mu.Lock()
	wt, ok := s.m[id]
	delete(s.m, id)
	s.mu.Unlock()
	if ok {
		wt.ch <- r
	}
}

// Cancel forgets id without delivering anything.
func (w *waitRegistry) Cancel(id uint64) {
	s := w.shard(id)
	s.mu.Lock()
	delete(s.m, id)
	s.mu.Unlock()
}

// FailBefore delivers err to every waiter registered in a term before term,
// and forgets them.
func (w *waitRegistry) FailBefore(term uint64, err error) {
	for i := range w.shards {
		s := &w.shards[i]
		s.mu.Lock()
		for id, wt := range s.m {
			if wt.term < term {
				wt.ch <- result{err: err}
				delete(s.m, id)
			}
		}
		s.mu.Unlock()
	}
}

// Len reports how many proposals are waiting (for metrics and tests).
func (w *waitRegistry) Len() int {
	n := 0
	for i := range w.shards {
		s := &w.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}
