package cairnpb

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/cairnkv/cairn/api/etcdserverpb"
)

// TestFieldNumbers pins the envelope's field numbers and types: entries
// already in some raft log depend on them.
func TestFieldNumbers(t *testing.T) {
	want := map[int32][2]string{
		1: {"put", "etcdserverpb.PutRequest"},
		2: {"delete_range", "etcdserverpb.DeleteRangeRequest"},
		3: {"txn", "etcdserverpb.TxnRequest"},
		4: {"compaction", "etcdserverpb.CompactionRequest"},
		5: {"lease_grant", "etcdserverpb.LeaseGrantRequest"},
		6: {"lease_revoke", "etcdserverpb.LeaseRevokeRequest"},
		7: {"lease_checkpoint", "etcdserverpb.LeaseCheckpointRequest"},
		8: {"alarm", "etcdserverpb.AlarmRequest"},
		9: {"member_attributes", "cairnpb.MemberAttributes"},
	}
	fields := (&Request{}).ProtoReflect().Descriptor().Fields()
	if fields.Len() != len(want) {
		t.Errorf("Request has %d fields, want %d", fields.Len(), len(want))
	}
	for i := 0; i < fields.Len(); i++ {
		f := fields.Get(i)
		w, ok := want[int32(f.Number())]
		if !ok {
			t.Errorf("unexpected field %d %s", f.Number(), f.Name())
			continue
		}
		if string(f.Name()) != w[0] || f.Message() == nil || string(f.Message().FullName()) != w[1] {
			t.Errorf("field %d: %s %v, want %s %s", f.Number(), f.Name(), f.Message().FullName(), w[0], w[1])
		}
		if f.ContainingOneof() == nil || f.ContainingOneof().Name() != "request" {
			t.Errorf("field %d is not in oneof request", f.Number())
		}
	}
}

func TestRoundTrip(t *testing.T) {
	in := &Request{Request: &Request_LeaseCheckpoint{LeaseCheckpoint: &etcdserverpb.LeaseCheckpointRequest{
		Checkpoints: []*etcdserverpb.LeaseCheckpoint{{ID: 7, Remaining_TTL: 30}},
	}}}
	b, err := proto.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	// field 7, length-delimited, holding LeaseCheckpointRequest{checkpoints: [{ID: 7, remaining_TTL: 30}]}
	want := []byte{0x3a, 0x06, 0x0a, 0x04, 0x08, 0x07, 0x10, 0x1e}
	if string(b) != string(want) {
		t.Fatalf("marshal = %x, want %x", b, want)
	}
	var out Request
	if err := proto.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(in, &out) {
		t.Fatalf("round trip: got %v, want %v", &out, in)
	}
}
