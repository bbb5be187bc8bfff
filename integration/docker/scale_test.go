package docker

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// The scale step: from three members to five and back with etcdctl
// member add and remove, while writers run.

// scale adds cairn4, then cairn5 (each: `etcdctl member add`, then `compose
// up -d` with the printed --initial-cluster, then wait until it serves),
// hands leadership to cairn4, and removes cairn5, then cairn4 while it
// leads, each by its ID from `etcdctl member list`; a removed member must
// exit by itself with status 0, and refuse to start again on its volume.
// w keeps writing through cairn1..3 throughout; each new member also has
// writers of its own from when it serves until after its removal. scale
// returns the puts those acknowledged.
func (c *cluster) scale(w *writers) map[string]string {
	began := time.Now()
	var added []*member
	var ws []*writers
	for _, name := range []string{"cairn4", "cairn5"} {
		m := c.addMember(name, added)
		added = append(added, m)
		mw := c.startWriters([]*member{m}, "docker/s/"+name+"/", 2)
		ws = append(ws, mw)
		mw.waitAcked(c, 20)
		w.waitAcked(c, 50)
	}
	five := append(slices.Clone(c.members), added...)
	lead := c.waitLeader("all five to agree on a leader", five, 30*time.Second)
	c.logf("five members (grown in %.1fs), leader %s", time.Since(began).Seconds(), lead)

	m4, m5 := added[0], added[1]
	c.removeMember(m5, without(five, m5))
	w.waitAcked(c, 50)
	// Remove the leader: it must hand leadership over first.
	c.moveLeader(m4, without(five, m5))
	c.removeMember(m4, c.members)
	w.waitAcked(c, 50)
	c.logf("back to three members %.1fs after the first member add", time.Since(began).Seconds())

	// A removed member does not come back on its old data.
	c.refuseRestart(m5)

	acked := map[string]string{}
	for i, mw := range ws {
		a, fails := mw.stop()
		c.logWriters("writers through "+added[i].service, a, fails)
		if len(a) == 0 {
			c.t.Errorf("no put through %s was acknowledged while it was a member", added[i])
		}
		maps.Copy(acked, a)
	}
	return acked
}

// peerURL is a service's peer URL in the compose file.
func peerURL(service string) string { return "http://" + service + "-peer:2380" }

// addMember admits service to the cluster (cairn1..3 and the already added
// members) with etcdctl member add, starts its container with the
// --initial-cluster member add printed, and waits until it serves and has
// caught up. It returns a client for it.
func (c *cluster) addMember(service string, added []*member) *member {
	ctx := c.ctx
	before := append(slices.Clone(c.members), added...)
	began := time.Now()
	var out string
	c.waitFor("etcdctl member add "+service, 30*time.Second, func() (bool, string) {
		o, err := c.runEtcdctl(c.members, 10*time.Second, "member", "add", service, "--peer-urls="+peerURL(service))
		if err != nil && !unappliedChange(o) {
			c.t.Fatal(err)
		}
		out = o
		return err == nil, errText(err)
	})
	a, err := parseMemberAdd(out)
	if err != nil {
		c.t.Fatal(err)
	}
	// member add prints every member, the new one included, name=peer URL.
	want := []string{service + "=" + peerURL(service)}
	for _, m := range before {
		want = append(want, m.service+"="+peerURL(m.service))
	}
	if got := strings.Split(a.initialCluster, ","); a.name != service || a.state != "existing" || !sameSet(got, want) {
		c.t.Fatalf("etcdctl member add %s printed name %q, state %q, initial cluster %v; want %q, existing, %v", service, a.name, a.state, got, service, want)
	}
	c.logf("member add %s: ID %x, initial cluster %s", service, a.id, a.initialCluster)

	port := c.p.upService(ctx, service, strings.ToUpper(service)+"_INITIAL_CLUSTER="+a.initialCluster)
	m := c.dial(service, port)
	m.id = a.id
	ctr := c.p.container(ctx, service)
	c.logf("started %s (client port %d)", service, port)
	c.waitFor(service+" to pass etcdctl endpoint health", 60*time.Second, func() (bool, string) {
		_, err := c.runEtcdctl([]*member{m}, 2*time.Second, "endpoint", "health")
		if err == nil || ctx.Err() != nil {
			return err == nil, errText(err)
		}
		if st := c.p.exitCode(ctx, ctr); strings.HasPrefix(st, "false") {
			logs, _ := c.p.docker(ctx, "logs", "--tail", "30", ctr)
			c.t.Fatalf("%s exited while joining (running, exit code: %s); its log:\n%s", service, st, logs)
		}
		return false, err.Error()
	})
	ms := append(slices.Clone(before), m)
	c.waitRejoined(m, ms)
	if st, err := c.status(m); err != nil || st.GetHeader().GetMemberId() != a.id {
		c.t.Fatalf("%s: status %v, %v; want member ID %x (from member add)", service, st, err, a.id)
	}
	if n := c.count(m, "docker/a/", true); n != 100 {
		c.t.Fatalf("serializable range on the new %s: %d of the first 100 keys", service, n)
	}
	c.waitMembers(ms)
	c.logf("%s serves and has caught up, %.1fs after member add", service, time.Since(began).Seconds())
	return m
}

// waitMembers waits until etcdctl member list names exactly ms, each
// started and a voter (a follower's list may lag the change for a moment).
func (c *cluster) waitMembers(ms []*member) {
	c.t.Helper()
	want := map[uint64]string{}
	for _, m := range ms {
		want[m.id] = m.service
	}
	c.waitFor(fmt.Sprintf("etcdctl member list to name %v, all started voters", ms), 20*time.Second, func() (bool, string) {
		list, err := c.memberList()
		if err != nil {
			return false, err.Error()
		}
		got := map[uint64]string{}
		for _, l := range list {
			if !l.started || l.learner || l.peerURLs != peerURL(l.name) {
				return false, fmt.Sprintf("%v", list)
			}
			got[l.id] = l.name
		}
		return maps.Equal(got, want), fmt.Sprintf("%v", list)
	})
}

// moveLeader hands leadership to m with etcdctl move-leader (it finds the
// leader among the endpoints ms) and waits until all of ms agree.
func (c *cluster) moveLeader(m *member, ms []*member) {
	out, err := c.runEtcdctl(ms, 10*time.Second, "move-leader", fmt.Sprintf("%x", m.id))
	if err != nil {
		c.t.Fatal(err)
	}
	c.waitFor(m.service+" to lead", 10*time.Second, func() (bool, string) {
		l := c.waitLeader("a leader after move-leader", ms, 10*time.Second)
		return l == m, fmt.Sprintf("%s leads", l)
	})
	c.logf("etcdctl move-leader: %s", strings.TrimSpace(out))
}

// removeMember removes m with etcdctl member remove, by the ID member list
// gives it, and waits until m's container has exited by itself with status
// 0 and the rest agree on a leader among them.
func (c *cluster) removeMember(m *member, rest []*member) {
	ctx := c.ctx
	list, err := c.memberList()
	if err != nil {
		c.t.Fatal(err)
	}
	i := slices.IndexFunc(list, func(l listedMember) bool { return l.name == m.service })
	if i < 0 {
		c.t.Fatalf("etcdctl member list does not name %s: %v", m, list)
	}
	if list[i].id != m.id {
		c.t.Fatalf("etcdctl member list gives %s ID %x; member add gave %x", m, list[i].id, m.id)
	}
	leading := false
	if st, err := c.status(m); err == nil && st.GetLeader() == m.id {
		leading = true
	}
	ctr := c.p.container(ctx, m.service)
	began := time.Now()
	c.waitFor(fmt.Sprintf("etcdctl member remove %x (%s)", m.id, m), 30*time.Second, func() (bool, string) {
		o, err := c.runEtcdctl(c.members, 10*time.Second, "member", "remove", fmt.Sprintf("%x", m.id))
		if err != nil && !unappliedChange(o) {
			c.t.Fatal(err)
		}
		return err == nil, errText(err)
	})
	removed := time.Since(began)
	var st string
	c.waitFor(m.service+"'s container to exit by itself", 30*time.Second, func() (bool, string) {
		st = c.p.exitCode(ctx, ctr)
		return strings.HasPrefix(st, "false"), "running, exit code: " + st
	})
	exited := time.Since(began)
	logs, err := c.p.docker(ctx, "logs", "--tail", "20", ctr)
	if err != nil {
		c.t.Fatal(err)
	}
	if st != "false 0" {
		c.t.Fatalf("removed %s exited with %q, want a clean exit (false 0); its log:\n%s", m, st, logs)
	}
	if !strings.Contains(logs, "the member has been permanently removed from the cluster") {
		c.t.Errorf("removed %s exited 0 without saying it was removed; its log:\n%s", m, logs)
	}
	lead := c.waitLeader(fmt.Sprintf("%v to agree on a leader after removing %s", rest, m), rest, 30*time.Second)
	c.waitMembers(rest)
	how := "a follower"
	if leading {
		how = "the leader"
	}
	c.logf("member remove %s (%s): acknowledged in %.1fs, it exited 0 after %.1fs; leader %s", m, how, removed.Seconds(), exited.Seconds(), lead)
}

// refuseRestart starts a removed member's container again, on its volume:
// it must refuse, with exit status 1.
func (c *cluster) refuseRestart(m *member) {
	ctx := c.ctx
	ctr := c.p.container(ctx, m.service)
	if _, err := c.p.composeAll(ctx, "start", m.service); err != nil {
		c.t.Fatal(err)
	}
	var st string
	c.waitFor("the removed "+m.service+" to refuse to start", 30*time.Second, func() (bool, string) {
		st = c.p.exitCode(ctx, ctr)
		return strings.HasPrefix(st, "false"), "running, exit code: " + st
	})
	logs, err := c.p.docker(ctx, "logs", "--tail", "5", ctr)
	if err != nil {
		c.t.Fatal(err)
	}
	if st != "false 1" {
		c.t.Fatalf("removed %s started again on its data: exit code %q, want false 1; its log:\n%s", m, st, logs)
	}
	last := strings.TrimSpace(logs)
	if i := strings.LastIndexByte(last, '\n'); i >= 0 {
		last = last[i+1:]
	}
	c.logf("started the removed %s again: it refused (exit 1): %s", m, last)
}

func sameSet(a, b []string) bool {
	return slices.Equal(slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b)))
}
