package raftnode

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// A snap directory holds two kinds of files:
//
//   - <term>-<index>.snap: a snapshot's raft metadata (index, term and the
//     membership at that index), as a CRC-32C followed by the marshaled
//     raftpb.SnapshotMetadata. The state-machine data is not here: it is the
//     state machine's own durable state.
//   - <term>-<index>.incoming: state-machine data received from the leader
//     for a snapshot that raft has not installed yet.
//
// Both are written to a temporary name, fsynced, renamed into place, and the
// directory fsynced, so a crash leaves either the whole file or none.

const (
	snapSuffix     = ".snap"
	incomingSuffix = ".incoming"
	partSuffix     = ".part"
	// snapFilesKept is how many metadata files survive a purge; older ones are
	// useless once their WAL segments are released.
	snapFilesKept = 3
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

type snapDir struct{ dir string }

func snapName(term, index uint64, suffix string) string {
	return fmt.Sprintf("%016x-%016x%s", term, index, suffix)
}

// saveMeta durably writes the metadata file for m.
func (d snapDir) saveMeta(m *raftpb.SnapshotMetadata) error {
	body, err := proto.Marshal(m)
	if err != nil {
		return fmt.Errorf("raftnode: marshal snapshot metadata: %w", err)
	}
	buf := binary.LittleEndian.AppendUint32(nil, crc32.Checksum(body, crcTable))
	buf = append(buf, body...)
	path := filepath.Join(d.dir, snapName(m.GetTerm(), m.GetIndex(), snapSuffix))
	return writeFileDurable(path, func(w io.Writer) error {
		_, err := w.Write(buf)
		return err
	})
}

// loadMeta reads and verifies one metadata file.
func (d snapDir) loadMeta(name string) (*raftpb.SnapshotMetadata, error) {
	path := filepath.Join(d.dir, name)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("raftnode: read %s: %w", path, err)
	}
	if len(b) < 4 || binary.LittleEndian.Uint32(b) != crc32.Checksum(b[4:], crcTable) {
		return nil, fmt.Errorf("raftnode: %s: checksum mismatch at offset 0", path)
	}
	m := &raftpb.SnapshotMetadata{}
	if err := proto.Unmarshal(b[4:], m); err != nil {
		return nil, fmt.Errorf("raftnode: %s: decode metadata: %w", path, err)
	}
	return m, nil
}

// metaNames lists metadata files, newest first.
func (d snapDir) metaNames() ([]string, error) {
	ents, err := os.ReadDir(d.dir)
	if err != nil {
		return nil, fmt.Errorf("raftnode: list %s: %w", d.dir, err)
	}
	var names []string
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), snapSuffix) {
			names = append(names, e.Name())
		}
	}
	// Names are fixed-width hex term-index, so lexical order is age order.
	slices.Sort(names)
	slices.Reverse(names)
	return names, nil
}

// receive spools incoming snapshot data durably under the snapshot's name.
func (d snapDir) receive(m *raftpb.SnapshotMetadata, r io.Reader) error {
	path := filepath.Join(d.dir, snapName(m.GetTerm(), m.GetIndex(), incomingSuffix))
	return writeFileDurable(path, func(w io.Writer) error {
		_, err := io.Copy(w, r)
		return err
	})
}

// openIncoming opens the spooled data for the snapshot m.
func (d snapDir) openIncoming(m *raftpb.SnapshotMetadata) (*os.File, error) {
	path := filepath.Join(d.dir, snapName(m.GetTerm(), m.GetIndex(), incomingSuffix))
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("raftnode: open snapshot data: %w", err)
	}
	return f, nil
}

// purge removes metadata files beyond the newest snapFilesKept, incoming data
// at or below index (installed or superseded), and leftover partial files.
func (d snapDir) purge(index uint64) error {
	ents, err := os.ReadDir(d.dir)
	if err != nil {
		return fmt.Errorf("raftnode: list %s: %w", d.dir, err)
	}
	metas := 0
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	slices.Reverse(names)
	var errs []error
	for _, name := range names {
		remove := false
		switch {
		case strings.HasSuffix(name, snapSuffix):
			metas++
			remove = metas > snapFilesKept
		case strings.HasSuffix(name, incomingSuffix):
			var term, idx uint64
			if _, err := fmt.Sscanf(name, "%016x-%016x", &term, &idx); err == nil && idx <= index {
				remove = true
			}
		case strings.HasSuffix(name, partSuffix):
			remove = true
		}
		if remove {
			if err := os.Remove(filepath.Join(d.dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("raftnode: purge %s: %w", name, err))
			}
		}
	}
	return errors.Join(errs...)
}

// writeFileDurable writes path via a temporary file: fill, fsync, close,
// rename, fsync the directory. A crash leaves the old file or the new one.
func writeFileDurable(path string, fill func(io.Writer) error) (err error) {
	tmp := path + partSuffix
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("raftnode: create %s: %w", tmp, err)
	}
	defer func() {
		if err != nil {
			_ = f.Close() // already failing; the write error is the one to report
			_ = os.Remove(tmp)
		}
	}()
	if err := fill(f); err != nil {
		return fmt.Errorf("raftnode: write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("raftnode: fsync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("raftnode: close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("raftnode: rename %s: %w", tmp, err)
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("raftnode: open dir %s: %w", dir, err)
	}
	if err := d.Sync(); err != nil {
		_ = d.Close()
		return fmt.Errorf("raftnode: fsync dir %s: %w", dir, err)
	}
	if err := d.Close(); err != nil {
		return fmt.Errorf("raftnode: close dir %s: %w", dir, err)
	}
	return nil
}
