package compat

import (
	"crypto/sha1"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cairnkv/cairn/integration/harness"
)

// Membership changes driven by etcd's own tools: etcdctl 3.7 for the
// operator's steps, etcd's Go client for the writers, reads and the error
// cases.

// memberEndpoints are the client addresses of the members not removed
// (running or not): what an operator passes to etcdctl.
func memberEndpoints(c *harness.Cluster) []string {
	var eps []string
	for _, m := range c.Members {
		if !m.Removed {
			eps = append(eps, m.Addr())
		}
	}
	return eps
}

// runningEndpoints are the client addresses of the running members not
// removed (etcdctl move-leader asks every endpoint for its status).
func runningEndpoints(c *harness.Cluster) []string {
	var eps []string
	for _, m := range c.Running() {
		eps = append(eps, m.Addr())
	}
	return eps
}

// idOf asks a running member for its ID.
func idOf(t testing.TB, m *harness.Member) uint64 {
	t.Helper()
	var id uint64
	waitFor(t, "the member ID of "+m.Name, func() error {
		var err error
		id, err = m.MemberID()
		if err == nil && id == 0 {
			err = errors.New("ID 0")
		}
		return err
	})
	return id
}

// exitCode is the exit status in Member.Wait's error; it fails the test if
// the process did not exit.
func exitCode(t testing.TB, m *harness.Member, err error) int {
	t.Helper()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	}
	t.Fatalf("%s: %v", m.Name, err)
	return -1
}

// logTail is the end of a member's log, for failure messages.
func logTail(m *harness.Member, n int) string {
	b, err := os.ReadFile(m.LogPath())
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// codeAndMessage is the gRPC code and message of an error from etcd's
// client (which turns etcd's known errors into rpctypes.EtcdError).
func codeAndMessage(err error) (codes.Code, string) {
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return ee.Code(), ee.Error()
	}
	if s, ok := status.FromError(err); ok {
		return s.Code(), s.Message()
	}
	return codes.Unknown, err.Error()
}

// expectError fails unless err has the given code and message exactly.
func expectError(t testing.TB, what string, err error, code codes.Code, msg string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error, want %v %q", what, code, msg)
	}
	if gc, gm := codeAndMessage(err); gc != code || gm != msg {
		t.Fatalf("%s: %v %q (%T), want %v %q", what, gc, gm, err, code, msg)
	}
}

// ctlAddMember prepares a new member with the harness, admits it with
// `etcdctl member add` and gives it the settings etcdctl printed
// (ETCD_NAME, ETCD_INITIAL_CLUSTER, ...) as flags. It does not start it.
// extra flags go to the new member's command line.
func ctlAddMember(t testing.TB, c *harness.Cluster, name string, learner bool, extra ...string) (*harness.Member, uint64) {
	t.Helper()
	m := c.NewMember(name, extra...)
	return m, ctlAdmit(t, c, m, learner)
}

// ctlAdmit is ctlAddMember for a member already prepared with NewMember;
// urls are its peer URLs (default: the harness's PeerURL).
func ctlAdmit(t testing.TB, c *harness.Cluster, m *harness.Member, learner bool, urls ...string) uint64 {
	t.Helper()
	name := m.Name
	if len(urls) == 0 {
		urls = []string{m.PeerURL}
	}
	args := []string{"member", "add", name, "--peer-urls=" + strings.Join(urls, ",")}
	if learner {
		args = append(args, "--learner")
	}
	var r ctlResult
	var before, after time.Time
	retryUnhealthy(t, "member add "+name, func() ctlResult {
		before = time.Now()
		r = runEtcdctl(t, runningEndpoints(c), 10*time.Second, args...)
		after = time.Now()
		return r
	})
	if r.code != 0 {
		c.Forget(m)
		t.Fatalf("%v", r)
	}
	out, err := parseMemberAdd(r.stdout)
	if err != nil {
		t.Fatalf("member add printed what etcdctl should not: %v\n%v", err, r)
	}
	if !isEtcdMemberID(out.id, urls, before, after) {
		t.Errorf("member ID %x is not etcd's for peer URLs %v at any second from %v to %v", out.id, urls, before, after)
	}
	if out.learner != learner {
		t.Errorf("member add says learner=%v, want %v:\n%s", out.learner, learner, r.stdout)
	}
	var want []string
	for _, o := range c.Members {
		switch {
		case o == m:
			for _, u := range urls {
				want = append(want, o.Name+"="+u)
			}
		case !o.Removed:
			want = append(want, o.Name+"="+o.PeerURL)
		}
	}
	got := strings.Split(out.env["ETCD_INITIAL_CLUSTER"], ",")
	slices.Sort(want)
	slices.Sort(got)
	if out.env["ETCD_NAME"] != name || out.env["ETCD_INITIAL_ADVERTISE_PEER_URLS"] != strings.Join(urls, ",") ||
		out.env["ETCD_INITIAL_CLUSTER_STATE"] != "existing" || !slices.Equal(got, want) {
		t.Fatalf("member add printed settings %v, want name %s, peer URLs %v, state existing and initial cluster %v", out.env, name, urls, want)
	}
	m.AddFlags(
		"--name", out.env["ETCD_NAME"],
		"--initial-cluster", out.env["ETCD_INITIAL_CLUSTER"],
		"--initial-advertise-peer-urls", out.env["ETCD_INITIAL_ADVERTISE_PEER_URLS"],
		"--initial-cluster-state", out.env["ETCD_INITIAL_CLUSTER_STATE"],
	)
	t.Logf("added %s as %x (learner %v)", name, out.id, learner)
	return out.id
}

// isEtcdMemberID reports whether id is the ID etcd gives a member added
// with peerURLs at some second between from and to: the first 8 bytes
// (big-endian) of the SHA-1 of the sorted URLs, concatenated, followed by
// the unix time in decimal.
func isEtcdMemberID(id uint64, peerURLs []string, from, to time.Time) bool {
	urls := slices.Sorted(slices.Values(peerURLs))
	for sec := from.Unix() - 1; sec <= to.Unix()+1; sec++ {
		sum := sha1.Sum([]byte(strings.Join(urls, "") + strconv.FormatInt(sec, 10)))
		if binary.BigEndian.Uint64(sum[:8]) == id {
			return true
		}
	}
	return false
}

// waitJoined waits until a started new member has the ID it was added
// with, has applied revision rev (a serializable read on it alone), and is
// listed as started, with its name and client URL, by the cluster.
func waitJoined(t testing.TB, cli *clientv3.Client, m *harness.Member, id uint64, rev int64) {
	t.Helper()
	waitFor(t, m.Name+" to come up with ID "+hexID(id), func() error {
		got, err := m.MemberID()
		if err == nil && got != id {
			t.Fatalf("%s runs with ID %x, member add gave %x", m.Name, got, id)
		}
		return err
	})
	waitCaughtUp(t, m, rev)
	waitFor(t, m.Name+" to be listed as started", func() error {
		resp, err := cli.MemberList(ctx(t))
		if err != nil {
			return err
		}
		for _, mm := range resp.Members {
			if mm.ID == id {
				if mm.Name != m.Name || !slices.Equal(mm.ClientURLs, []string{m.ClientURL}) || !slices.Contains(mm.PeerURLs, m.PeerURL) {
					return fmt.Errorf("listed as %+v", mm)
				}
				return nil
			}
		}
		return fmt.Errorf("%x not in the member list", id)
	})
}

// waitCaughtUp waits until m answers a serializable read at revision rev or
// later.
func waitCaughtUp(t testing.TB, m *harness.Member, rev int64) {
	t.Helper()
	one := newClient(t, m.Addr())
	waitFor(t, fmt.Sprintf("%s to apply revision %d", m.Name, rev), func() error {
		resp, err := one.Get(ctx(t), "\x00", clientv3.WithSerializable())
		if err != nil {
			return err
		}
		if resp.Header.Revision < rev {
			return fmt.Errorf("at revision %d", resp.Header.Revision)
		}
		return nil
	})
}

// ctlMembers runs `etcdctl member list` and parses it.
func ctlMembers(t testing.TB, c *harness.Cluster) []ctlMember {
	t.Helper()
	r := mustEtcdctl(t, runningEndpoints(c), "member", "list")
	ms, err := parseMemberList(r.stdout)
	if err != nil {
		t.Fatalf("%v\n%v", err, r)
	}
	return ms
}

// expectCtlMembers checks `etcdctl member list` against the harness's
// members not removed: every one started, with its name and URLs, learner
// only if named in learners.
func expectCtlMembers(t testing.TB, c *harness.Cluster, learners ...string) {
	t.Helper()
	var want, got []string
	for _, m := range c.Members {
		if !m.Removed {
			want = append(want, fmt.Sprintf("%s started %s %s learner=%v", m.Name, m.PeerURL, m.ClientURL, slices.Contains(learners, m.Name)))
		}
	}
	for _, m := range ctlMembers(t, c) {
		got = append(got, fmt.Sprintf("%s %s %s %s learner=%v", m.name, map[bool]string{true: "started", false: "unstarted"}[m.started], m.peerURLs, m.clientURLs, m.learner))
	}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("etcdctl member list:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// putRetry puts key=val, trying again on errors (a put in flight to a
// member that is killed fails, and etcd's client does not retry puts)
// until waitTimeout; it returns the revision.
func putRetry(t testing.TB, cli *clientv3.Client, key, val string) int64 {
	t.Helper()
	var rev int64
	waitFor(t, "a put of "+key, func() error {
		resp, err := cli.Put(ctx(t), key, val)
		if err == nil {
			rev = resp.Header.Revision
		}
		return err
	})
	return rev
}

// mustServe puts a key through cli and reads it back linearizably.
func mustServe(t testing.TB, cli *clientv3.Client, key string) int64 {
	t.Helper()
	rev := putRetry(t, cli, key, "v")
	if kv := getOne(t, cli, key); string(kv.Value) != "v" {
		t.Fatalf("%s = %q after the put", key, kv.Value)
	}
	return rev
}

// writers put unique keys back to back until stopped and remember each
// acknowledged one with its revision.
type writers struct {
	stop  chan struct{}
	wg    sync.WaitGroup
	acks  atomic.Int64
	fails atomic.Int64

	mu      sync.Mutex
	acked   map[string]int64
	lastErr error
}

func startWriters(t testing.TB, cli *clientv3.Client, prefix string, n int) *writers {
	w := &writers{stop: make(chan struct{}), acked: map[string]int64{}}
	for i := range n {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			for seq := 0; seq < 100000; seq++ {
				select {
				case <-w.stop:
					return
				case <-time.After(2 * time.Millisecond): // leave the machine some air
				}
				key := fmt.Sprintf("%sw%d/%06d", prefix, i, seq)
				pctx, cancel := contextWithTimeout(3 * time.Second)
				resp, err := cli.Put(pctx, key, "v")
				cancel()
				if err != nil {
					w.fails.Add(1)
					w.mu.Lock()
					w.lastErr = err
					w.mu.Unlock()
					continue
				}
				w.mu.Lock()
				w.acked[key] = resp.Header.Revision
				w.mu.Unlock()
				w.acks.Add(1)
			}
		}()
	}
	t.Cleanup(w.halt)
	return w
}

func (w *writers) halt() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	w.wg.Wait()
}

// progress waits until the writers have had more acknowledgements since
// the call: the cluster serves writes.
func (w *writers) progress(t testing.TB, more int64, what string) {
	t.Helper()
	target := w.acks.Load() + more
	waitFor(t, fmt.Sprintf("%d more acknowledged writes %s", more, what), func() error {
		if n := w.acks.Load(); n < target {
			w.mu.Lock()
			defer w.mu.Unlock()
			return fmt.Errorf("%d of %d; %d failed, last error %v", n, target, w.fails.Load(), w.lastErr)
		}
		return nil
	})
}

// finish stops the writers and returns the acknowledged keys.
func (w *writers) finish(t testing.TB) map[string]int64 {
	w.halt()
	w.mu.Lock()
	defer w.mu.Unlock()
	t.Logf("writers: %d writes acknowledged, %d failed (last error: %v)", len(w.acked), w.fails.Load(), w.lastErr)
	return maps.Clone(w.acked)
}

// checkConverged checks that every acknowledged write is on each of the
// members (a serializable read on that member alone) and that their
// keyspace hashes agree at one common revision.
func checkConverged(t testing.TB, cli *clientv3.Client, members []*harness.Member, prefix string, acked map[string]int64) {
	t.Helper()
	rev := putRetry(t, cli, prefix+"final", "x")
	for _, m := range members {
		one := newClient(t, m.Addr())
		var resp *clientv3.GetResponse
		waitFor(t, fmt.Sprintf("%s to apply revision %d", m.Name, rev), func() error {
			var err error
			resp, err = one.Get(ctx(t), prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithSerializable())
			if err != nil {
				return err
			}
			if resp.Header.Revision < rev {
				return fmt.Errorf("at revision %d", resp.Header.Revision)
			}
			return nil
		})
		have := make(map[string]bool, len(resp.Kvs))
		for _, kv := range resp.Kvs {
			have[string(kv.Key)] = true
		}
		var missing []string
		for k, r := range acked {
			if !have[k] {
				missing = append(missing, fmt.Sprintf("%s (rev %d)", k, r))
			}
		}
		if len(missing) > 0 {
			slices.Sort(missing)
			t.Errorf("%s lacks %d of %d acknowledged writes, e.g. %v", m.Name, len(missing), len(acked), missing[:min(len(missing), 10)])
		}
	}
	var hashes []string
	var first uint32
	for i, m := range members {
		var h *clientv3.HashKVResponse
		waitFor(t, fmt.Sprintf("HashKV of %s at revision %d", m.Name, rev), func() error {
			var err error
			h, err = cli.HashKV(ctx(t), m.Addr(), rev)
			return err
		})
		hashes = append(hashes, fmt.Sprintf("%s=%x", m.Name, h.Hash))
		if i == 0 {
			first = h.Hash
		} else if h.Hash != first {
			t.Errorf("members disagree on the keyspace hash at revision %d: %v", rev, hashes)
		}
		if h.HashRevision != rev {
			t.Errorf("%s hashed revision %d, asked for %d", m.Name, h.HashRevision, rev)
		}
	}
	t.Logf("%d acknowledged writes on every one of %d members; HashKV at revision %d: %v", len(acked), len(members), rev, hashes)
}

// burst puts n keys from workers goroutines, as fast as the cluster takes
// them, and returns them with their revisions.
func burst(t testing.TB, cli *clientv3.Client, prefix string, n, workers int) map[string]int64 {
	t.Helper()
	var mu sync.Mutex
	acked := map[string]int64{}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for i := range workers {
		wg.Go(func() {
			for j := i; j < n; j += workers {
				key := fmt.Sprintf("%s%06d", prefix, j)
				var resp *clientv3.PutResponse
				var err error
				for try := 0; try < 5; try++ { // a leader change fails a put or two
					pctx, cancel := contextWithTimeout(opTimeout)
					resp, err = cli.Put(pctx, key, "v")
					cancel()
					if err == nil {
						break
					}
					time.Sleep(50 * time.Millisecond)
				}
				if err != nil {
					errs <- fmt.Errorf("put %s: %w", key, err)
					return
				}
				mu.Lock()
				acked[key] = resp.Header.Revision
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return acked
}

// retryUnhealthy runs an etcdctl membership change again while the
// cluster refuses it as unhealthy: a refusal changes nothing, and the
// leader's view of which voters are connected lags a member that just
// joined (etcd wants every peer connected for five seconds) and, on a busy
// machine, one that was slow to answer a heartbeat. It returns the last
// result, and logs the refusals.
func retryUnhealthy(t testing.TB, what string, run func() ctlResult) ctlResult {
	t.Helper()
	refused := 0
	deadline := time.Now().Add(waitTimeout)
	for {
		r := run()
		if r.code == 0 || !strings.Contains(r.stderr, "etcdserver: unhealthy cluster") || time.Now().After(deadline) {
			if refused > 0 {
				t.Logf("%s: refused %d times as an unhealthy cluster, then etcdctl exited %d", what, refused, r.code)
			}
			return r
		}
		refused++
		time.Sleep(100 * time.Millisecond)
	}
}

// ctlRemove removes a member with `etcdctl member remove` and checks what
// it printed.
func ctlRemove(t testing.TB, c *harness.Cluster, m *harness.Member, id uint64) {
	t.Helper()
	var r ctlResult
	retryUnhealthy(t, "member remove "+m.Name, func() ctlResult {
		r = runEtcdctl(t, memberEndpoints(c), 10*time.Second, "member", "remove", hexID(id))
		return r
	})
	if r.code != 0 {
		t.Fatalf("%v", r)
	}
	if !strings.HasPrefix(r.stdout, fmt.Sprintf("Member %16x removed from cluster ", id)) {
		t.Errorf("member remove printed %q", r.stdout)
	}
	c.Forget(m)
	t.Logf("removed %s (%x)", m.Name, id)
}

// expectRemovedExit waits for a removed running member to exit by itself
// with status 0, then checks it refuses to start again on its data dir.
func expectRemovedExit(t testing.TB, m *harness.Member) {
	t.Helper()
	if code := exitCode(t, m, m.Wait(30*time.Second)); code != 0 {
		t.Fatalf("removed member %s exited with status %d, want 0; log:\n%s", m.Name, code, logTail(m, 20))
	}
	m.Start()
	if code := exitCode(t, m, m.Wait(30*time.Second)); code != 1 {
		t.Fatalf("restart of removed member %s on its old data dir exited with status %d, want 1; log:\n%s", m.Name, code, logTail(m, 20))
	}
}

// TestMembershipScale grows a cluster from three members to five and back
// to three with etcdctl while writers put unique keys through etcd's client;
// every acknowledged write must end up on every remaining member.
func TestMembershipScale(t *testing.T) {
	c := harness.NewCluster(t, 3, harness.Options{})
	cli := newClient(t, c.Endpoints()...)
	p := prefix(t)
	w := startWriters(t, cli, p+"w/", 3)
	w.progress(t, 30, "before any change")

	for _, name := range []string{"m4", "m5"} {
		m, id := ctlAddMember(t, c, name, false)
		w.progress(t, 10, "after adding "+name)
		m.Start()
		waitJoined(t, cli, m, id, putRetry(t, cli, p+"joined-"+name, "x"))
		cli.SetEndpoints(memberEndpoints(c)...)
		w.progress(t, 30, "with "+name+" started")
	}
	expectCtlMembers(t, c)

	// Back to three: an original member and one of the new ones.
	for _, name := range []string{"m2", "m4"} {
		m := c.Member(name)
		ctlRemove(t, c, m, idOf(t, m))
		cli.SetEndpoints(memberEndpoints(c)...)
		if code := exitCode(t, m, m.Wait(30*time.Second)); code != 0 {
			t.Fatalf("removed %s exited with status %d, want 0; log:\n%s", name, code, logTail(m, 20))
		}
		w.progress(t, 30, "after removing "+name)
	}
	c.WaitLeader()
	expectCtlMembers(t, c)
	checkConverged(t, cli, c.Running(), p, w.finish(t))
}

// TestMembershipReplace replaces a member that was killed: `member remove`
// it, `member add` a new one, start it on an empty data dir (it catches up
// from a snapshot). Writes go on throughout and none acknowledged is lost.
func TestMembershipReplace(t *testing.T) {
	// A small --snapshot-count, and more entries than raft keeps behind a
	// snapshot for slow followers (5,000) before the replacement starts:
	// it cannot be sent the log, it gets a snapshot.
	c := harness.NewCluster(t, 3, harness.Options{Flags: []string{"--snapshot-count", "500"}})
	cli := newClient(t, c.Endpoints()...)
	p := prefix(t)
	w := startWriters(t, cli, p+"w/", 2)
	w.progress(t, 30, "before the kill")

	victim := c.WaitLeader()
	vid := idOf(t, victim)
	victim.Kill()
	t.Logf("killed %s (%x), the leader", victim.Name, vid)
	w.progress(t, 30, "with the leader killed")

	ctlRemove(t, c, victim, vid)
	w.progress(t, 20, "after the removal")
	bulk := burst(t, cli, p+"bulk/", 5500, 16)
	m, id := ctlAddMember(t, c, "m4", false)
	m.Start()
	waitJoined(t, cli, m, id, putRetry(t, cli, p+"joined", "x"))
	cli.SetEndpoints(memberEndpoints(c)...)
	w.progress(t, 30, "with the replacement started")

	if b, err := os.ReadFile(m.LogPath()); err != nil || !strings.Contains(string(b), "installed snapshot from leader") {
		t.Errorf("the replacement did not start from a snapshot (a snapshot every 500 entries, 5,500 entries written while it was not there); log:\n%s", logTail(m, 20))
	}
	// The replacement serves on its own, linearizably.
	one := newClient(t, m.Addr())
	mustServe(t, one, p+"through-m4")
	expectCtlMembers(t, c)
	acked := w.finish(t)
	maps.Copy(acked, bulk)
	checkConverged(t, cli, c.Running(), p, acked)

	// The member removed while down stops by itself when it comes back:
	// its peers refuse it.
	victim.Start()
	if code := exitCode(t, victim, victim.Wait(30*time.Second)); code != 0 {
		t.Errorf("the member removed while down exited with status %d when restarted, want 0; log:\n%s", code, logTail(victim, 20))
	}
	mustServe(t, cli, p+"after-victim-restart")
}

// TestMembershipLearner adds learners with `etcdctl member add --learner`:
// with automatic promotion off, the learner refuses what learners refuse
// and `member promote` makes it a voter once it has caught up; with the
// default, the leader promotes it by itself.
func TestMembershipLearner(t *testing.T) {
	learnerErr := "etcdserver: rpc not supported for learner"
	notInSync := "etcdserver: can only promote a learner member which is in sync with leader"

	t.Run("ManualPromote", func(t *testing.T) {
		c := harness.NewCluster(t, 3, harness.Options{Flags: []string{"--auto-promote-learners=false"}})
		cli := newClient(t, c.Endpoints()...)
		p := prefix(t)
		for i := range 50 {
			putRetry(t, cli, fmt.Sprintf("%sk%02d", p, i), "v")
		}
		m, id := ctlAddMember(t, c, "m4", true)

		// Not started, it holds nothing of the log: it cannot be promoted.
		r := runEtcdctl(t, runningEndpoints(c), 10*time.Second, "member", "promote", hexID(id))
		if r.code == 0 || !strings.Contains(r.stderr, notInSync) {
			t.Fatalf("promote of a learner that never started: %v", r)
		}

		m.Start()
		rev := putRetry(t, cli, p+"last", "x")
		waitJoined(t, cli, m, id, rev)
		expectCtlMembers(t, c, "m4")

		// Caught up, it is still a learner (no automatic promotion): it
		// answers Status and serializable reads, and refuses the rest.
		lc := newClient(t, m.Addr())
		st, err := lc.Status(ctx(t), m.Addr())
		if err != nil || !st.IsLearner {
			t.Fatalf("status of the learner: %v %+v", err, st)
		}
		resp, err := lc.Get(ctx(t), p+"last", clientv3.WithSerializable())
		if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "x" {
			t.Fatalf("serializable get on the learner: %v %v", err, resp)
		}
		_, err = lc.Get(ctx(t), p+"last")
		expectError(t, "linearizable get on the learner", err, codes.FailedPrecondition, learnerErr)
		_, err = lc.Put(ctx(t), p+"from-learner", "v")
		expectError(t, "put on the learner", err, codes.FailedPrecondition, learnerErr)
		_, err = lc.Txn(ctx(t)).Then(clientv3.OpPut(p+"from-learner", "v")).Commit()
		expectError(t, "txn on the learner", err, codes.FailedPrecondition, learnerErr)
		_, err = lc.Grant(ctx(t), 10)
		expectError(t, "lease grant on the learner", err, codes.FailedPrecondition, learnerErr)
		_, err = lc.MemberList(ctx(t))
		expectError(t, "member list on the learner", err, codes.FailedPrecondition, learnerErr)

		// Once caught up, promotion succeeds (a moment of lag may still
		// make the leader answer "not in sync").
		waitFor(t, "member promote to succeed", func() error {
			r := runEtcdctl(t, runningEndpoints(c), 10*time.Second, "member", "promote", hexID(id))
			switch {
			case r.code == 0:
				if !strings.HasPrefix(r.stdout, fmt.Sprintf("Member %16x promoted in cluster ", id)) {
					t.Errorf("member promote printed %q", r.stdout)
				}
				return nil
			case strings.Contains(r.stderr, notInSync):
				return errors.New(strings.TrimSpace(r.stderr))
			}
			t.Fatalf("member promote: %v", r)
			return nil
		})
		expectCtlMembers(t, c)
		r = runEtcdctl(t, runningEndpoints(c), 10*time.Second, "member", "promote", hexID(id))
		if r.code == 0 || !strings.Contains(r.stderr, "etcdserver: can only promote a learner member") {
			t.Fatalf("second promote: %v", r)
		}
		// Now a voter, it serves everything.
		waitFor(t, "the promoted member to take a put", func() error {
			_, err := lc.Put(ctx(t), p+"from-promoted", "v")
			return err
		})
		if kv := getOne(t, lc, p+"from-promoted"); string(kv.Value) != "v" {
			t.Fatalf("linearizable get on the promoted member: %s", kv.Value)
		}
		cli.SetEndpoints(memberEndpoints(c)...)

		// A learner that is running, removed, exits by itself (status 0).
		m5, id5 := ctlAddMember(t, c, "m5", true)
		m5.Start()
		waitJoined(t, cli, m5, id5, putRetry(t, cli, p+"m5", "x"))
		expectCtlMembers(t, c, "m5")
		ctlRemove(t, c, m5, id5)
		expectRemovedExit(t, m5)
		checkConverged(t, cli, c.Running(), p, nil)
	})

	t.Run("AutoPromote", func(t *testing.T) {
		c := harness.NewCluster(t, 3, harness.Options{})
		cli := newClient(t, c.Endpoints()...)
		p := prefix(t)
		for i := range 50 {
			putRetry(t, cli, fmt.Sprintf("%sk%02d", p, i), "v")
		}
		m, id := ctlAddMember(t, c, "m4", true)
		resp, err := cli.MemberList(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		for _, mm := range resp.Members {
			if mm.ID == id && !mm.IsLearner {
				t.Fatalf("the learner is listed as a voter before it started: %+v", mm)
			}
		}
		m.Start()
		waitFor(t, "the leader to promote the learner", func() error {
			resp, err := cli.MemberList(ctx(t))
			if err != nil {
				return err
			}
			for _, mm := range resp.Members {
				if mm.ID == id {
					if mm.IsLearner {
						return errors.New("still a learner")
					}
					return nil
				}
			}
			return fmt.Errorf("%x is not a member", id)
		})
		waitJoined(t, cli, m, id, putRetry(t, cli, p+"last", "x"))
		expectCtlMembers(t, c)
		lc := newClient(t, m.Addr())
		waitFor(t, "the promoted member to take a put", func() error {
			_, err := lc.Put(ctx(t), p+"from-promoted", "v")
			return err
		})
		if kv := getOne(t, lc, p+"last"); string(kv.Value) != "x" {
			t.Fatalf("linearizable get on the promoted member: %s", kv.Value)
		}
		cli.SetEndpoints(memberEndpoints(c)...)
		checkConverged(t, cli, c.Running(), p, nil)
	})
}

// TestMembershipLeader moves leadership with `etcdctl move-leader` and
// removes the leader with `etcdctl member remove`: the cluster keeps
// serving, the removed member exits by itself (status 0) and refuses to
// start again on its data dir (status 1).
func TestMembershipLeader(t *testing.T) {
	c := harness.NewCluster(t, 3, harness.Options{})
	cli := newClient(t, c.Endpoints()...)
	p := prefix(t)
	mustServe(t, cli, p+"start")

	t.Run("MoveLeader", func(t *testing.T) {
		first := c.WaitLeader()
		cases := []struct {
			name   string
			target func(lead *harness.Member) *harness.Member
		}{
			{"to a follower", func(lead *harness.Member) *harness.Member { return follower(t, c) }},
			{"back to the first leader", func(lead *harness.Member) *harness.Member { return first }},
			{"to itself", func(lead *harness.Member) *harness.Member { return lead }},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				lead := c.WaitLeader()
				target := tc.target(lead)
				tid := idOf(t, target)
				r := mustEtcdctl(t, runningEndpoints(c), "move-leader", hexID(tid))
				if want := fmt.Sprintf("Leadership transferred from %s to %s\n", hexID(idOf(t, lead)), hexID(tid)); r.stdout != want {
					t.Errorf("move-leader printed %q, want %q", r.stdout, want)
				}
				if got := c.WaitLeader(); got != target {
					t.Fatalf("after move-leader to %s the leader is %s", target.Name, got.Name)
				}
				mustServe(t, cli, p+"moved-"+strings.ReplaceAll(tc.name, " ", "-"))
			})
		}
	})

	t.Run("RemoveLeader", func(t *testing.T) {
		lead := c.WaitLeader()
		ctlRemove(t, c, lead, idOf(t, lead))
		cli.SetEndpoints(memberEndpoints(c)...)
		newLead := c.WaitLeader()
		if newLead == lead {
			t.Fatalf("%s still leads after its removal", lead.Name)
		}
		mustServe(t, cli, p+"after-removal")
		expectCtlMembers(t, c)
		expectRemovedExit(t, lead)
		mustServe(t, cli, p+"after-restart-attempt")
		t.Logf("removed the leader %s; %s leads", lead.Name, newLead.Name)
	})
}

// TestMembershipUpdate changes a member's peer URLs with `etcdctl member
// update`. The member listens on two peer ports and is added with both
// URLs; it is updated to the same two in another order, then to the second
// alone, and restarted listening only on that one: it must still receive
// the log.
func TestMembershipUpdate(t *testing.T) {
	c := harness.NewCluster(t, 3, harness.Options{})
	cli := newClient(t, c.Endpoints()...)
	p := prefix(t)
	second := fmt.Sprintf("http://127.0.0.1:%d", harness.FreePorts(t, 1)[0])
	m4 := c.NewMember("m4")
	m4.AddFlags("--listen-peer-urls", m4.ListenPeerURL+","+second)
	id := ctlAdmit(t, c, m4, false, m4.PeerURL, second)
	m4.Start()
	waitJoined(t, cli, m4, id, putRetry(t, cli, p+"joined", "x"))
	cli.SetEndpoints(memberEndpoints(c)...)

	// peerURLsEverywhere waits until every member lists m4 with urls.
	peerURLsEverywhere := func(urls ...string) {
		t.Helper()
		want := slices.Sorted(slices.Values(urls))
		for _, o := range c.Running() {
			one := newClient(t, o.Addr())
			waitFor(t, fmt.Sprintf("%s to list %s with peer URLs %v", o.Name, m4.Name, want), func() error {
				resp, err := one.MemberList(ctx(t), clientv3.WithSerializable())
				if err != nil {
					return err
				}
				for _, mm := range resp.Members {
					if mm.ID == id {
						if got := slices.Sorted(slices.Values(mm.PeerURLs)); !slices.Equal(got, want) {
							return fmt.Errorf("peer URLs %v", mm.PeerURLs)
						}
						return nil
					}
				}
				return fmt.Errorf("%x not listed", id)
			})
		}
	}
	update := func(urls ...string) {
		t.Helper()
		r := mustEtcdctl(t, runningEndpoints(c), "member", "update", hexID(id), "--peer-urls="+strings.Join(urls, ","))
		if !strings.HasPrefix(r.stdout, fmt.Sprintf("Member %16x updated in cluster ", id)) {
			t.Errorf("member update printed %q", r.stdout)
		}
		peerURLsEverywhere(urls...)
		mustServe(t, cli, fmt.Sprintf("%supdated-%d", p, len(urls)))
	}
	peerURLsEverywhere(m4.PeerURL, second)
	update(second, m4.PeerURL) // the same set in another order
	update(second)             // only the second one

	// etcdctl member list shows the new URL.
	for _, cm := range ctlMembers(t, c) {
		if cm.id == id && cm.peerURLs != second {
			t.Errorf("etcdctl member list shows %s with peer URLs %s, want %s", cm.name, cm.peerURLs, second)
		}
	}

	// Restarted on the new URL only, m4 must still get the log: its peers
	// now dial the new one. As etcd's documentation has it, the operator
	// changes --listen-peer-urls and --initial-advertise-peer-urls and
	// leaves --initial-cluster as it was: with a data dir it is ignored.
	restart := func(t *testing.T, flags ...string) error {
		t.Helper()
		if m4.Running() {
			m4.Kill()
		}
		m4.AddFlags(flags...)
		rev := putRetry(t, cli, fmt.Sprintf("%swhile-m4-down-%d", p, len(flags)), "x")
		m4.Start()
		one := newClient(t, m4.Addr())
		var exited error
		waitFor(t, fmt.Sprintf("m4 to apply revision %d after its restart, or exit", rev), func() error {
			if !m4.Running() {
				exited = m4.Wait(time.Second)
				if exited == nil {
					exited = errors.New("exit status 0")
				}
				return nil
			}
			gctx, cancel := contextWithTimeout(time.Second)
			defer cancel()
			resp, err := one.Get(gctx, "\x00", clientv3.WithSerializable())
			if err != nil {
				return err
			}
			if resp.Header.Revision < rev {
				return fmt.Errorf("at revision %d", resp.Header.Revision)
			}
			return nil
		})
		return exited
	}
	// A member with a log ignores --initial-cluster, which after the
	// update still gives the old URLs.
	t.Run("RestartKeepsStaleInitialCluster", func(t *testing.T) {
		if err := restart(t, "--listen-peer-urls", second, "--initial-advertise-peer-urls", second); err != nil {
			t.Errorf("m4, restarted on its data dir with the new peer URL and the --initial-cluster etcdctl printed, exited (%v); etcd ignores --initial-cluster once it has data. Log:\n%s", err, logTail(m4, 3))
		}
	})
	t.Run("RestartOnNewURL", func(t *testing.T) {
		var initial []string
		for _, o := range c.Members {
			switch {
			case o.Removed:
			case o == m4:
				initial = append(initial, o.Name+"="+second)
			default:
				initial = append(initial, o.Name+"="+o.PeerURL)
			}
		}
		if err := restart(t, "--listen-peer-urls", second, "--initial-advertise-peer-urls", second, "--initial-cluster", strings.Join(initial, ",")); err != nil {
			t.Fatalf("m4 exited after its restart on the new peer URL: %v; log:\n%s", err, logTail(m4, 10))
		}
		waitCaughtUp(t, m4, putRetry(t, cli, p+"after-m4-restart", "x"))
		mustServe(t, newClient(t, m4.Addr()), p+"through-m4")
	})
	checkConverged(t, cli, c.Running(), p, nil)
}

// TestMembershipErrors sends bad membership requests through etcd's client
// and checks etcd's code and message for each; the cluster serves a put
// and a get after every one. The requests go to a follower, which forwards
// them to the leader: the errors must come back unchanged. Last, with
// members down, changes that would leave no quorum are refused.
func TestMembershipErrors(t *testing.T) {
	c := harness.NewCluster(t, 3, harness.Options{})
	cli := newClient(t, c.Endpoints()...)
	p := prefix(t)
	voter := idOf(t, c.Members[0])
	mcli := newClient(t, follower(t, c).Addr()) // for the membership calls
	rawCluster := pb.NewClusterClient(mcli.ActiveConnection())
	// MoveLeader goes to the leader, or to a follower, as the call is made.
	leaderClient := func() *clientv3.Client { return newClient(t, c.WaitLeader().Addr()) }
	free := func() string { return fmt.Sprintf("http://127.0.0.1:%d", harness.FreePorts(t, 1)[0]) }
	const unknown = 0x7e57

	var learner uint64
	cases := []struct {
		name string
		call func() error
		code codes.Code
		msg  string
	}{
		{"add an existing peer URL", func() error {
			_, err := mcli.MemberAdd(ctx(t), []string{c.Members[1].PeerURL})
			return err
		}, codes.FailedPrecondition, "etcdserver: Peer URLs already exists"},
		{"add an existing peer URL as a learner", func() error {
			_, err := mcli.MemberAddAsLearner(ctx(t), []string{free(), c.Members[2].PeerURL})
			return err
		}, codes.FailedPrecondition, "etcdserver: Peer URLs already exists"},
		// etcd's client checks URLs itself before it sends them, so the
		// invalid ones go out through etcd's generated gRPC client.
		{"add a URL without a port", func() error {
			_, err := rawCluster.MemberAdd(ctx(t), &pb.MemberAddRequest{PeerURLs: []string{"http://127.0.0.1"}})
			return err
		}, codes.InvalidArgument, "etcdserver: given member URLs are invalid"},
		{"add a URL without a scheme", func() error {
			_, err := rawCluster.MemberAdd(ctx(t), &pb.MemberAddRequest{PeerURLs: []string{"127.0.0.1:2380"}})
			return err
		}, codes.InvalidArgument, "etcdserver: given member URLs are invalid"},
		{"add a URL with a path", func() error {
			_, err := rawCluster.MemberAdd(ctx(t), &pb.MemberAddRequest{PeerURLs: []string{"http://127.0.0.1:2380/peer"}})
			return err
		}, codes.InvalidArgument, "etcdserver: given member URLs are invalid"},
		{"add a learner with no URL", func() error {
			_, err := rawCluster.MemberAdd(ctx(t), &pb.MemberAddRequest{IsLearner: true})
			return err
		}, codes.InvalidArgument, "etcdserver: given member URLs are invalid"},
		{"etcd's client refuses an invalid URL itself", func() error {
			_, err := mcli.MemberAdd(ctx(t), []string{"http://127.0.0.1"})
			if err == nil || strings.HasPrefix(err.Error(), "etcdserver:") {
				return fmt.Errorf("want the client's own URL error, got %v", err)
			}
			return nil
		}, codes.OK, ""},
		{"remove an unknown member", func() error {
			_, err := mcli.MemberRemove(ctx(t), unknown)
			return err
		}, codes.NotFound, "etcdserver: member not found"},
		{"update an unknown member", func() error {
			_, err := mcli.MemberUpdate(ctx(t), unknown, []string{free()})
			return err
		}, codes.NotFound, "etcdserver: member not found"},
		{"update to another member's peer URL", func() error {
			_, err := mcli.MemberUpdate(ctx(t), voter, []string{c.Members[1].PeerURL})
			return err
		}, codes.FailedPrecondition, "etcdserver: Peer URLs already exists"},
		{"update to an invalid URL", func() error {
			_, err := rawCluster.MemberUpdate(ctx(t), &pb.MemberUpdateRequest{ID: voter, PeerURLs: []string{"http://127.0.0.1"}})
			return err
		}, codes.InvalidArgument, "etcdserver: given member URLs are invalid"},
		{"promote a voter", func() error {
			_, err := mcli.MemberPromote(ctx(t), voter)
			return err
		}, codes.FailedPrecondition, "etcdserver: can only promote a learner member"},
		{"promote an unknown member", func() error {
			_, err := mcli.MemberPromote(ctx(t), unknown)
			return err
		}, codes.NotFound, "etcdserver: member not found"},
		{"move leader sent to a follower", func() error {
			fol := follower(t, c)
			_, err := newClient(t, fol.Addr()).MoveLeader(ctx(t), idOf(t, fol))
			return err
		}, codes.FailedPrecondition, "etcdserver: not leader"},
		{"move leader to an unknown member", func() error {
			_, err := leaderClient().MoveLeader(ctx(t), unknown)
			return err
		}, codes.FailedPrecondition, "etcdserver: bad leader transferee"},
		// A learner that never starts stays one, with nothing of the log.
		{"add a learner (accepted)", func() error {
			resp, err := mcli.MemberAddAsLearner(ctx(t), []string{free()})
			if err == nil {
				learner = resp.Member.ID
				if !resp.Member.IsLearner {
					t.Errorf("added learner listed as %+v", resp.Member)
				}
			}
			return err
		}, codes.OK, ""},
		{"add a second learner", func() error {
			_, err := mcli.MemberAddAsLearner(ctx(t), []string{free()})
			return err
		}, codes.FailedPrecondition, "etcdserver: too many learner members in cluster"},
		{"promote a learner that has nothing", func() error {
			_, err := mcli.MemberPromote(ctx(t), learner)
			return err
		}, codes.FailedPrecondition, "etcdserver: can only promote a learner member which is in sync with leader"},
		{"move leader to a learner", func() error {
			_, err := leaderClient().MoveLeader(ctx(t), learner)
			return err
		}, codes.FailedPrecondition, "etcdserver: bad leader transferee"},
		{"remove the learner (accepted)", func() error {
			_, err := mcli.MemberRemove(ctx(t), learner)
			return err
		}, codes.OK, ""},
		{"remove the removed learner", func() error {
			_, err := mcli.MemberRemove(ctx(t), learner)
			return err
		}, codes.NotFound, "etcdserver: member not found"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if tc.code == codes.OK {
				if err != nil {
					t.Fatalf("%s: %v", tc.name, err)
				}
			} else {
				expectError(t, tc.name, err, tc.code, tc.msg)
			}
			mustServe(t, cli, fmt.Sprintf("%safter-%02d", p, i))
		})
	}
	if resp, err := cli.MemberList(ctx(t)); err != nil || len(resp.Members) != 3 {
		t.Fatalf("member list after the bad requests: %v %v; want the three members", err, resp)
	}

	t.Run("Quorum", func(t *testing.T) {
		// One member down. Leadership then moves to another member: a new
		// leader has heard nothing from the dead one, so the checks below
		// do not depend on when the old leader noticed the death (see
		// TestStrictReconfigCheckRightAfterKill).
		lead := c.WaitLeader()
		var dead, next *harness.Member
		for _, m := range c.Running() {
			switch {
			case m == lead:
			case dead == nil:
				dead = m
			default:
				next = m
			}
		}
		nextID := idOf(t, next)
		dead.Kill()
		if _, err := newClient(t, lead.Addr()).MoveLeader(ctx(t), nextID); err != nil {
			t.Fatalf("move leader to %s with %s down: %v", next.Name, dead.Name, err)
		}
		if got := c.WaitLeader(); got != next {
			t.Fatalf("leader %s, want %s", got.Name, next.Name)
		}
		mustServe(t, cli, p+"one-down")
		refused := []string{"etcdserver: unhealthy cluster", "etcdserver: re-configuration failed due to not enough started members"}
		expectRefused := func(what string, err error) {
			t.Helper()
			if err == nil {
				t.Fatalf("%s: accepted, want one of %q", what, refused)
			}
			if _, msg := codeAndMessage(err); !slices.Contains(refused, msg) {
				t.Fatalf("%s: %v, want one of %q", what, err, refused)
			}
			t.Logf("%s: %v", what, err)
		}
		_, err := cli.MemberRemove(ctx(t), idOf(t, lead))
		expectRefused(fmt.Sprintf("remove live %s with %s down", lead.Name, dead.Name), err)
		mustServe(t, cli, p+"after-remove-follower")
		_, err = cli.MemberRemove(ctx(t), idOf(t, next))
		expectRefused(fmt.Sprintf("remove the leader %s with %s down", next.Name, dead.Name), err)
		mustServe(t, cli, p+"after-remove-leader")
		_, err = cli.MemberAdd(ctx(t), []string{free()})
		expectRefused(fmt.Sprintf("add a voter with %s down", dead.Name), err)
		mustServe(t, cli, p+"after-add")

		// Two members down: no quorum, so nothing may be added.
		lead.Kill()
		_, err = newClient(t, next.Addr()).MemberAdd(ctx(t), []string{free()})
		if err == nil {
			t.Fatalf("add a voter with %s and %s down: accepted", dead.Name, lead.Name)
		}
		t.Logf("add a voter with two members down: %v", err)

		// Back up, the cluster serves and has its three members only.
		dead.Start()
		lead.Start()
		c.WaitLeader()
		mustServe(t, cli, p+"all-back")
		waitFor(t, "the three members, and only them, to be listed", func() error {
			resp, err := cli.MemberList(ctx(t))
			if err != nil {
				return err
			}
			if len(resp.Members) != 3 {
				return fmt.Errorf("%d members: %v", len(resp.Members), resp.Members)
			}
			return nil
		})
		expectCtlMembers(t, c)
	})
}

// TestStrictReconfigCheckRightAfterKill kills a follower and at once asks
// to remove the other live follower. The remaining voters (the leader and
// the dead member) would have no quorum, so --strict-reconfig-check must
// refuse, as etcd does (its check is on the peer connections, which the
// kill breaks at once). Raft's RecentActive alone lags a kill by up to an
// election timeout: cairn also requires an open stream to the member.
func TestStrictReconfigCheckRightAfterKill(t *testing.T) {
	c := harness.NewCluster(t, 3, harness.Options{})
	lead := c.WaitLeader()
	leadCli := newClient(t, lead.Addr())
	var fs []*harness.Member
	for _, m := range c.Members {
		if m != lead {
			fs = append(fs, m)
		}
	}
	mustServe(t, leadCli, prefix(t)+"before")
	live := idOf(t, fs[1])
	fs[0].Kill()
	start := time.Now()
	_, err := leadCli.MemberRemove(ctx(t), live)
	took := time.Since(start)
	if err == nil {
		c.Forget(fs[1])
		t.Errorf("removing live %s %v after killing %s was accepted; want etcdserver: unhealthy cluster. "+
			"The cluster is now %s and the dead %s, without quorum until %s returns", fs[1].Name, took, fs[0].Name, lead.Name, fs[0].Name, fs[0].Name)
		fs[0].Start() // give the cluster its quorum back
		c.WaitLeader()
		mustServe(t, leadCli, prefix(t)+"after")
		return
	}
	expectError(t, "remove a live follower right after the kill of the other", err, codes.Unavailable, "etcdserver: unhealthy cluster")
}
