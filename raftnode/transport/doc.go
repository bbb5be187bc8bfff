// Package transport carries raft messages and snapshots between the members
// of a cairn cluster over HTTP on the peer port.
//
// # Using it
//
// Build a Transport with New, mount Handler at "/raft/" on the peer listener,
// then AddPeer every other member. Hand each Ready's messages to Send, which
// never blocks. Received messages come back through Raft.Process; broken
// streams through Raft.ReportUnreachable; the outcome of every MsgSnap through
// Raft.ReportSnapshot. Call Stop before closing the node: once it returns, the
// transport runs no goroutine and makes no call into Raft or SnapshotStore.
//
// The peer http.Server should set ReadHeaderTimeout but not ReadTimeout or
// WriteTimeout: those would cut long snapshot transfers. (Streams are
// hijacked and clear their deadlines.) Peer URLs must be http://host:port;
// TLS is not supported yet.
//
// # Guarantees
//
//   - At most once: a message is written once or not at all. Nothing is
//     acknowledged or retransmitted; raft retransmits what matters.
//   - Per-peer order: messages from A to B are processed by B in the order A
//     passed them to Send. After a reconnect the new stream starts only when
//     B has finished with the old one, so order holds across reconnects too.
//     Snapshots travel on their own connections and are not ordered with
//     respect to messages.
//   - Drops are allowed: a full queue (QueueSize) and a message over
//     MaxFrameSize (both counted in Stats), a message to an unknown peer
//     (logged at debug level), the messages in flight when a stream breaks.
//   - A misbehaving peer costs one stream: garbage, oversized frames or
//     misaddressed messages close that stream (or fail that snapshot) with a
//     log line; the member keeps serving everyone else.
//
// # Wire format
//
// Every request names its cluster and both ends in headers, IDs in lowercase
// hexadecimal:
//
//	X-Cairn-Cluster-Id: <cluster ID>
//	X-Cairn-From:       <sender's member ID>
//	X-Cairn-To:         <receiver's member ID>
//	X-Cairn-From-Urls:  <sender's advertised peer URLs, comma-separated>
//
// A receiver that does not know the sender (it missed the membership change
// that added it: a restarted member whose new leader joined while it was
// down) adds it as a peer at those URLs, so that it can answer; known
// senders keep their URLs, which change only through membership changes.
//
// The receiver answers 412 Precondition Failed (and logs) if the cluster ID
// or the target is not its own, 400 if a header is missing or malformed,
// 410 Gone if the sender was removed from the cluster (MarkRemoved; the
// sender's transport then calls Config.OnRemoved), and 503 once stopped.
//
// Message stream. The sender dials TCP and writes an HTTP/1.1 upgrade request
//
//	POST /raft/stream HTTP/1.1
//	Connection: Upgrade
//	Upgrade: cairn-raft/1
//	X-Cairn-...: (as above)
//
// The receiver validates the headers, answers "101 Switching Protocols" and
// hijacks the connection. From then on the sender writes frames and the
// receiver never writes:
//
//	frame = length (uint32, big endian) || raftpb.Message (protobuf, length bytes)
//
// The sender writes each batch (everything queued when it wakes) through a
// 64 KiB bufio.Writer and flushes once per batch. The receiver closes the
// stream on a frame longer than MaxFrameSize, a frame that does not
// unmarshal, a message whose To is not itself or whose From is not the
// X-Cairn-From sender, a local-only message type, or a MsgSnap.
//
// Why an upgrade rather than a long POST body: after the 101 each side owns a
// plain net.Conn. The sender sets a write deadline on every write (a peer that
// stops reading is detected within WriteTimeout) and watches the read side,
// so a peer that restarts is noticed at once instead of after a batch is lost
// in a dead socket. The receiver, and Stop, can close the connection directly.
// A streaming POST body would put net/http's client pool and its goroutines
// between us and the socket, with only request cancellation to unblock a stuck
// write. The 101 also confirms, before any frame is written, that the
// receiver accepted the headers; a rejection is an ordinary HTTP response.
// The Upgrade token versions the framing: a member that speaks another
// version refuses the handshake instead of misreading frames.
//
// Snapshot. A MsgSnap is sent as its own request, one at a time per peer, so a
// long transfer never holds up the message stream:
//
//	POST /raft/snapshot HTTP/1.1
//	Transfer-Encoding: chunked
//	X-Cairn-...: (as above)
//
//	body  = frame                      the MsgSnap, framed as on the stream
//	        { n (uint32 BE, 1..1 MiB) || n bytes of data }
//	        0 (uint32)                 terminator
//	        crc (uint32 BE)            CRC-32C (Castagnoli) of every body byte before it
//
// The sender produces the body in a goroutine through an io.Pipe, with the
// data streamed from SnapshotStore.WriteSnapshot in 64 KiB chunks; nothing is
// buffered whole. If WriteSnapshot fails, the pipe is closed with the error,
// the HTTP client aborts the request mid-body and the receiver sees a cut
// stream. The receiver hands the data to SnapshotStore.ReceiveSnapshot through
// a reader that returns io.EOF only after the terminator and a matching
// checksum, and an error for a cut, oversized or damaged stream. Only when
// ReceiveSnapshot returns nil, all data was consumed and the checksum
// verified does it call Raft.Process with the MsgSnap and answer 204 No
// Content; otherwise 400 (bad stream), 500 (store failed) or 503 (node
// stopped). The sender reports raft.SnapshotFinish on 204 and
// raft.SnapshotFailure on anything else, including a transfer that makes no
// progress for SnapshotIdleTimeout.
//
// # Reconnecting
//
// Each peer's sender dials, streams until the connection fails, and dials
// again, rotating through the peer's URLs. Waits between attempts start at
// MinBackoff and double up to MaxBackoff; a stream that lived longer than
// MaxBackoff resets them. Every failed dial and broken stream calls
// Raft.ReportUnreachable, at most once per UnreachableInterval per peer, and
// logs a warning on the first failure after a success (debug after that).
// Messages queued while disconnected stay queued (up to QueueSize) and go out
// once a stream is open. UpdatePeer drops a stream whose URL is no longer
// listed and cuts short any backoff.
//
// # Fault hook (tests only)
//
// A Faults value shared by the transports of one process can cut links (Cut,
// CutOneWay, Isolate), delay them (Delay) or lose a fraction of messages
// (DropRate); Heal clears it all. The sending transport consults it in the
// peer's sender goroutine, just before writing each message and before each
// snapshot. Discarded messages vanish silently (no ReportUnreachable: raft must
// find the partition itself); a discarded snapshot is reported as
// SnapshotFailure. A delayed message is written no earlier than its Send time
// plus the delay; the sender flushes what is due and waits, so order is kept.
//
// # Goroutines
//
// Every goroutine has an owner that ends it and waits for it:
//
//   - Per peer, started by AddPeer, ended by RemovePeer or Stop: a stream
//     sender and a snapshot sender. While a stream is open, the stream sender
//     owns a reader goroutine that watches the connection; while a snapshot is
//     in flight, the snapshot sender owns the goroutine writing its body.
//     Stopping fails that goroutine's writes and waits for
//     SnapshotStore.WriteSnapshot to return.
//   - Inbound streams and snapshots run on net/http's handler goroutines. The
//     transport registers each one; Stop closes the hijacked stream
//     connections, expires the read deadline of snapshot requests, cancels the
//     context passed to Raft.Process, and waits for every handler to leave.
//   - net/http's client goroutines for snapshot requests end with their
//     connection (keep-alives are off); Stop closes any that remain.
package transport
