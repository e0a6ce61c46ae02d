// Command chaos is gwelb's fault-injection suite: it runs a cluster of real
// gwelb processes (bin/gwelb) in front of GWE demo servers (bin/gwe-demo),
// puts visitors, WebSockets and an operator (gRPC and bin/gwelbctl) on it,
// kills, stops, cuts off and restarts nodes and GWE servers on a schedule
// drawn from a seed, and checks the invariants of DESIGN.md over the
// recorded history:
//
//	go run ./chaos -profile short -seed N -out chaos/out/report.json
//
// It exits 1 on any violation, 2 on bad flags, 3 when the run could not be
// set up or was interrupted (Ctrl-C, SIGTERM: what was recorded until then
// is still checked and reported, durability aside). The same seed replays
// the same schedule (timing makes it the same schedule, not a bit-identical
// run).
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gwelb/gwelb/internal/childproc"
)

func main() { os.Exit(run()) }

func run() int {
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	profileName := fs.String("profile", "short", "short (about 3 minutes, CI) or long (about 25 minutes)")
	seed := fs.Uint64("seed", 0, "seed of every random choice; 0 picks one (printed, so the run can be replayed)")
	nodes := fs.Int("nodes", 3, "balancer nodes in the cluster (odd, at least 3)")
	out := fs.String("out", "chaos/out/report.json", "where to write the JSON report")
	netMode := fs.String("net", "auto", "auto (namespaces when root, else loopback), netns or loopback")
	bin := fs.String("bin", "bin", "directory with the built gwelb, gwelbctl and gwe-demo")
	keep := fs.Bool("keep", false, "keep the work directory (node data and logs) even when the run passes")
	duration := fs.Duration("duration", 0, "long profile: how long to keep drawing faults (default 25m)")
	faults := fs.String("faults", "", "comma-separated fault kinds to run instead of the profile's fixed list (to chase one bug)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "chaos: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	prof, err := profileNamed(*profileName, *nodes)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		return 2
	}
	if *duration > 0 && prof.duration > 0 {
		prof.duration = *duration
	}
	if *faults != "" {
		prof.steps = strings.Split(*faults, ",")
		for _, k := range prof.steps {
			if !slices.Contains(allKinds, k) {
				fmt.Fprintf(os.Stderr, "chaos: -faults: unknown kind %q; kinds: %s\n", k, strings.Join(allKinds, ", "))
				return 2
			}
		}
	}
	if *seed == 0 {
		*seed = rand.Uint64()%1_000_000_000 + 1
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	for _, b := range []string{"gwelb", "gwelbctl", "gwe-demo"} {
		if _, err := os.Stat(filepath.Join(*bin, b)); err != nil {
			fmt.Fprintf(os.Stderr, "chaos: %s/%s missing: run make build first\n", *bin, b)
			return 3
		}
	}
	absBin, err := filepath.Abs(*bin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		return 3
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	release, err := lockRun(ctx, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		return 3
	}
	defer release()

	work, err := os.MkdirTemp("", "gwchaos-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos: work dir:", err)
		return 3
	}
	log.Info("chaos run", "seed", *seed, "profile", prof.name, "nodes", prof.nodes, "work", work,
		"replay", fmt.Sprintf("go run ./chaos -profile %s -nodes %d -seed %d", prof.name, prof.nodes, *seed))
	d := &driver{
		log: log, prof: prof, seed: *seed, rng: rand.New(rand.NewPCG(*seed, 0)),
		bin: absBin, work: work, token: fmt.Sprintf("chaos-%d", *seed),
		ctlHTTP:  &http.Client{Timeout: 3 * time.Second},
		isolated: map[string]bool{}, transports: map[string]*http.Transport{},
	}
	net, err := newNetwork(ctx, log, *netMode)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos: network:", err)
		os.RemoveAll(work)
		return 3
	}
	d.net = net
	cleanup := func() {
		d.stopAll()
		net.close()
	}
	rep, err := d.execute(ctx)
	cleanup()
	if err != nil {
		fmt.Fprintf(os.Stderr, "chaos: %v (seed %d; node logs kept in %s)\n", err, *seed, work)
		return 3
	}
	if !rep.Passed || *keep {
		rep.WorkDir = work
	} else {
		os.RemoveAll(work)
	}
	if err := rep.write(*out); err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		return 3
	}
	if !rep.Passed {
		if err := d.writeHistory(rep.history, filepath.Join(filepath.Dir(*out), fmt.Sprintf("history-%d.json", *seed))); err != nil {
			log.Warn("history not written", "err", err)
		}
	}
	rep.print(os.Stdout, *out)
	switch {
	case !rep.Passed:
		return 1
	case rep.Interrupted:
		return 3
	}
	return 0
}

// execute sets the run up, runs the load and the schedule, takes the final
// state and checks the history.
func (d *driver) execute(ctx context.Context) (*Report, error) {
	d.rec = newRecorder(time.Now())
	if err := d.setup(ctx); err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	d.log.Info("cluster up", "network", d.networkName(), "nodes", d.prof.nodes)

	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	id := 0
	for i := range d.prof.visitors + d.prof.wsVisitors {
		id++
		pool := "backend"
		if i%2 == 1 {
			pool = "frontend"
		}
		v := &visitor{d: d, id: id, pool: pool, ws: i >= d.prof.visitors, rng: rand.New(rand.NewPCG(d.seed, uint64(1000+id)))}
		wg.Go(func() { v.run(loadCtx) })
	}
	for i := range d.prof.operators {
		o := &operator{d: d, id: i, rng: rand.New(rand.NewPCG(d.seed, uint64(2000+i)))}
		wg.Go(func() { o.run(loadCtx) })
	}
	if childproc.Sleep(ctx, d.prof.warmup) == nil {
		d.schedule(ctx)
		childproc.Sleep(ctx, d.prof.cooldown)
	}
	stopLoad()
	wg.Wait()
	interrupted := ctx.Err() != nil
	if interrupted {
		// Check what was recorded; durability needs the final read, skipped.
		d.log.Warn("interrupted: checking the history recorded so far")
	} else {
		d.log.Info("load stopped; reading the final state")
		d.final(ctx)
	}
	h := d.history()
	h.Partial = interrupted
	d.log.Info("checking", "requests", len(h.Requests), "admin ops", len(h.Admin), "probes", len(h.Agreement))
	rep := d.check(h)
	rep.Interrupted = interrupted
	return rep, nil
}

// final waits for the cluster to settle and records the final read and
// every node's final view of the extra members.
func (d *driver) final(ctx context.Context) {
	if _, err := d.waitRecovered(ctx, recoverWithin); err != nil {
		d.rec.violation(invAvailability, "at the end of the run: "+err.Error())
	}
	client := d.prof.operators
	for try := 0; try < 10 && ctx.Err() == nil; try++ {
		ns := sortedNames(d.connected())
		if len(ns) == 0 {
			break
		}
		idx, same := d.tableIndexes(ctx, ns, nil)
		if !same {
			childproc.Sleep(ctx, 200*time.Millisecond)
			continue
		}
		op := d.readMembers(ctx, ns[try%len(ns)], client)
		sts, errs := statuses(ctx, ns, time.Second)
		stable := op.Outcome == outOK
		var states []NodeState
		for i, n := range ns {
			if errs[i] != nil || sts[i].GetTableIndex() != idx[0] {
				stable = false
				break
			}
			ms := map[string]MemberVal{}
			for _, p := range sts[i].GetPools() {
				for _, m := range p.GetMembers() {
					k := key(m.GetMember().GetPool(), m.GetMember().GetRoute())
					for _, e := range d.extra {
						if e.key() == k {
							ms[k] = MemberVal{Present: true, Weight: m.GetMember().GetWeight(), State: stateName(m.GetMember().GetState())}
						}
					}
				}
			}
			states = append(states, NodeState{Node: n.name, TableIndex: sts[i].GetTableIndex(), Members: ms})
		}
		if stable {
			d.rec.addAdmin(op)
			d.rec.mu.Lock()
			d.rec.h.FinalNodes = states
			d.rec.mu.Unlock()
			return
		}
		childproc.Sleep(ctx, 200*time.Millisecond)
	}
	d.rec.violation(invDurability, "the nodes never settled at one table index with a successful final read")
}

// history finishes the recording and adds what the checkers need to know
// about the layout.
func (d *driver) history() *History {
	h := d.rec.finish()
	h.RouteServer, h.PoolServers = map[string]string{}, map[string][]string{}
	for _, s := range d.servers {
		h.RouteServer[key(s.pool, s.name)] = s.name
		h.PoolServers[s.pool] = append(h.PoolServers[s.pool], s.name)
	}
	for _, e := range d.extra {
		h.RouteServer[e.key()] = e.server.name
		h.Extra = append(h.Extra, e.key())
	}
	h.InsertPools = map[string]bool{"backend": true}
	h.Slack, h.Horizon = slack, 10*time.Second
	for _, n := range d.nodes {
		h.Nodes = append(h.Nodes, n.name)
	}
	return h
}

func (d *driver) networkName() string {
	if d.net.netns {
		return "netns (" + subnet + "0/24)"
	}
	return "loopback"
}
