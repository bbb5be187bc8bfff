package chaos

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

const k0 = KVPrefix + "k0"

// baseHistory is a small, correct run on one key, seen by two watchers:
//
//	rev 2  put a     (ok)
//	rev 3  put b     (ok)
//	rev 4  delete    (ok)
//	rev 5  put c     (unknown to its client; the watch saw it at 65)
//	rev 6  kept-alive lease key; rev 7 a short-lease key, rev 8 its expiry
//
// and a read of c after that, final state c@v1 at revision 8.
func baseHistory() *History {
	h := &History{Seed: 1, Members: 3}
	add := func(client int, call, ret int64, in Input, out Output, oc Outcome) {
		in.Key = cond(in.Key == "", k0, in.Key)
		h.Ops = append(h.Ops, Op{ID: len(h.Ops), Client: client, Member: "m1", Input: in, Output: out, Call: call, Return: ret, Outcome: oc})
	}
	add(0, 0, 10, Input{Kind: Put, Value: "a"}, Output{Revision: 2}, OK)
	add(0, 20, 30, Input{Kind: Put, Value: "b"}, Output{KV: val("a", 1), Revision: 3}, OK)
	add(1, 40, 50, Input{Kind: Delete}, Output{KV: val("b", 2), Revision: 4}, OK)
	add(1, 55, 2055, Input{Kind: Put, Value: "c"}, Output{}, Unknown)
	add(0, 70, 80, Input{Kind: Get}, Output{KV: val("c", 1), Revision: 5}, OK)
	add(2, 81, 90, Input{Kind: Get}, Output{}, Failed)
	add(-2, 90, 95, Input{Kind: LeasePut, Key: KeptKey, Value: "kept-0", Lease: 9}, Output{Revision: 6}, OK)
	add(-3, 96, 97, Input{Kind: LeasePut, Key: ShortPrefix + "1", Value: "short-1", Lease: 10}, Output{Revision: 7}, OK)
	events := []WatchEvent{
		{Rev: 2, Key: k0, Value: "a", Version: 1, At: 11},
		{Rev: 3, Key: k0, Value: "b", Version: 2, At: 31},
		{Rev: 4, Key: k0, Delete: true, At: 51},
		{Rev: 5, Key: k0, Value: "c", Version: 1, At: 65},
		{Rev: 6, Key: KeptKey, Value: "kept-0", Version: 1, At: 96},
		{Rev: 7, Key: ShortPrefix + "1", Value: "short-1", Version: 1, At: 98},
		{Rev: 8, Key: ShortPrefix + "1", Delete: true, At: 3000},
	}
	for w := range 2 {
		l := WatchLog{Watcher: w}
		for i, ev := range events {
			ev.Resp = i
			ev.At += int64(w)
			l.Events = append(l.Events, ev)
		}
		h.Watches = append(h.Watches, l)
	}
	h.Final = FinalState{
		Revision:    8,
		Reads:       map[string]KV{k0: val("c", 1)},
		ModRevs:     map[string]int64{k0: 5},
		MemberReads: map[string]map[string]KV{"m1": {k0: val("c", 1)}, "m2": {k0: val("c", 1)}, "m3": {k0: val("c", 1)}},
		Hashes:      map[string]uint32{"m1": 7, "m2": 7, "m3": 7},
		KeptKey:     KeptKey, KeptPresent: true, KeptTTL: 8, KeptTTLGrant: 10, KeptMaxGap: int64(600 * time.Millisecond),
		RecoveryFirst: int64(time.Second), RecoveryAll: int64(2 * time.Second),
		// m4 joined and left again; m1..m3 are the cluster at the end.
		Members: []string{"m1", "m2", "m3"},
		Listed:  map[string][]string{"m1": {"m1", "m2", "m3"}, "m2": {"m1", "m2", "m3"}, "m3": {"m1", "m2", "m3"}},
		Removed: map[string]string{"m4": "exit 0", "m5": "killed -9 before its removal"},
	}
	return h
}

func verdicts(t *testing.T, h *History) map[string]Verdict {
	t.Helper()
	r := Check(h, CheckOptions{CheckTimeout: 10 * time.Second})
	m := map[string]Verdict{}
	for _, v := range r.Verdicts {
		m[v.Name] = v
	}
	return m
}

func TestChecksPassACorrectHistory(t *testing.T) {
	for name, v := range verdicts(t, baseHistory()) {
		if !v.OK {
			t.Errorf("%s failed on a correct history: %s", name, v.Detail)
		}
	}
}

// Each mutation breaks one property; the check for it must fail (and the
// others, where the mutation does not touch them, must not).
func TestChecksCatchEachViolation(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(h *History)
		fails  string
		detail string
	}{
		{"stale read", func(h *History) {
			h.Ops = append(h.Ops, Op{ID: 99, Client: 3, Input: Input{Kind: Get, Key: k0}, Output: Output{KV: val("b", 2)}, Call: 100, Return: 110, Outcome: OK})
		}, "linearizable", "no linearization"},
		{"an unknown put seen by the watch returns when the watch saw it", func(h *History) {
			// The read starts after the watch delivered c (65) yet misses it.
			h.Ops = append(h.Ops, Op{ID: 99, Client: 3, Input: Input{Kind: Get, Key: k0}, Output: Output{}, Call: 66, Return: 68, Outcome: OK})
		}, "linearizable", "no linearization"},
		{"a read of a write the complete watch never saw", func(h *History) {
			h.Ops = append(h.Ops,
				Op{ID: 98, Client: 3, Input: Input{Kind: Put, Key: k0, Value: "ghost"}, Call: 81, Return: 2081, Outcome: Unknown},
				Op{ID: 99, Client: 4, Input: Input{Kind: Get, Key: k0}, Output: Output{KV: val("ghost", 2)}, Call: 85, Return: 86, Outcome: OK})
		}, "linearizable", "no linearization"},
		{"a gap in a watch stream", func(h *History) {
			w := &h.Watches[1]
			w.Events = append(w.Events[:1], w.Events[2:]...)
		}, "watch", "gap"},
		{"a revision delivered twice", func(h *History) {
			w := &h.Watches[0]
			dup := w.Events[1]
			dup.Resp = 100
			w.Events = append(w.Events[:3], append([]WatchEvent{dup}, w.Events[3:]...)...)
		}, "watch", "out of order or repeated"},
		{"watchers disagree", func(h *History) { h.Watches[1].Events[1].Value = "x" }, "watch", "disagree"},
		{"a watcher that never caught up", func(h *History) { h.Watches[0].Events = h.Watches[0].Events[:5] }, "watch", "stopped at revision 6"},
		{"an acknowledged write missing from the watch", func(h *History) {
			h.Ops[1].Output.Revision = 9
		}, "watch", "not in any watch stream"},
		{"a lost acknowledged write", func(h *History) {
			h.Final.Reads[k0] = val("b", 2)
			h.Final.ModRevs[k0] = 3
		}, "durability", "ends as b@v2"},
		{"a member that differs", func(h *History) { h.Final.MemberReads["m2"][k0] = val("b", 2) }, "durability", "m2 holds"},
		{"the kept-alive key deleted", func(h *History) {
			h.Watches[0].Events = append(h.Watches[0].Events, WatchEvent{Rev: 9, Key: KeptKey, Delete: true, At: 4000})
		}, "leases", "kept-alive key /chaos/lease/kept deleted"},
		{"the kept-alive lease gone", func(h *History) { h.Final.KeptTTL, h.Final.KeptPresent = -1, false }, "leases", "is gone"},
		{"a short lease that never went", func(h *History) { h.Final.ShortLeft = []string{ShortPrefix + "1"} }, "leases", "still present"},
		{"HashKV differs", func(h *History) { h.Final.Hashes["m3"] = 8 }, "hashkv", "disagree"},
		{"slow recovery", func(h *History) { h.Final.RecoveryAll = int64(11 * time.Second) }, "recovery", "every member took 11s"},
		{"no recovery", func(h *History) { h.Final.RecoveryFirst, h.Final.RecoveryAll = -1, -1 }, "recovery", "first write"},
		{"a removed member that crashed", func(h *History) { h.Final.Removed["m4"] = "exited: exit status 1" }, "membership", "removed member m4: exited: exit status 1"},
		{"a removed member that never exited", func(h *History) {
			h.Final.Removed["m4"] = "still running 30s after the faults' end; killed"
		}, "membership", "removed member m4: still running"},
		{"a member that still lists a removed one", func(h *History) { h.Final.Listed["m2"] = []string{"m1", "m2", "m3", "m4"} }, "membership", "m2 lists [m1, m2, m3, m4]"},
		{"a learner never promoted", func(h *History) { h.Final.Listed["m1"] = []string{"m1", "m2", "m3 (learner)"} }, "membership", "m3 (learner)"},
		{"a new member that never joined", func(h *History) {
			h.Final.MembershipProblems = []string{"m6, added by #3, did not become a started voter"}
		}, "membership", "m6, added by #3"},
		{"too few members", func(h *History) {
			h.Final.Members = []string{"m1", "m2"}
			h.Final.Listed = map[string][]string{"m1": {"m1", "m2"}, "m2": {"m1", "m2"}}
		}, "membership", "ends with 2 members, outside [3, 5]"},
		{"a final member without a hash", func(h *History) {
			h.Final.Members = append(h.Final.Members, "m6")
		}, "hashkv", "only 3 of 4 members answered HashKV"},
	}
	for _, c := range cases {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			h := baseHistory()
			c.mutate(h)
			vs := verdicts(t, h)
			v := vs[c.fails]
			if v.OK {
				t.Fatalf("%s passed: %s", c.fails, v.Detail)
			}
			if !strings.Contains(v.Detail, c.detail) {
				t.Errorf("%s failed for another reason: %s", c.fails, v.Detail)
			}
		})
	}
}

func TestPatchUnknownWrites(t *testing.T) {
	h := baseHistory()
	h.Ops = append(h.Ops,
		// Never seen by the watch: did not happen.
		Op{ID: 90, Client: 3, Input: Input{Kind: Put, Key: k0, Value: "lost"}, Call: 82, Return: 2082, Outcome: Unknown},
		// A delete of a key with no unexplained delete after it: nothing.
		Op{ID: 91, Client: 4, Input: Input{Kind: Delete, Key: k0}, Call: 83, Return: 2083, Outcome: Unknown},
	)
	ops, st := PorcupineOps(h)
	if st.Unknown != 3 || st.Resolved != 1 || st.Dropped != 2 || st.Pending != 0 {
		t.Fatalf("patch stats %+v, want 3 unknown: 1 resolved, 2 dropped", st)
	}
	for _, op := range ops {
		if in := op.Input.(Input); in.Value == "c" {
			if op.Return != 65 || !op.Output.(Output).NoPrev {
				t.Fatalf("put c resolved to return %d, output %+v; want 65 and NoPrev", op.Return, op.Output)
			}
		}
	}
	// Without a watcher that reached the end nothing may be dropped.
	h.Watches[0].Events = h.Watches[0].Events[:6]
	h.Watches[1].Events = h.Watches[1].Events[:6]
	if _, st := PorcupineOps(h); st.Dropped != 0 || st.Pending != 2 {
		t.Fatalf("incomplete watch: stats %+v, want nothing dropped, 2 pending", st)
	}
}

// A failed run writes history.json, which reads back to the same verdicts,
// and a visualisation of the failing key.
func TestFailureFolder(t *testing.T) {
	h := baseHistory()
	h.Ops = append(h.Ops, Op{ID: 99, Client: 3, Input: Input{Kind: Get, Key: k0}, Output: Output{KV: val("b", 2)}, Call: 100, Return: 110, Outcome: OK})
	h.Faults = []FaultRecord{{Step: 1, Kind: string(Pause), Targets: "m1", Start: 5, End: 60}}
	r := Check(h, CheckOptions{})
	if r.OK() {
		t.Fatal("the stale read passed")
	}
	dir, err := r.WriteFolder(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if html, _ := filepath.Glob(filepath.Join(dir, "linearizability-*.html")); len(html) != 1 {
		t.Fatalf("visualisations: %v", html)
	}
	back, err := ReadHistory(filepath.Join(dir, "history.json"))
	if err != nil {
		t.Fatal(err)
	}
	r2 := Check(back, CheckOptions{})
	if r2.OK() || r2.Lin.Keys[0].Result != porcupine.Illegal {
		t.Fatal("the history read back passes")
	}
	if !strings.Contains(r.Summary(), "verdict: FAIL") {
		t.Fatalf("summary:\n%s", r.Summary())
	}
}

func TestMatchDeletes(t *testing.T) {
	del := func(id int, call int64) Op {
		return Op{ID: id, Input: Input{Kind: Delete, Key: k0}, Call: call, Return: call + 2000, Outcome: Unknown}
	}
	ops := []Op{del(1, 20), del(2, 10), del(3, 300),
		{ID: 4, Input: Input{Kind: Delete, Key: k0}, Output: Output{KV: val("a", 1), Revision: 7}, Outcome: OK}}
	idx := watchIndex{deletes: map[string][]WatchEvent{k0: {
		{Rev: 5, Key: k0, Delete: true, At: 5},  // before any unknown delete: unexplained
		{Rev: 6, Key: k0, Delete: true, At: 60}, // paired with the earliest call, op 2
		{Rev: 7, Key: k0, Delete: true, At: 70}, // op 4's, acknowledged
		{Rev: 8, Key: k0, Delete: true, At: 80}, // op 1
	}}}
	got := matchDeletes(ops, idx, map[int64]bool{7: true})
	want := map[int]int64{2: 60, 1: 80}
	if len(got) != len(want) || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("matched %v, want %v", got, want)
	}
}

// An unknown delete that the watch saw settles a read of the missing key;
// without it the same read is a violation.
func TestUnknownDeleteSeenByWatch(t *testing.T) {
	h := baseHistory()
	// After the final read state c@v1 (rev 5), an unknown delete at rev 9
	// that the watch saw, and reads on both sides of it.
	h.Ops = append(h.Ops,
		Op{ID: 90, Client: 3, Input: Input{Kind: Delete, Key: k0}, Call: 3000, Return: 5000, Outcome: Unknown},
		Op{ID: 91, Client: 4, Input: Input{Kind: Get, Key: k0}, Output: Output{}, Call: 3200, Return: 3300, Outcome: OK})
	for w := range h.Watches {
		h.Watches[w].Events = append(h.Watches[w].Events, WatchEvent{Rev: 9, Key: k0, Delete: true, At: 3100, Resp: 9})
	}
	h.Final.Revision = 9
	h.Final.Reads[k0] = KV{}
	for _, m := range h.Final.MemberReads {
		m[k0] = KV{}
	}
	for name, v := range verdicts(t, h) {
		if !v.OK {
			t.Errorf("%s: %s", name, v.Detail)
		}
	}
	// Without the delete, the missing key has no explanation.
	h.Ops[len(h.Ops)-2].Input.Key = KVPrefix + "other"
	if v := verdicts(t, h)["linearizable"]; v.OK {
		t.Fatalf("a delete nobody issued passed: %s", v.Detail)
	}
}
