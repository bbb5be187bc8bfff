package raftnode

import (
	"sync/atomic"
	"time"
)

// idGenerator hands out request IDs that are unique across members and
// restarts: the top 16 bits come from the member ID, the rest start at the
// process start time in milliseconds (shifted left to leave room for a
// counter) and count up. A restart therefore never reuses an ID that an entry
// still in the log may carry, unless a member made more than 256 proposals per
// millisecond of its previous lifetime and restarted within it.
type idGenerator struct {
	prefix uint64
	next   atomic.Uint64
}

const idCounterBits = 48

func newIDGenerator(memberID uint64, now time.Time) *idGenerator {
	g := &idGenerator{prefix: (memberID & 0xffff) << idCounterBits}
	g.next.Store(uint64(now.UnixMilli()) << 8 & (1<<idCounterBits - 1))
	return g
}

// Next returns a fresh ID. Safe for concurrent use.
func (g *idGenerator) Next() uint64 {
	return g.prefix | g.next.Add(1)&(1<<idCounterBits-1)
}
