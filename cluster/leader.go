package cluster

import (
	"context"
	"slices"
	"sort"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"

	"github.com/gwelb/gwelb/fsm"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// reconcileInterval re-sweeps gossip against the Raft configuration even
// without events: gossip events can be missed (Consul's lesson).
const reconcileInterval = 5 * time.Second

// monitorLeadership runs the leader loop while this node leads. It watches
// Config.NotifyCh, which never drops a transition, unlike LeaderCh.
func (n *Node) monitorLeadership(ctx context.Context) {
	var lead *leadership
	defer func() { lead.revoke() }()
	for {
		select {
		case <-ctx.Done():
			return
		case isLeader := <-n.notifyCh:
			switch {
			case isLeader && lead == nil:
				n.log.Info("became leader")
				n.paceHeartbeats(true)
				lead = n.establish(ctx)
			case !isLeader && lead != nil:
				n.log.Info("lost leadership")
				n.raftTrans.releaseHeld() // raft's replication loops stop: no hold to sit out
				n.paceHeartbeats(false)
				lead.revoke()
				lead = nil
			}
		}
	}
}

// leaderHeartbeatFactor is how much longer the leader's heartbeat timeout
// is than the followers' while it leads (DESIGN.md §1.3): raft sends each
// follower a heartbeat every HeartbeatTimeout/10 to 2×/10 of the leader's
// own setting, 50-100 ms at the 500 ms default, which was a third of an
// idle leader's CPU. At factor 3 they go every 150-300 ms, so a voter
// hears from the leader at least every 300 ms, by heartbeats alone (an
// idle leader's AppendEntries go every 600 ms, transport.go, and not at
// all while replication to a follower is stuck: a slow disk, a snapshot
// on its way), which keeps every voter's election timer (500-1000 ms) and
// the leader's lease (500 ms by default) fed with 200 ms to spare for a
// stalled process. Factor 4 saved another 0.6% of a core at 50 nodes but
// left 100 ms.
const leaderHeartbeatFactor = 3

// nonVoterHeartbeatTimeout is a non-voter's raft heartbeat timeout
// (paceHeartbeats): the leader's.
func nonVoterHeartbeatTimeout(t Timing) time.Duration {
	return leaderHeartbeatFactor * t.HeartbeatTimeout
}

// paceHeartbeats sets raft's heartbeat and election timeouts for the role:
// the configured ones on a voting follower (they time the leader's
// failure), the leader's slower heartbeat while leading (raft requires an
// election timeout no shorter than the heartbeat timeout; a leader uses it
// only to time a leadership transfer). Losing leadership restores them at
// once: raft then resets the follower's timer to the shorter value. A
// non-voter (by the configuration it had when it started: suffrage changes
// only through a restart) takes the leader's: it never stands for
// election, so its timer only decides when it stops naming a leader, and
// the leader answers most of its heartbeats without sending them on that
// account (transport.go, nonVoterHeartbeatTimeout).
func (n *Node) paceHeartbeats(leading bool) {
	rc := n.raft.ReloadableConfig()
	t := n.cfg.Timing
	rc.HeartbeatTimeout, rc.ElectionTimeout = t.HeartbeatTimeout, t.ElectionTimeout
	switch {
	case leading:
		rc.HeartbeatTimeout = leaderHeartbeatFactor * t.HeartbeatTimeout
	case n.suffrage != nil && !n.suffrage.voter.Load():
		rc.HeartbeatTimeout = nonVoterHeartbeatTimeout(t)
	}
	rc.ElectionTimeout = max(t.ElectionTimeout, rc.HeartbeatTimeout)
	if err := n.raft.ReloadConfig(rc); err != nil {
		n.log.Warn("pace raft heartbeats", "leading", leading, "err", err)
	}
}

// leadership is a running leader loop; establish and revoke are symmetric.
type leadership struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func (n *Node) establish(ctx context.Context) *leadership {
	lctx, cancel := context.WithCancel(ctx)
	l := &leadership{cancel: cancel, done: make(chan struct{})}
	n.reaper.reset() // a new leader times failures from what it sees
	go func() {
		defer close(l.done)
		n.leaderLoop(lctx)
	}()
	return l
}

// revoke stops the leader loop and waits for it; nil is a no-op.
func (l *leadership) revoke() {
	if l == nil {
		return
	}
	l.cancel()
	<-l.done
}

// leaderLoop is the leader's duty: catch up with the log (Barrier), seed
// the table once, and keep the Raft configuration in line with gossip.
func (n *Node) leaderLoop(ctx context.Context) {
	for {
		// Act on FSM state only once every committed entry is applied.
		// The barrier is an entry of this term: once it commits, the
		// commit index covers all that earlier leaders committed, and
		// the heartbeats may name it (transport.go stamp).
		term := n.raft.CurrentTerm()
		if err := awaitRaft(ctx, n.raft.Barrier(n.cfg.WriteTimeout)); err == nil {
			n.raftTrans.stampTerm.Store(term)
			break
		} else if ctx.Err() != nil {
			return
		} else {
			n.log.Warn("leader barrier", "err", err)
		}
	}
	if len(n.cfg.Seed) > 0 && !n.fsm.Seeded() {
		if _, err := n.apply(ctx, fsm.SeedCommand(n.cfg.Seed)); err != nil {
			n.log.Warn("seed the member table", "err", err)
		} else {
			n.log.Info("seeded the member table from the config file", "pools", len(n.cfg.Seed))
		}
	}
	ticker := time.NewTicker(reconcileInterval)
	defer ticker.Stop()
	holdEnd := time.NewTimer(time.Hour)
	defer holdEnd.Stop()
	for {
		n.reconcile(ctx)
		if at, ok := n.nextHoldDownEnd(); ok {
			holdEnd.Reset(time.Until(at))
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		case <-n.events:
		case <-holdEnd.C:
			n.rederiveVerdicts(ctx)
		}
	}
}

// nextHoldDownEnd is the earliest end of a flap hold-down still pending;
// the FSM keeps hold-downs by their end, so this does not walk the members.
func (n *Node) nextHoldDownEnd() (time.Time, bool) {
	next, ok := n.fsm.NextHoldDownEnd()
	if !ok {
		return time.Time{}, false
	}
	return time.Unix(0, next), true
}

// rederiveVerdicts proposes the current balancer set again: the FSM derives
// verdicts only when a command arrives, and a member held down for flapping
// must be released at its hold-down end even if nobody observes anything.
func (n *Node) rederiveVerdicts(ctx context.Context) {
	cmd := &gwelbv1.Command{Op: &gwelbv1.Command_SetBalancers{SetBalancers: &gwelbv1.SetBalancers{Nodes: n.fsm.Balancers(), Observers: n.fsm.Observers()}}}
	if _, err := n.apply(ctx, cmd); err != nil {
		n.log.Warn("release hold-downs", "err", err)
	}
}

// reconcile turns gossip into Raft configuration changes, Nomad's way:
// alive and unknown -> voter; left gracefully -> removed; failed -> kept
// (only an operator's force-leave removes it, so quorum never shrinks by
// itself). It then records the voters as the balancer set whose majority
// decides health verdicts.
//
// gossip lists neither left nor failed nodes, so the leavers come from the
// departures every node records from memberlist's leave events (gossip.go):
// a node whose own removal failed after it left gossip is removed here.
func (n *Node) reconcile(ctx context.Context) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		n.log.Warn("reconcile: read raft configuration", "err", err)
		return
	}
	servers := f.Configuration().Servers
	inConfig := map[string]raft.Server{}
	for _, s := range servers {
		inConfig[string(s.ID)] = s
	}
	var joining []candidate
	for _, m := range n.members() {
		s, known := inConfig[m.Name]
		// A node announcing its leave is not added back: it is about to go.
		if m.Status == memberlist.StateAlive && !m.Meta.Leaving && (!known || string(s.Address) != m.Meta.Raft || !suffrageAsked(s.Suffrage, m.Meta)) {
			joining = append(joining, candidate{m, known && s.Suffrage == raft.Voter})
		}
	}
	// Gossip alone never makes a voter or a non-voter: each member must
	// prove a node certificate for its name (DESIGN.md §4; nodetls.go).
	// The proofs run at once and each admitted member is added as soon as
	// the change before it committed (suffrage.go).
	n.admitAndAdd(ctx, joining)
	for _, name := range n.view.departures.names() {
		if _, known := inConfig[name]; !known || name == n.cfg.Name {
			n.view.departures.forget(name)
			continue
		}
		n.log.Info("removing voter that left", "peer", name)
		if err := awaitRaft(ctx, n.raft.RemoveServer(raft.ServerID(name), 0, n.cfg.WriteTimeout)); err != nil {
			n.log.Warn("remove voter", "peer", name, "err", err)
			continue // kept: the next pass tries again
		}
		n.view.departures.forget(name)
	}
	n.reapNonVoters(ctx, servers)
	n.syncBalancers(ctx)
}

// syncBalancers records the live voters (the balancers, among which each
// member's probers are chosen) and the live non-voters (whose passive
// observations count) in the FSM when they changed (DESIGN.md §5.5). Live
// is what gossip lists, and this node: a voter gossip declares failed
// leaves the balancers at once, so the members it probed move to other
// probers, and comes back when gossip sees it again. Should gossip list
// fewer voters than a majority, this leader (which a majority follows)
// distrusts it and records every voter.
func (n *Node) syncBalancers(ctx context.Context) {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return
	}
	alive := map[string]bool{n.cfg.Name: true}
	for _, m := range n.members() {
		alive[m.Name] = true
	}
	var voters, live, observers []string
	for _, s := range f.Configuration().Servers {
		name := string(s.ID)
		switch {
		case s.Suffrage == raft.Voter:
			voters = append(voters, name)
			if alive[name] || n.gossip == nil {
				live = append(live, name)
			}
		case s.Suffrage == raft.Nonvoter && alive[name]:
			observers = append(observers, name)
		}
	}
	if len(live) < len(voters)/2+1 {
		live = voters
	}
	sort.Strings(live)
	sort.Strings(observers)
	if slices.Equal(live, n.fsm.Balancers()) && slices.Equal(observers, n.fsm.Observers()) {
		return
	}
	cmd := &gwelbv1.Command{Op: &gwelbv1.Command_SetBalancers{SetBalancers: &gwelbv1.SetBalancers{Nodes: live, Observers: observers}}}
	if _, err := n.apply(ctx, cmd); err != nil {
		n.log.Warn("record balancer set", "err", err)
	}
}
