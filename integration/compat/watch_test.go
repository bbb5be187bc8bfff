package compat

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

const watchWait = 10 * time.Second

// watch opens a watch that ends with the test, and waits for its "created"
// answer so that later writes are surely seen.
func watch(t *testing.T, cli *clientv3.Client, key string, opts ...clientv3.OpOption) (clientv3.WatchChan, context.Context) {
	t.Helper()
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(context.Background()))
	t.Cleanup(cancel)
	wch := cli.Watch(wctx, key, append(opts, clientv3.WithCreatedNotify())...)
	resp := nextResponse(t, wch)
	if !resp.Created {
		t.Fatalf("first watch response is not the created one: %+v", resp)
	}
	return wch, wctx
}

// nextResponse returns the next watch response, failing if none comes in
// watchWait or the channel closes.
func nextResponse(t *testing.T, wch clientv3.WatchChan) clientv3.WatchResponse {
	t.Helper()
	select {
	case resp, ok := <-wch:
		if !ok {
			t.Fatalf("watch channel closed unexpectedly")
		}
		if err := resp.Err(); err != nil {
			t.Fatalf("watch response carries an error: %v (%+v)", err, resp)
		}
		return resp
	case <-time.After(watchWait):
		t.Fatalf("no watch response within %v", watchWait)
	}
	panic("unreachable")
}

// nextEvents collects n events, failing on a timeout.
func nextEvents(t *testing.T, wch clientv3.WatchChan, n int) []*clientv3.Event {
	t.Helper()
	var evs []*clientv3.Event
	for len(evs) < n {
		resp := nextResponse(t, wch)
		evs = append(evs, resp.Events...)
	}
	if len(evs) > n {
		t.Fatalf("got %d events, want %d: %s", len(evs), n, eventsString(evs))
	}
	return evs
}

// expectOnly takes the next event and checks it is want. Filtered-out
// events are shown missing by a later event arriving first, never by
// waiting a while.
func expectOnly(t *testing.T, wch clientv3.WatchChan, want string) {
	t.Helper()
	evs := nextEvents(t, wch, 1)
	if got := eventsString(evs); got != want {
		t.Fatalf("got events %s, want %s", got, want)
	}
}

func eventsString(evs []*clientv3.Event) string {
	var parts []string
	for _, ev := range evs {
		s := fmt.Sprintf("%s %s", ev.Type, ev.Kv.Key)
		if ev.Type == mvccpb.PUT {
			s += "=" + string(ev.Kv.Value)
		}
		if ev.PrevKv != nil {
			s += " (prev " + string(ev.PrevKv.Value) + ")"
		}
		parts = append(parts, s)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// testWatch covers etcd's watch semantics as the client sees them.
func testWatch(t *testing.T, e *env) {
	cli := e.cli

	t.Run("Key", func(t *testing.T) {
		p := prefix(t)
		wch, _ := watch(t, cli, p+"k")
		mustPut(t, cli, p+"other", "x")
		rev := mustPut(t, cli, p+"k", "1")
		evs := nextEvents(t, wch, 1)
		if ev := evs[0]; ev.Type != mvccpb.PUT || string(ev.Kv.Key) != p+"k" || string(ev.Kv.Value) != "1" ||
			ev.Kv.ModRevision != rev || ev.Kv.CreateRevision != rev || ev.Kv.Version != 1 || !ev.IsCreate() {
			t.Fatalf("put event: %+v", ev)
		}
		del, err := cli.Delete(ctx(t), p+"k")
		if err != nil {
			t.Fatal(err)
		}
		evs = nextEvents(t, wch, 1)
		if ev := evs[0]; ev.Type != mvccpb.DELETE || string(ev.Kv.Key) != p+"k" || ev.Kv.ModRevision != del.Header.Revision {
			t.Fatalf("delete event: %+v, want a delete at %d", ev, del.Header.Revision)
		}
	})

	t.Run("Prefix", func(t *testing.T) {
		p := prefix(t)
		wch, _ := watch(t, cli, p+"x/", clientv3.WithPrefix())
		mustPut(t, cli, p+"y", "no")
		mustPut(t, cli, p+"x/1", "a")
		mustPut(t, cli, p+"x/2", "b")
		evs := nextEvents(t, wch, 2)
		if got, want := eventsString(evs), fmt.Sprintf("[PUT %sx/1=a, PUT %sx/2=b]", p, p); got != want {
			t.Fatalf("got %s, want %s", got, want)
		}
	})

	t.Run("TxnEventsInOneResponse", func(t *testing.T) {
		p := prefix(t)
		wch, _ := watch(t, cli, p, clientv3.WithPrefix())
		mustPut(t, cli, p+"c", "old")
		nextEvents(t, wch, 1)
		resp, err := cli.Txn(ctx(t)).Then(
			clientv3.OpPut(p+"a", "1"), clientv3.OpPut(p+"b", "2"), clientv3.OpDelete(p+"c"),
		).Commit()
		if err != nil {
			t.Fatal(err)
		}
		wr := nextResponse(t, wch)
		if len(wr.Events) != 3 {
			t.Fatalf("a txn of 3 changes arrived as a response with %d events: %s", len(wr.Events), eventsString(wr.Events))
		}
		for _, ev := range wr.Events {
			if ev.Kv.ModRevision != resp.Header.Revision {
				t.Errorf("event %s at revision %d, want the txn's %d", ev.Kv.Key, ev.Kv.ModRevision, resp.Header.Revision)
			}
		}
		if wr.Header.Revision != resp.Header.Revision {
			t.Errorf("response header revision %d, want %d", wr.Header.Revision, resp.Header.Revision)
		}
		// Likewise a delete of several keys.
		del, err := cli.Delete(ctx(t), p, clientv3.WithPrefix())
		if err != nil || del.Deleted != 2 {
			t.Fatalf("delete prefix: %v %v", err, del)
		}
		if wr := nextResponse(t, wch); len(wr.Events) != 2 {
			t.Fatalf("a delete of 2 keys arrived as a response with %d events", len(wr.Events))
		}
	})

	t.Run("PrevKV", func(t *testing.T) {
		p := prefix(t)
		rev := mustPut(t, cli, p+"k", "v1")
		// From the next revision: without one, the watch starts at the
		// revision its member has applied, which may be before v1's.
		wch, _ := watch(t, cli, p+"k", clientv3.WithPrevKV(), clientv3.WithRev(rev+1))
		mustPut(t, cli, p+"k", "v2")
		if _, err := cli.Delete(ctx(t), p+"k"); err != nil {
			t.Fatal(err)
		}
		evs := nextEvents(t, wch, 2)
		if got, want := eventsString(evs), fmt.Sprintf("[PUT %sk=v2 (prev v1), DELETE %sk (prev v2)]", p, p); got != want {
			t.Fatalf("got %s, want %s", got, want)
		}
		if !evs[0].IsModify() {
			t.Errorf("overwrite is not reported as a modify: %+v", evs[0])
		}
	})

	t.Run("Filters", func(t *testing.T) {
		p := prefix(t)
		noPut, _ := watch(t, cli, p, clientv3.WithPrefix(), clientv3.WithFilterPut())
		noDelete, _ := watch(t, cli, p, clientv3.WithPrefix(), clientv3.WithFilterDelete())
		mustPut(t, cli, p+"a", "1")
		if _, err := cli.Delete(ctx(t), p+"a"); err != nil {
			t.Fatal(err)
		}
		mustPut(t, cli, p+"b", "2")
		expectOnly(t, noPut, fmt.Sprintf("[DELETE %sa]", p))
		expectOnly(t, noDelete, fmt.Sprintf("[PUT %sa=1]", p))
		expectOnly(t, noDelete, fmt.Sprintf("[PUT %sb=2]", p))
		// The delete filter saw no delete: its next event is b's put. The
		// put filter must not yield b's put; prove it with a later delete.
		if _, err := cli.Delete(ctx(t), p+"b"); err != nil {
			t.Fatal(err)
		}
		expectOnly(t, noPut, fmt.Sprintf("[DELETE %sb]", p))
	})

	t.Run("History", func(t *testing.T) {
		p := prefix(t)
		first := mustPut(t, cli, p+"h", "1")
		mustPut(t, cli, p+"h", "2")
		if _, err := cli.Delete(ctx(t), p+"h"); err != nil {
			t.Fatal(err)
		}
		mustPut(t, cli, p+"h", "3")
		wctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		wch := cli.Watch(wctx, p+"h", clientv3.WithRev(first), clientv3.WithPrevKV())
		evs := nextEvents(t, wch, 4)
		if got, want := eventsString(evs), fmt.Sprintf("[PUT %sh=1, PUT %sh=2 (prev 1), DELETE %sh (prev 2), PUT %sh=3]", p, p, p, p); got != want {
			t.Fatalf("replay from %d: got %s, want %s", first, got, want)
		}
		for i, ev := range evs {
			if ev.Kv.ModRevision != first+int64(i) {
				t.Errorf("event %d at revision %d, want %d", i, ev.Kv.ModRevision, first+int64(i))
			}
		}
		// Then live events follow.
		mustPut(t, cli, p+"h", "4")
		expectOnly(t, wch, fmt.Sprintf("[PUT %sh=4 (prev 3)]", p))
	})

	// A long replay keeps each revision's events together, in order.
	t.Run("LongHistory", func(t *testing.T) {
		p := prefix(t)
		const txns, perTxn, singles = 5, 100, 300
		var first int64
		for i := range txns {
			ops := make([]clientv3.Op, perTxn)
			for j := range ops {
				ops[j] = clientv3.OpPut(fmt.Sprintf("%stxn/%d/%03d", p, i, j), strings.Repeat("v", 64))
			}
			resp, err := cli.Txn(ctx(t)).Then(ops...).Commit()
			if err != nil {
				t.Fatal(err)
			}
			if first == 0 {
				first = resp.Header.Revision
			}
		}
		for i := range singles {
			mustPut(t, cli, fmt.Sprintf("%ssingle/%03d", p, i), "v")
		}
		wctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		wch := cli.Watch(wctx, p, clientv3.WithPrefix(), clientv3.WithRev(first))
		want, next := txns*perTxn+singles, first
		for got := 0; got < want; {
			resp := nextResponse(t, wch)
			// Group the response's events by revision: each revision must
			// be whole and come in order.
			for i := 0; i < len(resp.Events); {
				rev := resp.Events[i].Kv.ModRevision
				if rev != next {
					t.Fatalf("after %d events: revision %d, want %d", got, rev, next)
				}
				n := 0
				for i < len(resp.Events) && resp.Events[i].Kv.ModRevision == rev {
					i, n = i+1, n+1
				}
				wantN := 1
				if rev < first+txns {
					wantN = perTxn
				}
				if n != wantN {
					t.Fatalf("revision %d arrived with %d of its %d events in one response", rev, n, wantN)
				}
				got += n
				next++
			}
		}
	})

	// etcd keeps serving a watch stream whose client has half-closed it
	// (sent all its requests); its JSON gateway relies on this, since it
	// closes the send side once the HTTP request body is read.
	t.Run("HalfClosedStream", func(t *testing.T) {
		p := prefix(t)
		sctx, cancel := context.WithTimeout(context.Background(), watchWait)
		defer cancel()
		stream, err := pb.NewWatchClient(cli.ActiveConnection()).Watch(sctx)
		if err != nil {
			t.Fatal(err)
		}
		create := &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{Key: []byte(p + "k")}}}
		if err := stream.Send(create); err != nil {
			t.Fatal(err)
		}
		if err := stream.CloseSend(); err != nil {
			t.Fatal(err)
		}
		created, err := stream.Recv()
		if err != nil || !created.Created {
			t.Fatalf("first answer on a half-closed stream: %v, %v; want created", created, err)
		}
		rev := mustPut(t, cli, p+"k", "v")
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("the server ended a half-closed watch stream instead of sending the put at %d: %v", rev, err)
		}
		if len(resp.Events) != 1 || resp.Events[0].Kv.ModRevision != rev {
			t.Fatalf("got %v, want the put at %d", resp, rev)
		}
	})

	t.Run("Compacted", func(t *testing.T) {
		p := prefix(t)
		old := mustPut(t, cli, p+"c", "1")
		mustPut(t, cli, p+"c", "2")
		compactAt := mustPut(t, cli, p+"c", "3")
		if _, err := cli.Compact(ctx(t), compactAt, clientv3.WithCompactPhysical()); err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		wch := cli.Watch(wctx, p+"c", clientv3.WithRev(old))
		select {
		case resp, ok := <-wch:
			if !ok {
				t.Fatal("watch channel closed without a response")
			}
			if resp.CompactRevision != compactAt {
				t.Errorf("compact revision %d, want %d", resp.CompactRevision, compactAt)
			}
			if err := resp.Err(); !errors.Is(err, rpctypes.ErrCompacted) {
				t.Errorf("Err() = %v, want %v", err, rpctypes.ErrCompacted)
			}
			if !resp.Canceled {
				t.Errorf("the compacted watch is not canceled: %+v", resp)
			}
		case <-time.After(watchWait):
			t.Fatal("no response to a watch from a compacted revision")
		}
		select {
		case resp, ok := <-wch:
			if ok {
				t.Errorf("watch from a compacted revision went on with %+v", resp)
			}
		case <-time.After(watchWait):
			t.Error("the watch channel did not close after the compaction answer")
		}
	})

	t.Run("RequestProgress", func(t *testing.T) {
		p := prefix(t)
		// The server's progress interval is ten minutes; ask for one.
		wch, wctx := watch(t, cli, p+"quiet", clientv3.WithProgressNotify())
		rev := mustPut(t, cli, p+"elsewhere", "x")
		// A progress notification carries the revision of the member the
		// watch is on (as in etcd), which may not have applied the put
		// the moment another member acknowledged it: ask until it has.
		deadline := time.Now().Add(watchWait)
		for {
			if err := cli.RequestProgress(wctx); err != nil {
				t.Fatalf("RequestProgress: %v", err)
			}
			resp := nextResponse(t, wch)
			if !resp.IsProgressNotify() {
				t.Fatalf("got %+v, want a progress notification", resp)
			}
			if resp.Header.Revision >= rev {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("progress at revision %d after %v, want at least %d", resp.Header.Revision, watchWait, rev)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})

	t.Run("Cancel", func(t *testing.T) {
		p := prefix(t)
		wctx, cancel := context.WithCancel(context.Background())
		wch := cli.Watch(wctx, p+"k", clientv3.WithCreatedNotify())
		if resp := nextResponse(t, wch); !resp.Created {
			t.Fatalf("want created, got %+v", resp)
		}
		cancel()
		deadline := time.After(watchWait)
		for {
			select {
			case resp, ok := <-wch:
				if !ok {
					return
				}
				if len(resp.Events) > 0 {
					t.Fatalf("event after cancel: %+v", resp)
				}
			case <-deadline:
				t.Fatal("watch channel still open after its context was canceled")
			}
		}
	})

	t.Run("FutureRevision", func(t *testing.T) {
		p := prefix(t)
		rev := mustPut(t, cli, p+"f", "now")
		wctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		wch := cli.Watch(wctx, p+"f", clientv3.WithRev(rev+2))
		mustPut(t, cli, p+"f", "skipped")
		mustPut(t, cli, p+"f", "seen")
		expectOnly(t, wch, fmt.Sprintf("[PUT %sf=seen]", p))
	})
}
