package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/gwelb/gwelb/internal/childproc"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// driver runs one chaos run: it owns the processes, the network, the
// visitors, the operator and the fault schedule, and records the history.
type driver struct {
	log     *slog.Logger
	prof    profile
	seed    uint64
	rng     *rand.Rand // the fault schedule's; visitors and operators have their own, from the same seed
	bin     string
	work    string
	token   string
	net     *network
	rec     *recorder
	ctlHTTP *http.Client // the driver's own calls (readyz, demo health)

	servers []*server
	extra   []extraMember

	mu         sync.Mutex
	nodes      []*gnode // every node ever started
	dns        []*gnode // the nodes visitors and the operator pick from (DNS round robin)
	isolated   map[string]bool
	transports map[string]*http.Transport
	nextIdx    int

	// opMu: each operator call holds it shared; agreement probes hold it
	// exclusively so that the table stays put while nodes are compared.
	opMu sync.RWMutex

	faults      []*FaultRecord
	elections   []Election
	convergence []Convergence
}

// extraMember is a member the operator adds, changes and removes: a new
// route in a pool, pointing at an existing demo server.
type extraMember struct {
	pool, route string
	server      *server
}

func (e extraMember) key() string { return key(e.pool, e.route) }

// Election is how long the cluster was without a serving leader.
type Election struct {
	Fault int     `json:"fault"`
	Kind  string  `json:"kind"`
	Old   string  `json:"old,omitempty"`
	New   string  `json:"new"`
	Ms    float64 `json:"ms"`
}

// Convergence is how long a verdict took to reach every live node.
type Convergence struct {
	Fault  int     `json:"fault"`
	Server string  `json:"server"`
	Dir    string  `json:"dir"` // down or up
	Ms     float64 `json:"ms"`
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func (d *driver) now() T { return d.rec.now() }

// setup starts the demo servers and the cluster and waits for it to serve.
func (d *driver) setup(ctx context.Context) error {
	d.servers = d.newServers(3)
	for _, s := range d.servers {
		if !d.net.netns {
			if err := portFree(s.addr); err != nil {
				return err
			}
		}
		if err := d.startServer(ctx, s); err != nil {
			return err
		}
	}
	for i, b := range d.serversOf("backend") {
		d.extra = append(d.extra, extraMember{pool: "backend", route: "x" + strconv.Itoa(i+1), server: b})
	}
	for i, f := range d.serversOf("frontend")[:2] {
		d.extra = append(d.extra, extraMember{pool: "frontend", route: "GWE_F_X" + strconv.Itoa(i+1), server: f})
	}
	var join []string
	var nodes []*gnode
	for i := 1; i <= d.prof.nodes; i++ {
		name := "n" + strconv.Itoa(i)
		n, err := d.newNode(ctx, name, i)
		if err != nil {
			return err
		}
		join = append(join, n.gossipAddr)
		nodes = append(nodes, n)
	}
	d.nextIdx = d.prof.nodes + 1
	for _, n := range nodes {
		if err := d.writeConfig(n, d.prof.nodes, join); err != nil {
			return err
		}
	}
	for _, n := range nodes {
		if err := d.startNode(n); err != nil {
			return err
		}
		n.setMember(true)
	}
	d.mu.Lock()
	d.nodes = append(d.nodes, nodes...)
	d.dns = slices.Clone(nodes)
	d.mu.Unlock()
	if _, err := d.waitRecovered(ctx, 60*time.Second); err != nil {
		return fmt.Errorf("the cluster did not come up: %w", err)
	}
	return d.waitSeeded(ctx)
}

// waitSeeded waits until the leader's table holds the seed's pools.
func (d *driver) waitSeeded(ctx context.Context) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		l, err := d.leader(ctx, 10*time.Second)
		if err == nil {
			if st, err := l.status(ctx, time.Second); err == nil && len(st.GetPools()) == 2 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return errors.New("the member table was not seeded within 20s")
		}
		if err := childproc.Sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

// dnsNodes is what DNS round robin would return now.
func (d *driver) dnsNodes() []*gnode {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.dns)
}

// memberNodes are the nodes expected in the Raft configuration.
func (d *driver) memberNodes() []*gnode {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []*gnode
	for _, n := range d.nodes {
		if n.isMember() {
			out = append(out, n)
		}
	}
	return out
}

// connected are the live member nodes not cut off from their peers.
func (d *driver) connected() []*gnode {
	var out []*gnode
	for _, n := range d.memberNodes() {
		d.mu.Lock()
		iso := d.isolated[n.name]
		d.mu.Unlock()
		if n.live() && !iso {
			out = append(out, n)
		}
	}
	return out
}

// statuses asks every node of ns for its Status concurrently.
func statuses(ctx context.Context, ns []*gnode, timeout time.Duration) ([]*gwelbv1.StatusResponse, []error) {
	sts := make([]*gwelbv1.StatusResponse, len(ns))
	errs := make([]error, len(ns))
	var wg sync.WaitGroup
	for i, n := range ns {
		wg.Go(func() { sts[i], errs[i] = n.status(ctx, timeout) })
	}
	wg.Wait()
	return sts, errs
}

// leader waits until the connected nodes agree on a leader and returns it.
func (d *driver) leader(ctx context.Context, within time.Duration) (*gnode, error) {
	deadline := time.Now().Add(within)
	for {
		ns := d.connected()
		sts, errs := statuses(ctx, ns, time.Second)
		var name string
		agree := len(ns) > 0
		for i := range ns {
			if errs[i] != nil || sts[i].GetLeader() == "" || (name != "" && sts[i].GetLeader() != name) {
				agree = false
				break
			}
			name = sts[i].GetLeader()
		}
		if agree {
			for i, n := range ns {
				if n.name == name && sts[i].GetRaftState() == "Leader" {
					return n, nil
				}
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no agreed leader among %d nodes within %v", len(ns), within)
		}
		if err := childproc.Sleep(ctx, 50*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

// waitNewLeader waits until a node of among other than old says it is the
// leader, and tells when.
func (d *driver) waitNewLeader(ctx context.Context, among func() []*gnode, old string, within time.Duration) (string, T, error) {
	deadline := time.Now().Add(within)
	for {
		var ns []*gnode
		for _, n := range among() {
			if n.name != old {
				ns = append(ns, n)
			}
		}
		sts, errs := statuses(ctx, ns, 300*time.Millisecond)
		for i := range ns {
			if errs[i] == nil && sts[i].GetRaftState() == "Leader" {
				return ns[i].name, d.now(), nil
			}
		}
		if time.Now().After(deadline) {
			return "", 0, fmt.Errorf("no new leader (old %q) within %v", old, within)
		}
		if err := childproc.Sleep(ctx, 20*time.Millisecond); err != nil {
			return "", 0, err
		}
	}
}

// waitReady waits until the node's /readyz answers 200 and tells when.
func (d *driver) waitReady(ctx context.Context, n *gnode, within time.Duration) (T, error) {
	deadline := time.Now().Add(within)
	for {
		if d.ready(ctx, n) {
			return d.now(), nil
		}
		if !n.running() {
			return 0, fmt.Errorf("node %s exited (log %s)", n.name, n.logPath)
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("node %s not ready within %v", n.name, within)
		}
		if err := childproc.Sleep(ctx, 50*time.Millisecond); err != nil {
			return 0, err
		}
	}
}

// waitRecovered waits until every member node runs, is ready, agrees on
// one leader that has all of them as voters, and has applied everything
// the leader had applied when that was first true. It tells when.
func (d *driver) waitRecovered(ctx context.Context, within time.Duration) (T, error) {
	deadline := time.Now().Add(within)
	var target uint64
	why := ""
	for {
		ns := d.memberNodes()
		ok, reason, leaderApplied, minApplied := d.recoveredOnce(ctx, ns)
		if ok && target == 0 {
			target = leaderApplied
		}
		if ok && minApplied >= target {
			return d.now(), nil
		}
		if !ok {
			why = reason
		} else {
			why = fmt.Sprintf("nodes catching up: lowest applied index %d < %d", minApplied, target)
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("cluster not recovered within %v: %s", within, why)
		}
		if err := childproc.Sleep(ctx, 100*time.Millisecond); err != nil {
			return 0, err
		}
	}
}

func (d *driver) recoveredOnce(ctx context.Context, ns []*gnode) (ok bool, why string, leaderApplied, minApplied uint64) {
	for _, n := range ns {
		if !n.live() {
			return false, "node " + n.name + " is not running", 0, 0
		}
	}
	sts, errs := statuses(ctx, ns, time.Second)
	leader := ""
	var lst *gwelbv1.StatusResponse
	minApplied = ^uint64(0)
	for i, n := range ns {
		if errs[i] != nil {
			return false, errs[i].Error(), 0, 0
		}
		st := sts[i]
		if st.GetLeader() == "" || (leader != "" && st.GetLeader() != leader) {
			return false, fmt.Sprintf("node %s sees leader %q, others %q", n.name, st.GetLeader(), leader), 0, 0
		}
		leader = st.GetLeader()
		if st.GetNode() == leader {
			lst = st
		}
		minApplied = min(minApplied, st.GetAppliedIndex())
	}
	if lst == nil || lst.GetRaftState() != "Leader" {
		return false, fmt.Sprintf("leader %q is not a member node in state Leader", leader), 0, 0
	}
	voters := map[string]bool{}
	for _, p := range lst.GetPeers() {
		if p.GetSuffrage() == "Voter" {
			voters[p.GetId()] = true
		}
	}
	for _, n := range ns {
		if !voters[n.name] {
			return false, "node " + n.name + " is not a voter yet", 0, 0
		}
		if !d.ready(ctx, n) {
			return false, "node " + n.name + " is not ready", 0, 0
		}
	}
	return true, "", lst.GetAppliedIndex(), minApplied
}

// waitVerdict waits until every connected node's table has the verdict
// (down or up) for every member of s's pool on s's URL, and tells when.
func (d *driver) waitVerdict(ctx context.Context, s *server, down bool, within time.Duration) (T, error) {
	want := gwelbv1.Verdict_VERDICT_UP
	if down {
		want = gwelbv1.Verdict_VERDICT_DOWN
	}
	deadline := time.Now().Add(within)
	for {
		ns := d.connected()
		sts, errs := statuses(ctx, ns, time.Second)
		ok := len(ns) > 0
		for i := range ns {
			if errs[i] != nil || !verdictIs(sts[i], s, want) {
				ok = false
				break
			}
		}
		if ok {
			return d.now(), nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("verdict of %s not %v on every node within %v", s.name, want, within)
		}
		if err := childproc.Sleep(ctx, 50*time.Millisecond); err != nil {
			return 0, err
		}
	}
}

// verdictIs tells whether every member of s's pool on s's URL has verdict
// want in the node state st.
func verdictIs(st *gwelbv1.StatusResponse, s *server, want gwelbv1.Verdict) bool {
	for _, p := range st.GetPools() {
		if p.GetPool().GetName() != s.pool {
			continue
		}
		for _, m := range p.GetMembers() {
			if m.GetMember().GetUrl() == s.url && m.GetMember().GetVerdict() != want {
				return false
			}
		}
	}
	return true
}

// transport returns the HTTP transport that dials node n, whatever the
// URL's host: visitors use one host name for every node, as behind DNS
// round robin, so their cookie jars work across nodes.
func (d *driver) transport(n *gnode) *http.Transport {
	d.mu.Lock()
	defer d.mu.Unlock()
	if t := d.transports[n.name]; t != nil {
		return t
	}
	addr := n.httpAddr
	dialer := &net.Dialer{Timeout: 2 * time.Second}
	t := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, addr)
		},
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     30 * time.Second,
	}
	d.transports[n.name] = t
	return t
}

// stopAll ends every process the run started.
func (d *driver) stopAll() {
	d.mu.Lock()
	nodes := slices.Clone(d.nodes)
	d.mu.Unlock()
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Go(func() {
			if err := n.kill(); err != nil {
				d.log.Warn("stop node", "node", n.name, "err", err)
			}
		})
	}
	for _, s := range d.servers {
		wg.Go(func() {
			if err := s.kill(); err != nil {
				d.log.Warn("stop server", "server", s.name, "err", err)
			}
		})
	}
	wg.Wait()
	for _, t := range d.transports {
		t.CloseIdleConnections()
	}
}

// pick returns one of xs at random.
func pick[E any](r *rand.Rand, xs []E) E { return xs[r.IntN(len(xs))] }

// between returns a duration in [lo, hi).
func between(r *rand.Rand, lo, hi time.Duration) time.Duration {
	return lo + time.Duration(r.Int64N(int64(hi-lo)))
}

// sortedNames lists node names in order (for reproducible random picks).
func sortedNames(ns []*gnode) []*gnode {
	out := slices.Clone(ns)
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}
