package cluster

// HeartbeatsAnswered counts the heartbeats to non-voters this node, as
// leader, answered without sending (transport.go), for
// TestNonVoterHeartbeatsRideOnAppendEntries.
func (n *Node) HeartbeatsAnswered() uint64 { return n.raftTrans.skipped.Load() }
