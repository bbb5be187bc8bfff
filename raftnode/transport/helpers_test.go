package transport

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testCluster = 0xc1

// eventually fails the test unless cond becomes true within 10 seconds.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// fakeRaft records what the transport hands to the local node.
type fakeRaft struct {
	store   *fakeStore
	block   chan struct{} // if set, Process waits for it (or ctx)
	discard bool          // count messages without keeping them (benchmark)
	count   atomic.Uint64

	mu          sync.Mutex
	msgs        []*raftpb.Message
	arrived     []time.Time
	snapOrderOK bool // every MsgSnap was processed after its data was stored
	unreachable map[uint64]int
	snapReports []snapReport
}

type snapReport struct {
	id     uint64
	status raft.SnapshotStatus
}

func newFakeRaft(store *fakeStore) *fakeRaft {
	return &fakeRaft{store: store, snapOrderOK: true, unreachable: make(map[uint64]int)}
}

func (r *fakeRaft) Process(ctx context.Context, m *raftpb.Message) error {
	if r.block != nil {
		select {
		case <-r.block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	r.count.Add(1)
	if r.discard {
		return nil
	}
	stored := m.GetType() != raftpb.MsgSnap || r.store.storedOK(m.GetSnapshot().GetMetadata().GetIndex())
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, m)
	r.arrived = append(r.arrived, time.Now())
	r.snapOrderOK = r.snapOrderOK && stored
	return nil
}

func (r *fakeRaft) ReportUnreachable(id uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.unreachable[id]++
}

func (r *fakeRaft) ReportSnapshot(id uint64, status raft.SnapshotStatus) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.snapReports = append(r.snapReports, snapReport{id, status})
}

func (r *fakeRaft) messages() []*raftpb.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*raftpb.Message(nil), r.msgs...)
}

func (r *fakeRaft) unreachableCount(id uint64) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.unreachable[id]
}

func (r *fakeRaft) reports() []snapReport {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]snapReport(nil), r.snapReports...)
}

// hasIndex reports whether a message with the given type and index arrived.
func (r *fakeRaft) hasIndex(typ raftpb.MessageType, index uint64) bool {
	for _, m := range r.messages() {
		if m.GetType() == typ && m.GetIndex() == index {
			return true
		}
	}
	return false
}

// fakeStore produces and records snapshot data. The data is a deterministic
// pattern, so the receiver can check it by hash.
type fakeStore struct {
	size   int64         // bytes WriteSnapshot produces
	failAt int64         // if > 0, WriteSnapshot fails after this many bytes
	holdAt int64         // if > 0, WriteSnapshot waits for hold after this many bytes
	hold   chan struct{} // see holdAt

	mu       sync.Mutex
	received []received
}

type received struct {
	index uint64
	n     int64
	sum   [sha256.Size]byte
	err   error
}

var errDiskOnFire = errors.New("disk on fire")

func patternByte(i int64) byte { return byte(i ^ i>>8 ^ i>>16) }

func patternSum(size int64) [sha256.Size]byte {
	h := sha256.New()
	_ = writePattern(h, size, 0, 0, nil)
	var sum [sha256.Size]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

func writePattern(w io.Writer, size, failAt, holdAt int64, hold chan struct{}) error {
	buf := make([]byte, 32<<10)
	for off := int64(0); off < size; {
		n := min(int64(len(buf)), size-off)
		if failAt > 0 && off >= failAt {
			return errDiskOnFire
		}
		if holdAt > 0 && off >= holdAt && hold != nil {
			<-hold
			hold = nil
		}
		for i := range n {
			buf[i] = patternByte(off + i)
		}
		if _, err := w.Write(buf[:n]); err != nil {
			return err
		}
		off += n
	}
	return nil
}

func (s *fakeStore) WriteSnapshot(m *raftpb.Message, w io.Writer) error {
	return writePattern(w, s.size, s.failAt, s.holdAt, s.hold)
}

func (s *fakeStore) ReceiveSnapshot(m *raftpb.Message, r io.Reader) error {
	h := sha256.New()
	n, err := io.Copy(h, r)
	rec := received{index: m.GetSnapshot().GetMetadata().GetIndex(), n: n, err: err}
	copy(rec.sum[:], h.Sum(nil))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.received = append(s.received, rec)
	return err
}

func (s *fakeStore) receivedAll() []received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]received(nil), s.received...)
}

func (s *fakeStore) storedOK(index uint64) bool {
	for _, r := range s.receivedAll() {
		if r.index == index && r.err == nil {
			return true
		}
	}
	return false
}

// logBuf collects a node's log lines.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuf) count(s string) int { return strings.Count(l.String(), s) }

// node is one member: a transport served by a real HTTP server on 127.0.0.1.
type node struct {
	id     uint64
	raft   *fakeRaft
	store  *fakeStore
	tr     *Transport
	addr   string
	url    string
	logs   *logBuf
	srv    *http.Server
	served chan struct{}
	once   sync.Once
}

// fastConfig shortens the backoff so tests converge quickly, and lengthens the
// handshake timeout so a loaded machine does not fail dials spuriously.
func fastConfig(c *Config) {
	c.MinBackoff = 5 * time.Millisecond
	c.MaxBackoff = 100 * time.Millisecond
	c.DialTimeout = 10 * time.Second
}

func startNode(t testing.TB, id uint64, opts ...func(*Config)) *node {
	return startNodeAt(t, id, "127.0.0.1:0", opts...)
}

func startNodeAt(t testing.TB, id uint64, addr string, opts ...func(*Config)) *node {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	n := &node{id: id, store: &fakeStore{}, logs: &logBuf{}, served: make(chan struct{})}
	n.raft = newFakeRaft(n.store)
	cfg := Config{
		ID: id, ClusterID: testCluster, Raft: n.raft, Snapshots: n.store,
		Logger: slog.New(slog.NewTextHandler(n.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	fastConfig(&cfg)
	for _, o := range opts {
		o(&cfg)
	}
	n.tr, err = New(cfg)
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/raft/", n.tr.Handler())
	n.srv = &http.Server{Handler: mux, ErrorLog: log.New(n.logs, "http: ", 0)}
	n.addr = ln.Addr().String()
	n.url = "http://" + n.addr
	go func() {
		defer close(n.served)
		_ = n.srv.Serve(ln)
	}()
	t.Cleanup(func() {
		n.stop()
		if t.Failed() {
			t.Logf("log of member %x:\n%s", id, n.logs)
		}
	})
	return n
}

// stop stops the transport, then the server; safe to call twice.
func (n *node) stop() {
	n.once.Do(func() {
		n.tr.Stop()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = n.srv.Shutdown(ctx)
		_ = n.srv.Close()
		<-n.served
	})
}

// connect makes every node a peer of every other.
func connect(nodes ...*node) {
	for _, a := range nodes {
		for _, b := range nodes {
			if a != b {
				a.tr.AddPeer(b.id, []string{b.url})
			}
		}
	}
}

func stats(t testing.TB, n *node, peer uint64) PeerStats {
	t.Helper()
	s, ok := n.tr.Stats(peer)
	if !ok {
		t.Fatalf("member %x has no peer %x", n.id, peer)
	}
	return s
}

func appMsg(from, to, index uint64, data []byte) *raftpb.Message {
	return &raftpb.Message{
		Type: raftpb.MsgApp.Enum(), From: proto.Uint64(from), To: proto.Uint64(to),
		Term: proto.Uint64(1), LogTerm: proto.Uint64(1), Index: proto.Uint64(index), Commit: proto.Uint64(index),
		Entries: []*raftpb.Entry{{Term: proto.Uint64(1), Index: proto.Uint64(index + 1), Data: data}},
	}
}

func snapMsg(from, to, index uint64) *raftpb.Message {
	return &raftpb.Message{
		Type: raftpb.MsgSnap.Enum(), From: proto.Uint64(from), To: proto.Uint64(to), Term: proto.Uint64(2),
		Snapshot: &raftpb.Snapshot{Metadata: &raftpb.SnapshotMetadata{
			Index: proto.Uint64(index), Term: proto.Uint64(2),
			ConfState: &raftpb.ConfState{Voters: []uint64{1, 2, 3}},
		}},
	}
}

// indices returns the Index of each message, in arrival order.
func indices(msgs []*raftpb.Message) []uint64 {
	out := make([]uint64, len(msgs))
	for i, m := range msgs {
		out[i] = m.GetIndex()
	}
	return out
}

func seq(from, to uint64) []uint64 {
	var out []uint64
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

// rawStream opens a message stream to addr by hand, as peer from, and
// returns the connection after the 101 (or fails the test).
func rawStream(t *testing.T, addr string, from uint64) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "POST /raft/stream HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: %s\r\n"+
		"X-Cairn-Cluster-Id: %x\r\nX-Cairn-From: %x\r\nX-Cairn-To: 2\r\n\r\n", streamProtocol, testCluster, from)
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	// Read the status line and headers byte by byte so no frame byte is
	// swallowed by a buffer.
	var head []byte
	one := make([]byte, 1)
	for !bytes.HasSuffix(head, []byte("\r\n\r\n")) {
		if _, err := conn.Read(one); err != nil {
			t.Fatalf("handshake: %v (read %q)", err, head)
		}
		head = append(head, one[0])
	}
	if !bytes.HasPrefix(head, []byte("HTTP/1.1 101 ")) {
		t.Fatalf("handshake answered %q", head)
	}
	return conn
}

// waitClosed fails the test unless the peer closes conn within 10 seconds.
func waitClosed(t *testing.T, conn net.Conn) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("connection still open")
	}
}

func frame(m *raftpb.Message) []byte {
	b, err := appendFrame(nil, m, proto.Size(m))
	if err != nil {
		panic(err)
	}
	return b
}

var (
	errEOF           = io.EOF
	errUnexpectedEOF = io.ErrUnexpectedEOF
)

func bufioReader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }
