package lease

import (
	"container/heap"
	"time"
)

// timeQueue is a min-heap of lease IDs by time, with at most one entry per
// lease, so that a lease's time can be moved or removed in O(log n). The
// primary keeps two: expiries and checkpoint deadlines. Ties are broken by
// ID, so the order is deterministic. Not safe for concurrent use: the
// lessor's mutex guards it.
type timeQueue struct {
	items []*queued
	byID  map[int64]*queued
}

type queued struct {
	id  int64
	at  time.Time
	pos int
}

func newTimeQueue() *timeQueue { return &timeQueue{byID: make(map[int64]*queued)} }

// set schedules id at t, moving it if it is queued already.
func (q *timeQueue) set(id int64, t time.Time) {
	if it, ok := q.byID[id]; ok {
		it.at = t
		heap.Fix((*queueHeap)(q), it.pos)
		return
	}
	it := &queued{id: id, at: t}
	q.byID[id] = it
	heap.Push((*queueHeap)(q), it)
}

// remove unschedules id; a no-op if it is not queued.
func (q *timeQueue) remove(id int64) {
	if it, ok := q.byID[id]; ok {
		heap.Remove((*queueHeap)(q), it.pos)
		delete(q.byID, id)
	}
}

// peek returns the earliest entry, if any.
func (q *timeQueue) peek() (id int64, at time.Time, ok bool) {
	if len(q.items) == 0 {
		return 0, time.Time{}, false
	}
	return q.items[0].id, q.items[0].at, true
}

// clear empties the queue.
func (q *timeQueue) clear() {
	q.items = nil
	q.byID = make(map[int64]*queued)
}

// queueHeap implements heap.Interface over a timeQueue's items.
type queueHeap timeQueue

func (h *queueHeap) Len() int { return len(h.items) }

func (h *queueHeap) Less(i, j int) bool {
	a, b := h.items[i], h.items[j]
	if !a.at.Equal(b.at) {
		return a.at.Before(b.at)
	}
	return a.id < b.id
}

func (h *queueHeap) Swap(i, j int) {
	h.items[i], h.items[j] = h.items[j], h.items[i]
	h.items[i].pos = i
	h.items[j].pos = j
}

func (h *queueHeap) Push(x any) {
	it := x.(*queued)
	it.pos = len(h.items)
	h.items = append(h.items, it)
}

func (h *queueHeap) Pop() any {
	n := len(h.items) - 1
	it := h.items[n]
	h.items[n] = nil
	h.items = h.items[:n]
	return it
}
