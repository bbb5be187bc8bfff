// Package integration holds tests that run real cairn processes: clusters
// on loopback (package harness), crash and restart under writes, bad input
// on every port, and the command line. etcd's own client is used only in
// the separate module under compat/, which proves wire compatibility.
package integration
