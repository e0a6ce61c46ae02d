package cluster_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/gwelb/gwelb/cluster"
	"github.com/gwelb/gwelb/cluster/clustertest"
	"github.com/gwelb/gwelb/fsm"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// TestNonVoters runs 3 voters and 2 non-voters over real TCP (issue 13,
// DESIGN.md §1.3 step 7): one non-voter by its config (voter: false), one
// joined with gwelbctl join --non-voter's RPC. Both route from the
// replicated table and forward writes; neither votes, probes or counts in
// verdicts; killing one costs no quorum; the leader reaps it after
// non_voter_reap.
func TestNonVoters(t *testing.T) {
	const reap = time.Second
	c := clustertest.New(t, 3, func(_ int, cfg *cluster.Config) { cfg.NonVoterReap = reap })
	gossip := c.GossipAddrs()
	nv1 := c.Start(c.NonVoterConfig("nv1"))
	nv2 := c.Start(c.NodeConfig("nv2")) // joins by the admin RPC below
	cl, ctx := c.Admin(nv2)
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if _, err := cl.Join(ctx, &gwelbv1.JoinRequest{Addrs: gossip[:1], NonVoter: true}); err != nil {
		t.Fatalf("join --non-voter: %v", err)
	}

	want := map[string]string{"n1": "Voter", "n2": "Voter", "n3": "Voter", "nv1": "Nonvoter", "nv2": "Nonvoter"}
	clustertest.WaitFor(t, 20*time.Second, "nv1 and nv2 non-voters in the status of every node", func() bool {
		for _, tn := range c.Live() {
			if got := raftSuffrage(c, tn); len(got) != len(want) || !mapsEqual(got, want) {
				return false
			}
		}
		return true
	})
	nv1.WaitServing(t, 20*time.Second)
	nv2.WaitServing(t, 20*time.Second)
	leader := c.WaitLeader()
	if name := leader.Cfg.Name; name == "nv1" || name == "nv2" {
		t.Fatalf("a non-voter leads: %s", name)
	}
	if got := leader.Node.Balancers(); !slices.Equal(got, []string{"n1", "n2", "n3"}) {
		t.Fatalf("balancers (verdict quorum) %v, want the voters only", got)
	}
	for _, tn := range []*clustertest.Node{nv1, nv2} {
		if p := tn.Node.Probes(); p != 0 {
			t.Errorf("non-voter %s probes %d members, want none", tn.Cfg.Name, p)
		}
		if _, _, err := clustertest.Get(t, tn, "/backend/x", ""); err != nil {
			t.Errorf("request through non-voter %s: %v", tn.Cfg.Name, err)
		}
	}

	// A write through a non-voter is forwarded and reaches every node.
	setState := func(via *clustertest.Node, state gwelbv1.AdminState) {
		t.Helper()
		cl, ctx := c.Admin(via)
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if _, err := cl.SetMemberState(ctx, &gwelbv1.SetMemberStateRequest{Pool: "backend", Route: "2", State: state}); err != nil {
			t.Fatalf("set member state through %s: %v", via.Cfg.Name, err)
		}
	}
	stateIs := func(s fsm.AdminState) func(*clustertest.Node) bool {
		return func(tn *clustertest.Node) bool {
			p := tn.Proxy.Table().Pool("backend")
			i, ok := p.Lookup("2")
			return ok && p.Member(i).State == s
		}
	}
	setState(nv1, gwelbv1.AdminState_ADMIN_STATE_DRAIN)
	c.WaitAll("route 2 draining on all five nodes", stateIs(fsm.Drain))

	// A dead non-voter costs no quorum: writes go on at once.
	c.Kill(nv1)
	setState(nv2, gwelbv1.AdminState_ADMIN_STATE_ACTIVE)
	c.WaitAll("route 2 active on the four live nodes", stateIs(fsm.Active))

	// ... and the leader removes it after non_voter_reap.
	clustertest.WaitFor(t, 30*time.Second, "nv1 reaped, nv2 kept", func() bool {
		leader := c.WaitLeader()
		leader.Node.Reconcile(ctx)
		got := raftSuffrage(c, leader)
		_, has := got["nv1"]
		return got != nil && !has && got["nv2"] == "Nonvoter" && got["n1"] == "Voter"
	})
}

func mapsEqual(a, b map[string]string) bool {
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return len(a) == len(b)
}

// A non-voter's Raft log is written without fsync, and a node that asks
// to be a non-voter but is a voter all the same (voter: false set on a
// former voter; the leader never demotes one) keeps its log durable
// (DESIGN.md §1.3 step 3, logstore.go): a voter that lost acknowledged
// entries in a power cut could elect a leader without them. The non-voter
// that skips the fsyncs still routes every change.
func TestNonVoterLogDurability(t *testing.T) {
	c := clustertest.New(t, 3)
	gossip := c.GossipAddrs()
	nv1 := c.Start(c.NonVoterConfig("nv1"))
	clustertest.WaitFor(t, 20*time.Second, "nv1 a non-voter whose log skips fsync", func() bool {
		return raftSuffrage(c, c.WaitLeader())["nv1"] == "Nonvoter" && !nv1.Node.LogSyncsEachWrite()
	})
	for _, tn := range c.Nodes[:3] {
		if !tn.Node.LogSyncsEachWrite() {
			t.Errorf("voter %s skips fsync", tn.Cfg.Name)
		}
	}

	// n3 restarts asking to be a non-voter: it stays a voter, synced.
	n3 := c.Nodes[2]
	c.Kill(n3)
	cfg := n3.Cfg
	cfg.NonVoter, cfg.BootstrapExpect, cfg.RetryJoin = true, 0, gossip
	n3 = c.Start(cfg)
	n3.WaitServing(t, 20*time.Second)
	if got := raftSuffrage(c, c.WaitLeader())["n3"]; got != "Voter" {
		t.Fatalf("n3 is %q after asking to be a non-voter, want Voter (never demoted)", got)
	}
	if !n3.Node.LogSyncsEachWrite() {
		t.Error("n3, a voter asking to be a non-voter, skips fsync")
	}
	// A configuration entry n3 stores (nv2 added) still names it a voter.
	c.Start(c.NonVoterConfig("nv2"))
	clustertest.WaitFor(t, 20*time.Second, "nv2 a non-voter in n3's own configuration", func() bool {
		return raftSuffrage(c, n3)["nv2"] == "Nonvoter"
	})
	if !n3.Node.LogSyncsEachWrite() {
		t.Error("n3 skips fsync after storing a configuration")
	}
}

// TestNonVoterHeartbeatsRideOnAppendEntries: the leader answers the
// heartbeats to a non-voter from the AppendEntries the non-voter has just
// answered instead of sending them (transport.go, DESIGN.md §1.3), and
// the non-voter never loses sight of the leader: not while idle, and not
// while the AppendEntries stop reaching it, when the heartbeats must go
// out again (raft's timer on the non-voter, at 1.5 s, would otherwise
// forget the leader within 1.5-3 s).
func TestNonVoterHeartbeatsRideOnAppendEntries(t *testing.T) {
	c, nv := withNonVoter(t)
	leader := c.WaitLeader()

	// watch polls nv1's view of the leader for d and fails on a gap.
	watch := func(what string, d time.Duration) {
		t.Helper()
		for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
			if l := nv.Node.Leader(); l != leader.Cfg.Name {
				t.Fatalf("%s: nv1 names leader %q, want %s", what, l, leader.Cfg.Name)
			}
		}
	}
	before := leader.Node.HeartbeatsAnswered()
	watch("idle", 2*time.Second)
	if n := leader.Node.HeartbeatsAnswered() - before; n < 6 {
		t.Fatalf("idle for 2 s: the leader answered %d heartbeats to nv1 itself, want nearly all of the 7-13 due", n)
	}

	// The AppendEntries to nv1 hang (its Raft receives nothing but
	// heartbeats): once the last answer is older than the margin, every
	// heartbeat goes out, and nv1 keeps the leader.
	stalled := leader.Node.HeartbeatsAnswered()
	resume := nv.Node.StallRaft(false)
	defer resume()
	watch("AppendEntries stalled", 4*time.Second)
	// At most the heartbeats due within 850 ms of the last answer (one
	// every 150-300 ms: 6); of the 13-27 due in 4 s, the others went out.
	if n := leader.Node.HeartbeatsAnswered() - stalled; n > 6 {
		t.Fatalf("AppendEntries to nv1 stalled for 4 s: the leader still answered %d of its heartbeats itself", n)
	}
	resume()
	watch("after the stall", 500*time.Millisecond)
}

// Voters get every heartbeat: the lease and their election timers need
// them. In a cluster of voters alone, idle or just written to, the leader
// answers none itself (transport.go).
func TestVotersGetEveryHeartbeat(t *testing.T) {
	c := clustertest.New(t, 3)
	leader := c.WaitLeader()
	before := leader.Node.HeartbeatsAnswered()
	putMember(t, c, leader, "4", c.GWE["1"].URL)
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if n := leader.Node.HeartbeatsAnswered() - before; n != 0 {
			t.Fatalf("the leader answered %d heartbeats to voters itself", n)
		}
	}
}

// withNonVoter starts three voters and a non-voter, nv1, and returns once
// nv1 is a non-voter in the leader's configuration and serves.
func withNonVoter(t *testing.T) (*clustertest.Cluster, *clustertest.Node) {
	t.Helper()
	c := clustertest.New(t, 3)
	nv := c.Start(c.NonVoterConfig("nv1"))
	clustertest.WaitFor(t, 20*time.Second, "nv1 a non-voter", func() bool {
		return raftSuffrage(c, c.WaitLeader())["nv1"] == "Nonvoter"
	})
	nv.WaitServing(t, 20*time.Second)
	return c, nv
}
