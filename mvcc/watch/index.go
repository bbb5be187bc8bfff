package watch

import "bytes"

// index finds the synced watchers whose range holds a key. Its cost per
// lookup is one map probe plus a stabbing query, O(log r + m) for r
// distinct ranges and m matches, so it does not grow with the watchers an
// event does not concern.
//
//   - Single-key watchers sit in a map from key to the set of watchers on
//     it.
//   - Range watchers ([key, end), and "every key >= key") sit in an
//     interval tree: an AVL tree of the distinct intervals, ordered by
//     (start, end), each node holding the set of watchers on exactly that
//     interval and the largest end of its subtree. A stabbing query skips
//     every subtree whose largest end is <= the key and every right
//     subtree whose root starts after it.
//
// A btree ordered by start alone would have to scan every range starting
// at or before the key; the max-end augmentation is what makes a query
// with many unrelated ranges cheap.
type index struct {
	keys   map[string]*wset
	ranges *ivnode
}

func newIndex() *index { return &index{keys: map[string]*wset{}} }

func (ix *index) add(w *watcher) {
	if w.single {
		set := ix.keys[string(w.key)]
		if set == nil {
			set = &wset{}
			ix.keys[string(w.key)] = set
		}
		set.add(w)
		return
	}
	var n *ivnode
	ix.ranges, n = ivInsert(ix.ranges, w.key, w.end)
	n.set.add(w)
}

func (ix *index) remove(w *watcher) {
	if w.single {
		set := ix.keys[string(w.key)]
		set.remove(w)
		if len(set.ws) == 0 {
			delete(ix.keys, string(w.key))
		}
		return
	}
	n := ivGet(ix.ranges, w.key, w.end)
	if n == nil {
		panic("watch: range watcher missing from the interval tree")
	}
	n.set.remove(w)
	if len(n.set.ws) == 0 {
		ix.ranges = ivDelete(ix.ranges, w.key, w.end)
	}
}

// collect appends to dst the watchers whose range holds key.
func (ix *index) collect(key []byte, dst []*watcher) []*watcher {
	if set := ix.keys[string(key)]; set != nil {
		dst = append(dst, set.ws...)
	}
	return ivStab(ix.ranges, key, dst)
}

// wset is a set of watchers with O(1) add and remove: each watcher keeps
// its slot. A watcher is in at most one wset at a time (its index entry).
type wset struct {
	ws []*watcher
}

func (s *wset) add(w *watcher) {
	w.slot = len(s.ws)
	s.ws = append(s.ws, w)
}

func (s *wset) remove(w *watcher) {
	last := len(s.ws) - 1
	if s.ws[w.slot] != w {
		panic("watch: watcher not in its set")
	}
	moved := s.ws[last]
	s.ws[w.slot] = moved
	moved.slot = w.slot
	s.ws[last] = nil
	s.ws = s.ws[:last]
	w.slot = -1
}

// ivnode is a node of the interval tree. end nil means +infinity (a range
// "from key onwards"); a real range end is never empty.
type ivnode struct {
	start, end  []byte
	maxEnd      []byte // largest end in this subtree; nil is +infinity
	height      int
	left, right *ivnode
	set         wset
}

// cmpEnd compares two range ends, nil being +infinity.
func cmpEnd(a, b []byte) int {
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return 1
	case b == nil:
		return -1
	}
	return bytes.Compare(a, b)
}

func cmpInterval(s1, e1, s2, e2 []byte) int {
	if c := bytes.Compare(s1, s2); c != 0 {
		return c
	}
	return cmpEnd(e1, e2)
}

func height(n *ivnode) int {
	if n == nil {
		return 0
	}
	return n.height
}

// fix recomputes n's height and max end from its children.
func (n *ivnode) fix() {
	n.height = 1 + max(height(n.left), height(n.right))
	m := n.end
	if n.left != nil && cmpEnd(n.left.maxEnd, m) > 0 {
		m = n.left.maxEnd
	}
	if n.right != nil && cmpEnd(n.right.maxEnd, m) > 0 {
		m = n.right.maxEnd
	}
	n.maxEnd = m
}

func rotateRight(n *ivnode) *ivnode {
	l := n.left
	n.left = l.right
	l.right = n
	n.fix()
	l.fix()
	return l
}

func rotateLeft(n *ivnode) *ivnode {
	r := n.right
	n.right = r.left
	r.left = n
	n.fix()
	r.fix()
	return r
}

// balance restores the AVL property at n, whose subtrees are balanced and
// differ in height by at most two.
func balance(n *ivnode) *ivnode {
	n.fix()
	switch bf := height(n.left) - height(n.right); {
	case bf > 1:
		if height(n.left.left) < height(n.left.right) {
			n.left = rotateLeft(n.left)
		}
		return rotateRight(n)
	case bf < -1:
		if height(n.right.right) < height(n.right.left) {
			n.right = rotateRight(n.right)
		}
		return rotateLeft(n)
	}
	return n
}

// ivInsert returns the new root and the node for [start, end), created if
// missing.
func ivInsert(n *ivnode, start, end []byte) (*ivnode, *ivnode) {
	if n == nil {
		nn := &ivnode{start: start, end: end, maxEnd: end, height: 1}
		return nn, nn
	}
	var found *ivnode
	switch c := cmpInterval(start, end, n.start, n.end); {
	case c < 0:
		n.left, found = ivInsert(n.left, start, end)
	case c > 0:
		n.right, found = ivInsert(n.right, start, end)
	default:
		return n, n
	}
	return balance(n), found
}

func ivGet(n *ivnode, start, end []byte) *ivnode {
	for n != nil {
		switch c := cmpInterval(start, end, n.start, n.end); {
		case c < 0:
			n = n.left
		case c > 0:
			n = n.right
		default:
			return n
		}
	}
	return nil
}

// ivDelete removes the node for [start, end) and returns the new root.
// Nodes are relinked, never copied, so a node's set stays where it is.
func ivDelete(n *ivnode, start, end []byte) *ivnode {
	if n == nil {
		return nil
	}
	switch c := cmpInterval(start, end, n.start, n.end); {
	case c < 0:
		n.left = ivDelete(n.left, start, end)
	case c > 0:
		n.right = ivDelete(n.right, start, end)
	default:
		if n.left == nil {
			return n.right
		}
		if n.right == nil {
			return n.left
		}
		succ := n.right
		for succ.left != nil {
			succ = succ.left
		}
		succ.right = ivDeleteMin(n.right)
		succ.left = n.left
		return balance(succ)
	}
	return balance(n)
}

func ivDeleteMin(n *ivnode) *ivnode {
	if n.left == nil {
		return n.right
	}
	n.left = ivDeleteMin(n.left)
	return balance(n)
}

// ivStab appends the watchers of every interval holding key.
func ivStab(n *ivnode, key []byte, dst []*watcher) []*watcher {
	for n != nil {
		if n.maxEnd != nil && bytes.Compare(n.maxEnd, key) <= 0 {
			return dst // every interval here ends at or before key
		}
		dst = ivStab(n.left, key, dst)
		if bytes.Compare(n.start, key) > 0 {
			return dst // n and its right subtree start after key
		}
		if n.end == nil || bytes.Compare(key, n.end) < 0 {
			dst = append(dst, n.set.ws...)
		}
		n = n.right
	}
	return dst
}
