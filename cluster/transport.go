package cluster

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/raft"

	"github.com/gwelb/gwelb/internal/rawio"
)

// raftStream is raft's TCP stream layer with one change: a dial the peer
// refuses (its process is down, or restarting) is retried until the peer
// listens again, for as long as this node keeps the Raft role it had when
// the dial began and is not shutting down.
//
// Why: raft backs off exponentially between failed replication RPCs to a
// follower (10 ms doubling up to 10.24 s, replication.go) and resets the
// count only after a success. A follower down for a few seconds had every
// refused dial counted, so the leader could sit out seconds of backoff after
// the follower was back before sending it the entries it missed, and the
// restarted node, which waits for them before it routes, waited that long
// (measured: 0.1-4.3 s after a 2-6 s outage). A dial that waits for the
// peer keeps the count at one or two, and the entries go out as soon as
// the peer listens. Heartbeats already cap their backoff at half a
// heartbeat timeout. A dial that times out (a partition) fails as before.
//
// Its connections read and write with raw system calls (internal/rawio,
// DESIGN.md §1.3): raft's traffic is most of an idle node's, and through
// net.Conn each of its reads and writes woke the runtime's sysmon thread
// from the sleep it takes while every P is idle.
type raftStream struct {
	ln        net.Listener
	advertise net.Addr
	ctx       context.Context // the node's: ends a waiting dial on shutdown
	retry     time.Duration
	role      atomic.Pointer[func() raft.RaftState] // set once raft runs
}

func newRaftStream(ctx context.Context, bind string, advertise *net.TCPAddr, retry time.Duration) (*raftStream, error) {
	if advertise.IP == nil || advertise.IP.IsUnspecified() {
		return nil, fmt.Errorf("raft advertise address %s: not advertisable", advertise)
	}
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, err
	}
	return &raftStream{ln: ln, advertise: advertise, ctx: ctx, retry: retry}, nil
}

func (s *raftStream) state() raft.RaftState {
	if f := s.role.Load(); f != nil {
		return (*f)()
	}
	return raft.Follower
}

// Dial connects to a peer, waiting out refusals (see raftStream).
func (s *raftStream) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	role := s.state()
	d := net.Dialer{Timeout: timeout}
	for {
		conn, err := d.DialContext(s.ctx, "tcp", string(address))
		if err == nil {
			return rawio.Wrap(conn), nil
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, err
		}
		if s.state() != role {
			return nil, err
		}
		select {
		case <-s.ctx.Done():
			return nil, err
		case <-time.After(s.retry):
		}
	}
}

// Accept waits for the next connection from a peer.
func (s *raftStream) Accept() (net.Conn, error) {
	c, err := s.ln.Accept()
	if err != nil {
		return nil, err
	}
	return rawio.Wrap(c), nil
}

// Close stops listening.
func (s *raftStream) Close() error { return s.ln.Close() }

// Addr is the address peers dial, the advertised one.
func (s *raftStream) Addr() net.Addr { return s.advertise }

// raftTransport is the transport raft runs on: the inbox (catchup.go) for
// what arrives, and for what leaves, two changes (DESIGN.md §1.3): a
// heartbeat to a non-voter is answered from the AppendEntries that reached
// it a moment ago instead of being sent, and an idle AppendEntries (no
// entries, the commit index of the one before) goes out no sooner than
// holdIdle after the one before it came back.
//
// Why: an idle leader sends every follower a heartbeat and an
// AppendEntries each every 150-300 ms, and at 5 voters and 45 non-voters
// those RPCs were most of its CPU (issue 13).
//
// Heartbeats: a non-voter needs them neither for an election (it never
// stands) nor for the leader's lease (raft counts voters only); they only
// keep its own heartbeat timer from deciding that the leader is gone, and
// that timer runs at the leader's pace, 1.5 s by default (leader.go
// paceHeartbeats). The AppendEntries reset it too, so a heartbeat due
// within skipWithin of one that the non-voter answered says nothing new.
// skipWithin leaves the timer its margin should the AppendEntries stop (a
// slow disk, a snapshot on its way, a stalled connection): the heartbeats
// after that go out for real, on their own connection. Voters get every
// heartbeat. The freshness monitor never counted heartbeats (catchup.go).
// A non-voter of an older build, at 500 ms, may stop naming the leader
// for a moment when its AppendEntries stall; nothing else changes.
//
// Idle AppendEntries: raft sends one every commit timeout (150-300 ms)
// only so that a follower learns the commit index and knows it has the
// leader's log (catchup.go's freshness); nothing in it is new. Held to a
// fixed cadence, a follower may count one as sent no earlier than the
// arrival of the one before plus the hold, which it reads from the
// leader's gossip (nodeMeta "ih"): its news is then as fresh at one
// AppendEntries every 600 ms as it was at one every 150-300 ms counted
// from the previous arrival alone (both at most about 600-700 ms old). The
// moment the leader appends (heldLogStore), a held one is answered from the
// follower's last answer instead of being sent, so raft's replication
// loop goes on at once to send the new entries.
//
// Heartbeats carry the commit index: once the leader's first barrier of
// its term has committed (leader.go), each heartbeat it sends names the
// commit index it had then (stampBeat), and a follower that has applied
// it held everything the leader had committed when the heartbeat was
// sent, which was after the previous heartbeat arrived (one in flight):
// the follower's freshness moves with heartbeats as with AppendEntries
// (catchup.go). A voter gets a heartbeat every 150-300 ms in any case (its
// election timer needs them), so its idle AppendEntries say nothing the
// heartbeats do not, and one to a voter that counts the stamps (gossip
// "hb") is held beatHold instead of the hold: the idle leader's
// replication loops to its voters, their timers and their answers, were a
// fifth of its wakeups (issue 12). Non-voters keep the hold: their
// heartbeats are answered without sending (above), and the AppendEntries
// are what reaches them.
type raftTransport struct {
	*raftInbox
	// skipWithin is how recently an AppendEntries to a non-voter must have
	// been answered for its heartbeat to be answered without sending; 0
	// sends every heartbeat.
	skipWithin time.Duration
	// holdIdle is how long (a time.Duration) after the previous
	// AppendEntries to a follower came back an idle one is sent; 0 sends
	// each at once. Atomic for tests, which lengthen it.
	holdIdle atomic.Int64
	nonVoter atomic.Pointer[func(raft.ServerID) bool] // set once raft runs
	// countsHold reports whether follower id counts on the hold: false
	// only for a follower whose gossip says it is of a build that does
	// not (no "ih"), which gets raft's cadence; nil holds for all.
	countsHold func(raft.ServerID) bool
	// countsBeats reports whether follower id counts the commit index on
	// heartbeats (gossip "hb"); nil: none does.
	countsBeats func(raft.ServerID) bool
	// beatHold is how long an idle AppendEntries to a voter that counts
	// the stamps is held instead (the hold's, if longer).
	beatHold time.Duration
	// stampTerm is the term in which this node, as leader, stamps its
	// heartbeats: set once its first barrier of the term has committed,
	// so that the commit index covers what earlier leaders committed.
	stampTerm   atomic.Uint64
	commitIndex atomic.Pointer[func() uint64] // raft's CommitIndex, set once raft runs

	mu      sync.Mutex
	acked   map[raft.ServerID]appendAck  // the last AppendEntries answered, per follower
	sent    map[raft.ServerID]appendSent // the last AppendEntries sent, per follower
	release chan struct{}                // closed (and replaced) when the leader appends
	// stored is the last index of the newest entries this node stored: an
	// idle AppendEntries whose previous index is older must not be held.
	stored  atomic.Uint64
	skipped atomic.Uint64 // heartbeats answered without sending
	held    atomic.Uint64 // idle AppendEntries held
	holding atomic.Int64  // idle AppendEntries held now
	spared  atomic.Uint64 // held AppendEntries answered without sending, released by an append or a loss of leadership
}

// appendAck is an AppendEntries a follower answered with success.
type appendAck struct {
	at   time.Time
	term uint64
	last uint64 // the last index the follower confirmed
	resp raft.AppendEntriesResponse
}

// appendSent is the last AppendEntries sent to a follower (answered or
// failed).
type appendSent struct {
	term   uint64
	commit uint64
	done   time.Time // when the call came back
}

func newRaftTransport(in *raftInbox, t Timing) *raftTransport {
	// After the last answer a heartbeat may be answered for the non-voter's
	// heartbeat timeout less the longest wait for the next AppendEntries
	// (the hold, past which raft's wait of one to two commit timeouts has
	// always fired) and a tenth of the configured heartbeat timeout for a
	// slow process: 1.5 s - 600 ms - 50 ms = 850 ms at the defaults.
	hold := idleHold(t)
	skip := max(nonVoterHeartbeatTimeout(t)-max(hold, 2*t.CommitTimeout)-t.HeartbeatTimeout/10, 0)
	tr := &raftTransport{
		raftInbox: in, skipWithin: skip, beatHold: beatHold(t),
		acked: map[raft.ServerID]appendAck{}, sent: map[raft.ServerID]appendSent{},
		release: make(chan struct{}),
	}
	tr.holdIdle.Store(int64(hold))
	return tr
}

// idleHold is how long the leader holds an idle AppendEntries after the
// previous one to the same follower came back: four commit timeouts,
// 600 ms at the defaults. Raft's own wait (one to two commit timeouts)
// has always fired by then, so they go out at a fixed cadence, and a
// follower's news is at most one hold and a freshness tick old (plus two
// round trips), the bound it had with raft's cadence counted from the
// previous arrival alone (catchup.go).
func idleHold(t Timing) time.Duration { return 4 * t.CommitTimeout }

// beatHold is how long an idle AppendEntries to a voter whose freshness
// rides on the heartbeats is held: ten holds, 6 s at the defaults. It
// only bounds how long raft's replication loop to that voter sits in the
// call while nothing happens; the leader's appends, and its loss of
// leadership, release it at once.
func beatHold(t Timing) time.Duration { return 10 * idleHold(t) }

// beatStamp marks the commit index a heartbeat carries. It rides in the
// request's Leader field, which raft fills with the leader's address only
// for senders older than RPCHeader.Addr and reads only when Addr is
// empty (raft.go appendEntries; isHeartbeat requires Addr): a follower of
// an older build passes it to raft, which ignores it, and this build
// takes it off before raft sees the request (takeStamp).
const beatStamp = "\x00gwelb-commit:"

// stampBeat returns a copy of the heartbeat args naming commit; raft's
// own request, which its heartbeat loop reuses, is left alone.
func stampBeat(args *raft.AppendEntriesRequest, commit uint64) *raft.AppendEntriesRequest {
	s := *args
	l := leaderField(&s)
	*l = binary.AppendUvarint(append(append(make([]byte, 0, len(*l)+len(beatStamp)+binary.MaxVarintLen64), *l...), beatStamp...), commit)
	return &s
}

// takeStamp returns the commit index a heartbeat carries, if it carries
// one, and restores the request's Leader field to what raft sent.
func takeStamp(req *raft.AppendEntriesRequest) (uint64, bool) {
	l := leaderField(req)
	i := bytes.LastIndex(*l, []byte(beatStamp))
	if i < 0 {
		return 0, false
	}
	commit, n := binary.Uvarint((*l)[i+len(beatStamp):])
	if n <= 0 || i+len(beatStamp)+n != len(*l) {
		return 0, false
	}
	*l = (*l)[:i]
	return commit, true
}

// leaderField is the request's deprecated Leader field, which carries the
// stamp (beatStamp says why that is safe).
func leaderField(req *raft.AppendEntriesRequest) *[]byte {
	//lint:ignore SA1019 the stamp's carrier: raft reads it only without RPCHeader.Addr
	return &req.Leader
}

// stamp names the leader's commit index on a heartbeat sent in the term
// whose first barrier has committed; other heartbeats go as raft made
// them.
func (t *raftTransport) stamp(args *raft.AppendEntriesRequest) *raft.AppendEntriesRequest {
	f := t.commitIndex.Load()
	if f == nil || t.stampTerm.Load() != args.Term {
		return args
	}
	return stampBeat(args, (*f)())
}

// isHeartbeat tells raft's heartbeats from its AppendEntries by the test
// NetworkTransport applies on the receiving side (net_transport.go), less
// the deprecated Leader field, which only senders older than RPCHeader.Addr
// fill alone: what passes here comes from this node's own raft.
func isHeartbeat(a *raft.AppendEntriesRequest) bool {
	return a.Term != 0 && len(a.RPCHeader.Addr) > 0 &&
		a.PrevLogEntry == 0 && a.PrevLogTerm == 0 && len(a.Entries) == 0 && a.LeaderCommitIndex == 0
}

// errHoldReleased fails a held idle AppendEntries that the leader's append
// released when the follower's last answer cannot stand in for it (the
// one before failed): raft retries at once with the new entries.
var errHoldReleased = errors.New("idle AppendEntries not sent: the leader appended while it was held")

// AppendEntries sends an AppendEntries or a heartbeat to a follower,
// unless it is a heartbeat to a non-voter that has just answered an
// AppendEntries, and holds an idle AppendEntries (see raftTransport).
func (t *raftTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	if isHeartbeat(args) {
		if t.answered(id, args.Term, resp) {
			return nil
		}
		return t.raftInbox.AppendEntries(id, target, t.stamp(args), resp)
	}
	if !t.hold(id, args) {
		if t.answerIdle(id, args, resp) {
			t.spared.Add(1)
			return nil
		}
		return errHoldReleased
	}
	err := t.raftInbox.AppendEntries(id, target, args, resp)
	now := time.Now()
	t.mu.Lock()
	t.sent[id] = appendSent{term: args.Term, commit: args.LeaderCommitIndex, done: now}
	if err == nil && resp.Success {
		t.acked[id] = appendAck{at: now, term: args.Term, last: args.PrevLogEntry + uint64(len(args.Entries)), resp: *resp}
	} else {
		delete(t.acked, id)
	}
	t.mu.Unlock()
	return err
}

// hold waits until an idle AppendEntries to id may go out, holdIdle (or,
// to a voter whose freshness rides on the heartbeats, beatHold) after the
// previous one came back; it reports false when the leader appended
// meanwhile (or lost leadership, or the node stops), and then the
// AppendEntries must not be sent: the follower would count it as sent a
// hold after the previous one arrived. Any other AppendEntries goes at
// once (true).
func (t *raftTransport) hold(id raft.ServerID, args *raft.AppendEntriesRequest) bool {
	holdFor := time.Duration(t.holdIdle.Load())
	if holdFor <= 0 || len(args.Entries) > 0 {
		return true
	}
	t.mu.Lock()
	prev, ok := t.sent[id]
	release := t.release
	t.mu.Unlock()
	// The same predicate as the follower's (raftInbox.contact): the first
	// of a term, or one with a new commit index, is news and goes at once.
	if !ok || prev.term != args.Term || prev.commit != args.LeaderCommitIndex {
		return true
	}
	// A follower of an older build counts each AppendEntries as sent when
	// the previous arrived: held, its news would look a hold older, and it
	// would catch up every second (a rolling upgrade with a new leader).
	if t.countsHold != nil && !t.countsHold(id) {
		return true
	}
	// Entries stored after raft built this request are on their way:
	// stored is set before release is closed, so one of the two shows them.
	if t.stored.Load() > args.PrevLogEntry {
		return false
	}
	if t.beats(id, args.Term) {
		holdFor = max(holdFor, t.beatHold)
	}
	wait := time.Until(prev.done.Add(holdFor))
	if wait <= 0 {
		return true
	}
	t.held.Add(1)
	t.holding.Add(1)
	defer t.holding.Add(-1)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-release:
		return false
	case <-t.ctx.Done():
		return false
	}
}

// beats reports whether follower id, a voter that counts the commit index
// on heartbeats, gets stamped ones in term.
func (t *raftTransport) beats(id raft.ServerID, term uint64) bool {
	if t.stampTerm.Load() != term || t.countsBeats == nil || !t.countsBeats(id) {
		return false
	}
	f := t.nonVoter.Load()
	return f != nil && !(*f)(id)
}

// appended records that this node stored entries up to last and releases
// every held idle AppendEntries (the leader's log store calls it).
func (t *raftTransport) appended(last uint64) {
	t.stored.Store(last)
	t.releaseHeld()
}

// releaseHeld releases every held idle AppendEntries: after an append, or
// when this node stops leading (raft's replication loops are then told to
// stop, and must not sit out a hold first).
func (t *raftTransport) releaseHeld() {
	t.mu.Lock()
	close(t.release)
	t.release = make(chan struct{})
	t.mu.Unlock()
}

// answerIdle fills resp for an idle AppendEntries that is not sent from the
// follower's last answer, if that confirmed the same log in this term.
func (t *raftTransport) answerIdle(id raft.ServerID, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) bool {
	t.mu.Lock()
	a, ok := t.acked[id]
	t.mu.Unlock()
	if !ok || a.term != args.Term || a.last != args.PrevLogEntry {
		return false
	}
	*resp = a.resp
	return true
}

// answered fills resp from the non-voter id's last AppendEntries answer if
// it came in this term within skipWithin.
func (t *raftTransport) answered(id raft.ServerID, term uint64, resp *raft.AppendEntriesResponse) bool {
	if t.skipWithin <= 0 {
		return false
	}
	t.mu.Lock()
	a, ok := t.acked[id]
	t.mu.Unlock()
	if !ok || a.term != term || time.Since(a.at) >= t.skipWithin {
		return false
	}
	if f := t.nonVoter.Load(); f == nil || !(*f)(id) {
		return false
	}
	*resp = a.resp
	t.skipped.Add(1)
	return true
}

// heldLogStore is the log store raft runs on: it tells the transport of every
// append, so that held idle AppendEntries give way to the new entries.
type heldLogStore struct {
	*raft.LogCache
	trans *raftTransport
}

// StoreLog stores one entry.
func (s heldLogStore) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

// StoreLogs stores the entries, then releases held idle AppendEntries.
func (s heldLogStore) StoreLogs(logs []*raft.Log) error {
	if err := s.LogCache.StoreLogs(logs); err != nil {
		return err
	}
	if len(logs) > 0 {
		s.trans.appended(logs[len(logs)-1].Index)
	}
	return nil
}
