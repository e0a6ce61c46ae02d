package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"
)

// maxListed bounds the violations listed in the report (all are counted).
const maxListed = 300

// Summary is a distribution of durations in milliseconds.
type Summary struct {
	N        int     `json:"n"`
	MedianMs float64 `json:"median_ms"`
	MaxMs    float64 `json:"max_ms"`
}

func summarize(xs []float64) Summary {
	if len(xs) == 0 {
		return Summary{}
	}
	s := slices.Sorted(slices.Values(xs))
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Summary{N: len(s), MedianMs: med, MaxMs: s[len(s)-1]}
}

// Report is what a run tells: chaos/out/report.json and the summary.
type Report struct {
	Passed      bool    `json:"passed"`
	Interrupted bool    `json:"interrupted,omitempty"` // stopped early (signal): checked as far as recorded, durability unchecked
	Seed        uint64  `json:"seed"`
	Profile     string  `json:"profile"`
	Nodes       int     `json:"nodes"`
	Network     string  `json:"network"`
	Partitions  string  `json:"partitions"`
	Reproduce   string  `json:"reproduce"`
	StartedAt   string  `json:"started_at"`
	DurationS   float64 `json:"duration_s"`
	WorkDir     string  `json:"work_dir,omitempty"`
	HistoryFile string  `json:"history_file,omitempty"`

	FaultCounts map[string]int `json:"fault_counts"`
	Faults      []*FaultRecord `json:"faults"`

	Requests struct {
		Total      int            `json:"total"`
		HTTP       int            `json:"http"`
		WSConnects int            `json:"ws_connects"`
		OK         int            `json:"ok"`
		Sessions   int            `json:"sessions"`
		ByNode     map[string]int `json:"by_node"`
		ByServer   map[string]int `json:"by_server"`
	} `json:"requests"`
	Admin struct {
		Writes        int            `json:"writes"`
		Reads         int            `json:"reads"`
		ViaGwelbctl   int            `json:"via_gwelbctl"`
		ByOutcome     map[string]int `json:"by_outcome"`
		FinalIndexMax uint64         `json:"final_table_index"`
	} `json:"admin"`

	Elections       []Election         `json:"elections"`
	ElectionSummary map[string]Summary `json:"election_summary"` // by fault kind, and "leader-kill" for kills of the leader
	Convergence     []Convergence      `json:"verdict_convergence"`
	ConvergeDown    Summary            `json:"verdict_down_summary"`
	ConvergeUp      Summary            `json:"verdict_up_summary"`
	Recovery        Summary            `json:"recovery_summary"`

	Checks          map[string]int    `json:"violations_by_invariant"`
	Stickiness      StickinessStats   `json:"stickiness"`
	Availability    AvailabilityStats `json:"availability"`
	Agreement       AgreementStats    `json:"agreement"`
	Linearizability LinStats          `json:"linearizability"`
	ViolationCount  int               `json:"violation_count"`
	Violations      []Violation       `json:"violations"`

	history *History
}

// check runs every checker over h and builds the report.
func (d *driver) check(h *History) *Report {
	r := &Report{
		Seed: d.seed, Profile: d.prof.name, Nodes: d.prof.nodes, Network: d.networkName(),
		Reproduce: fmt.Sprintf("go run ./chaos -profile %s -nodes %d -seed %d", d.prof.name, d.prof.nodes, d.seed),
		StartedAt: d.rec.start.UTC().Format(time.RFC3339), DurationS: h.End.Seconds(),
		FaultCounts: map[string]int{}, ElectionSummary: map[string]Summary{}, Checks: map[string]int{},
		Faults: d.faults, Elections: d.elections, Convergence: d.convergence, history: h,
	}
	if d.net.netns {
		r.Partitions = "injected (iptables DROP between a node's namespace and its peers)"
	} else {
		r.Partitions = "skipped: " + d.net.reason
	}
	var recov []float64
	for _, f := range d.faults {
		r.FaultCounts[f.Kind]++
		if f.RecoverMs > 0 {
			recov = append(recov, f.RecoverMs)
		}
	}
	r.Recovery = summarize(recov)
	byKind := map[string][]float64{}
	for _, e := range d.elections {
		byKind[e.Kind] = append(byKind[e.Kind], e.Ms)
		if e.Kind == kKillLeader {
			byKind["leader-kill"] = append(byKind["leader-kill"], e.Ms)
		}
	}
	for k, xs := range byKind {
		r.ElectionSummary[k] = summarize(xs)
	}
	var down, up []float64
	for _, c := range d.convergence {
		if c.Dir == "down" {
			down = append(down, c.Ms)
		} else {
			up = append(up, c.Ms)
		}
	}
	r.ConvergeDown, r.ConvergeUp = summarize(down), summarize(up)

	r.Requests.ByNode, r.Requests.ByServer = map[string]int{}, map[string]int{}
	sessions := map[string]bool{}
	for i := range h.Requests {
		q := &h.Requests[i]
		r.Requests.Total++
		if q.Kind == "ws" {
			r.Requests.WSConnects++
		} else {
			r.Requests.HTTP++
		}
		r.Requests.ByNode[q.Node]++
		if q.ok() {
			r.Requests.OK++
			r.Requests.ByServer[q.Server]++
			sessions[q.Session] = true
		}
	}
	r.Requests.Sessions = len(sessions)
	r.Admin.ByOutcome = map[string]int{}
	for _, op := range h.Admin {
		if op.Kind == opRead {
			r.Admin.Reads++
		} else {
			r.Admin.Writes++
		}
		if op.Tool == "gwelbctl" {
			r.Admin.ViaGwelbctl++
		}
		r.Admin.ByOutcome[op.Outcome]++
	}
	for _, n := range h.FinalNodes {
		r.Admin.FinalIndexMax = max(r.Admin.FinalIndexMax, n.TableIndex)
	}

	var all []Violation
	vs, sk := checkStickiness(h)
	all = append(all, vs...)
	r.Stickiness = sk
	vs, ag := checkAgreement(h)
	all = append(all, vs...)
	r.Agreement = ag
	all = append(all, checkDurability(h)...)
	vs, av := checkAvailability(h)
	all = append(all, vs...)
	r.Availability = av
	vs, lin := checkLinearizability(h, time.Minute, "")
	all = append(all, vs...)
	r.Linearizability = lin
	all = append(all, h.Driver...)
	if len(lin.Unknown) > 0 {
		all = append(all, Violation{invLinearizability, h.End, fmt.Sprintf("porcupine ran out of time on %v: linearizability unknown", lin.Unknown)})
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].At < all[j].At })
	for _, v := range all {
		r.Checks[v.Invariant]++
	}
	for _, inv := range []string{invStickiness, invAgreement, invDurability, invAvailability, invLinearizability} {
		r.Checks[inv] += 0
	}
	r.ViolationCount = len(all)
	r.Violations = all[:min(len(all), maxListed)]
	r.Passed = len(all) == 0
	return r
}

// write writes the report as JSON.
func (r *Report) write(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("report dir: %w", err)
	}
	if !r.Passed {
		r.HistoryFile = filepath.Join(filepath.Dir(path), fmt.Sprintf("history-%d.json", r.Seed))
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	return nil
}

// writeHistory dumps the whole history, for a failed run.
func (d *driver) writeHistory(h *History, path string) error {
	full := struct {
		*History
		Requests  []Request        `json:"requests"`
		WSBreaks  []WSBreak        `json:"ws_breaks"`
		Admin     []AdminOp        `json:"admin"`
		Agreement []AgreementProbe `json:"agreement"`
		Driver    []Violation      `json:"driver"`
	}{h, h.Requests, h.WSBreaks, h.Admin, h.Agreement, h.Driver}
	b, err := json.Marshal(full)
	if err != nil {
		return fmt.Errorf("history: %w", err)
	}
	return os.WriteFile(path, b, 0o644)
}

// print writes the human summary.
func (r *Report) print(w io.Writer, path string) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	verdict := "PASSED"
	switch {
	case !r.Passed:
		verdict = "FAILED"
	case r.Interrupted:
		verdict = "INTERRUPTED (no violation in what was recorded; durability unchecked)"
	}
	p("")
	p("chaos %s: profile %s, seed %d, %d nodes, network %s, %.0f s", verdict, r.Profile, r.Seed, r.Nodes, r.Network, r.DurationS)
	p("  replay: %s", r.Reproduce)
	p("  partitions: %s", r.Partitions)
	var kinds []string
	for k, n := range r.FaultCounts {
		kinds = append(kinds, fmt.Sprintf("%s x%d", k, n))
	}
	sort.Strings(kinds)
	p("  faults (%d): %s", len(r.Faults), strings.Join(kinds, ", "))
	for _, f := range r.Faults {
		line := fmt.Sprintf("    #%-2d %6.1fs %-24s", f.ID, f.StartS, f.Kind)
		if f.Target != "" {
			line += fmt.Sprintf(" %s(%s)", f.Target, f.Role)
		}
		if f.Server != "" {
			line += " server " + f.Server
		}
		if f.ElectionMs > 0 {
			line += fmt.Sprintf(" election %.0fms", f.ElectionMs)
		}
		if f.DownMs > 0 {
			line += fmt.Sprintf(" down-everywhere %.0fms up-everywhere %.0fms", f.DownMs, f.UpMs)
		}
		if f.RecoverMs > 0 {
			line += fmt.Sprintf(" recovered %.0fms", f.RecoverMs)
		}
		if f.Error != "" {
			line += " ERROR " + f.Error
		}
		p("%s", line)
	}
	p("  requests: %d (%d http, %d websocket connects), %d answered, %d sessions checked; failures excused: %d node down, %d right after a GWE server death, %d refusals of a node behind the cluster (503, cookie kept); %d websocket breaks excused",
		r.Requests.Total, r.Requests.HTTP, r.Requests.WSConnects, r.Requests.OK, r.Requests.Sessions,
		r.Availability.NodeUnavailable, r.Availability.ServerDeath, r.Availability.StaleRefused, r.Availability.WSBreaks)
	p("  stickiness: %d requests carried a route, %d moved (%d while their server was down, %d after an operator's disable/remove, %d through a node behind for longer than it refuses), %d sessions moved; %d went through a node in a stale window (restarted, paused, cut off), %d of them moved (judged like any other: staleness excuses nothing)",
		r.Stickiness.Checked, r.Stickiness.Moves, r.Stickiness.ByServerDown, r.Stickiness.ByAdmin, r.Stickiness.PastRefusal, r.Stickiness.SessionsMoved, r.Stickiness.StaleRequests, r.Stickiness.StaleMoves)
	p("  admin: %d writes (%d via gwelbctl), %d linearizable reads, outcomes %v", r.Admin.Writes, r.Admin.ViaGwelbctl, r.Admin.Reads, r.Admin.ByOutcome)
	if s, ok := r.ElectionSummary["leader-kill"]; ok {
		p("  leader election after SIGKILL of the leader: n=%d median %.0fms max %.0fms", s.N, s.MedianMs, s.MaxMs)
	}
	for _, k := range slices.Sorted(maps.Keys(r.ElectionSummary)) {
		if k != "leader-kill" && k != kKillLeader {
			s := r.ElectionSummary[k]
			p("  new leader after %s: n=%d median %.0fms max %.0fms", k, s.N, s.MedianMs, s.MaxMs)
		}
	}
	p("  verdict convergence (every live node): DOWN n=%d median %.0fms max %.0fms; UP n=%d median %.0fms max %.0fms",
		r.ConvergeDown.N, r.ConvergeDown.MedianMs, r.ConvergeDown.MaxMs, r.ConvergeUp.N, r.ConvergeUp.MedianMs, r.ConvergeUp.MaxMs)
	p("  recovery after healing: n=%d median %.0fms max %.0fms", r.Recovery.N, r.Recovery.MedianMs, r.Recovery.MaxMs)
	p("  agreement: %d groups compared (%d probes, up to %d nodes at one table index, %d groups without two comparable answers)",
		r.Agreement.Compared, r.Agreement.Probes, r.Agreement.NodesMaxed, r.Agreement.Incomplete)
	p("  linearizability: %d members, %d operations (%d of unknown outcome)", r.Linearizability.Keys, r.Linearizability.Operations, r.Linearizability.Indeterminate)
	p("  violations: %d %v", r.ViolationCount, r.Checks)
	for i, v := range r.Violations {
		if i == 20 {
			p("    ... %d more in %s", r.ViolationCount-20, path)
			break
		}
		p("    [%s] at %.1fs: %s", v.Invariant, v.At.Seconds(), v.Detail)
	}
	if r.WorkDir != "" {
		p("  node data and logs: %s", r.WorkDir)
	}
	p("  report: %s", path)
}
