package chaos

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cairnkv/cairn/integration/harness"
)

// Flags of the long run (make chaos) and of re-checking a saved history.
var (
	flagDuration = flag.Duration("chaos.duration", 0, "run TestChaos with faults for this long (0 skips it)")
	flagSeed     = flag.Int64("chaos.seed", 0, "seed of TestChaos's fault schedule and workload (0: from the clock)")
	flagMembers  = flag.Int("chaos.members", 3, "cluster size of TestChaos")
	flagOut      = flag.String("chaos.out", "", "folder for failed runs (default: the system's temp dir)")
	flagHistory  = flag.String("chaos.history", "", "TestChaosCheckHistory: check this history.json again")
)

// TestChaosShort is the fixed-seed run of the normal suite: about a minute
// on a two-core machine.
func TestChaosShort(t *testing.T) {
	if testing.Short() {
		t.Skip("a minute of real processes under faults")
	}
	runAndReport(t, Config{Seed: shortSeed, Members: 3, Duration: shortDuration, OutDir: *flagOut})
}

// TestChaosShort's seed and length. The seed is one whose schedule has
// every kind of membership change (TestShortScheduleChangesMembership).
const (
	shortSeed     = 20260543
	shortDuration = 40 * time.Second
)

// TestChaos is the long randomised run behind `make chaos`.
func TestChaos(t *testing.T) {
	if *flagDuration == 0 {
		t.Skip("set -chaos.duration (make chaos) to run")
	}
	seed := *flagSeed
	if seed == 0 {
		seed = time.Now().UnixNano() % 1_000_000_000
	}
	if *flagMembers != 3 && *flagMembers != 5 {
		t.Fatalf("-chaos.members must be 3 or 5, not %d", *flagMembers)
	}
	t.Logf("seed %d (rerun: make chaos SEED=%d DURATION=%v MEMBERS=%d)", seed, seed, *flagDuration, *flagMembers)
	runAndReport(t, Config{Seed: seed, Members: *flagMembers, Duration: *flagDuration, OutDir: *flagOut})
}

func runAndReport(t *testing.T, cfg Config) *Report {
	start := time.Now()
	r := Run(t, cfg)
	// The summary goes to stdout as well, so `make chaos` shows it whole.
	fmt.Printf("%s(run took %v)\n", r.Summary(), time.Since(start).Round(time.Second))
	if !r.OK() {
		t.Errorf("chaos run with seed %d failed; history and visualisation in %s", cfg.Seed, r.Dir)
	}
	return r
}

// TestChaosCheckHistory checks a saved history.json again, without
// processes: for working on the checker, or a second opinion on a failure.
func TestChaosCheckHistory(t *testing.T) {
	if *flagHistory == "" {
		t.Skip("set -chaos.history=path/to/history.json")
	}
	h, err := ReadHistory(*flagHistory)
	if err != nil {
		t.Fatal(err)
	}
	r := Check(h, CheckOptions{})
	fmt.Print(r.Summary())
	if !r.OK() {
		t.Error("the history fails its checks")
	}
}

// TestChaosBrokenReads proves the checker can fail: it turns on the
// unsafe-reads hook of a follower, cuts that follower off, lets the
// majority write a new value and reads the key from the follower. Its
// stale answer, after the write was acknowledged, has no linearization;
// the run must say so, every time.
func TestChaosBrokenReads(t *testing.T) {
	if testing.Short() {
		t.Skip("real processes")
	}
	const rounds = 3
	stale := 0
	r := Run(t, Config{Seed: 7, Members: 3, Workers: 2, OutDir: t.TempDir(), Scenario: staleReads(rounds, &stale)})
	fmt.Print(r.Summary())
	if stale != rounds {
		t.Fatalf("%d of %d rounds read a stale value from the isolated member: the scenario did not do its job", stale, rounds)
	}
	v, _ := r.Verdict("linearizable")
	if v.OK {
		t.Fatalf("the checker passed a history with %d stale reads: %s", stale, v.Detail)
	}
	for _, v := range r.Verdicts {
		if v.Name != "linearizable" && !v.OK {
			t.Errorf("only linearizability should fail, but %s", v)
		}
	}
	html, _ := filepath.Glob(filepath.Join(r.Dir, "linearizability-*.html"))
	if _, err := os.Stat(filepath.Join(r.Dir, "history.json")); err != nil || len(html) == 0 {
		t.Fatalf("the failed run's folder %s lacks history.json or a visualisation (%v, %v)", r.Dir, err, html)
	}
	t.Logf("caught: %s", v.Detail)
}

// staleReads is the broken-read scenario, repeated rounds times.
func staleReads(rounds int, stale *int) func(e *Env) {
	return func(e *Env) {
		t := e.T
		ctx := context.Background()
		n := len(e.Cluster.Members)
		// Let the workload write for a while first; then, each round, the
		// same steps: a stale read is certain, not likely.
		sleepCtx(ctx, 2*time.Second)
		for round := range rounds {
			var lead int
			harness.WaitFor(t, 30*time.Second, "a leader", func() bool { lead = e.Leader(); return lead >= 0 })
			victim := (lead + 1 + round) % n
			if victim == lead {
				victim = (victim + 1) % n
			}
			m := e.Cluster.Members[victim]
			if err := m.Hook("/cairn/test/unsafe-reads", "on=true", 5*time.Second); err != nil {
				t.Fatal(err)
			}
			e.Isolate(victim)
			e.logf("round %d: %s isolated with unsafe reads, leader %s", round, m.Name, e.Cluster.Members[lead].Name)
			key := e.Keys()[round%len(e.Keys())]
			var put Op
			attempt := 0
			harness.WaitFor(t, 30*time.Second, "the majority to take a write", func() bool {
				attempt++
				put = e.Do(ctx, lead, Input{Kind: Put, Key: key, Value: fmt.Sprintf("fresh-%d-%d", round, attempt)})
				return put.Outcome == OK
			})
			get := e.Do(ctx, victim, Input{Kind: Get, Key: key})
			if get.Outcome == OK && get.Output.KV.Value != put.Input.Value {
				*stale++
				e.logf("round %d: %s read %s=%s after the majority acknowledged %s", round, m.Name, key, get.Output.KV, put.Input.Value)
			} else {
				e.logf("round %d: read from %s: %s %s %s", round, m.Name, get.Outcome, get.Output.KV, get.Err)
			}
			// Stay cut off a little longer: the workers' reads through the
			// isolated member are stale too.
			sleepCtx(ctx, time.Second)
			e.Heal()
			if err := m.Hook("/cairn/test/unsafe-reads", "on=false", 5*time.Second); err != nil {
				t.Fatal(err)
			}
			harness.WaitFor(t, 30*time.Second, m.Name+" to catch up", func() bool {
				st, err := m.Status()
				return err == nil && st.GetHeader().GetRevision() >= put.Output.Revision
			})
		}
	}
}
