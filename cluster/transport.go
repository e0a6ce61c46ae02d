package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
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
