package wal

import (
	"flag"
	"io"
	"log/slog"
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if a goroutine outlives the tests: every WAL's
// spare-segment goroutine must be stopped by Close.
func TestMain(m *testing.M) {
	flag.Parse()
	if !testing.Verbose() {
		// Torn tails and injected faults are logged; keep the output clean.
		slog.SetDefault(slog.New(slog.NewTextHandler(io.Discard, nil)))
	}
	goleak.VerifyTestMain(m)
}
