package transport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

func TestSnapshotArrivesIntact(t *testing.T) {
	tests := []struct {
		name string
		size int64
	}{
		{"empty", 0},
		{"one byte", 1},
		{"exact chunks", 3 * snapChunkSize},
		{"9MiB plus", 9<<20 + 12345},
	}
	a, b := startNode(t, 1), startNode(t, 2)
	connect(a, b)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			index := uint64(100 + i)
			a.store.size = tt.size
			a.tr.Send([]*raftpb.Message{snapMsg(1, 2, index)})
			eventually(t, "snapshot report", func() bool { return len(a.raft.reports()) == i+1 })
			if r := a.raft.reports()[i]; r != (snapReport{2, raft.SnapshotFinish}) {
				t.Fatalf("report %+v, want SnapshotFinish for 2", r)
			}
			rec := b.store.receivedAll()[i]
			if rec.err != nil || rec.index != index || rec.n != tt.size || rec.sum != patternSum(tt.size) {
				t.Fatalf("received %d bytes (err %v) for index %d, want %d intact bytes", rec.n, rec.err, rec.index, tt.size)
			}
			eventually(t, "MsgSnap processed", func() bool {
				for _, m := range b.raft.messages() {
					if m.GetType() == raftpb.MsgSnap && m.GetSnapshot().GetMetadata().GetIndex() == index {
						return true
					}
				}
				return false
			})
		})
	}
	b.raft.mu.Lock()
	defer b.raft.mu.Unlock()
	if !b.raft.snapOrderOK {
		t.Fatal("a MsgSnap reached Process before its data was stored")
	}
	if s := stats(t, a, 2); s.SnapshotsSent != uint64(len(tests)) || s.SnapshotsFailed != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestSnapshotCutBySender(t *testing.T) {
	a, b := startNode(t, 1), startNode(t, 2)
	connect(a, b)
	a.store.size, a.store.failAt = 8<<20, 3<<20
	a.tr.Send([]*raftpb.Message{snapMsg(1, 2, 100)})
	eventually(t, "failure report", func() bool { return len(a.raft.reports()) == 1 })
	if r := a.raft.reports()[0]; r.status != raft.SnapshotFailure {
		t.Fatalf("report %+v, want SnapshotFailure", r)
	}
	eventually(t, "store saw the cut", func() bool { return len(b.store.receivedAll()) == 1 })
	if rec := b.store.receivedAll()[0]; rec.err == nil || rec.n > 3<<20 {
		t.Fatalf("store got %d bytes and no error", rec.n)
	}
	b.stop() // waits for the handler
	if len(b.raft.messages()) != 0 {
		t.Fatal("MsgSnap processed after a cut stream")
	}
	if !strings.Contains(a.logs.String(), errDiskOnFire.Error()) {
		t.Fatal("sender did not log the root cause")
	}
}

// snapBody returns a well-formed snapshot request body.
func snapBody(t *testing.T, m *raftpb.Message, size int64) []byte {
	var buf bytes.Buffer
	sw := newSnapWriter(&buf, nil)
	if err := sw.message(m, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := writePattern(sw, size, 0, 0, nil); err != nil {
		t.Fatal(err)
	}
	if err := sw.finish(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestSnapshotRejectsDamagedStreams(t *testing.T) {
	const size = 200 << 10
	good := snapBody(t, snapMsg(9, 2, 7), size)
	msgLen := 4 + int(binary.BigEndian.Uint32(good))
	edit := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	tests := []struct {
		name     string
		body     []byte
		reaches  bool   // the store sees the data (and must fail)
		wantLog  string // in the receiver's log
		clusterH string
	}{
		{"bad checksum", edit(func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), true, "checksum mismatch", ""},
		{"flipped data byte", edit(func(b []byte) []byte { b[msgLen+100] ^= 0x40; return b }), true, "checksum mismatch", ""},
		{"truncated", good[:len(good)/2], true, "unexpected EOF", ""},
		{"no checksum", good[:len(good)-4], true, "unexpected EOF", ""},
		{"trailing bytes", append(bytes.Clone(good), "extra"...), false, "bytes after the checksum", ""},
		{"oversized chunk", edit(func(b []byte) []byte { binary.BigEndian.PutUint32(b[msgLen:], 2<<20); return b }), true, "frame too large", ""},
		{"garbage", []byte(strings.Repeat("not a snapshot ", 100)), false, "frame too large", ""},
		{"bad message", append([]byte{0, 0, 0, 3, 0xff, 0xff, 0xff}, good[msgLen:]...), false, "malformed frame", ""},
		{"not MsgSnap", snapBody(t, appMsg(9, 2, 1, nil), 10), false, "not a MsgSnap", ""},
		{"wrong To", snapBody(t, snapMsg(9, 3, 7), 10), false, "misaddressed", ""},
		{"wrong cluster", good, false, "cluster ID mismatch", "ee"},
	}
	b := startNode(t, 2)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(b.store.receivedAll())
			req, err := http.NewRequest(http.MethodPost, b.url+snapshotPath, bytes.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			cluster := fmt.Sprintf("%x", testCluster)
			if tt.clusterH != "" {
				cluster = tt.clusterH
			}
			req.Header.Set(headerClusterID, cluster)
			req.Header.Set(headerFrom, "9")
			req.Header.Set(headerTo, "2")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode/100 != 4 {
				t.Fatalf("status %s, want 4xx", resp.Status)
			}
			got := b.store.receivedAll()[before:]
			if tt.reaches && (len(got) != 1 || got[0].err == nil) {
				t.Fatalf("store results %+v, want one failure", got)
			}
			if !strings.Contains(b.logs.String(), tt.wantLog) {
				t.Fatalf("log lacks %q", tt.wantLog)
			}
		})
	}
	// A good snapshot still goes through.
	resp, err := postSnapshot(b.url, good)
	if err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("good snapshot: %v %v", resp, err)
	}
	b.stop()
	http.DefaultClient.CloseIdleConnections()
	msgs := b.raft.messages()
	if len(msgs) != 1 || msgs[0].GetType() != raftpb.MsgSnap {
		t.Fatalf("processed %v, want only the good MsgSnap", msgs)
	}
}

func postSnapshot(url string, body []byte) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodPost, url+snapshotPath, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set(headerClusterID, fmt.Sprintf("%x", testCluster))
	req.Header.Set(headerFrom, "9")
	req.Header.Set(headerTo, "2")
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		resp.Body.Close()
	}
	return resp, err
}

func TestSnapReaderFinish(t *testing.T) {
	body := snapBody(t, snapMsg(9, 2, 7), 1000)
	tests := []struct {
		name    string
		consume int // data bytes read before finish; -1 = to EOF
		wantErr bool
	}{
		{"read to EOF", -1, false},
		{"read exactly the data", 1000, false},
		{"stopped early", 10, true},
		{"read nothing", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sr := &snapReader{r: bufioReader(body)}
			if _, err := sr.message(1 << 20); err != nil {
				t.Fatal(err)
			}
			if tt.consume < 0 {
				var sink bytes.Buffer
				if _, err := sink.ReadFrom(sr); err != nil {
					t.Fatal(err)
				}
			} else if tt.consume > 0 {
				buf := make([]byte, tt.consume)
				for n := 0; n < tt.consume; {
					k, err := sr.Read(buf[n:])
					if err != nil {
						t.Fatal(err)
					}
					n += k
				}
			}
			if err := sr.finish(); (err != nil) != tt.wantErr {
				t.Fatalf("finish: %v, want error %v", err, tt.wantErr)
			}
		})
	}
}

func TestFrameReaderLimits(t *testing.T) {
	m := appMsg(1, 2, 3, []byte("x"))
	good := frame(m)
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"good", good, nil},
		{"clean end", nil, errEOF},
		{"cut header", good[:2], errUnexpectedEOF},
		{"cut body", good[:len(good)-1], errUnexpectedEOF},
		{"too large", []byte{0x7f, 0xff, 0xff, 0xff}, ErrFrameTooLarge},
		{"garbage", []byte{0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff}, ErrBadFrame},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fr := frameReader{r: bufioReader(tt.in), max: 1 << 20}
			got, err := fr.next()
			if !errors.Is(err, tt.want) {
				t.Fatalf("next: %v, want %v", err, tt.want)
			}
			if err == nil && !proto.Equal(got, m) {
				t.Fatalf("decoded %v, want %v", got, m)
			}
		})
	}
}
