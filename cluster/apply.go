package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gwelb/gwelb/fsm"
	"github.com/gwelb/gwelb/internal/rpcerr"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// errNoLeader is what callers see when no leader appears within the write
// timeout. It carries the reason NO_LEADER, which gwelbctl maps to its exit
// code 4; the wording is for people only.
func errNoLeader(wait time.Duration) error {
	if wait == 0 {
		return rpcerr.NoLeader("no leader known to this node (is a quorum of nodes up?)")
	}
	return rpcerr.NoLeader(fmt.Sprintf("no leader: none elected within %v (is a quorum of nodes up?)", wait))
}

// errNotLeader answers a request relayed to this node as the leader when
// it is not (any more): the relaying node tries again, and a client that
// gets it has met a leadership change, so it carries NO_LEADER too.
func errNotLeader() error { return rpcerr.NoLeader("not leader") }

// lostLeadership reports a raft error that means this node is not, or no
// longer, the leader.
func lostLeadership(err error) bool {
	return errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) || errors.Is(err, raft.ErrLeadershipTransferInProgress)
}

// awaitRaft waits for f's answer, or for ctx to end, whichever comes
// first. raft v1.7.3 can lose the answer to an Apply, a Barrier or a
// configuration change it committed: runFSM returns on shutdown without
// answering what is still queued for it (only restore futures watch
// shutdownCh), so a bare f.Error() may block for ever, and with it the
// node's Kill, which waits for its goroutines after cancelling their
// context (a CI run hung 10 minutes in TestAdmissionOfManyNonVoters this
// way). Every wait on a raft future goes through here. The goroutine
// waiting for a lost answer stays blocked: one per lost future, and only
// at shutdown.
func awaitRaft(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("waiting for raft: %w", ctx.Err())
	}
}

// raftUnavailable maps a failed raft operation op onto Unavailable, with
// the reason NO_LEADER when the cause is lost leadership.
func raftUnavailable(op string, err error) error {
	msg := fmt.Sprintf("%s: %v", op, err)
	if lostLeadership(err) {
		return rpcerr.NoLeader(msg)
	}
	return status.Error(codes.Unavailable, msg)
}

// apply commits cmd through Raft: on the leader directly, on a follower by
// forwarding to the leader's admin API. Without a leader it waits up to
// WriteTimeout for one. It returns the index the command was applied at.
func (n *Node) apply(ctx context.Context, cmd *gwelbv1.Command) (uint64, error) {
	if cmd.UnixNanos == 0 {
		cmd.UnixNanos = time.Now().UnixNano()
	}
	data, err := fsm.EncodeCommand(cmd)
	if err != nil {
		return 0, status.Errorf(codes.InvalidArgument, "encode command: %v", err)
	}
	return n.applyBytes(ctx, data, false)
}

// applyBytes applies an encoded command. A forwarded command is never
// forwarded again: a node that lost leadership answers "not leader" and the
// original node retries against the new leader.
func (n *Node) applyBytes(ctx context.Context, data []byte, forwarded bool) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.WriteTimeout)
	defer cancel()
	for {
		index, retry, err := n.tryApply(ctx, data, forwarded)
		if !retry {
			if err == nil && !forwarded {
				// Read your writes: a client that wrote through this node
				// and reads from it next must see its write.
				n.waitApplied(ctx, index)
			}
			return index, err
		}
		select {
		case <-ctx.Done():
			if forwarded {
				return 0, errNotLeader()
			}
			// No leader decided this write: this node logs it (DESIGN.md §4.3).
			err := errNoLeader(n.cfg.WriteTimeout)
			n.auditCommand(ctx, data, 0, err)
			return 0, err
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// waitApplied waits until this node's FSM has applied index, or ctx ends.
// (raft's AppliedIndex moves when entries are handed to the FSM, before
// they are applied, so the FSM's own index is the one to watch.)
func (n *Node) waitApplied(ctx context.Context, index uint64) {
	for n.fsm.AppliedIndex() < index {
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// tryApply makes one attempt; retry reports a transient failure (no leader
// yet, leadership changed) worth another attempt.
func (n *Node) tryApply(ctx context.Context, data []byte, forwarded bool) (index uint64, retry bool, err error) {
	if n.IsLeader() {
		index, retry, err = n.applyAsLeader(ctx, data)
		if !retry {
			// The leader decided: it alone logs an admin write, with the
			// caller a follower relayed it for (DESIGN.md §4.3).
			n.auditCommand(ctx, data, index, err)
		}
		return index, retry, err
	}
	if forwarded {
		return 0, true, nil
	}
	leader := n.Leader()
	if leader == "" {
		return 0, true, nil
	}
	addr := n.grpcAddrOf(leader)
	if addr == "" {
		return 0, true, nil // gossip has not told us where the leader listens yet
	}
	c, err := n.peers.client(addr)
	if err != nil {
		return 0, false, err
	}
	resp, err := c.Apply(n.relayContext(ctx), &gwelbv1.ApplyRequest{Command: data})
	if err != nil {
		if st, ok := status.FromError(err); ok && st.Code() == codes.Unavailable {
			return 0, true, nil
		}
		return 0, false, err
	}
	return resp.GetIndex(), false, nil
}

// applyAsLeader proposes data to Raft on this node, the leader.
func (n *Node) applyAsLeader(ctx context.Context, data []byte) (index uint64, retry bool, err error) {
	deadline, _ := ctx.Deadline()
	f := n.raft.Apply(data, time.Until(deadline))
	if err := awaitRaft(ctx, f); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) || errors.Is(err, raft.ErrLeadershipTransferInProgress) {
			// Trying again after an indeterminate ErrLeadershipLost is
			// exact: the FSM answers a request id it applied before with
			// its first outcome instead of applying it twice.
			return 0, true, nil
		}
		return 0, false, raftUnavailable("raft apply", err)
	}
	switch resp := f.Response().(type) {
	case error:
		return 0, false, fsmError(resp)
	case fsm.AppliedEarlier:
		// A retry of a request applied before: answer what it answered
		// (DESIGN.md §5.3).
		return uint64(resp), false, nil
	}
	return f.Index(), false, nil
}

// fsmError maps an FSM rejection onto a gRPC status.
func fsmError(err error) error {
	switch {
	case errors.Is(err, fsm.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, fsm.ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, fsm.ErrVersion):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, fsm.ErrExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, fsm.ErrConflict):
		return status.Error(codes.Aborted, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// removePeer removes a node from the Raft configuration, on the leader.
func (n *Node) removePeer(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.WriteTimeout)
	defer cancel()
	for {
		if n.IsLeader() {
			f := n.raft.RemoveServer(raft.ServerID(name), 0, n.cfg.WriteTimeout)
			err := awaitRaft(ctx, f)
			if err == nil {
				n.log.Info("removed node from the raft configuration", "peer", name)
				n.audit(ctx, "Leave", []any{"peer", name, "action", "remove raft peer"}, f.Index(), nil)
				return nil
			}
			if !lostLeadership(err) {
				err = fmt.Errorf("remove %s: %w", name, err)
				n.audit(ctx, "Leave", []any{"peer", name, "action", "remove raft peer"}, 0, err)
				return err
			}
			// Leadership moved on: try again on, or through, the new leader
			// (removing a server twice is harmless).
		} else if leader := n.Leader(); leader != "" && leader != n.cfg.Name {
			if addr := n.grpcAddrOf(leader); addr != "" {
				c, err := n.peers.client(addr)
				if err != nil {
					return err
				}
				_, err = c.Leave(n.relayContext(ctx), &gwelbv1.LeaveRequest{Node: name})
				return err
			}
		}
		select {
		case <-ctx.Done():
			err := errNoLeader(n.cfg.WriteTimeout)
			n.audit(ctx, "Leave", []any{"peer", name, "action", "remove raft peer"}, 0, err)
			return err
		case <-time.After(50 * time.Millisecond):
		}
	}
}
