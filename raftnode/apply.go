package raftnode

import (
	"encoding/binary"
	"errors"
	"fmt"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/cairnkv/cairn/wal"
)

// applyLoop hands committed entries to the state machine in log order and
// wakes their proposers. It runs beside the raft loop, so applying one batch
// overlaps persisting the next.
func (n *Node) applyLoop() {
	defer n.wg.Done()
	for {
		select {
		case t := <-n.applyc:
			if t.barrier != nil {
				close(t.barrier)
				continue
			}
			if err := n.apply(t); err != nil {
				if errors.Is(err, ErrRemoved) {
					n.stopWith(err)
				} else {
					n.fatal(err)
				}
				return
			}
		case <-n.stopc:
			return
		}
	}
}

func (n *Node) apply(t applyTask) error {
	if len(t.entries) == 0 {
		return nil
	}
	confs := t.confs
	removed, added := false, false
	for _, e := range t.entries {
		idx := e.GetIndex()
		if term := e.GetTerm(); term > n.appliedTerm {
			// Every entry of an earlier term that will ever commit came
			// before this one: proposals of those terms still waiting lost.
			n.waits.FailBefore(term, ErrLeaderChanged)
			n.appliedTerm = term
		}
		if isConfChange(e) {
			d := confs[0]
			confs = confs[1:]
			if idx <= n.smApplied {
				continue
			}
			v := n.sm.ApplyConfChange(idx, e.GetTerm(), d.cc, d.rejected)
			n.waits.Trigger(d.id, result{value: v})
			if d.rejected == nil && d.cc.Type == raftpb.ConfChangeRemoveNode && d.cc.NodeID == n.cfg.ID {
				removed = true
			}
			if d.rejected == nil && (d.cc.Type == raftpb.ConfChangeAddNode || d.cc.Type == raftpb.ConfChangeAddLearnerNode) {
				added = true
			}
			continue
		}
		if idx <= n.smApplied || e.GetType() != raftpb.EntryNormal {
			continue
		}
		data := e.GetData()
		if len(data) == 0 {
			continue // the empty entry a new leader appends
		}
		if len(data) < requestIDSize {
			return fmt.Errorf("raftnode: entry %d has a %d-byte payload, shorter than a request ID", idx, len(data))
		}
		id := binary.BigEndian.Uint64(data)
		v := n.sm.Apply(idx, e.GetTerm(), data[requestIDSize:])
		n.waits.Trigger(id, result{value: v})
	}
	last := t.entries[len(t.entries)-1].GetIndex()
	if t.confState != nil {
		n.confState = t.confState
	}
	if removed {
		return n.removeSelf(last)
	}
	n.applied.Store(max(last, n.applied.Load()))
	n.notifyApplied()
	// A member just added may need a snapshot (the log it needs was
	// compacted), and raft on it ignores one whose membership does not
	// name it: the snapshot the leader sends must be taken after the
	// addition.
	if added || last-n.snapIndex >= n.cfg.SnapshotCount {
		return n.snapshot(last)
	}
	return nil
}

// snapshot records that the state machine covers every entry up to index:
// sync the state machine, write the metadata file and the WAL marker, then
// let go of what the snapshot makes redundant (raft's in-memory entries
// beyond a catch-up tail, WAL segments, old snapshot files).
func (n *Node) snapshot(index uint64) error {
	if err := n.sm.Sync(); err != nil {
		return fmt.Errorf("raftnode: sync state machine for snapshot %d: %w", index, err)
	}
	snap, err := n.storage.CreateSnapshot(index, n.confState, nil)
	if errors.Is(err, raft.ErrSnapOutOfDate) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("raftnode: create snapshot %d: %w", index, err)
	}
	meta := snap.GetMetadata()
	if err := n.snaps.saveMeta(meta); err != nil {
		return err
	}
	if err := n.wal.SaveSnapshot(wal.Snapshot{Index: meta.GetIndex(), Term: meta.GetTerm()}); err != nil {
		return fmt.Errorf("raftnode: save snapshot marker: %w", err)
	}
	n.snapIndex = index
	n.snapshots.Add(1)
	if index > n.cfg.SnapshotCatchUpEntries {
		err := n.storage.Compact(index - n.cfg.SnapshotCatchUpEntries)
		if err != nil && !errors.Is(err, raft.ErrCompacted) {
			return fmt.Errorf("raftnode: compact raft storage: %w", err)
		}
	}
	if err := n.wal.ReleaseTo(index); err != nil {
		return fmt.Errorf("raftnode: release log segments: %w", err)
	}
	if err := n.snaps.purge(index); err != nil {
		n.log.Warn("purge snapshot files", "err", err)
	}
	n.log.Info("snapshot taken", "index", index, "term", meta.GetTerm())
	return nil
}
