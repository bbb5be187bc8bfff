// Package chaos runs real cairn clusters under faults, membership changes
// among them, and checks what clients saw: linearizability with porcupine,
// durability of acknowledged writes, watch streams, leases, and that
// members agree, recover, and come and go cleanly.
//
// # Running it
//
//	go test ./integration/chaos -run TestChaosShort -v      # 40 s of faults, fixed seed (part of make test)
//	make chaos SEED=42 DURATION=5m MEMBERS=3                # a long randomised run
//	go test ./integration/chaos -run TestChaosBrokenReads   # proof that the checker can fail
//	go test ./integration/chaos -run 'TestJoin|TestRepro' -chaos.repro -v  # membership bugs the runs found, reduced (repro_test.go)
//
// `make chaos` runs TestChaos with -chaos.duration, -chaos.seed (default:
// from the clock, printed first) and -chaos.members (3 or 5). Every run
// prints a summary: operations by kind and outcome, faults injected by
// kind, what became of the membership changes (added, removed, refused,
// skipped; the members at the end), and each check's verdict.
// TestChaosShort's seed is one whose schedule has each kind of membership
// change (TestShortScheduleChangesMembership).
//
// # The cluster
//
// Run starts 3 or 5 cairn processes (integration/harness) with
// --heartbeat-interval 50 --election-timeout 500 --snapshot-count 500 and
// CAIRN_TEST_HOOKS=1, each behind a fault proxy on its peer port
// (harness.PeerNet): members listen on their own peer ports but advertise
// the proxies', so all member-to-member traffic (raft streams, snapshots,
// forwarded lease and membership calls) passes through a proxy that knows
// the sender from the X-Cairn-From header of each connection's first
// request. Members added later (Cluster.NewMember, named m4, m5, ... in
// order) get a proxy of their own.
//
// The run keeps a table of every member it ever prepared (membership.go),
// indexed as the harness's Cluster.Members, with a state: joining (added
// and started, not yet a started voter that has caught up), serving,
// leaving (its removal under way or of unknown outcome), removed, or never
// added. Only serving members take clients and faults; "the members" below
// means the serving ones at that moment.
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
//     too. A client sticks to one member and moves to the next serving
//     member after an error, or as soon as its member stops serving
//     (removal under way, removed): clients follow the membership.
//   - Two watchers on Prefix from revision 1, starting on different
//     members. A broken stream (a removed member's goes when it exits) is
//     reopened on the next serving member from the revision after the
//     last one seen (compaction is off).
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
// 2.5 s, the last lasting until the end of the run. A fault's targets are
// positions (p1, p2, ...: the Nth member of the cluster at the time,
// oldest first, wrapping around) or "leader", resolved against the
// membership when the fault starts, so they always name members that
// exist:
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
// About a quarter of the faults change the membership, through etcd's
// Cluster service (MemberAdd, MemberRemove) on a serving member (the
// leader if it is up):
//
//   - add-member: prepare a new member (ports, proxy, empty data dir,
//     --initial-cluster-state existing), MemberAdd it as a voter or as a
//     learner (which the leader promotes once it has caught up), start it;
//     it joins the clients' rotation once the member list shows it as a
//     started voter and it holds the cluster's revision;
//   - remove-member: MemberRemove a follower; it must exit by itself with
//     status 0;
//   - replace: remove a member (half the time kill -9 it first: a machine
//     that died) and add a new process on a new data dir in its place;
//   - remove-leader: MemberRemove the member leading (it hands leadership
//     over first, then exits by itself).
//
// Bounds, for a cluster started with N members: between changes it has N
// to N+2 members (a removal planned at N becomes an addition, an addition
// planned at N+2 a removal); only a replacement, between its removal and
// its addition, leaves N-1, so there are never fewer than N-1 voters and,
// with no other fault in progress, a quorum is always possible. The run
// checks the bounds again before each change and records a change that
// would break them as skipped (the plan assumes every change succeeds).
// Other faults are sized by the planned membership.
//
// A third of the changes that follow a fault held 2 s or more are made
// during that fault (shown "during #k"), while its members are killed,
// paused, cut off or slow; such a change waits no longer than what is left
// of the fault's hold (a change on its own, no longer than its hold, 3 s
// at least), so it never stretches the fault. With --strict-reconfig-check
// (on) cairn may refuse such a change ("unhealthy cluster", "not enough
// started members"): that is recorded as refused in the fault's note and
// the run goes on. A change whose outcome the run cannot tell (a timeout,
// "no leader") is settled from a linearizable MemberList as soon as one
// answers; until then no other change is made. A replacement whose
// addition was refused adds its new member after the fault in progress is
// healed (or at the end).
//
// A new member is started as soon as MemberAdd returns, as etcd's
// procedure has it.
//
// Half of the faults aimed at one member aim at whichever member leads when
// the fault starts. A network cut makes the receiving member's proxy close
// the sender's connections and refuse new ones; heal lifts it; a member
// added while another is isolated is cut off from it too.
//
// When the run's time is up everything is healed (members restarted and
// resumed, cuts lifted, disks fast), and once the cluster has taken a
// write through every member the membership settles while the clients
// still run: unknown outcomes are settled, a missing replacement is added,
// new members are waited for (60 s) until they serve, removed members for
// (30 s) until they exit. Then the clients stop and the final state is
// read from the members in the cluster at the end; removed members are
// left out of every comparison.
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
//     and every member in the cluster at the end holds the same at the
//     final revision.
//   - leases: the kept-alive key is present, its lease alive and never
//     deleted in the watch history; every short-lease key is gone, and the
//     watch saw it go.
//   - hashkv: every member in the cluster at the end has the same HashKV
//     at the final revision (members added during the run, from a
//     snapshot, included).
//   - recovery: after the faults end, the cluster took a write within 10 s,
//     and so did every member serving then.
//   - membership: every member at the end lists exactly the members the
//     run added and did not remove, all of them started voters (no
//     learner left unpromoted); the cluster has N to N+2 members; every
//     member removed while running exited by itself with status 0 (exit 1
//     or no exit within 30 s fails); every new member became a serving
//     voter.
//   - processes: no member exited without being killed or removed (a
//     member that exits while still in the cluster is a crash, whatever
//     its status); the final state could be read.
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
// event, fault, the final state and membership), summary.txt,
// schedule.txt (planned, then as injected with the members hit and what
// became of each membership change), linearizability-<key>.html
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
