package server

import (
	"crypto/sha256"
	"encoding/binary"
	"slices"
	"strings"
)

// Member and cluster IDs are derived from the initial configuration, so a
// member restarted with the same flags finds itself, and every member of a
// new cluster computes the same IDs for all the others.

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
