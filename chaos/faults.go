package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/gwelb/gwelb/internal/childproc"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// Fault kinds.
const (
	kKillLeader      = "kill-leader"              // SIGKILL the leader, restart it
	kKillFollower    = "kill-follower"            // SIGKILL a follower, restart it
	kKillTwo         = "kill-two-followers"       // five nodes: SIGKILL two followers at once
	kPause           = "pause-node"               // SIGSTOP a node, SIGCONT it
	kPartFollower    = "partition-follower"       // cut a follower off from its peers
	kPartLeader      = "partition-leader"         // cut the leader off from its peers
	kRestartNode     = "restart-node"             // SIGTERM (graceful leave) a follower, start it again
	kRestartLeader   = "restart-leader"           // SIGTERM (leadership handed over) the leader, start it again
	kRestartCluster  = "restart-cluster"          // SIGKILL every node, start them all
	kGWEKill         = "gwe-kill"                 // SIGKILL a GWE server, restart it on its address
	kGWEHealth       = "gwe-health-down"          // a GWE server fails its health check, then passes
	kGWEFollowerDown = "gwe-kill-while-node-down" // a GWE server dies while a follower is dead
	kJoinLeave       = "join-leave"               // gwelbctl join a new node under load, then leave
)

// allKinds lists every fault kind.
var allKinds = []string{kKillLeader, kKillFollower, kKillTwo, kPause, kPartFollower, kPartLeader, kRestartNode, kRestartLeader,
	kRestartCluster, kGWEKill, kGWEHealth, kGWEFollowerDown, kJoinLeave}

// partitionKinds need network namespaces.
var partitionKinds = []string{kPartFollower, kPartLeader}

// Timing of the recovery a fault must reach, and slack around windows.
const (
	recoverWithin = 45 * time.Second
	electWithin   = 20 * time.Second
	verdictWithin = 20 * time.Second
	slack         = time.Second // propagation slack at the end of excuse windows
)

// errRecovery ends the schedule: the cluster did not come back.
var errRecovery = errors.New("cluster did not recover")

// FaultRecord is one injected fault, for the report.
type FaultRecord struct {
	ID         int      `json:"id"`
	Kind       string   `json:"kind"`
	Target     string   `json:"target,omitempty"`
	Role       string   `json:"role,omitempty"`
	Server     string   `json:"server,omitempty"`
	StartS     float64  `json:"start_s"`
	EndS       float64  `json:"end_s"`
	HoldMs     float64  `json:"hold_ms,omitempty"`
	ElectionMs float64  `json:"election_ms,omitempty"`
	DownMs     float64  `json:"verdict_down_ms,omitempty"`
	UpMs       float64  `json:"verdict_up_ms,omitempty"`
	RecoverMs  float64  `json:"recover_ms,omitempty"`
	Notes      []string `json:"notes,omitempty"`
	Error      string   `json:"error,omitempty"`
}

// schedule runs the profile's faults one after another.
func (d *driver) schedule(ctx context.Context) {
	start := time.Now()
	kinds := d.prof.plan(d.rng, d.net.netns, d.prof.nodes)
	for i := 0; ctx.Err() == nil; i++ {
		var kind string
		switch {
		case i < len(kinds):
			kind = kinds[i]
		case d.prof.duration > 0 && time.Since(start) < d.prof.duration:
			kind = d.prof.draw(d.rng, d.net.netns, d.prof.nodes)
		default:
			return
		}
		f := &FaultRecord{ID: i + 1, Kind: kind, StartS: d.now().Seconds()}
		d.mu.Lock()
		d.faults = append(d.faults, f)
		d.mu.Unlock()
		d.log.Info("fault", "id", f.ID, "kind", kind)
		err := d.runStep(ctx, f)
		f.EndS = d.now().Seconds()
		if err != nil {
			f.Error = err.Error()
			if ctx.Err() != nil {
				return
			}
			d.log.Error("fault step failed", "id", f.ID, "kind", kind, "err", err)
			if errors.Is(err, errRecovery) {
				d.rec.violation(invAvailability, fmt.Sprintf("fault %d (%s): %v", f.ID, kind, err))
				return
			}
		} else {
			d.log.Info("fault done", "id", f.ID, "kind", kind, "target", f.Target, "server", f.Server,
				"election_ms", f.ElectionMs, "down_ms", f.DownMs, "up_ms", f.UpMs, "recover_ms", f.RecoverMs)
		}
		if childproc.Sleep(ctx, between(d.rng, 2*time.Second, 4*time.Second)) != nil {
			return
		}
	}
}

func (d *driver) runStep(ctx context.Context, f *FaultRecord) error {
	switch f.Kind {
	case kKillLeader:
		return d.stepKill(ctx, f, true, 1)
	case kKillFollower:
		return d.stepKill(ctx, f, false, 1)
	case kKillTwo:
		return d.stepKill(ctx, f, false, 2)
	case kPause:
		return d.stepPause(ctx, f)
	case kPartFollower:
		return d.stepPartition(ctx, f, false)
	case kPartLeader:
		return d.stepPartition(ctx, f, true)
	case kRestartNode:
		return d.stepRestartNode(ctx, f, false)
	case kRestartLeader:
		return d.stepRestartNode(ctx, f, true)
	case kRestartCluster:
		return d.stepRestartCluster(ctx, f)
	case kGWEKill:
		return d.stepGWE(ctx, f, true, false)
	case kGWEHealth:
		return d.stepGWE(ctx, f, false, false)
	case kGWEFollowerDown:
		return d.stepGWE(ctx, f, true, true)
	case kJoinLeave:
		return d.stepJoinLeave(ctx, f)
	}
	return fmt.Errorf("unknown fault kind %q", f.Kind)
}

// recovered waits for the cluster to recover after a fault and records
// how long it took from healedAt.
func (d *driver) recovered(ctx context.Context, f *FaultRecord, healedAt T) (T, error) {
	at, err := d.waitRecovered(ctx, recoverWithin)
	if err != nil {
		return d.now(), fmt.Errorf("%w: %v", errRecovery, err)
	}
	f.RecoverMs = ms(at - healedAt)
	return at, nil
}

// followers returns the connected nodes but the leader, in name order.
func (d *driver) followers(leader *gnode) []*gnode {
	var out []*gnode
	for _, n := range sortedNames(d.connected()) {
		if n != leader {
			out = append(out, n)
		}
	}
	return out
}

func (d *driver) election(f *FaultRecord, kind, old, newLeader string, from, at T) {
	f.ElectionMs = ms(at - from)
	d.mu.Lock()
	d.elections = append(d.elections, Election{Fault: f.ID, Kind: kind, Old: old, New: newLeader, Ms: f.ElectionMs})
	d.mu.Unlock()
}

// stepKill SIGKILLs the leader or count followers, waits, restarts them.
func (d *driver) stepKill(ctx context.Context, f *FaultRecord, leader bool, count int) error {
	hold := between(d.rng, 2*time.Second, 4*time.Second)
	choice := d.rng.Uint64()
	l, err := d.leader(ctx, electWithin)
	if err != nil {
		return fmt.Errorf("%w: %v", errRecovery, err)
	}
	targets := []*gnode{l}
	f.Role = "leader"
	if !leader {
		fs := d.followers(l)
		if len(fs) < count {
			return fmt.Errorf("only %d followers", len(fs))
		}
		i := int(choice % uint64(len(fs)))
		targets = nil
		for k := range count {
			targets = append(targets, fs[(i+k)%len(fs)])
		}
		f.Role = "follower"
	}
	for _, t := range targets {
		f.Target += t.name + " "
	}
	f.Target = f.Target[:len(f.Target)-1]
	f.HoldMs = ms(hold)
	t0 := d.now()
	why := fmt.Sprintf("fault %d: %s %s", f.ID, f.Kind, f.Target)
	var down, stale []int
	for _, t := range targets {
		down = append(down, d.rec.openWin(winNodeDown, t.name, t0, why))
		stale = append(stale, d.rec.openWin(winNodeStale, t.name, t0, why))
	}
	trouble := -1
	if leader {
		trouble = d.rec.openWin(winLeaderTrouble, "", t0, why)
	}
	for _, t := range targets {
		if err := t.kill(); err != nil {
			return err
		}
	}
	if leader {
		name, at, err := d.waitNewLeader(ctx, d.connected, l.name, electWithin)
		if err != nil {
			return fmt.Errorf("%w: %v", errRecovery, err)
		}
		d.election(f, f.Kind, l.name, name, t0, at)
	}
	if err := childproc.Sleep(ctx, hold); err != nil {
		return err
	}
	healed := d.now()
	for i, t := range targets {
		if err := d.startNode(t); err != nil {
			return err
		}
		at, err := d.waitReady(ctx, t, recoverWithin)
		if err != nil {
			return fmt.Errorf("%w: %v", errRecovery, err)
		}
		d.rec.closeWin(down[i], at)
	}
	at, err := d.recovered(ctx, f, healed)
	for _, w := range stale {
		d.rec.closeWin(w, at+slack/4)
	}
	if trouble >= 0 {
		d.rec.closeWin(trouble, at)
	}
	return err
}

// stepPause SIGSTOPs a node (leader or follower), then SIGCONTs it.
func (d *driver) stepPause(ctx context.Context, f *FaultRecord) error {
	hold := between(d.rng, 3*time.Second, 5*time.Second)
	choice := d.rng.Uint64()
	l, err := d.leader(ctx, electWithin)
	if err != nil {
		return fmt.Errorf("%w: %v", errRecovery, err)
	}
	ns := sortedNames(d.connected())
	t := ns[int(choice%uint64(len(ns)))]
	f.Target, f.Role, f.HoldMs = t.name, "follower", ms(hold)
	if t == l {
		f.Role = "leader"
	}
	t0 := d.now()
	why := fmt.Sprintf("fault %d: %s %s", f.ID, f.Kind, t.name)
	down := d.rec.openWin(winNodeDown, t.name, t0, why)
	stale := d.rec.openWin(winNodeStale, t.name, t0, why)
	trouble := -1
	if t == l {
		trouble = d.rec.openWin(winLeaderTrouble, "", t0, why)
	}
	if err := t.signal(syscall.SIGSTOP); err != nil {
		return err
	}
	if t == l {
		name, at, err := d.waitNewLeader(ctx, d.connected, l.name, electWithin)
		if err != nil {
			t.signal(syscall.SIGCONT)
			return fmt.Errorf("%w: %v", errRecovery, err)
		}
		d.election(f, f.Kind, l.name, name, t0, at)
	}
	if err := childproc.Sleep(ctx, hold-(d.now()-t0)); err != nil && ctx.Err() != nil {
		t.signal(syscall.SIGCONT)
		return err
	}
	if err := t.signal(syscall.SIGCONT); err != nil {
		return err
	}
	healed := d.now()
	// Requests queued while it was stopped are answered once it runs.
	d.rec.closeWin(down, healed+slack)
	at, err := d.recovered(ctx, f, healed)
	d.rec.closeWin(stale, at+slack/4)
	if trouble >= 0 {
		d.rec.closeWin(trouble, at)
	}
	return err
}

// stepPartition cuts a node off from its peers, then heals it.
func (d *driver) stepPartition(ctx context.Context, f *FaultRecord, leader bool) error {
	hold := between(d.rng, 3*time.Second, 5*time.Second)
	choice := d.rng.Uint64()
	l, err := d.leader(ctx, electWithin)
	if err != nil {
		return fmt.Errorf("%w: %v", errRecovery, err)
	}
	t, role := l, "leader"
	if !leader {
		fs := d.followers(l)
		t, role = fs[int(choice%uint64(len(fs)))], "follower"
	}
	f.Target, f.Role, f.HoldMs = t.name, role, ms(hold)
	t0 := d.now()
	why := fmt.Sprintf("fault %d: %s %s", f.ID, f.Kind, t.name)
	iso := d.rec.openWin(winNodeIsolated, t.name, t0, why)
	stale := d.rec.openWin(winNodeStale, t.name, t0, why)
	trouble := -1
	if leader {
		trouble = d.rec.openWin(winLeaderTrouble, "", t0, why)
	}
	d.mu.Lock()
	d.isolated[t.name] = true
	d.mu.Unlock()
	heal := func() error {
		d.mu.Lock()
		delete(d.isolated, t.name)
		d.mu.Unlock()
		return d.net.heal(context.Background(), t.name)
	}
	if err := d.net.isolate(ctx, t.name); err != nil {
		heal()
		return err
	}
	if leader {
		name, at, err := d.waitNewLeader(ctx, d.connected, l.name, electWithin)
		if err != nil {
			heal()
			return fmt.Errorf("%w: %v", errRecovery, err)
		}
		d.election(f, f.Kind, l.name, name, t0, at)
	}
	if err := childproc.Sleep(ctx, hold-(d.now()-t0)); err != nil && ctx.Err() != nil {
		heal()
		return err
	}
	if err := heal(); err != nil {
		return err
	}
	healed := d.now()
	at, err := d.recovered(ctx, f, healed)
	d.rec.closeWin(iso, at)
	d.rec.closeWin(stale, at+slack/4)
	if trouble >= 0 {
		d.rec.closeWin(trouble, at)
	}
	return err
}

// stepRestartNode stops the leader or a follower with SIGTERM (it leaves
// the cluster gracefully: leadership handed over, removed from the Raft
// configuration), then starts it again on the same data directory; it
// must rejoin as a voter.
func (d *driver) stepRestartNode(ctx context.Context, f *FaultRecord, leader bool) error {
	hold := between(d.rng, time.Second, 2*time.Second)
	choice := d.rng.Uint64()
	l, err := d.leader(ctx, electWithin)
	if err != nil {
		return fmt.Errorf("%w: %v", errRecovery, err)
	}
	t := l
	if !leader {
		fs := d.followers(l)
		t = fs[int(choice%uint64(len(fs)))]
	}
	f.Target, f.Role, f.HoldMs = t.name, "follower", ms(hold)
	if t == l {
		f.Role = "leader"
	}
	t0 := d.now()
	why := fmt.Sprintf("fault %d: %s %s", f.ID, f.Kind, t.name)
	down := d.rec.openWin(winNodeDown, t.name, t0, why)
	stale := d.rec.openWin(winNodeStale, t.name, t0, why)
	trouble := -1
	if t == l {
		trouble = d.rec.openWin(winLeaderTrouble, "", t0, why)
	}
	t.setMember(false)
	if err := t.signal(syscall.SIGTERM); err != nil {
		return err
	}
	if t == l {
		name, at, err := d.waitNewLeader(ctx, d.connected, l.name, electWithin)
		if err != nil {
			return fmt.Errorf("%w: %v", errRecovery, err)
		}
		d.election(f, f.Kind, l.name, name, t0, at)
	}
	if err := t.waitExit(ctx, 25*time.Second); err != nil {
		f.Notes = append(f.Notes, "SIGTERM did not stop it within 25s; goroutines dumped into its log (SIGQUIT), killed")
		d.rec.violation(invAvailability, fmt.Sprintf("fault %d: node %s did not shut down within 25 s of SIGTERM (goroutine dump in %s)", f.ID, t.name, t.logPath))
		t.dumpAndKill()
	}
	if err := childproc.Sleep(ctx, hold); err != nil {
		return err
	}
	healed := d.now()
	if err := d.startNode(t); err != nil {
		return err
	}
	at, err := d.waitReady(ctx, t, recoverWithin)
	if err != nil {
		return fmt.Errorf("%w: %v", errRecovery, err)
	}
	d.rec.closeWin(down, at)
	t.setMember(true)
	at, err = d.recovered(ctx, f, healed)
	d.rec.closeWin(stale, at+slack/4)
	if trouble >= 0 {
		d.rec.closeWin(trouble, at)
	}
	return err
}

// stepRestartCluster SIGKILLs every node and starts them all again.
func (d *driver) stepRestartCluster(ctx context.Context, f *FaultRecord) error {
	hold := between(d.rng, time.Second, 2*time.Second)
	ns := sortedNames(d.memberNodes())
	f.Target, f.Role, f.HoldMs = "all", "all", ms(hold)
	t0 := d.now()
	why := fmt.Sprintf("fault %d: %s", f.ID, f.Kind)
	down := map[string]int{}
	var stale []int
	for _, n := range ns {
		down[n.name] = d.rec.openWin(winNodeDown, n.name, t0, why)
		stale = append(stale, d.rec.openWin(winNodeStale, n.name, t0, why))
	}
	trouble := d.rec.openWin(winLeaderTrouble, "", t0, why)
	var wg sync.WaitGroup
	for _, n := range ns {
		wg.Go(func() { n.kill() })
	}
	wg.Wait()
	if err := childproc.Sleep(ctx, hold); err != nil {
		return err
	}
	healed := d.now()
	for _, n := range ns {
		if err := d.startNode(n); err != nil {
			return err
		}
	}
	name, at, err := d.waitNewLeader(ctx, d.connected, "", electWithin)
	if err != nil {
		return fmt.Errorf("%w: %v", errRecovery, err)
	}
	d.election(f, f.Kind, "", name, healed, at)
	for _, n := range ns {
		at, err := d.waitReady(ctx, n, recoverWithin)
		if err != nil {
			return fmt.Errorf("%w: %v", errRecovery, err)
		}
		d.rec.closeWin(down[n.name], at)
	}
	at, err = d.recovered(ctx, f, healed)
	for _, w := range stale {
		d.rec.closeWin(w, at+slack/4)
	}
	d.rec.closeWin(trouble, at)
	return err
}

// stepGWE takes a GWE server out (SIGKILL, or a failing health check),
// measures how fast every node routes around it, checks that they agree
// on the replacement, brings it back and measures how fast they route to
// it again. With nodeDown, a follower is dead meanwhile, so the verdict
// needs every surviving node's observation.
func (d *driver) stepGWE(ctx context.Context, f *FaultRecord, kill, nodeDown bool) error {
	srv := d.servers[d.rng.IntN(len(d.servers))]
	hold := between(d.rng, 2*time.Second, 4*time.Second)
	choice := d.rng.Uint64()
	f.Server, f.HoldMs = srv.pool+"/"+srv.name, ms(hold)
	var follower *gnode
	var fDown, fStale int
	if nodeDown {
		l, err := d.leader(ctx, electWithin)
		if err != nil {
			return fmt.Errorf("%w: %v", errRecovery, err)
		}
		fs := d.followers(l)
		follower = fs[int(choice%uint64(len(fs)))]
		f.Target, f.Role = follower.name, "follower"
		t := d.now()
		why := fmt.Sprintf("fault %d: %s %s", f.ID, f.Kind, follower.name)
		fDown = d.rec.openWin(winNodeDown, follower.name, t, why)
		fStale = d.rec.openWin(winNodeStale, follower.name, t, why)
		if err := follower.kill(); err != nil {
			return err
		}
	}
	t0 := d.now()
	why := fmt.Sprintf("fault %d: %s %s", f.ID, f.Kind, srv.name)
	sd := d.rec.openWin(winServerDown, srv.name, t0, why)
	sk := -1
	if kill {
		sk = d.rec.openWin(winServerKilled, srv.name, t0, why)
		if err := srv.kill(); err != nil {
			return err
		}
	} else if err := d.setHealth(ctx, srv, false); err != nil {
		return err
	}
	downAt, err := d.waitVerdict(ctx, srv, true, verdictWithin)
	if err != nil {
		d.rec.violation(invAvailability, fmt.Sprintf("fault %d: %v", f.ID, err))
		downAt = d.now()
	} else {
		f.DownMs = ms(downAt - t0)
		d.addConvergence(f, srv, "down", f.DownMs)
	}
	if sk >= 0 {
		d.rec.closeWin(sk, downAt+slack)
	}
	d.probeAgreement(ctx, f, srv)
	if err := childproc.Sleep(ctx, hold); err != nil {
		return err
	}
	t1 := d.now()
	if kill {
		if err := d.startServer(ctx, srv); err != nil {
			return err
		}
	} else if err := d.setHealth(ctx, srv, true); err != nil {
		return err
	}
	upAt, err := d.waitVerdict(ctx, srv, false, verdictWithin)
	if err != nil {
		d.rec.violation(invAvailability, fmt.Sprintf("fault %d: %v", f.ID, err))
		upAt = d.now()
	} else {
		f.UpMs = ms(upAt - t1)
		d.addConvergence(f, srv, "up", f.UpMs)
	}
	// Nodes that saw the connection refused keep the member quarantined
	// for fail_timeout after the last failure.
	end := upAt
	if kill {
		end = max(end, t1+failTimeout)
	}
	d.rec.closeWin(sd, end+slack)
	healed := d.now()
	if follower != nil {
		if err := d.startNode(follower); err != nil {
			return err
		}
		at, err := d.waitReady(ctx, follower, recoverWithin)
		if err != nil {
			return fmt.Errorf("%w: %v", errRecovery, err)
		}
		d.rec.closeWin(fDown, at)
		at, err = d.recovered(ctx, f, healed)
		d.rec.closeWin(fStale, at+slack/4)
		return err
	}
	return nil
}

func (d *driver) addConvergence(f *FaultRecord, s *server, dir string, v float64) {
	d.mu.Lock()
	d.convergence = append(d.convergence, Convergence{Fault: f.ID, Server: s.pool + "/" + s.name, Dir: dir, Ms: v})
	d.mu.Unlock()
}

// stepJoinLeave starts a new node, joins it with gwelbctl join under load,
// lets visitors use it, then makes it leave with gwelbctl leave.
func (d *driver) stepJoinLeave(ctx context.Context, f *FaultRecord) error {
	hold := between(d.rng, 3*time.Second, 5*time.Second)
	d.mu.Lock()
	idx := d.nextIdx
	d.nextIdx++
	d.mu.Unlock()
	name := "n" + strconv.Itoa(idx)
	n, err := d.newNode(ctx, name, idx)
	if err != nil {
		return err
	}
	if err := d.writeConfig(n, 0, nil); err != nil {
		return err
	}
	f.Target, f.Role, f.HoldMs = name, "joiner", ms(hold)
	t0 := d.now()
	why := fmt.Sprintf("fault %d: %s %s", f.ID, f.Kind, name)
	down := d.rec.openWin(winNodeDown, name, t0, why)
	stale := d.rec.openWin(winNodeStale, name, t0, why)
	d.mu.Lock()
	d.nodes = append(d.nodes, n)
	d.mu.Unlock()
	if err := d.startNode(n); err != nil {
		return err
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := n.status(ctx, time.Second); err == nil {
			break
		}
		if time.Now().After(deadline) || !n.running() {
			return fmt.Errorf("%w: new node %s does not answer (log %s)", errRecovery, name, n.logPath)
		}
		if err := childproc.Sleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
	var addrs []string
	for _, m := range d.connected() {
		addrs = append(addrs, m.gossipAddr)
	}
	if code, _, stderr := d.gwelbctl(ctx, n, 10*time.Second, append([]string{"join"}, addrs...)...); code != 0 {
		return fmt.Errorf("%w: gwelbctl join exited %d: %s", errRecovery, code, stderr)
	}
	n.setMember(true)
	at, err := d.recovered(ctx, f, t0)
	if err != nil {
		return err
	}
	d.rec.closeWin(down, at)
	d.rec.closeWin(stale, at+slack/4)
	d.mu.Lock()
	d.dns = append(d.dns, n)
	d.mu.Unlock()
	if err := childproc.Sleep(ctx, hold); err != nil {
		return err
	}
	// An operator takes the node out of DNS first, then makes it leave.
	d.mu.Lock()
	d.dns = slices.DeleteFunc(d.dns, func(x *gnode) bool { return x == n })
	d.mu.Unlock()
	t1 := d.now()
	d.rec.openWin(winNodeDown, name, t1, why+" (left)")
	n.setMember(false)
	if code, _, stderr := d.gwelbctl(ctx, n, 10*time.Second, "leave"); code != 0 {
		d.rec.violation(invAvailability, fmt.Sprintf("fault %d: gwelbctl leave of %s exited %d: %s", f.ID, name, code, stderr))
	}
	if err := n.waitExit(ctx, 25*time.Second); err != nil {
		f.Notes = append(f.Notes, "did not exit within 25s of leave; goroutines dumped into its log (SIGQUIT), killed")
		d.rec.violation(invAvailability, fmt.Sprintf("fault %d: node %s did not exit within 25 s of gwelbctl leave (goroutine dump in %s)", f.ID, name, n.logPath))
		n.dumpAndKill()
	}
	deadline = time.Now().Add(recoverWithin)
	for {
		l, err := d.leader(ctx, electWithin)
		if err == nil {
			if st, err := l.status(ctx, time.Second); err == nil && !slices.ContainsFunc(st.GetPeers(), func(p *gwelbv1.RaftPeer) bool { return p.GetId() == name }) {
				break
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: %s still in the raft configuration %v after leaving", errRecovery, name, recoverWithin)
		}
		if err := childproc.Sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
	_, err = d.waitRecovered(ctx, recoverWithin)
	if err != nil {
		return fmt.Errorf("%w: %v", errRecovery, err)
	}
	return nil
}

// probeAgreement asks every connected node, while the operator holds
// still, where it sends fresh sticky values naming the dead server: over
// HTTP (the data plane: the route in Set-Cookie, or the server that
// answers), with the Route RPC, and once with gwelbctl route --all-nodes.
// Each answer is bracketed by the node's table index, and counts only if
// that table has every member on the dead server DOWN (invariant 2 holds
// after the verdict): an operator's write that landed after waitVerdict
// (one cut short by its deadline may still commit during the probe) can
// re-create such a member, UP until its probers judge it, and nodes then
// legitimately differ by their local quarantine of it.
func (d *driver) probeAgreement(ctx context.Context, f *FaultRecord, srv *server) {
	d.opMu.Lock()
	defer d.opMu.Unlock()
	deadline := time.Now().Add(verdictWithin)
	for time.Now().Before(deadline) {
		if _, same := d.tableIndexes(ctx, d.connected(), srv); same {
			break
		}
		if childproc.Sleep(ctx, 50*time.Millisecond) != nil {
			return
		}
	}
	var value string
	for round := 1; round <= 3; round++ {
		value = fmt.Sprintf("agree%d-%d.%s", f.ID, round, srv.name)
		ns := d.connected()
		before, _ := d.tableIndexes(ctx, ns, srv)
		type answer struct {
			route, server, err string
			index              uint64
		}
		httpA := make([]answer, len(ns))
		rpcA := make([]answer, len(ns))
		var wg sync.WaitGroup
		for i, n := range ns {
			wg.Go(func() {
				r, s, err := d.probeHTTP(ctx, n, srv.pool, value)
				httpA[i] = answer{route: r, server: s, err: errString(err)}
			})
			wg.Go(func() {
				cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				defer cancel()
				resp, err := n.client().Route(cctx, &gwelbv1.RouteRequest{Pool: srv.pool, Value: value})
				rpcA[i] = answer{route: resp.GetRoute(), err: errString(err), index: resp.GetTableIndex()}
			})
		}
		wg.Wait()
		after, _ := d.tableIndexes(ctx, ns, srv)
		at := d.now()
		for i, n := range ns {
			d.rec.addProbe(AgreementProbe{Fault: f.ID, Round: round, Pool: srv.pool, Value: value, Via: "http", Node: n.name, Dead: srv.name,
				IndexBefore: before[i], IndexAfter: after[i], Route: httpA[i].route, Server: httpA[i].server, Err: httpA[i].err, At: at})
			// The RPC names its own index; it counts when the bracket
			// saw that same table, all dead members DOWN.
			idx := rpcA[i].index
			if idx != before[i] || idx != after[i] {
				idx = 0
			}
			d.rec.addProbe(AgreementProbe{Fault: f.ID, Round: round, Pool: srv.pool, Value: value, Via: "rpc", Node: n.name, Dead: srv.name,
				IndexBefore: idx, IndexAfter: idx, Route: rpcA[i].route, Err: rpcA[i].err, At: at})
		}
	}
	ns := d.connected()
	if len(ns) == 0 {
		return
	}
	before, _ := d.tableIndexes(ctx, ns, srv)
	code, stdout, stderr := d.gwelbctl(ctx, pick(d.rng, sortedNames(ns)), 5*time.Second, "route", srv.pool, value, "--all-nodes")
	after, _ := d.tableIndexes(ctx, ns, srv)
	var rows []struct {
		Node       string `json:"node"`
		TableIndex uint64 `json:"table_index"`
		Route      string `json:"route"`
		Error      string `json:"error"`
	}
	if err := json.Unmarshal(stdout, &rows); err != nil {
		f.Notes = append(f.Notes, fmt.Sprintf("gwelbctl route --all-nodes exited %d without JSON: %s", code, stderr))
		return
	}
	if code == 7 {
		f.Notes = append(f.Notes, "gwelbctl route --all-nodes reported a disagreement (exit 7)")
	}
	bracket := map[string]uint64{}
	for i, n := range ns {
		if before[i] == after[i] {
			bracket[n.name] = before[i]
		}
	}
	at := d.now()
	for _, r := range rows {
		idx := r.TableIndex
		if idx != bracket[r.Node] {
			idx = 0
		}
		d.rec.addProbe(AgreementProbe{Fault: f.ID, Round: 4, Pool: srv.pool, Value: value, Via: "gwelbctl", Node: r.Node, Dead: srv.name,
			IndexBefore: idx, IndexAfter: idx, Route: r.Route, Err: r.Error, At: at})
	}
}

// tableIndexes returns each node's table index and whether they are all
// equal. A node that did not answer is 0, and so, when dead is not nil, is
// one whose table does not have every member on dead DOWN.
func (d *driver) tableIndexes(ctx context.Context, ns []*gnode, dead *server) ([]uint64, bool) {
	sts, errs := statuses(ctx, ns, time.Second)
	out := make([]uint64, len(ns))
	same := true
	for i := range ns {
		if errs[i] == nil && (dead == nil || verdictIs(sts[i], dead, gwelbv1.Verdict_VERDICT_DOWN)) {
			out[i] = sts[i].GetTableIndex()
		}
		same = same && out[i] != 0 && out[i] == out[0]
	}
	return out, same
}

// probeHTTP sends one request with a sticky value through node n and
// returns the route in Set-Cookie (backend) and the server that answered.
func (d *driver) probeHTTP(ctx context.Context, n *gnode, pool, value string) (string, string, error) {
	ctx, cancel := context.WithTimeout(ctx, visitTimeout)
	defer cancel()
	u := "http://" + siteHost + "/" + pool + "/agreement"
	if pool == "frontend" {
		u += "?alias=" + url.QueryEscape(value)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", "", err
	}
	if pool == "backend" {
		req.Header.Set("Cookie", "ROUTEID="+value)
	}
	resp, err := (&http.Client{Transport: d.transport(n)}).Do(req)
	if err != nil {
		return "", "", err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", "", fmt.Errorf("status %d", resp.StatusCode)
	}
	return routeOf(stickyCookie(pool, resp.Header)), resp.Header.Get("X-GWE-Server"), nil
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
