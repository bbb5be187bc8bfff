package chaos

import (
	"fmt"
	"hash/fnv"
	"sort"

	"github.com/anishathalye/porcupine"
)

// Kind names an operation of the workload.
type Kind string

const (
	Get    Kind = "get"    // linearizable Range of one key
	Put    Kind = "put"    // Put with prev_kv
	CAS    Kind = "cas"    // Txn: compare value or version, then put (prev_kv); else range the key
	Delete Kind = "delete" // DeleteRange of one key with prev_kv
	// Lease operations are recorded for the summary and the lease checks;
	// they are not part of the register model.
	LeaseGrant  Kind = "lease-grant"
	LeasePut    Kind = "lease-put"
	LeaseRevoke Kind = "lease-revoke"
	KeepAlive   Kind = "keepalive"
)

// Input is what a client asked.
type Input struct {
	Kind  Kind   `json:"kind"`
	Key   string `json:"key"`
	Value string `json:"value,omitempty"` // put, cas: the value written (unique in a run)
	// CAS compares either the value (CmpVersion false: the key must exist
	// with value Expect) or the version (the key's version must be
	// ExpectVersion; a missing key has version 0).
	CmpVersion    bool   `json:"cmp_version,omitempty"`
	Expect        string `json:"expect,omitempty"`
	ExpectVersion int64  `json:"expect_version,omitempty"`
	Lease         int64  `json:"lease,omitempty"` // lease operations
}

// KV is a register's observable state: whether the key exists, its value
// and its version (puts since it was created; 0 when absent).
type KV struct {
	Exists  bool   `json:"exists"`
	Value   string `json:"value,omitempty"`
	Version int64  `json:"version,omitempty"`
}

func (kv KV) String() string {
	if !kv.Exists {
		return "∅"
	}
	return fmt.Sprintf("%s@v%d", kv.Value, kv.Version)
}

// Output is what the client was told.
//
//   - Get: KV is the key as read.
//   - Put: KV is the previous key (prev_kv).
//   - CAS: Succeeded says which branch ran; KV is the previous key on
//     success (the put's prev_kv) and the key as read on failure.
//   - Delete: KV is the previous key (Exists = something was deleted).
//
// Unknown marks an operation whose outcome the client never learned: it
// may or may not have taken effect, at any time after its call. NoPrev
// marks a write known to have taken effect (the watch saw it) whose answer
// was lost, so KV says nothing.
type Output struct {
	Unknown   bool  `json:"unknown,omitempty"`
	NoPrev    bool  `json:"no_prev,omitempty"`
	Succeeded bool  `json:"succeeded,omitempty"`
	KV        KV    `json:"kv"`
	Revision  int64 `json:"revision,omitempty"` // the response header's revision
}

// State is the model's state for one key.
type State = KV

// step applies in to state s and says whether out is a possible answer.
// It is the whole sequential specification of a key: a register with
// etcd's version counter and compare semantics (a value compare on a
// missing key is false; a version compare treats it as version 0).
func step(s State, in Input, out Output) (bool, State) {
	put := func() State {
		if !s.Exists {
			return State{Exists: true, Value: in.Value, Version: 1}
		}
		return State{Exists: true, Value: in.Value, Version: s.Version + 1}
	}
	observed := !out.Unknown && !out.NoPrev
	switch in.Kind {
	case Get:
		if out.Unknown {
			return true, s
		}
		return out.KV == s, s
	case Put:
		if observed && out.KV != s {
			return false, s
		}
		return true, put()
	case CAS:
		holds := cmpHolds(s, in)
		if out.Unknown {
			if holds {
				return true, put()
			}
			return true, s
		}
		if out.Succeeded {
			if !holds || (observed && out.KV != s) {
				return false, s
			}
			return true, put()
		}
		return !holds && out.KV == s, s
	case Delete:
		if observed && out.KV != s {
			return false, s
		}
		if out.NoPrev && !s.Exists {
			return false, s
		}
		return true, State{}
	}
	panic(fmt.Sprintf("chaos: model: unexpected operation %q", in.Kind))
}

func cmpHolds(s State, in Input) bool {
	if in.CmpVersion {
		return s.Version == in.ExpectVersion
	}
	return s.Exists && s.Value == in.Expect
}

// Model is the porcupine model: one register per key, partitioned by key.
var Model = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(Input).Key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		sort.Strings(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return State{} },
	Step: func(state, input, output any) (bool, any) {
		return step(state.(State), input.(Input), output.(Output))
	},
	Equal: func(a, b any) bool { return a.(State) == b.(State) },
	Hash: func(state any) uint64 {
		s := state.(State)
		h := fnv.New64a()
		fmt.Fprintf(h, "%t|%s|%d", s.Exists, s.Value, s.Version)
		return h.Sum64()
	},
	DescribeOperation: func(input, output any) string {
		return describe(input.(Input), output.(Output))
	},
	DescribeState: func(state any) string { return state.(State).String() },
}

func describe(in Input, out Output) string {
	var call string
	switch in.Kind {
	case Get:
		call = fmt.Sprintf("get(%s)", in.Key)
	case Put:
		call = fmt.Sprintf("put(%s, %s)", in.Key, in.Value)
	case CAS:
		cmp := fmt.Sprintf("value=%s", in.Expect)
		if in.CmpVersion {
			cmp = fmt.Sprintf("version=%d", in.ExpectVersion)
		}
		call = fmt.Sprintf("cas(%s, %s → %s)", in.Key, cmp, in.Value)
	case Delete:
		call = fmt.Sprintf("delete(%s)", in.Key)
	default:
		call = fmt.Sprintf("%s(%s)", in.Kind, in.Key)
	}
	switch {
	case out.Unknown:
		return call + " → ?"
	case out.NoPrev && in.Kind == CAS:
		return call + " → ok (seen by watch)"
	case out.NoPrev:
		return call + " → done (seen by watch)"
	case in.Kind == Get:
		return fmt.Sprintf("%s → %s", call, out.KV)
	case in.Kind == CAS && out.Succeeded:
		return fmt.Sprintf("%s → ok, prev %s", call, out.KV)
	case in.Kind == CAS:
		return fmt.Sprintf("%s → failed, saw %s", call, out.KV)
	default:
		return fmt.Sprintf("%s → prev %s", call, out.KV)
	}
}
