package server

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The IDs of a new cluster's members and of the cluster are derived from
// the initial configuration, so every member of a new cluster computes the
// same IDs for all the others. A member that restarts reads its own from its
// log; one added later gets an ID from MemberAdd (newMemberID).

// memberID hashes a member's sorted peer URLs with the cluster token.
func memberID(peerURLs []string, token string) uint64 {
	urls := slices.Clone(peerURLs)
	slices.Sort(urls)
	sum := sha256.Sum256([]byte(strings.Join(urls, ",") + "\x00" + token))
	id := binary.BigEndian.Uint64(sum[:8])
	if id == 0 { // raft reserves 0 for "none"
		id = 1
	}
	return id
}

// clusterID hashes the sorted member IDs.
func clusterID(memberIDs []uint64) uint64 {
	ids := slices.Clone(memberIDs)
	slices.Sort(ids)
	b := make([]byte, 0, 8*len(ids))
	for _, id := range ids {
		b = binary.BigEndian.AppendUint64(b, id)
	}
	sum := sha256.Sum256(b)
	return binary.BigEndian.Uint64(sum[:8])
}

// newMemberID is the ID of a member added to a running cluster, derived as
// etcd derives it: SHA-1 of the sorted peer URLs joined without separator,
// then the time of the addition in Unix seconds, first 8 bytes big endian.
// The time keeps a member re-added at the same URLs from reusing a removed
// member's ID.
func newMemberID(peerURLs []string, now time.Time) uint64 {
	urls := slices.Clone(peerURLs)
	slices.Sort(urls)
	b := []byte(strings.Join(urls, ""))
	b = strconv.AppendInt(b, now.Unix(), 10)
	sum := sha1.Sum(b)
	id := binary.BigEndian.Uint64(sum[:8])
	if id == 0 {
		id = 1
	}
	return id
}
