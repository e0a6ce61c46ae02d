package cluster

// Catching up before routing.
//
// A node routes on the table its FSM last applied. After a restart, or
// after it lost touch with the leader (paused, cut off, or the leader
// died), that table may lack what the rest of the cluster did meanwhile —
// a member added or enabled — and a visitor pinned to such a member would
// get a new cookie from this node and lose their chat. So a node that may
// be behind asks the leader what "caught up" means right now (the CatchUp
// RPC) and routes on the answer (DESIGN.md §6.1):
//
//   - at start, before the daemon opens its data-plane listeners (bounded
//     by Config.StartupCatchupTimeout for a node with existing state, which
//     then serves the table it has; a node without state has nothing to
//     serve and waits for as long as it takes);
//   - after losing touch, before it moves a session: a request whose route
//     the table cannot honour waits for the catch-up, at most 2 s and at
//     most until StartupCatchupTimeout after the node noticed. If the node
//     is still behind then, a session whose member it does not know, or
//     knows only as disabled, is not moved: the request gets a 503 and
//     keeps its cookie, until the node has been behind for staleRefuse
//     (30 s) and routes on what it has. Requests the table honours are
//     never held, so a partitioned node keeps routing its sessions where
//     they are.
//
// Losing touch is judged by the log, not by contact: the node's table is
// fresh as of the last AppendEntries from the leader whose commit index
// it has applied (raftInbox), or as of the last catch-up question it
// completed. Heartbeats do not count: after a partition heals they can
// reach a node seconds before the entries do, since raft sends them on
// connections of their own, each in its own TCP retransmission backoff.
//
// The answer carries the leader's whole State (unless the asker has it),
// and the node hands its table to the data plane at once, ahead of its
// own FSM, which replays up to it in the background (tables.go holds the
// older ones back, as after loading the table cache). So catching up
// costs one round trip to the leader — over a connection of its own,
// since the one kept for the leader may be stuck in retransmission
// backoff too — and never waits for Raft replication, which can sit out
// seconds of it after a heal. An answer is news for staleAfter only: a
// round that has not reached it by then asks again, so a node never calls
// itself caught up with a target older than the writes it must know.
//
// Which index: the leader answers after a Raft barrier. Its LastIndex may
// hold entries that never commit; its commit index, on a leader elected a
// moment ago, may still lag entries the previous leader committed and
// acknowledged, until an entry of the new term commits. A barrier commits
// such an entry (so the answer also proves a quorum still follows this
// leader) and returns once everything before it is applied to the
// leader's FSM: every write acknowledged before the question is covered,
// the read index of the Raft paper. Without the state (a leader that
// predates it, or a state too large to send) the asker waits for its own
// Raft, and then needs two indexes because raft's AppliedIndex moves when
// entries are handed to the FSM goroutine, before they are applied, and
// counts barriers and no-ops the FSM never sees; the FSM's own index
// counts commands only. Raft applied >= the leader's raft applied index
// means nothing committed before the barrier is still to be handed over
// (a snapshot install, too: raft moves applied only once the FSM has
// restored it), and FSM index >= the leader's FSM index means the
// commands handed over have been applied.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/gwelb/gwelb/fsm"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// catchUp is one round of catching up: from when the node noticed it may
// be behind until the data plane routes on what the leader had then.
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
	if s := c.status.Load(); s != nil {
		return *s
	}
	if t := c.target.Load(); t != nil {
		return fmt.Sprintf("applying up to raft index %d / state index %d from leader %s (at %d / %d)",
			t.GetAppliedIndex(), t.GetFsmIndex(), t.GetLeader(), n.raft.AppliedIndex(), n.fsm.AppliedIndex())
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
	// without asking: the time it was last known to hold everything the
	// leader had committed, plus staleAfter. The data plane reads it
	// lock-free; 0 while catching up.
	until atomic.Int64

	// refuseFor overrides staleRefuse (tests); 0 keeps the default.
	refuseFor atomic.Int64
	// askCut, tests only: while set, catch-up questions go unanswered
	// until it is closed, as across a partition.
	askCut atomic.Pointer[chan struct{}]
	// unwatched, tests only: while set, the monitor does not look.
	unwatched atomic.Bool

	mu       sync.Mutex
	cur      *catchUp     // the round in progress, nil when fresh
	caughtAt time.Time    // when the last completed round asked its question
	prev     *replContact // the leader's last AppendEntries as the monitor saw it one tick ago
	prevBeat *replContact // its last heartbeat naming a commit index, as seen one tick ago
	noted    time.Time    // fresh as of then, by noteContact
}

// staleAfter is how long without news from the leader's log makes the
// table suspect: two heartbeat timeouts. A healthy idle leader sends every
// follower an AppendEntries with its commit index a hold (600 ms) after
// the previous one came back (transport.go) besides heartbeats, and one at
// once after each commit (commitnotify.go); an idle one counts as sent a
// hold after the one before it arrived, so an idle follower's news is at
// most about 600 ms old (a hold and two round trips: noteContact), and
// this leaves 400 ms for a busy host before a needless catch-up.
func (n *Node) staleAfter() time.Duration { return 2 * n.cfg.Timing.HeartbeatTimeout }

// staleRefuse is how long a node that knows it may be behind refuses to
// move a session whose member it does not know, or knows as disabled,
// counted from when it noticed: long enough to outlast the partitions and
// elections a cluster recovers from (a catch-up takes one round trip once
// the leader is reachable), short enough that visitors with cookies of
// members that are really gone are not refused for a whole outage of the
// quorum. Then the node routes on what it has (invariant 4).
const staleRefuse = 30 * time.Second

func (n *Node) staleRefuse() time.Duration {
	if d := n.fresh.refuseFor.Load(); d > 0 {
		return time.Duration(d)
	}
	return staleRefuse
}

// Fresh reports whether a request that starts at now (unix nanoseconds)
// may trust this node's table: one atomic load, for the data plane.
func (n *Node) Fresh(now int64) bool { return now < n.fresh.until.Load() }

// MayMove reports whether a request at now (unix nanoseconds) may move a
// session whose member this node's table does not know, or knows only as
// disabled: when the table is fresh, and when the node has been behind
// for longer than staleRefuse; not while a catch-up may still bring the
// member (DESIGN.md §6.1). The data plane asks only after AwaitFresh.
func (n *Node) MayMove(now int64) bool {
	if n.Fresh(now) {
		return true
	}
	n.fresh.mu.Lock()
	c := n.fresh.cur
	n.fresh.mu.Unlock()
	return c != nil && now-c.start.UnixNano() >= int64(n.staleRefuse())
}

// AwaitFresh is called by the data plane before it moves a session while
// Fresh is false: it starts a catch-up if none runs and waits until the
// node has caught up, or until the round's bound has passed (a node that
// is really cut off must still answer), or until ctx ends.
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
	n.metrics.CatchUpRounds.Inc()
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
// leader's log stops reaching the node, or when the node finds it did not
// run for a while (SIGSTOP, a frozen VM): then the last entries raft
// remembers may be recent (they arrived as it resumed) while the table is
// not. It looks every freshTick; between looks a follower's freshness
// moves with each AppendEntries as it arrives (noteContact).
func (n *Node) watchFreshness(ctx context.Context) {
	t := time.NewTicker(n.freshTick())
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

// freshTick is how often the freshness monitor looks: half of staleAfter
// (500 ms by default). It was a tenth of that, and its wakeups were a
// sixth of an idle node's (issue 12): the looks are needed only to notice
// a silence and a process that did not run (a look more than staleAfter
// after the one before), since a follower's freshness moves as each
// AppendEntries or stamped heartbeat arrives, and a leader's table (fresh
// as of the look) is then trusted at least half of staleAfter ahead. A
// look delayed by more than half of staleAfter counts as a stall: a
// needless catch-up, one round trip.
func (n *Node) freshTick() time.Duration { return n.staleAfter() / 2 }

func (n *Node) checkFreshness(now time.Time, gap time.Duration) {
	if n.fresh.unwatched.Load() {
		return
	}
	bound := n.staleAfter()
	n.fresh.mu.Lock()
	defer n.fresh.mu.Unlock()
	cur, prev := n.inbox.last.Load(), n.fresh.prev
	beat, prevBeat := n.inbox.lastBeat.Load(), n.fresh.prevBeat
	n.fresh.prev, n.fresh.prevBeat = cur, beat
	if n.fresh.cur != nil {
		return
	}
	if gap > bound {
		n.beginCatchUpLocked(fmt.Sprintf("this node did not run for %v (stopped, or starved of CPU)", gap.Round(time.Millisecond)))
		return
	}
	seen := now
	if !n.IsLeader() {
		// A leader cut off from its quorum steps down within the leader
		// lease, and no other leader can commit before then. A follower
		// is as fresh as the leader's log: as of when the leader sent the
		// last AppendEntries (or heartbeat naming one) whose commit index
		// it has applied, this tick's or the one seen a tick ago (raft
		// hands entries to the FSM a moment after it counts them applied;
		// a tick later they are in the table), or as of its last catch-up
		// question, or as noteContact found when one arrived.
		seen = n.fresh.caughtAt
		if n.fresh.noted.After(seen) {
			seen = n.fresh.noted
		}
		applied, term := n.raft.AppliedIndex(), n.raft.CurrentTerm()
		for _, c := range []*replContact{cur, prev, beat, prevBeat} {
			if c != nil && c.term >= term && applied >= c.commit && c.sent.After(seen) {
				seen = c.sent
			}
		}
		if seen.IsZero() || now.Sub(seen) > bound {
			n.beginCatchUpLocked(fmt.Sprintf("the leader's log has not reached this node for more than %v", bound))
			return
		}
	}
	n.fresh.until.Store(seen.Add(bound).UnixNano())
}

// noteContact moves a follower's freshness as an AppendEntries, or a
// heartbeat naming the commit index, arrives (raftInbox.run, beat; prev is
// the one before it in the same chain), so the monitor need not look
// often (freshTick): the table is fresh as of when the previous one was sent, if its
// commit index is applied (it arrived a round trip ago: raft has handed
// those entries to the FSM), and as of when this one was sent, if it
// names no commit the previous did not (an idle one, most often). It only
// ever moves freshness forward, and not while a catch-up round runs: the
// monitor decides when the table is behind.
func (n *Node) noteContact(prev, c *replContact) {
	n.fresh.mu.Lock()
	defer n.fresh.mu.Unlock()
	if n.fresh.cur != nil {
		return
	}
	seen := n.fresh.noted
	applied, term := n.raft.AppliedIndex(), n.raft.CurrentTerm()
	for _, x := range []*replContact{prev, c} {
		if x == nil || x.term < term || applied < x.commit || !x.sent.After(seen) {
			continue
		}
		if x == c && (prev == nil || c.commit > prev.commit) {
			continue // its commit may still be on its way to the FSM
		}
		seen = x.sent
	}
	if seen.After(n.fresh.noted) {
		n.fresh.noted = seen
		if u := seen.Add(n.staleAfter()).UnixNano(); u > n.fresh.until.Load() {
			n.fresh.until.Store(u)
		}
	}
}

// runCatchUp asks until an answer comes that the data plane routes on
// while it is still news, then marks the node fresh as of the question.
func (n *Node) runCatchUp(ctx context.Context, c *catchUp) {
	var asked time.Time
	for attempt := 0; ; attempt++ {
		var err error
		asked, err = n.catchUpOnce(ctx, c, attempt)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return
		}
		c.setStatus(err.Error())
		n.log.Debug("catching up: no answer yet", "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(n.cfg.Timing.HeartbeatTimeout / 5):
		}
	}
	t := c.target.Load()
	n.log.Info("caught up with the cluster", "why", c.reason, "took", time.Since(c.start).Round(time.Millisecond),
		"raft_index", t.GetAppliedIndex(), "state_index", t.GetFsmIndex(), "leader", t.GetLeader(), "by", caughtUpBy(t))
	n.fresh.mu.Lock()
	n.fresh.cur = nil
	n.fresh.caughtAt = asked
	n.fresh.until.Store(asked.Add(n.staleAfter()).UnixNano())
	close(c.done)
	n.fresh.mu.Unlock()
}

func caughtUpBy(t *gwelbv1.CatchUpResponse) string {
	if len(t.GetState()) > 0 {
		return "the leader's state"
	}
	return "raft replication"
}

// catchUpOnce asks once and waits until the data plane routes on the
// answer; it returns when the question was asked.
func (n *Node) catchUpOnce(ctx context.Context, c *catchUp, attempt int) (time.Time, error) {
	asked := time.Now()
	actx, cancel := context.WithTimeout(ctx, n.askTimeout())
	t, err := n.askCatchUp(actx, attempt)
	cancel()
	if err != nil {
		return asked, err
	}
	c.status.Store(nil)
	c.target.Store(t)
	if err := n.routeOnLeaderState(t); err != nil {
		// Never expected (the leader validated what it applied); Raft
		// still brings the same entries.
		n.log.Warn("cannot route on the state the leader sent; waiting for raft to replicate it", "err", err)
	}
	// An answer says nothing about writes after the question: one not
	// reached within staleAfter (Raft slow to replicate, no state sent)
	// is asked again rather than trusted.
	stale := time.NewTimer(time.Until(asked.Add(n.staleAfter())))
	defer stale.Stop()
	for !n.caughtUpTo(t) {
		select {
		case <-ctx.Done():
			return asked, ctx.Err()
		case <-stale.C:
			return asked, fmt.Errorf("raft had not replicated up to raft index %d / state index %d of leader %s (at %d / %d) within %v of asking; asking again",
				t.GetAppliedIndex(), t.GetFsmIndex(), t.GetLeader(), n.raft.AppliedIndex(), n.fsm.AppliedIndex(), n.staleAfter())
		case <-time.After(5 * time.Millisecond):
		}
	}
	return asked, nil
}

// routeOnLeaderState hands the data plane the table of the state the
// leader sent, if any and newer than what it routes on.
func (n *Node) routeOnLeaderState(t *gwelbv1.CatchUpResponse) error {
	if len(t.GetState()) == 0 {
		return nil
	}
	// Decoded and judged by the validator like a snapshot (DESIGN.md §5.1).
	st, tbl, err := fsm.DecodeState(t.GetState())
	if err != nil {
		return fmt.Errorf("state from leader %s: %w", t.GetLeader(), err)
	}
	if st.GetIndex() < t.GetFsmIndex() {
		return fmt.Errorf("state from leader %s is at index %d, below its state index %d", t.GetLeader(), st.GetIndex(), t.GetFsmIndex())
	}
	n.tables.publishAhead(tbl)
	return nil
}

// publishAhead hands the data plane t, a table the leader sent while this
// node's FSM is behind it (DESIGN.md §6.1), unless the data plane has one
// at least as new. As with a cached table at start (loadCache), the older
// tables the FSM builds while it replays up to t are held back, and the
// cache is not overwritten by them.
func (p *tablePublisher) publishAhead(t *fsm.Table) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if cur := p.last.Load(); cur != nil && cur.Index() >= t.Index() {
		return
	}
	p.catchUp = t.Index()
	p.onTable(t)
	p.last.Store(t) // after the data plane has it: catching up waits on this
}

// caughtUpTo reports whether the data plane routes on what the leader had
// (see the top of this file): a table at least as new as the leader's
// state, or, when the FSM has applied that far without changing the
// table, the FSM's latest (the FSM publishes a new table after it has
// moved its index, so the last check waits out a table on its way).
func (n *Node) caughtUpTo(t *gwelbv1.CatchUpResponse) bool {
	cur := n.tables.current()
	if cur == nil {
		return false
	}
	if cur.Index() >= t.GetFsmIndex() {
		return true
	}
	return n.raft.AppliedIndex() >= t.GetAppliedIndex() && n.fsm.AppliedIndex() >= t.GetFsmIndex() &&
		cur.Index() >= n.fsm.Table().Index()
}

// askTimeout bounds one question: a barrier takes a few milliseconds on a
// healthy leader, so a peer that does not answer within a second is cut
// off or has no quorum, and another peer is worth asking.
func (n *Node) askTimeout() time.Duration { return max(time.Second, 2*n.cfg.Timing.HeartbeatTimeout) }

// haveIndex is the index of the newest state this node routes on or has
// applied: the leader need not send a state that is no newer.
func (n *Node) haveIndex() uint64 {
	have := n.fsm.AppliedIndex()
	if cur := n.tables.current(); cur != nil {
		have = max(have, cur.Index())
	}
	return have
}

// askCatchUp asks the leader — itself, when it leads — for the catch-up
// target. Every other attempt, or when no leader is known (a restarted
// node hears of the leader only with its first heartbeat, a cut-off one
// has stopped believing in it), it asks a peer, which relays to the
// leader it knows.
func (n *Node) askCatchUp(ctx context.Context, attempt int) (*gwelbv1.CatchUpResponse, error) {
	if cut := n.fresh.askCut.Load(); cut != nil {
		select {
		case <-*cut:
		case <-ctx.Done():
		}
		return nil, errors.New("cut off from the cluster (test)")
	}
	have := n.haveIndex()
	if n.IsLeader() {
		return n.leaderCatchUp(ctx, have)
	}
	var addr, who string
	if l := n.Leader(); l != "" && l != n.cfg.Name && attempt%2 == 0 {
		addr, who = n.grpcAddrOf(l), l
	}
	if addr == "" {
		peers := n.catchUpPeers()
		if len(peers) == 0 {
			return nil, errors.New("no leader known and no peer to ask")
		}
		p := peers[attempt/2%len(peers)]
		addr, who = p.addr, p.name
	}
	resp, err := n.peers.catchUpFresh(ctx, addr, &gwelbv1.CatchUpRequest{Node: n.cfg.Name, HaveIndex: have})
	if err != nil {
		return nil, fmt.Errorf("ask %s (%s) what to apply: %w", who, addr, err)
	}
	return resp, nil
}

type catchUpPeer struct{ name, addr string }

// catchUpPeers lists the peers a catch-up question may go to: those gossip
// lists alive, then the other Raft voters at the admin address they last
// advertised. Right after a partition heals, gossip on the cut-off node
// may still count every peer failed, while the voters answer at once.
func (n *Node) catchUpPeers() []catchUpPeer {
	seen := map[string]bool{n.cfg.Name: true}
	var out []catchUpPeer
	for _, m := range n.members() {
		if !seen[m.Name] && m.Status == memberlist.StateAlive && m.Meta.GRPC != "" {
			seen[m.Name] = true
			out = append(out, catchUpPeer{m.Name, m.Meta.GRPC})
		}
	}
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			name := string(s.ID)
			if seen[name] {
				continue
			}
			if addr := n.grpcAddrOf(name); addr != "" {
				seen[name] = true
				out = append(out, catchUpPeer{name, addr})
			}
		}
	}
	return out
}

// maxCatchUpState is the largest state a leader sends with its answer,
// well under gRPC's 4 MiB message limit; a larger one (tens of thousands
// of members) is left to Raft to replicate.
const maxCatchUpState = 3 << 20

// leaderCatchUp answers CatchUp on the leader: after a barrier, and after
// the seed if this leader is about to write it (a node that caught up
// before the seed would have no pools to route), with its state when the
// asker's is older (have).
func (n *Node) leaderCatchUp(ctx context.Context, have uint64) (*gwelbv1.CatchUpResponse, error) {
	timeout := n.cfg.WriteTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	if err := awaitRaft(ctx, n.raft.Barrier(timeout)); err != nil {
		return nil, status.Errorf(codes.Unavailable, "barrier: %v", err)
	}
	// An asker that waits for its own Raft needs the barrier's commit too.
	n.notifyCommit()
	for len(n.cfg.Seed) > 0 && !n.fsm.State().GetSeeded() {
		select {
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	// The FSM first: whatever the raft index read next covers, the asker
	// then waits for at least the commands read here.
	st := n.fsm.State()
	resp := &gwelbv1.CatchUpResponse{AppliedIndex: n.raft.AppliedIndex(), FsmIndex: st.GetIndex(), Leader: n.cfg.Name}
	if st.GetIndex() > have {
		data, err := proto.MarshalOptions{Deterministic: true}.Marshal(st)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "encode state at index %d: %v", st.GetIndex(), err)
		}
		if len(data) <= maxCatchUpState {
			resp.State = data
		}
	}
	return resp, nil
}

// CatchUp answers on the leader; a follower relays the call once.
func (s *adminServer) CatchUp(ctx context.Context, req *gwelbv1.CatchUpRequest) (*gwelbv1.CatchUpResponse, error) {
	n := s.n
	if n.IsLeader() {
		return n.leaderCatchUp(ctx, req.GetHaveIndex())
	}
	c, err := n.leaderClient(ctx)
	if err != nil {
		return nil, err
	}
	return c.CatchUp(n.peers.outgoing(ctx), req)
}

// catchUpFresh asks addr over a connection of its own, closed after the
// call. The connection kept for addr may be one a partition left in TCP
// retransmission backoff, where a call waits for seconds after the
// network has healed; a new connection's handshake goes out at once. The
// question goes without the forwarded mark, so that a follower may relay
// it to its leader; the relay carries the mark, and goes no further.
func (p *peerClients) catchUpFresh(ctx context.Context, addr string, req *gwelbv1.CatchUpRequest) (*gwelbv1.CatchUpResponse, error) {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(p.creds))
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	defer cc.Close()
	md := metadata.MD{}
	if p.token != "" {
		md.Set("authorization", "Bearer "+p.token)
	}
	return gwelbv1.NewAdminClient(cc).CatchUp(metadata.NewOutgoingContext(ctx, md), req)
}

// raftInbox stands between raft's network transport and raft, and notes
// each AppendEntries from a leader that is not a heartbeat: the leader
// sends one to every follower with its commit index, entries or not, at
// least every hold (transport.go), or to a voter every beat hold, since
// its heartbeats name the commit index too. A follower that has applied
// that index held everything the leader had committed when it was sent
// (checkFreshness). Heartbeats go round the inbox, straight to raft
// (NetworkTransport's fast path); the inbox notes those that name the
// leader's commit index (beat), in a chain of their own: they travel on
// connections of their own, one in flight, and after a heal can arrive
// seconds before the entries, which is why they count only with the log
// (the follower must have applied the index they name).
type raftInbox struct {
	*raft.NetworkTransport
	ctx  context.Context
	rpcs chan raft.RPC
	last atomic.Pointer[replContact]
	// lastBeat is the last heartbeat that named a commit index; beatMu
	// orders the heartbeats of two connections (one the leader gave up on).
	lastBeat atomic.Pointer[replContact]
	beatMu   sync.Mutex
	// ignoreBeats, tests only: a build before stamped heartbeats.
	ignoreBeats atomic.Bool
	stall       atomic.Pointer[inboxStall] // tests: a network that stopped delivering
	// appends counts the AppendEntries passed to raft (tests).
	appends atomic.Uint64
	// holdOf returns how long the named leader holds an idle
	// AppendEntries (transport.go), 0 when unknown.
	holdOf func(leader string) time.Duration
	// onContact, once set (the node has its raft and its start round),
	// hears of each AppendEntries and the one before it (noteContact).
	onContact atomic.Pointer[func(prev, c *replContact)]
}

// replContact is one AppendEntries as the inbox passed it to raft.
//
// When it was sent matters, not when it arrived: one sent before a
// partition can arrive seconds later, retransmitted once the network
// heals, and say nothing of what the leader committed meanwhile. Raft
// sends a follower its next AppendEntries only once the previous one has
// been answered (one in flight: pipelining is off, node.go), so each was
// sent after the one before it arrived; sent is that arrival, or, for an
// idle one, that arrival plus the leader's hold (contact). The first of a
// term has no such bound and counts for nothing.
type replContact struct {
	sent   time.Time // no later than it was sent; zero when unknown
	at     time.Time // when it arrived
	term   uint64
	commit uint64 // the leader's commit index when it sent it
}

// inboxStall holds raft's inbound RPCs (and heartbeats, if heartbeats is
// set) until release is closed: a test's partition whose TCP connections
// stay up but deliver nothing.
type inboxStall struct {
	release    chan struct{}
	heartbeats bool
}

func newRaftInbox(ctx context.Context, t *raft.NetworkTransport) *raftInbox {
	return &raftInbox{NetworkTransport: t, ctx: ctx, rpcs: make(chan raft.RPC)}
}

// Consumer is what raft reads its RPCs from.
func (in *raftInbox) Consumer() <-chan raft.RPC { return in.rpcs }

// SetHeartbeatHandler passes raft's heartbeat handler on (held back while
// a test stalls heartbeats).
func (in *raftInbox) SetHeartbeatHandler(cb func(raft.RPC)) {
	if cb == nil {
		in.NetworkTransport.SetHeartbeatHandler(nil)
		return
	}
	in.NetworkTransport.SetHeartbeatHandler(func(rpc raft.RPC) {
		in.held(true)
		if req, ok := rpc.Command.(*raft.AppendEntriesRequest); ok {
			in.beat(req, time.Now())
		}
		cb(rpc)
	})
}

// beat notes a heartbeat that names the leader's commit index (stampBeat,
// transport.go): sent no earlier than the previous one's arrival, since
// the leader sends a follower its next heartbeat only once the previous
// one came back. One that names none (a leader of an older build, or
// one whose first barrier of the term has not committed) is passed on
// unnoted; the next one's bound is then an older arrival, which holds too.
func (in *raftInbox) beat(req *raft.AppendEntriesRequest, now time.Time) {
	commit, ok := takeStamp(req)
	if !ok || in.ignoreBeats.Load() {
		return
	}
	in.beatMu.Lock()
	defer in.beatMu.Unlock()
	prev := in.lastBeat.Load()
	c := &replContact{at: now, term: req.Term, commit: commit}
	if prev != nil && prev.term == req.Term {
		c.sent = prev.at
	}
	in.lastBeat.Store(c)
	if f := in.onContact.Load(); f != nil {
		(*f)(prev, c)
	}
}

func (in *raftInbox) held(heartbeat bool) {
	if s := in.stall.Load(); s != nil && (!heartbeat || s.heartbeats) {
		select {
		case <-s.release:
		case <-in.ctx.Done():
		}
	}
}

// run passes the transport's RPCs to raft until the node stops.
func (in *raftInbox) run(ctx context.Context) {
	from := in.NetworkTransport.Consumer()
	for {
		var rpc raft.RPC
		select {
		case rpc = <-from:
		case <-ctx.Done():
			return
		}
		in.held(false)
		if req, ok := rpc.Command.(*raft.AppendEntriesRequest); ok {
			prev := in.last.Load()
			c := in.contact(req, time.Now())
			in.last.Store(c)
			in.appends.Add(1)
			if f := in.onContact.Load(); f != nil {
				(*f)(prev, c)
			}
		}
		select {
		case in.rpcs <- rpc:
		case <-ctx.Done():
			return
		}
	}
}

// contact is what an AppendEntries arriving at now tells of the leader's
// log: its commit index, sent no earlier than the previous one's arrival
// (one in flight), or, for an idle one (no entries, the previous commit
// index), than that arrival plus the hold the leader gossips (its
// transport sent it no sooner, transport.go; the leader applies the same
// test against the previous one it sent, and whenever this node's previous
// differs from that one, an answer was lost and the leader's held
// longer). A hold that would put the sending after the arrival is not the
// leader's and counts for nothing.
func (in *raftInbox) contact(req *raft.AppendEntriesRequest, now time.Time) *replContact {
	c := &replContact{at: now, term: req.Term, commit: req.LeaderCommitIndex}
	prev := in.last.Load()
	if prev == nil || prev.term != req.Term {
		return c
	}
	c.sent = prev.at
	if len(req.Entries) == 0 && prev.commit == req.LeaderCommitIndex && in.holdOf != nil {
		if h := in.holdOf(string(req.RPCHeader.ID)); h > 0 && !prev.at.Add(h).After(now) {
			c.sent = prev.at.Add(h)
		}
	}
	return c
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
// nil once it routes on what the leader had when it asked; an error
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
