package integration

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	pb "github.com/cairnkv/cairn/api/etcdserverpb"
	"github.com/cairnkv/cairn/integration/harness"
)

// writer puts unique keys through any member that answers, recording the
// keys whose put was acknowledged.
type writer struct {
	conns []*grpc.ClientConn
	next  atomic.Int64

	mu    sync.Mutex
	acked []string
	fails int
}

func (w *writer) put(ctx context.Context, key string) bool {
	for attempt := range len(w.conns) {
		conn := w.conns[(int(w.next.Add(1))+attempt)%len(w.conns)]
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := pb.NewKVClient(conn).Put(cctx, &pb.PutRequest{Key: []byte(key), Value: []byte("v-" + key)})
		cancel()
		if err == nil {
			w.mu.Lock()
			w.acked = append(w.acked, key)
			w.mu.Unlock()
			return true
		}
	}
	w.mu.Lock()
	w.fails++
	w.mu.Unlock()
	return false
}

func (w *writer) ackedCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

// TestKillDuringWrites kills one member with SIGKILL while writes stream in,
// keeps writing, restarts it, and checks that no acknowledged write was lost
// and that every member ends with the same keyspace hash.
func TestKillDuringWrites(t *testing.T) {
	for _, victim := range []string{"leader", "follower"} {
		t.Run(victim, func(t *testing.T) {
			c := harness.NewCluster(t, 3, harness.Options{Flags: []string{"--snapshot-count", "300"}})
			w := &writer{}
			for _, m := range c.Members {
				w.conns = append(w.conns, m.Conn())
			}
			lead := c.WaitLeader()
			target := lead
			if victim == "follower" {
				for _, m := range c.Members {
					if m != lead {
						target = m
						break
					}
				}
			}

			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			var seq atomic.Int64
			for g := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for ctx.Err() == nil {
						w.put(ctx, fmt.Sprintf("k-%d-%06d", g, seq.Add(1)))
					}
				}()
			}
			harness.WaitFor(t, 30*time.Second, "500 acknowledged writes", func() bool { return w.ackedCount() >= 500 })
			target.Kill()
			killedAt := w.ackedCount()
			// The survivors keep taking writes.
			harness.WaitFor(t, 30*time.Second, "writes to continue after the kill", func() bool {
				return w.ackedCount() >= killedAt+500
			})
			target.Start()
			harness.WaitFor(t, 30*time.Second, "more writes after the restart", func() bool {
				return w.ackedCount() >= killedAt+1000
			})
			cancel()
			wg.Wait()

			// Every member, the restarted one included, catches up and holds
			// every acknowledged key.
			revs := waitSameRevision(t, c)
			for _, m := range c.Members {
				kv := pb.NewKVClient(m.Conn())
				cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
				resp, err := kv.Range(cctx, &pb.RangeRequest{Key: []byte("k-"), RangeEnd: []byte("k."), Serializable: true, KeysOnly: true})
				ccancel()
				if err != nil {
					t.Fatalf("range on %s: %v", m.Name, err)
				}
				have := make(map[string]bool, len(resp.Kvs))
				for _, kv := range resp.Kvs {
					have[string(kv.Key)] = true
				}
				for _, k := range w.acked {
					if !have[k] {
						t.Fatalf("%s lost acknowledged key %s (%d acknowledged, %d present)", m.Name, k, len(w.acked), len(have))
					}
				}
			}
			hashes := map[uint32][]string{}
			for _, m := range c.Members {
				cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
				h, err := pb.NewMaintenanceClient(m.Conn()).HashKV(cctx, &pb.HashKVRequest{Revision: revs})
				ccancel()
				if err != nil {
					t.Fatalf("HashKV on %s: %v", m.Name, err)
				}
				hashes[h.Hash] = append(hashes[h.Hash], m.Name)
			}
			if len(hashes) != 1 {
				t.Fatalf("members disagree on HashKV at revision %d: %v", revs, hashes)
			}
			t.Logf("%d writes acknowledged, %d gave up; all members equal at revision %d", len(w.acked), w.fails, revs)
		})
	}
}

// waitSameRevision waits until every member reports the same keyspace
// revision (no writes are in flight) and returns it.
func waitSameRevision(t *testing.T, c *harness.Cluster) int64 {
	t.Helper()
	var rev int64
	harness.WaitFor(t, 30*time.Second, "all members at the same revision", func() bool {
		rev = 0
		for _, m := range c.Members {
			st, err := m.Status()
			if err != nil {
				return false
			}
			r := st.GetHeader().GetRevision()
			if rev != 0 && r != rev {
				return false
			}
			rev = r
		}
		return rev != 0
	})
	return rev
}
