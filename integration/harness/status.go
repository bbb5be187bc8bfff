package harness

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protowire"
)

// The harness asks members for their status without cairn's generated
// proto packages. Those register the message types etcdserverpb.*,
// mvccpb.* and authpb.* in the process-wide protobuf registry, and so do
// etcd's own api packages: a test binary that links both panics at start.
// The compatibility suite (integration/compat) links etcd's client and this
// harness, so the harness decodes the few fields it needs from the wire.

// Status is the part of etcd's StatusResponse the harness reads. Its
// getters are named as the generated ones, so callers read it the same way.
type Status struct {
	Header           *Header
	Version          string
	DbSize           int64
	Leader           uint64
	RaftIndex        uint64
	RaftTerm         uint64
	RaftAppliedIndex uint64
	Errors           []string
	DbSizeInUse      int64
	IsLearner        bool
}

// Header is etcd's ResponseHeader.
type Header struct {
	ClusterId uint64
	MemberId  uint64
	Revision  int64
	RaftTerm  uint64
}

func (s *Status) GetHeader() *Header {
	if s == nil {
		return nil
	}
	return s.Header
}

func (s *Status) GetVersion() string {
	if s == nil {
		return ""
	}
	return s.Version
}

func (s *Status) GetDbSize() int64 {
	if s == nil {
		return 0
	}
	return s.DbSize
}

func (s *Status) GetLeader() uint64 {
	if s == nil {
		return 0
	}
	return s.Leader
}

func (s *Status) GetRaftIndex() uint64 {
	if s == nil {
		return 0
	}
	return s.RaftIndex
}

func (s *Status) GetRaftTerm() uint64 {
	if s == nil {
		return 0
	}
	return s.RaftTerm
}

func (s *Status) GetRaftAppliedIndex() uint64 {
	if s == nil {
		return 0
	}
	return s.RaftAppliedIndex
}

func (s *Status) GetErrors() []string {
	if s == nil {
		return nil
	}
	return s.Errors
}

func (h *Header) GetClusterId() uint64 {
	if h == nil {
		return 0
	}
	return h.ClusterId
}

func (h *Header) GetMemberId() uint64 {
	if h == nil {
		return 0
	}
	return h.MemberId
}

func (h *Header) GetRevision() int64 {
	if h == nil {
		return 0
	}
	return h.Revision
}

func (h *Header) GetRaftTerm() uint64 {
	if h == nil {
		return 0
	}
	return h.RaftTerm
}

// rawCodec passes bytes through unchanged; it keeps the name "proto" so the
// call carries the usual content type.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("harness: raw codec cannot marshal %T", v)
	}
	return *b, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("harness: raw codec cannot unmarshal into %T", v)
	}
	*b = append((*b)[:0], data...)
	return nil
}

func (rawCodec) Name() string { return "proto" }

// callStatus calls etcdserverpb.Maintenance/Status with an empty request.
func callStatus(ctx context.Context, conn *grpc.ClientConn) (*Status, error) {
	req, resp := []byte{}, []byte{}
	if err := conn.Invoke(ctx, "/etcdserverpb.Maintenance/Status", &req, &resp, grpc.ForceCodec(rawCodec{})); err != nil {
		return nil, err
	}
	return decodeStatus(resp)
}

// decodeStatus reads a StatusResponse (field numbers from etcd's rpc.proto);
// fields it does not know are skipped.
func decodeStatus(b []byte) (*Status, error) {
	st := &Status{}
	err := eachField(b, func(num protowire.Number, v uint64, bytes []byte) error {
		switch num {
		case 1:
			h, err := decodeHeader(bytes)
			st.Header = h
			return err
		case 2:
			st.Version = string(bytes)
		case 3:
			st.DbSize = int64(v)
		case 4:
			st.Leader = v
		case 5:
			st.RaftIndex = v
		case 6:
			st.RaftTerm = v
		case 7:
			st.RaftAppliedIndex = v
		case 8:
			st.Errors = append(st.Errors, string(bytes))
		case 9:
			st.DbSizeInUse = int64(v)
		case 10:
			st.IsLearner = v != 0
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("harness: decode StatusResponse: %w", err)
	}
	return st, nil
}

func decodeHeader(b []byte) (*Header, error) {
	h := &Header{}
	err := eachField(b, func(num protowire.Number, v uint64, _ []byte) error {
		switch num {
		case 1:
			h.ClusterId = v
		case 2:
			h.MemberId = v
		case 3:
			h.Revision = int64(v)
		case 4:
			h.RaftTerm = v
		}
		return nil
	})
	return h, err
}

// eachField calls fn for each varint field (v) and length-delimited field
// (bytes) of a message, and skips fields of other wire types.
func eachField(b []byte, fn func(num protowire.Number, v uint64, bytes []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		var v uint64
		var bytes []byte
		switch typ {
		case protowire.VarintType:
			v, n = protowire.ConsumeVarint(b)
		case protowire.BytesType:
			bytes, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if typ != protowire.VarintType && typ != protowire.BytesType {
			continue
		}
		if err := fn(num, v, bytes); err != nil {
			return err
		}
	}
	return nil
}
