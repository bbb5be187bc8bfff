// Package docker is cairn's deployment test: a 3-member cluster from the
// FROM-scratch image, run by deploy/docker-compose.yml, partitioned and
// restarted with Docker's own tools, and grown to five members and back
// with etcdctl, while clients write through the published client ports.
//
// It runs only with CAIRN_DOCKER_TEST=1 (`make docker-test` sets it), so a
// plain `go test ./...` skips it. It needs a Docker engine, Compose
// (`docker compose`, or `docker-compose` v1 1.28+ for profiles;
// CAIRN_COMPOSE overrides the command) and etcdctl 3.4+ (Debian's
// etcd-client; CAIRN_ETCDCTL overrides it), run with ETCDCTL_API=3; with
// CAIRN_DOCKER_TEST=1 a missing etcdctl fails the test. Nothing is
// pulled: the image is built from this tree.
//
// # The scenario (TestComposeCluster)
//
//  1. Build the static binary and an image tagged for this run only, then
//     `compose -p cairndt-<random> up -d` with host ports chosen free, so
//     parallel runs do not clash.
//  2. Write keys through a member.
//  3. `docker network disconnect` the leader's container from the cluster
//     network. The other two must elect a new leader; the old one must stop
//     serving linearizable reads (the Range errors or times out) and must not
//     acknowledge a put, while a serializable Range, sent over the client
//     network, still answers from its local state: that proves the client
//     path is intact and only peer traffic is cut. Writes continue on the
//     majority side.
//  4. Reconnect it (with its network aliases). All three must name the same
//     leader, reach the same revision with the same HashKV, and the old
//     leader must serve linearizable reads again, including the writes it
//     missed; the put it refused must exist nowhere.
//  5. Rolling restart: `compose stop` then `compose start` each member in
//     turn while writers keep putting unique keys through every member (the
//     last one stays down for 6,000 writes, past the log tail the leader
//     keeps, so it catches up from a snapshot sent over the cluster
//     network), then re-create one container (`up --force-recreate`, as an
//     upgrade would) on its named volume: it must come back as the same
//     member. Every stop must be a clean exit (status 0).
//  6. Scale, writers still running: `etcdctl member add cairn4`, then
//     start the compose service cairn4 (profile "scale", so the first `up`
//     left it alone) with CAIRN4_INITIAL_CLUSTER set to the
//     ETCD_INITIAL_CLUSTER that member add printed; wait until it passes
//     `etcdctl endpoint health`, has caught up with the leader and holds
//     the first keys (serializable range), and member list shows it
//     started; the same for cairn5. Each new member gets writers of its
//     own. Then `etcdctl member remove` cairn5, then `etcdctl move-leader`
//     to cairn4 and remove it while it leads (it must hand leadership
//     over), each by its ID from `etcdctl member list`: each container
//     must exit by itself with status 0, logging that it was removed.
//     Starting the removed cairn5 again on its volume must fail (status 1).
//  7. Every acknowledged put (through any of the five) must be present,
//     with its value, on each of the three remaining members at one
//     revision (serializable reads); HashKV equal; one leader.
//  8. Cleanup (t.Cleanup, so also on failure): on failure the members' logs
//     are printed; then `compose --profile scale down -v --remove-orphans`
//     (the profile so Compose v2 removes cairn4 and cairn5 too), then
//     anything still labelled with the project (containers, networks,
//     volumes) and the image are removed.
//
// Every wait polls a condition against a deadline; none sleeps and hopes.
// A SIGINT or SIGTERM fails the test (so the cleanup runs) rather than
// killing it, and the test keeps 30s of its go test -timeout for cleanup.
//
// # The network design (deploy/docker-compose.yml)
//
// Each member joins two networks. On "cluster" (internal: no gateway) it
// has an extra alias, cairn1-peer etc., and the peer URLs name only those
// aliases; on "client" it publishes its client port. Disconnecting a member
// from the cluster network therefore cuts exactly its peer traffic: its
// peers cannot resolve or reach cairnN-peer, and it cannot reach theirs.
// Because the cluster network is internal, Docker never binds a published
// port to it, so the host's 127.0.0.1:<port> keeps reaching the member
// through the client network during the partition. (Forwarded lease calls
// travel on the peer port too, so nothing member-to-member crosses the
// client network.) Reconnecting must restore the aliases by hand:
// `docker network connect --alias cairn1-peer --alias cairn1`.
//
// # Why Go and not a shell script
//
// The checks are about protocol state (leader IDs, revisions, HashKV,
// per-key values) that our generated gRPC clients read directly; the
// concurrent writers and their record of acknowledged keys are natural in
// Go and awkward in bash; and t.Cleanup gives the must-run cleanup without
// trap subtleties. Docker itself is driven through its CLI, exactly as an
// operator would, so the test needs no Docker SDK.
package docker
