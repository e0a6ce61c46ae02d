package cluster

// Catching up before routing.
//
// A node routes on the table its FSM last applied. After a restart, or
// after it lost touch with the leader (paused, cut off, or the leader
// died), that table may lack what the rest of the cluster did meanwhile —
// a member added or enabled — and a visitor pinned to such a member would
// get a new cookie from this node and lose their chat. So a node that may
// be behind asks the leader what "caught up" means right now (the CatchUp
// RPC) and waits until its own FSM has applied that much:
//
//   - at start, before the daemon opens its data-plane listeners (bounded
//     by Config.StartupCatchupTimeout for a node with existing state, which
//     then serves the table it has; a node without state has nothing to
//     serve and waits for as long as it takes);
//   - after losing touch, before it moves a session: a request whose route
//     the table cannot honour waits for the catch-up, at most 2 s and at
//     most until StartupCatchupTimeout after the node noticed, then is
//     served from what the node has. Requests the table honours are never
//     held, so a partitioned node keeps routing its sessions where they
//     are.
//
// Which index: the leader answers after a Raft barrier. Its LastIndex may
// hold entries that never commit; its commit index, on a leader elected a
// moment ago, may still lag entries the previous leader committed and
// acknowledged, until an entry of the new term commits. A barrier commits
// such an entry (so the answer also proves a quorum still follows this
// leader) and returns once everything before it is applied to the
// leader's FSM: every write acknowledged before the question is covered,
// the read index of the Raft paper. The asker then needs two indexes
// because raft's AppliedIndex moves when entries are handed to the FSM
// goroutine, before they are applied, and counts barriers and no-ops the
// FSM never sees; the FSM's own index counts commands only and goes back
// when an operator restores an old snapshot. Raft applied >= the leader's
// raft applied index means nothing committed before the barrier is still
// to be handed over (a snapshot install, too: raft moves applied only once
// the FSM has restored it), and FSM index >= the leader's FSM index means
// the commands handed over have been applied.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// catchUp is one round of catching up: from when the node noticed it may
// be behind until its FSM has applied what the leader had then.
type catchUp struct {
	reason  string
	start   time.Time
	hold    time.Time     // requests wait at most until then; zero: no bound
	done    chan struct{} // closed once caught up
	status  atomic.Pointer[string]
	target  atomic.Pointer[gwelbv1.CatchUpResponse]
	startup bool
}

func (c *catchUp) setStatus(s string) { c.status.Store(&s) }

// describe says what the round waits for, for /readyz and the log.
func (c *catchUp) describe(n *Node) string {
	if t := c.target.Load(); t != nil {
		return fmt.Sprintf("applying up to raft index %d / state index %d from leader %s (at %d / %d)",
			t.GetAppliedIndex(), t.GetFsmIndex(), t.GetLeader(), n.raft.AppliedIndex(), n.fsm.AppliedIndex())
	}
	if s := c.status.Load(); s != nil {
		return *s
	}
	return "waiting for a leader"
}

func (c *catchUp) finished() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// freshness tracks whether this node's table may be behind the cluster's.
type freshness struct {
	// until is when (unix nanoseconds) the table stops being trusted
	// without asking: the last contact with a leader plus staleAfter. The
	// data plane reads it lock-free; 0 while catching up.
	until atomic.Int64

	mu  sync.Mutex
	cur *catchUp // the round in progress, nil when fresh
}

// staleAfter is how long without a word from the leader makes the table
// suspect: two heartbeat timeouts, so a follower hears from a healthy
// leader about twenty times (heartbeats go every tenth of a timeout)
// before it would suspect anything, and a missed heartbeat or two on a
// busy host changes nothing.
func (n *Node) staleAfter() time.Duration { return 2 * n.cfg.Timing.HeartbeatTimeout }

// Fresh reports whether a request that starts at now (unix nanoseconds)
// may trust this node's table: one atomic load, for the data plane.
func (n *Node) Fresh(now int64) bool { return now < n.fresh.until.Load() }

// AwaitFresh is called by the data plane before it moves a session while
// Fresh is false: it starts a catch-up if none runs and waits until the
// node has caught up, or until the round's bound has passed (a node that
// is really cut off must still serve), or until ctx ends.
func (n *Node) AwaitFresh(ctx context.Context) {
	n.fresh.mu.Lock()
	c := n.fresh.cur
	if c == nil {
		if n.Fresh(time.Now().UnixNano()) {
			n.fresh.mu.Unlock()
			return
		}
		// The monitor has not noticed yet (it may have been stopped with
		// the process, or starved): the request does.
		c = n.beginCatchUpLocked("a request found the table not refreshed for " + n.staleAfter().String())
	}
	n.fresh.mu.Unlock()
	if c == nil {
		return // shutting down
	}
	wait := requestHold
	if !c.hold.IsZero() {
		wait = min(wait, time.Until(c.hold))
	}
	if wait <= 0 {
		return
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
	case <-ctx.Done():
	}
}

// requestHold is the longest one request waits for a catch-up: a restart
// or a pause catches up in a few hundred milliseconds, while a node that
// is really cut off cannot, and its visitors must not time out waiting
// (browsers and GWE's own clients give up after a few seconds).
const requestHold = 2 * time.Second

// beginCatchUpLocked starts a round; n.fresh.mu is held. It returns nil
// when the node is stopping.
func (n *Node) beginCatchUpLocked(reason string) *catchUp {
	if n.ctx.Err() != nil {
		return nil
	}
	now := time.Now()
	c := &catchUp{reason: reason, start: now, hold: now.Add(n.cfg.StartupCatchupTimeout), done: make(chan struct{})}
	n.fresh.cur = c
	n.fresh.until.Store(0)
	n.log.Info("table may be behind the cluster's: catching up", "why", reason)
	n.goRun(func(ctx context.Context) { n.runCatchUp(ctx, c) })
	return c
}

// beginStartup starts the round a starting node makes before it routes.
// With existing state it is bounded by StartupCatchupTimeout; without, the
// node has no table to serve and waits for as long as it takes.
func (n *Node) beginStartup(existing bool) {
	now := time.Now()
	c := &catchUp{reason: "starting", start: now, done: make(chan struct{}), startup: true}
	if existing {
		c.hold = now.Add(n.cfg.StartupCatchupTimeout)
	}
	n.startup = c
	n.fresh.mu.Lock()
	n.fresh.cur = c
	n.fresh.mu.Unlock()
}

// watchFreshness keeps Fresh up to date and starts a catch-up when the
// node loses touch with the leader, or finds it did not run for a while
// (SIGSTOP, a frozen VM): then the last contact raft remembers may be
// recent (a heartbeat arrived as it resumed) while the log is not.
func (n *Node) watchFreshness(ctx context.Context) {
	tick := n.cfg.Timing.HeartbeatTimeout / 5
	t := time.NewTicker(tick)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		gap := now.Sub(last)
		last = now
		n.checkFreshness(now, gap)
	}
}

func (n *Node) checkFreshness(now time.Time, gap time.Duration) {
	bound := n.staleAfter()
	n.fresh.mu.Lock()
	defer n.fresh.mu.Unlock()
	if n.fresh.cur != nil {
		return
	}
	seen := now
	switch {
	case gap > bound:
		n.beginCatchUpLocked(fmt.Sprintf("this node did not run for %v (stopped, or starved of CPU)", gap.Round(time.Millisecond)))
		return
	case n.IsLeader():
		// A leader cut off from its quorum steps down within the leader
		// lease, and no other leader can commit before then.
	default:
		lc := n.raft.LastContact()
		if lc.IsZero() || now.Sub(lc) > bound {
			n.beginCatchUpLocked(fmt.Sprintf("no contact with a leader for more than %v", bound))
			return
		}
		seen = lc
	}
	n.fresh.until.Store(seen.Add(bound).UnixNano())
}

// runCatchUp asks for the target until an answer comes, then waits until
// the FSM has applied it.
func (n *Node) runCatchUp(ctx context.Context, c *catchUp) {
	for attempt := 0; ; attempt++ {
		err := n.catchUpOnce(ctx, c, attempt)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return
		}
		c.setStatus(err.Error())
		select {
		case <-ctx.Done():
			return
		case <-time.After(n.cfg.Timing.HeartbeatTimeout / 5):
		}
	}
	t := c.target.Load()
	n.log.Info("caught up with the cluster", "why", c.reason, "took", time.Since(c.start).Round(time.Millisecond),
		"raft_index", t.GetAppliedIndex(), "state_index", t.GetFsmIndex(), "leader", t.GetLeader())
	n.fresh.mu.Lock()
	n.fresh.cur = nil
	n.fresh.until.Store(time.Now().Add(n.staleAfter()).UnixNano())
	close(c.done)
	n.fresh.mu.Unlock()
}

func (n *Node) catchUpOnce(ctx context.Context, c *catchUp, attempt int) error {
	actx, cancel := context.WithTimeout(ctx, n.askTimeout())
	t, err := n.askCatchUp(actx, attempt)
	cancel()
	if err != nil {
		return err
	}
	c.target.Store(t)
	for !n.caughtUpTo(t) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

// caughtUpTo reports whether this node has applied what the leader had
// (see the top of this file) and the data plane routes on it: the FSM
// publishes a new table after it has moved its index, so the last check
// waits out a table on its way to the proxy.
func (n *Node) caughtUpTo(t *gwelbv1.CatchUpResponse) bool {
	if n.raft.AppliedIndex() < t.GetAppliedIndex() || n.fsm.AppliedIndex() < t.GetFsmIndex() {
		return false
	}
	cur := n.tables.current()
	return cur != nil && cur.Index() >= n.fsm.Table().Index()
}

// askTimeout bounds one question: a barrier takes a few milliseconds on a
// healthy leader, so a peer that does not answer within a second is cut
// off or has no quorum, and another peer is worth asking.
func (n *Node) askTimeout() time.Duration { return max(time.Second, 2*n.cfg.Timing.HeartbeatTimeout) }

// askCatchUp asks the leader — itself, when it leads — for the catch-up
// target. Every other attempt, or when no leader is known (a restarted
// node hears of the leader only with its first heartbeat), it asks a gossip
// peer, which relays to the leader it knows.
func (n *Node) askCatchUp(ctx context.Context, attempt int) (*gwelbv1.CatchUpResponse, error) {
	if n.IsLeader() {
		return n.leaderCatchUp(ctx)
	}
	var addr, who string
	if l := n.Leader(); l != "" && l != n.cfg.Name && attempt%2 == 0 {
		addr, who = n.grpcAddrOf(l), l
	}
	if addr == "" {
		var peers []gossipMember
		for _, m := range n.members() {
			if m.Name != n.cfg.Name && m.Status == memberlist.StateAlive && m.Meta.GRPC != "" {
				peers = append(peers, m)
			}
		}
		if len(peers) == 0 {
			return nil, errors.New("no leader known and no peer to ask")
		}
		p := peers[attempt/2%len(peers)]
		addr, who = p.Meta.GRPC, p.Name
	}
	resp, err := n.peers.catchUp(ctx, addr, n.cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("ask %s (%s) what to apply: %w", who, addr, err)
	}
	return resp, nil
}

// leaderCatchUp answers CatchUp on the leader: after a barrier, and after
// the seed if this leader is about to write it (a node that caught up
// before the seed would have no pools to route).
func (n *Node) leaderCatchUp(ctx context.Context) (*gwelbv1.CatchUpResponse, error) {
	timeout := n.cfg.WriteTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	if err := n.raft.Barrier(timeout).Error(); err != nil {
		return nil, status.Errorf(codes.Unavailable, "barrier: %v", err)
	}
	for len(n.cfg.Seed) > 0 && !n.fsm.State().GetSeeded() {
		select {
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	// The FSM index first: whatever the raft index read next covers, the
	// asker then waits for at least the commands read here.
	fsmIndex := n.fsm.AppliedIndex()
	return &gwelbv1.CatchUpResponse{AppliedIndex: n.raft.AppliedIndex(), FsmIndex: fsmIndex, Leader: n.cfg.Name}, nil
}

// CatchUp answers on the leader; a follower relays the call once.
func (s *adminServer) CatchUp(ctx context.Context, req *gwelbv1.CatchUpRequest) (*gwelbv1.CatchUpResponse, error) {
	n := s.n
	if n.IsLeader() {
		return n.leaderCatchUp(ctx)
	}
	c, err := n.leaderClient(ctx)
	if err != nil {
		return nil, err
	}
	return c.CatchUp(n.peers.outgoing(ctx), req)
}

func (p *peerClients) catchUp(ctx context.Context, addr, node string) (*gwelbv1.CatchUpResponse, error) {
	c, err := p.client(addr)
	if err != nil {
		return nil, err
	}
	return c.CatchUp(p.outgoing(ctx), &gwelbv1.CatchUpRequest{Node: node})
}

// Ready reports whether the node may route: nil once it has caught up with
// the cluster after starting, or once StartupCatchupTimeout has passed with
// a table to serve; otherwise why not.
func (n *Node) Ready() error {
	c := n.startup
	if c == nil || c.finished() {
		return nil
	}
	if !c.hold.IsZero() && time.Now().After(c.hold) && n.tables.current() != nil {
		return nil
	}
	return fmt.Errorf("catching up with the cluster: %s", c.describe(n))
}

// ErrNotCaughtUp wraps WaitCaughtUp's answer when the node routes on the
// table it has because it could not catch up in time.
var ErrNotCaughtUp = errors.New("not caught up with the cluster")

// WaitCaughtUp blocks until the starting node may open its data plane:
// nil once it has applied what the leader had when it asked; an error
// wrapping ErrNotCaughtUp once StartupCatchupTimeout has passed and the
// node has a table to serve (the error says what it was waiting for); the
// context's error if ctx ends first. A node that started without state
// waits for as long as it takes: it has nothing to serve.
func (n *Node) WaitCaughtUp(ctx context.Context) error {
	c := n.startup
	if c == nil {
		return nil
	}
	var bound <-chan time.Time
	if !c.hold.IsZero() {
		t := time.NewTimer(time.Until(c.hold))
		defer t.Stop()
		bound = t.C
	}
	for {
		select {
		case <-c.done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-n.ctx.Done():
			return errors.New("node stopped before it caught up")
		case <-bound:
			if n.tables.current() != nil {
				return fmt.Errorf("%w within %v: %s", ErrNotCaughtUp, n.cfg.StartupCatchupTimeout, c.describe(n))
			}
			// No table at all yet: keep waiting, and look again soon.
			bound = time.After(50 * time.Millisecond)
		}
	}
}
