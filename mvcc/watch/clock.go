package watch

import "time"

// Clock is the hub's source of time: the progress ticker and the pause
// between delivery retries. Tests inject a fake one to drive progress
// notifications without sleeping.
type Clock interface {
	// NewTicker returns a ticker firing every d.
	NewTicker(d time.Duration) Ticker
	// After returns a channel that receives once, after d.
	After(d time.Duration) <-chan time.Time
}

// Ticker is a stoppable periodic tick, as time.Ticker.
type Ticker interface {
	C() <-chan time.Time
	Stop()
}

// RealClock returns the Clock of package time.
func RealClock() Clock { return realClock{} }

type realClock struct{}

func (realClock) NewTicker(d time.Duration) Ticker       { return realTicker{time.NewTicker(d)} }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

type realTicker struct{ t *time.Ticker }

func (t realTicker) C() <-chan time.Time { return t.t.C }
func (t realTicker) Stop()               { t.t.Stop() }
