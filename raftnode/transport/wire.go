package transport

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"strconv"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Wire constants; doc.go describes the format they define.
const (
	streamPath   = "/raft/stream"
	snapshotPath = "/raft/snapshot"

	headerClusterID = "X-Cairn-Cluster-Id"
	headerFrom      = "X-Cairn-From"
	headerTo        = "X-Cairn-To"
	// headerFromURLs carries the sender's advertised peer URLs, so that a
	// member that has not heard of the sender yet can answer it.
	headerFromURLs = "X-Cairn-From-Urls"

	// streamProtocol is the Upgrade token of a message stream. A change to
	// the stream framing gets a new token, so mismatched members fail the
	// handshake instead of misreading frames.
	streamProtocol = "cairn-raft/1"

	// removedMessage is the body of the 410 Gone that refuses a member
	// removed from the cluster.
	removedMessage = "the member has been permanently removed from the cluster"

	frameHeaderLen = 4
	// snapChunkSize is the data chunk the sender emits; maxSnapChunk is what
	// a receiver accepts.
	snapChunkSize = 64 << 10
	maxSnapChunk  = 1 << 20

	// retainBuf bounds the buffers kept between frames; larger ones are
	// dropped after use so one huge message does not pin its memory.
	retainBuf = 4 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func formatID(id uint64) string { return strconv.FormatUint(id, 16) }

func parseID(s string) (uint64, error) {
	if s == "" {
		return 0, errors.New("missing")
	}
	return strconv.ParseUint(s, 16, 64)
}

func idAttr(key string, id uint64) slog.Attr { return slog.String(key, formatID(id)) }

// appendFrame appends m, already sized by proto.Size as size, with its length
// prefix to b.
func appendFrame(b []byte, m *raftpb.Message, size int) ([]byte, error) {
	b = binary.BigEndian.AppendUint32(b, uint32(size))
	return proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(b, m)
}

// checkMessage validates a message received from the peer that the request
// headers name as from.
func checkMessage(m *raftpb.Message, self, from uint64) error {
	switch {
	case m.GetTo() != self:
		return fmt.Errorf("%w: to %x, this member is %x", ErrMisaddressed, m.GetTo(), self)
	case m.GetFrom() != from:
		return fmt.Errorf("%w: from %x on a connection from %x", ErrMisaddressed, m.GetFrom(), from)
	case raft.IsLocalMsg(m.GetType()):
		return fmt.Errorf("%w: local message type %v", ErrMisaddressed, m.GetType())
	}
	return nil
}

// frameReader decodes length-prefixed messages from a stream.
type frameReader struct {
	r   *bufio.Reader
	max uint32
	buf bytes.Buffer
}

// next returns the next message. A stream that ends cleanly between frames
// returns io.EOF; one cut inside a frame returns io.ErrUnexpectedEOF.
func (fr *frameReader) next() (*raftpb.Message, error) {
	var hdr [frameHeaderLen]byte
	if _, err := io.ReadFull(fr.r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > fr.max {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, n, fr.max)
	}
	// The buffer grows as bytes arrive rather than up front, so a bogus
	// length costs memory only for data a peer actually sends.
	fr.buf.Reset()
	if _, err := io.CopyN(&fr.buf, fr.r, int64(n)); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	m := &raftpb.Message{}
	err := proto.Unmarshal(fr.buf.Bytes(), m) // copies bytes fields; the buffer is reused
	if fr.buf.Cap() > retainBuf {
		fr.buf = bytes.Buffer{}
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadFrame, err)
	}
	return m, nil
}

// snapWriter writes the body of a snapshot request: the message frame, the
// data in chunks, then the terminator and checksum.
type snapWriter struct {
	w        io.Writer
	crc      uint32
	buf      []byte // frame header followed by up to snapChunkSize bytes of data
	progress func() // called after each chunk reaches w
}

func newSnapWriter(w io.Writer, progress func()) *snapWriter {
	return &snapWriter{w: w, buf: make([]byte, frameHeaderLen, frameHeaderLen+snapChunkSize), progress: progress}
}

func (sw *snapWriter) raw(b []byte) error {
	sw.crc = crc32.Update(sw.crc, castagnoli, b)
	_, err := sw.w.Write(b)
	if err == nil && sw.progress != nil {
		sw.progress()
	}
	return err
}

func (sw *snapWriter) message(m *raftpb.Message, max int) error {
	size := proto.Size(m)
	if size > max {
		return fmt.Errorf("%w: snapshot message of %d bytes, limit %d", ErrFrameTooLarge, size, max)
	}
	b, err := appendFrame(nil, m, size)
	if err != nil {
		return fmt.Errorf("transport: marshal snapshot message: %w", err)
	}
	return sw.raw(b)
}

// Write implements io.Writer for SnapshotStore.WriteSnapshot.
func (sw *snapWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		k := min(len(p), cap(sw.buf)-len(sw.buf))
		sw.buf = append(sw.buf, p[:k]...)
		p = p[k:]
		written += k
		if len(sw.buf) == cap(sw.buf) {
			if err := sw.flush(); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

func (sw *snapWriter) flush() error {
	n := len(sw.buf) - frameHeaderLen
	if n == 0 {
		return nil
	}
	binary.BigEndian.PutUint32(sw.buf, uint32(n))
	err := sw.raw(sw.buf)
	sw.buf = sw.buf[:frameHeaderLen]
	return err
}

// finish writes the last chunk, the terminator and the checksum.
func (sw *snapWriter) finish() error {
	if err := sw.flush(); err != nil {
		return err
	}
	if err := sw.raw([]byte{0, 0, 0, 0}); err != nil {
		return err
	}
	_, err := sw.w.Write(binary.BigEndian.AppendUint32(nil, sw.crc))
	return err
}

// snapReader reads the body of a snapshot request. After message it serves
// the data as an io.Reader: it returns io.EOF only once the terminator and a
// matching checksum have been read, and a sticky error for a cut, oversized
// or corrupt stream.
type snapReader struct {
	r     *bufio.Reader
	crc   uint32
	left  uint32 // data bytes left in the current chunk
	total int64  // data bytes served
	done  bool   // checksum verified
	err   error
}

func (sr *snapReader) readFull(b []byte) error {
	if _, err := io.ReadFull(sr.r, b); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	sr.crc = crc32.Update(sr.crc, castagnoli, b)
	return nil
}

func (sr *snapReader) message(max uint32) (*raftpb.Message, error) {
	var hdr [frameHeaderLen]byte
	if err := sr.readFull(hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > max {
		return nil, fmt.Errorf("%w: snapshot message of %d bytes, limit %d", ErrFrameTooLarge, n, max)
	}
	b := make([]byte, 0, min(n, 64<<10))
	buf := bytes.NewBuffer(b)
	if _, err := io.CopyN(buf, sr.r, int64(n)); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	sr.crc = crc32.Update(sr.crc, castagnoli, buf.Bytes())
	m := &raftpb.Message{}
	if err := proto.Unmarshal(buf.Bytes(), m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadFrame, err)
	}
	return m, nil
}

func (sr *snapReader) fail(err error) error {
	if sr.err == nil {
		sr.err = fmt.Errorf("transport: snapshot stream after %d bytes: %w", sr.total, err)
	}
	return sr.err
}

// Read implements io.Reader for SnapshotStore.ReceiveSnapshot.
func (sr *snapReader) Read(p []byte) (int, error) {
	if sr.err != nil {
		return 0, sr.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	for sr.left == 0 {
		if sr.done {
			return 0, io.EOF
		}
		var hdr [frameHeaderLen]byte
		if err := sr.readFull(hdr[:]); err != nil {
			return 0, sr.fail(err)
		}
		n := binary.BigEndian.Uint32(hdr[:])
		if n > maxSnapChunk {
			return 0, sr.fail(fmt.Errorf("%w: chunk of %d bytes, limit %d", ErrFrameTooLarge, n, maxSnapChunk))
		}
		if n == 0 {
			var sum [4]byte
			if _, err := io.ReadFull(sr.r, sum[:]); err != nil {
				if errors.Is(err, io.EOF) {
					err = io.ErrUnexpectedEOF
				}
				return 0, sr.fail(err)
			}
			if got := binary.BigEndian.Uint32(sum[:]); got != sr.crc {
				return 0, sr.fail(fmt.Errorf("%w: sender %08x, received %08x", ErrChecksum, got, sr.crc))
			}
			sr.done = true
			return 0, io.EOF
		}
		sr.left = n
	}
	if uint32(len(p)) > sr.left {
		p = p[:sr.left]
	}
	n, err := sr.r.Read(p)
	sr.crc = crc32.Update(sr.crc, castagnoli, p[:n])
	sr.left -= uint32(n)
	sr.total += int64(n)
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return n, sr.fail(err)
	}
	return n, nil
}

// finish confirms, after the store accepted the data, that all of it was
// consumed, the checksum verified and nothing follows it.
func (sr *snapReader) finish() error {
	if !sr.done {
		var one [1]byte
		n, err := sr.Read(one[:])
		switch {
		case n > 0:
			return sr.fail(errors.New("snapshot store returned before the end of the data"))
		case !errors.Is(err, io.EOF):
			return err
		}
	}
	if _, err := sr.r.ReadByte(); !errors.Is(err, io.EOF) {
		if err == nil {
			err = errors.New("bytes after the checksum")
		}
		return sr.fail(err)
	}
	return nil
}
