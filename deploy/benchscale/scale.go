package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gwelb/gwelb/internal/childproc"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// cluster is the running nodes of the multi-node phase.
type cluster struct {
	nodes []*node
	hc    *http.Client
}

func (c *cluster) byName(name string) *node {
	for _, n := range c.nodes {
		if n.name == name {
			return n
		}
	}
	return nil
}

func (c *cluster) stop() {
	for _, n := range c.nodes {
		if err := n.stop(); err != nil {
			fmt.Printf("stop %s: %v\n", n.name, err)
		}
	}
}

// scalePhase runs the voters and non-voters and measures them.
func scalePhase(ctx context.Context, o options, work string, sec *secrets, servers []*gwe, r *report) error {
	total := o.voters + o.nonVoter
	members := make([]memberConfig, 0, len(servers))
	for _, g := range servers {
		members = append(members, memberConfig{g.name, g.url})
	}
	var retryJoin []string
	for i := range o.voters {
		retryJoin = append(retryJoin, fmt.Sprintf("127.0.0.1:%d", o.portBase+offGossip+i))
	}
	c := &cluster{hc: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true}}}
	defer c.stop()
	for i := range total {
		voter := i < o.voters
		name := fmt.Sprintf("n%02d", i+1)
		expect := o.voters
		if !voter {
			name, expect = fmt.Sprintf("nv%02d", i+1), 0
		}
		n, err := newNode(work, o.portBase, i, name, voter, expect, retryJoin, sec, members, "")
		if err != nil {
			return err
		}
		c.nodes = append(c.nodes, n)
	}
	t0 := time.Now()
	for _, n := range c.nodes {
		if err := n.start(o.bin, sec); err != nil {
			return err
		}
	}
	fmt.Printf("started %d voters and %d non-voters; waiting until the Raft configuration holds them all\n", o.voters, o.nonVoter)
	var elected time.Time
	if _, err := c.waitMembership(ctx, o.voters, o.nonVoter, 120*time.Second, &elected); err != nil {
		return err
	}
	r.add(fmt.Sprintf("%d voters + %d non-voters started -> all in the leader's Raft configuration (first leader known / admitting the rest)", o.voters, o.nonVoter),
		fmt.Sprintf("%.1f s (%.1f s / %.1f s)", time.Since(t0).Seconds(), elected.Sub(t0).Seconds(), time.Since(elected).Seconds()))
	fmt.Printf("all %d nodes in the Raft configuration (%.1f s); waiting until every node routes\n", total, time.Since(t0).Seconds())
	if err := c.waitRouting(ctx, 120*time.Second); err != nil {
		return err
	}
	leader, err := c.waitMembership(ctx, o.voters, o.nonVoter, 120*time.Second, nil) // it may have changed
	if err != nil {
		return err
	}
	r.add(fmt.Sprintf("%d voters + %d non-voters started -> all in the Raft configuration and routing", o.voters, o.nonVoter), fmt.Sprintf("%.1f s", time.Since(t0).Seconds()))
	fmt.Printf("all %d nodes route; leader %s (%.1f s); settling 5 s\n", total, leader.name, time.Since(t0).Seconds())
	// Let the joins' catch-up traffic and the first probes' observations
	// end before the idle window (pacing, not synchronisation).
	if err := childproc.Sleep(ctx, 5*time.Second); err != nil {
		return err
	}
	if err := c.idle(ctx, o, leader, servers, r); err != nil {
		return err
	}
	if err := c.changes(ctx, o, leader, r); err != nil {
		return err
	}
	return c.failover(ctx, leader, r)
}

// waitRouting waits until a sticky request through every node reaches the
// GWE server its cookie names.
func (c *cluster) waitRouting(ctx context.Context, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, len(c.nodes))
	for i, n := range c.nodes {
		wg.Go(func() {
			for {
				err := n.routeSticky(ctx, c.hc, "1")
				if err == nil {
					return
				}
				if n.proc.Exited() {
					errs[i] = fmt.Errorf("%s exited (log %s)", n.name, n.log)
					return
				}
				if childproc.Sleep(ctx, 200*time.Millisecond) != nil {
					errs[i] = fmt.Errorf("%s not routing after %v: %w (log %s)", n.name, d, err, n.log)
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// waitMembership waits until the leader's Raft configuration holds every
// node with its suffrage, and returns the leader. elected, if not nil, is
// set to when the first node polled first named a leader.
func (c *cluster) waitMembership(ctx context.Context, voters, nonVoters int, d time.Duration, elected *time.Time) (*node, error) {
	deadline := time.Now().Add(d)
	var last string
	for {
		if st, err := c.nodes[0].status(ctx, 2*time.Second); err == nil && st.GetLeader() != "" {
			if elected != nil && elected.IsZero() {
				*elected = time.Now()
			}
			if l := c.byName(st.GetLeader()); l != nil {
				if lst, err := l.status(ctx, 2*time.Second); err == nil && lst.GetRaftState() == "Leader" {
					v, nv := 0, 0
					for _, p := range lst.GetPeers() {
						switch p.GetSuffrage() {
						case "Voter":
							v++
						case "Nonvoter":
							nv++
						}
					}
					if v == voters && nv == nonVoters {
						return l, nil
					}
					last = fmt.Sprintf("leader %s has %d voters and %d non-voters", l.name, v, nv)
				}
			}
		} else if err != nil {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("membership not complete after %v: %s", d, last)
		}
		if err := childproc.Sleep(ctx, 250*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

// idle measures CPU, probe rates and RSS over a window without writes.
func (c *cluster) idle(ctx context.Context, o options, leader *node, servers []*gwe, r *report) error {
	fmt.Printf("idle window %v\n", o.idle)
	cpu0 := make([]time.Duration, len(c.nodes))
	for i, n := range c.nodes {
		var err error
		if cpu0[i], err = cpuTime(n.proc.Pid()); err != nil {
			return err
		}
	}
	probes0 := make([]int64, len(servers))
	for i, g := range servers {
		probes0[i] = g.probes.Load()
	}
	busy0, err := machineBusy()
	if err != nil {
		return err
	}
	t0 := time.Now()
	if err := childproc.Sleep(ctx, o.idle); err != nil { // the measurement window
		return err
	}
	el := time.Since(t0)
	busy1, err := machineBusy()
	if err != nil {
		return err
	}
	var leaderCPU, sum float64
	var voterCPU, nvCPU []float64
	for i, n := range c.nodes {
		cpu1, err := cpuTime(n.proc.Pid())
		if err != nil {
			return err
		}
		f := (cpu1 - cpu0[i]).Seconds() / el.Seconds()
		sum += f
		switch {
		case n == leader:
			leaderCPU = f
		case n.voter:
			voterCPU = append(voterCPU, f)
		default:
			nvCPU = append(nvCPU, f)
		}
	}
	r.check("idle CPU of the leader (share of one core, "+o.idle.String()+")", pct(leaderCPU), "<= 5%", leaderCPU <= 0.05)
	r.add("idle CPU of a voting follower (min / median / max)", stats(voterCPU, pct))
	r.add("idle CPU of a non-voter (min / median / max)", stats(nvCPU, pct))
	r.add(fmt.Sprintf("idle CPU of all %d nodes together / the whole machine", len(c.nodes)),
		fmt.Sprintf("%.2f cores / %.2f of %d cores busy", sum, (busy1-busy0).Seconds()/el.Seconds(), numCPU()))
	var rates []string
	for i, g := range servers {
		rate := float64(g.probes.Load()-probes0[i]) / el.Seconds()
		rates = append(rates, fmt.Sprintf("%s %.2f/s", g.name, rate))
	}
	r.add("health probes per GWE server (default 2 s interval; voters probe, non-voters do not)", fmt.Sprint(rates))
	var leaderRSS int64
	var voterRSS, nvRSS []float64
	for _, n := range c.nodes {
		b, err := rssBytes(n.proc.Pid())
		if err != nil {
			return err
		}
		switch {
		case n == leader:
			leaderRSS = b
		case n.voter:
			voterRSS = append(voterRSS, float64(b))
		default:
			nvRSS = append(nvRSS, float64(b))
		}
	}
	mibf := func(f float64) string { return mib(int64(f)) }
	r.add("RSS: leader / voting followers (min / median / max) / non-voters (min / median / max)",
		fmt.Sprintf("%s / %s / %s", mib(leaderRSS), stats(voterRSS, mibf), stats(nvRSS, mibf)))
	return nil
}

// watchSet follows every node's Watch stream: when each node's table first
// reached each index.
type watchSet struct {
	mu     sync.Mutex
	wake   chan struct{} // closed and replaced on every event
	latest []uint64      // per node: the newest table index seen
	at     []time.Time   // per node: when latest arrived
}

// watch opens a Watch stream on every node.
func (c *cluster) watch(ctx context.Context) (*watchSet, error) {
	w := &watchSet{wake: make(chan struct{}), latest: make([]uint64, len(c.nodes)), at: make([]time.Time, len(c.nodes))}
	var ready sync.WaitGroup
	errc := make(chan error, len(c.nodes))
	for i, n := range c.nodes {
		ready.Add(1)
		go func() {
			stream, err := n.api.Watch(ctx, &gwelbv1.WatchRequest{})
			if err != nil {
				errc <- fmt.Errorf("watch %s: %w", n.name, err)
				ready.Done()
				return
			}
			first := true
			for {
				ev, err := stream.Recv()
				if err != nil {
					if first {
						errc <- fmt.Errorf("watch %s: %w", n.name, err)
						ready.Done()
					}
					return
				}
				now := time.Now()
				w.mu.Lock()
				if ev.GetTableIndex() > w.latest[i] {
					w.latest[i], w.at[i] = ev.GetTableIndex(), now
				}
				close(w.wake)
				w.wake = make(chan struct{})
				w.mu.Unlock()
				if first {
					first = false
					ready.Done()
				}
			}
		}()
	}
	ready.Wait()
	close(errc)
	return w, errors.Join(slices.Collect(func(yield func(error) bool) {
		for err := range errc {
			if !yield(err) {
				return
			}
		}
	})...)
}

// waitIndex waits until every node in live has a table at index >= idx
// and returns when each got there (for a node that was there before the
// write, the time of its event).
func (w *watchSet) waitIndex(ctx context.Context, idx uint64, live []int, d time.Duration) ([]time.Time, error) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		w.mu.Lock()
		done, out := true, make([]time.Time, 0, len(live))
		for _, i := range live {
			if w.latest[i] < idx {
				done = false
				break
			}
			out = append(out, w.at[i])
		}
		wake := w.wake
		w.mu.Unlock()
		if done {
			return out, nil
		}
		select {
		case <-wake:
		case <-timer.C:
			return nil, fmt.Errorf("not every node reached index %d within %v", idx, d)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// changes drains and re-activates member x through the leader and times
// each change until every node's table has it.
func (c *cluster) changes(ctx context.Context, o options, leader *node, r *report) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := c.watch(wctx)
	if err != nil {
		return err
	}
	live := make([]int, len(c.nodes))
	for i := range live {
		live[i] = i
	}
	fmt.Printf("%d member changes through the leader, each timed until all %d nodes show it\n", o.changes, len(c.nodes))
	var all, acks, perNode []time.Duration
	for k := range o.changes {
		state := gwelbv1.AdminState_ADMIN_STATE_DRAIN
		if k%2 == 1 {
			state = gwelbv1.AdminState_ADMIN_STATE_ACTIVE
		}
		wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
		t0 := time.Now()
		resp, err := leader.api.SetMemberState(wctx, &gwelbv1.SetMemberStateRequest{Pool: "backend", Route: "x", State: state, RequestId: fmt.Sprintf("benchscale-%d-%d", t0.UnixNano(), k)})
		ack := time.Since(t0)
		wcancel()
		if err != nil {
			return fmt.Errorf("change %d: %w", k, err)
		}
		at, err := w.waitIndex(ctx, resp.GetIndex(), live, 5*time.Second)
		if err != nil {
			return fmt.Errorf("change %d: %w", k, err)
		}
		var slowest time.Duration
		for _, t := range at {
			d := max(t.Sub(t0), 0)
			perNode = append(perNode, d)
			slowest = max(slowest, d)
		}
		all, acks = append(all, slowest), append(acks, ack)
		if err := childproc.Sleep(ctx, 100*time.Millisecond); err != nil { // pacing: one change at a time
			return err
		}
	}
	r.check(fmt.Sprintf("member change -> visible on all %d nodes (Watch), %d changes: p50 / p99 / max", len(c.nodes), o.changes),
		fmt.Sprintf("%s / %s / %s", ms(quantile(all, 0.5)), ms(quantile(all, 0.99)), ms(quantile(all, 1))), "p99 < 100 ms", quantile(all, 0.99) < 100*time.Millisecond)
	r.add("  the same per node (p50 / p99) / the write acknowledged by the leader (p50 / p99)",
		fmt.Sprintf("%s / %s ; %s / %s", ms(quantile(perNode, 0.5)), ms(quantile(perNode, 0.99)), ms(quantile(acks, 0.5)), ms(quantile(acks, 0.99))))
	return nil
}

// failover SIGKILLs the leader while sticky requests go through every
// other node, and times the election.
func (c *cluster) failover(ctx context.Context, old *node, r *report) error {
	var rest, voters []*node
	for _, n := range c.nodes {
		if n != old {
			rest = append(rest, n)
			if n.voter {
				voters = append(voters, n)
			}
		}
	}
	// Sticky traffic: every surviving node, one request each 100 ms,
	// cookies cycling over routes 1-3.
	tctx, stopTraffic := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var sent, failed atomic.Int64
	var failMu sync.Mutex
	var failures []string
	failedNodes := map[string]int{}
	for _, n := range rest {
		wg.Go(func() {
			for k := 0; ; k++ {
				if tctx.Err() != nil {
					return
				}
				err := n.routeSticky(tctx, c.hc, []string{"1", "2", "3"}[k%3])
				if tctx.Err() != nil {
					return
				}
				sent.Add(1)
				if err != nil {
					failed.Add(1)
					failMu.Lock()
					failedNodes[n.name]++
					if len(failures) < 5 {
						failures = append(failures, err.Error())
					}
					failMu.Unlock()
				}
				if childproc.Sleep(tctx, 100*time.Millisecond) != nil {
					return
				}
			}
		})
	}
	defer func() { stopTraffic(); wg.Wait() }()
	if err := childproc.Sleep(ctx, time.Second); err != nil { // traffic before the kill
		return err
	}
	fmt.Printf("SIGKILL leader %s\n", old.name)
	tKill := time.Now()
	if err := old.proc.Kill(); err != nil {
		return err
	}
	// Writes through a surviving voter, forwarded to whichever leader
	// there is, until one is acknowledged.
	writeAck := make(chan time.Duration, 1)
	go func() {
		for k := 0; ctx.Err() == nil; k++ {
			wctx, cancel := context.WithTimeout(ctx, time.Second)
			_, err := voters[0].api.SetMemberState(wctx, &gwelbv1.SetMemberStateRequest{Pool: "backend", Route: "x", State: gwelbv1.AdminState_ADMIN_STATE_ACTIVE, RequestId: fmt.Sprintf("benchscale-failover-%d-%d", tKill.UnixNano(), k)})
			cancel()
			if err == nil {
				writeAck <- time.Since(tKill)
				return
			}
			if childproc.Sleep(ctx, 20*time.Millisecond) != nil {
				return
			}
		}
	}()
	// The election: poll the surviving voters every 10 ms.
	var elected time.Duration
	var newLeader string
	deadline := time.Now().Add(15 * time.Second)
	for newLeader == "" {
		var mu sync.Mutex
		var pw sync.WaitGroup
		for _, n := range voters {
			pw.Go(func() {
				if st, err := n.status(ctx, 500*time.Millisecond); err == nil && st.GetRaftState() == "Leader" {
					mu.Lock()
					if newLeader == "" {
						newLeader, elected = n.name, time.Since(tKill)
					}
					mu.Unlock()
				}
			})
		}
		pw.Wait()
		if newLeader != "" {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no new leader 15 s after killing %s", old.name)
		}
		if err := childproc.Sleep(ctx, 10*time.Millisecond); err != nil {
			return err
		}
	}
	firstLeader := newLeader
	// Every surviving node names the same leader, which says it leads (the
	// first one elected may have lost it again: elections under load churn).
	var allKnow time.Duration
	var named map[string]int
	for allKnow == 0 {
		var mu sync.Mutex
		named = map[string]int{}
		leads := map[string]bool{}
		var pw sync.WaitGroup
		for _, n := range rest {
			pw.Go(func() {
				st, err := n.status(ctx, time.Second)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					named["(no answer)"]++
					return
				}
				named[st.GetLeader()]++
				if st.GetRaftState() == "Leader" {
					leads[n.name] = true
				}
			})
		}
		pw.Wait()
		for name, k := range named {
			if k == len(rest) && name != "" && name != old.name && leads[name] {
				allKnow, newLeader = time.Since(tKill), name
			}
		}
		if allKnow != 0 {
			break
		}
		if time.Now().After(deadline) {
			break
		}
		if err := childproc.Sleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
	var ack time.Duration
	select {
	case ack = <-writeAck:
	case <-time.After(15 * time.Second):
		return errors.New("no write acknowledged 15 s after the kill")
	}
	// Traffic goes on 2 s after the last node knows the leader.
	if err := childproc.Sleep(ctx, 2*time.Second); err != nil {
		return err
	}
	window := time.Since(tKill) + time.Second
	stopTraffic()
	wg.Wait()
	r.check(fmt.Sprintf("leader %s SIGKILLed -> a new leader (%s first)", old.name, firstLeader), ms(elected), "< 1.5 s", elected < 1500*time.Millisecond)
	know := "not within 15 s: " + fmt.Sprint(named)
	if allKnow != 0 {
		know = fmt.Sprintf("%s (%s)", ms(allKnow), newLeader)
	}
	r.add(fmt.Sprintf("  -> all %d surviving nodes name one leader / next write acknowledged", len(rest)), fmt.Sprintf("%s / %s", know, ms(ack)))
	failMu.Lock()
	defer failMu.Unlock()
	r.check(fmt.Sprintf("sticky requests through the %d other nodes during the failover (%.1f s, every node each 100 ms)", len(rest), window.Seconds()),
		fmt.Sprintf("%d sent, %d failed or misrouted (on %d nodes)", sent.Load(), failed.Load(), len(failedNodes)), "every node keeps routing", failed.Load() == 0)
	for _, f := range failures {
		r.note("failover request failure: %s", f)
	}
	return nil
}
