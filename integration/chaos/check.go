package chaos

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// Verdict is one check's result.
type Verdict struct {
	Name   string
	OK     bool
	Detail string // a summary when OK, the first problems otherwise
}

func (v Verdict) String() string {
	s := "PASS"
	if !v.OK {
		s = "FAIL"
	}
	return fmt.Sprintf("%-16s %s  %s", v.Name, s, v.Detail)
}

// problems collects a check's findings, keeping the first few verbatim.
type problems struct {
	n     int
	first []string
}

func (p *problems) add(format string, args ...any) {
	p.n++
	if len(p.first) < 8 {
		p.first = append(p.first, fmt.Sprintf(format, args...))
	}
}

func (p *problems) verdict(name, okDetail string) Verdict {
	if p.n == 0 {
		return Verdict{Name: name, OK: true, Detail: okDetail}
	}
	d := strings.Join(p.first, "; ")
	if p.n > len(p.first) {
		d += fmt.Sprintf("; and %d more", p.n-len(p.first))
	}
	return Verdict{Name: name, OK: false, Detail: fmt.Sprintf("%d problems: %s", p.n, d)}
}

// isModelKind says whether an operation belongs to the register model.
func isModelKind(k Kind) bool { return k == Get || k == Put || k == CAS || k == Delete }

// PatchStats says what became of the operations with unknown outcomes.
type PatchStats struct {
	Unknown  int // writes with unknown outcomes
	Resolved int // seen by the watch: known to have happened, returning no later than the watch saw them
	Dropped  int // known not to have happened (the complete watch history lacks them)
	Pending  int // left open: they may take effect at any time after their call
}

// watchIndex is the union of every watcher's events.
type watchIndex struct {
	byValue  map[string]WatchEvent   // PUT events by value (values are unique), earliest arrival
	deletes  map[string][]WatchEvent // DELETE events by key, by revision, earliest arrival
	complete bool                    // some watcher reached the final revision
}

func indexWatches(h *History) watchIndex {
	idx := watchIndex{byValue: map[string]WatchEvent{}, deletes: map[string][]WatchEvent{}}
	delAt := map[string]map[int64]WatchEvent{}
	for _, w := range h.Watches {
		var last int64
		for _, ev := range w.Events {
			last = max(last, ev.Rev)
			if ev.Delete {
				if delAt[ev.Key] == nil {
					delAt[ev.Key] = map[int64]WatchEvent{}
				}
				if old, ok := delAt[ev.Key][ev.Rev]; !ok || ev.At < old.At {
					delAt[ev.Key][ev.Rev] = ev
				}
				continue
			}
			if old, ok := idx.byValue[ev.Value]; !ok || ev.At < old.At {
				idx.byValue[ev.Value] = ev
			}
		}
		if h.Final.Revision > 0 && last >= h.Final.Revision {
			idx.complete = true
		}
	}
	for k, m := range delAt {
		for _, ev := range m {
			idx.deletes[k] = append(idx.deletes[k], ev)
		}
		sort.Slice(idx.deletes[k], func(i, j int) bool { return idx.deletes[k][i].Rev < idx.deletes[k][j].Rev })
	}
	return idx
}

// PorcupineOps turns the history into porcupine operations for the
// register model, using the watch to settle unknown outcomes:
//
//   - Failed operations, and reads whose outcome is unknown, say nothing
//     about the state and are left out.
//   - A put or CAS with an unknown outcome whose (unique) value the watch
//     delivered did take effect, no later than the first watcher got it:
//     its return time becomes that arrival, and a CAS counts as succeeded.
//   - One the watch never delivered did not take effect, if the watch
//     history is complete (a watcher reached the final revision, and the
//     watch check proves no revision is missing): it is left out.
//   - Deletes with unknown outcomes are paired with the delete events no
//     acknowledged delete explains (matchDeletes); the rest did not take
//     effect, if the watch history is complete, and are left out.
//   - Everything else unknown returns at "infinity": after every other
//     operation, so it may take effect at any point after its call.
//
// The final reads are appended as ordinary reads.
func PorcupineOps(h *History) ([]porcupine.Operation, PatchStats) {
	idx := indexWatches(h)
	var st PatchStats
	// Revisions of deletes the clients know about.
	explained := map[int64]bool{}
	var end int64
	for _, op := range h.Ops {
		end = max(end, op.Call, op.Return)
		if op.Input.Kind == Delete && op.Outcome == OK && op.Output.KV.Exists {
			explained[op.Output.Revision] = true
		}
	}
	for _, w := range h.Watches {
		for _, ev := range w.Events {
			end = max(end, ev.At)
		}
	}
	infinity := end + int64(time.Second)
	delMatch := matchDeletes(h.Ops, idx, explained)

	// Dense client IDs for the visualisation: a client gets a new row
	// after an operation with an unknown outcome, which stays open.
	rows := map[int]int{}
	row := func(client int) int {
		if r, ok := rows[client]; ok {
			return r
		}
		rows[client] = len(rows)
		return rows[client]
	}
	bumped := map[int]int{}
	clientRow := func(client int) int { return row(client*1_000_000 + bumped[client]) }

	var out []porcupine.Operation
	for _, op := range h.Ops {
		if !isModelKind(op.Input.Kind) || op.Outcome == Failed {
			continue
		}
		pop := porcupine.Operation{ClientId: clientRow(op.Client), Input: op.Input, Call: op.Call, Output: op.Output, Return: op.Return, Metadata: opMeta(op)}
		if op.Outcome == Unknown {
			if op.Input.Kind == Get {
				continue
			}
			st.Unknown++
			resolved, drop := false, false
			switch op.Input.Kind {
			case Put, CAS:
				if ev, ok := idx.byValue[op.Input.Value]; ok && ev.Key == op.Input.Key {
					pop.Return = max(ev.At, op.Call)
					pop.Output = Output{NoPrev: true, Succeeded: true, Revision: ev.Rev}
					resolved = true
				} else if idx.complete && !ok {
					drop = true
				}
			case Delete:
				if at, ok := delMatch[op.ID]; ok {
					pop.Return = max(at, op.Call)
					pop.Output = Output{NoPrev: true}
					resolved = true
				} else {
					drop = idx.complete
				}
			}
			switch {
			case resolved:
				st.Resolved++
			case drop:
				st.Dropped++
				continue
			default:
				st.Pending++
				pop.Return = infinity
				pop.Output = Output{Unknown: true}
				bumped[op.Client]++
			}
		}
		out = append(out, pop)
	}
	// The final reads, after everything that returned.
	keys := make([]string, 0, len(h.Final.Reads))
	for k := range h.Final.Reads {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		out = append(out, porcupine.Operation{
			ClientId: row(-1), Input: Input{Kind: Get, Key: k}, Call: end + 1, Return: end + 2,
			Output: Output{KV: h.Final.Reads[k]}, Metadata: "final read",
		})
	}
	return out, st
}

// matchDeletes pairs the delete events no acknowledged delete explains
// with deletes whose outcome is unknown, and returns, by op ID, when each
// matched delete's effect was seen.
//
// Deletes carry no unique value, so which unknown delete of a key caused
// which of its unexplained delete events is not known; it need not be.
// The deletes of a key are the same operation but for their call times,
// and the others took no effect (never applied, or applied to a missing
// key: no revision, no change). Pairing the events, earliest first, with
// the earliest-called deletes that could have caused them gives each
// delete an interval [call, seen] at least as wide as the true pairing's
// would be, in the sense that any choice of points inside the true
// intervals also fits inside these (sort both: the i-th point lies after
// i calls and before n-i+1 sightings). So the patched history is
// linearizable whenever the real one is; an event no delete can explain
// stays unexplained and fails the check.
func matchDeletes(ops []Op, idx watchIndex, explained map[int64]bool) map[int]int64 {
	cands := map[string][]Op{}
	for _, op := range ops {
		if op.Input.Kind == Delete && op.Outcome == Unknown {
			cands[op.Input.Key] = append(cands[op.Input.Key], op)
		}
	}
	out := map[int]int64{}
	for key, cs := range cands {
		sort.Slice(cs, func(i, j int) bool { return cs[i].Call < cs[j].Call })
		var evs []WatchEvent
		for _, ev := range idx.deletes[key] {
			if !explained[ev.Rev] {
				evs = append(evs, ev)
			}
		}
		sort.Slice(evs, func(i, j int) bool { return evs[i].At < evs[j].At })
		next := 0
		for _, ev := range evs {
			if next < len(cs) && cs[next].Call <= ev.At {
				out[cs[next].ID] = ev.At
				next++
			}
		}
	}
	return out
}

func opMeta(op Op) string {
	s := fmt.Sprintf("op %d by client %d on %s: %s", op.ID, op.Client, op.Member, op.Outcome)
	if op.Err != "" {
		s += " (" + op.Err + ")"
	}
	return s
}

// KeyResult is porcupine's answer for one key.
type KeyResult struct {
	Key    string
	Ops    int
	Result porcupine.CheckResult
	Info   porcupine.LinearizationInfo
	Took   time.Duration
}

// LinearizabilityResult is the porcupine check of every key.
type LinearizabilityResult struct {
	Verdict Verdict
	Keys    []KeyResult
	Stats   PatchStats
}

// CheckLinearizable checks the history of every model key for
// linearizability with porcupine, each key on its own (a register per key
// is the whole model, so the history is linearizable if and only if every
// key's is), two keys at a time. A timeout of 0 means none; a key whose
// check times out fails, since nothing was proven.
func CheckLinearizable(h *History, timeout time.Duration) LinearizabilityResult {
	ops, st := PorcupineOps(h)
	parts := Model.Partition(ops)
	results := make([]KeyResult, len(parts))
	start := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 2)
	for i, part := range parts {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			t0 := time.Now()
			res, info := porcupine.CheckOperationsVerbose(Model, part, timeout)
			results[i] = KeyResult{Key: part[0].Input.(Input).Key, Ops: len(part), Result: res, Info: info, Took: time.Since(t0)}
		}()
	}
	wg.Wait()
	took := time.Since(start).Round(time.Millisecond)
	detail := fmt.Sprintf("%d keys, %d ops; unknown writes: %d resolved by watch, %d dropped, %d left open; checked in %v",
		len(parts), len(ops), st.Resolved, st.Dropped, st.Pending, took)
	var bad []string
	for _, r := range results {
		switch r.Result {
		case porcupine.Illegal:
			bad = append(bad, fmt.Sprintf("%s: no linearization of its %d ops", r.Key, r.Ops))
		case porcupine.Unknown:
			bad = append(bad, fmt.Sprintf("%s: porcupine timed out after %v", r.Key, timeout))
		}
	}
	v := Verdict{Name: "linearizable", OK: len(bad) == 0, Detail: detail}
	if !v.OK {
		v.Detail = strings.Join(bad, "; ") + "; " + detail
	}
	return LinearizabilityResult{Verdict: v, Keys: results, Stats: st}
}

// acked returns the writes a client saw succeed: the key, the revision, and
// the value (empty for a delete).
type ackedWrite struct {
	op     Op
	key    string
	rev    int64
	delete bool
	value  string
}

func ackedWrites(h *History) []ackedWrite {
	var out []ackedWrite
	for _, op := range h.Ops {
		if op.Outcome != OK {
			continue
		}
		switch op.Input.Kind {
		case Put, LeasePut, Probe:
			out = append(out, ackedWrite{op: op, key: op.Input.Key, rev: op.Output.Revision, value: op.Input.Value})
		case CAS:
			if op.Output.Succeeded {
				out = append(out, ackedWrite{op: op, key: op.Input.Key, rev: op.Output.Revision, value: op.Input.Value})
			}
		case Delete:
			if op.Output.KV.Exists {
				out = append(out, ackedWrite{op: op, key: op.Input.Key, rev: op.Output.Revision, delete: true})
			}
		}
	}
	return out
}

// CheckWatches checks every watcher's stream: revisions arrive in order,
// each once and in one response, with no gap (every revision of the run is
// a write under the watched prefix, so the stream must be contiguous from
// the first write to the final revision); all watchers agree on every
// revision's events; every acknowledged write is in the stream at its
// revision with its value.
func CheckWatches(h *History, firstRev int64) Verdict {
	var p problems
	type evKey struct {
		rev int64
		key string
	}
	canon := map[evKey]WatchEvent{}
	var reconnects, events int
	for _, w := range h.Watches {
		reconnects += w.Reconnects
		events += len(w.Events)
		for _, pr := range w.Problems {
			p.add("watcher %d: %s", w.Watcher, pr)
		}
		var lastRev int64 = firstRev - 1
		lastResp := -1
		respOf := map[int64]int{}
		for _, ev := range w.Events {
			switch {
			case ev.Rev == lastRev:
				if respOf[ev.Rev] != ev.Resp {
					p.add("watcher %d: revision %d split over two responses or delivered twice", w.Watcher, ev.Rev)
				}
			case ev.Rev < lastRev:
				p.add("watcher %d: revision %d after %d (out of order or repeated)", w.Watcher, ev.Rev, lastRev)
				continue
			case ev.Rev > lastRev+1:
				p.add("watcher %d: gap: revisions %d..%d missing (next seen %d)", w.Watcher, lastRev+1, ev.Rev-1, ev.Rev)
			}
			if ev.Resp < lastResp {
				p.add("watcher %d: responses out of order", w.Watcher)
			}
			lastResp = ev.Resp
			if ev.Rev != lastRev {
				respOf[ev.Rev] = ev.Resp
			}
			lastRev = ev.Rev
			k := evKey{ev.Rev, ev.Key}
			if c, ok := canon[k]; ok {
				if c.Delete != ev.Delete || c.Value != ev.Value || c.Version != ev.Version {
					p.add("watchers disagree at revision %d key %s: %+v vs %+v", ev.Rev, ev.Key, c, ev)
				}
			} else {
				canon[k] = ev
			}
		}
		if h.Final.Revision > 0 && lastRev < h.Final.Revision {
			p.add("watcher %d stopped at revision %d, final revision %d", w.Watcher, lastRev, h.Final.Revision)
		}
	}
	// Every revision seen by one watcher is seen by all that got past it.
	for _, w := range h.Watches {
		have := map[evKey]bool{}
		var last int64
		for _, ev := range w.Events {
			have[evKey{ev.Rev, ev.Key}] = true
			last = max(last, ev.Rev)
		}
		for k := range canon {
			if k.rev <= last && !have[k] {
				p.add("watcher %d lacks revision %d key %s that another watcher got", w.Watcher, k.rev, k.key)
			}
		}
	}
	for _, a := range ackedWrites(h) {
		ev, ok := canon[evKey{a.rev, a.key}]
		switch {
		case !ok:
			p.add("acknowledged %s of %s at revision %d (op %d) not in any watch stream", a.op.Input.Kind, a.key, a.rev, a.op.ID)
		case ev.Delete != a.delete || (!a.delete && ev.Value != a.value):
			p.add("acknowledged %s of %s=%q at revision %d (op %d) but the watch has %+v", a.op.Input.Kind, a.key, a.value, a.rev, a.op.ID, ev)
		}
	}
	return p.verdict("watch", fmt.Sprintf("%d watchers, %d events up to revision %d, %d reconnects; every acknowledged write seen at its revision",
		len(h.Watches), events, h.Final.Revision, reconnects))
}

// lastEvents is the last watch event of each key (the union of watchers).
func lastEvents(h *History) map[string]WatchEvent {
	last := map[string]WatchEvent{}
	for _, w := range h.Watches {
		for _, ev := range w.Events {
			if old, ok := last[ev.Key]; !ok || ev.Rev > old.Rev {
				last[ev.Key] = ev
			}
		}
	}
	return last
}

// CheckDurability checks that every acknowledged write survived: at the
// end each model key holds the value of its last write in the watch
// history (or is absent after a delete), no acknowledged write on a key is
// newer than the key's final state, every member holds the same value at
// the final revision, and the final state of a key whose last write a
// client acknowledged is that write.
func CheckDurability(h *History) Verdict {
	var p problems
	last := lastEvents(h)
	if len(h.Final.Reads) == 0 {
		p.add("no final reads")
	}
	for k, kv := range h.Final.Reads {
		ev, ok := last[k]
		want := KV{}
		if ok && !ev.Delete {
			want = KV{Exists: true, Value: ev.Value, Version: ev.Version}
		}
		if kv != want {
			p.add("%s ends as %s but its last watched write (rev %d) makes it %s", k, kv, ev.Rev, want)
		}
		if kv.Exists && h.Final.ModRevs[k] != ev.Rev {
			p.add("%s ends at mod revision %d, last watched write at %d", k, h.Final.ModRevs[k], ev.Rev)
		}
		for m, reads := range h.Final.MemberReads {
			if got := reads[k]; got != kv {
				p.add("%s holds %s=%s at revision %d, linearizable read says %s", m, k, got, h.Final.Revision, kv)
			}
		}
	}
	finalRev := map[string]int64{}
	for k, ev := range last {
		finalRev[k] = ev.Rev
	}
	var n int
	for _, a := range ackedWrites(h) {
		if _, model := h.Final.Reads[a.key]; !model {
			continue
		}
		n++
		fr := finalRev[a.key]
		if a.rev > fr {
			p.add("acknowledged %s of %s at revision %d (op %d) is newer than the key's final state (rev %d): lost", a.op.Input.Kind, a.key, a.rev, a.op.ID, fr)
		}
		if a.rev == fr {
			got := h.Final.Reads[a.key]
			if a.delete && got.Exists || !a.delete && got.Value != a.value {
				p.add("%s's last write was acknowledged (op %d, %q at rev %d) but it ends as %s", a.key, a.op.ID, a.value, a.rev, got)
			}
		}
	}
	return p.verdict("durability", fmt.Sprintf("%d acknowledged writes on %d keys all survive; final state equal on %d members",
		n, len(h.Final.Reads), len(h.Final.MemberReads)))
}

// CheckLeases checks the leases: the kept-alive lease is alive at the end
// and its key is present and was never deleted; every short-lived lease's
// key (revoked or left to expire) is gone, and the watch saw it go.
func CheckLeases(h *History, shortPrefix string) Verdict {
	var p problems
	f := h.Final
	if f.KeptLost != "" {
		p.add("%s", f.KeptLost)
	}
	if f.KeptKey != "" {
		if !f.KeptPresent {
			p.add("kept-alive key %s is gone", f.KeptKey)
		}
		if f.KeptTTL <= 0 {
			p.add("kept-alive lease reports TTL %d", f.KeptTTL)
		}
		for _, w := range h.Watches {
			for _, ev := range w.Events {
				if ev.Key == f.KeptKey && ev.Delete {
					p.add("kept-alive key %s deleted at revision %d (longest gap between acknowledged keep-alives %v, TTL %ds)",
						ev.Key, ev.Rev, time.Duration(f.KeptMaxGap).Round(time.Millisecond), f.KeptTTLGrant)
				}
			}
		}
		if time.Duration(f.KeptMaxGap) > time.Duration(f.KeptTTLGrant)*time.Second {
			p.add("the keep-alives themselves had a gap of %v, longer than the TTL %ds", time.Duration(f.KeptMaxGap).Round(time.Millisecond), f.KeptTTLGrant)
		}
	}
	for _, k := range f.ShortLeft {
		p.add("short-lease key %s still present at the end", k)
	}
	// Every short-lease key put must be deleted later in the watch.
	state := map[string]bool{}
	for _, w := range h.Watches {
		cur := map[string]bool{}
		for _, ev := range w.Events {
			if strings.HasPrefix(ev.Key, shortPrefix) {
				cur[ev.Key] = !ev.Delete
			}
		}
		for k, live := range cur {
			state[k] = state[k] || live
		}
	}
	var short int
	for k, live := range state {
		short++
		if live {
			p.add("the watch never saw short-lease key %s go", k)
		}
	}
	var gap string
	if f.KeptKey != "" {
		gap = fmt.Sprintf("kept-alive lease alive (TTL %ds, longest keep-alive gap %v); ", f.KeptTTLGrant, time.Duration(f.KeptMaxGap).Round(time.Millisecond))
	}
	return p.verdict("leases", fmt.Sprintf("%s%d short-lease keys all gone", gap, short))
}

// CheckHashes checks that every member has the same HashKV at the final
// revision.
func CheckHashes(h *History) Verdict {
	var p problems
	byHash := map[uint32][]string{}
	for m, hash := range h.Final.Hashes {
		byHash[hash] = append(byHash[hash], m)
	}
	want := h.Members
	if h.Final.Members != nil {
		want = len(h.Final.Members) // the members in the cluster at the end
	}
	if len(h.Final.Hashes) < want {
		p.add("only %d of %d members answered HashKV", len(h.Final.Hashes), want)
	}
	if len(byHash) > 1 {
		var parts []string
		for hash, ms := range byHash {
			sort.Strings(ms)
			parts = append(parts, fmt.Sprintf("%08x on %s", hash, strings.Join(ms, ",")))
		}
		sort.Strings(parts)
		p.add("members disagree at revision %d: %s", h.Final.Revision, strings.Join(parts, "; "))
	}
	var hash uint32
	for _, v := range h.Final.Hashes {
		hash = v
	}
	return p.verdict("hashkv", fmt.Sprintf("%08x on all %d members at revision %d", hash, len(h.Final.Hashes), h.Final.Revision))
}

// CheckRecovery checks that the cluster took a write within bound of the
// faults ending, and every member did.
func CheckRecovery(h *History, bound time.Duration) Verdict {
	var p problems
	first, all := time.Duration(h.Final.RecoveryFirst), time.Duration(h.Final.RecoveryAll)
	if first < 0 || first > bound {
		p.add("first write acknowledged %v after the faults ended (bound %v)", first, bound)
	}
	if all < 0 || all > bound {
		p.add("a write through every member took %v after the faults ended (bound %v)", all, bound)
	}
	return p.verdict("recovery", fmt.Sprintf("first write %v, through every member %v after the faults ended (bound %v)",
		first.Round(time.Millisecond), all.Round(time.Millisecond), bound))
}

// CheckMembership checks the membership at the end: every member in the
// cluster lists exactly the members the run added and did not remove, all
// started voters; the cluster has between minMembers and maxMembers
// members; every member removed while running exited by itself with
// status 0 (a removed member that exits 1, or never exits, fails); and the
// run found nothing wrong on the way (a new member that never became a
// voter).
func CheckMembership(h *History) Verdict {
	var p problems
	f := h.Final
	if f.Members == nil {
		return p.verdict("membership", "not recorded")
	}
	want := slices.Clone(f.Members)
	sort.Strings(want)
	for _, m := range want {
		got, ok := f.Listed[m]
		switch {
		case !ok:
			p.add("%s's member list was not read", m)
		case !slices.Equal(got, want):
			p.add("%s lists [%s], the cluster should be [%s]", m, strings.Join(got, ", "), strings.Join(want, ", "))
		}
	}
	if n := len(f.Members); h.Members > 0 && (n < minMembers(h.Members) || n > maxMembers(h.Members)) {
		p.add("the cluster ends with %d members, outside [%d, %d]", n, minMembers(h.Members), maxMembers(h.Members))
	}
	removed := make([]string, 0, len(f.Removed))
	for m := range f.Removed {
		removed = append(removed, m)
	}
	sort.Strings(removed)
	exited := 0
	for _, m := range removed {
		switch res := f.Removed[m]; res {
		case "exit 0":
			exited++
		case "killed -9 before its removal":
		default:
			p.add("removed member %s: %s", m, res)
		}
	}
	for _, s := range f.MembershipProblems {
		p.add("%s", s)
	}
	return p.verdict("membership", fmt.Sprintf("%d members at the end (%s), listed alike by each; %d removed (%d exited by themselves with status 0)",
		len(f.Members), strings.Join(f.Members, ","), len(f.Removed), exited))
}
