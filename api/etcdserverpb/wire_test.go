package etcdserverpb

import (
	"bytes"
	"testing"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/cairnkv/cairn/api/authpb"
	"github.com/cairnkv/cairn/api/mvccpb"
)

// The expected bytes below are built by hand from etcd's field numbers and
// types, without etcd's code, so a renumbered or retyped field fails here.

func appendBytes(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func appendVarint(b []byte, num protowire.Number, v uint64) []byte {
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func TestWireCompat(t *testing.T) {
	var neg int64 = -3

	tests := []struct {
		name string
		msg  proto.Message
		want []byte
		// alsoDecodes, if set, is another valid encoding (field order is
		// not part of the wire contract) that must decode to msg.
		alsoDecodes []byte
	}{
		{
			name: "PutRequest",
			msg:  &PutRequest{Key: []byte("foo"), Value: []byte("bar"), Lease: 7, PrevKv: true, IgnoreValue: true, IgnoreLease: true},
			want: func() (b []byte) {
				b = appendBytes(b, 1, []byte("foo"))
				b = appendBytes(b, 2, []byte("bar"))
				b = appendVarint(b, 3, 7)
				b = appendVarint(b, 4, 1)
				b = appendVarint(b, 5, 1)
				b = appendVarint(b, 6, 1)
				return b
			}(),
		},
		{
			name: "RangeRequest",
			msg: &RangeRequest{
				Key: []byte("a"), RangeEnd: []byte("b"), Limit: 10, Revision: 42,
				SortOrder: RangeRequest_DESCEND, SortTarget: RangeRequest_MOD,
				Serializable: true, KeysOnly: true, CountOnly: true,
				MinModRevision: 3, MaxModRevision: 40, MinCreateRevision: 2, MaxCreateRevision: 30,
			},
			want: func() (b []byte) {
				b = appendBytes(b, 1, []byte("a"))
				b = appendBytes(b, 2, []byte("b"))
				b = appendVarint(b, 3, 10)
				b = appendVarint(b, 4, 42)
				b = appendVarint(b, 5, 2) // DESCEND
				b = appendVarint(b, 6, 3) // MOD
				b = appendVarint(b, 7, 1)
				b = appendVarint(b, 8, 1)
				b = appendVarint(b, 9, 1)
				b = appendVarint(b, 10, 3)
				b = appendVarint(b, 11, 40)
				b = appendVarint(b, 12, 2)
				b = appendVarint(b, 13, 30)
				return b
			}(),
		},
		{
			name: "Compare mod_revision",
			msg: &Compare{
				Result: Compare_LESS, Target: Compare_MOD, Key: []byte("k"),
				TargetUnion: &Compare_ModRevision{ModRevision: 5},
			},
			want: func() (b []byte) {
				b = appendVarint(b, 1, 2) // LESS
				b = appendVarint(b, 2, 2) // MOD
				b = appendBytes(b, 3, []byte("k"))
				b = appendVarint(b, 6, 5)
				return b
			}(),
		},
		{
			name: "Compare value over a range",
			msg: &Compare{
				Result: Compare_NOT_EQUAL, Target: Compare_VALUE, Key: []byte("k"),
				TargetUnion: &Compare_Value{Value: []byte("v")}, RangeEnd: []byte("l"),
			},
			// protobuf-go writes oneof members after the other fields.
			want: func() (b []byte) {
				b = appendVarint(b, 1, 3) // NOT_EQUAL
				b = appendVarint(b, 2, 3) // VALUE
				b = appendBytes(b, 3, []byte("k"))
				b = appendBytes(b, 64, []byte("l"))
				b = appendBytes(b, 7, []byte("v"))
				return b
			}(),
			// etcd's encoder writes strictly by field number.
			alsoDecodes: func() (b []byte) {
				b = appendVarint(b, 1, 3)
				b = appendVarint(b, 2, 3)
				b = appendBytes(b, 3, []byte("k"))
				b = appendBytes(b, 7, []byte("v"))
				b = appendBytes(b, 64, []byte("l"))
				return b
			}(),
		},
		{
			name: "Compare lease, zero value in oneof is still sent",
			msg:  &Compare{Target: Compare_LEASE, Key: []byte("k"), TargetUnion: &Compare_Lease{Lease: 0}},
			want: func() (b []byte) {
				b = appendVarint(b, 2, 4) // LEASE
				b = appendBytes(b, 3, []byte("k"))
				b = appendVarint(b, 8, 0)
				return b
			}(),
		},
		{
			name: "WatchRequest create",
			msg: &WatchRequest{RequestUnion: &WatchRequest_CreateRequest{CreateRequest: &WatchCreateRequest{
				Key: []byte("k"), RangeEnd: []byte("\x00"), StartRevision: 9, ProgressNotify: true,
				Filters: []WatchCreateRequest_FilterType{WatchCreateRequest_NOPUT, WatchCreateRequest_NODELETE},
				PrevKv:  true, WatchId: 12, Fragment: true,
			}}},
			want: func() (b []byte) {
				var c []byte
				c = appendBytes(c, 1, []byte("k"))
				c = appendBytes(c, 2, []byte("\x00"))
				c = appendVarint(c, 3, 9)
				c = appendVarint(c, 4, 1)
				c = appendBytes(c, 5, []byte{0, 1}) // packed NOPUT, NODELETE
				c = appendVarint(c, 6, 1)
				c = appendVarint(c, 7, 12)
				c = appendVarint(c, 8, 1)
				return appendBytes(b, 1, c)
			}(),
		},
		{
			name: "WatchRequest cancel",
			msg:  &WatchRequest{RequestUnion: &WatchRequest_CancelRequest{CancelRequest: &WatchCancelRequest{WatchId: 4}}},
			want: appendBytes(nil, 2, appendVarint(nil, 1, 4)),
		},
		{
			name: "WatchRequest progress",
			msg:  &WatchRequest{RequestUnion: &WatchRequest_ProgressRequest{ProgressRequest: &WatchProgressRequest{}}},
			want: appendBytes(nil, 3, nil),
		},
		{
			name: "ResponseHeader",
			msg:  &ResponseHeader{ClusterId: 0xcdb5a1e2f3a4b5c6, MemberId: 0x8e9e05c52164694d, Revision: 1 << 40, RaftTerm: 17},
			want: func() (b []byte) {
				b = appendVarint(b, 1, 0xcdb5a1e2f3a4b5c6)
				b = appendVarint(b, 2, 0x8e9e05c52164694d)
				b = appendVarint(b, 3, 1<<40)
				b = appendVarint(b, 4, 17)
				return b
			}(),
		},
		{
			name: "WatchResponse with events",
			msg: &WatchResponse{
				Header: &ResponseHeader{Revision: 8}, WatchId: 1, CompactRevision: 2, CancelReason: "x", Fragment: true,
				Events: []*mvccpb.Event{{Type: mvccpb.Event_DELETE, Kv: &mvccpb.KeyValue{Key: []byte("k"), ModRevision: 8}}},
			},
			want: func() (b []byte) {
				b = appendBytes(b, 1, appendVarint(nil, 3, 8))
				b = appendVarint(b, 2, 1)
				b = appendVarint(b, 5, 2)
				b = appendBytes(b, 6, []byte("x"))
				b = appendVarint(b, 7, 1)
				var kv []byte
				kv = appendBytes(kv, 1, []byte("k"))
				kv = appendVarint(kv, 3, 8)
				var ev []byte
				ev = appendVarint(ev, 1, 1) // DELETE
				ev = appendBytes(ev, 2, kv)
				return appendBytes(b, 11, ev)
			}(),
		},
		{
			name: "LeaseTimeToLiveResponse negative TTL",
			msg:  &LeaseTimeToLiveResponse{ID: 5, TTL: neg, GrantedTTL: 60, Keys: [][]byte{[]byte("a"), []byte("b")}},
			want: func() (b []byte) {
				b = appendVarint(b, 2, 5)
				b = appendVarint(b, 3, uint64(neg)) // int64: ten-byte two's complement, not zigzag
				b = appendVarint(b, 4, 60)
				b = appendBytes(b, 5, []byte("a"))
				b = appendBytes(b, 5, []byte("b"))
				return b
			}(),
		},
		{
			name: "StatusResponse",
			msg: &StatusResponse{
				Version: "3.6.0", DbSize: 4096, Leader: 3, RaftIndex: 10, RaftTerm: 2, RaftAppliedIndex: 10,
				Errors: []string{"e"}, DbSizeInUse: 2048, IsLearner: true, StorageVersion: "3.6.0", DbSizeQuota: 1 << 31,
				DowngradeInfo: &DowngradeInfo{Enabled: true, TargetVersion: "3.5.0"},
			},
			want: func() (b []byte) {
				b = appendBytes(b, 2, []byte("3.6.0"))
				b = appendVarint(b, 3, 4096)
				b = appendVarint(b, 4, 3)
				b = appendVarint(b, 5, 10)
				b = appendVarint(b, 6, 2)
				b = appendVarint(b, 7, 10)
				b = appendBytes(b, 8, []byte("e"))
				b = appendVarint(b, 9, 2048)
				b = appendVarint(b, 10, 1)
				b = appendBytes(b, 11, []byte("3.6.0"))
				b = appendVarint(b, 12, 1<<31)
				var d []byte
				d = appendVarint(d, 1, 1)
				d = appendBytes(d, 2, []byte("3.5.0"))
				return appendBytes(b, 13, d)
			}(),
		},
		{
			name: "AlarmRequest",
			msg:  &AlarmRequest{Action: AlarmRequest_DEACTIVATE, MemberID: 9, Alarm: AlarmType_CORRUPT},
			want: func() (b []byte) {
				b = appendVarint(b, 1, 2)
				b = appendVarint(b, 2, 9)
				b = appendVarint(b, 3, 2)
				return b
			}(),
		},
		{
			name: "AuthRoleGrantPermissionRequest",
			msg: &AuthRoleGrantPermissionRequest{Name: "r", Perm: &authpb.Permission{
				PermType: authpb.Permission_READWRITE, Key: []byte("a"), RangeEnd: []byte("b"),
			}},
			want: func() (b []byte) {
				b = appendBytes(b, 1, []byte("r"))
				var p []byte
				p = appendVarint(p, 1, 2)
				p = appendBytes(p, 2, []byte("a"))
				p = appendBytes(p, 3, []byte("b"))
				return appendBytes(b, 2, p)
			}(),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := proto.MarshalOptions{Deterministic: true}.Marshal(tc.msg)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.want) {
				t.Fatalf("marshal:\n got  %x\n want %x", got, tc.want)
			}
			for _, enc := range [][]byte{tc.want, tc.alsoDecodes} {
				if enc == nil {
					continue
				}
				back := tc.msg.ProtoReflect().New().Interface()
				if err := proto.Unmarshal(enc, back); err != nil {
					t.Fatal(err)
				}
				if !proto.Equal(back, tc.msg) {
					t.Fatalf("unmarshal %x: got %v, want %v", enc, back, tc.msg)
				}
			}
		})
	}
}

// TestUnpackedFilters checks that a non-packed repeated enum (as an older
// encoder may send) decodes too.
func TestUnpackedFilters(t *testing.T) {
	var b []byte
	b = appendVarint(b, 5, 1)
	b = appendVarint(b, 5, 0)
	var got WatchCreateRequest
	if err := proto.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want := []WatchCreateRequest_FilterType{WatchCreateRequest_NODELETE, WatchCreateRequest_NOPUT}
	if len(got.Filters) != 2 || got.Filters[0] != want[0] || got.Filters[1] != want[1] {
		t.Fatalf("filters = %v, want %v", got.Filters, want)
	}
}

// TestJSONNames pins field names whose spelling the JSON gateway exposes
// (it uses the names as written in the .proto).
func TestJSONNames(t *testing.T) {
	tests := []struct {
		msg  proto.Message
		num  protoreflect.FieldNumber
		name string
	}{
		{&StatusResponse{}, 3, "dbSize"},
		{&StatusResponse{}, 5, "raftIndex"},
		{&StatusResponse{}, 9, "dbSizeInUse"},
		{&ResponseHeader{}, 1, "cluster_id"},
		{&LeaseGrantRequest{}, 1, "TTL"},
		{&LeaseGrantRequest{}, 2, "ID"},
		{&LeaseCheckpoint{}, 2, "remaining_TTL"},
		{&LeaseTimeToLiveResponse{}, 4, "grantedTTL"},
		{&Member{}, 3, "peerURLs"},
		{&Member{}, 5, "isLearner"},
		{&AlarmRequest{}, 2, "memberID"},
		{&MoveLeaderRequest{}, 1, "targetID"},
		{&AuthUserAddRequest{}, 4, "hashedPassword"},
		{&AuthStatusResponse{}, 3, "authRevision"},
		{&Compare{}, 64, "range_end"},
		{&authpb.Permission{}, 1, "permType"},
		{&authpb.Role{}, 2, "keyPermission"},
		{&mvccpb.KeyValue{}, 2, "create_revision"},
	}
	for _, tc := range tests {
		md := tc.msg.ProtoReflect().Descriptor()
		f := md.Fields().ByNumber(tc.num)
		if f == nil || string(f.Name()) != tc.name {
			t.Errorf("%s field %d: got %v, want %q", md.FullName(), tc.num, f, tc.name)
		}
	}
}

type binding struct{ path, body string }

// TestMethods pins every service's full method names and HTTP bindings.
func TestMethods(t *testing.T) {
	tests := []struct {
		full     string
		bindings []string // POST paths, body "*"
	}{
		{KV_Range_FullMethodName, []string{"/v3/kv/range"}},
		{KV_Put_FullMethodName, []string{"/v3/kv/put"}},
		{KV_DeleteRange_FullMethodName, []string{"/v3/kv/deleterange"}},
		{KV_Txn_FullMethodName, []string{"/v3/kv/txn"}},
		{KV_Compact_FullMethodName, []string{"/v3/kv/compaction"}},

		{Watch_Watch_FullMethodName, []string{"/v3/watch"}},

		{Lease_LeaseGrant_FullMethodName, []string{"/v3/lease/grant"}},
		{Lease_LeaseRevoke_FullMethodName, []string{"/v3/lease/revoke", "/v3/kv/lease/revoke"}},
		{Lease_LeaseKeepAlive_FullMethodName, []string{"/v3/lease/keepalive"}},
		{Lease_LeaseTimeToLive_FullMethodName, []string{"/v3/lease/timetolive", "/v3/kv/lease/timetolive"}},
		{Lease_LeaseLeases_FullMethodName, []string{"/v3/lease/leases", "/v3/kv/lease/leases"}},

		{Cluster_MemberAdd_FullMethodName, []string{"/v3/cluster/member/add"}},
		{Cluster_MemberRemove_FullMethodName, []string{"/v3/cluster/member/remove"}},
		{Cluster_MemberUpdate_FullMethodName, []string{"/v3/cluster/member/update"}},
		{Cluster_MemberList_FullMethodName, []string{"/v3/cluster/member/list"}},
		{Cluster_MemberPromote_FullMethodName, []string{"/v3/cluster/member/promote"}},

		{Maintenance_Alarm_FullMethodName, []string{"/v3/maintenance/alarm"}},
		{Maintenance_Status_FullMethodName, []string{"/v3/maintenance/status"}},
		{Maintenance_Defragment_FullMethodName, []string{"/v3/maintenance/defragment"}},
		{Maintenance_Hash_FullMethodName, []string{"/v3/maintenance/hash"}},
		{Maintenance_HashKV_FullMethodName, []string{"/v3/maintenance/hashkv"}},
		{Maintenance_Snapshot_FullMethodName, []string{"/v3/maintenance/snapshot"}},
		{Maintenance_MoveLeader_FullMethodName, []string{"/v3/maintenance/transfer-leadership"}},
		{Maintenance_Downgrade_FullMethodName, []string{"/v3/maintenance/downgrade"}},

		{Auth_AuthEnable_FullMethodName, []string{"/v3/auth/enable"}},
		{Auth_AuthDisable_FullMethodName, []string{"/v3/auth/disable"}},
		{Auth_AuthStatus_FullMethodName, []string{"/v3/auth/status"}},
		{Auth_Authenticate_FullMethodName, []string{"/v3/auth/authenticate"}},
		{Auth_UserAdd_FullMethodName, []string{"/v3/auth/user/add"}},
		{Auth_UserGet_FullMethodName, []string{"/v3/auth/user/get"}},
		{Auth_UserList_FullMethodName, []string{"/v3/auth/user/list"}},
		{Auth_UserDelete_FullMethodName, []string{"/v3/auth/user/delete"}},
		{Auth_UserChangePassword_FullMethodName, []string{"/v3/auth/user/changepw"}},
		{Auth_UserGrantRole_FullMethodName, []string{"/v3/auth/user/grant"}},
		{Auth_UserRevokeRole_FullMethodName, []string{"/v3/auth/user/revoke"}},
		{Auth_RoleAdd_FullMethodName, []string{"/v3/auth/role/add"}},
		{Auth_RoleGet_FullMethodName, []string{"/v3/auth/role/get"}},
		{Auth_RoleList_FullMethodName, []string{"/v3/auth/role/list"}},
		{Auth_RoleDelete_FullMethodName, []string{"/v3/auth/role/delete"}},
		{Auth_RoleGrantPermission_FullMethodName, []string{"/v3/auth/role/grant"}},
		{Auth_RoleRevokePermission_FullMethodName, []string{"/v3/auth/role/revoke"}},
	}
	want := map[string][]string{}
	for _, tc := range tests {
		want[tc.full] = tc.bindings
	}
	wantNames := map[string]bool{}
	for _, n := range []string{
		"/etcdserverpb.KV/Range", "/etcdserverpb.KV/Put", "/etcdserverpb.KV/DeleteRange",
		"/etcdserverpb.KV/Txn", "/etcdserverpb.KV/Compact",
		"/etcdserverpb.Watch/Watch",
		"/etcdserverpb.Lease/LeaseGrant", "/etcdserverpb.Lease/LeaseRevoke", "/etcdserverpb.Lease/LeaseKeepAlive",
		"/etcdserverpb.Lease/LeaseTimeToLive", "/etcdserverpb.Lease/LeaseLeases",
		"/etcdserverpb.Cluster/MemberAdd", "/etcdserverpb.Cluster/MemberRemove", "/etcdserverpb.Cluster/MemberUpdate",
		"/etcdserverpb.Cluster/MemberList", "/etcdserverpb.Cluster/MemberPromote",
		"/etcdserverpb.Maintenance/Alarm", "/etcdserverpb.Maintenance/Status", "/etcdserverpb.Maintenance/Defragment",
		"/etcdserverpb.Maintenance/Hash", "/etcdserverpb.Maintenance/HashKV", "/etcdserverpb.Maintenance/Snapshot",
		"/etcdserverpb.Maintenance/MoveLeader", "/etcdserverpb.Maintenance/Downgrade",
		"/etcdserverpb.Auth/AuthEnable", "/etcdserverpb.Auth/AuthDisable", "/etcdserverpb.Auth/AuthStatus",
		"/etcdserverpb.Auth/Authenticate", "/etcdserverpb.Auth/UserAdd", "/etcdserverpb.Auth/UserGet",
		"/etcdserverpb.Auth/UserList", "/etcdserverpb.Auth/UserDelete", "/etcdserverpb.Auth/UserChangePassword",
		"/etcdserverpb.Auth/UserGrantRole", "/etcdserverpb.Auth/UserRevokeRole", "/etcdserverpb.Auth/RoleAdd",
		"/etcdserverpb.Auth/RoleGet", "/etcdserverpb.Auth/RoleList", "/etcdserverpb.Auth/RoleDelete",
		"/etcdserverpb.Auth/RoleGrantPermission", "/etcdserverpb.Auth/RoleRevokePermission",
	} {
		wantNames[n] = true
	}
	if len(wantNames) != len(want) {
		t.Fatalf("%d literal names, %d constants", len(wantNames), len(want))
	}
	for full := range want {
		if !wantNames[full] {
			t.Errorf("generated constant %q is not one of etcd's method names", full)
		}
	}

	streaming := map[string][2]bool{
		Watch_Watch_FullMethodName:          {true, true},
		Lease_LeaseKeepAlive_FullMethodName: {true, true},
		Maintenance_Snapshot_FullMethodName: {false, true},
	}

	// Every method in the descriptor is in the table, and carries exactly the
	// expected bindings.
	fd, err := protoregistry.GlobalFiles.FindFileByPath("etcdserverpb/rpc.proto")
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	services := fd.Services()
	for i := 0; i < services.Len(); i++ {
		sd := services.Get(i)
		methods := sd.Methods()
		for j := 0; j < methods.Len(); j++ {
			md := methods.Get(j)
			full := "/" + string(sd.FullName()) + "/" + string(md.Name())
			paths, ok := want[full]
			if !ok {
				t.Errorf("method %s is not in the table", full)
				continue
			}
			seen++
			if cs, ss := md.IsStreamingClient(), md.IsStreamingServer(); cs != streaming[full][0] || ss != streaming[full][1] {
				t.Errorf("%s: client/server streaming = %v/%v, want %v", full, cs, ss, streaming[full])
			}
			rule, _ := proto.GetExtension(md.Options(), annotations.E_Http).(*annotations.HttpRule)
			var got []binding
			if rule != nil {
				got = append(got, binding{rule.GetPost(), rule.GetBody()})
				for _, ab := range rule.GetAdditionalBindings() {
					got = append(got, binding{ab.GetPost(), ab.GetBody()})
				}
			}
			if len(got) != len(paths) {
				t.Errorf("%s: bindings %v, want POST %v", full, got, paths)
				continue
			}
			for k, p := range paths {
				if got[k] != (binding{p, "*"}) {
					t.Errorf("%s: binding %d = %v, want POST %s body *", full, k, got[k], p)
				}
			}
		}
	}
	if seen != len(want) {
		t.Errorf("descriptor has %d of the %d methods in the table", seen, len(want))
	}
}
