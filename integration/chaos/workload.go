package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "github.com/cairnkv/cairn/api/etcdserverpb"
	"github.com/cairnkv/cairn/api/mvccpb"
)

// Keys of the workload. Everything it writes is under Prefix, so the
// watchers on Prefix see every revision of the run.
const (
	Prefix      = "/chaos/"
	prefixEnd   = "/chaos0" // Prefix with its last byte incremented
	KVPrefix    = "/chaos/kv/"
	KeptKey     = "/chaos/lease/kept"
	ShortPrefix = "/chaos/lease/short/"
	probePrefix = "/chaos/probe/"
)

// Lease parameters.
const (
	keptTTL        = 10 // seconds
	keepAliveEvery = 500 * time.Millisecond
	shortTTL       = 2 // seconds
	shortEvery     = 1200 * time.Millisecond
)

// ModelKeys returns the n keys of the register workload.
func ModelKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("%sk%d", KVPrefix, i)
	}
	return keys
}

// dial opens a client connection to one member that retries a lost
// connection quickly (gRPC's default backoff grows to two minutes).
func dial(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 500 * time.Millisecond},
			MinConnectTimeout: time.Second,
		}))
}

// writeOutcome classifies a failed write. Only errors that prove the
// request was never proposed, or was refused by the state machine, are
// clean failures; anything else (timeouts, "leader changed", "no leader",
// a connection lost after the request went out) may hide a write that
// took effect, and is unknown.
func writeOutcome(err error) Outcome {
	st, ok := status.FromError(err)
	if !ok {
		return Unknown
	}
	switch st.Code() {
	case codes.InvalidArgument, codes.NotFound, codes.OutOfRange, codes.ResourceExhausted,
		codes.PermissionDenied, codes.Unauthenticated, codes.Unimplemented, codes.AlreadyExists:
		return Failed
	case codes.Unavailable:
		// gRPC failed fast: the connection was down, nothing was sent.
		if m := st.Message(); strings.Contains(m, "Error while dialing") || strings.Contains(m, "connection refused") {
			return Failed
		}
	}
	return Unknown
}

func kvOf(kv *mvccpb.KeyValue) KV {
	if kv == nil {
		return KV{}
	}
	return KV{Exists: true, Value: string(kv.Value), Version: kv.Version}
}

// client is one worker of the register workload.
type client struct {
	e        *Env
	id       int
	rng      *rand.Rand
	member   int
	seq      int
	lastSeen map[string]KV
}

func (c *client) run(ctx context.Context) {
	for ctx.Err() == nil {
		in := c.next()
		c.member = c.e.pick(c.member) // never a member that left or is still joining
		op := c.e.do(ctx, c.id, c.member, in)
		if op.Outcome != OK {
			c.member = c.e.nextServing(c.member)
		}
		c.learn(op)
	}
}

// next picks the next operation: 40% reads, 25% puts, 23% CAS, 12%
// deletes, on a random key. A CAS expects what this client last saw of the
// key, by value or by version (version 0 creates a missing key).
func (c *client) next() Input {
	key := c.e.keys[c.rng.IntN(len(c.e.keys))]
	c.seq++
	value := fmt.Sprintf("c%d-%d", c.id, c.seq)
	switch r := c.rng.IntN(100); {
	case r < 40:
		return Input{Kind: Get, Key: key}
	case r < 65:
		return Input{Kind: Put, Key: key, Value: value}
	case r < 88:
		in := Input{Kind: CAS, Key: key, Value: value, CmpVersion: true}
		if last := c.lastSeen[key]; last.Exists {
			if c.rng.IntN(2) == 0 {
				in.CmpVersion, in.Expect = false, last.Value
			} else {
				in.ExpectVersion = last.Version
			}
		}
		return in
	default:
		return Input{Kind: Delete, Key: key}
	}
}

// learn remembers the key's state from an answer, for the next CAS.
func (c *client) learn(op Op) {
	if op.Outcome != OK {
		return
	}
	in, out := op.Input, op.Output
	switch {
	case in.Kind == Get || in.Kind == CAS && !out.Succeeded:
		c.lastSeen[in.Key] = out.KV
	case in.Kind == Put || in.Kind == CAS:
		v := int64(1)
		if out.KV.Exists {
			v = out.KV.Version + 1
		}
		c.lastSeen[in.Key] = KV{Exists: true, Value: in.Value, Version: v}
	case in.Kind == Delete:
		c.lastSeen[in.Key] = KV{}
	}
}

// do runs one register operation against a member and records it.
func (e *Env) do(ctx context.Context, clientID, member int, in Input) Op {
	mi := e.member(member)
	kv := pb.NewKVClient(mi.conn)
	op := Op{Client: clientID, Member: mi.name, Input: in}
	cctx, cancel := context.WithTimeout(ctx, e.cfg.OpTimeout)
	defer cancel()
	var out Output
	var err error
	op.Call = e.Rec.Now()
	switch in.Kind {
	case Get:
		var resp *pb.RangeResponse
		if resp, err = kv.Range(cctx, &pb.RangeRequest{Key: []byte(in.Key)}); err == nil {
			out.Revision = resp.GetHeader().GetRevision()
			if len(resp.Kvs) > 0 {
				out.KV = kvOf(resp.Kvs[0])
			}
		}
	case Put:
		var resp *pb.PutResponse
		if resp, err = kv.Put(cctx, &pb.PutRequest{Key: []byte(in.Key), Value: []byte(in.Value), PrevKv: true}); err == nil {
			out.Revision = resp.GetHeader().GetRevision()
			out.KV = kvOf(resp.PrevKv)
		}
	case CAS:
		cmp := &pb.Compare{Result: pb.Compare_EQUAL, Key: []byte(in.Key)}
		if in.CmpVersion {
			cmp.Target, cmp.TargetUnion = pb.Compare_VERSION, &pb.Compare_Version{Version: in.ExpectVersion}
		} else {
			cmp.Target, cmp.TargetUnion = pb.Compare_VALUE, &pb.Compare_Value{Value: []byte(in.Expect)}
		}
		var resp *pb.TxnResponse
		resp, err = kv.Txn(cctx, &pb.TxnRequest{
			Compare: []*pb.Compare{cmp},
			Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(in.Key), Value: []byte(in.Value), PrevKv: true}}}},
			Failure: []*pb.RequestOp{{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte(in.Key)}}}},
		})
		if err == nil {
			out.Revision = resp.GetHeader().GetRevision()
			out.Succeeded = resp.Succeeded
			if len(resp.Responses) != 1 {
				err = fmt.Errorf("txn answered %d responses", len(resp.Responses))
				break
			}
			if resp.Succeeded {
				out.KV = kvOf(resp.Responses[0].GetResponsePut().GetPrevKv())
			} else if kvs := resp.Responses[0].GetResponseRange().GetKvs(); len(kvs) > 0 {
				out.KV = kvOf(kvs[0])
			}
		}
	case Delete:
		var resp *pb.DeleteRangeResponse
		if resp, err = kv.DeleteRange(cctx, &pb.DeleteRangeRequest{Key: []byte(in.Key), PrevKv: true}); err == nil {
			out.Revision = resp.GetHeader().GetRevision()
			if resp.Deleted > 0 && len(resp.PrevKvs) > 0 {
				out.KV = kvOf(resp.PrevKvs[0])
			} else if resp.Deleted > 0 {
				err = errors.New("delete answered deleted=1 without prev_kv")
			}
		}
	}
	op.Return = e.Rec.Now()
	op.Output = out
	op.Outcome = OK
	if err != nil {
		op.Err = err.Error()
		op.Output = Output{}
		op.Outcome = writeOutcome(err)
		if in.Kind == Get {
			op.Outcome = Failed // a read that failed changed nothing
		}
	}
	e.Rec.Add(op)
	return op
}

// watcher is one long-lived watch on Prefix from revision 1. When its
// stream breaks it reconnects, to the next member, from the revision after
// the last it saw.
type watcher struct {
	e      *Env
	member int

	mu      sync.Mutex
	log     WatchLog
	lastRev int64
	resps   int
}

func (w *watcher) last() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lastRev
}

func (w *watcher) snapshot() WatchLog {
	w.mu.Lock()
	defer w.mu.Unlock()
	l := w.log
	l.Events = append([]WatchEvent(nil), w.log.Events...)
	l.Problems = append([]string(nil), w.log.Problems...)
	return l
}

func (w *watcher) problem(format string, args ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.log.Problems = append(w.log.Problems, fmt.Sprintf(format, args...))
}

func (w *watcher) run(ctx context.Context) {
	for {
		err := w.stream(ctx)
		if ctx.Err() != nil {
			return
		}
		_ = err // a broken stream is expected under faults; only its consequences are checked
		w.mu.Lock()
		w.log.Reconnects++
		w.mu.Unlock()
		w.member = w.e.nextServing(w.member)
		if !sleepCtx(ctx, 100*time.Millisecond) {
			return
		}
	}
}

func (w *watcher) stream(ctx context.Context) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w.member = w.e.pick(w.member)
	mi := w.e.member(w.member)
	stream, err := pb.NewWatchClient(mi.watchConn).Watch(sctx)
	if err != nil {
		return err
	}
	start := w.last() + 1
	if err := stream.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{
		Key: []byte(Prefix), RangeEnd: []byte(prefixEnd), StartRevision: start,
	}}}); err != nil {
		return err
	}
	name := mi.name
	for {
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		at := w.e.Rec.Now()
		if resp.CompactRevision != 0 {
			w.problem("stream from %s compacted at %d (compaction is off)", name, resp.CompactRevision)
			return errors.New("compacted")
		}
		if resp.Canceled {
			// A cancel by a member that is going away is a broken stream
			// like any other; one with a reason is worth reporting.
			if resp.CancelReason != "" {
				w.problem("stream from %s canceled: %s", name, resp.CancelReason)
			}
			return errors.New("canceled")
		}
		if len(resp.Events) == 0 {
			continue
		}
		w.mu.Lock()
		for _, ev := range resp.Events {
			we := WatchEvent{Rev: ev.Kv.ModRevision, Key: string(ev.Kv.Key), At: at, Member: name, Resp: w.resps}
			if ev.Type == mvccpb.Event_DELETE {
				we.Delete = true
			} else {
				we.Value, we.Version = string(ev.Kv.Value), ev.Kv.Version
			}
			w.log.Events = append(w.log.Events, we)
			w.lastRev = max(w.lastRev, we.Rev)
		}
		w.resps++
		w.mu.Unlock()
	}
}

// keeper holds one lease alive for the whole run, with a key on it.
type keeper struct {
	e      *Env
	id     int64
	member int

	mu      sync.Mutex
	lastOK  int64
	maxGap  int64
	granted int64
	lost    string
}

// start grants the lease and puts the key; it retries until both are
// acknowledged (there are no faults yet).
func (k *keeper) start(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for k.id == 0 {
		if time.Now().After(deadline) {
			return errors.New("could not grant the kept-alive lease")
		}
		op := k.e.leaseOp(ctx, -2, k.member, Input{Kind: LeaseGrant, Key: KeptKey}, keptTTL)
		if op.Outcome == OK {
			k.id = op.Input.Lease
			k.granted = op.Return
		} else {
			k.member = k.e.nextServing(k.member)
		}
	}
	for i := 0; ; i++ {
		if time.Now().After(deadline) {
			return errors.New("could not put the kept-alive key")
		}
		op := k.e.leaseOp(ctx, -2, k.member, Input{Kind: LeasePut, Key: KeptKey, Value: fmt.Sprintf("kept-%d", i), Lease: k.id}, 0)
		if op.Outcome == OK {
			break
		}
		k.member = k.e.nextServing(k.member)
	}
	k.lastOK = k.e.Rec.Now()
	return nil
}

func (k *keeper) run(ctx context.Context) {
	t := time.NewTicker(keepAliveEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		k.member = k.e.pick(k.member)
		op := k.e.leaseOp(ctx, -2, k.member, Input{Kind: KeepAlive, Key: KeptKey, Lease: k.id}, 0)
		if ctx.Err() != nil {
			return
		}
		if op.Outcome != OK {
			k.member = k.e.nextServing(k.member)
			continue
		}
		k.mu.Lock()
		k.maxGap = max(k.maxGap, op.Return-k.lastOK)
		k.lastOK = op.Return
		if op.Output.KV.Version <= 0 && k.lost == "" {
			k.lost = fmt.Sprintf("keep-alive through %s answered TTL %d at %v: the lease is gone", op.Member, op.Output.KV.Version, time.Duration(op.Return))
		}
		k.mu.Unlock()
	}
}

// gap is the longest time without an acknowledged keep-alive, up to now.
func (k *keeper) gap() int64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	return max(k.maxGap, k.e.Rec.Now()-k.lastOK)
}

// shortLeases grants short leases with a key on each, and revokes every
// other one; the rest expire.
type shortLeases struct {
	e      *Env
	member int
	n      int
}

func (s *shortLeases) run(ctx context.Context) {
	t := time.NewTicker(shortEvery)
	defer t.Stop()
	next := func(op Op) {
		if op.Outcome != OK {
			s.member = s.e.nextServing(s.member)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.n++
		s.member = s.e.pick(s.member)
		key := fmt.Sprintf("%s%d", ShortPrefix, s.n)
		g := s.e.leaseOp(ctx, -3, s.member, Input{Kind: LeaseGrant, Key: key}, shortTTL)
		next(g)
		if g.Outcome != OK {
			continue
		}
		p := s.e.leaseOp(ctx, -3, s.member, Input{Kind: LeasePut, Key: key, Value: fmt.Sprintf("short-%d", s.n), Lease: g.Input.Lease}, 0)
		next(p)
		if s.n%2 == 0 && sleepCtx(ctx, 300*time.Millisecond) {
			next(s.e.leaseOp(ctx, -3, s.member, Input{Kind: LeaseRevoke, Key: key, Lease: g.Input.Lease}, 0))
		}
	}
}

// leaseOp runs and records one lease operation. For a grant, ttl is the
// TTL and the granted ID comes back in Input.Lease; for a keep-alive the
// TTL answered comes back in Output.KV.Version.
func (e *Env) leaseOp(ctx context.Context, clientID, member int, in Input, ttl int64) Op {
	mi := e.member(member)
	conn := mi.conn
	op := Op{Client: clientID, Member: mi.name, Input: in}
	cctx, cancel := context.WithTimeout(ctx, e.cfg.OpTimeout)
	defer cancel()
	var out Output
	var err error
	op.Call = e.Rec.Now()
	switch in.Kind {
	case LeaseGrant:
		var resp *pb.LeaseGrantResponse
		if resp, err = pb.NewLeaseClient(conn).LeaseGrant(cctx, &pb.LeaseGrantRequest{TTL: ttl}); err == nil {
			op.Input.Lease = resp.ID
			out.Revision = resp.GetHeader().GetRevision()
			if resp.Error != "" {
				err = errors.New(resp.Error)
			}
		}
	case LeasePut:
		var resp *pb.PutResponse
		if resp, err = pb.NewKVClient(conn).Put(cctx, &pb.PutRequest{Key: []byte(in.Key), Value: []byte(in.Value), Lease: in.Lease}); err == nil {
			out.Revision = resp.GetHeader().GetRevision()
		}
	case LeaseRevoke:
		var resp *pb.LeaseRevokeResponse
		if resp, err = pb.NewLeaseClient(conn).LeaseRevoke(cctx, &pb.LeaseRevokeRequest{ID: in.Lease}); err == nil {
			out.Revision = resp.GetHeader().GetRevision()
		}
	case KeepAlive:
		var stream pb.Lease_LeaseKeepAliveClient
		if stream, err = pb.NewLeaseClient(conn).LeaseKeepAlive(cctx); err == nil {
			if err = stream.Send(&pb.LeaseKeepAliveRequest{ID: in.Lease}); err == nil {
				var resp *pb.LeaseKeepAliveResponse
				if resp, err = stream.Recv(); err == nil {
					out.KV.Version = resp.TTL
					out.Revision = resp.GetHeader().GetRevision()
				}
			}
			_ = stream.CloseSend()
		}
	}
	op.Return = e.Rec.Now()
	op.Output = out
	op.Outcome = OK
	if err != nil {
		op.Err = err.Error()
		op.Outcome = writeOutcome(err)
		if in.Kind == KeepAlive {
			op.Outcome = Failed // a keep-alive is retried; its outcome matters only through the gap
		}
	}
	e.Rec.Add(op)
	return op
}

// sleepCtx waits d or until ctx ends; it reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
