package cluster_test

import (
	"testing"
	"time"

	"github.com/gwelb/gwelb/cluster"
	"github.com/gwelb/gwelb/cluster/clustertest"
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
