package wal

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// ReadMetadata returns the member and cluster IDs of the log in dir without
// locking or replaying it: they are repeated in the head of every segment,
// so the newest segment's head is enough. A member restarting reads its
// identity here, since a member that joined a running cluster cannot derive
// it from its flags. It fails with ErrNotExist if dir holds no log, and with
// a *CorruptError if the head does not decode.
func ReadMetadata(dir string) (Metadata, error) {
	segs, err := listSegments(dir)
	if err != nil {
		return Metadata{}, err
	}
	if len(segs) == 0 {
		return Metadata{}, fmt.Errorf("wal: read metadata in %s: %w", dir, ErrNotExist)
	}
	seg := segs[len(segs)-1]
	path := filepath.Join(dir, seg.name)
	f, err := os.Open(path)
	if err != nil {
		return Metadata{}, fmt.Errorf("wal: open %s: %w", path, err)
	}
	head := make([]byte, headSize)
	_, err = io.ReadFull(f, head)
	if cerr := f.Close(); err == nil && cerr != nil {
		return Metadata{}, fmt.Errorf("wal: close %s: %w", path, cerr)
	}
	if err != nil {
		return Metadata{}, &CorruptError{File: path, Offset: 0, Reason: "segment head is short: " + err.Error()}
	}
	// The header's CRC is seeded with the chain value it carries itself.
	seed := binary.LittleEndian.Uint32(head[frameHeaderSize+32:])
	off := 0
	for _, want := range [...]recordType{recSegment, recMetadata} {
		rec, n, fault := decodeRecord(head[off:], seed)
		if fault != faultNone {
			return Metadata{}, &CorruptError{File: path, Offset: int64(off), Reason: fmt.Sprintf("segment head: %s reading %s", fault, want)}
		}
		if rec.typ != want {
			return Metadata{}, &CorruptError{File: path, Offset: int64(off), Reason: fmt.Sprintf("segment head: found %s record, want %s", rec.typ, want)}
		}
		if rec.typ == recMetadata {
			return rec.md, nil
		}
		seed = rec.crc
		off += n
	}
	panic("unreachable")
}
