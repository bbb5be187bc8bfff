package raftnode

import (
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/cairnkv/cairn/wal"
)

// toWAL converts raft entries to the WAL's form; the WAL copies the data, so
// the slices may alias raft's.
func toWAL(ents []*raftpb.Entry) []wal.Entry {
	if len(ents) == 0 {
		return nil
	}
	out := make([]wal.Entry, len(ents))
	for i, e := range ents {
		out[i] = wal.Entry{Index: e.GetIndex(), Term: e.GetTerm(), Type: uint8(e.GetType()), Data: e.GetData()}
	}
	return out
}

func fromWAL(ents []wal.Entry) []*raftpb.Entry {
	out := make([]*raftpb.Entry, len(ents))
	for i, e := range ents {
		out[i] = &raftpb.Entry{
			Index: new(e.Index),
			Term:  new(e.Term),
			Type:  raftpb.EntryType(e.Type).Enum(),
			Data:  e.Data,
		}
	}
	return out
}

func unmarshal(b []byte, m proto.Message) error { return proto.Unmarshal(b, m) }
