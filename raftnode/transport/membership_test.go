package transport

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
)

// A member marked removed loses its open stream, is refused with 410 when
// it redials, and its transport reports the removal; the others are served
// as before.
func TestRemovedMemberIsRefused(t *testing.T) {
	var removedBy atomic.Uint64
	a := startNode(t, 1, func(c *Config) { c.OnRemoved = func(peer uint64) { removedBy.Store(peer) } })
	b, c := startNode(t, 2), startNode(t, 3)
	connect(a, b, c)
	a.tr.Send([]*raftpb.Message{appMsg(1, 2, 1, nil)})
	eventually(t, "A's first message at B", func() bool { return b.raft.hasIndex(raftpb.MsgApp, 1) })

	b.tr.MarkRemoved(1)
	eventually(t, "A to learn from B that it was removed", func() bool { return removedBy.Load() == 2 })
	a.tr.Send([]*raftpb.Message{appMsg(1, 2, 2, nil)})
	c.tr.Send([]*raftpb.Message{appMsg(3, 2, 3, nil)})
	eventually(t, "C's message at B", func() bool { return b.raft.hasIndex(raftpb.MsgApp, 3) })
	if b.raft.hasIndex(raftpb.MsgApp, 2) {
		t.Fatal("B processed a message from removed member A")
	}
	if n := b.logs.count("rejected peer request: " + removedMessage); n == 0 {
		t.Fatalf("B did not log the refusal; log:\n%s", b.logs)
	}

	// The snapshot path refuses it too.
	req, err := http.NewRequest(http.MethodPost, b.url+snapshotPath, strings.NewReader("junk"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(headerClusterID, formatID(testCluster))
	req.Header.Set(headerFrom, "1")
	req.Header.Set(headerTo, "2")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusGone {
		t.Fatalf("snapshot from a removed member: %s, want 410 Gone", resp.Status)
	}
}

// A receiver that has not heard of a sender learns its URLs from the
// sender's stream and can answer it; a removed sender is not learned.
func TestUnknownSenderIsLearned(t *testing.T) {
	a := startNode(t, 1)
	a.tr.cfg.URLs = []string{a.url}
	b := startNode(t, 2)
	a.tr.AddPeer(2, []string{b.url}) // B knows nothing of A
	a.tr.Send([]*raftpb.Message{appMsg(1, 2, 1, nil)})
	eventually(t, "A's message at B", func() bool { return b.raft.hasIndex(raftpb.MsgApp, 1) })
	b.tr.Send([]*raftpb.Message{appMsg(2, 1, 2, nil)})
	eventually(t, "B's answer at A", func() bool { return a.raft.hasIndex(raftpb.MsgApp, 2) })

	c := startNode(t, 3)
	c.tr.cfg.URLs = []string{c.url}
	b.tr.MarkRemoved(3)
	c.tr.AddPeer(2, []string{b.url})
	c.tr.Send([]*raftpb.Message{appMsg(3, 2, 3, nil)})
	eventually(t, "B to refuse removed C", func() bool { return b.logs.count("rejected peer request: "+removedMessage) > 0 })
	if _, ok := b.tr.Stats(3); ok {
		t.Fatal("B learned removed member C as a peer")
	}
}
