package chaos

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/cairnkv/cairn/api/etcdserverpb"
	"github.com/cairnkv/cairn/integration/harness"
)

// The run's view of the membership.
//
// Every member the run ever prepared has an index, the same as in the
// harness's Cluster.Members (prepared members are never taken out of
// either), and a state. Only the nemesis (the test's goroutine) changes
// states and controls processes; the clients read states to pick the
// members they talk to, under Env.mmu.

// memberState is where a member stands in the cluster, as the run knows it.
type memberState int

const (
	// stateAdding: prepared (ports, data dir), MemberAdd in flight; not
	// started.
	stateAdding memberState = iota
	// stateAddUnknown: MemberAdd failed in a way that may hide its
	// success, and the member list could not tell yet; not started.
	stateAddUnknown
	// stateNotAdded: the cluster never took it; never started.
	stateNotAdded
	// stateJoining: added and started, not yet a started voter (a
	// learner waiting to be promoted, or a member catching up before it
	// publishes its name): no clients yet, no faults aimed at it.
	stateJoining
	// stateServing: a started voter: clients use it, faults aim at it.
	stateServing
	// stateLeaving: its removal is being made, or its outcome is unknown:
	// clients keep off it.
	stateLeaving
	// stateRemoved: out of the cluster; its process should exit by
	// itself (with status 0).
	stateRemoved
)

func (s memberState) String() string {
	return [...]string{"adding", "add-unknown", "not-added", "joining", "serving", "leaving", "removed"}[s]
}

// inCluster reports whether the cluster counts a member in this state.
func (s memberState) inCluster() bool {
	return s == stateJoining || s == stateServing || s == stateLeaving
}

// memberInfo is one member as the run sees it.
type memberInfo struct {
	idx       int
	name      string
	m         *harness.Member
	conn      *grpc.ClientConn // the workload's (and the nemesis's calls)
	watchConn *grpc.ClientConn // the watchers'
	state     memberState      // guarded by Env.mmu
}

// addMember registers a member the harness has just prepared (the last of
// Cluster.Members) and dials it.
func (e *Env) addMember(m *harness.Member, st memberState) (int, error) {
	conn, err := dial(m.Addr())
	if err != nil {
		return -1, fmt.Errorf("dial %s: %w", m.Name, err)
	}
	wconn, err := dial(m.Addr())
	if err != nil {
		_ = conn.Close()
		return -1, fmt.Errorf("dial %s: %w", m.Name, err)
	}
	e.mmu.Lock()
	defer e.mmu.Unlock()
	idx := len(e.mems)
	if idx >= len(e.Cluster.Members) || e.Cluster.Members[idx] != m {
		panic("chaos: member table out of step with the harness")
	}
	e.mems = append(e.mems, &memberInfo{idx: idx, name: m.Name, m: m, conn: conn, watchConn: wconn, state: st})
	return idx, nil
}

// member returns member i's entry.
func (e *Env) member(i int) *memberInfo {
	e.mmu.RLock()
	defer e.mmu.RUnlock()
	return e.mems[i]
}

// memberCount is how many members the run has prepared.
func (e *Env) memberCount() int {
	e.mmu.RLock()
	defer e.mmu.RUnlock()
	return len(e.mems)
}

func (e *Env) state(i int) memberState {
	e.mmu.RLock()
	defer e.mmu.RUnlock()
	return e.mems[i].state
}

func (e *Env) setState(i int, st memberState) {
	e.mmu.Lock()
	defer e.mmu.Unlock()
	e.mems[i].state = st
}

// allMembers returns every member the run prepared, by index.
func (e *Env) allMembers() []*memberInfo {
	e.mmu.RLock()
	defer e.mmu.RUnlock()
	return slices.Clone(e.mems)
}

// inState returns the indices of the members in any of the states, in
// order.
func (e *Env) inState(states ...memberState) []int {
	e.mmu.RLock()
	defer e.mmu.RUnlock()
	var out []int
	for _, mi := range e.mems {
		if slices.Contains(states, mi.state) {
			out = append(out, mi.idx)
		}
	}
	return out
}

// serving returns the members clients may use, in order.
func (e *Env) serving() []int { return e.inState(stateServing) }

// nextServing is the serving member after i (wrapping around), or i itself
// if no other serves.
func (e *Env) nextServing(i int) int {
	e.mmu.RLock()
	defer e.mmu.RUnlock()
	n := len(e.mems)
	for d := 1; d <= n; d++ {
		if j := (i + d) % n; e.mems[j].state == stateServing {
			return j
		}
	}
	return i
}

// pick returns i if it serves, else the next member that does: a client
// never stays on a member that left.
func (e *Env) pick(i int) int {
	if e.state(i) == stateServing {
		return i
	}
	return e.nextServing(i)
}

// clusterSize counts the members the cluster has.
func (e *Env) clusterSize() int {
	return len(e.inState(stateJoining, stateServing, stateLeaving))
}

// Membership calls.

const (
	memberCallTimeout = 8 * time.Second // a membership call (the server gives up after about 6 s)
	joinPatience      = 60 * time.Second
	exitPatience      = 30 * time.Second
)

// refusal reports whether err is a membership change refused before it
// was proposed (strict reconfig, limits): the change did not happen.
func refusal(err error) bool {
	msg := status.Convert(err).Message()
	for _, s := range []string{"unhealthy cluster", "not enough started members", "too many learner members", "member ID already exist"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

func errText(err error) string {
	if st, ok := status.FromError(err); ok {
		return st.Message()
	}
	return err.Error()
}

// via returns the member a membership call goes through: the leader if it
// is up and not excluded, else the first serving member that is up and
// not cut off; -1 if none.
func (n *nemesis) via(exclude ...int) int {
	ok := func(i int) bool {
		return i >= 0 && n.e.state(i) == stateServing && !n.killed[i] && !n.paused[i] && !slices.Contains(exclude, i)
	}
	if l := n.leader(); ok(l) {
		return l
	}
	for _, i := range n.e.serving() {
		if ok(i) && !n.isolated[i] {
			return i
		}
	}
	for _, i := range n.e.serving() {
		if ok(i) {
			return i
		}
	}
	return -1
}

// memberList asks for the member list (linearizable) through the members
// in turn until one answers or patience runs out; nil if none did.
func (n *nemesis) memberList(patience time.Duration) *pb.MemberListResponse {
	deadline := time.Now().Add(patience)
	for {
		first := n.via()
		var order []int
		if first >= 0 {
			order = append(order, first)
		}
		for _, i := range n.e.serving() {
			if i != first && !n.killed[i] && !n.paused[i] {
				order = append(order, i)
			}
		}
		for _, i := range order {
			ctx, cancel := context.WithTimeout(context.Background(), max(min(2*time.Second, time.Until(deadline)), 500*time.Millisecond))
			resp, err := pb.NewClusterClient(n.e.member(i).conn).MemberList(ctx, &pb.MemberListRequest{Linearizable: true})
			cancel()
			if err == nil {
				return resp
			}
			if time.Now().After(deadline) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// findMember looks a member up (by ID, or by peer URL if id is 0) in the
// member list: found, and whether the list could be read at all. After an
// answer that may hide a change still on its way (ambiguous), an absent
// member is looked up once more a second later.
func (n *nemesis) findMember(id uint64, peerURL string, patience time.Duration, ambiguous bool) (*pb.Member, bool) {
	for round := 0; ; round++ {
		list := n.memberList(n.budget(patience))
		if list == nil {
			return nil, false
		}
		for _, m := range list.Members {
			if id != 0 && m.ID == id || id == 0 && slices.Contains(m.PeerURLs, peerURL) {
				return m, true
			}
		}
		if !ambiguous || round == 1 {
			return nil, true
		}
		if n.budget(time.Second) < time.Second {
			return nil, false // no time to look again: settled later
		}
		time.Sleep(time.Second)
	}
}

// budget bounds a wait of a membership change: during another fault, the
// change must not hold that fault up past its planned end (n.until), so it
// gets what is left of the hold, but at least a second; an outcome it
// cannot learn in time is settled after the heal (reconcile).
func (n *nemesis) budget(d time.Duration) time.Duration {
	if n.until.IsZero() {
		return d
	}
	return max(min(d, time.Until(n.until)), time.Second)
}

// memberFault makes the membership change f (the nemesis's inject).
func (n *nemesis) memberFault(f Fault, rec *FaultRecord) {
	n.reconcile(n.budget(5 * time.Second))
	if len(n.unresolved()) > 0 {
		n.skip(rec, "an earlier membership change is still unresolved")
		return
	}
	initial := n.e.cfg.Members
	switch f.Kind {
	case AddMember:
		if size := n.e.clusterSize(); size >= maxMembers(initial) {
			n.skip(rec, fmt.Sprintf("the cluster has %d members, the most it may have", size))
			return
		}
		j, _ := n.add(rec, f.Learner, 0)
		rec.Targets = n.e.member(j).name
	case RemoveMember, RemoveLeader:
		if size := n.e.clusterSize(); size <= minMembers(initial) {
			n.skip(rec, fmt.Sprintf("the cluster has %d members, the fewest it may have", size))
			return
		}
		var i int
		if f.Kind == RemoveLeader {
			i = n.leader()
			for deadline := time.Now().Add(n.budget(5 * time.Second)); i < 0 && time.Now().Before(deadline); i = n.leader() {
				time.Sleep(100 * time.Millisecond)
			}
			if i < 0 || n.e.state(i) != stateServing {
				n.skip(rec, "no leader")
				return
			}
			rec.Note = strings.TrimSpace(rec.Note + " (leader " + n.e.member(i).name + ")")
		} else {
			// A follower: the target, moved off the leader.
			ts := resolve(append([]Target{LeaderTarget}, f.Targets...), n.leader(), n.e.serving(), f.Step)
			if len(ts) < 2 {
				n.skip(rec, "no follower")
				return
			}
			i = ts[1]
		}
		rec.Targets = n.e.member(i).name
		n.remove(rec, i, minMembers(initial))
	case Replace:
		ts := resolve(f.Targets, n.leader(), n.e.serving(), f.Step)
		if len(ts) == 0 {
			n.skip(rec, "no member")
			return
		}
		i := ts[0]
		if f.Targets[0] == LeaderTarget {
			rec.Note = strings.TrimSpace(rec.Note + " (leader " + n.e.member(i).name + ")")
		}
		rec.Targets = n.e.member(i).name
		if f.Dead {
			n.kill(i)
			n.replaceKilled[i] = true
			n.note(rec, "killed -9 first")
		}
		if !n.remove(rec, i, minMembers(initial)-1) {
			if f.Dead && n.e.state(i) == stateServing {
				n.restart(i)
				n.note(rec, "restarted")
			}
			return
		}
		if j, ok := n.add(rec, f.Learner, 0); ok {
			rec.Targets += "->" + n.e.member(j).name
		} else {
			n.deficit = append(n.deficit, f.Step)
			n.note(rec, "the new member will be added after the faults in progress end")
		}
	}
}

func (n *nemesis) note(rec *FaultRecord, format string, args ...any) {
	rec.Note = strings.TrimSpace(rec.Note + "; " + fmt.Sprintf(format, args...))
	rec.Note = strings.TrimPrefix(rec.Note, "; ")
}

func (n *nemesis) skip(rec *FaultRecord, why string) {
	n.mstats.skipped++
	n.note(rec, "skipped: %s", why)
}

// add prepares a new member, adds it (as a learner if learner) and starts
// it. A refused addition is retried for patience; it returns the member's
// index and whether the cluster took it.
func (n *nemesis) add(rec *FaultRecord, learner bool, patience time.Duration) (int, bool) {
	c := n.e.Cluster
	m := c.NewMember(fmt.Sprintf("m%d", len(c.Members)+1))
	idx, err := n.e.addMember(m, stateAdding)
	if err != nil {
		n.e.T.Fatal(err)
	}
	kind := cond(learner, "learner", "voter")
	deadline := time.Now().Add(patience)
	for {
		var resp *pb.MemberAddResponse
		err := n.call(nil, func(ctx context.Context, cl pb.ClusterClient) (err error) {
			resp, err = cl.MemberAdd(ctx, &pb.MemberAddRequest{PeerURLs: []string{m.PeerURL}, IsLearner: learner})
			return err
		})
		if errors.Is(err, errNoMember) {
			if time.Now().Before(deadline) {
				time.Sleep(500 * time.Millisecond)
				continue
			}
			c.Forget(m)
			n.e.setState(idx, stateNotAdded)
			n.mstats.refused++
			n.note(rec, "add %s: no member to ask", m.Name)
			return idx, false
		}
		if err == nil {
			n.added(rec, idx, resp.GetMember().GetID(), kind)
			return idx, true
		}
		found, known := n.findMember(0, m.PeerURL, 5*time.Second, !refusal(err))
		switch {
		case found != nil:
			n.note(rec, "add %s answered %q, yet it took effect", m.Name, errText(err))
			n.added(rec, idx, found.ID, kind)
			return idx, true
		case !known:
			n.e.setState(idx, stateAddUnknown)
			n.pendingStep[idx] = rec.Step
			n.note(rec, "add %s answered %q; outcome unknown for now", m.Name, errText(err))
			return idx, false
		case time.Now().Before(deadline):
			time.Sleep(time.Second)
			continue
		}
		c.Forget(m)
		n.e.setState(idx, stateNotAdded)
		n.mstats.refused++
		n.note(rec, "add %s %s: %s", m.Name, cond(refusal(err), "refused", "failed (not in the member list)"), errText(err))
		return idx, false
	}
}

var errNoMember = errors.New("no member to ask")

// call makes a membership call through via (the leader if it is up), not
// through the members in exclude; a call that could not even reach its
// member (nothing was sent: a member just restarted, not listening yet) is
// made again through the next one. Without a member to ask at all it
// fails with errNoMember.
func (n *nemesis) call(exclude []int, f func(ctx context.Context, cl pb.ClusterClient) error) error {
	tried := slices.Clone(exclude)
	err := errNoMember
	for {
		v := n.via(tried...)
		if v < 0 {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), n.budget(memberCallTimeout))
		err = f(ctx, pb.NewClusterClient(n.e.member(v).conn))
		cancel()
		if err == nil || writeOutcome(err) != Failed || status.Code(err) != codes.Unavailable {
			return err
		}
		tried = append(tried, v)
	}
}

// added starts a member the cluster took, with ID id.
func (n *nemesis) added(rec *FaultRecord, idx int, id uint64, kind string) {
	mi := n.e.member(idx)
	mi.m.ID = id
	n.e.Cluster.Net.SetID(mi.name, id)
	// A network cut in progress cuts the newcomer off too.
	for j := range n.isolated {
		n.e.Cluster.Net.CutBoth(mi.name, n.e.member(j).name)
	}
	n.e.setState(idx, stateJoining)
	n.note(rec, "added %s (%x) as a %s", mi.name, id, kind)
	mi.m.Start()
	n.addedAt[idx] = time.Now()
	n.addRec[idx] = rec.Step
	n.mstats.added++
}

// remove takes member i out of the cluster unless that leaves fewer than
// floor members; it reports whether the member is gone.
func (n *nemesis) remove(rec *FaultRecord, i, floor int) bool {
	mi := n.e.member(i)
	if size := n.e.clusterSize(); size-1 < floor {
		n.skip(rec, fmt.Sprintf("removing %s would leave %d members, fewer than %d", mi.name, size-1, floor))
		return false
	}
	prev := n.e.state(i)
	n.e.setState(i, stateLeaving)
	err := n.call([]int{i}, func(ctx context.Context, cl pb.ClusterClient) error {
		_, err := cl.MemberRemove(ctx, &pb.MemberRemoveRequest{ID: mi.m.ID})
		return err
	})
	if err != nil {
		found, known := n.findMember(mi.m.ID, "", 5*time.Second, !refusal(err))
		switch {
		case !known:
			n.pendingStep[i] = rec.Step
			n.note(rec, "remove %s answered %q; outcome unknown for now", mi.name, errText(err))
			return false
		case found != nil:
			n.e.setState(i, prev)
			n.mstats.refused++
			n.note(rec, "remove %s %s: %s", mi.name, cond(refusal(err), "refused", "failed (still in the member list)"), errText(err))
			return false
		}
		n.note(rec, "remove %s answered %q, yet it took effect", mi.name, errText(err))
	}
	n.removed(rec, i)
	return true
}

// removed records that member i left the cluster.
func (n *nemesis) removed(rec *FaultRecord, i int) {
	mi := n.e.member(i)
	n.e.Cluster.Forget(mi.m)
	n.e.setState(i, stateRemoved)
	n.removedAt[i] = time.Now()
	n.mstats.removed++
	if n.killed[i] {
		n.exits[i] = "killed -9 before its removal"
	} else {
		n.exits[i] = "" // to be seen
	}
	delete(n.slow, i)
	n.note(rec, "removed %s", mi.name)
}

// unresolved lists the members whose addition or removal has an unknown
// outcome.
func (n *nemesis) unresolved() []int {
	var out []int
	for _, i := range n.e.inState(stateAddUnknown, stateLeaving) {
		out = append(out, i)
	}
	return out
}

// reconcile settles the membership changes with unknown outcomes from the
// member list, if it can be read within patience.
func (n *nemesis) reconcile(patience time.Duration) {
	pending := n.unresolved()
	if len(pending) == 0 {
		return
	}
	list := n.memberList(patience)
	if list == nil {
		return
	}
	for _, i := range pending {
		mi := n.e.member(i)
		var found *pb.Member
		for _, m := range list.Members {
			if mi.m.ID != 0 && m.ID == mi.m.ID || slices.Contains(m.PeerURLs, mi.m.PeerURL) {
				found = m
			}
		}
		rec := &FaultRecord{Step: n.pendingStep[i], Kind: "settled", Targets: mi.name, Start: n.e.Rec.Now()}
		delete(n.pendingStep, i)
		switch st := n.e.state(i); {
		case st == stateAddUnknown && found != nil:
			n.added(rec, i, found.ID, cond(found.IsLearner, "learner", "voter"))
		case st == stateAddUnknown:
			n.e.Cluster.Forget(mi.m)
			n.e.setState(i, stateNotAdded)
			n.note(rec, "never added")
		case found == nil:
			n.removed(rec, i)
		default:
			n.e.setState(i, stateServing)
			n.note(rec, "not removed")
			if n.killed[i] && n.replaceKilled[i] {
				n.restart(i)
			}
		}
		rec.End = n.e.Rec.Now()
		n.records = append(n.records, *rec)
		n.e.logf("membership: %s", rec.describe())
	}
}

// pollJoining moves the joining members that have become started voters,
// caught up with the cluster, into the clients' rotation.
func (n *nemesis) pollJoining() {
	joining := n.e.inState(stateJoining)
	if len(joining) == 0 {
		return
	}
	v := n.via()
	if v < 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	list, err := pb.NewClusterClient(n.e.member(v).conn).MemberList(ctx, &pb.MemberListRequest{Linearizable: true})
	cancel()
	if err != nil {
		return
	}
	for _, i := range joining {
		mi := n.e.member(i)
		for _, m := range list.Members {
			if m.ID != mi.m.ID || m.Name == "" || m.IsLearner {
				continue
			}
			// A member publishes its name before it has caught up: it
			// serves once it holds the revision the list was read at.
			if st, err := mi.m.Status(); err == nil && st.GetHeader().GetRevision() >= list.GetHeader().GetRevision() {
				n.e.setState(i, stateServing)
				n.e.logf("membership: %s (added by #%d) serves after %v", mi.name, n.addRec[i], time.Since(n.addedAt[i]).Round(10*time.Millisecond))
			}
		}
	}
}

// collectExits notes how removed members that were running ended.
func (n *nemesis) collectExits() {
	for i, res := range n.exits {
		if res != "" {
			continue
		}
		m := n.e.member(i).m
		if m.Running() {
			continue
		}
		if err := m.Wait(time.Second); err != nil {
			n.exits[i] = "exited: " + err.Error()
		} else {
			n.exits[i] = "exit 0"
		}
		n.e.logf("membership: removed %s: %s, %v after its removal", m.Name, n.exits[i], time.Since(n.removedAt[i]).Round(10*time.Millisecond))
	}
}

// restoreSize adds members for replacements whose new member could not be
// added when they were made.
func (n *nemesis) restoreSize(patience time.Duration) {
	for len(n.deficit) > 0 && len(n.unresolved()) == 0 && n.e.clusterSize() < minMembers(n.e.cfg.Members) {
		step := n.deficit[0]
		rec := FaultRecord{Step: step, Kind: string(AddMember), Start: n.e.Rec.Now(), Note: fmt.Sprintf("(completes replace #%d)", step)}
		i, ok := n.add(&rec, false, patience)
		rec.Targets = n.e.member(i).name
		rec.End = n.e.Rec.Now()
		n.records = append(n.records, rec)
		n.e.logf("membership: %s", rec.describe())
		if !ok {
			return
		}
		n.deficit = n.deficit[1:]
	}
	if n.e.clusterSize() >= minMembers(n.e.cfg.Members) {
		n.deficit = nil
	}
}

// settle ends the membership's transitions once the faults are over: it
// settles unknown outcomes, completes replacements, waits for new members
// to serve and for removed ones to exit (killing those that do not).
func (n *nemesis) settle() {
	n.reconcile(20 * time.Second)
	n.restoreSize(30 * time.Second)
	deadline := time.Now().Add(joinPatience)
	for len(n.e.inState(stateJoining)) > 0 && time.Now().Before(deadline) {
		n.checkAlive()
		n.pollJoining()
		time.Sleep(250 * time.Millisecond)
	}
	for _, i := range n.e.inState(stateJoining) {
		n.membershipProblems = append(n.membershipProblems, fmt.Sprintf("%s, added by #%d, did not become a started voter within %v of the faults' end", n.e.member(i).name, n.addRec[i], joinPatience))
	}
	deadline = time.Now().Add(exitPatience)
	for {
		n.collectExits()
		waiting := false
		for _, res := range n.exits {
			waiting = waiting || res == ""
		}
		if !waiting || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for i, res := range n.exits {
		if res == "" {
			m := n.e.member(i).m
			n.exits[i] = fmt.Sprintf("still running %v after the faults' end; killed", exitPatience)
			m.Kill()
		}
	}
}

// finalMembership records the membership at the end: the members serving,
// each one's own member list, and how removed members ended.
func (n *nemesis) finalMembership(f *FinalState) {
	f.Members = nil
	for _, i := range n.e.serving() {
		f.Members = append(f.Members, n.e.member(i).name)
	}
	names := map[uint64]string{}
	for _, mi := range n.e.allMembers() {
		if mi.m.ID != 0 {
			names[mi.m.ID] = mi.name
		}
	}
	describe := func(list *pb.MemberListResponse) []string {
		var out []string
		for _, m := range list.Members {
			s := names[m.ID]
			if s == "" {
				s = "?" + strconv.FormatUint(m.ID, 16)
			}
			if m.Name == "" {
				s += " (not started)"
			} else if m.Name != names[m.ID] {
				s += " (named " + m.Name + ")"
			}
			if m.IsLearner {
				s += " (learner)"
			}
			out = append(out, s)
		}
		sort.Strings(out)
		return out
	}
	want := slices.Clone(f.Members)
	sort.Strings(want)
	f.Listed = map[string][]string{}
	for _, i := range n.e.serving() {
		mi := n.e.member(i)
		deadline := time.Now().Add(10 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			list, err := pb.NewClusterClient(mi.conn).MemberList(ctx, &pb.MemberListRequest{})
			cancel()
			if err == nil {
				f.Listed[mi.name] = describe(list)
			} else {
				f.Listed[mi.name] = []string{"error: " + errText(err)}
			}
			if slices.Equal(f.Listed[mi.name], want) || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	f.Removed = map[string]string{}
	for i, res := range n.exits {
		f.Removed[n.e.member(i).name] = res
	}
	f.MembershipProblems = slices.Clone(n.membershipProblems)
}
