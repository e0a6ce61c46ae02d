package cluster_test

import (
	"testing"
	"time"

	"github.com/gwelb/gwelb/cluster"
	"github.com/gwelb/gwelb/cluster/clustertest"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// A commit reaches the followers' own FSMs at once, not at the leader's
// next idle AppendEntries (DESIGN.md §1.3, commitnotify.go): with a
// commit timeout of an hour, and the followers' catch-up questions cut off
// (a catch-up's barrier would also carry the commit index), a member added
// on the leader is applied by every follower's Raft well within the wait.
// Before the leader told followers of commits, they applied it an hour
// later.
func TestCommitReachesFollowersWithoutCommitTimeout(t *testing.T) {
	c := clustertest.New(t, 3, func(_ int, cfg *cluster.Config) { cfg.Timing.CommitTimeout = time.Hour })
	leader := c.WaitLeader()
	for _, f := range c.Followers() {
		t.Cleanup(f.Node.CutCatchUp())
	}
	for i, route := range []string{"4", "5"} { // the second: no barrier left over from the first helps
		putMember(t, c, leader, route, c.GWE["1"].URL)
		c.WaitAll("member "+route+" in every node's own FSM", func(tn *clustertest.Node) bool {
			p := tn.Node.Table().Pool("backend")
			_, ok := p.Lookup(route)
			return ok
		})
		t.Logf("change %d applied on every follower", i+1)
	}
}

// The leader sends heartbeats at a third of the followers' heartbeat
// timeout rate while it leads, and a node that loses leadership times its new
// leader's failure with the configured heartbeat timeout again (DESIGN.md
// §1.3, leader.go paceHeartbeats): an old leader left at the leader's pace
// would notice the new leader's death three times as late.
func TestLeaderPacesHeartbeats(t *testing.T) {
	const configured = 500 * time.Millisecond // the default
	c := clustertest.New(t, 3)
	pace := func(what string, tn *clustertest.Node, want time.Duration) {
		t.Helper()
		clustertest.WaitFor(t, 10*time.Second, tn.Cfg.Name+": "+what, func() bool {
			return tn.Node.RaftHeartbeatTimeout() == want
		})
	}
	old := c.WaitLeader()
	pace("the leader's heartbeat timeout", old, cluster.LeaderHeartbeatFactor*configured)
	for _, f := range c.Followers() {
		pace("a follower's heartbeat timeout", f, configured)
	}
	cl, ctx := c.Admin(old)
	if _, err := cl.TransferLeadership(ctx, &gwelbv1.TransferLeadershipRequest{}); err != nil {
		t.Fatal(err)
	}
	var next *clustertest.Node
	clustertest.WaitFor(t, 10*time.Second, "another leader", func() bool {
		next = c.WaitLeader()
		return next != old
	})
	pace("the old leader's heartbeat timeout", old, configured)
	pace("the new leader's heartbeat timeout", next, cluster.LeaderHeartbeatFactor*configured)
}
