package watch

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// checkTree verifies order, AVL balance and the max-end augmentation.
func checkTree(t *testing.T, n *ivnode) (h int, maxEnd []byte) {
	t.Helper()
	if n == nil {
		return 0, []byte{} // smaller than any real end
	}
	hl, ml := checkTree(t, n.left)
	hr, mr := checkTree(t, n.right)
	if n.left != nil && cmpInterval(n.left.start, n.left.end, n.start, n.end) >= 0 ||
		n.right != nil && cmpInterval(n.right.start, n.right.end, n.start, n.end) <= 0 {
		t.Fatal("order broken")
	}
	if d := hl - hr; d > 1 || d < -1 || n.height != 1+max(hl, hr) {
		t.Fatalf("balance broken: %d %d %d", hl, hr, n.height)
	}
	m := n.end
	for _, c := range [][]byte{ml, mr} {
		if cmpEnd(c, m) > 0 {
			m = c
		}
	}
	if cmpEnd(m, n.maxEnd) != 0 {
		t.Fatalf("max end %q, want %q", n.maxEnd, m)
	}
	if len(n.set.ws) == 0 {
		t.Fatal("empty node kept")
	}
	return n.height, m
}

// The index against a brute-force scan, through random adds and removes.
func TestIndexRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	key := func() []byte { return fmt.Appendf(nil, "%02d", rng.IntN(40)) }
	ix := newIndex()
	var live []*watcher
	for step := range 5000 {
		if len(live) > 0 && rng.IntN(100) < 45 {
			i := rng.IntN(len(live))
			ix.remove(live[i])
			live = slices.Delete(live, i, i+1)
		} else {
			w := &watcher{id: int64(step), key: key()}
			switch rng.IntN(4) {
			case 0:
				w.single = true
			case 1:
				w.end = nil // from key
			default:
				w.end = key()
				if bytes.Compare(w.key, w.end) >= 0 {
					w.single = true
					w.end = nil
				}
			}
			ix.add(w)
			live = append(live, w)
		}
		if step%50 == 0 {
			checkTree(t, ix.ranges)
		}
		k := key()
		var want, got []int64
		for _, w := range live {
			if w.contains(k) {
				want = append(want, w.id)
			}
		}
		for _, w := range ix.collect(k, nil) {
			got = append(got, w.id)
		}
		slices.Sort(want)
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Fatalf("step %d key %s: got %v, want %v", step, k, got, want)
		}
	}
}
