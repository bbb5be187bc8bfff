package server

import (
	"errors"
	"fmt"
	"io"
	"log/slog"

	"google.golang.org/protobuf/proto"

	"github.com/cairnkv/cairn/api/cairnpb"
	pb "github.com/cairnkv/cairn/api/etcdserverpb"
	"github.com/cairnkv/cairn/mvcc"
	"github.com/cairnkv/cairn/mvcc/lease"
	"github.com/cairnkv/cairn/raftnode"
)

// applier is the state machine raftnode drives: it decodes each committed
// entry's envelope and applies it to the keyspace and the lease table. Every
// member applies the same entries in the same order and gets the same
// result; nothing here may depend on local time or local state other than
// what earlier entries produced.
//
// The keyspace records each entry's index as its consistent index in the
// same bbolt transaction as the entry's writes, so an entry replayed after a
// crash is skipped by raftnode (see raftnode.StateMachine.AppliedIndex).
type applier struct {
	store   *mvcc.Store
	lessor  *lease.Lessor
	members *memberTable
	log     *slog.Logger
}

// applyResult is what the proposer receives for its entry.
type applyResult struct {
	resp proto.Message
	err  error
	// compacted is closed when a compaction's physical removal finishes.
	compacted <-chan struct{}
}

func (a *applier) AppliedIndex() uint64 {
	i, _ := a.store.ConsistentIndex()
	return i
}

func (a *applier) Apply(index, term uint64, data []byte) any {
	a.store.SetConsistentIndex(index, term)
	var req cairnpb.Request
	if err := proto.Unmarshal(data, &req); err != nil {
		// Every member sees the same bytes and fails the same way.
		a.log.Error("undecodable log entry skipped", "index", index, "err", err)
		return applyResult{err: fmt.Errorf("decode entry %d: %w", index, err)}
	}
	switch r := req.Request.(type) {
	case *cairnpb.Request_Put:
		resp, err := a.store.Put(putReq(r.Put))
		if err != nil {
			return applyResult{err: err}
		}
		out := putResp(resp)
		out.Header = &pb.ResponseHeader{Revision: resp.Revision}
		return applyResult{resp: out}
	case *cairnpb.Request_DeleteRange:
		resp, err := a.store.DeleteRange(deleteReq(r.DeleteRange))
		if err != nil {
			return applyResult{err: err}
		}
		out := deleteResp(resp)
		out.Header = &pb.ResponseHeader{Revision: resp.Revision}
		return applyResult{resp: out}
	case *cairnpb.Request_Txn:
		resp, err := a.store.Txn(txnReq(r.Txn))
		if err != nil {
			return applyResult{err: err}
		}
		out := txnResp(resp, revHeader)
		out.Header = &pb.ResponseHeader{Revision: resp.Revision}
		return applyResult{resp: out}
	case *cairnpb.Request_Compaction:
		done, err := a.store.Compact(r.Compaction.GetRevision())
		if err != nil {
			return applyResult{err: err}
		}
		return applyResult{
			resp:      &pb.CompactionResponse{Header: &pb.ResponseHeader{Revision: a.store.Rev()}},
			compacted: done,
		}
	case *cairnpb.Request_LeaseGrant:
		l, err := a.lessor.Grant(r.LeaseGrant.GetID(), r.LeaseGrant.GetTTL())
		if err != nil {
			return applyResult{err: err}
		}
		return applyResult{resp: &pb.LeaseGrantResponse{
			Header: &pb.ResponseHeader{Revision: a.store.Rev()},
			ID:     l.ID,
			TTL:    l.TTL,
		}}
	case *cairnpb.Request_LeaseRevoke:
		if err := a.lessor.Revoke(r.LeaseRevoke.GetID()); err != nil {
			return applyResult{err: err}
		}
		return applyResult{resp: &pb.LeaseRevokeResponse{Header: &pb.ResponseHeader{Revision: a.store.Rev()}}}
	case *cairnpb.Request_LeaseCheckpoint:
		for _, c := range r.LeaseCheckpoint.GetCheckpoints() {
			// A checkpoint for a lease revoked meanwhile is moot.
			_ = a.lessor.Checkpoint(c.GetID(), c.GetRemaining_TTL())
		}
		return applyResult{resp: &pb.LeaseCheckpointResponse{Header: &pb.ResponseHeader{Revision: a.store.Rev()}}}
	case *cairnpb.Request_MemberAttributes:
		if !a.members.setAttributes(r.MemberAttributes) {
			a.log.Info("attributes of a member not in the cluster ignored", "index", index, "id", formatID(r.MemberAttributes.GetId()))
		}
		return applyResult{}
	case *cairnpb.Request_Alarm:
		return applyResult{resp: &pb.AlarmResponse{Header: &pb.ResponseHeader{Revision: a.store.Rev()}}}
	}
	a.log.Error("log entry with an unknown request skipped", "index", index)
	return applyResult{err: fmt.Errorf("entry %d: unknown request", index)}
}

// ApplyConfChange records a committed membership change; a refused one
// changes nothing but still counts as applied.
func (a *applier) ApplyConfChange(index, term uint64, cc raftnode.ConfChange, rejected error) any {
	a.store.SetConsistentIndex(index, term)
	if rejected != nil {
		if errors.Is(rejected, raftnode.ErrConfChangeRefused) {
			// Raft cannot make it: the only such change cairn could
			// propose is the removal of the last voter.
			rejected = errNotEnoughStarted
		}
		return applyResult{err: rejected}
	}
	a.applyConfChange(cc)
	return applyResult{}
}

// Sync commits the keyspace's batch, with the consistent index.
func (a *applier) Sync() error { return a.store.ForceCommit() }

// WriteSnapshot streams the bbolt file: the keyspace, leases and members.
func (a *applier) WriteSnapshot(w io.Writer) error {
	_, err := a.store.Snapshot(w)
	return err
}

// Peers lists the members and removed IDs the applier has recorded
// (raftnode.PeerSource), for the transport after a snapshot install.
func (a *applier) Peers() ([]raftnode.Peer, []uint64) {
	var peers []raftnode.Peer
	for _, m := range a.members.list() {
		peers = append(peers, raftnode.Peer{ID: m.GetID(), URLs: m.GetPeerURLs()})
	}
	return peers, a.members.removedIDs()
}

// Restore replaces the whole state with a leader's bbolt file.
func (a *applier) Restore(r io.Reader) error {
	if err := a.store.Restore(r); err != nil {
		return err
	}
	return a.members.reload()
}
