package integration

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	pb "github.com/cairnkv/cairn/api/etcdserverpb"
	"github.com/cairnkv/cairn/integration/harness"
)

// exitCode is the process's exit status from Member.Wait's error.
func exitCode(t *testing.T, err error) int {
	t.Helper()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	}
	t.Fatalf("member did not exit: %v", err)
	return -1
}

func logOf(t *testing.T, m *harness.Member) string {
	t.Helper()
	b, err := os.ReadFile(m.LogPath())
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Joining goes wrong in ways an operator can make: starting a member that
// was never added, or with an --initial-cluster that is not the cluster's.
// Each stops the new process with one clear line and leaves the cluster
// serving. A member removed from the cluster exits by itself (status 0)
// and refuses to come back with its old data.
func TestMembershipMistakes(t *testing.T) {
	c := harness.NewCluster(t, 3, harness.Options{})
	lead := c.WaitLeader()
	cluster := pb.NewClusterClient(lead.Conn())
	kv := pb.NewKVClient(lead.Conn())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	put := func(key string) {
		t.Helper()
		if _, err := kv.Put(ctx, &pb.PutRequest{Key: []byte(key), Value: []byte("v")}); err != nil {
			t.Fatalf("put %s: %v", key, err)
		}
	}

	t.Run("never added", func(t *testing.T) {
		m := c.NewMember("stranger")
		c.Forget(m) // never part of the cluster
		m.Start()
		if code := exitCode(t, m.Wait(30*time.Second)); code != 1 {
			t.Fatalf("exit code %d, want 1", code)
		}
		if log := logOf(t, m); !strings.Contains(log, "has no member with peer URLs "+"["+m.PeerURL+"]") {
			t.Fatalf("log does not say why:\n%s", log)
		}
		put("after-stranger")
	})

	t.Run("wrong initial cluster", func(t *testing.T) {
		m := c.NewMember("m4")
		resp, err := cluster.MemberAdd(ctx, &pb.MemberAddRequest{PeerURLs: []string{m.PeerURL}})
		if err != nil {
			t.Fatalf("member add: %v", err)
		}
		// The member add output lists four members; give it only two.
		args := []string{"--name", "m4", "--data-dir", m.Dir + "-wrong",
			"--listen-client-urls", m.ClientURL, "--advertise-client-urls", m.ClientURL,
			"--listen-peer-urls", m.ListenPeerURL, "--initial-advertise-peer-urls", m.PeerURL,
			"--initial-cluster", "m1=" + c.Members[0].PeerURL + ",m4=" + m.PeerURL,
			"--initial-cluster-state", "existing"}
		code, out := harness.ExitCode(t, 30*time.Second, args...)
		if code != 1 || !strings.Contains(out, "--initial-cluster has 2 members, the cluster 4") {
			t.Fatalf("exit %d, output:\n%s", code, out)
		}
		put("after-wrong-cluster")
		// Added but never started: a member that is down may be removed.
		if _, err := cluster.MemberRemove(ctx, &pb.MemberRemoveRequest{ID: resp.GetMember().GetID()}); err != nil {
			t.Fatalf("remove the member that never started: %v", err)
		}
		c.Forget(m)
	})

	t.Run("removed member", func(t *testing.T) {
		lead := c.WaitLeader()
		var victim *harness.Member
		for _, m := range c.Running() {
			if m != lead {
				victim = m
			}
		}
		id, err := victim.MemberID()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pb.NewClusterClient(lead.Conn()).MemberRemove(ctx, &pb.MemberRemoveRequest{ID: id}); err != nil {
			t.Fatalf("remove %s: %v", victim.Name, err)
		}
		c.Forget(victim)
		if code := exitCode(t, victim.Wait(30*time.Second)); code != 0 {
			t.Fatalf("removed member exited with %d, want 0", code)
		}
		if log := logOf(t, victim); !strings.Contains(log, "the member has been permanently removed from the cluster") {
			t.Fatalf("removed member's log does not say so:\n%s", log)
		}
		victim.Start()
		if code := exitCode(t, victim.Wait(30*time.Second)); code != 1 {
			t.Fatalf("restart of a removed member exited with %d, want 1", code)
		}
		if log := logOf(t, victim); !strings.Contains(log, "add it again with `member add` and start it on an empty data dir") {
			t.Fatalf("restart of a removed member does not say what to do:\n%s", log)
		}
		put("after-removal")
		list, err := pb.NewClusterClient(lead.Conn()).MemberList(ctx, &pb.MemberListRequest{Linearizable: true})
		if err != nil || len(list.GetMembers()) != 2 {
			t.Fatalf("member list after the removal: %v, %v", list.GetMembers(), err)
		}
	})
}
