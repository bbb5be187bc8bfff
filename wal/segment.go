package wal

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

const (
	segmentSuffix  = ".wal"
	tmpSuffix      = ".tmp"
	lockName       = "LOCK"
	segmentNameLen = 16 + 1 + 16 + len(segmentSuffix)
)

// segment names one segment file: its sequence number and the index of the
// first entry it may hold (the log's last index + 1 when it was cut).
type segment struct {
	seq   uint64
	first uint64
	name  string
}

func segmentName(seq, first uint64) string {
	return fmt.Sprintf("%016x-%016x%s", seq, first, segmentSuffix)
}

// parseSegmentName accepts exactly the names segmentName produces.
func parseSegmentName(name string) (segment, bool) {
	if len(name) != segmentNameLen || name[16] != '-' || !strings.HasSuffix(name, segmentSuffix) {
		return segment{}, false
	}
	for _, c := range name[:16] + name[17:33] {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return segment{}, false
		}
	}
	seq, err1 := strconv.ParseUint(name[:16], 16, 64)
	first, err2 := strconv.ParseUint(name[17:33], 16, 64)
	if err1 != nil || err2 != nil {
		return segment{}, false
	}
	return segment{seq: seq, first: first, name: name}, true
}

// listSegments returns dir's segments in sequence order. Other files are
// ignored.
func listSegments(dir string) ([]segment, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("wal: list %s: %w", dir, err)
	}
	var segs []segment
	for _, de := range des { // ReadDir sorts by name; fixed-width hex sorts by sequence
		if s, ok := parseSegmentName(de.Name()); ok && de.Type().IsRegular() {
			segs = append(segs, s)
		}
	}
	return segs, nil
}

// checkSegments verifies that the retained segments form one run of
// consecutive sequence numbers. First indexes need not increase: a segment
// cut after raft overwrote a suffix that began in an earlier segment starts
// below that segment's first index.
func checkSegments(dir string, segs []segment) error {
	for i := 1; i < len(segs); i++ {
		prev, s := segs[i-1], segs[i]
		if s.seq != prev.seq+1 {
			return &CorruptError{File: filepath.Join(dir, s.name), Reason: fmt.Sprintf("segment sequence jumps from %d to %d (a segment is missing)", prev.seq, s.seq)}
		}
	}
	return nil
}

// replayStart returns the position in segs of the newest segment cut when
// the log's last index was at or below index (first <= index), or -1. When
// that segment was cut the log held no entry above index, so every entry
// above index that is still in the log was written into it or a later
// segment; and a marker at index, saved when the log reached index, was
// written there or later too. Older segments are not needed to replay from
// a marker at index.
func replayStart(segs []segment, index uint64) int {
	for i := len(segs) - 1; i >= 0; i-- {
		if segs[i].first <= index {
			return i
		}
	}
	return -1
}

// appendHead appends a segment's head: its header, the metadata and the
// hard state, chained from prevCRC. The head is exactly headSize bytes.
func appendHead(buf []byte, h segmentHeader, md Metadata, hs HardState) ([]byte, uint32) {
	crc := h.PrevCRC
	buf, crc = appendRecord(buf, crc, &record{typ: recSegment, seg: h})
	buf, crc = appendRecord(buf, crc, &record{typ: recMetadata, md: md})
	buf, crc = appendRecord(buf, crc, &record{typ: recHardState, hs: hs})
	return buf, crc
}

// newSegment creates segment seq, which may hold entries from index first
// on, sized size bytes. It writes the file under a temporary name (or takes
// spareFile, a zero-filled, synced file of that size at spareName),
// preallocates it, writes the head (chained from the WAL's current CRC,
// carrying the current metadata and hard state), syncs it, renames it into
// place and fsyncs the directory. A crash at any point leaves either no
// segment or a complete one; a leftover temporary file is removed by Open.
// It returns the open file and the chain value after the head.
func (w *WAL) newSegment(seq, first uint64, size int64, spareFile *os.File) (segmentFile, uint32, error) {
	name := segmentName(seq, first)
	path := filepath.Join(w.dir, name)
	tmp := path + tmpSuffix
	f := spareFile
	if f != nil {
		tmp = filepath.Join(w.dir, spareName)
	} else {
		var err error
		if f, err = os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600); err != nil {
			return nil, 0, fmt.Errorf("wal: create %s: %w", tmp, err)
		}
	}
	sf := w.wrapFile(f)
	abandon := func(err error) (segmentFile, uint32, error) {
		err = closeAfter(err, sf, tmp)
		if rerr := os.Remove(tmp); rerr != nil {
			err = fmt.Errorf("%w (and remove %s: %v)", err, tmp, rerr)
		}
		return nil, 0, err
	}
	sync := sf.Datasync // a spare's length and blocks are already durable
	if spareFile == nil {
		if err := preallocate(f, size); err != nil {
			return abandon(fmt.Errorf("wal: preallocate %s: %w", tmp, err))
		}
		sync = sf.Sync
	}
	head, crc := appendHead(w.buf[:0], segmentHeader{Seq: seq, FirstIndex: first, PrevCRC: w.crc}, w.md, w.hs)
	if _, err := sf.WriteAt(head, 0); err != nil {
		return abandon(fmt.Errorf("wal: write %s: %w", tmp, err))
	}
	if err := w.syncWith(sync); err != nil {
		return abandon(fmt.Errorf("wal: sync %s: %w", tmp, err))
	}
	if err := os.Rename(tmp, path); err != nil {
		return abandon(fmt.Errorf("wal: rename %s: %w", tmp, err))
	}
	if err := syncDir(w.dir); err != nil {
		return nil, 0, closeAfter(err, sf, path)
	}
	return sf, crc, nil
}

// readFileInto reads all of f into buf, growing it as needed.
func readFileInto(f *os.File, buf []byte) ([]byte, error) {
	fi, err := f.Stat()
	if err != nil {
		return buf, err
	}
	size := fi.Size()
	if int64(int(size)) != size {
		return buf, fmt.Errorf("file too large (%d bytes)", size)
	}
	if cap(buf) < int(size) {
		buf = make([]byte, size)
	}
	buf = buf[:size]
	n, err := f.ReadAt(buf, 0)
	if n == len(buf) {
		return buf, nil
	}
	return buf[:n], fmt.Errorf("read %d of %d bytes: %w", n, size, err)
}
