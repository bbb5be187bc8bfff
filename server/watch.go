package server

import (
	"errors"
	"io"
	"sync"

	"google.golang.org/protobuf/proto"

	pb "github.com/cairnkv/cairn/api/etcdserverpb"
	"github.com/cairnkv/cairn/mvcc/watch"
)

// watchService is etcd's Watch service: one hub stream per gRPC stream,
// many watchers on it.
type watchService struct {
	pb.UnimplementedWatchServer
	s *Server
}

// A watch stream has two goroutines: this handler's, which receives
// requests, and a sender, the only one that writes to the gRPC stream.
// Control answers (created, canceled) reach the sender through ctrl; the
// sender holds back a watcher's events until its "created" answer is out,
// because the hub may produce events the moment Watch returns.
func (w *watchService) Watch(stream pb.Watch_WatchServer) error {
	ws := &watchStream{
		s:        w.s,
		grpc:     stream,
		hub:      w.s.hub.NewStream(),
		ctrl:     make(chan *pb.WatchResponse, 16),
		announce: map[int64]bool{},
		fragment: map[int64]bool{},
		pending:  map[int64][]*pb.WatchResponse{},
		done:     make(chan struct{}),
	}
	defer ws.hub.Close()
	sendErr := make(chan error, 1)
	go func() { sendErr <- ws.sendLoop() }()
	recvErr := make(chan error, 1)
	go func() { recvErr <- ws.recvLoop() }() // ends when the stream does, at the latest when this handler returns
	var err error
	select {
	case err = <-recvErr:
		if errors.Is(err, io.EOF) {
			// A client that half-closes (the JSON gateway does, once it has
			// read the request body) still wants its events: serve until
			// the stream ends, the sender fails or the member stops.
			select {
			case err = <-sendErr:
				sendErr <- err
			case <-stream.Context().Done():
			case <-w.s.stopc:
			}
			err = nil
		}
	case err = <-sendErr:
		sendErr <- err
	case <-w.s.stopc:
		err = errStopped
	}
	close(ws.done)
	if serr := <-sendErr; serr != nil {
		return serr
	}
	return err
}

type watchStream struct {
	s    *Server
	grpc pb.Watch_WatchServer
	hub  *watch.Stream
	ctrl chan *pb.WatchResponse
	done chan struct{}

	mu       sync.Mutex
	announce map[int64]bool // watch IDs whose "created" is not sent yet
	fragment map[int64]bool // watch IDs that accept fragmented responses
	pending  map[int64][]*pb.WatchResponse
}

func (ws *watchStream) recvLoop() error {
	for {
		req, err := ws.grpc.Recv()
		if err != nil {
			return err
		}
		switch r := req.RequestUnion.(type) {
		case *pb.WatchRequest_CreateRequest:
			ws.create(r.CreateRequest)
		case *pb.WatchRequest_CancelRequest:
			id := r.CancelRequest.GetWatchId()
			if err := ws.hub.Cancel(id); err == nil {
				ws.mu.Lock()
				delete(ws.fragment, id)
				ws.mu.Unlock()
				if !ws.control(&pb.WatchResponse{Header: ws.s.header(ws.s.store.Rev()), WatchId: id, Canceled: true}) {
					return nil
				}
			}
		case *pb.WatchRequest_ProgressRequest:
			ws.hub.RequestProgress()
		}
	}
}

// create registers a watcher and queues its "created" answer.
func (ws *watchStream) create(c *pb.WatchCreateRequest) {
	req := watch.Request{
		Key:            c.GetKey(),
		RangeEnd:       c.GetRangeEnd(),
		StartRev:       c.GetStartRevision(),
		PrevKV:         c.GetPrevKv(),
		ProgressNotify: c.GetProgressNotify(),
		WatchID:        c.GetWatchId(),
	}
	for _, f := range c.GetFilters() {
		switch f {
		case pb.WatchCreateRequest_NOPUT:
			req.NoPut = true
		case pb.WatchCreateRequest_NODELETE:
			req.NoDelete = true
		}
	}
	rev := ws.s.store.Rev()
	// Mark the ID before the hub can deliver anything for it; an auto ID is
	// unknown until Watch returns, so hold the stream's events meanwhile.
	ws.mu.Lock()
	id, err := ws.hub.Watch(req)
	if err == nil {
		ws.announce[id] = true
		if c.GetFragment() {
			ws.fragment[id] = true
		}
	}
	ws.mu.Unlock()
	resp := &pb.WatchResponse{Header: ws.s.header(rev), WatchId: id, Created: true}
	if err != nil {
		resp.WatchId, resp.Canceled, resp.CancelReason = -1, true, err.Error()
	}
	ws.control(resp)
}

func (ws *watchStream) control(r *pb.WatchResponse) bool {
	select {
	case ws.ctrl <- r:
		return true
	case <-ws.done:
		return false
	}
}

func (ws *watchStream) sendLoop() error {
	for {
		select {
		case r := <-ws.ctrl:
			if err := ws.grpc.Send(r); err != nil {
				return err
			}
			if r.GetCreated() && !r.GetCanceled() {
				if err := ws.release(r.GetWatchId()); err != nil {
					return err
				}
			}
		case r, ok := <-ws.hub.Chan():
			if !ok {
				return nil
			}
			if err := ws.sendHub(r); err != nil {
				return err
			}
		case <-ws.done:
			return nil
		case <-ws.grpc.Context().Done():
			return nil
		}
	}
}

// release sends the events held back for a watcher whose "created" answer
// just went out.
func (ws *watchStream) release(id int64) error {
	ws.mu.Lock()
	held := ws.pending[id]
	delete(ws.pending, id)
	delete(ws.announce, id)
	ws.mu.Unlock()
	for _, r := range held {
		if err := ws.send(r, id); err != nil {
			return err
		}
	}
	return nil
}

func (ws *watchStream) sendHub(r watch.Response) error {
	out := &pb.WatchResponse{
		Header:          ws.s.header(r.Revision),
		WatchId:         r.WatchID,
		Events:          r.Events,
		CompactRevision: r.CompactRevision,
		Canceled:        r.Canceled,
	}
	ws.mu.Lock()
	if ws.announce[r.WatchID] {
		ws.pending[r.WatchID] = append(ws.pending[r.WatchID], out)
		ws.mu.Unlock()
		return nil
	}
	ws.mu.Unlock()
	return ws.send(out, r.WatchID)
}

// send writes one response, split into fragments if the watcher asked for
// them and it is over the request size limit.
func (ws *watchStream) send(r *pb.WatchResponse, id int64) error {
	ws.mu.Lock()
	frag := ws.fragment[id]
	ws.mu.Unlock()
	limit := ws.s.cfg.MaxRequestBytes
	if !frag || len(r.Events) < 2 || proto.Size(r) <= limit {
		return ws.grpc.Send(r)
	}
	for _, part := range fragments(r, limit) {
		if err := ws.grpc.Send(part); err != nil {
			return err
		}
	}
	return nil
}

// fragments splits r's events into responses of at most limit bytes each
// (a single larger event gets a response of its own); all but the last
// are marked Fragment.
func fragments(r *pb.WatchResponse, limit int) []*pb.WatchResponse {
	var parts []*pb.WatchResponse
	cur := &pb.WatchResponse{Header: r.Header, WatchId: r.WatchId}
	size := proto.Size(cur)
	for _, ev := range r.Events {
		n := proto.Size(ev) + 8
		if len(cur.Events) > 0 && size+n > limit {
			cur.Fragment = true
			parts = append(parts, cur)
			cur = &pb.WatchResponse{Header: r.Header, WatchId: r.WatchId}
			size = proto.Size(cur)
		}
		cur.Events = append(cur.Events, ev)
		size += n
	}
	return append(parts, cur)
}
