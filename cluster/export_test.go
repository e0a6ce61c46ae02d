package cluster

import (
	"context"
	"time"
)

// Hooks for the external tests (package cluster_test, which can use
// clustertest; an in-package test cannot, clustertest imports cluster).

// LeaveGossip leaves gossip on purpose, as Shutdown does, but skips the Raft
// removal that follows: a node whose own removal did not complete.
func (n *Node) LeaveGossip(timeout time.Duration) error { return n.leaveGossip(timeout) }

// Reconcile runs one pass of the leader's reconcile now, so a test can
// tell "the leader looked and kept it" from "the leader has not looked yet".
func (n *Node) Reconcile(ctx context.Context) { n.reconcile(ctx) }

// ForwardedKey is the metadata key that marks a call one node relays to
// another on a client's behalf.
const ForwardedKey = forwardedKey

// LeaderHeartbeatFactor is how much slower the leader heartbeats.
const LeaderHeartbeatFactor = leaderHeartbeatFactor

// RaftHeartbeatTimeout is the heartbeat timeout raft runs with now (the
// leader paces its heartbeats, leader.go).
func (n *Node) RaftHeartbeatTimeout() time.Duration {
	return n.raft.ReloadableConfig().HeartbeatTimeout
}

// LogSyncsEachWrite reports whether this node's Raft store fsyncs each
// write: always on a node that asks to vote, only while it is a voter all
// the same on one that asks not to (logstore.go).
func (n *Node) LogSyncsEachWrite() bool { return n.suffrage == nil || n.suffrage.voter.Load() }
