package cluster

import (
	"sync"
	"time"
)

// Hooks for the catch-up tests (catchup_test.go): a partition without
// root or network namespaces, and a shorter refusal bound.

// StallRaft makes this node's Raft receive nothing more — no log
// replication, and no heartbeats either when heartbeats is set — until
// resume is called, as a partition does to connections that stay open:
// what was sent is delivered late, after the heal, like TCP's
// retransmissions. gRPC is untouched. resume may be called more than once.
func (n *Node) StallRaft(heartbeats bool) (resume func()) {
	s := &inboxStall{release: make(chan struct{}), heartbeats: heartbeats}
	n.inbox.stall.Store(s)
	return sync.OnceFunc(func() {
		n.inbox.stall.CompareAndSwap(s, nil)
		close(s.release)
	})
}

// CutCatchUp makes this node's catch-up questions go unanswered until heal
// is called, as across a partition. heal may be called more than once.
func (n *Node) CutCatchUp() (heal func()) {
	ch := make(chan struct{})
	n.fresh.askCut.Store(&ch)
	return sync.OnceFunc(func() {
		n.fresh.askCut.CompareAndSwap(&ch, nil)
		close(ch)
	})
}

// SetStaleRefuse sets how long the node, once it knows it may be behind,
// refuses to move sessions it cannot place (staleRefuse, 30 s).
func (n *Node) SetStaleRefuse(d time.Duration) { n.fresh.refuseFor.Store(int64(d)) }

// UnwatchFreshness stops the freshness monitor's looks (watchFreshness)
// until resume is called: the node's freshness then moves only as
// AppendEntries arrive (noteContact).
func (n *Node) UnwatchFreshness() (resume func()) {
	n.fresh.unwatched.Store(true)
	return func() { n.fresh.unwatched.Store(false) }
}
