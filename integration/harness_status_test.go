package integration

import (
	"context"
	"testing"
	"time"

	pb "github.com/cairnkv/cairn/api/etcdserverpb"
	"github.com/cairnkv/cairn/integration/harness"
)

// The harness decodes StatusResponse by hand (it must not link cairn's
// generated packages; see harness/status.go). Check it against them.
func TestHarnessStatusMatchesGenerated(t *testing.T) {
	c := harness.NewCluster(t, 1, harness.Options{})
	m := c.Members[0]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := pb.NewKVClient(m.Conn()).Put(ctx, &pb.PutRequest{Key: []byte("k"), Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	type fields struct {
		cluster, member, term, leader, raftIndex, raftTerm uint64
		rev, dbSize, inUse                                 int64
		version                                            string
		errors                                             int
	}
	var g, w fields
	// Nothing else writes, but the backend may commit between the two
	// reads and change its size: compare until they agree.
	harness.WaitFor(t, 10*time.Second, "the harness's status to match the generated client's", func() bool {
		want, err := pb.NewMaintenanceClient(m.Conn()).Status(ctx, &pb.StatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		got, err := m.Status()
		if err != nil {
			t.Fatal(err)
		}
		g = fields{got.GetHeader().GetClusterId(), got.GetHeader().GetMemberId(), got.GetHeader().GetRaftTerm(), got.GetLeader(),
			got.GetRaftIndex(), got.GetRaftTerm(), got.GetHeader().GetRevision(), got.GetDbSize(), got.DbSizeInUse, got.GetVersion(), len(got.GetErrors())}
		w = fields{want.GetHeader().GetClusterId(), want.GetHeader().GetMemberId(), want.GetHeader().GetRaftTerm(), want.GetLeader(),
			want.GetRaftIndex(), want.GetRaftTerm(), want.GetHeader().GetRevision(), want.GetDbSize(), want.GetDbSizeInUse(), want.GetVersion(), len(want.GetErrors())}
		if g != w {
			t.Logf("harness status %+v, generated %+v", g, w)
		}
		return g == w
	})
	if g.rev < 2 || g.leader == 0 || g.version == "" {
		t.Fatalf("status looks empty: %+v", g)
	}
}
