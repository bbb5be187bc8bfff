package chaos

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"
)

// Outcome is what a client knows about an operation once it returned.
type Outcome string

const (
	// OK: the operation took effect and its answer is in Output.
	OK Outcome = "ok"
	// Failed: the operation certainly did not take effect (a read that
	// failed, or a request refused before it could be proposed).
	Failed Outcome = "failed"
	// Unknown: the operation may or may not have taken effect, at any
	// time after its call (timeouts, "leader changed", a connection lost
	// after the request was sent).
	Unknown Outcome = "unknown"
)

// Op is one recorded operation. Times are nanoseconds since the start of
// the run, on the test process's monotonic clock.
type Op struct {
	ID      int     `json:"id"`
	Client  int     `json:"client"` // the worker that issued it
	Member  string  `json:"member"` // the member it was sent to
	Input   Input   `json:"input"`
	Output  Output  `json:"output"`
	Call    int64   `json:"call"`
	Return  int64   `json:"return"` // when the client gave up, for unknown outcomes
	Outcome Outcome `json:"outcome"`
	Err     string  `json:"err,omitempty"`
}

// Recorder collects operations from concurrent clients.
type Recorder struct {
	start time.Time

	mu  sync.Mutex
	ops []Op
}

// NewRecorder starts the run's clock.
func NewRecorder() *Recorder { return &Recorder{start: time.Now()} }

// Now is the time since the start in nanoseconds.
func (r *Recorder) Now() int64 { return int64(time.Since(r.start)) }

// Start is the run's time zero.
func (r *Recorder) Start() time.Time { return r.start }

// Add records a finished operation and returns its ID.
func (r *Recorder) Add(op Op) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	op.ID = len(r.ops)
	r.ops = append(r.ops, op)
	return op.ID
}

// Ops returns a copy of the operations recorded so far, by ID.
func (r *Recorder) Ops() []Op {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Op(nil), r.ops...)
}

// WatchEvent is one event a watcher received.
type WatchEvent struct {
	Rev     int64  `json:"rev"`
	Delete  bool   `json:"delete,omitempty"`
	Key     string `json:"key"`
	Value   string `json:"value,omitempty"`
	Version int64  `json:"version,omitempty"`
	At      int64  `json:"at"`     // when the response arrived
	Member  string `json:"member"` // the member that sent it
	Resp    int    `json:"resp"`   // the index of the response that carried it, per watcher
}

// WatchLog is what one long-lived watcher saw.
type WatchLog struct {
	Watcher    int          `json:"watcher"`
	Events     []WatchEvent `json:"events"`
	Reconnects int          `json:"reconnects"`
	// Problems are protocol faults seen on the stream (a compaction
	// notice, a cancel), each a violation on its own.
	Problems []string `json:"problems,omitempty"`
}

// FaultRecord is a fault as it was injected.
type FaultRecord struct {
	Step    int    `json:"step"`
	Kind    string `json:"kind"`
	Targets string `json:"targets"` // the members it hit, as resolved at run time
	Start   int64  `json:"start"`
	End     int64  `json:"end"`
	Note    string `json:"note,omitempty"`
}

// History is everything a run recorded, as written to history.json.
type History struct {
	Seed     int64         `json:"seed"`
	Members  int           `json:"members"`
	Schedule string        `json:"schedule"`
	Ops      []Op          `json:"ops"`
	Watches  []WatchLog    `json:"watches"`
	Faults   []FaultRecord `json:"faults"`
	Final    FinalState    `json:"final"`
}

// FinalState is what the run read after the faults ended.
type FinalState struct {
	Revision int64 `json:"revision"`
	// Reads are the linearizable reads of every model key at the end,
	// with the mod revision each returned (0 for a missing key).
	Reads   map[string]KV    `json:"reads"`
	ModRevs map[string]int64 `json:"mod_revs"`
	// MemberReads are each member's serializable reads of every key at
	// Revision, by member name.
	MemberReads map[string]map[string]KV `json:"member_reads"`
	// Hashes are each member's HashKV at Revision.
	Hashes map[string]uint32 `json:"hashes"`
	// Leases: the kept-alive lease's key and whether it was present and
	// alive at the end; the short leases' keys still present.
	KeptKey      string   `json:"kept_key"`
	KeptPresent  bool     `json:"kept_present"`
	KeptTTL      int64    `json:"kept_ttl"`
	KeptMaxGap   int64    `json:"kept_max_gap"` // longest time between acknowledged keep-alives, ns
	KeptTTLGrant int64    `json:"kept_ttl_grant"`
	KeptLost     string   `json:"kept_lost,omitempty"` // a keep-alive answered that the lease was gone
	ShortLeft    []string `json:"short_left,omitempty"`
	// Recovery is how long after the faults ended the first write, and a
	// write through every member, were acknowledged (ns; -1 if never).
	RecoveryFirst int64 `json:"recovery_first"`
	RecoveryAll   int64 `json:"recovery_all"`
	// Membership at the end: the members in the cluster (the ones the
	// reads, hashes and durability compare), each one's own member list
	// (names, with "(learner)" or "(not started)" where so), how each
	// removed member ended ("exit 0", "killed -9 before its removal", or
	// what went wrong), and problems the run itself found (a new member
	// that never became a voter). Absent from histories of runs before
	// membership faults.
	Members            []string            `json:"members,omitempty"`
	Listed             map[string][]string `json:"listed,omitempty"`
	Removed            map[string]string   `json:"removed,omitempty"`
	MembershipProblems []string            `json:"membership_problems,omitempty"`
}

// WriteJSON writes the history to path.
func (h *History) WriteJSON(path string) error {
	b, err := json.MarshalIndent(h, "", " ")
	if err != nil {
		return fmt.Errorf("chaos: encode history: %w", err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("chaos: write history: %w", err)
	}
	return nil
}

// ReadHistory reads a history written by WriteJSON, so its checks can be
// run again without processes.
func ReadHistory(path string) (*History, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("chaos: read history: %w", err)
	}
	var h History
	if err := json.Unmarshal(b, &h); err != nil {
		return nil, fmt.Errorf("chaos: decode history %s: %w", path, err)
	}
	return &h, nil
}

// Counts tallies operations by kind and outcome.
type Counts map[Kind]map[Outcome]int

// CountOps counts ops by kind and outcome.
func CountOps(ops []Op) Counts {
	c := Counts{}
	for _, op := range ops {
		if c[op.Input.Kind] == nil {
			c[op.Input.Kind] = map[Outcome]int{}
		}
		c[op.Input.Kind][op.Outcome]++
	}
	return c
}

// Kinds returns the kinds present, in a fixed order.
func (c Counts) Kinds() []Kind {
	order := map[Kind]int{Get: 0, Put: 1, CAS: 2, Delete: 3, LeaseGrant: 4, LeasePut: 5, LeaseRevoke: 6, KeepAlive: 7, Probe: 8}
	var ks []Kind
	for k := range c {
		ks = append(ks, k)
	}
	sort.Slice(ks, func(i, j int) bool { return order[ks[i]] < order[ks[j]] })
	return ks
}
