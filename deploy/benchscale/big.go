package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/gwelb/gwelb/internal/childproc"
	"github.com/gwelb/gwelb/internal/snapstream"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

func numCPU() int { return runtime.NumCPU() }

// bigRoute names the i-th member of the single-node phase.
func bigRoute(i int) string { return fmt.Sprintf("m%05d", i) }

// farmSize is how many members one farm process serves: a listener and a
// probe connection each, 10,000 descriptors, half the file limit.
const farmSize = 5000

// farm is one child process serving GWE servers for the big phase.
type farm struct {
	first, count, port int
	proc               *childproc.Proc
}

// probes asks the farm how many probes it has answered.
func (f *farm) probes(ctx context.Context, hc *http.Client) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	url := "http://" + net.JoinHostPort(bigIP(f.first+f.count-1), strconv.Itoa(f.port)) + probeCountPath
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, fmt.Errorf("farm probes: %w", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("farm probes: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("farm probes: %w", err)
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("farm probes: %w", err)
	}
	return v, nil
}

// bigPhase runs a voter (the leader, probing every member each interval:
// "" for gwelb's default, 2 s) and a non-voter (which never probes) whose
// table holds o.big members, each its own GWE server (own address, as in
// an estate), and measures their RSS and CPU and SnapshotSave and
// SnapshotRestore through the admin API (DESIGN.md §5.2; issue 13 item 3).
// tag tells the runs apart (node names, rows).
func bigPhase(ctx context.Context, o options, work string, sec *secrets, r *report, tag string, run bigRun) error {
	interval := run.interval
	label := "probes at the default 2 s"
	if interval != "" {
		label = "probes every " + interval
	}
	how := "built by one SnapshotRestore"
	if run.seed {
		how = "seeded from the config"
	}
	r.add(fmt.Sprintf("**%d members %s, %s**", o.big, how, label), "")
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("farm: %w", err)
	}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	port := o.portBase + offGWE + 10
	var farms []*farm
	for first := 0; first < o.big; first += farmSize {
		f := &farm{first: first, count: min(farmSize, o.big-first), port: port}
		f.proc, err = childproc.Start("farm", []string{self, "-farm-first", strconv.Itoa(f.first), "-farm-count", strconv.Itoa(f.count), "-farm-port", strconv.Itoa(port)},
			nil, filepath.Join(work, fmt.Sprintf("farm-%s-%d.log", tag, first)))
		if err != nil {
			return err
		}
		defer f.proc.Kill()
		farms = append(farms, f)
	}
	for _, f := range farms {
		if err := waitFor(ctx, 30*time.Second, "GWE server farm", func() error {
			if f.proc.Exited() {
				return fmt.Errorf("farm %d exited", f.first)
			}
			_, err := f.probes(ctx, hc)
			return err
		}); err != nil {
			return err
		}
	}
	farmProbes := func() (int64, error) {
		var sum int64
		for _, f := range farms {
			v, err := f.probes(ctx, hc)
			if err != nil {
				return 0, err
			}
			sum += v
		}
		return sum, nil
	}

	all := make([]memberConfig, o.big)
	for i := range all {
		all[i] = memberConfig{bigRoute(i), "http://" + net.JoinHostPort(bigIP(i), strconv.Itoa(port))}
	}
	members := all[:1]
	if run.seed {
		members = all
	}
	// Node indexes near maxNodes: ports the multi-node phase never used.
	v, err := newNode(work, o.portBase, maxNodes-1, "big"+tag, true, 1, nil, sec, members, interval)
	if err != nil {
		return err
	}
	nv, err := newNode(work, o.portBase, maxNodes-2, "big"+tag+"nv", false, 0, []string{v.gossip}, sec, members, interval)
	if err != nil {
		return err
	}
	t0 := time.Now()
	for _, n := range []*node{v, nv} {
		if err := n.start(o.bin, sec); err != nil {
			return err
		}
		defer n.stop()
	}
	fmt.Printf("a voter and a non-voter, %d members %s, %s\n", o.big, how, label)
	last := bigRoute(len(members) - 1)
	route := func(n *node) (uint64, error) {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		resp, err := n.api.Route(rctx, &gwelbv1.RouteRequest{Pool: "backend", Value: "." + last})
		if err != nil {
			return 0, fmt.Errorf("route %s on %s: %w", last, n.name, err)
		}
		if resp.GetRoute() != last {
			return 0, fmt.Errorf("route %s on %s: got %q (%s)", last, n.name, resp.GetRoute(), resp.GetReason())
		}
		return resp.GetTableIndex(), nil
	}
	for _, n := range []*node{v, nv} {
		if err := waitFor(ctx, 90*time.Second, n.name+" routing to "+last, func() error {
			if n.proc.Exited() {
				return fmt.Errorf("%s exited (log %s)", n.name, n.log)
			}
			_, err := route(n)
			return err
		}); err != nil {
			return err
		}
	}
	if !run.seed {
		r.add("a voter and a non-voter, 1 member seeded -> both route", fmt.Sprintf("%.1f s", time.Since(t0).Seconds()))
		d, size, err := restoreBig(ctx, v, all)
		if d == 0 {
			return err
		}
		if err != nil {
			r.note("%d members %s, %s: a SnapshotRestore failed before one succeeded: %v", o.big, how, label, err)
		}
		last = bigRoute(o.big - 1)
		t1 := time.Now()
		for _, n := range []*node{v, nv} {
			if err := waitFor(ctx, 90*time.Second, n.name+" routing to "+last, func() error {
				_, err := route(n)
				return err
			}); err != nil {
				return err
			}
		}
		r.add(fmt.Sprintf("  SnapshotRestore of the %d members (%s) / then both route to the last", o.big, mib(int64(size))), fmt.Sprintf("%s / %s", ms(d), ms(time.Since(t1))))
	} else {
		r.add(fmt.Sprintf("a voter and a non-voter, %d members seeded -> both route to the last", o.big), fmt.Sprintf("%.1f s", time.Since(t0).Seconds()))
	}
	// Quiet: the first probe rounds' observations are written; the table
	// index then stays put for 3 s.
	var idx uint64
	stable := time.Now()
	if err := waitFor(ctx, 20*time.Second, "the table to stop changing", func() error {
		i, err := route(v)
		if err != nil {
			return err
		}
		if i != idx {
			idx, stable = i, time.Now()
		}
		if time.Since(stable) < 3*time.Second {
			return fmt.Errorf("table index %d changed %v ago", i, time.Since(stable).Round(time.Millisecond))
		}
		return nil
	}); err != nil {
		r.add("  -> table quiet (no index change for 3 s)", fmt.Sprintf("no: %v", err))
	} else {
		r.add("  -> table quiet (no index change for 3 s; the first probes' observations written)", fmt.Sprintf("%.1f s, index %d", time.Since(t0).Seconds(), idx))
	}

	cpuV0, err := cpuTime(v.proc.Pid())
	if err != nil {
		return err
	}
	cpuNV0, err := cpuTime(nv.proc.Pid())
	if err != nil {
		return err
	}
	p0, err := farmProbes()
	if err != nil {
		return err
	}
	w0 := time.Now()
	if err := childproc.Sleep(ctx, 5*time.Second); err != nil { // the measurement window
		return err
	}
	el := time.Since(w0)
	p1, err := farmProbes()
	if err != nil {
		return err
	}
	cpuV1, err := cpuTime(v.proc.Pid())
	if err != nil {
		return err
	}
	cpuNV1, err := cpuTime(nv.proc.Pid())
	if err != nil {
		return err
	}
	ivl := 2 * time.Second
	if interval != "" {
		ivl, _ = time.ParseDuration(interval)
	}
	rssV, err := rssBytes(v.proc.Pid())
	if err != nil {
		return err
	}
	rssNV, err := rssBytes(nv.proc.Pid())
	if err != nil {
		return err
	}
	r.check(fmt.Sprintf("RSS with %d members: the non-voter (no probing)", o.big), mib(rssNV), "< 128 MB", rssNV < 128e6)
	r.check(fmt.Sprintf("RSS with %d members: the voter (the leader, probing them all)", o.big), mib(rssV), "< 128 MB", rssV < 128e6)
	r.add("  CPU (share of one core): non-voter / voter; probes the voter sends",
		fmt.Sprintf("%s / %s; %.0f/s (%d members / %v = %.0f/s)", pct((cpuNV1-cpuNV0).Seconds()/el.Seconds()), pct((cpuV1-cpuV0).Seconds()/el.Seconds()),
			float64(p1-p0)/el.Seconds(), o.big, ivl, float64(o.big)/ivl.Seconds()))

	// SnapshotSave and SnapshotRestore through the leader, five of each.
	const rounds = 5
	var saves, restores []time.Duration
	var snap []byte
	var snapErr error
	for range rounds {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		t := time.Now()
		stream, err := v.api.SnapshotSave(sctx, &gwelbv1.SnapshotSaveRequest{})
		if err == nil {
			snap, err = snapstream.Receive(stream.Recv, snapstream.MaxBytes)
		}
		d := time.Since(t)
		cancel()
		if err != nil {
			snapErr = fmt.Errorf("snapshot save: %w", err)
			break
		}
		saves = append(saves, d)
	}
	for range rounds {
		if snapErr != nil || snap == nil {
			break
		}
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		t := time.Now()
		stream, err := v.api.SnapshotRestore(sctx)
		if err == nil {
			_ = snapstream.Send(snap, stream.Send) // a failed send shows in CloseAndRecv
			_, err = stream.CloseAndRecv()
		}
		d := time.Since(t)
		cancel()
		if err != nil {
			snapErr = fmt.Errorf("snapshot restore: %w", err)
			break
		}
		restores = append(restores, d)
		if _, err := route(v); err != nil {
			snapErr = fmt.Errorf("after restore: %w", err)
			break
		}
	}
	what := fmt.Sprintf("snapshot save / restore of %d members through the leader's admin API (%s; median, max of %d)", o.big, mib(int64(len(snap))), rounds)
	if snapErr != nil {
		r.check(what, fmt.Sprintf("failed: %v (%d saves, %d restores done)", snapErr, len(saves), len(restores)), "< 1 s", false)
	} else {
		worst := max(quantile(saves, 1), quantile(restores, 1))
		r.check(what, fmt.Sprintf("%s, %s / %s, %s", ms(quantile(saves, 0.5)), ms(quantile(saves, 1)), ms(quantile(restores, 0.5)), ms(quantile(restores, 1))),
			"< 1 s", worst < time.Second)
	}
	if rssV, err = rssBytes(v.proc.Pid()); err != nil {
		return err
	}
	if rssNV, err = rssBytes(nv.proc.Pid()); err != nil {
		return err
	}
	r.add("  RSS after them: non-voter / voter", fmt.Sprintf("%s / %s", mib(rssNV), mib(rssV)))
	return nil
}

// waitFor retries cond every 200 ms until it returns nil, at most d.
func waitFor(ctx context.Context, d time.Duration, what string, cond func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not after %v: %w", what, d, err)
		}
		if err := childproc.Sleep(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}

// bigRun is one run of the big phase: how the table is built and the
// probe interval ("" for gwelb's default).
type bigRun struct {
	seed     bool
	interval string
}

// restoreBig saves the leader's state, adds members (all but the first,
// which the config seeded) and restores it: the table of an estate built
// in one step, as an operator's snapshot file would (the Seed path costs
// more; -big-runs seed:... measures it).
func restoreBig(ctx context.Context, v *node, members []memberConfig) (time.Duration, int, error) {
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	stream, err := v.api.SnapshotSave(sctx, &gwelbv1.SnapshotSaveRequest{})
	if err != nil {
		return 0, 0, fmt.Errorf("snapshot save: %w", err)
	}
	data, err := snapstream.Receive(stream.Recv, snapstream.MaxBytes)
	if err != nil {
		return 0, 0, fmt.Errorf("snapshot save: %w", err)
	}
	var st gwelbv1.State
	if err := proto.Unmarshal(data, &st); err != nil {
		return 0, 0, fmt.Errorf("decode the saved state: %w", err)
	}
	var tmpl *gwelbv1.Member
	for _, m := range st.GetMembers() {
		if m.GetRoute() == members[0].Route {
			tmpl = m
		}
	}
	if tmpl == nil {
		return 0, 0, fmt.Errorf("saved state has no member %s", members[0].Route)
	}
	for _, mc := range members[1:] {
		m := proto.Clone(tmpl).(*gwelbv1.Member)
		m.Route, m.Url = mc.Route, mc.URL
		st.Members = append(st.Members, m)
	}
	out, err := proto.MarshalOptions{Deterministic: true}.Marshal(&st)
	if err != nil {
		return 0, 0, fmt.Errorf("encode the state: %w", err)
	}
	// A leader busy with its first probe rounds may not take the restore
	// within its write timeout (Unavailable); three tries, each timed.
	var errs []error
	for range 3 {
		t := time.Now()
		up, err := v.api.SnapshotRestore(sctx)
		if err == nil {
			_ = snapstream.Send(out, up.Send) // a failed send shows in CloseAndRecv
			_, err = up.CloseAndRecv()
		}
		if err == nil {
			return time.Since(t), len(out), errors.Join(errs...)
		}
		errs = append(errs, fmt.Errorf("after %s: %w", ms(time.Since(t)), err))
	}
	return 0, 0, fmt.Errorf("snapshot restore of %d members: %w", len(members), errors.Join(errs...))
}
