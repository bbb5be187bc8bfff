package docker

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "github.com/cairnkv/cairn/api/etcdserverpb"
)

// member is one compose service as the test reaches it: through its
// published client port on 127.0.0.1.
type member struct {
	service string // compose service name, cairn1..5
	addr    string // 127.0.0.1:port
	id      uint64 // raft member ID, learned from Status
	kv      pb.KVClient
	mt      pb.MaintenanceClient
}

func (m *member) String() string { return m.service }

// cluster is the running compose project and a client for each member.
type cluster struct {
	t       *testing.T
	ctx     context.Context // ends on SIGINT/SIGTERM and before the test's deadline
	p       *project
	members []*member // cairn1..3, the members throughout
	etcdctl string    // path of etcdctl (etcd 3.4+), for membership changes
	start   time.Time
}

// logf logs with the time since the test began.
func (c *cluster) logf(format string, args ...any) {
	c.t.Helper()
	c.t.Logf("[%5.1fs] %s", time.Since(c.start).Seconds(), fmt.Sprintf(format, args...))
}

func TestComposeCluster(t *testing.T) {
	etcdctl, etcdctlErr := findEtcdctl()
	if os.Getenv("CAIRN_DOCKER_TEST") != "1" {
		msg := "deployment test in Docker: set CAIRN_DOCKER_TEST=1 (make docker-test)"
		if etcdctlErr != nil {
			msg += "; it also needs etcdctl (Debian: apt-get install etcd-client), not found: " + etcdctlErr.Error()
		}
		t.Skip(msg)
	}
	if etcdctlErr != nil {
		t.Fatalf("CAIRN_DOCKER_TEST=1 but etcdctl is missing (the scale step runs etcdctl member add/remove; Debian: apt-get install etcd-client; CAIRN_ETCDCTL names another one): %v", etcdctlErr)
	}
	c := &cluster{t: t, start: time.Now(), etcdctl: etcdctl}
	// A signal fails the test instead of killing it, so the cleanups run;
	// and the test stops 30s before go test's own deadline for the same
	// reason.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	t.Cleanup(stop)
	if dl, ok := t.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, dl.Add(-30*time.Second))
		t.Cleanup(cancel)
	}
	c.ctx = ctx

	// 1. Binary, image, compose project.
	c.p = newProject(t)
	c.logf("project %s, compose command %q, %s", c.p.name, c.p.compose, c.etcdctlVersion())
	c.p.buildImage(ctx)
	c.logf("built the binary and image %s", c.p.image)
	ports := c.p.up(ctx,
		// Snapshots every 500 entries, so restarts replay a snapshot plus
		// the WAL, and a member that was down may be sent one.
		"CAIRN_SNAPSHOT_COUNT=500")
	for i, port := range ports {
		c.members = append(c.members, c.dial(fmt.Sprintf("cairn%d", i+1), port))
	}
	c.logf("compose up: clients on %v", ports)
	lead := c.waitLeader("a leader all three agree on", c.members, 30*time.Second)
	for _, m := range c.members {
		st, err := c.status(m)
		if err != nil {
			t.Fatalf("status of %s: %v", m, err)
		}
		m.id = st.GetHeader().GetMemberId()
	}
	c.logf("leader %s (member IDs %x %x %x)", lead, c.members[0].id, c.members[1].id, c.members[2].id)

	// 2. Writes through a client. want holds every acknowledged put.
	want := map[string]string{}
	for i := range 100 {
		k, v := fmt.Sprintf("docker/a/%03d", i), fmt.Sprintf("a%d", i)
		c.mustPut(c.members[i%3], k, v)
		want[k] = v
	}
	c.logf("100 puts acknowledged")

	// 3. Partition the leader from its peers.
	old := lead
	others := without(c.members, old)
	netID := c.p.network(ctx, "cluster")
	oldCtr := c.p.container(ctx, old.service)
	if _, err := c.p.docker(ctx, "network", "disconnect", netID, oldCtr); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	c.logf("disconnected %s (the leader) from the cluster network", old)
	newLead := c.waitLeader("a new leader among the other two", others, 30*time.Second)
	c.logf("%s elected leader after %.1fs", newLead, time.Since(cut).Seconds())

	// The old leader still answers clients, but only from local state.
	if n := c.count(old, "docker/a/", true); n != 100 {
		t.Fatalf("serializable range on the cut-off %s: %d keys, want 100", old, n)
	}
	lctx, lcancel := context.WithTimeout(ctx, 3*time.Second)
	began := time.Now()
	_, err := old.kv.Range(lctx, &pb.RangeRequest{Key: []byte("docker/a/000")})
	lcancel()
	if err == nil {
		t.Fatalf("linearizable range on the cut-off %s succeeded", old)
	}
	c.logf("%s: serializable range answers; linearizable range fails after %.1fs: %v", old, time.Since(began).Seconds(), errText(err))
	pctx, pcancel := context.WithTimeout(ctx, 3*time.Second)
	_, err = old.kv.Put(pctx, &pb.PutRequest{Key: []byte("docker/isolated"), Value: []byte("x")})
	pcancel()
	if err == nil {
		t.Fatalf("put through the cut-off %s was acknowledged", old)
	}
	c.logf("%s: put not acknowledged: %v", old, errText(err))
	// The majority keeps taking writes.
	for i := range 50 {
		k, v := fmt.Sprintf("docker/b/%03d", i), fmt.Sprintf("b%d", i)
		c.mustPut(others[i%2], k, v)
		want[k] = v
	}
	c.logf("50 puts acknowledged by the majority")

	// 4. Heal, converge.
	if _, err := c.p.docker(ctx, "network", "connect", "--alias", old.service+"-peer", "--alias", old.service, netID, oldCtr); err != nil {
		t.Fatal(err)
	}
	healed := time.Now()
	c.logf("reconnected %s after %.1fs apart", old, healed.Sub(cut).Seconds())
	c.waitLeader("all three to agree on a leader again", c.members, 90*time.Second)
	c.logf("%s rejoined %.1fs after the heal", old, time.Since(healed).Seconds())
	c.waitFor("a linearizable range on "+old.service+" to succeed", 30*time.Second, func() (bool, string) {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		resp, err := old.kv.Range(rctx, &pb.RangeRequest{Key: []byte("docker/b/"), RangeEnd: []byte("docker/b0"), CountOnly: true})
		if err != nil {
			return false, errText(err)
		}
		return resp.Count == 50, fmt.Sprintf("%d of the 50 keys written while it was cut off", resp.Count)
	})
	rev := c.checkConverged()
	if n := c.count(old, "docker/isolated", false); n != 0 {
		t.Fatalf("the put the cut-off leader did not acknowledge exists after the heal")
	}
	c.logf("converged: same leader, old leader serves linearizable reads, HashKV equal at revision %d", rev)

	// 5. Rolling restart under writes.
	w := c.startWriters(c.members, "docker/r/", 4)
	w.waitAcked(c, 50)
	for i, m := range c.members {
		before := w.count()
		began := time.Now()
		c.p.mustCompose(ctx, "stop", "-t", "20", m.service)
		stopped := time.Since(began)
		ctr := c.p.container(ctx, m.service)
		if st := c.p.exitCode(ctx, ctr); st != "false 0" {
			t.Errorf("%s after compose stop: running, exit code = %q, want a clean exit (false 0)", m, st)
		}
		// The last one stays down until the others have moved on by more
		// than the log tail a leader keeps after a snapshot (5,000 entries;
		// snapshots every 500), so it must catch up from a snapshot: the
		// leader's bbolt file streamed over the cluster network.
		behind := 50
		if i == len(c.members)-1 {
			behind = 6000
		}
		w.waitAcked(c, behind)
		c.logf("stopped %s in %.1fs; the other two took %d more writes", m, stopped.Seconds(), w.count()-before)
		c.p.mustCompose(ctx, "start", m.service)
		c.waitRejoined(m, c.members)
		w.waitAcked(c, 50)
		how := "from the leader's log"
		if logs, err := c.p.docker(ctx, "logs", "--since", began.Format(time.RFC3339Nano), ctr); err != nil {
			t.Fatal(err)
		} else if strings.Contains(logs, "installed snapshot from leader") {
			how = "from a snapshot"
		}
		c.logf("started %s; it caught up %s; %d writes acknowledged so far", m, how, w.count())
	}
	// An upgrade replaces the container: the member must come back from its
	// named volume as the same member.
	recreated := c.members[0]
	oldID := c.p.container(ctx, recreated.service)
	c.p.mustCompose(ctx, "up", "-d", "--no-deps", "--force-recreate", "-t", "20", recreated.service)
	if id := c.p.container(ctx, recreated.service); id == oldID {
		t.Fatalf("compose up --force-recreate kept container %s", id)
	}
	c.waitRejoined(recreated, c.members)
	if st, err := c.status(recreated); err != nil || st.GetHeader().GetMemberId() != recreated.id {
		t.Fatalf("re-created %s: status %v, %v; want member ID %x", recreated, st, err, recreated.id)
	}
	w.waitAcked(c, 50)
	c.logf("re-created %s's container; it rejoined from its volume as member %x", recreated, recreated.id)

	// 6. Grow to five members and shrink back to three, writers running.
	maps.Copy(want, c.scale(w))

	acked, fails := w.stop()
	c.logWriters("writers through cairn1..3", acked, fails)
	maps.Copy(want, acked)

	// Final check: every acknowledged write on every member, at one revision.
	rev = c.checkConverged()
	for _, m := range c.members {
		got := c.rangeAt(m, "docker/", rev)
		lost := 0
		for k, v := range want {
			if g, ok := got[k]; !ok || g != v {
				if lost++; lost <= 10 {
					t.Errorf("%s: acknowledged %s = %q, found %q (present: %v)", m, k, v, g, ok)
				}
			}
		}
		if lost > 0 {
			t.Errorf("%s: %d of %d acknowledged puts missing or changed at revision %d", m, lost, len(want), rev)
		}
		if _, ok := got["docker/isolated"]; ok {
			t.Errorf("%s has docker/isolated, whose put was not acknowledged by the cut-off leader", m)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	c.logf("every member holds all %d acknowledged puts at revision %d; HashKV equal", len(want), rev)
}

// dial connects to a member's published client port. Reconnect backoff is
// capped at a second so a restarted member is found again quickly.
func (c *cluster) dial(service string, port int) *member {
	c.t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	conn, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: time.Second,
		}))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { _ = conn.Close() })
	return &member{service: service, addr: addr, kv: pb.NewKVClient(conn), mt: pb.NewMaintenanceClient(conn)}
}

func (c *cluster) status(m *member) (*pb.StatusResponse, error) {
	ctx, cancel := context.WithTimeout(c.ctx, time.Second)
	defer cancel()
	return m.mt.Status(ctx, &pb.StatusRequest{})
}

// waitFor polls cond every 100ms until it holds, failing the test with
// cond's last explanation after d.
func (c *cluster) waitFor(what string, d time.Duration, cond func() (bool, string)) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if c.ctx.Err() != nil {
			c.t.Fatalf("stopped waiting for %s: %v (interrupted, or the test's deadline is near); last: %s", what, context.Cause(c.ctx), detail)
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("gave up waiting %v for %s; last: %s", d, what, detail)
		}
		select {
		case <-c.ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitLeader waits until every member in ms names the same leader, itself
// one of ms, and returns it.
func (c *cluster) waitLeader(what string, ms []*member, d time.Duration) *member {
	c.t.Helper()
	var lead *member
	c.waitFor(what, d, func() (bool, string) {
		var ids []uint64
		for _, m := range ms {
			st, err := c.status(m)
			if err != nil {
				return false, fmt.Sprintf("%s: %s", m, errText(err))
			}
			ids = append(ids, st.GetLeader())
			if m.id == 0 {
				m.id = st.GetHeader().GetMemberId()
			}
		}
		for _, id := range ids {
			if id == 0 || id != ids[0] {
				return false, fmt.Sprintf("leaders named by %v: %x", ms, ids)
			}
		}
		for _, m := range ms {
			if m.id == ids[0] {
				lead = m
				return true, ""
			}
		}
		return false, fmt.Sprintf("%v agree on leader %x, which is none of them", ms, ids[0])
	})
	return lead
}

// waitRejoined waits until m is back: all of ms (m among them) agree on a
// leader, and m has applied what the leader had when m answered.
func (c *cluster) waitRejoined(m *member, ms []*member) {
	c.t.Helper()
	lead := c.waitLeader(fmt.Sprintf("%s to rejoin and %v to agree on a leader", m, ms), ms, 60*time.Second)
	st, err := c.status(lead)
	if err != nil {
		c.t.Fatalf("status of leader %s: %v", lead, err)
	}
	target := st.GetHeader().GetRevision()
	c.waitFor(fmt.Sprintf("%s to catch up to revision %d", m, target), 60*time.Second, func() (bool, string) {
		st, err := c.status(m)
		if err != nil {
			return false, errText(err)
		}
		return st.GetHeader().GetRevision() >= target, fmt.Sprintf("at revision %d", st.GetHeader().GetRevision())
	})
}

// checkConverged waits until all three name the same leader and stand at
// the same revision (no writes may be running), then checks that their
// HashKV at that revision agree. It returns the revision.
func (c *cluster) checkConverged() int64 {
	c.t.Helper()
	c.waitLeader("all three to agree on a leader", c.members, 60*time.Second)
	var rev int64
	c.waitFor("all three at the same revision", 60*time.Second, func() (bool, string) {
		var revs []int64
		for _, m := range c.members {
			st, err := c.status(m)
			if err != nil {
				return false, fmt.Sprintf("%s: %s", m, errText(err))
			}
			revs = append(revs, st.GetHeader().GetRevision())
		}
		rev = revs[0]
		return rev > 0 && revs[1] == rev && revs[2] == rev, fmt.Sprintf("revisions %v", revs)
	})
	hashes := map[string][]string{}
	for _, m := range c.members {
		ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
		h, err := m.mt.HashKV(ctx, &pb.HashKVRequest{Revision: rev})
		cancel()
		if err != nil {
			c.t.Fatalf("HashKV(%d) on %s: %v", rev, m, err)
		}
		key := fmt.Sprintf("hash %08x (compact revision %d, hash revision %d)", h.Hash, h.CompactRevision, h.HashRevision)
		hashes[key] = append(hashes[key], m.service)
	}
	if len(hashes) != 1 {
		c.t.Fatalf("members disagree on HashKV at revision %d: %v", rev, hashes)
	}
	return rev
}

// mustPut puts key=value through m, retrying the same put for up to 10s.
func (c *cluster) mustPut(m *member, key, value string) {
	c.t.Helper()
	c.waitFor(fmt.Sprintf("put %s through %s", key, m), 10*time.Second, func() (bool, string) {
		ctx, cancel := context.WithTimeout(c.ctx, 3*time.Second)
		defer cancel()
		_, err := m.kv.Put(ctx, &pb.PutRequest{Key: []byte(key), Value: []byte(value)})
		return err == nil, errText(err)
	})
}

// count is the number of keys under prefix on m (a single key if prefix
// does not end in "/").
func (c *cluster) count(m *member, prefix string, serializable bool) int64 {
	c.t.Helper()
	r := &pb.RangeRequest{Key: []byte(prefix), CountOnly: true, Serializable: serializable}
	if bytes.HasSuffix(r.Key, []byte("/")) {
		r.RangeEnd = prefixEnd(r.Key)
	}
	ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
	defer cancel()
	resp, err := m.kv.Range(ctx, r)
	if err != nil {
		c.t.Fatalf("range %s on %s (serializable %v): %v", prefix, m, serializable, err)
	}
	return resp.Count
}

// rangeAt reads every key under prefix from m's local state at rev, a
// page at a time (how many keys the writers manage depends on the machine).
func (c *cluster) rangeAt(m *member, prefix string, rev int64) map[string]string {
	c.t.Helper()
	got := map[string]string{}
	key, end := []byte(prefix), prefixEnd([]byte(prefix))
	for {
		ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
		resp, err := m.kv.Range(ctx, &pb.RangeRequest{Key: key, RangeEnd: end, Revision: rev, Serializable: true, Limit: 2000})
		cancel()
		if err != nil {
			c.t.Fatalf("range %s at revision %d on %s: %v", prefix, rev, m, err)
		}
		for _, kv := range resp.Kvs {
			got[string(kv.Key)] = string(kv.Value)
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return got
		}
		key = append(bytes.Clone(resp.Kvs[len(resp.Kvs)-1].Key), 0)
	}
}

func prefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	end[len(end)-1]++
	return end
}

func without(ms []*member, x *member) []*member {
	return slices.DeleteFunc(slices.Clone(ms), func(m *member) bool { return m == x })
}

// errText is an error's gRPC code and message, or its text.
func errText(err error) string {
	if err == nil {
		return "ok"
	}
	if s, ok := status.FromError(err); ok {
		return fmt.Sprintf("%s: %s", s.Code(), s.Message())
	}
	return err.Error()
}

// writers put unique keys (prefix and a sequence number) through each of
// their members in turn, each put with its own value, and record those
// acknowledged. After a failed put a writer
// moves on to the next member with a new key: the failed put's outcome is
// unknown, so it is not checked.
type writers struct {
	members []*member
	prefix  string
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	seq     atomic.Int64

	mu    sync.Mutex
	acked map[string]string
	fails map[string]int // error text (member name, code, message) → count
}

func (c *cluster) startWriters(ms []*member, prefix string, n int) *writers {
	ctx, cancel := context.WithCancel(c.ctx)
	w := &writers{members: slices.Clone(ms), prefix: prefix, cancel: cancel, acked: map[string]string{}, fails: map[string]int{}}
	c.t.Cleanup(func() { w.stop() }) // if the test fails before it stops them
	for g := range n {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			failed := 0 // consecutive failures
			for i := g; ctx.Err() == nil; i++ {
				m := w.members[i%len(w.members)]
				s := w.seq.Add(1)
				key, value := fmt.Sprintf("%s%06d", w.prefix, s), fmt.Sprintf("v%d-%s-%d", s, m.service, time.Now().UnixNano())
				pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
				_, err := m.kv.Put(pctx, &pb.PutRequest{Key: []byte(key), Value: []byte(value)})
				pcancel()
				w.mu.Lock()
				if err == nil {
					w.acked[key] = value
				} else if ctx.Err() == nil {
					w.fails[m.service+": "+errText(err)]++
				}
				w.mu.Unlock()
				if err == nil {
					failed = 0
				} else if failed++; failed >= len(w.members) {
					// Every member failed in turn (an election, say): pause
					// rather than spin. One member down costs no pause.
					select {
					case <-ctx.Done():
					case <-time.After(50 * time.Millisecond):
					}
				}
			}
		}()
	}
	return w
}

func (w *writers) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

// waitAcked waits until n more puts are acknowledged.
func (w *writers) waitAcked(c *cluster, n int) {
	c.t.Helper()
	target := w.count() + n
	c.waitFor(fmt.Sprintf("%d more acknowledged writes", n), 30*time.Second+time.Duration(n)*10*time.Millisecond, func() (bool, string) {
		got := w.count()
		return got >= target, fmt.Sprintf("%d of %d", got, target)
	})
}

// logWriters logs how many puts were acknowledged and how the others
// failed.
func (c *cluster) logWriters(what string, acked map[string]string, fails map[string]int) {
	c.t.Helper()
	nfail := 0
	for _, n := range fails {
		nfail += n
	}
	c.logf("%s stopped: %d puts acknowledged, %d not:", what, len(acked), nfail)
	for _, e := range slices.Sorted(maps.Keys(fails)) {
		c.t.Logf("\t%5d × %s", fails[e], e)
	}
}

// stop ends the writers and returns what was acknowledged and how the
// other puts failed.
func (w *writers) stop() (map[string]string, map[string]int) {
	w.cancel()
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	return maps.Clone(w.acked), maps.Clone(w.fails)
}
