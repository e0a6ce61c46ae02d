package cluster_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gwelb/gwelb/cluster/clustertest"
	"github.com/gwelb/gwelb/internal/rpcerr"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// putMember adds member route (URL of GWE server gwe) through tn.
func putMember(t *testing.T, c *clustertest.Cluster, tn *clustertest.Node, route, url string) uint64 {
	t.Helper()
	cl, ctx := c.Admin(tn)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := cl.PutMember(ctx, &gwelbv1.PutMemberRequest{Member: &gwelbv1.Member{Pool: "backend", Route: route, Url: url, Weight: 1}})
	if err != nil {
		t.Fatalf("put member %s via %s: %v", route, tn.Cfg.Name, err)
	}
	return resp.GetIndex()
}

func TestWriteOnFollowerReachesEveryProxy(t *testing.T) {
	c := clustertest.New(t, 3)
	f := c.Followers()[0]
	index := putMember(t, c, f, "4", c.GWE["1"].URL)
	if index == 0 {
		t.Fatal("write acknowledged without an index")
	}
	c.WaitAll("member 4 in every proxy's table", func(tn *clustertest.Node) bool {
		_, ok := tn.Proxy.Table().Pool("backend").Lookup("4")
		return ok
	})
	for _, tn := range c.Live() {
		server, _, err := clustertest.Get(t, tn, "/backend/x", "ROUTEID=.4")
		if err != nil {
			t.Fatal(err)
		}
		if server != "1" { // route 4 points at demo server "1"
			t.Errorf("%s routed ROUTEID=.4 to %q, want the server behind route 4 (1)", tn.Cfg.Name, server)
		}
	}
}

func TestRouteAnswersTheSameOnEveryNode(t *testing.T) {
	c := clustertest.New(t, 3)
	cl, ctx := c.Admin(c.Followers()[0])
	if _, err := cl.SetMemberState(ctx, &gwelbv1.SetMemberStateRequest{Pool: "backend", Route: "2", State: gwelbv1.AdminState_ADMIN_STATE_DISABLED}); err != nil {
		t.Fatal(err)
	}
	c.WaitAll("member 2 disabled everywhere", func(tn *clustertest.Node) bool {
		i, _ := tn.Proxy.Table().Pool("backend").Lookup("2")
		return !tn.Proxy.Table().Pool("backend").Member(i).Usable()
	})
	values := []string{".1", ".2", ".3", ".nope", "abc.2", "plain", ""}
	for i := range 50 {
		values = append(values, fmt.Sprintf("session-%d", i))
	}
	for _, v := range values {
		var first *gwelbv1.RouteResponse
		for _, tn := range c.Live() {
			cl, ctx := c.Admin(tn)
			resp, err := cl.Route(ctx, &gwelbv1.RouteRequest{Pool: "backend", Value: v})
			if err != nil {
				t.Fatal(err)
			}
			if v != "" && resp.GetRoute() == "2" {
				t.Errorf("%s routes %q to disabled member 2", tn.Cfg.Name, v)
			}
			if first == nil {
				first = resp
			} else if v != "" && resp.GetRoute() != first.GetRoute() {
				t.Errorf("value %q: %s picks %q, %s picks %q", v, first.GetNode(), first.GetRoute(), resp.GetNode(), resp.GetRoute())
			}
		}
	}
}

func TestAdminAPINeedsTheToken(t *testing.T) {
	c := clustertest.New(t, 3)
	cl, ctx := c.AdminWithToken(c.Nodes[0], "wrong")
	_, err := cl.Status(ctx, &gwelbv1.StatusRequest{})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("status with a wrong token: %v, want Unauthenticated", err)
	}
}

// TestLeaderKill kills the leader under traffic: a new leader is elected,
// writes succeed again, nothing acknowledged is lost, and the surviving
// proxies never stop routing, each session staying on its server.
func TestLeaderKill(t *testing.T) {
	c := clustertest.New(t, 3)
	leader := c.WaitLeader()
	var acked []string
	for i := range 5 {
		route := fmt.Sprintf("a%d", i)
		putMember(t, c, c.Followers()[i%2], route, c.GWE["3"].URL)
		acked = append(acked, route)
	}

	var survivors []*clustertest.Node
	for _, tn := range c.Live() {
		if tn != leader {
			survivors = append(survivors, tn)
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var requests, failures atomic.Int64
	var firstErr atomic.Value
	for _, tn := range survivors {
		for _, route := range []string{"1", "2", "3"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					server, _, err := clustertest.Get(t, tn, "/backend/x", "ROUTEID=."+route)
					requests.Add(1)
					if err == nil && server != route {
						err = fmt.Errorf("session .%s served by %s via %s", route, server, tn.Cfg.Name)
					}
					if err != nil {
						failures.Add(1)
						firstErr.CompareAndSwap(nil, err)
					}
				}
			}()
		}
	}

	killedAt := time.Now()
	c.Kill(leader)
	newLeader := c.WaitLeader()
	elected := time.Since(killedAt)
	if newLeader == leader {
		t.Fatal("the killed node is still leader")
	}
	putMember(t, c, survivors[0], "after-kill", c.GWE["2"].URL)
	acked = append(acked, "after-kill")
	close(stop)
	wg.Wait()
	t.Logf("new leader %s after %v; %d requests through survivors", newLeader.Cfg.Name, elected, requests.Load())
	if failures.Load() > 0 {
		t.Errorf("%d of %d requests through surviving nodes failed; first: %v", failures.Load(), requests.Load(), firstErr.Load())
	}
	c.WaitAll("every acknowledged member on every survivor", func(tn *clustertest.Node) bool {
		for _, r := range acked {
			if _, ok := tn.Proxy.Table().Pool("backend").Lookup(r); !ok {
				return false
			}
		}
		return true
	})
}

// TestRestart stops and restarts one node, then all three: the member table
// survives in bolt and snapshots.
func TestRestart(t *testing.T) {
	c := clustertest.New(t, 3)
	putMember(t, c, c.Nodes[0], "durable", c.GWE["1"].URL)
	hasDurable := func(tn *clustertest.Node) bool {
		tab := tn.Proxy.Table()
		if tab == nil || tab.Pool("backend") == nil {
			return false
		}
		_, ok := tab.Pool("backend").Lookup("durable")
		return ok
	}
	c.WaitAll("durable member everywhere", hasDurable)

	one := c.Followers()[0]
	c.Kill(one)
	restarted := c.Start(one.Cfg)
	if !hasDurable(restarted) {
		t.Error("a restarted node does not route on its last table before raft catches up")
	}
	c.WaitLeader()
	putMember(t, c, restarted, "after-restart", c.GWE["2"].URL)

	cfgs := []*clustertest.Node{}
	cfgs = append(cfgs, c.Nodes...)
	for _, tn := range cfgs {
		c.Kill(tn)
	}
	for _, tn := range cfgs {
		c.Start(tn.Cfg)
	}
	c.WaitLeader()
	c.WaitAll("durable and after-restart members after a whole-cluster restart", func(tn *clustertest.Node) bool {
		if !hasDurable(tn) {
			return false
		}
		_, ok := tn.Proxy.Table().Pool("backend").Lookup("after-restart")
		return ok
	})
	putMember(t, c, c.Nodes[2], "after-full-restart", c.GWE["3"].URL)
}

// TestJoinLeaveAndForceLeave joins a fourth node, makes it leave gracefully,
// then force-removes a killed node.
func TestJoinLeaveAndForceLeave(t *testing.T) {
	c := clustertest.New(t, 3)
	fourth := c.Start(c.NodeConfig("n4"))
	cl, ctx := c.Admin(fourth)
	if _, err := cl.Join(ctx, &gwelbv1.JoinRequest{Addrs: []string{c.Nodes[0].Cfg.GossipAddr}}); err != nil {
		t.Fatalf("join: %v", err)
	}
	voters := func(tn *clustertest.Node) map[string]bool {
		out := map[string]bool{}
		for _, p := range tn.Node.Status().GetPeers() {
			if p.GetSuffrage() == "Voter" {
				out[p.GetId()] = true
			}
		}
		return out
	}
	c.WaitAll("n4 a voter everywhere", func(tn *clustertest.Node) bool { return voters(tn)["n4"] })
	c.WaitAll("n4 has the table", func(tn *clustertest.Node) bool {
		return tn.Proxy.Table() != nil && tn.Proxy.Table().Pool("backend") != nil
	})

	if _, err := cl.Leave(ctx, &gwelbv1.LeaveRequest{}); err != nil {
		t.Fatalf("leave: %v", err)
	}
	select {
	case <-fourth.Node.Left():
	case <-time.After(20 * time.Second):
		t.Fatal("n4 did not leave")
	}
	c.Kill(fourth)
	c.WaitAll("n4 removed from the raft configuration", func(tn *clustertest.Node) bool { return !voters(tn)["n4"] })

	victim := c.Followers()[0]
	c.Kill(victim)
	leader := c.WaitLeader()
	if !voters(leader)[victim.Cfg.Name] {
		t.Fatal("a failed node was removed without an operator asking")
	}
	lc, lctx := c.Admin(c.Followers()[0])
	if _, err := lc.Leave(lctx, &gwelbv1.LeaveRequest{Node: victim.Cfg.Name}); err != nil {
		t.Fatalf("force leave: %v", err)
	}
	c.WaitAll("the killed node force-removed", func(tn *clustertest.Node) bool { return !voters(tn)[victim.Cfg.Name] })
	if _, err := lc.Leave(lctx, &gwelbv1.LeaveRequest{Node: "no-such-node"}); status.Code(err) != codes.NotFound {
		t.Errorf("force leave of an unknown node: %v, want NotFound", err)
	}
	putMember(t, c, leader, "two-left", c.GWE["1"].URL)
}

// TestNoLeaderIsAClearError: with a quorum gone, a write gets Unavailable
// with the reason NO_LEADER after the bounded wait, and the data plane
// keeps routing.
func TestNoLeaderIsAClearError(t *testing.T) {
	c := clustertest.New(t, 3)
	survivor := c.Followers()[0]
	for _, tn := range c.Live() {
		if tn != survivor {
			c.Kill(tn)
		}
	}
	cl, ctx := c.Admin(survivor)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err := cl.PutMember(ctx, &gwelbv1.PutMemberRequest{Member: &gwelbv1.Member{Pool: "backend", Route: "x", Url: "http://127.0.0.1:1"}})
	if !rpcerr.IsNoLeader(err) {
		t.Fatalf("write without a quorum: %v, want Unavailable with the reason NO_LEADER", err)
	}
	server, _, err := clustertest.Get(t, survivor, "/backend/x", "ROUTEID=.2")
	if err != nil || server != "2" {
		t.Fatalf("data plane without a quorum: server %q, err %v", server, err)
	}
}

func TestUnknownMemberIsNotFound(t *testing.T) {
	c := clustertest.New(t, 3)
	cl, ctx := c.Admin(c.Followers()[0])
	_, err := cl.RemoveMember(ctx, &gwelbv1.RemoveMemberRequest{Pool: "backend", Route: "nope"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("remove unknown member: %v, want NotFound", err)
	}
	_, err = cl.Route(ctx, &gwelbv1.RouteRequest{Pool: "nope", Value: ".1"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("route in unknown pool: %v, want NotFound", err)
	}
}

// TestStopKeepsTheVoter: a leader stopped without leaving (leave_on_terminate:
// false) hands over leadership and stays in the configuration, expected back.
func TestStopKeepsTheVoter(t *testing.T) {
	c := clustertest.New(t, 3)
	leader := c.WaitLeader()
	if err := leader.Node.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	c.Kill(leader) // releases the test's data plane; the node is stopped already
	next := c.WaitLeader()
	if next == leader {
		t.Fatal("the stopped node is still leader")
	}
	isVoter := false
	for _, p := range next.Node.Status().GetPeers() {
		isVoter = isVoter || p.GetId() == leader.Cfg.Name
	}
	if !isVoter {
		t.Fatal("a node stopped without leaving was removed from the configuration")
	}
	back := c.Start(leader.Cfg)
	c.WaitAll("the stopped node back with the table", func(tn *clustertest.Node) bool {
		return tn.Proxy.Table() != nil && tn.Proxy.Table().Pool("backend") != nil
	})
	putMember(t, c, back, "after-stop", c.GWE["1"].URL)
}
