package watch

import "errors"

// Sentinel errors of the watch hub, compared with errors.Is. The first
// three carry etcd's text, which the server sends as a cancel reason.
var (
	// ErrEmptyWatcherRange: the range end is set (and not "\x00") but not
	// after the key.
	ErrEmptyWatcherRange = errors.New("mvcc: watcher range is empty")
	// ErrWatcherDuplicateID: an explicit watch ID already in use on the
	// stream.
	ErrWatcherDuplicateID = errors.New("mvcc: duplicate watch ID provided on the WatchStream")
	// ErrWatcherNotExist: Cancel of an ID the stream does not hold.
	ErrWatcherNotExist = errors.New("mvcc: watcher does not exist")

	// ErrClosed: the stream or the hub was closed.
	ErrClosed = errors.New("watch: closed")
	// ErrNotStarted: Watch before Hub.Start gave the hub its source.
	ErrNotStarted = errors.New("watch: hub not started")
)
