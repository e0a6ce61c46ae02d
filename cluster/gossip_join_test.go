package cluster

import (
	"context"
	"io"
	"log"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// quietGossip is a bare memberlist node in the local profile on loopback,
// which the test shuts down at cleanup. mute stops it from sending
// anything by UDP on its own (no probes, gossip or periodic push/pull):
// what it says reaches its peers only in a push/pull that a join starts,
// as if every UDP packet it sent were lost.
func quietGossip(t *testing.T, name string, port int, mute bool) (*memberlist.Memberlist, string) {
	t.Helper()
	mc := memberlist.DefaultLocalConfig()
	mc.Name, mc.BindAddr, mc.BindPort = name, "127.0.0.1", port
	mc.Logger = log.New(io.Discard, "", 0)
	if mute {
		mc.ProbeInterval, mc.GossipInterval, mc.PushPullInterval = 0, 0, 0
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		t.Fatalf("gossip node %s: %v", name, err)
	}
	t.Cleanup(func() { _ = ml.Shutdown() })
	return ml, net.JoinHostPort("127.0.0.1", strconv.Itoa(mc.BindPort))
}

// waitMembers waits until ml counts want live members, itself included.
func waitMembers(t *testing.T, ml *memberlist.Memberlist, want int, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for ml.NumMembers() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d live members after 5s, want %d", what, ml.NumMembers(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestJoinGossip: a node joining through retry_join is in the cluster
// when joinLoop returns, and its seeds know it alive, in the two cases
// that left a restarted node out of it (TestReconcileLeftVersusFailed
// timed out waiting for the leader to add it back).
func TestJoinGossip(t *testing.T) {
	for _, tc := range []struct {
		name string
		run  func(t *testing.T)
	}{
		{
			// The seed does not answer the first pass (down, or slower than
			// memberlist's 1 s TCP timeout on a loaded machine); the node's
			// own address, listed in retry_join as on every node, does.
			name: "only itself answered the first pass",
			run: func(t *testing.T) {
				// The seed's address first answers nothing useful: a
				// listener that hangs up on the first push/pull.
				stall, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				seedAddr := stall.Addr().String()
				seedPort := stall.Addr().(*net.TCPAddr).Port
				hungUp := make(chan struct{})
				go func() {
					defer close(hungUp)
					if c, err := stall.Accept(); err == nil {
						c.Close()
					}
					stall.Close()
				}()
				b, selfAddr := quietGossip(t, "b", 0, false)
				retry := []string{seedAddr, selfAddr}
				n := &Node{cfg: Config{RetryJoin: retry}, gossip: b, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				done := make(chan struct{})
				go func() { defer close(done); n.joinLoop(ctx) }()
				<-hungUp                                     // the first pass reached the seed and failed there
				a, _ := quietGossip(t, "a", seedPort, false) // then the seed comes up
				<-done
				if ctx.Err() != nil {
					t.Fatal("joinLoop ran out of time without a peer")
				}
				waitMembers(t, b, 2, "the joiner")
				waitMembers(t, a, 2, "the seed")
			},
		},
		{
			// The node left gossip and restarts under its name and
			// address: the seed holds it as left at a higher incarnation
			// than the restarted node starts with, and ignores its state
			// until it hears the refutation, which the first exchange
			// provokes. The restarted node is mute, so only the join can
			// carry the refutation to the seed.
			name: "restart after a leave, refutation not gossiped",
			run: func(t *testing.T) {
				a, seedAddr := quietGossip(t, "a", 0, false)
				old, oldAddr := quietGossip(t, "b", 0, false)
				if _, err := old.Join([]string{seedAddr}); err != nil {
					t.Fatalf("first life joins: %v", err)
				}
				waitMembers(t, a, 2, "the seed, before the leave")
				if err := old.Leave(2 * time.Second); err != nil {
					t.Fatalf("leave: %v", err)
				}
				waitMembers(t, a, 1, "the seed, after the leave")
				if err := old.Shutdown(); err != nil {
					t.Fatal(err)
				}
				_, port, _ := net.SplitHostPort(oldAddr)
				p, _ := strconv.Atoi(port)
				b, selfAddr := quietGossip(t, "b", p, true)
				if _, peers, err := joinGossip(b, []string{seedAddr, selfAddr}); peers != 1 {
					t.Fatalf("rejoin: %d peers (%v), want 1", peers, err)
				}
				waitMembers(t, a, 2, "the seed, after the rejoin")
			},
		},
	} {
		t.Run(tc.name, tc.run)
	}
}

// gossipNode is a Node with only its gossip started, muted as in
// quietGossip: enough for the gossip delegate and events to run.
func gossipNode(t *testing.T, name string) *Node {
	t.Helper()
	n := &Node{
		cfg: Config{Name: name, RaftAddr: "127.0.0.1:7", GRPCAddr: "127.0.0.1:8"},
		log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	mc := memberlist.DefaultLocalConfig()
	mc.Name, mc.BindAddr, mc.BindPort = name, "127.0.0.1", 0
	mc.Logger = log.New(io.Discard, "", 0)
	mc.ProbeInterval, mc.GossipInterval, mc.PushPullInterval = 0, 0, 0
	mc.Delegate, mc.Events = &gossipDelegate{n: n}, &gossipEvents{n: n}
	ml, err := memberlist.Create(mc)
	if err != nil {
		t.Fatalf("gossip node %s: %v", name, err)
	}
	t.Cleanup(func() { _ = ml.Shutdown() })
	n.gossip = ml
	return n
}

// TestLeaveGossipReachesPeersWithoutUDP: a peer that missed the UDP
// gossip of a leaver's Leaving flag (memberlist sends it twice in a small
// cluster, to peers it picks at random) still records a graceful leave,
// so its leader removes the node from Raft (TestReconcileLeftVersusFailed
// timed out waiting for that: the leader alone had taken the leaver for
// failed). Neither node sends UDP here; the leave itself reaches the peer
// in a push/pull the test starts.
func TestLeaveGossipReachesPeersWithoutUDP(t *testing.T) {
	a, b := gossipNode(t, "a"), gossipNode(t, "b")
	aAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(a.gossip.LocalNode().Port)))
	if _, err := b.gossip.Join([]string{aAddr}); err != nil {
		t.Fatalf("join: %v", err)
	}
	waitMembers(t, a.gossip, 2, "a")
	if len(b.members()) != 2 {
		t.Fatalf("b lists %d gwelb members, want 2 (a and itself)", len(b.members()))
	}
	_ = b.leaveGossip(300 * time.Millisecond) // its broadcasts time out, unsent
	if _, err := b.gossip.Join([]string{aAddr}); err != nil {
		t.Fatalf("hand the leave to a: %v", err)
	}
	waitMembers(t, a.gossip, 1, "a, after the leave")
	if got := a.view.departures.names(); len(got) != 1 || got[0] != "b" {
		t.Fatalf("a's recorded graceful leaves: %v, want [b] (it took b for failed)", got)
	}
}
