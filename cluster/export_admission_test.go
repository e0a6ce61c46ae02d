package cluster

import (
	"context"

	"github.com/hashicorp/memberlist"
)

// GossipMembers counts the members gossip lists on this node.
func (n *Node) GossipMembers() int { return len(n.members()) }

// AdmitNonVoters runs a reconcile pass's admission (admitAndAdd) over
// made-up live gossip members asking to be non-voters, by name at their
// Raft addresses, proven by admit instead of the TLS handshakes.
func (n *Node) AdmitNonVoters(ctx context.Context, raftAddrs map[string]string, admit func(ctx context.Context, name string) error) {
	var joining []candidate
	for name, addr := range raftAddrs {
		joining = append(joining, candidate{m: gossipMember{Name: name, Status: memberlist.StateAlive, Meta: nodeMeta{Raft: addr, NonVoter: true}}})
	}
	n.admitAndAddWith(ctx, joining, func(ctx context.Context, m gossipMember) error { return admit(ctx, m.Name) })
}
