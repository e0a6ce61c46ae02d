package cluster_test

import (
	"context"
	"testing"
	"time"

	"github.com/gwelb/gwelb/cluster/clustertest"
)

// TestReconcileLeftVersusFailed: a voter that left gossip on purpose but
// whose own Raft removal never happened is removed by the leader; a voter
// that crashed stays, expected back (Consul: failed is not left).
func TestReconcileLeftVersusFailed(t *testing.T) {
	for _, tc := range []struct {
		name      string
		depart    func(t *testing.T, c *clustertest.Cluster, x *clustertest.Node)
		wantVoter bool
	}{
		{
			name: "left gossip, raft removal skipped",
			depart: func(t *testing.T, c *clustertest.Cluster, x *clustertest.Node) {
				if err := x.Node.LeaveGossip(2 * time.Second); err != nil {
					t.Fatalf("leave gossip: %v", err)
				}
				c.Kill(x) // and exits without asking the leader to remove it
			},
			wantVoter: false,
		},
		{
			name:      "crashed",
			depart:    func(_ *testing.T, c *clustertest.Cluster, x *clustertest.Node) { c.Kill(x) },
			wantVoter: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := clustertest.New(t, 3)
			x := c.Followers()[0]
			tc.depart(t, c, x)
			leader := c.WaitLeader()
			name := x.Cfg.Name
			// The leader's gossip view drops a node once it is known left
			// or dead, after recording a graceful leave, so from here on
			// whatever the leader decides it decides on full knowledge.
			clustertest.WaitFor(t, 20*time.Second, "the leader's gossip to drop "+name, func() bool {
				for _, g := range leader.Node.Status().GetGossip() {
					if g.GetName() == name {
						return false
					}
				}
				return true
			})
			if !tc.wantVoter {
				clustertest.WaitFor(t, 20*time.Second, "the leader to remove "+name+" from raft", func() bool {
					return !isVoter(leader, name)
				})
				// Someone rejoining under the name is a member again.
				back := c.Start(x.Cfg)
				c.WaitAll(name+" a voter again after a restart", func(tn *clustertest.Node) bool { return isVoter(tn, name) })
				putMember(t, c, back, "after-rejoin", c.GWE["1"].URL)
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			leader.Node.Reconcile(ctx)
			if !isVoter(leader, name) {
				t.Fatalf("the leader removed %s, which failed and did not leave", name)
			}
		})
	}
}

// isVoter reports whether tn's Raft configuration holds name as a voter.
func isVoter(tn *clustertest.Node, name string) bool {
	for _, p := range tn.Node.Status().GetPeers() {
		if p.GetId() == name && p.GetSuffrage() == "Voter" {
			return true
		}
	}
	return false
}
