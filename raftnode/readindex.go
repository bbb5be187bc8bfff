package raftnode

import (
	"bytes"
	"context"
	"encoding/binary"
	"sync"
	"time"
)

// Linearizable reads. Callers that arrive while a read index is being
// confirmed wait together for the next one: each round costs one ReadIndex
// (one heartbeat round at the leader) however many readers it serves.

// readRound is one batch of readers; done is closed when err is final.
type readRound struct {
	done chan struct{}
	err  error
}

type readQueue struct {
	mu      sync.Mutex
	pending *readRound
	wake    chan struct{}
	seq     uint64 // owned by the read loop
}

func (q *readQueue) init() { q.wake = make(chan struct{}, 1) }

// join adds the caller to the round that has not started yet.
func (q *readQueue) join() *readRound {
	q.mu.Lock()
	r := q.pending
	if r == nil {
		r = &readRound{done: make(chan struct{})}
		q.pending = r
	}
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return r
}

// take starts the pending round; later callers join a new one.
func (q *readQueue) take() *readRound {
	q.mu.Lock()
	defer q.mu.Unlock()
	r := q.pending
	q.pending = nil
	return r
}

// ReadIndex returns once this member has applied every entry that was
// committed when the call began, confirmed by a quorum: a read of the state
// machine after it returns is linearizable. It fails with the context's error
// (ErrNoLeader if no leader is known then) or ErrStopped.
func (n *Node) ReadIndex(ctx context.Context) error {
	r := n.reads.join()
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		if n.lead.Load() == 0 {
			return ErrNoLeader
		}
		return ctx.Err()
	case <-n.stopc:
		return n.stoppedErr()
	}
}

// readLoop runs read rounds one at a time.
func (n *Node) readLoop() {
	defer n.wg.Done()
	for {
		select {
		case <-n.reads.wake:
		case <-n.stopc:
			return
		}
		r := n.reads.take()
		if r == nil {
			continue
		}
		r.err = n.confirmRead()
		close(r.done)
	}
}

// confirmRead asks raft for a read index, retrying while no answer comes
// (no leader, or the request or its answer was lost), then waits until the
// apply goroutine reaches it.
func (n *Node) confirmRead() error {
	retry := n.cfg.TickInterval * time.Duration(n.cfg.ElectionTicks)
	timer := time.NewTimer(retry)
	defer timer.Stop()
	var index uint64
	for found := false; !found; {
		n.reads.seq++
		rctx := binary.BigEndian.AppendUint64(nil, n.reads.seq)
		select {
		case n.readIndexc <- rctx:
		case <-n.stopc:
			return n.stoppedErr()
		}
		timer.Reset(retry)
	wait:
		for {
			select {
			case rs := <-n.readStatec:
				if bytes.Equal(rs.RequestCtx, rctx) {
					index, found = rs.Index, true
					break wait
				}
			case <-timer.C:
				break wait
			case <-n.stopc:
				return n.stoppedErr()
			}
		}
	}
	for n.applied.Load() < index {
		select {
		case <-n.appliedc:
		case <-n.stopc:
			return n.stoppedErr()
		}
	}
	return nil
}
