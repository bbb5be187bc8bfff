package mvcc

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cairnkv/cairn/api/mvccpb"
)

// revision identifies one change: main is the write transaction, sub the
// change's position inside it.
type revision struct {
	main, sub int64
}

func (a revision) less(b revision) bool {
	return a.main < b.main || (a.main == b.main && a.sub < b.sub)
}

// revKeyLen is the size of a revision-bucket key: main then sub, each a
// big-endian uint64, so that byte order is revision order.
const revKeyLen = 16

func revKey(r revision) []byte {
	k := make([]byte, revKeyLen)
	binary.BigEndian.PutUint64(k, uint64(r.main))
	binary.BigEndian.PutUint64(k[8:], uint64(r.sub))
	return k
}

// revKeyMain is the first key of revision main: every key of main and above
// sorts at or after it.
func revKeyMain(main int64) []byte { return revKey(revision{main: main}) }

func parseRevKey(k []byte) (revision, error) {
	if len(k) != revKeyLen {
		return revision{}, fmt.Errorf("mvcc: revision key %x has %d bytes", k, len(k))
	}
	return revision{
		main: int64(binary.BigEndian.Uint64(k)),
		sub:  int64(binary.BigEndian.Uint64(k[8:])),
	}, nil
}

// The value of a revision-bucket record:
//
//	byte 0      format (1)
//	uvarint     len(key), then key
//	varint      create_revision, mod_revision, version, lease
//	rest        value
//
// A tombstone is a record with version 0 (a live key has version >= 1); it
// carries the key and mod_revision only. The encoding is deterministic, so
// members that applied the same log hold the same bytes (HashKV).
const kvFormat = 1

var errBadRecord = errors.New("mvcc: malformed revision record")

func encodeKV(key, value []byte, create, mod, ver, lease int64) []byte {
	n := 1 + binary.MaxVarintLen64*5 + len(key) + len(value)
	b := make([]byte, 0, n)
	b = append(b, kvFormat)
	b = binary.AppendUvarint(b, uint64(len(key)))
	b = append(b, key...)
	b = binary.AppendVarint(b, create)
	b = binary.AppendVarint(b, mod)
	b = binary.AppendVarint(b, ver)
	b = binary.AppendVarint(b, lease)
	b = append(b, value...)
	return b
}

// record is a decoded revision-bucket value whose slices alias the input.
type record struct {
	key, value              []byte
	create, mod, ver, lease int64
}

func (r *record) tombstone() bool { return r.ver == 0 }

func decodeRecord(b []byte) (record, error) {
	var r record
	if len(b) < 1 || b[0] != kvFormat {
		return r, errBadRecord
	}
	b = b[1:]
	kl, n := binary.Uvarint(b)
	if n <= 0 || uint64(len(b)-n) < kl {
		return r, errBadRecord
	}
	b = b[n:]
	r.key, b = b[:kl:kl], b[kl:]
	for _, p := range []*int64{&r.create, &r.mod, &r.ver, &r.lease} {
		v, n := binary.Varint(b)
		if n <= 0 {
			return r, errBadRecord
		}
		*p, b = v, b[n:]
	}
	r.value = b[:len(b):len(b)]
	return r, nil
}

// kv builds a KeyValue that copies the record's bytes into one allocation.
func (r *record) kv() *mvccpb.KeyValue {
	buf := make([]byte, len(r.key)+len(r.value))
	copy(buf, r.key)
	copy(buf[len(r.key):], r.value)
	kv := &mvccpb.KeyValue{
		Key:            buf[:len(r.key):len(r.key)],
		CreateRevision: r.create,
		ModRevision:    r.mod,
		Version:        r.ver,
		Lease:          r.lease,
	}
	if len(r.value) > 0 {
		kv.Value = buf[len(r.key):]
	}
	return kv
}

// sharedKV builds a KeyValue aliasing the record's bytes, for records whose
// bytes are immutable (the store's own encodings).
func (r *record) sharedKV() *mvccpb.KeyValue {
	kv := &mvccpb.KeyValue{
		Key:            r.key,
		CreateRevision: r.create,
		ModRevision:    r.mod,
		Version:        r.ver,
		Lease:          r.lease,
	}
	if len(r.value) > 0 {
		kv.Value = r.value
	}
	return kv
}
