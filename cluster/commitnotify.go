package cluster

// Telling followers of a commit without polling them (DESIGN.md §1.3).
//
// A follower applies an entry only once it hears the leader's commit index
// covers it, and raft v1.7.3 sends the commit index only with an
// AppendEntries: when new entries are appended, or every CommitTimeout
// (replication.go's replicate loop), entries or not. Heartbeats do not
// carry it. So a commit reaches the followers' tables with the next append
// or the next CommitTimeout tick. A short CommitTimeout (gwelb had 5 ms)
// makes a member change routable everywhere fast, but then an idle leader
// sends every follower 100-200 AppendEntries a second: 10-12% of a core on
// the leader of a three-node cluster, growing with every follower.
//
// Instead the leader appends a Raft barrier after the FSM applies a
// command: appending it triggers replication at once, and that
// AppendEntries carries the commit index that covers the command. The
// barrier itself is not a command (the FSM never sees it) and so triggers
// nothing, and at most one is in flight: commands applied while one is
// on its way ask for one more, so a burst of writes costs one or two
// barriers. CommitTimeout stays as the follower's proof of life for the
// freshness monitor (catchup.go), which needs an AppendEntries at least
// every few hundred milliseconds; nothing routable waits for it.

import (
	"context"

	"github.com/hashicorp/raft"

	"github.com/gwelb/gwelb/fsm"
)

// commitFSM is the FSM raft drives: the node's FSM, and a word to the
// commit notifier after each command.
type commitFSM struct {
	*fsm.FSM
	committed func()
}

// Apply applies the command, then asks for the followers to be told.
func (f commitFSM) Apply(l *raft.Log) any {
	r := f.FSM.Apply(l)
	f.committed()
	return r
}

// notifyCommit asks the leader to tell the followers what it has committed
// (never blocks: a request already pending covers this one too).
func (n *Node) notifyCommit() {
	select {
	case n.commits <- struct{}{}:
	default:
	}
}

// tellFollowers turns each notifyCommit on the leader into one barrier, one
// at a time (see the top of this file). On a follower it has nothing to do:
// the FSM applies what the leader already committed.
func (n *Node) tellFollowers(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.commits:
		}
		if !n.IsLeader() {
			continue
		}
		// A leader that loses leadership meanwhile gets an error; the new
		// leader's own first append carries the commit index.
		if err := awaitRaft(ctx, n.raft.Barrier(n.cfg.WriteTimeout)); err != nil && !lostLeadership(err) && ctx.Err() == nil {
			n.log.Debug("telling followers of a commit", "err", err)
		}
	}
}
