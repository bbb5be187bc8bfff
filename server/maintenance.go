package server

import (
	"context"
	"crypto/sha256"
	"hash"
	"hash/crc32"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/cairnkv/cairn/api/etcdserverpb"
)

// maintenanceService is etcd's Maintenance service.
type maintenanceService struct {
	pb.UnimplementedMaintenanceServer
	s *Server
}

func (m *maintenanceService) Status(ctx context.Context, _ *pb.StatusRequest) (*pb.StatusResponse, error) {
	s := m.s
	st := s.node.Status()
	resp := &pb.StatusResponse{
		Header:           s.header(s.store.Rev()),
		Version:          APIVersion,
		DbSize:           s.store.Size(),
		DbSizeInUse:      s.store.SizeInUse(),
		DbSizeQuota:      s.quota,
		Leader:           st.Leader,
		RaftIndex:        st.CommitIndex,
		RaftTerm:         st.Term,
		RaftAppliedIndex: st.AppliedIndex,
		StorageVersion:   "3.6.0",
		IsLearner:        s.members.isLearner(s.id),
	}
	if st.Leader == 0 {
		resp.Errors = append(resp.Errors, "etcdserver: no leader")
	}
	if s.store.Size() > s.quota {
		resp.Errors = append(resp.Errors, "memberID:"+formatID(s.id)+" alarm:NOSPACE ")
	}
	return resp, nil
}

func (m *maintenanceService) Alarm(ctx context.Context, r *pb.AlarmRequest) (*pb.AlarmResponse, error) {
	resp := &pb.AlarmResponse{Header: m.s.header(m.s.store.Rev())}
	if r.GetAction() == pb.AlarmRequest_GET && m.s.store.Size() > m.s.quota {
		resp.Alarms = []*pb.AlarmMember{{MemberID: m.s.id, Alarm: pb.AlarmType_NOSPACE}}
	}
	return resp, nil
}

// Hash is a CRC-32C of the whole backend file as a snapshot of it reads.
// Like etcd's, it is for tests: HashKV is the consistency check.
func (m *maintenanceService) Hash(ctx context.Context, _ *pb.HashRequest) (*pb.HashResponse, error) {
	h := crc32.New(crc32.MakeTable(crc32.Castagnoli))
	rev := m.s.store.Rev()
	if _, err := m.s.store.Snapshot(h); err != nil {
		return nil, toWire(err)
	}
	return &pb.HashResponse{Header: m.s.header(rev), Hash: h.Sum32()}, nil
}

func (m *maintenanceService) HashKV(ctx context.Context, r *pb.HashKVRequest) (*pb.HashKVResponse, error) {
	res, err := m.s.store.HashKV(r.GetRevision())
	if err != nil {
		return nil, toWire(err)
	}
	return &pb.HashKVResponse{
		Header:          m.s.header(res.Revision),
		Hash:            res.Hash,
		CompactRevision: res.CompactRevision,
		HashRevision:    res.HashRevision,
	}, nil
}

func (m *maintenanceService) Defragment(ctx context.Context, _ *pb.DefragmentRequest) (*pb.DefragmentResponse, error) {
	st, err := m.s.store.Defragment()
	if err != nil {
		return nil, toWire(err)
	}
	m.s.log.Info("defragmented", "size-before", st.SizeBefore, "size-after", st.SizeAfter)
	return &pb.DefragmentResponse{Header: m.s.header(m.s.store.Rev())}, nil
}

// snapshotChunk is the blob size of one Snapshot message.
const snapshotChunk = 32 * 1024

// Snapshot streams the backend file followed, in a last message, by the
// SHA-256 of everything before it, as etcd does; tools verify the file
// with it.
func (m *maintenanceService) Snapshot(_ *pb.SnapshotRequest, stream pb.Maintenance_SnapshotServer) error {
	rev := m.s.store.Rev()
	w := &snapshotSender{stream: stream, sum: sha256.New(), header: m.s.header(rev), buf: make([]byte, 0, snapshotChunk)}
	if _, err := m.s.store.Snapshot(w); err != nil {
		if st, ok := status.FromError(err); ok {
			return st.Err()
		}
		return toWire(err)
	}
	if err := w.flush(); err != nil {
		return err
	}
	return w.send(w.sum.Sum(nil))
}

// snapshotSender chunks the backend's snapshot into SnapshotResponses.
type snapshotSender struct {
	stream    pb.Maintenance_SnapshotServer
	sum       hash.Hash
	header    *pb.ResponseHeader
	buf       []byte
	remaining int64
}

func (w *snapshotSender) SetSize(n int64) { w.remaining = n }

func (w *snapshotSender) Write(p []byte) (int, error) {
	w.sum.Write(p)
	n := len(p)
	for len(p) > 0 {
		k := copy(w.buf[len(w.buf):cap(w.buf)], p)
		w.buf = w.buf[:len(w.buf)+k]
		p = p[k:]
		if len(w.buf) == cap(w.buf) {
			if err := w.flush(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

func (w *snapshotSender) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	w.remaining -= int64(len(w.buf))
	err := w.send(w.buf)
	w.buf = w.buf[:0]
	return err
}

func (w *snapshotSender) send(blob []byte) error {
	resp := &pb.SnapshotResponse{RemainingBytes: uint64(max(w.remaining, 0)), Blob: blob, Version: APIVersion}
	if w.header != nil {
		resp.Header, w.header = w.header, nil
	}
	if err := w.stream.Send(resp); err != nil {
		return err
	}
	return nil
}

var _ io.Writer = (*snapshotSender)(nil)

func (m *maintenanceService) Downgrade(ctx context.Context, r *pb.DowngradeRequest) (*pb.DowngradeResponse, error) {
	return nil, status.Error(codes.Unimplemented, "cairn: Downgrade is not supported")
}

// authService answers AuthStatus (authentication is off) and refuses the
// rest: cairn has no users or roles yet.
type authService struct {
	pb.UnimplementedAuthServer
}

func (authService) AuthStatus(context.Context, *pb.AuthStatusRequest) (*pb.AuthStatusResponse, error) {
	return &pb.AuthStatusResponse{Header: &pb.ResponseHeader{}, Enabled: false}, nil
}

func (authService) Authenticate(context.Context, *pb.AuthenticateRequest) (*pb.AuthenticateResponse, error) {
	return nil, errAuthNotEnabled
}
