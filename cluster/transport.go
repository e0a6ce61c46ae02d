package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/raft"
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
		if err == nil || !errors.Is(err, syscall.ECONNREFUSED) {
			return conn, err
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
func (s *raftStream) Accept() (net.Conn, error) { return s.ln.Accept() }

// Close stops listening.
func (s *raftStream) Close() error { return s.ln.Close() }

// Addr is the address peers dial, the advertised one.
func (s *raftStream) Addr() net.Addr { return s.advertise }

// raftTransport is the transport raft runs on: the inbox (catchup.go) for
// what arrives, and for what leaves, one change: a heartbeat to a
// non-voter is answered from the AppendEntries that reached it a moment
// ago instead of being sent (DESIGN.md §1.3).
//
// Why: an idle leader sends every follower a heartbeat and an
// AppendEntries each every 150-300 ms, and at 5 voters and 45 non-voters
// those RPCs were most of its CPU (issue 13). A non-voter needs neither
// for an election (it never stands) nor for the leader's lease (raft
// counts voters only); its heartbeats only keep its own heartbeat timer
// from deciding that the leader is gone, and that timer runs at the
// leader's pace, 1.5 s by default (leader.go paceHeartbeats). The
// AppendEntries of the commit timeout reset it too, so a heartbeat due
// within skipWithin of one that the non-voter answered says nothing new.
// skipWithin leaves the timer its margin should the AppendEntries stop (a
// slow disk, a snapshot on its way, a stalled connection): the heartbeats
// after that go out for real, on their own connection. Voters get every
// heartbeat. The freshness monitor never counted heartbeats (catchup.go).
// A non-voter of an older build, at 500 ms, may stop naming the leader
// for a moment when its AppendEntries stall; nothing else changes.
type raftTransport struct {
	*raftInbox
	// skipWithin is how recently an AppendEntries to a non-voter must have
	// been answered for its heartbeat to be answered without sending; 0
	// sends every heartbeat.
	skipWithin time.Duration
	nonVoter   atomic.Pointer[func(raft.ServerID) bool] // set once raft runs

	mu      sync.Mutex
	acked   map[raft.ServerID]appendAck // the last AppendEntries answered, per follower
	skipped atomic.Uint64               // heartbeats answered without sending
}

// appendAck is an AppendEntries a follower answered with success.
type appendAck struct {
	at   time.Time
	term uint64
	resp raft.AppendEntriesResponse
}

func newRaftTransport(in *raftInbox, t Timing) *raftTransport {
	// After the last answer a heartbeat may be answered for the non-voter's
	// heartbeat timeout less the longest wait for the next AppendEntries
	// (two commit timeouts: raft waits one to two) and a tenth of the
	// configured heartbeat timeout for a slow process: 1.15 s at the
	// defaults (1.5 s, 150 ms, 500 ms).
	skip := max(nonVoterHeartbeatTimeout(t)-2*t.CommitTimeout-t.HeartbeatTimeout/10, 0)
	return &raftTransport{raftInbox: in, skipWithin: skip, acked: map[raft.ServerID]appendAck{}}
}

// isHeartbeat tells raft's heartbeats from its AppendEntries by the test
// NetworkTransport applies on the receiving side (net_transport.go), less
// the deprecated Leader field, which only senders older than RPCHeader.Addr
// fill alone: what passes here comes from this node's own raft.
func isHeartbeat(a *raft.AppendEntriesRequest) bool {
	return a.Term != 0 && len(a.RPCHeader.Addr) > 0 &&
		a.PrevLogEntry == 0 && a.PrevLogTerm == 0 && len(a.Entries) == 0 && a.LeaderCommitIndex == 0
}

// AppendEntries sends an AppendEntries or a heartbeat to a follower,
// unless it is a heartbeat to a non-voter that has just answered an
// AppendEntries (see raftTransport).
func (t *raftTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	beat := isHeartbeat(args)
	if beat && t.answered(id, args.Term, resp) {
		return nil
	}
	err := t.raftInbox.AppendEntries(id, target, args, resp)
	if !beat {
		t.mu.Lock()
		if err == nil && resp.Success {
			t.acked[id] = appendAck{at: time.Now(), term: args.Term, resp: *resp}
		} else {
			delete(t.acked, id)
		}
		t.mu.Unlock()
	}
	return err
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
