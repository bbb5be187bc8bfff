package mvcc

import (
	"bytes"
	"sort"

	"github.com/google/btree"
)

// generation is one life of a key: the puts from its creation to the
// tombstone that ends it (if closed).
type generation struct {
	created int64      // create_revision of the key in this life
	ver     int64      // version of revs[0]
	revs    []revision // ascending; the last is the tombstone when closed
	closed  bool
}

func (g *generation) last() revision { return g.revs[len(g.revs)-1] }

// keyIndex maps a user key to its revisions. Invariant: gens is non-empty,
// no generation is empty, and only the last may be open.
type keyIndex struct {
	key   []byte
	lease int64 // lease of the live version; 0 if none or deleted
	gens  []generation
}

func (ki *keyIndex) live() bool {
	n := len(ki.gens)
	return n > 0 && !ki.gens[n-1].closed
}

// at returns the version visible at revision atRev.
func (ki *keyIndex) at(atRev int64) (r revision, created, ver int64, ok bool) {
	for i := len(ki.gens) - 1; i >= 0; i-- {
		g := &ki.gens[i]
		if g.revs[0].main > atRev {
			continue
		}
		j := sort.Search(len(g.revs), func(k int) bool { return g.revs[k].main > atRev }) - 1
		if g.closed && j == len(g.revs)-1 {
			return revision{}, 0, 0, false // deleted at or before atRev
		}
		return g.revs[j], g.created, g.ver + int64(j), true
	}
	return revision{}, 0, 0, false
}

// next returns the create_revision and version a put at main would get.
func (ki *keyIndex) next(main int64) (created, ver int64) {
	if !ki.live() {
		return main, 1
	}
	g := &ki.gens[len(ki.gens)-1]
	return g.created, g.ver + int64(len(g.revs))
}

func (ki *keyIndex) put(r revision, created, ver int64) {
	if ki.live() {
		g := &ki.gens[len(ki.gens)-1]
		g.revs = append(g.revs, r)
		return
	}
	ki.gens = append(ki.gens, generation{created: created, ver: ver, revs: []revision{r}})
}

func (ki *keyIndex) tombstone(r revision) {
	g := &ki.gens[len(ki.gens)-1]
	g.revs = append(g.revs, r)
	g.closed = true
}

// has reports whether r is one of the key's indexed revisions.
func (ki *keyIndex) has(r revision) bool {
	for i := range ki.gens {
		g := &ki.gens[i]
		if r.less(g.revs[0]) || g.last().less(r) {
			continue
		}
		j := sort.Search(len(g.revs), func(k int) bool { return !g.revs[k].less(r) })
		return j < len(g.revs) && g.revs[j] == r
	}
	return false
}

// compact drops what no read at or above rev can need, as etcd does: whole
// generations that ended before rev, and inside the first remaining one,
// every revision older than the latest one at or below rev. A tombstone at
// exactly rev survives this compaction (so watch history from rev still
// shows the delete) and goes at the next. It reports whether the key is
// left with nothing.
func (ki *keyIndex) compact(rev int64) (empty bool) {
	gi := 0
	for gi < len(ki.gens) && ki.gens[gi].closed && ki.gens[gi].last().main < rev {
		gi++
	}
	if gi > 0 {
		ki.gens = append([]generation(nil), ki.gens[gi:]...)
	}
	if len(ki.gens) == 0 {
		return true
	}
	g := &ki.gens[0]
	j := sort.Search(len(g.revs), func(k int) bool { return g.revs[k].main > rev }) - 1
	if j > 0 {
		g.revs = append([]revision(nil), g.revs[j:]...)
		g.ver += int64(j)
	}
	return false
}

func lessKeyIndex(a, b *keyIndex) bool { return bytes.Compare(a.key, b.key) < 0 }

// index is the in-memory B-tree of keys. It is not synchronised: the store
// guards it (see Store).
type index struct {
	tree *btree.BTreeG[*keyIndex]
}

func newIndex() *index {
	return &index{tree: btree.NewG(32, lessKeyIndex)}
}

func (ix *index) get(key []byte) *keyIndex {
	ki, _ := ix.tree.Get(&keyIndex{key: key})
	return ki
}

func (ix *index) insert(ki *keyIndex) { ix.tree.ReplaceOrInsert(ki) }

func (ix *index) remove(ki *keyIndex) { ix.tree.Delete(ki) }

func (ix *index) len() int { return ix.tree.Len() }

// span is a key range as requests give it.
type span struct {
	key, end []byte
}

// single reports a one-key range (empty end).
func (s span) single() bool { return len(s.end) == 0 }

// fromKey reports the range of every key >= key (end "\x00").
func (s span) fromKey() bool { return len(s.end) == 1 && s.end[0] == 0 }

func (s span) contains(k []byte) bool {
	switch {
	case s.single():
		return bytes.Equal(k, s.key)
	case s.fromKey():
		return bytes.Compare(k, s.key) >= 0
	default:
		return bytes.Compare(k, s.key) >= 0 && bytes.Compare(k, s.end) < 0
	}
}

// ascend calls fn for each key index in the span, in key order, until fn
// returns false.
func (ix *index) ascend(s span, fn func(ki *keyIndex) bool) {
	switch {
	case s.single():
		if ki := ix.get(s.key); ki != nil {
			fn(ki)
		}
	case s.fromKey():
		ix.tree.AscendGreaterOrEqual(&keyIndex{key: s.key}, fn)
	default:
		if bytes.Compare(s.key, s.end) >= 0 {
			return
		}
		ix.tree.AscendRange(&keyIndex{key: s.key}, &keyIndex{key: s.end}, fn)
	}
}
