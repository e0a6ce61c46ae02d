package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"net"
	"sync"
	"time"

	"github.com/gwelb/gwelb/internal/rawio"
)

// Warm connections to members (DESIGN.md §1.2): each member keeps the
// connections of requests that ended cleanly, newest first, and a request
// takes the newest one. A connection idle longer than upstreamIdle is
// closed rather than reused: a member may have closed it meanwhile, and a
// request that meets a connection its member closed is sent once more on
// a new one without blaming the member (forward.go).

// upstreamIdle is how long an idle member connection is kept.
const upstreamIdle = 30 * time.Second

// maxIdlePerMember bounds the idle connections kept per member.
const maxIdlePerMember = 1024

// upConn is one connection to a member, with its buffers.
type upConn struct {
	conn      net.Conn
	br        *bufio.Reader
	bw        *bufio.Writer
	idleSince time.Time
	// Reads and writes of a plain TCP conn go raw (internal/rawio); a
	// request without a body is then sent by a flush that waits for the
	// answer (await.go).
	raw   rawio.IO
	await bool // bw's next flush waits (raw ready only)
}

// upstreamPool is one member's idle connections.
type upstreamPool struct {
	mu     sync.Mutex
	idle   []*upConn
	closed bool
}

// get returns the newest idle connection still fresh, or nil.
func (p *upstreamPool) get(now time.Time) *upConn {
	p.mu.Lock()
	if len(p.idle) == 0 {
		p.mu.Unlock()
		return nil
	}
	uc := p.idle[len(p.idle)-1]
	p.idle[len(p.idle)-1] = nil
	p.idle = p.idle[:len(p.idle)-1]
	if now.Sub(uc.idleSince) < upstreamIdle {
		p.mu.Unlock()
		return uc
	}
	// The newest is stale: all the others, older, are too.
	stale := p.idle
	p.idle = nil
	p.mu.Unlock()
	uc.conn.Close()
	for _, c := range stale {
		c.conn.Close()
	}
	return nil
}

// put keeps uc for the next request, or closes it.
func (p *upstreamPool) put(uc *upConn, now time.Time) {
	uc.idleSince = now
	p.mu.Lock()
	if p.closed || len(p.idle) >= maxIdlePerMember {
		p.mu.Unlock()
		uc.conn.Close()
		return
	}
	p.idle = append(p.idle, uc)
	p.mu.Unlock()
}

// close closes the idle connections; with forever, none is kept from now on
// (the member left the table).
func (p *upstreamPool) close(forever bool) {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	if forever {
		p.closed = true
	}
	p.mu.Unlock()
	for _, uc := range idle {
		uc.conn.Close()
	}
}

// dial opens a new connection to member ms within the connect timeout
// (a TLS handshake included for https members).
func (s *Server) dial(ctx context.Context, ms *memberState) (*upConn, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.ConnectTimeout)
	defer cancel()
	c, err := s.dialer.DialContext(ctx, "tcp", ms.addr)
	if err != nil {
		return nil, err
	}
	if ms.tls {
		cfg := s.opts.UpstreamTLS
		if cfg == nil {
			cfg = &tls.Config{}
		}
		cfg = cfg.Clone()
		if cfg.ServerName == "" {
			host, _, err := net.SplitHostPort(ms.addr)
			if err != nil {
				host = ms.addr
			}
			cfg.ServerName = host
		}
		cfg.NextProtos = []string{"http/1.1"}
		tc := tls.Client(c, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, err
		}
		c = tc
	}
	uc := &upConn{conn: c}
	uc.raw.Init(c)
	uc.br = bufio.NewReaderSize(upReader{uc}, 4<<10)
	uc.bw = bufio.NewWriterSize(upWriter{uc}, 4<<10)
	return uc, nil
}
