// Package integration holds tests that run real cairn processes: clusters
// on loopback (package harness), crash and restart under writes, bad input
// on every port, and the command line. Subpackages: chaos runs clusters
// under scheduled faults (kills, pauses, partitions through the harness's
// peer-path fault proxy, slow disks) and checks the clients' history for
// linearizability with porcupine; docker is the compose deployment test.
// etcd's own client is used only in the separate module under compat/,
// which proves wire compatibility.
package integration
