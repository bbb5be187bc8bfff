package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/cairnkv/cairn/server"
)

// options are the parsed command line: the server's configuration plus
// what the binary itself acts on.
type options struct {
	cfg     server.Config
	version bool
}

// parseFlags reads flags with etcd's names from args, then fills every flag
// not given on the command line from CAIRN_<FLAG> in env (upper case,
// dashes to underscores). Errors are one line.
func parseFlags(args []string, env func(string) (string, bool), stderr io.Writer) (options, error) {
	o := options{cfg: server.NewConfig()}
	c := &o.cfg
	fs := flag.NewFlagSet("cairn", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: cairn [flags]   (every flag can also be set as CAIRN_<FLAG>, e.g. CAIRN_DATA_DIR)")
		fs.PrintDefaults()
	}
	fs.StringVar(&c.Name, "name", c.Name, "human-readable name of this member")
	dataDir := fs.String("data-dir", "", "path to the data directory (default ${name}.cairn)")
	listList(fs, &c.ListenClientURLs, "listen-client-urls", "URLs to listen on for client traffic")
	listList(fs, &c.AdvertiseClientURLs, "advertise-client-urls", "client URLs of this member as advertised to the cluster")
	listList(fs, &c.ListenPeerURLs, "listen-peer-urls", "URLs to listen on for peer traffic")
	listList(fs, &c.InitialAdvertisePeerURLs, "initial-advertise-peer-urls", "peer URLs of this member as advertised to the cluster")
	fs.StringVar(&c.InitialCluster, "initial-cluster", "", "initial cluster configuration, name=peerURL,... (default ${name}=${initial-advertise-peer-urls})")
	fs.StringVar(&c.InitialClusterState, "initial-cluster-state", c.InitialClusterState, "new or existing")
	fs.StringVar(&c.InitialClusterToken, "initial-cluster-token", c.InitialClusterToken, "token that makes member and cluster IDs unique to this cluster")
	fs.Uint64Var(&c.SnapshotCount, "snapshot-count", c.SnapshotCount, "applied entries between snapshots")
	heartbeat := fs.Uint("heartbeat-interval", uint(c.HeartbeatInterval/time.Millisecond), "time (in milliseconds) of a heartbeat interval")
	election := fs.Uint("election-timeout", uint(c.ElectionTimeout/time.Millisecond), "time (in milliseconds) for an election to time out")
	fs.Int64Var(&c.QuotaBackendBytes, "quota-backend-bytes", c.QuotaBackendBytes, "raise an alarm when the backend size exceeds this (0 = default 2 GiB)")
	fs.IntVar(&c.MaxRequestBytes, "max-request-bytes", c.MaxRequestBytes, "maximum client request size in bytes")
	fs.IntVar(&c.MaxTxnOps, "max-txn-ops", c.MaxTxnOps, "maximum number of operations in one transaction")
	fs.BoolVar(&c.StrictReconfigCheck, "strict-reconfig-check", c.StrictReconfigCheck, "refuse membership changes that would leave the cluster without a quorum of started, connected voters")
	fs.BoolVar(&c.AutoPromoteLearners, "auto-promote-learners", c.AutoPromoteLearners, "promote a learner automatically once it has caught up with the leader")
	fs.IntVar(&c.MaxLearners, "max-learners", c.MaxLearners, "maximum number of learners in the cluster")
	fs.IntVar(&c.MaxLearners, "experimental-max-learners", c.MaxLearners, "deprecated alias of --max-learners")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
	fs.BoolVar(&c.EnablePprof, "enable-pprof", false, "serve Go's runtime profiler under /debug/pprof/ on the client port")
	fs.BoolVar(&o.version, "version", false, "print the version and exit")

	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q (flags start with --)", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || envErr != nil {
			return
		}
		name := "CAIRN_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := env(name); ok {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = fmt.Errorf("%s=%q: %w", name, v, err)
			}
			set[f.Name] = true
		}
	})
	if envErr != nil {
		return o, envErr
	}
	c.HeartbeatInterval = time.Duration(*heartbeat) * time.Millisecond
	c.ElectionTimeout = time.Duration(*election) * time.Millisecond
	c.DataDir = *dataDir
	if c.DataDir == "" {
		c.DataDir = c.Name + ".cairn"
	}
	return o, nil
}

// listList binds a comma-separated URL list flag.
func listList(fs *flag.FlagSet, dst *[]string, name, usage string) {
	fs.Func(name, fmt.Sprintf("%s, comma-separated (default %s)", usage, strings.Join(*dst, ",")), func(s string) error {
		var urls []string
		for _, u := range strings.Split(s, ",") {
			if u = strings.TrimSpace(u); u != "" {
				urls = append(urls, u)
			}
		}
		if len(urls) == 0 {
			return fmt.Errorf("empty URL list")
		}
		*dst = urls
		return nil
	})
}

func lookupEnv(name string) (string, bool) { return os.LookupEnv(name) }
