package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	pb "github.com/cairnkv/cairn/api/etcdserverpb"
	"github.com/cairnkv/cairn/integration/harness"
)

// Config describes a run. Zero fields take the defaults in parentheses.
type Config struct {
	Seed     int64
	Members  int           // cluster size (3)
	Duration time.Duration // how long faults are injected (60s)
	Workers  int           // register clients (2 per member, at most 8)
	Keys     int           // register keys (5)
	// OpTimeout bounds each client call (2s); a write that times out has
	// an unknown outcome.
	OpTimeout     time.Duration
	SnapshotCount int // --snapshot-count of the members (500)
	// RecoveryBound is how soon after the faults end the cluster, and
	// every member, must take a write (10s).
	RecoveryBound time.Duration
	// CheckTimeout bounds porcupine per key (5m; a timeout fails).
	CheckTimeout time.Duration
	// OutDir is where the folder of a failed run goes (os.TempDir()).
	OutDir string
	// Scenario, if set, replaces the seeded fault schedule: it runs on the
	// test's goroutine while the workload runs, and the run ends when it
	// returns.
	Scenario func(e *Env)
	// Logf prints progress (t.Logf).
	Logf func(format string, args ...any)
}

func (c *Config) defaults(t testing.TB) {
	if c.Members == 0 {
		c.Members = 3
	}
	if c.Duration == 0 {
		c.Duration = time.Minute
	}
	if c.Workers == 0 {
		c.Workers = min(2*c.Members, 8)
	}
	if c.Keys == 0 {
		c.Keys = 5
	}
	if c.OpTimeout == 0 {
		c.OpTimeout = 2 * time.Second
	}
	if c.SnapshotCount == 0 {
		c.SnapshotCount = 500
	}
	if c.RecoveryBound == 0 {
		c.RecoveryBound = 10 * time.Second
	}
	if c.CheckTimeout == 0 {
		c.CheckTimeout = 5 * time.Minute
	}
	if c.OutDir == "" {
		c.OutDir = os.TempDir()
	}
	if c.Logf == nil {
		c.Logf = t.Logf
	}
}

// Env is a running chaos test: the cluster, the clock, the clients. A
// Scenario uses it to act on the cluster and record its own operations.
type Env struct {
	T       testing.TB
	Cluster *harness.Cluster
	Rec     *Recorder

	cfg  Config
	keys []string
	nem  *nemesis

	mmu  sync.RWMutex
	mems []*memberInfo // every member prepared, by index (membership.go)
}

func (e *Env) logf(format string, args ...any) {
	e.cfg.Logf("chaos %6.2fs: %s", time.Duration(e.Rec.Now()).Seconds(), fmt.Sprintf(format, args...))
}

// Keys are the register keys.
func (e *Env) Keys() []string { return e.keys }

// Leader returns the index of the member leading now, or -1.
func (e *Env) Leader() int { return e.nem.leader() }

// Do runs and records one register operation through member i, as the
// scenario's own client.
func (e *Env) Do(ctx context.Context, i int, in Input) Op { return e.do(ctx, scenarioClient, i, in) }

// Isolate cuts member i off from the others (both ways); Heal undoes
// every cut.
func (e *Env) Isolate(i int) { e.Cluster.Net.Isolate(e.member(i).name) }

// Heal lifts every network cut.
func (e *Env) Heal() { e.Cluster.Net.Heal() }

// Client IDs of the operations not issued by register workers.
const (
	keeperClient   = -2
	shortClient    = -3
	scenarioClient = -4
	probeClient    = -5
)

// Probe is a put used to measure recovery; not part of the model.
const Probe Kind = "probe"

// Run starts a cluster, runs the workload under faults, heals the cluster,
// reads the final state and checks the history. It returns the report; a
// failed report has been written to a folder (Report.Dir). Run fails the
// test only if the cluster cannot be started or the run cannot be set up.
func Run(t testing.TB, cfg Config) *Report {
	t.Helper()
	cfg.defaults(t)
	var sched Schedule
	if cfg.Scenario == nil {
		sched = NewSchedule(cfg.Seed, cfg.Members, cfg.Duration)
		cfg.Logf("%s", sched)
	}
	c := harness.NewCluster(t, cfg.Members, harness.Options{
		Flags:     []string{"--snapshot-count", strconv.Itoa(cfg.SnapshotCount)},
		Env:       []string{"CAIRN_TEST_HOOKS=1"},
		PeerProxy: true,
	})
	e := &Env{T: t, Cluster: c, Rec: NewRecorder(), cfg: cfg, keys: ModelKeys(cfg.Keys)}
	e.nem = newNemesis(e)
	for _, m := range slices.Clone(c.Members) {
		if _, err := e.addMember(m, stateServing); err != nil {
			t.Fatal(err)
		}
	}

	// Goroutine owners: workCtx/workWG for the register clients and the
	// short leases (stopped once the cluster has recovered); keepCtx/
	// keepWG for the watchers and the keeper (stopped after the final
	// reads). The deferred stop ends both however Run exits.
	workCtx, stopWork := context.WithCancel(context.Background())
	keepCtx, stopKeep := context.WithCancel(context.Background())
	var workWG, keepWG sync.WaitGroup
	defer func() {
		stopWork()
		stopKeep()
		workWG.Wait()
		keepWG.Wait()
		for _, mi := range e.allMembers() {
			_ = mi.conn.Close()
			_ = mi.watchConn.Close()
		}
	}()
	spawn := func(wg *sync.WaitGroup, f func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f()
		}()
	}

	watchers := make([]*watcher, 2)
	for i := range watchers {
		w := &watcher{e: e, member: i % cfg.Members}
		w.log.Watcher = i
		watchers[i] = w
		spawn(&keepWG, func() { w.run(keepCtx) })
	}
	kp := &keeper{e: e}
	if err := kp.start(keepCtx); err != nil {
		t.Fatal(err)
	}
	spawn(&keepWG, func() { kp.run(keepCtx) })
	sl := &shortLeases{e: e, member: 1 % cfg.Members}
	spawn(&workWG, func() { sl.run(workCtx) })
	for i := range cfg.Workers {
		cl := &client{e: e, id: i, member: i % cfg.Members, lastSeen: map[string]KV{},
			rng: newRand(cfg.Seed, uint64(i))}
		spawn(&workWG, func() { cl.run(workCtx) })
	}

	// Faults.
	if cfg.Scenario != nil {
		cfg.Scenario(e)
	} else {
		nctx, cancel := context.WithDeadline(context.Background(), e.Rec.Start().Add(cfg.Duration))
		e.nem.runSchedule(nctx, sched) // the last fault lasts until the deadline
		cancel()
	}
	e.nem.healAll()
	e.logf("faults over; healed")
	var final FinalState
	final.RecoveryFirst, final.RecoveryAll = e.measureRecovery(30 * time.Second)
	e.logf("recovered: first write after %v, every member after %v", time.Duration(final.RecoveryFirst), time.Duration(final.RecoveryAll))
	// Membership changes still in progress end while the clients run:
	// new members join their rotation, removed ones exit.
	e.nem.settle()
	e.logf("membership settled: serving %v", e.names(e.serving()))
	stopWork()
	workWG.Wait()

	var finalProblems []string
	e.readFinal(&final, watchers, kp, &finalProblems)
	e.nem.checkAlive()
	e.nem.finalMembership(&final)
	stopKeep()
	keepWG.Wait()
	e.nem.checkAlive()

	h := &History{Seed: cfg.Seed, Members: cfg.Members, Ops: e.Rec.Ops(), Faults: e.nem.records, Final: final}
	if cfg.Scenario == nil {
		h.Schedule = sched.String()
	}
	for _, w := range watchers {
		h.Watches = append(h.Watches, w.snapshot())
	}
	r := Check(h, CheckOptions{RecoveryBound: cfg.RecoveryBound, CheckTimeout: cfg.CheckTimeout})
	r.Schedule = sched
	r.Crashes = e.nem.crashes
	r.FaultCounts = e.nem.counts
	r.MemberStats = e.nem.mstats
	r.ProxyStats = c.Net.Stats()
	r.LogCounts = countLogLines(c)
	r.addVerdict(finalVerdict(finalProblems, e.nem.crashes))
	if !r.OK() {
		dir, err := r.WriteFolder(cfg.OutDir, c)
		if err != nil {
			t.Errorf("write the failed run's folder: %v", err)
		}
		r.Dir = dir
	}
	return r
}

func finalVerdict(finalProblems, crashes []string) Verdict {
	var p problems
	for _, s := range finalProblems {
		p.add("%s", s)
	}
	for _, s := range crashes {
		p.add("crash: %s", s)
	}
	return p.verdict("processes", "no member exited on its own but removed ones; final state read from every member")
}

// names returns the members' names.
func (e *Env) names(idx []int) []string {
	out := make([]string, len(idx))
	for k, i := range idx {
		out[k] = e.member(i).name
	}
	return out
}

// newRand is a client's random source: a function of the seed and the
// client alone.
func newRand(seed int64, stream uint64) *rand.Rand {
	return rand.New(rand.NewPCG(uint64(seed), stream+1))
}

// measureRecovery puts a probe key through every serving member until
// each has acknowledged one, and returns how long the first and the last
// took (-1 for never, within limit).
func (e *Env) measureRecovery(limit time.Duration) (first, all int64) {
	start := time.Now()
	members := e.serving()
	took := make([]time.Duration, len(members))
	var wg sync.WaitGroup
	for k, i := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			took[k] = -1
			ctx, cancel := context.WithDeadline(context.Background(), start.Add(limit))
			defer cancel()
			name := e.member(i).name
			for n := 0; ctx.Err() == nil; n++ {
				key := probePrefix + name
				op := e.probe(ctx, i, key, fmt.Sprintf("probe-%s-%d", name, n))
				if op.Outcome == OK {
					took[k] = time.Since(start)
					return
				}
				if !sleepCtx(ctx, 50*time.Millisecond) {
					return
				}
			}
		}()
	}
	wg.Wait()
	first, all = -1, 0
	for _, d := range took {
		if d < 0 {
			all = -1
			continue
		}
		if first < 0 || int64(d) < first {
			first = int64(d)
		}
		if all >= 0 {
			all = max(all, int64(d))
		}
	}
	return first, all
}

func (e *Env) probe(ctx context.Context, i int, key, value string) Op {
	mi := e.member(i)
	op := Op{Client: probeClient, Member: mi.name, Input: Input{Kind: Probe, Key: key, Value: value}}
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	op.Call = e.Rec.Now()
	resp, err := pb.NewKVClient(mi.conn).Put(cctx, &pb.PutRequest{Key: []byte(key), Value: []byte(value)})
	op.Return = e.Rec.Now()
	if err != nil {
		op.Err, op.Outcome = err.Error(), writeOutcome(err)
	} else {
		op.Outcome, op.Output.Revision = OK, resp.GetHeader().GetRevision()
	}
	e.Rec.Add(op)
	return op
}

// readFinal waits for the cluster to settle and reads its final state:
// the short leases gone, every member at the same revision, the watchers
// caught up, the model keys (linearizable, and on every member at the
// final revision), the kept-alive lease and every member's HashKV.
func (e *Env) readFinal(f *FinalState, watchers []*watcher, kp *keeper, probs *[]string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	fail := func(format string, args ...any) {
		s := fmt.Sprintf(format, args...)
		*probs = append(*probs, s)
		e.logf("final: %s", s)
	}
	// Short leases: each expires within its TTL of the last leader change.
	left, err := retry(ctx, e, 30*time.Second, func(ctx context.Context, i int) ([]string, error) {
		resp, err := pb.NewKVClient(e.member(i).conn).Range(ctx, &pb.RangeRequest{Key: []byte(ShortPrefix), RangeEnd: []byte(prefixOf(ShortPrefix)), KeysOnly: true})
		if err != nil {
			return nil, err
		}
		var keys []string
		for _, kv := range resp.Kvs {
			keys = append(keys, string(kv.Key))
		}
		if len(keys) > 0 {
			return keys, errRetry
		}
		return nil, nil
	})
	if err != nil && err != errRetry {
		fail("reading the short-lease keys: %v", err)
	}
	f.ShortLeft = left

	for attempt := 0; ; attempt++ {
		rev, err := e.quietRevision(ctx)
		if err != nil {
			fail("members never agreed on a revision: %v", err)
			return
		}
		f.Revision = rev
		deadline := time.Now().Add(30 * time.Second)
		for _, w := range watchers {
			for w.last() < rev && time.Now().Before(deadline) && sleepCtx(ctx, 20*time.Millisecond) {
			}
		}
		f.Reads, f.ModRevs = map[string]KV{}, map[string]int64{}
		stable := true
		for _, k := range e.keys {
			resp, err := retry(ctx, e, 20*time.Second, func(ctx context.Context, i int) (*pb.RangeResponse, error) {
				return pb.NewKVClient(e.member(i).conn).Range(ctx, &pb.RangeRequest{Key: []byte(k)})
			})
			if err != nil {
				fail("final read of %s: %v", k, err)
				return
			}
			if resp.GetHeader().GetRevision() != rev {
				stable = false
			}
			if len(resp.Kvs) > 0 {
				f.Reads[k] = kvOf(resp.Kvs[0])
				f.ModRevs[k] = resp.Kvs[0].ModRevision
			} else {
				f.Reads[k] = KV{}
			}
		}
		if stable || attempt == 3 {
			if !stable {
				fail("the revision kept moving after the workload stopped")
			}
			break
		}
	}
	// Every member in the cluster at the end; removed ones are gone.
	f.MemberReads, f.Hashes = map[string]map[string]KV{}, map[string]uint32{}
	for _, i := range e.serving() {
		m := e.member(i)
		cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := pb.NewKVClient(m.conn).Range(cctx, &pb.RangeRequest{Key: []byte(KVPrefix), RangeEnd: []byte(prefixOf(KVPrefix)), Revision: f.Revision, Serializable: true})
		if err != nil {
			fail("serializable read on %s at revision %d: %v", m.name, f.Revision, err)
		} else {
			reads := map[string]KV{}
			for _, k := range e.keys {
				reads[k] = KV{}
			}
			for _, kv := range resp.Kvs {
				reads[string(kv.Key)] = kvOf(kv)
			}
			f.MemberReads[m.name] = reads
		}
		h, err := pb.NewMaintenanceClient(m.conn).HashKV(cctx, &pb.HashKVRequest{Revision: f.Revision})
		ccancel()
		if err != nil {
			fail("HashKV on %s: %v", m.name, err)
		} else {
			f.Hashes[m.name] = h.Hash
		}
	}
	// The kept-alive lease.
	f.KeptKey, f.KeptTTLGrant = KeptKey, keptTTL
	resp, err := retry(ctx, e, 20*time.Second, func(ctx context.Context, i int) (*pb.RangeResponse, error) {
		return pb.NewKVClient(e.member(i).conn).Range(ctx, &pb.RangeRequest{Key: []byte(KeptKey)})
	})
	if err != nil {
		fail("reading the kept-alive key: %v", err)
	} else {
		f.KeptPresent = len(resp.Kvs) == 1 && resp.Kvs[0].Lease == kp.id
	}
	ttl, err := retry(ctx, e, 20*time.Second, func(ctx context.Context, i int) (*pb.LeaseTimeToLiveResponse, error) {
		return pb.NewLeaseClient(e.member(i).conn).LeaseTimeToLive(ctx, &pb.LeaseTimeToLiveRequest{ID: kp.id})
	})
	if err != nil {
		fail("TimeToLive of the kept-alive lease: %v", err)
	} else {
		f.KeptTTL = ttl.TTL
	}
	f.KeptMaxGap = kp.gap()
	kp.mu.Lock()
	f.KeptLost = kp.lost
	kp.mu.Unlock()
}

// quietRevision waits until every serving member reports the same
// revision three times in a row, 200ms apart, and returns it.
func (e *Env) quietRevision(ctx context.Context) (int64, error) {
	deadline := time.Now().Add(60 * time.Second)
	var last int64
	same := 0
	var lastErr error
	for time.Now().Before(deadline) {
		rev, err := e.commonRevision()
		switch {
		case err != nil:
			lastErr, same = err, 0
		case rev == last:
			same++
		default:
			last, same = rev, 1
		}
		if same >= 3 {
			return last, nil
		}
		if !sleepCtx(ctx, 200*time.Millisecond) {
			break
		}
	}
	return 0, fmt.Errorf("no quiet revision within 60s (last error: %v)", lastErr)
}

func (e *Env) commonRevision() (int64, error) {
	revs := map[int64][]string{}
	for _, i := range e.serving() {
		m := e.member(i).m
		st, err := m.Status()
		if err != nil {
			return 0, fmt.Errorf("status of %s: %w", m.Name, err)
		}
		revs[st.GetHeader().GetRevision()] = append(revs[st.GetHeader().GetRevision()], m.Name)
	}
	if len(revs) != 1 {
		var parts []string
		for r, ms := range revs {
			parts = append(parts, fmt.Sprintf("%d on %v", r, ms))
		}
		sort.Strings(parts)
		return 0, fmt.Errorf("members at different revisions: %v", parts)
	}
	for r := range revs {
		return r, nil
	}
	return 0, nil
}

// errRetry asks retry to try again although the call succeeded.
var errRetry = fmt.Errorf("not yet")

// retry calls f through each serving member in turn (1s per call) until
// it succeeds or limit passes; it returns the last answer and error.
func retry[T any](ctx context.Context, e *Env, limit time.Duration, f func(ctx context.Context, i int) (T, error)) (T, error) {
	deadline := time.Now().Add(limit)
	var v T
	var err error
	for i := e.pick(0); ; i = e.nextServing(i) {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		v, err = f(cctx, i)
		cancel()
		if err == nil || time.Now().After(deadline) || !sleepCtx(ctx, 50*time.Millisecond) {
			return v, err
		}
	}
}

// prefixOf is the range end of all keys with prefix p.
func prefixOf(p string) string {
	b := []byte(p)
	b[len(b)-1]++
	return string(b)
}
