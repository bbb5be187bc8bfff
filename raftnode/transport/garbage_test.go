package transport

import (
	"bufio"
	"encoding/binary"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
)

// TestGarbageIsRejected throws malformed input at B's peer port while A keeps
// a valid stream to it. Each attempt is refused or closed with a log line,
// and A's traffic keeps flowing.
func TestGarbageIsRejected(t *testing.T) {
	a, b := startNode(t, 1), startNode(t, 2)
	connect(a, b)
	next := uint64(0)
	checkA := func(t *testing.T) {
		t.Helper()
		next++
		index := next
		a.tr.Send([]*raftpb.Message{appMsg(1, 2, index, nil)})
		eventually(t, "A's message", func() bool { return b.raft.hasIndex(raftpb.MsgApp, index) })
	}
	checkA(t)

	httpTests := []struct {
		name, method, path string
		headers            map[string]string
		body               string
		want               int
		log                string
	}{
		{"wrong cluster", "POST", streamPath, map[string]string{headerClusterID: "beef", headerFrom: "9", headerTo: "2"}, "", 412, "cluster ID mismatch"},
		{"wrong target", "POST", streamPath, map[string]string{headerClusterID: "c1", headerFrom: "9", headerTo: "3"}, "", 412, "target member mismatch"},
		{"no headers", "POST", streamPath, nil, "junk", 400, "bad X-Cairn-Cluster-Id header"},
		{"bad sender", "POST", streamPath, map[string]string{headerClusterID: "c1", headerFrom: "zz", headerTo: "2"}, "", 400, "bad X-Cairn-From header"},
		{"sender is self", "POST", streamPath, map[string]string{headerClusterID: "c1", headerFrom: "2", headerTo: "2"}, "", 400, "bad X-Cairn-From header"},
		{"junk body, no upgrade", "POST", streamPath, map[string]string{headerClusterID: "c1", headerFrom: "9", headerTo: "2"}, "\x00\x00\x00\x05junkjunk", 426, "stream without upgrade"},
		{"GET", "GET", streamPath, nil, "", 405, ""},
		{"unknown path", "POST", "/raft/nope", nil, "", 404, ""},
		{"snapshot, wrong cluster", "POST", snapshotPath, map[string]string{headerClusterID: "1", headerFrom: "9", headerTo: "2"}, "junk", 412, "cluster ID mismatch"},
	}
	for _, tt := range httpTests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, b.url+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tt.headers {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.want)
			}
			if tt.log != "" && !strings.Contains(b.logs.String(), tt.log) {
				t.Fatalf("log lacks %q", tt.log)
			}
			checkA(t)
		})
	}
	http.DefaultClient.CloseIdleConnections()

	t.Run("junk over TCP", func(t *testing.T) {
		conn, err := net.Dial("tcp", b.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_, _ = conn.Write([]byte("\x16\x03\x01\x02\x00garbage\r\n\xff\xfe\r\n\r\n"))
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		status, _ := bufio.NewReader(conn).ReadString('\n')
		if !strings.Contains(status, "400") {
			t.Fatalf("answer %q, want 400", status)
		}
		waitClosed(t, conn)
		checkA(t)
	})

	lenPrefix := func(n uint32, rest ...byte) []byte { return append(binary.BigEndian.AppendUint32(nil, n), rest...) }
	streamTests := []struct {
		name string
		from uint64
		send []byte
		log  string
	}{
		{"junk frames", 9, []byte("this is not a frame, it is junk from a confused client"), "frame too large"},
		{"oversized length", 9, lenPrefix(64<<20 + 1), "frame too large"},
		{"max length, then nothing", 9, lenPrefix(0xffffffff), "frame too large"},
		{"bad protobuf", 9, lenPrefix(6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), "malformed frame"},
		{"wrong To", 9, frame(appMsg(9, 3, 1, nil)), "misaddressed message: to 3"},
		{"From differs from header", 9, frame(appMsg(8, 2, 1, nil)), "misaddressed message: from 8"},
		{"local message type", 9, frame(&raftpb.Message{Type: raftpb.MsgHup.Enum(), From: ptr(uint64(9)), To: ptr(uint64(2))}), "local message type"},
		{"MsgSnap on stream", 9, frame(snapMsg(9, 2, 5)), "MsgSnap on a message stream"},
		{"cut mid-frame", 9, lenPrefix(100, 1, 2, 3), "unexpected EOF"},
	}
	for _, tt := range streamTests {
		t.Run(tt.name, func(t *testing.T) {
			before := b.logs.count("closing inbound stream")
			conn := rawStream(t, b.addr, tt.from)
			if _, err := conn.Write(tt.send); err != nil {
				t.Fatal(err)
			}
			if tt.name == "cut mid-frame" {
				conn.Close()
			} else {
				waitClosed(t, conn)
			}
			eventually(t, "log line", func() bool { return b.logs.count("closing inbound stream") > before })
			if !strings.Contains(b.logs.String(), tt.log) {
				t.Fatalf("log lacks %q", tt.log)
			}
			checkA(t)
		})
	}

	for _, m := range b.raft.messages() {
		if m.GetFrom() != 1 {
			t.Fatalf("garbage reached Process: %v", m)
		}
	}
	if got := stats(t, a, 2).Connects; got != 1 {
		t.Fatalf("A's stream was reopened %d times; garbage from others must not disturb it", got-1)
	}
}

func ptr[T any](v T) *T { return &v }

// TestNewStreamReplacesOld checks that a second stream from the same sender
// closes the first, and that the second carries messages.
func TestNewStreamReplacesOld(t *testing.T) {
	b := startNode(t, 2)
	first := rawStream(t, b.addr, 9)
	eventually(t, "first stream registered", func() bool { return b.logs.count("inbound stream open") == 1 })
	second := rawStream(t, b.addr, 9)
	waitClosed(t, first)
	if _, err := second.Write(frame(appMsg(9, 2, 42, nil))); err != nil {
		t.Fatal(err)
	}
	eventually(t, "message on second stream", func() bool { return b.raft.hasIndex(raftpb.MsgApp, 42) })
	if strings.Contains(b.logs.String(), "level=WARN") {
		t.Fatalf("replacement logged a warning:\n%s", b.logs)
	}
}
