package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"
)

// nodeMeta is what a node tells its peers about itself through gossip
// (memberlist limits it to 512 bytes).
type nodeMeta struct {
	Raft string `json:"r"` // Raft transport address
	GRPC string `json:"g"` // admin API address
}

func (n *Node) startGossip() error {
	var mc *memberlist.Config
	if n.cfg.Timing.GossipProfile == "local" {
		mc = memberlist.DefaultLocalConfig()
	} else {
		mc = memberlist.DefaultLANConfig()
	}
	host, portStr, _ := net.SplitHostPort(n.cfg.GossipAddr)
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return fmt.Errorf("gossip_addr %s: %w", n.cfg.GossipAddr, err)
	}
	mc.Name = n.cfg.Name
	mc.BindAddr, mc.BindPort = host, port
	mc.AdvertiseAddr, _, _ = net.SplitHostPort(n.cfg.advertised(n.cfg.GossipAddr))
	mc.AdvertisePort = port
	mc.SecretKey = n.cfg.GossipKey
	mc.Delegate = &gossipDelegate{n: n}
	mc.Events = &gossipEvents{n: n}
	mc.Logger = newStdLogger("memberlist", n.log)
	ml, err := memberlist.Create(mc)
	if err != nil {
		return fmt.Errorf("gossip_addr %s: %w", n.cfg.GossipAddr, err)
	}
	n.gossip = ml
	return nil
}

// joinLoop joins the retry_join addresses, retrying until one answers.
func (n *Node) joinLoop(ctx context.Context) {
	if len(n.cfg.RetryJoin) == 0 {
		return
	}
	backoff := 200 * time.Millisecond
	for {
		joined, err := n.gossip.Join(n.cfg.RetryJoin)
		if joined > 0 {
			n.log.Info("joined gossip", "peers", joined)
			return
		}
		n.log.Debug("retry_join failed", "addrs", n.cfg.RetryJoin, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// Join gossip-joins the nodes at addrs (gwelbctl join).
func (n *Node) Join(addrs []string) (int, error) {
	joined, err := n.gossip.Join(addrs)
	if joined == 0 && err != nil {
		return 0, fmt.Errorf("join %v: %w", addrs, err)
	}
	return joined, nil
}

// gossipMember is a peer as gossip sees it.
type gossipMember struct {
	Name   string
	Addr   string
	Status memberlist.NodeStateType
	Meta   nodeMeta
}

// members lists the gossip members with readable metadata.
func (n *Node) members() []gossipMember {
	if n.gossip == nil {
		return nil
	}
	var out []gossipMember
	for _, m := range n.gossip.Members() {
		var meta nodeMeta
		if json.Unmarshal(m.Meta, &meta) != nil || meta.Raft == "" {
			continue // not a gwelb node
		}
		out = append(out, gossipMember{Name: m.Name, Addr: m.Address(), Status: m.State, Meta: meta})
	}
	return out
}

// grpcAddrOf returns the admin API address of the named node, from gossip.
// Gossip may briefly list a live node as failed (after a partition heals,
// the cut-off node spreads "dead" claims about its peers until they refute
// them); Raft, which named the node, knows better, so the address it last
// advertised is used then.
func (n *Node) grpcAddrOf(name string) string {
	for _, m := range n.members() {
		if m.Name == name {
			n.grpcAddrs.Store(name, m.Meta.GRPC)
			return m.Meta.GRPC
		}
	}
	if a, ok := n.grpcAddrs.Load(name); ok {
		return a.(string)
	}
	return ""
}

// remember keeps the admin address a peer advertises (see grpcAddrOf).
func (n *Node) remember(m *memberlist.Node) {
	var meta nodeMeta
	if json.Unmarshal(m.Meta, &meta) == nil && meta.GRPC != "" {
		n.grpcAddrs.Store(m.Name, meta.GRPC)
	}
}

// kick wakes the reconcile and bootstrap loops.
func (n *Node) kick() {
	for _, c := range []chan struct{}{n.events, n.bootEvents} {
		select {
		case c <- struct{}{}:
		default:
		}
	}
}

type gossipDelegate struct{ n *Node }

func (d *gossipDelegate) NodeMeta(limit int) []byte {
	b, _ := json.Marshal(nodeMeta{Raft: d.n.cfg.advertised(d.n.cfg.RaftAddr), GRPC: d.n.GRPCAddr()})
	if len(b) > limit {
		return nil
	}
	return b
}
func (d *gossipDelegate) NotifyMsg([]byte)                {}
func (d *gossipDelegate) GetBroadcasts(int, int) [][]byte { return nil }
func (d *gossipDelegate) LocalState(bool) []byte          { return nil }
func (d *gossipDelegate) MergeRemoteState([]byte, bool)   {}

type gossipEvents struct{ n *Node }

func (e *gossipEvents) NotifyJoin(m *memberlist.Node)   { e.n.remember(m); e.n.kick() }
func (e *gossipEvents) NotifyLeave(*memberlist.Node)    { e.n.kick() }
func (e *gossipEvents) NotifyUpdate(m *memberlist.Node) { e.n.remember(m); e.n.kick() }

func statusName(s memberlist.NodeStateType) string {
	switch s {
	case memberlist.StateAlive:
		return "alive"
	case memberlist.StateSuspect:
		return "suspect"
	case memberlist.StateDead:
		return "failed"
	case memberlist.StateLeft:
		return "left"
	}
	return "unknown"
}
