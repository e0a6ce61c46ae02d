package cluster

import (
	"context"
	"sort"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
)

// bootstrapLoop bootstraps the cluster once: a -dev node alone at once; with
// bootstrap_expect N, the node with the lowest name bootstraps all of them
// once N nodes gossip and none of them already has a configuration.
// Everyone else waits for the leader to add them.
func (n *Node) bootstrapLoop(ctx context.Context) {
	has, err := raft.HasExistingState(n.logStore, n.logStore, n.snaps)
	if err != nil {
		n.log.Error("bootstrap: read raft state", "err", err)
		return
	}
	if has {
		return
	}
	if n.cfg.Dev {
		n.bootstrap([]raft.Server{{ID: raft.ServerID(n.cfg.Name), Address: raft.ServerAddress(n.cfg.advertised(n.cfg.RaftAddr)), Suffrage: raft.Voter}})
		return
	}
	if n.cfg.BootstrapExpect == 0 || n.nonVoter.Load() {
		return // a non-voter waits to be added (suffrage.go)
	}
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	for {
		if done := n.tryBootstrap(ctx); done {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		case <-n.bootEvents:
		}
	}
}

// tryBootstrap reports whether bootstrapping is settled for this node.
func (n *Node) tryBootstrap(ctx context.Context) bool {
	if n.raft.LastIndex() > 0 || n.Leader() != "" {
		return true // someone added us to a configuration
	}
	var alive []gossipMember
	for _, m := range n.members() {
		// Only members that prove a node certificate for their name count
		// and are bootstrapped (DESIGN.md §4; nodetls.go admit).
		// Non-voters are never bootstrapped: bootstrap_expect counts voters.
		if m.Status == memberlist.StateAlive && !m.Meta.NonVoter && (m.Name == n.cfg.Name || n.admit(ctx, m) == nil) {
			alive = append(alive, m)
		}
	}
	if len(alive) < n.cfg.BootstrapExpect {
		return false
	}
	sort.Slice(alive, func(i, j int) bool { return alive[i].Name < alive[j].Name })
	if alive[0].Name != n.cfg.Name {
		return false // the lowest name bootstraps; we wait to be added
	}
	// Never bootstrap a second configuration next to an existing cluster.
	for _, m := range alive[1:] {
		st, err := n.peers.status(ctx, m.Meta.GRPC)
		if err != nil {
			n.log.Debug("bootstrap: peer not ready", "peer", m.Name, "err", err)
			return false
		}
		if st.GetLeader() != "" || st.GetLastLogIndex() > 0 {
			n.log.Info("bootstrap: a cluster exists already; waiting to be added", "peer", m.Name, "leader", st.GetLeader())
			return true
		}
	}
	servers := make([]raft.Server, 0, len(alive))
	for _, m := range alive {
		servers = append(servers, raft.Server{ID: raft.ServerID(m.Name), Address: raft.ServerAddress(m.Meta.Raft), Suffrage: raft.Voter})
	}
	n.bootstrap(servers)
	return true
}

func (n *Node) bootstrap(servers []raft.Server) {
	names := make([]string, 0, len(servers))
	for _, s := range servers {
		names = append(names, string(s.ID))
	}
	if err := n.raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
		n.log.Error("bootstrap", "err", err)
		return
	}
	n.log.Info("bootstrapped the cluster", "voters", names)
}
