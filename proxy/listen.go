package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
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
	srv  *http.Server
	ln   net.Listener
	keys *pki.KeyPair // nil for plain HTTP
}

// Listen binds lc.Addr and prepares to serve s on it. Every connection
// goes through the guard (guard.go), which refuses request heads with
// ambiguous framing before net/http parses them. Request bodies are bound
// by the body read timeout (body.go); WebSockets have no deadline: they
// stream for as long as both sides keep them open.
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
	srv := &http.Server{
		Handler:           s.Handler(lc.Pools...),
		ReadHeaderTimeout: lc.ReadHeaderTimeout,
		IdleTimeout:       lc.IdleTimeout,
		MaxHeaderBytes:    lc.MaxHeaderBytes,
		ConnContext:       withGuard, // the handler asks the guard whether it refused the client
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
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
	// The guard bounds a head well above net/http's own limit
	// (MaxHeaderBytes plus 4 KiB, read through a 4 KiB buffer), so that
	// oversized heads still get net/http's 431.
	maxHead := lc.MaxHeaderBytes + 16<<10
	gl := newGuardListener(ln, tc, lc.MaxConns, maxHead, lc.ReadHeaderTimeout, s.log)
	return &Listener{srv: srv, ln: gl, keys: keys}, nil
}

// KeyPair is the listener's TLS certificate, to reload on SIGHUP or when
// its files change; nil for a plain HTTP listener.
func (l *Listener) KeyPair() *pki.KeyPair { return l.keys }

// Addr is the bound address (useful when the config asked for port 0).
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// Serve accepts connections until Shutdown; it then returns nil.
func (l *Listener) Serve() error {
	if err := l.srv.Serve(l.ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve %s: %w", l.ln.Addr(), err)
	}
	return nil
}

// Shutdown stops accepting, closes idle keep-alive connections, waits for
// requests in flight until ctx ends, then closes what remains. WebSocket
// tunnels are not its business: Server.CloseWebSockets ends them
// (DESIGN.md §6.3).
func (l *Listener) Shutdown(ctx context.Context) error {
	err := l.srv.Shutdown(ctx)
	if err != nil {
		l.srv.Close()
	}
	return err
}
