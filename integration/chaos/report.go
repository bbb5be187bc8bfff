package chaos

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/cairnkv/cairn/integration/harness"
)

// FirstRevision is the revision of the first write to a new cluster (a
// new keyspace is at revision 1), where every watcher's stream starts.
const FirstRevision = 2

// CheckOptions tune Check.
type CheckOptions struct {
	RecoveryBound time.Duration // 10s if zero
	CheckTimeout  time.Duration // porcupine's, per key; none if zero
}

// Report is a checked run.
type Report struct {
	History     *History
	Schedule    Schedule // empty for a scenario
	Lin         LinearizabilityResult
	Verdicts    []Verdict
	FaultCounts map[FaultKind]int
	MemberStats memberStats
	Crashes     []string
	ProxyStats  harness.PeerNetStats
	// LogCounts counts telling lines in the members' logs (snapshots
	// taken, sent, installed), to show which paths the run exercised.
	LogCounts map[string]int
	Dir       string // where a failed run was written
}

// logMarks are the log lines LogCounts counts, by the name the summary
// gives them.
var logMarks = []struct{ name, text string }{
	{"snapshots taken", "snapshot taken"},
	{"snapshots sent", "snapshot sent"},
	{"snapshots installed from the leader", "installed snapshot from leader"},
	{"elections won", "became leader"},
}

// countLogLines counts logMarks in the members' logs.
func countLogLines(c *harness.Cluster) map[string]int {
	counts := map[string]int{}
	for _, m := range c.Members {
		b, err := os.ReadFile(m.LogPath())
		if err != nil {
			continue
		}
		for _, mark := range logMarks {
			counts[mark.name] += strings.Count(string(b), mark.text)
		}
	}
	return counts
}

// Check runs every check on a history. It needs no processes: a
// history.json from a failed run can be checked again (ReadHistory).
func Check(h *History, o CheckOptions) *Report {
	if o.RecoveryBound == 0 {
		o.RecoveryBound = 10 * time.Second
	}
	r := &Report{History: h}
	r.Lin = CheckLinearizable(h, o.CheckTimeout)
	r.Verdicts = []Verdict{
		r.Lin.Verdict,
		CheckWatches(h, FirstRevision),
		CheckDurability(h),
		CheckLeases(h, ShortPrefix),
		CheckHashes(h),
		CheckRecovery(h, o.RecoveryBound),
		CheckMembership(h),
	}
	return r
}

func (r *Report) addVerdict(v Verdict) { r.Verdicts = append(r.Verdicts, v) }

// OK reports whether every check passed.
func (r *Report) OK() bool {
	for _, v := range r.Verdicts {
		if !v.OK {
			return false
		}
	}
	return true
}

// Verdict returns the verdict of the named check.
func (r *Report) Verdict(name string) (Verdict, bool) {
	for _, v := range r.Verdicts {
		if v.Name == name {
			return v, true
		}
	}
	return Verdict{}, false
}

// Summary is the human-readable account of the run.
func (r *Report) Summary() string {
	var b strings.Builder
	h := r.History
	what := fmt.Sprintf("%d faults planned", len(r.Schedule.Faults))
	if r.Schedule.Duration > 0 {
		what += fmt.Sprintf(" over %v", r.Schedule.Duration)
	}
	fmt.Fprintf(&b, "=== chaos summary: seed %d, %d members, %s\n", h.Seed, h.Members, what)
	counts := CountOps(h.Ops)
	fmt.Fprintf(&b, "operations            ok   failed  unknown\n")
	var tot [3]int
	for _, k := range counts.Kinds() {
		c := counts[k]
		fmt.Fprintf(&b, "  %-14s %8d %8d %8d\n", k, c[OK], c[Failed], c[Unknown])
		tot[0] += c[OK]
		tot[1] += c[Failed]
		tot[2] += c[Unknown]
	}
	fmt.Fprintf(&b, "  %-14s %8d %8d %8d\n", "total", tot[0], tot[1], tot[2])
	var fc []string
	var nf int
	for _, k := range FaultKinds {
		fc = append(fc, fmt.Sprintf("%s %d", k, r.FaultCounts[k]))
		nf += r.FaultCounts[k]
	}
	leader := 0
	for _, f := range h.Faults {
		if strings.Contains(f.Note, "(leader ") {
			leader++
		}
	}
	fmt.Fprintf(&b, "faults injected: %d (%s); %d aimed at the leader\n", nf, strings.Join(fc, ", "), leader)
	if h.Final.Members != nil {
		ms := r.MemberStats
		fmt.Fprintf(&b, "membership: %d members at the start, %d at the end (%s); %d added, %d removed, %d changes refused or failed, %d skipped\n",
			h.Members, len(h.Final.Members), strings.Join(h.Final.Members, ","), ms.added, ms.removed, ms.refused, ms.skipped)
	}
	fmt.Fprintf(&b, "peer proxy: %d connections piped, %d refused, %d severed by cuts\n",
		r.ProxyStats.Accepted, r.ProxyStats.Refused, r.ProxyStats.Severed)
	if r.LogCounts != nil {
		var parts []string
		for _, mark := range logMarks {
			parts = append(parts, fmt.Sprintf("%d %s", r.LogCounts[mark.name], mark.name))
		}
		fmt.Fprintf(&b, "member logs: %s\n", strings.Join(parts, ", "))
	}
	fmt.Fprintf(&b, "checks:\n")
	for _, v := range r.Verdicts {
		fmt.Fprintf(&b, "  %s\n", v)
	}
	verdict := "PASS"
	if !r.OK() {
		verdict = "FAIL"
	}
	fmt.Fprintf(&b, "verdict: %s", verdict)
	if r.Dir != "" {
		fmt.Fprintf(&b, " (history and visualisation in %s)", r.Dir)
	}
	b.WriteString("\n")
	return b.String()
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// WriteFolder writes a failed run to a new folder under outDir and returns
// its path: history.json (everything recorded), summary.txt, schedule.txt,
// a porcupine visualisation per key that failed the linearizability check
// (linearizability-<key>.html, with the faults as annotations), and a copy
// of every member's log if c is not nil.
func (r *Report) WriteFolder(outDir string, c *harness.Cluster) (string, error) {
	dir, err := os.MkdirTemp(outDir, fmt.Sprintf("cairn-chaos-seed%d-%s-", r.History.Seed, time.Now().Format("20060102-150405")))
	if err != nil {
		return "", fmt.Errorf("chaos: make the failure folder: %w", err)
	}
	r.Dir = dir
	if err := r.History.WriteJSON(filepath.Join(dir, "history.json")); err != nil {
		return dir, err
	}
	if err := os.WriteFile(filepath.Join(dir, "summary.txt"), []byte(r.Summary()), 0o644); err != nil {
		return dir, err
	}
	if err := os.WriteFile(filepath.Join(dir, "schedule.txt"), []byte(r.History.Schedule+faultLog(r.History)), 0o644); err != nil {
		return dir, err
	}
	for _, k := range r.Lin.Keys {
		if k.Result == porcupine.Ok {
			continue
		}
		k.Info.AddAnnotations(faultAnnotations(r.History))
		name := "linearizability-" + strings.Trim(unsafeName.ReplaceAllString(k.Key, "_"), "_") + ".html"
		if err := porcupine.VisualizePath(Model, k.Info, filepath.Join(dir, name)); err != nil {
			return dir, fmt.Errorf("chaos: visualise %s: %w", k.Key, err)
		}
	}
	if c != nil {
		for _, m := range c.Members {
			if _, err := os.Stat(m.LogPath()); err != nil {
				continue // prepared, never started
			}
			if err := copyFile(m.LogPath(), filepath.Join(dir, m.Name+".log")); err != nil {
				return dir, err
			}
		}
	}
	return dir, nil
}

func faultLog(h *History) string {
	var b strings.Builder
	b.WriteString("\nfaults as injected:\n")
	for _, f := range h.Faults {
		fmt.Fprintf(&b, "  %7.2fs..%7.2fs  %s\n", time.Duration(f.Start).Seconds(), time.Duration(f.End).Seconds(), f.describe())
	}
	return b.String()
}

// faultAnnotations shows the faults in porcupine's visualisation.
func faultAnnotations(h *History) []porcupine.Annotation {
	var out []porcupine.Annotation
	for _, f := range h.Faults {
		out = append(out, porcupine.Annotation{
			Tag: "faults", Start: f.Start, End: f.End, Description: f.Kind + " " + f.Targets, Details: f.describe(),
			BackgroundColor: "#fde2e2",
		})
	}
	return out
}

func copyFile(from, to string) error {
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.Create(to)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return err
	}
	return dst.Close()
}
