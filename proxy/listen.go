package proxy

import (
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gwelb/gwelb/internal/pki"
)

// ListenerConfig describes one data-plane listener.
type ListenerConfig struct {
	Addr              string   // host:port
	Pools             []string // pools served; empty serves all
	CertFile, KeyFile string   // both set: serve TLS; read again by Listener.KeyPair().Reload
	// Field names the listener in errors about its files ("listeners[0]");
	// default "listener <addr>".
	Field             string
	ReadHeaderTimeout time.Duration // default 10 s
	IdleTimeout       time.Duration // keep-alive idle time; default 120 s
	MaxHeaderBytes    int           // larger request headers get 431; default 64 KiB
	// MaxConns bounds the connections open at once (WebSockets included);
	// beyond it new connections wait in the kernel's accept queue until
	// one closes, as with HAProxy's maxconn. Default 10000; < 0: no limit.
	MaxConns int
}

// Listener is a bound data-plane listener.
type Listener struct {
	s       *Server
	lc      ListenerConfig // defaults filled in
	ln      *guardListener
	keys    *pki.KeyPair // nil for plain HTTP
	maxHead int          // bytes of a request head at most (then 431)

	mu       sync.Mutex
	conns    map[*clientConn]struct{}
	shutting atomic.Bool
}

// Listen binds lc.Addr and prepares to serve s on it. Every connection
// goes through the guard (guard.go), which refuses request heads with
// ambiguous framing before the head parser (head.go) reads them, and is
// served by the forwarding path (conn.go, forward.go). Request bodies are
// bound by the body read timeout (body.go); WebSockets have no deadline:
// they stream for as long as both sides keep them open.
func (s *Server) Listen(lc ListenerConfig) (*Listener, error) {
	if lc.ReadHeaderTimeout == 0 {
		lc.ReadHeaderTimeout = 10 * time.Second
	}
	if lc.IdleTimeout == 0 {
		lc.IdleTimeout = 120 * time.Second
	}
	if lc.MaxHeaderBytes == 0 {
		lc.MaxHeaderBytes = 64 << 10
	}
	if lc.MaxConns == 0 {
		lc.MaxConns = 10000
	}
	if (lc.CertFile == "") != (lc.KeyFile == "") {
		return nil, fmt.Errorf("listener %s: tls needs both cert and key", lc.Addr)
	}
	var tc *tls.Config
	var keys *pki.KeyPair
	if lc.CertFile != "" {
		field := lc.Field
		if field == "" {
			field = "listener " + lc.Addr
		}
		var err error
		if keys, err = pki.LoadKeyPair(field+".tls.cert", lc.CertFile, lc.KeyFile, nil); err != nil {
			return nil, fmt.Errorf("load tls key pair: %w", err)
		}
		// HTTP/1.1 only: WebSocket upgrades need it, and GWE speaks nothing else.
		// The certificate is the key pair's current one, so a reload reaches
		// every new handshake and leaves open connections alone (DESIGN.md §6.4).
		tc = &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}
		keys.Serve(tc)
	}
	ln, err := net.Listen("tcp", lc.Addr)
	if err != nil {
		return nil, fmt.Errorf("listener %s: %w", lc.Addr, err)
	}
	// A head may be MaxHeaderBytes plus 4 KiB (net/http's slack) before
	// 431; the guard's own bound is above that, so that oversized heads
	// get the 431 rather than the guard's 400.
	maxHead := lc.MaxHeaderBytes + 4<<10
	gl := newGuardListener(ln, tc, lc.MaxConns, lc.MaxHeaderBytes+16<<10, lc.ReadHeaderTimeout, s.log)
	return &Listener{s: s, lc: lc, ln: gl, keys: keys, maxHead: maxHead, conns: map[*clientConn]struct{}{}}, nil
}

// KeyPair is the listener's TLS certificate, to reload on SIGHUP or when
// its files change; nil for a plain HTTP listener.
func (l *Listener) KeyPair() *pki.KeyPair { return l.keys }

// Addr is the bound address (useful when the config asked for port 0).
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }
