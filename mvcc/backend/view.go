package backend

import (
	"bytes"
	"fmt"
	"slices"
	"sort"
)

// View is a consistent read view: the committed file as of some commit plus
// the writes buffered when the view was taken. Later writes are not seen.
// Byte slices returned by a view are valid until Release and must not be
// modified. A View is not safe for concurrent use; take one per goroutine.
type View struct {
	rt       *readTx
	log      []entry
	gops     []op
	released bool
}

// View pins a read view. The caller must Release it, soon: a view holds a
// bbolt read transaction, which keeps old pages from being reused and delays
// a commit that must remap the file.
func (b *Backend) View() (*View, error) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, ErrClosed
	}
	v := &View{
		log:  b.log[:len(b.log):len(b.log)],
		gops: b.gops[:len(b.gops):len(b.gops)],
	}
	rt := b.cur
	if rt != nil {
		rt.refs.Add(1)
		b.mu.Unlock()
		v.rt = rt
		return v, nil
	}
	// A commit is in flight. Open a private transaction, still holding mu:
	// the commit in flight cannot publish, so no later commit (which might
	// purge records the caller is about to read) can start before this
	// transaction exists. It sees the file before or after the commit in
	// flight; either way it holds everything the captured buffer does not,
	// and possibly some of what it does (Scan skips those twice-seen
	// records).
	rt, err := newReadTx(b.db)
	b.mu.Unlock()
	if err != nil {
		return nil, err
	}
	v.rt = rt
	return v, nil
}

// Release ends the view. Calling it twice is a no-op.
func (v *View) Release() {
	if v.released {
		return
	}
	v.released = true
	v.rt.release()
}

func (v *View) searchLog(key []byte) (int, bool) {
	return sort.Find(len(v.log), func(i int) int { return bytes.Compare(key, v.log[i].key) })
}

// Get returns the record of the revision bucket at key, or nil.
func (v *View) Get(key []byte) []byte {
	if i, ok := v.searchLog(key); ok {
		return v.log[i].val
	}
	if kb := v.rt.tx.Bucket(revBucketName); kb != nil {
		return kb.Get(key)
	}
	return nil
}

// Scan calls fn for each record of the revision bucket with from <= key <
// to, in key order, until fn returns false. A nil from starts at the first
// record, a nil to runs to the last.
func (v *View) Scan(from, to []byte, fn func(key, val []byte) bool) {
	var last []byte
	if kb := v.rt.tx.Bucket(revBucketName); kb != nil {
		c := kb.Cursor()
		var k, val []byte
		if from == nil {
			k, val = c.First()
		} else {
			k, val = c.Seek(from)
		}
		for ; k != nil && (to == nil || bytes.Compare(k, to) < 0); k, val = c.Next() {
			if !fn(k, val) {
				return
			}
			last = k
		}
	}
	// Buffered records are newer than every committed one, except those a
	// private transaction already sees committed: skip up to the last key
	// the file gave.
	i := 0
	if from != nil {
		i, _ = v.searchLog(from)
	}
	if last != nil {
		j, found := v.searchLog(last)
		if found {
			j++
		}
		i = max(i, j)
	}
	for ; i < len(v.log); i++ {
		e := v.log[i]
		if to != nil && bytes.Compare(e.key, to) >= 0 {
			return
		}
		if !fn(e.key, e.val) {
			return
		}
	}
}

// Last returns the greatest key of the revision bucket, or nil.
func (v *View) Last() []byte {
	var last []byte
	if kb := v.rt.tx.Bucket(revBucketName); kb != nil {
		last, _ = kb.Cursor().Last()
	}
	if n := len(v.log); n > 0 && bytes.Compare(v.log[n-1].key, last) > 0 {
		last = v.log[n-1].key
	}
	return last
}

// BucketGet returns the value at key in an ordinary bucket, or nil.
func (v *View) BucketGet(bucket string, key []byte) []byte {
	for i := len(v.gops) - 1; i >= 0; i-- {
		o := &v.gops[i]
		if o.bucket == bucket && bytes.Equal(o.key, key) {
			if o.del {
				return nil
			}
			return o.val
		}
	}
	if bk := v.rt.tx.Bucket([]byte(bucket)); bk != nil {
		return bk.Get(key)
	}
	return nil
}

// BucketForEach calls fn for every key of an ordinary bucket in key order,
// stopping at the first error, which it returns.
func (v *View) BucketForEach(bucket string, fn func(key, val []byte) error) error {
	if bucket == RevisionBucket {
		return fmt.Errorf("backend: use Scan for the revision bucket")
	}
	latest := make(map[string]*op)
	for i := range v.gops {
		if o := &v.gops[i]; o.bucket == bucket {
			latest[string(o.key)] = o
		}
	}
	pending := make([]*op, 0, len(latest))
	for _, o := range latest {
		pending = append(pending, o)
	}
	slices.SortFunc(pending, func(a, b *op) int { return bytes.Compare(a.key, b.key) })

	emit := func(o *op) error {
		if o.del {
			return nil
		}
		return fn(o.key, o.val)
	}
	if bk := v.rt.tx.Bucket([]byte(bucket)); bk != nil {
		c := bk.Cursor()
		for k, val := c.First(); k != nil; k, val = c.Next() {
			if val == nil {
				continue // nested bucket; the backend makes none
			}
			for len(pending) > 0 && bytes.Compare(pending[0].key, k) < 0 {
				if err := emit(pending[0]); err != nil {
					return err
				}
				pending = pending[1:]
			}
			if len(pending) > 0 && bytes.Equal(pending[0].key, k) {
				if err := emit(pending[0]); err != nil {
					return err
				}
				pending = pending[1:]
				continue
			}
			if err := fn(k, val); err != nil {
				return err
			}
		}
	}
	for _, o := range pending {
		if err := emit(o); err != nil {
			return err
		}
	}
	return nil
}

// Get reads one key of an ordinary bucket through a short-lived view and
// returns a copy, or nil.
func (b *Backend) Get(bucket string, key []byte) ([]byte, error) {
	v, err := b.View()
	if err != nil {
		return nil, err
	}
	defer v.Release()
	return bytes.Clone(v.BucketGet(bucket, key)), nil
}

// ForEach calls fn for every key of an ordinary bucket through a view; the
// slices are valid only during the call.
func (b *Backend) ForEach(bucket string, fn func(key, val []byte) error) error {
	v, err := b.View()
	if err != nil {
		return err
	}
	defer v.Release()
	return v.BucketForEach(bucket, fn)
}
