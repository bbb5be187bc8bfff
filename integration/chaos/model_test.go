package chaos

import (
	"testing"

	"github.com/anishathalye/porcupine"
)

func absent() KV                     { return KV{} }
func val(v string, version int64) KV { return KV{Exists: true, Value: v, Version: version} }

// The model alone, one step at a time.
func TestModelSteps(t *testing.T) {
	cases := []struct {
		name  string
		state State
		in    Input
		out   Output
		ok    bool
		after State
	}{
		{"get of a missing key", absent(), Input{Kind: Get}, Output{}, true, absent()},
		{"get of a wrong value", val("a", 1), Input{Kind: Get}, Output{KV: val("b", 1)}, false, val("a", 1)},
		{"get of a wrong version", val("a", 1), Input{Kind: Get}, Output{KV: val("a", 2)}, false, val("a", 1)},
		{"put creates at version 1", absent(), Input{Kind: Put, Value: "a"}, Output{}, true, val("a", 1)},
		{"put bumps the version", val("a", 1), Input{Kind: Put, Value: "b"}, Output{KV: val("a", 1)}, true, val("b", 2)},
		{"put with a wrong prev_kv", val("a", 1), Input{Kind: Put, Value: "b"}, Output{KV: val("x", 1)}, false, val("a", 1)},
		{"unknown put takes effect", val("a", 1), Input{Kind: Put, Value: "b"}, Output{Unknown: true}, true, val("b", 2)},
		{"put seen only by the watch", val("a", 3), Input{Kind: Put, Value: "b"}, Output{NoPrev: true}, true, val("b", 4)},
		{"value CAS on a missing key fails", absent(), Input{Kind: CAS, Value: "b", Expect: ""}, Output{KV: absent()}, true, absent()},
		{"value CAS on a missing key cannot succeed", absent(), Input{Kind: CAS, Value: "b", Expect: ""}, Output{Succeeded: true}, false, absent()},
		{"version-0 CAS creates", absent(), Input{Kind: CAS, Value: "b", CmpVersion: true}, Output{Succeeded: true}, true, val("b", 1)},
		{"version CAS on a live key", val("a", 2), Input{Kind: CAS, Value: "b", CmpVersion: true, ExpectVersion: 2}, Output{Succeeded: true, KV: val("a", 2)}, true, val("b", 3)},
		{"version CAS that should have failed", val("a", 2), Input{Kind: CAS, Value: "b", CmpVersion: true, ExpectVersion: 1}, Output{Succeeded: true, KV: val("a", 2)}, false, val("a", 2)},
		{"value CAS fails and reads the key", val("a", 2), Input{Kind: CAS, Value: "b", Expect: "z"}, Output{KV: val("a", 2)}, true, val("a", 2)},
		{"failed CAS that should have succeeded", val("a", 2), Input{Kind: CAS, Value: "b", Expect: "a"}, Output{KV: val("a", 2)}, false, val("a", 2)},
		{"unknown CAS whose compare holds", val("a", 2), Input{Kind: CAS, Value: "b", Expect: "a"}, Output{Unknown: true}, true, val("b", 3)},
		{"unknown CAS whose compare fails", val("a", 2), Input{Kind: CAS, Value: "b", Expect: "z"}, Output{Unknown: true}, true, val("a", 2)},
		{"CAS seen by the watch needs its compare", val("a", 2), Input{Kind: CAS, Value: "b", Expect: "z"}, Output{NoPrev: true, Succeeded: true}, false, val("a", 2)},
		{"delete of a live key", val("a", 2), Input{Kind: Delete}, Output{KV: val("a", 2)}, true, absent()},
		{"delete claims a key that was not there", absent(), Input{Kind: Delete}, Output{KV: val("a", 2)}, false, absent()},
		{"delete of a missing key", absent(), Input{Kind: Delete}, Output{}, true, absent()},
		{"unknown delete", val("a", 2), Input{Kind: Delete}, Output{Unknown: true}, true, absent()},
		{"delete then put restarts the version", absent(), Input{Kind: Put, Value: "c"}, Output{}, true, val("c", 1)},
	}
	for _, c := range cases {
		ok, after := step(c.state, c.in, c.out)
		if ok != c.ok {
			t.Errorf("%s: step answered %v, want %v", c.name, ok, c.ok)
		}
		if ok && after != c.after {
			t.Errorf("%s: state after is %s, want %s", c.name, after, c.after)
		}
	}
}

// hist builds porcupine histories by hand for key k.
func pop(client int, call, ret int64, in Input, out Output) porcupine.Operation {
	if in.Key == "" {
		in.Key = "k"
	}
	return porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret}
}

func TestModelHistories(t *testing.T) {
	cases := []struct {
		name string
		ops  []porcupine.Operation
		want porcupine.CheckResult
	}{
		{"a read overlapping a put may see either", []porcupine.Operation{
			pop(0, 0, 10, Input{Kind: Put, Value: "a"}, Output{}),
			pop(1, 5, 15, Input{Kind: Get}, Output{}),
			pop(2, 6, 16, Input{Kind: Get}, Output{KV: val("a", 1)}),
		}, porcupine.Ok},
		{"a stale read after an acknowledged put", []porcupine.Operation{
			pop(0, 0, 10, Input{Kind: Put, Value: "a"}, Output{}),
			pop(1, 20, 30, Input{Kind: Get}, Output{}),
		}, porcupine.Illegal},
		{"reads that go back in time", []porcupine.Operation{
			pop(0, 0, 100, Input{Kind: Put, Value: "a"}, Output{}),
			pop(1, 10, 20, Input{Kind: Get}, Output{KV: val("a", 1)}),
			pop(2, 30, 40, Input{Kind: Get}, Output{}),
		}, porcupine.Illegal},
		{"an unknown put that shows up later", []porcupine.Operation{
			pop(0, 0, 1000, Input{Kind: Put, Value: "a"}, Output{Unknown: true}),
			pop(1, 20, 30, Input{Kind: Get}, Output{}),
			pop(1, 40, 50, Input{Kind: Get}, Output{KV: val("a", 1)}),
		}, porcupine.Ok},
		{"a CAS that lost to a concurrent put", []porcupine.Operation{
			pop(0, 0, 10, Input{Kind: Put, Value: "a"}, Output{}),
			pop(1, 20, 40, Input{Kind: Put, Value: "b"}, Output{KV: val("a", 1)}),
			pop(2, 25, 35, Input{Kind: CAS, Value: "c", Expect: "a"}, Output{KV: val("b", 2)}),
			pop(0, 50, 60, Input{Kind: Get}, Output{KV: val("b", 2)}),
		}, porcupine.Ok},
		{"two CAS on the same version both win", []porcupine.Operation{
			pop(0, 0, 10, Input{Kind: Put, Value: "a"}, Output{}),
			pop(1, 20, 40, Input{Kind: CAS, Value: "b", CmpVersion: true, ExpectVersion: 1}, Output{Succeeded: true, KV: val("a", 1)}),
			pop(2, 20, 40, Input{Kind: CAS, Value: "c", CmpVersion: true, ExpectVersion: 1}, Output{Succeeded: true, KV: val("a", 1)}),
		}, porcupine.Illegal},
		{"a lost acknowledged write", []porcupine.Operation{
			pop(0, 0, 10, Input{Kind: Put, Value: "a"}, Output{}),
			pop(0, 20, 30, Input{Kind: Put, Value: "b"}, Output{KV: val("a", 1)}),
			pop(1, 100, 110, Input{Kind: Get}, Output{KV: val("a", 1)}),
		}, porcupine.Illegal},
		{"a delete, then a put recreates at version 1", []porcupine.Operation{
			pop(0, 0, 10, Input{Kind: Put, Value: "a"}, Output{}),
			pop(0, 20, 30, Input{Kind: Delete}, Output{KV: val("a", 1)}),
			pop(0, 40, 50, Input{Kind: Put, Value: "b"}, Output{}),
			pop(1, 60, 70, Input{Kind: Get}, Output{KV: val("b", 1)}),
		}, porcupine.Ok},
	}
	for _, c := range cases {
		if got := porcupine.CheckOperations(Model, c.ops); (got && c.want != porcupine.Ok) || (!got && c.want == porcupine.Ok) {
			t.Errorf("%s: linearizable = %v, want %v", c.name, got, c.want)
		}
	}
}

// Keys are independent: a violation on one key is found even though the
// other key is fine, and two keys' histories do not constrain each other.
func TestModelPartitionsByKey(t *testing.T) {
	ops := []porcupine.Operation{
		pop(0, 0, 10, Input{Kind: Put, Key: "x", Value: "a"}, Output{}),
		pop(1, 20, 30, Input{Kind: Get, Key: "y"}, Output{}),
		pop(1, 40, 50, Input{Kind: Get, Key: "x"}, Output{KV: val("a", 1)}),
	}
	if !porcupine.CheckOperations(Model, ops) {
		t.Fatal("independent keys were not linearizable")
	}
	ops = append(ops, pop(2, 60, 70, Input{Kind: Get, Key: "y"}, Output{KV: val("a", 1)}))
	if porcupine.CheckOperations(Model, ops) {
		t.Fatal("a value read from a key nobody wrote was accepted")
	}
	if n := len(Model.Partition(ops)); n != 2 {
		t.Fatalf("%d partitions, want 2", n)
	}
}
