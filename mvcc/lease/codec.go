package lease

import (
	"encoding/binary"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// Bucket is the backend bucket holding the lease table. Each lease is one
// record: the key is its ID as 8 big-endian bytes, the value etcd's
// leasepb.Lease message {ID = 1, TTL = 2, RemainingTTL = 3} (int64 varints,
// zero fields omitted), so the file's lease bucket reads as etcd's.
const Bucket = "lease"

type record struct {
	id, ttl, remaining int64
}

func leaseKey(id int64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(id))
	return b[:]
}

func (r record) encode() []byte {
	b := make([]byte, 0, 3*(1+binary.MaxVarintLen64))
	for _, f := range [...]struct {
		num protowire.Number
		v   int64
	}{{1, r.id}, {2, r.ttl}, {3, r.remaining}} {
		if f.v != 0 {
			b = protowire.AppendTag(b, f.num, protowire.VarintType)
			b = protowire.AppendVarint(b, uint64(f.v))
		}
	}
	return b
}

// decodeRecord parses a lease record; unknown fields are skipped, as proto3
// parsers do.
func decodeRecord(b []byte) (record, error) {
	var r record
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return r, protowire.ParseError(n)
		}
		b = b[n:]
		if typ != protowire.VarintType || num < 1 || num > 3 {
			m := protowire.ConsumeFieldValue(num, typ, b)
			if m < 0 {
				return r, protowire.ParseError(m)
			}
			b = b[m:]
			continue
		}
		v, m := protowire.ConsumeVarint(b)
		if m < 0 {
			return r, protowire.ParseError(m)
		}
		b = b[m:]
		switch num {
		case 1:
			r.id = int64(v)
		case 2:
			r.ttl = int64(v)
		case 3:
			r.remaining = int64(v)
		}
	}
	return r, nil
}

// decodeEntry parses one bucket entry and checks the key against the ID.
func decodeEntry(key, val []byte) (record, error) {
	if len(key) != 8 {
		return record{}, fmt.Errorf("lease: bucket key %x is not 8 bytes", key)
	}
	r, err := decodeRecord(val)
	if err != nil {
		return record{}, fmt.Errorf("lease: record %x: %w", key, err)
	}
	if id := int64(binary.BigEndian.Uint64(key)); r.id != id {
		return record{}, fmt.Errorf("lease: record %x holds ID %d", key, r.id)
	}
	return r, nil
}
