package server

import (
	"encoding/binary"
	"fmt"
	"slices"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/cairnkv/cairn/api/cairnpb"
	pb "github.com/cairnkv/cairn/api/etcdserverpb"
	"github.com/cairnkv/cairn/mvcc/backend"
)

// membersBucket holds each member's published attributes (name and client
// URLs), keyed by member ID, written by the applier.
const membersBucket = "members"

// memberTable is the cluster's membership as this member knows it: the
// initial cluster's IDs and peer URLs, plus the attributes members publish
// through the log when they start.
type memberTable struct {
	be *backend.Backend

	mu      sync.RWMutex
	members map[uint64]*pb.Member
}

func newMemberTable(be *backend.Backend, initial []*pb.Member) (*memberTable, error) {
	t := &memberTable{be: be, members: map[uint64]*pb.Member{}}
	for _, m := range initial {
		t.members[m.GetID()] = proto.Clone(m).(*pb.Member)
	}
	if err := t.reload(); err != nil {
		return nil, err
	}
	return t, nil
}

// reload reads published attributes from the backend (at start, and after a
// snapshot replaced the file).
func (t *memberTable) reload() error {
	v, err := t.be.View()
	if err != nil {
		return fmt.Errorf("members: read: %w", err)
	}
	defer v.Release()
	return v.BucketForEach(membersBucket, func(k, val []byte) error {
		var a cairnpb.MemberAttributes
		if err := proto.Unmarshal(val, &a); err != nil {
			return fmt.Errorf("members: decode %x: %w", k, err)
		}
		t.apply(&a)
		return nil
	})
}

// setAttributes records a member's attributes (applier goroutine).
func (t *memberTable) setAttributes(a *cairnpb.MemberAttributes) {
	val, err := proto.Marshal(a)
	if err != nil {
		panic(fmt.Sprintf("members: marshal attributes: %v", err)) // a message we just decoded
	}
	t.be.Put(membersBucket, binary.BigEndian.AppendUint64(nil, a.GetId()), val)
	t.apply(a)
}

func (t *memberTable) apply(a *cairnpb.MemberAttributes) {
	t.mu.Lock()
	defer t.mu.Unlock()
	m, ok := t.members[a.GetId()]
	if !ok {
		m = &pb.Member{ID: a.GetId()}
		t.members[a.GetId()] = m
	}
	m.Name = a.GetName()
	m.ClientURLs = slices.Clone(a.GetClientUrls())
}

// list returns the members ordered by ID.
func (t *memberTable) list() []*pb.Member {
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := make([]*pb.Member, 0, len(t.members))
	for _, m := range t.members {
		out = append(out, proto.Clone(m).(*pb.Member))
	}
	slices.SortFunc(out, func(a, b *pb.Member) int {
		switch {
		case a.GetID() < b.GetID():
			return -1
		case a.GetID() > b.GetID():
			return 1
		}
		return 0
	})
	return out
}

// get returns one member, or nil.
func (t *memberTable) get(id uint64) *pb.Member {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if m, ok := t.members[id]; ok {
		return proto.Clone(m).(*pb.Member)
	}
	return nil
}
