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

// Buckets of the membership, written by the applier in the same batch as
// the entry that changed it (so with its consistent index), and so in every
// snapshot.
const (
	// membersBucket maps a member ID (8 bytes, big endian) to its
	// cairnpb.Member.
	membersBucket = "members"
	// removedBucket holds the IDs of removed members (empty values): they
	// may never come back.
	removedBucket = "members_removed"
)

// memberTable is the cluster's membership as this member has applied it:
// the members raft conf changes added (peer URLs, learner or voter) with
// the attributes they published (name, client URLs), and the removed IDs.
// The applier goroutine writes it; services read it from any goroutine.
type memberTable struct {
	be *backend.Backend

	mu      sync.RWMutex
	members map[uint64]*cairnpb.Member
	removed map[uint64]bool
	// seeds are members known from outside the log (the initial cluster, or
	// the member list a joining member fetched) until the log says more.
	seeds []*cairnpb.Member
}

func newMemberTable(be *backend.Backend, seeds []*cairnpb.Member) (*memberTable, error) {
	t := &memberTable{be: be, seeds: seeds}
	if err := t.reload(); err != nil {
		return nil, err
	}
	return t, nil
}

// reload reads the membership from the backend (at start, and after a
// snapshot replaced the file), then fills in what the seeds know and the
// backend does not: at start the bootstrap entries may not have been
// applied yet, and data written by earlier versions lacks peer URLs.
func (t *memberTable) reload() error {
	v, err := t.be.View()
	if err != nil {
		return fmt.Errorf("members: read: %w", err)
	}
	defer v.Release()
	members := map[uint64]*cairnpb.Member{}
	removed := map[uint64]bool{}
	err = v.BucketForEach(membersBucket, func(k, val []byte) error {
		m := &cairnpb.Member{}
		if err := proto.Unmarshal(val, m); err != nil {
			return fmt.Errorf("members: decode %x: %w", k, err)
		}
		members[m.GetId()] = m
		return nil
	})
	if err != nil {
		return err
	}
	err = v.BucketForEach(removedBucket, func(k, _ []byte) error {
		if len(k) != 8 {
			return fmt.Errorf("members: removed ID %x is not 8 bytes", k)
		}
		removed[binary.BigEndian.Uint64(k)] = true
		return nil
	})
	if err != nil {
		return err
	}
	for _, s := range t.seeds {
		if removed[s.GetId()] {
			continue
		}
		m, ok := members[s.GetId()]
		if !ok {
			members[s.GetId()] = proto.Clone(s).(*cairnpb.Member)
		} else if len(m.GetPeerUrls()) == 0 {
			m.PeerUrls = slices.Clone(s.GetPeerUrls())
		}
	}
	t.mu.Lock()
	t.members, t.removed = members, removed
	t.mu.Unlock()
	return nil
}

func memberKey(id uint64) []byte { return binary.BigEndian.AppendUint64(nil, id) }

// put records m (applier goroutine).
func (t *memberTable) put(m *cairnpb.Member) {
	val, err := proto.Marshal(m)
	if err != nil {
		panic(fmt.Sprintf("members: marshal member: %v", err)) // plain fields only
	}
	t.be.Put(membersBucket, memberKey(m.GetId()), val)
	t.mu.Lock()
	t.members[m.GetId()] = m
	t.mu.Unlock()
}

// add records a member a conf change added (applier goroutine). What it
// already published is kept: a seed may have been recorded before.
func (t *memberTable) add(id uint64, peerURLs []string, learner bool) {
	m := t.getRaw(id)
	if m == nil {
		m = &cairnpb.Member{Id: id}
	}
	m.PeerUrls = slices.Clone(peerURLs)
	m.IsLearner = learner
	t.put(m)
}

// promote makes a learner a voter (applier goroutine).
func (t *memberTable) promote(id uint64) {
	if m := t.getRaw(id); m != nil {
		m.IsLearner = false
		t.put(m)
	}
}

// updatePeerURLs replaces a member's peer URLs (applier goroutine).
func (t *memberTable) updatePeerURLs(id uint64, urls []string) {
	if m := t.getRaw(id); m != nil {
		m.PeerUrls = slices.Clone(urls)
		t.put(m)
	}
}

// remove forgets a member for good (applier goroutine).
func (t *memberTable) remove(id uint64) {
	t.be.Delete(membersBucket, memberKey(id))
	t.be.Put(removedBucket, memberKey(id), nil)
	t.mu.Lock()
	delete(t.members, id)
	t.removed[id] = true
	t.mu.Unlock()
}

// setAttributes records what a member published (applier goroutine). A
// member that is not (or no longer) in the cluster is ignored: its
// announcement was overtaken by its removal.
func (t *memberTable) setAttributes(a *cairnpb.MemberAttributes) bool {
	m := t.getRaw(a.GetId())
	if m == nil {
		return false
	}
	m.Name = a.GetName()
	m.ClientUrls = slices.Clone(a.GetClientUrls())
	t.put(m)
	return true
}

// getRaw returns a copy of one member's record, or nil.
func (t *memberTable) getRaw(id uint64) *cairnpb.Member {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if m, ok := t.members[id]; ok {
		return proto.Clone(m).(*cairnpb.Member)
	}
	return nil
}

// get returns one member in etcd's form, or nil.
func (t *memberTable) get(id uint64) *pb.Member {
	if m := t.getRaw(id); m != nil {
		return toPBMember(m)
	}
	return nil
}

func toPBMember(m *cairnpb.Member) *pb.Member {
	return &pb.Member{
		ID:         m.GetId(),
		Name:       m.GetName(),
		PeerURLs:   slices.Clone(m.GetPeerUrls()),
		ClientURLs: slices.Clone(m.GetClientUrls()),
		IsLearner:  m.GetIsLearner(),
	}
}

// list returns the members in etcd's form, ordered by ID.
func (t *memberTable) list() []*pb.Member {
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := make([]*pb.Member, 0, len(t.members))
	for _, m := range t.members {
		out = append(out, toPBMember(m))
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

// isRemoved reports whether id was removed from the cluster.
func (t *memberTable) isRemoved(id uint64) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.removed[id]
}

// removedIDs lists the removed members.
func (t *memberTable) removedIDs() []uint64 {
	t.mu.RLock()
	defer t.mu.RUnlock()
	ids := make([]uint64, 0, len(t.removed))
	for id := range t.removed {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// isLearner reports whether id is a learner of the cluster.
func (t *memberTable) isLearner(id uint64) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	m, ok := t.members[id]
	return ok && m.GetIsLearner()
}

// peerURLOwner returns the member that has url among its peer URLs, other
// than except, or 0.
func (t *memberTable) peerURLOwner(url string, except uint64) uint64 {
	t.mu.RLock()
	defer t.mu.RUnlock()
	for id, m := range t.members {
		if id != except && slices.Contains(m.GetPeerUrls(), url) {
			return id
		}
	}
	return 0
}
