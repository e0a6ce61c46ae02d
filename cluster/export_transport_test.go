package cluster

import (
	"time"

	"github.com/hashicorp/raft"
	dto "github.com/prometheus/client_model/go"
)

// HeartbeatsAnswered counts the heartbeats to non-voters this node, as
// leader, answered without sending (transport.go), for
// TestNonVoterHeartbeatsRideOnAppendEntries.
func (n *Node) HeartbeatsAnswered() uint64 { return n.raftTrans.skipped.Load() }

// AppendEntriesHeld counts the idle AppendEntries this node, as leader,
// held (transport.go), and of those the ones an append released and the
// follower's last answer stood in for.
func (n *Node) AppendEntriesHeld() (held, spared uint64) {
	return n.raftTrans.held.Load(), n.raftTrans.spared.Load()
}

// AppendEntriesHolding counts the idle AppendEntries this node holds now.
func (n *Node) AppendEntriesHolding() int64 { return n.raftTrans.holding.Load() }

// HoldIdleAppends sets how long this node, as leader, holds an idle
// AppendEntries (4 commit timeouts by default); its gossip still says the
// default, which followers then undercount: on the safe side.
func (n *Node) HoldIdleAppends(d time.Duration) { n.raftTrans.holdIdle.Store(int64(d)) }

// AppendEntriesReceived counts the AppendEntries (not heartbeats) this
// node's Raft received.
func (n *Node) AppendEntriesReceived() uint64 { return n.inbox.appends.Load() }

// CatchUpRounds counts the catch-up rounds this node began after it
// started (catchup.go): a needless one is a node that thought its table
// stale.
func (n *Node) CatchUpRounds() uint64 {
	var m dto.Metric
	if err := n.metrics.CatchUpRounds.Write(&m); err != nil {
		panic(err)
	}
	return uint64(m.GetCounter().GetValue())
}

// IdleHold is how long this node, as leader, holds an idle AppendEntries.
func (n *Node) IdleHold() time.Duration { return time.Duration(n.raftTrans.holdIdle.Load()) }

// LeaderIdleHold is the hold this node's leader gossips, which it counts
// on (catchup.go); 0 when it does not know it.
func (n *Node) LeaderIdleHold() time.Duration { return n.idleHoldOf(n.Leader()) }

// GossipNoHold makes this node behave as a build before the hold of idle
// AppendEntries: it gossips no hold and counts on none (nor on stamped
// heartbeats). It hands its peers
// the new meta over TCP too, as a restarted node's join does: gossip's
// few UDP packets may be dropped on a busy machine.
func (n *Node) GossipNoHold() error {
	n.noHold.Store(true)
	n.noBeats.Store(true)
	n.inbox.ignoreBeats.Store(true)
	if err := n.gossip.UpdateNode(2 * time.Second); err != nil {
		return err
	}
	return n.pushToPeers(5 * time.Second)
}

// GossipNoBeats makes this node behave as the build before stamped
// heartbeats: it gossips the hold but no "hb", and does not count the
// commit index heartbeats name.
func (n *Node) GossipNoBeats() error {
	n.noBeats.Store(true)
	n.inbox.ignoreBeats.Store(true)
	if err := n.gossip.UpdateNode(2 * time.Second); err != nil {
		return err
	}
	return n.pushToPeers(5 * time.Second)
}

// CountsBeats reports whether this node, as leader, counts on the named
// follower's count of the commit index its heartbeats name.
func (n *Node) CountsBeats(name string) bool { return n.countsBeats(raft.ServerID(name)) }

// CountsHold reports whether this node, as leader, holds the idle
// AppendEntries to the named follower.
func (n *Node) CountsHold(name string) bool { return n.countsHold(raft.ServerID(name)) }
