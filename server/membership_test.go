package server

import (
	"errors"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/cairnkv/cairn/api/cairnpb"
	"github.com/cairnkv/cairn/raftnode"
)

// The IDs of added members are etcd's: SHA-1 of the sorted peer URLs and
// the Unix time. The expected values were computed independently.
func TestNewMemberIDIsEtcds(t *testing.T) {
	tests := []struct {
		urls []string
		at   int64
		want uint64
	}{
		{[]string{"http://10.0.0.2:2380", "http://10.0.0.1:2380"}, 1700000000, 0x110e931718b7c063},
		{[]string{"http://127.0.0.1:2380"}, 1765152000, 0x5767adb48a845c8c},
	}
	for _, tt := range tests {
		if got := newMemberID(tt.urls, time.Unix(tt.at, 0)); got != tt.want {
			t.Errorf("newMemberID(%v, %d) = %x, want %x", tt.urls, tt.at, got, tt.want)
		}
	}
}

func TestCheckConfChange(t *testing.T) {
	cs := &raftpb.ConfState{Voters: []uint64{1, 2}, Learners: []uint64{3}}
	promote := memberChangeContext(true)
	tests := []struct {
		name string
		cc   raftnode.ConfChange
		want error
	}{
		{"add a new voter", raftnode.ConfChange{Type: raftpb.ConfChangeAddNode, NodeID: 4}, nil},
		{"add an existing voter", raftnode.ConfChange{Type: raftpb.ConfChangeAddNode, NodeID: 1}, errMemberExist},
		{"add a voter that is a learner", raftnode.ConfChange{Type: raftpb.ConfChangeAddNode, NodeID: 3}, errMemberExist},
		{"add a new learner", raftnode.ConfChange{Type: raftpb.ConfChangeAddLearnerNode, NodeID: 4}, nil},
		{"add a learner that is a voter", raftnode.ConfChange{Type: raftpb.ConfChangeAddLearnerNode, NodeID: 2}, errMemberExist},
		{"promote a learner", raftnode.ConfChange{Type: raftpb.ConfChangeAddNode, NodeID: 3, Context: promote}, nil},
		{"promote a voter", raftnode.ConfChange{Type: raftpb.ConfChangeAddNode, NodeID: 2, Context: promote}, errMemberNotLearner},
		{"promote a stranger", raftnode.ConfChange{Type: raftpb.ConfChangeAddNode, NodeID: 9, Context: promote}, errMemberNotFound},
		{"remove a voter", raftnode.ConfChange{Type: raftpb.ConfChangeRemoveNode, NodeID: 2}, nil},
		{"remove a learner", raftnode.ConfChange{Type: raftpb.ConfChangeRemoveNode, NodeID: 3}, nil},
		{"remove a stranger", raftnode.ConfChange{Type: raftpb.ConfChangeRemoveNode, NodeID: 9}, errMemberNotFound},
		{"update a member", raftnode.ConfChange{Type: raftpb.ConfChangeUpdateNode, NodeID: 1}, nil},
		{"update a stranger", raftnode.ConfChange{Type: raftpb.ConfChangeUpdateNode, NodeID: 9}, errMemberNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := checkConfChange(cs, tt.cc); !errors.Is(err, tt.want) {
				t.Fatalf("checkConfChange(%s) = %v, want %v", tt.cc, err, tt.want)
			}
		})
	}
	if err := checkConfChange(cs, raftnode.ConfChange{Type: raftpb.ConfChangeAddNode, NodeID: 4, Context: []byte{0xff}}); err == nil {
		t.Fatal("checkConfChange accepted an undecodable context")
	}
}

func TestMatchInitialCluster(t *testing.T) {
	members := []*cairnpb.Member{
		{Id: 1, PeerUrls: []string{"http://a:2380"}},
		{Id: 2, PeerUrls: []string{"http://b:2380", "http://b2:2380"}},
	}
	tests := []struct {
		name    string
		initial []clusterMember
		ok      bool
	}{
		{"same members", []clusterMember{{"x", []string{"http://b2:2380", "http://b:2380"}}, {"y", []string{"http://a:2380"}}}, true},
		{"one missing", []clusterMember{{"y", []string{"http://a:2380"}}}, false},
		{"one extra", []clusterMember{{"x", []string{"http://b:2380", "http://b2:2380"}}, {"y", []string{"http://a:2380"}}, {"z", []string{"http://c:2380"}}}, false},
		{"other URLs", []clusterMember{{"x", []string{"http://b:2380"}}, {"y", []string{"http://a:2380"}}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := matchInitialCluster(tt.initial, members); (err == nil) != tt.ok {
				t.Fatalf("matchInitialCluster = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}
