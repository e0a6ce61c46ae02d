package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/gwelb/gwelb/cluster/clustertest"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// raftSuffrage is the leader's Raft configuration, by server: "Voter" or
// "Nonvoter"; nil if the status call failed.
func raftSuffrage(c *clustertest.Cluster, tn *clustertest.Node) map[string]string {
	cl, ctx := c.Admin(tn)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := cl.Status(ctx, &gwelbv1.StatusRequest{})
	if err != nil {
		return nil
	}
	out := map[string]string{}
	for _, p := range st.GetPeers() {
		out[p.GetId()] = p.GetSuffrage()
	}
	return out
}

// TestAdmissionConcurrent: a reconcile pass proves the joining members
// concurrently and adds each as soon as its proof is in (suffrage.go
// admitAndAdd). A member whose proof hangs (a node that accepts TCP and
// never finishes the handshake: 5 s per port) holds up nobody else, a
// member failing its proof is not added (DESIGN.md §4), and the pass
// returns once the hung proof ends. A serial pass added none of the
// members after the hung one until it ended.
func TestAdmissionConcurrent(t *testing.T) {
	c := clustertest.New(t, 1)
	leader := c.WaitLeader()
	const n = 20
	addrs := map[string]string{}
	for i := range n {
		addrs[fmt.Sprintf("nv%02d", i)] = clustertest.FreeAddr(t)
	}
	hung, refused := "nv00", "nv01" // sorted first: a serial pass would try them first
	release := make(chan struct{})
	admit := func(ctx context.Context, name string) error {
		switch name {
		case hung:
			select {
			case <-release:
			case <-ctx.Done():
			}
			return errors.New("handshake timed out")
		case refused:
			return errors.New("certificate names another node")
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		leader.Node.AdmitNonVoters(ctx, addrs, admit)
	}()
	clustertest.WaitFor(t, 30*time.Second, "every admitted member a non-voter while one proof hangs", func() bool {
		got := raftSuffrage(c, leader)
		for name := range addrs {
			if name != hung && name != refused && got[name] != "Nonvoter" {
				return false
			}
		}
		return true
	})
	select {
	case <-done:
		t.Fatal("the pass returned while a proof was still running")
	default:
	}
	close(release)
	<-done
	got := raftSuffrage(c, leader)
	for _, name := range []string{hung, refused} {
		if s, ok := got[name]; ok {
			t.Errorf("%s is a %s without proving its certificate", name, s)
		}
	}
	if got["n1"] != "Voter" {
		t.Errorf("n1 is %q, want Voter", got["n1"])
	}
}

// TestAdmissionOfManyNonVoters starts 10 non-voters at once beside 3 voters
// in the secure posture (mutual TLS; admission by certificate name,
// DESIGN.md §4) and times until the leader's Raft configuration holds them
// all: balancer nodes rebooting together must be routable by Raft within
// seconds (make bench-scale measures 45).
func TestAdmissionOfManyNonVoters(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 13 nodes to time an admission")
	}
	const nonVoters = 10
	c := clustertest.New(t, 3)
	leader := c.WaitLeader()
	t0 := time.Now()
	for i := range nonVoters {
		c.Start(c.NonVoterConfig(fmt.Sprintf("nv%d", i+1)))
	}
	var inGossip time.Duration
	clustertest.WaitFor(t, 60*time.Second, "every non-voter in the leader's Raft configuration", func() bool {
		if inGossip == 0 && leader.Node.GossipMembers() == 3+nonVoters {
			inGossip = time.Since(t0)
		}
		nv := 0
		for _, s := range raftSuffrage(c, leader) {
			if s == "Nonvoter" {
				nv++
			}
		}
		return nv == nonVoters
	})
	t.Logf("%d non-voters started -> all in the Raft configuration in %v (all in the leader's gossip after %v)",
		nonVoters, time.Since(t0).Round(time.Millisecond), inGossip.Round(time.Millisecond))
}
