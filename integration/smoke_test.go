package integration

import (
	"context"
	"testing"
	"time"

	pb "github.com/cairnkv/cairn/api/etcdserverpb"
	"github.com/cairnkv/cairn/integration/harness"
)

func TestThreeMemberPutGet(t *testing.T) {
	c := harness.NewCluster(t, 3, harness.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv0 := pb.NewKVClient(c.Members[0].Conn())
	if _, err := kv0.Put(ctx, &pb.PutRequest{Key: []byte("a"), Value: []byte("1")}); err != nil {
		t.Fatalf("put: %v", err)
	}
	for _, m := range c.Members {
		resp, err := pb.NewKVClient(m.Conn()).Range(ctx, &pb.RangeRequest{Key: []byte("a")})
		if err != nil {
			t.Fatalf("range on %s: %v", m.Name, err)
		}
		if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "1" {
			t.Fatalf("range on %s: %v", m.Name, resp.Kvs)
		}
	}
}
