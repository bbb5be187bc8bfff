package backend

import "errors"

// Sentinel errors of the backend. Compare with errors.Is: they may come
// wrapped with the operation that hit them.
var (
	// ErrClosed is returned by every operation on a closed backend.
	ErrClosed = errors.New("backend: closed")

	// ErrInvalidSnapshot is returned by PrepareRestore when the streamed file
	// is not a bbolt database that cairn wrote.
	ErrInvalidSnapshot = errors.New("backend: snapshot is not a cairn database")
)
