// Package chaos runs real cairn clusters under faults and checks what
// clients saw: linearizability with porcupine, durability of acknowledged
// writes, watch streams, leases, and that members agree and recover.
//
// # Running it
//
//	go test ./integration/chaos -run TestChaosShort -v      # 40 s of faults, fixed seed (part of make test)
//	make chaos SEED=42 DURATION=5m MEMBERS=3                # a long randomised run
//	go test ./integration/chaos -run TestChaosBrokenReads   # proof that the checker can fail
//
// `make chaos` runs TestChaos with -chaos.duration, -chaos.seed (default:
// from the clock, printed first) and -chaos.members (3 or 5). Every run
// prints a summary: operations by kind and outcome, faults injected by
// kind, and each check's verdict.
//
// # The cluster
//
// Run starts 3 or 5 cairn processes (integration/harness) with
// --heartbeat-interval 50 --election-timeout 500 --snapshot-count 500 and
// CAIRN_TEST_HOOKS=1, each behind a fault proxy on its peer port
// (harness.PeerNet): members listen on their own peer ports but advertise
// the proxies', so all member-to-member traffic (raft streams, snapshots,
// forwarded lease calls) passes through a proxy that knows the sender from
// the X-Cairn-From header of each connection's first request.
//
// # The workload
//
// All keys are under Prefix, so every revision of the run is a write the
// watchers see.
//
//   - Register clients (2 per member, at most 8), each with a random source
//     from the seed, on a few keys (KVPrefix k0..k4): 40% linearizable
//     reads, 25% puts, 23% compare-and-set transactions (compare the value
//     or the version a client last saw, else version 0 to create; the
//     failure branch reads the key), 12% deletes. Every value written is
//     unique. Puts and deletes ask for prev_kv, so writes observe the state
//     too. A client sticks to one member and moves to the next after an
//     error.
//   - Two watchers on Prefix from revision 1, starting on different
//     members. A broken stream is reopened on the next member from the
//     revision after the last one seen (compaction is off).
//   - A lease kept alive (TTL 10 s, a keep-alive every 500 ms through any
//     member that answers) with KeptKey attached.
//   - Short leases (TTL 2 s) every 1.2 s, each with a key under
//     ShortPrefix; every other one is revoked, the rest expire.
//
// Each operation is recorded with its call and return times (History).
// Its outcome is OK, Failed (certainly without effect: a failed read, or a
// write refused before it could be proposed, such as gRPC failing fast on
// a connection that is down) or Unknown (timeouts, "leader changed", "no
// leader", a connection lost after sending: it may take effect at any time
// after its call).
//
// # The faults
//
// NewSchedule plans faults from the seed alone (Schedule.String prints
// it): after a 2 s warm-up, one fault at a time with quiet gaps of 0.3 to
// 2.5 s, the last lasting until the end of the run:
//
//   - kill: kill -9, restart on the same data dir after 0.5 to 5 s (some
//     9 to 14 s, so the member must catch up from a snapshot; now and then
//     a majority at once, so the cluster loses quorum);
//   - pause: SIGSTOP, SIGCONT after 0.3 to 4 s;
//   - isolate: cut a member (or a minority) off from the rest, both ways;
//   - cut-pair: cut two members off from each other, both ways, the others
//     still reaching both;
//   - cut-one-way: drop traffic from the leader to a follower, or from a
//     follower to the leader, only;
//   - slow-disk: delay every WAL fsync of a member by 20 to 150 ms
//     (POST /cairn/test/fsync-delay).
//
// Half of the faults aimed at one member aim at whichever member leads when
// the fault starts. A network cut makes the receiving member's proxy close
// the sender's connections and refuse new ones; heal lifts it.
//
// When the run's time is up everything is healed (members restarted and
// resumed, cuts lifted, disks fast), the clients stop once the cluster has
// taken a write through every member, and the final state is read.
//
// # The checks, and what each proves
//
//   - linearizable: the history of each register key, with the final
//     linearizable reads appended, has a linearization under the model
//     (a register with etcd's versions and compare semantics, model.go),
//     found by porcupine. Unknown outcomes are settled with the watch
//     first (PorcupineOps): a put or CAS whose unique value the watch
//     delivered took effect no later than that delivery; one the complete
//     watch history never delivered did not take effect; anything else
//     stays open until the end of time. This proves every read saw the
//     latest acknowledged write and no write took effect twice, late, or
//     out of order.
//   - watch: each watcher's stream is contiguous from revision 2 to the
//     final revision, each revision once and in one response, in order,
//     across reconnects; the watchers agree; every acknowledged write is
//     in the stream at the revision its response named, with its value.
//   - durability: each key's final value (linearizable read) is its last
//     write in the watch history, no acknowledged write is newer than it,
//     and every member holds the same at the final revision.
//   - leases: the kept-alive key is present, its lease alive and never
//     deleted in the watch history; every short-lease key is gone, and the
//     watch saw it go.
//   - hashkv: every member has the same HashKV at the final revision.
//   - recovery: after the faults end, the cluster took a write within 10 s,
//     and so did every member.
//   - processes: no member exited without being killed; the final state
//     could be read.
//
// The checks are pure functions of a History (Check), tested on hand-made
// histories in check_test.go and model_test.go, each violation included.
// TestChaosBrokenReads turns on the unsafe-reads hook (linearizable reads
// answered from local state) on a follower, isolates it, has the majority
// write, and reads the key from the follower: a stale read after an
// acknowledged write, in each of three rounds. The run must fail the
// linearizability check and only that.
//
// # When a run fails
//
// The test fails and prints the folder it wrote (under -chaos.out, by
// default the system's temp dir): history.json (every operation, watch
// event, fault and the final state), summary.txt, schedule.txt (planned,
// then as injected with the members hit), linearizability-<key>.html
// (porcupine's visualisation of each failing key, faults shown as
// annotations) and each member's log.
//
// To reproduce, run the same seed again:
//
//	make chaos SEED=<seed> DURATION=<duration> MEMBERS=<n>
//
// The schedule and each client's choices are the same; timing is not (the
// member a "leader" fault hits and the interleaving of operations depend
// on it), so a rare failure may need several runs. To run the checks again
// on a saved history without processes:
//
//	go test ./integration/chaos -run TestChaosCheckHistory -chaos.history=<folder>/history.json -v
package chaos
