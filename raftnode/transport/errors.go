package transport

import "errors"

// Errors of the transport, compared with errors.Is. Returned errors wrap them
// with the operation and the peer or URL involved.
var (
	// ErrConfig reports an invalid Config passed to New.
	ErrConfig = errors.New("transport: invalid config")
	// ErrFrameTooLarge reports a frame whose length prefix exceeds the limit
	// (Config.MaxFrameSize for messages, 1 MiB for snapshot chunks).
	ErrFrameTooLarge = errors.New("transport: frame too large")
	// ErrBadFrame reports a frame that does not decode into a raft message.
	ErrBadFrame = errors.New("transport: malformed frame")
	// ErrMisaddressed reports a message whose To is not this member, whose
	// From does not match the sender named in the request headers, or whose
	// type may not cross the wire.
	ErrMisaddressed = errors.New("transport: misaddressed message")
	// ErrChecksum reports a snapshot stream whose trailing CRC-32C does not
	// match the bytes received.
	ErrChecksum = errors.New("transport: snapshot checksum mismatch")
	// ErrRejected reports a peer that answered a request with an error status
	// (cluster ID mismatch, wrong target, malformed snapshot, ...).
	ErrRejected = errors.New("transport: rejected by peer")
	// ErrRemoved reports a peer that refused us as a member removed from
	// the cluster (410 Gone).
	ErrRemoved = errors.New("transport: this member was removed from the cluster")
)

// Internal reasons for a stream or snapshot attempt to end.
var (
	errKicked       = errors.New("transport: peer URLs changed")
	errPeerClosed   = errors.New("transport: stream closed by peer")
	errFaultDropped = errors.New("transport: dropped by fault hook")
	errStalled      = errors.New("transport: snapshot stalled")
	errAborted      = errors.New("transport: snapshot request finished")
	errNoURL        = errors.New("transport: peer has no usable URL")
)
