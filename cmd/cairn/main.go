// Command cairn runs one cairn member. It takes etcd's flag names; with no
// flags it runs a single member with clients on 127.0.0.1:2379, peers on
// 127.0.0.1:2380 and data in ./default.cairn.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/cairnkv/cairn/server"
)

func main() {
	os.Exit(run(os.Args[1:], lookupEnv, os.Stdout, os.Stderr))
}

// run is main without the process: it returns the exit code.
func run(args []string, env func(string) (string, bool), stdout, stderr io.Writer) int {
	o, err := parseFlags(args, env, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "cairn: %v\n", err)
		return 1
	}
	if o.version {
		fmt.Fprintf(stdout, "cairn %s (etcd API %s)\n", server.Version, server.APIVersion)
		return 0
	}
	if err := o.cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "cairn: %s\n", oneLine(err))
		return 1
	}
	log, err := server.NewLogger(stderr, o.cfg.LogLevel)
	if err != nil {
		fmt.Fprintf(stderr, "cairn: %v\n", err)
		return 1
	}
	s, err := server.Start(o.cfg, log)
	if err != nil {
		fmt.Fprintf(stderr, "cairn: %s\n", oneLine(err))
		return 1
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	var cause error
	select {
	case sig := <-sigs:
		log.Info("shutting down", "signal", sig.String())
	case <-s.Done():
		cause = s.Err()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if errors.Is(cause, server.ErrRemoved) {
		// Not a failure: the cluster let this member go. Exiting 0 keeps
		// a supervisor from restarting it (it would refuse to start).
		if err := s.Stop(ctx); err != nil {
			fmt.Fprintf(stderr, "cairn: %s\n", oneLine(err))
		}
		fmt.Fprintf(stderr, "cairn: %s\n", oneLine(cause))
		return 0
	}
	if err := errors.Join(cause, s.Stop(ctx)); err != nil {
		fmt.Fprintf(stderr, "cairn: %s\n", oneLine(err))
		return 1
	}
	return 0
}

// oneLine joins a multi-line (errors.Join) message with "; ".
func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }
