package lease

import "time"

// Clock is the lessor's source of time. Only the primary reads it (expiry,
// checkpoint deadlines, the revoke rate limit), never the apply path, so
// applying the same entries gives the same table whatever the clocks say.
// Tests inject a fake one and never sleep.
type Clock interface {
	// Now returns the current time. It must not go backwards (time.Now's
	// monotonic reading satisfies this).
	Now() time.Time
}

// SystemClock is the real clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }
