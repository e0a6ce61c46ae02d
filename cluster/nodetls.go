package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/gwelb/gwelb/internal/pki"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// handshakeTimeout bounds a TLS handshake on the Raft port and an
// admission probe.
const handshakeTimeout = 5 * time.Second

// maxRaftHandshakes bounds the Raft TLS handshakes in progress at once; a
// connection beyond it is closed unread, so a flood of idle connections
// costs this node a bounded number of goroutines.
const maxRaftHandshakes = 64

// nodeTLS holds the TLS configurations a node builds once from its
// certificate bundle (DESIGN.md §4): who may speak Raft, call the admin
// API as a node, or be admitted as a voter is decided by the node name in
// a certificate of the cluster CA, never by an address or by gossip.
type nodeTLS struct {
	bundle     pki.Bundle
	admin      *tls.Config // admin API server: node cert; client certs verified if given
	raftServer *tls.Config // Raft server: node certificates only
	client     *tls.Config // node-to-node client: any node of the CA
	allowed    map[string]bool
	// keys is the node certificate every configuration presents, read
	// again on SIGHUP and when its files change (DESIGN.md §6.4).
	keys *pki.KeyPair

	mu     sync.Mutex
	warned map[string]string // peer name or address -> last refusal logged
}

// newNodeTLS builds the configurations, or returns nil when the node runs
// without TLS (-dev, insecure).
func newNodeTLS(cfg Config) (*nodeTLS, error) {
	if cfg.Insecure && !cfg.Dev {
		cfg.Logger.Warn("insecure: true: this node runs without the protections of DESIGN.md §4 (node TLS, gossip key); whoever reaches its raft_addr, gossip_addr or grpc_addr can change the routing table",
			"tls", cfg.TLS.Enabled(), "gossip_key", len(cfg.GossipKey) > 0)
	}
	if !cfg.TLS.Enabled() {
		return nil, nil
	}
	t := &nodeTLS{bundle: cfg.TLS, warned: map[string]string{}}
	if len(cfg.ServerNames) > 0 {
		t.allowed = map[string]bool{}
		for _, s := range cfg.ServerNames {
			t.allowed[strings.ToLower(s)] = true
		}
	}
	var err error
	if t.admin, err = cfg.TLS.ServerConfig(tls.VerifyClientCertIfGiven); err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	if t.raftServer, err = cfg.TLS.NodeServerConfig(); err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	inner := t.raftServer.VerifyConnection
	t.raftServer.VerifyConnection = func(cs tls.ConnectionState) error {
		if err := inner(cs); err != nil {
			return err
		}
		name, _ := pki.PeerNodeName(cs)
		return t.allow(name)
	}
	if t.client, err = cfg.TLS.NodeClientConfig(); err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	// A reloaded certificate must still be this node's, of the same CA.
	check, err := pki.NodeCheck(cfg.TLS.CAFile, cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	if t.keys, err = pki.LoadKeyPair("tls.cert_file", cfg.TLS.CertFile, cfg.TLS.KeyFile, check); err != nil {
		return nil, err
	}
	for _, c := range []*tls.Config{t.admin, t.raftServer, t.client} {
		t.keys.Serve(c)
	}
	return t, nil
}

// TLSKeyPair is the node certificate the Raft and admin ports and the
// node-to-node clients present; the daemon reloads it on SIGHUP and when
// its files change (DESIGN.md §6.4). nil without TLS (-dev, insecure).
func (n *Node) TLSKeyPair() *pki.KeyPair {
	if n.tls == nil {
		return nil
	}
	return n.tls.keys
}

// allow checks a verified node name against server_names.
func (t *nodeTLS) allow(name string) error {
	if t.allowed != nil && !t.allowed[strings.ToLower(name)] {
		return fmt.Errorf("node %q is not in server_names", name)
	}
	return nil
}

// warnOnce logs a refusal at WARN the first time it is seen for key, and
// again only when the reason changes; forget clears key once it is fine.
func (t *nodeTLS) warnOnce(log *slog.Logger, key, msg string, err error, args ...any) {
	t.mu.Lock()
	seen := t.warned[key] == err.Error()
	if !seen {
		if len(t.warned) >= 1024 {
			clear(t.warned)
		}
		t.warned[key] = err.Error()
	}
	t.mu.Unlock()
	if !seen {
		log.Warn(msg, append(args, "err", err)...)
	}
}

func (t *nodeTLS) forget(key string) {
	t.mu.Lock()
	delete(t.warned, key)
	t.mu.Unlock()
}

// admit decides whether a gossip member may become a voter (DESIGN.md §4):
// gossip alone never adds one. The leader dials the member's advertised
// admin and Raft addresses over mutual TLS, and both must present a node
// certificate of the cluster CA whose name is the member's gossip name (and
// in server_names, if set). Only the handshake runs: nothing, and no token,
// is sent. Without TLS (-dev, insecure) every member is admitted.
func (n *Node) admit(ctx context.Context, m gossipMember) error {
	t := n.tls
	if t == nil {
		return nil
	}
	err := t.allow(m.Name)
	if err == nil {
		err = pki.ValidName(m.Name)
	}
	if err == nil {
		err = t.probe(ctx, m.Name, "grpc", m.Meta.GRPC)
	}
	if err == nil {
		err = t.probe(ctx, m.Name, "raft", m.Meta.Raft)
	}
	if err != nil {
		t.warnOnce(n.log, "admit/"+m.Name, "not admitting gossip member as a voter: it did not prove a node certificate for its name (DESIGN.md §4)", err, "peer", m.Name, "grpc", m.Meta.GRPC, "raft", m.Meta.Raft)
		return err
	}
	t.forget("admit/" + m.Name)
	return nil
}

// probe completes a TLS handshake with addr that succeeds only if the
// server is node name, then closes it.
func (t *nodeTLS) probe(ctx context.Context, name, what, addr string) error {
	cfg, err := t.bundle.NodeClientConfigFor(name)
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, addr, err)
	}
	t.keys.Serve(cfg)
	if what == "grpc" {
		cfg.NextProtos = []string{"h2"}
	}
	ctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	d := tls.Dialer{Config: cfg}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, addr, err)
	}
	return c.Close()
}

// tlsStream is the Raft stream layer inside mutual TLS (DESIGN.md §4): both
// ends present node certificates of the cluster CA. A connection is handed
// to Raft only after its handshake succeeded, so a peer without such a
// certificate never gets a byte to Raft. Dials go through the inner layer
// (raftStream, with its retry of refused dials).
type tlsStream struct {
	inner  raft.StreamLayer
	t      *nodeTLS
	log    *slog.Logger
	conns  chan net.Conn
	errs   chan error
	slots  chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
}

func newTLSStream(inner raft.StreamLayer, t *nodeTLS, log *slog.Logger) *tlsStream {
	ctx, cancel := context.WithCancel(context.Background())
	s := &tlsStream{
		inner: inner, t: t, log: log,
		conns: make(chan net.Conn), errs: make(chan error), slots: make(chan struct{}, maxRaftHandshakes),
		ctx: ctx, cancel: cancel,
	}
	go s.acceptLoop()
	return s
}

func (s *tlsStream) acceptLoop() {
	for {
		c, err := s.inner.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				s.cancel()
				return
			}
			select {
			case s.errs <- err:
				continue
			case <-s.ctx.Done():
				return
			}
		}
		select {
		case s.slots <- struct{}{}:
			go s.handshake(c)
		default:
			c.Close()
			s.t.warnOnce(s.log, "raft-flood", "raft: too many TLS handshakes in progress; closing a connection unread", errors.New("handshake limit reached"), "remote", c.RemoteAddr().String())
		}
	}
}

func (s *tlsStream) handshake(c net.Conn) {
	defer func() { <-s.slots }()
	tc := tls.Server(c, s.t.raftServer)
	ctx, cancel := context.WithTimeout(s.ctx, handshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		c.Close()
		host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
		s.t.warnOnce(s.log, "raft/"+host, "raft: refused a connection without a valid node certificate (DESIGN.md §4)", err, "remote", c.RemoteAddr().String())
		return
	}
	select {
	case s.conns <- tc:
	case <-s.ctx.Done():
		tc.Close()
	}
}

// Accept returns the next connection whose TLS handshake succeeded.
func (s *tlsStream) Accept() (net.Conn, error) {
	select {
	case c := <-s.conns:
		return c, nil
	case err := <-s.errs:
		return nil, err
	case <-s.ctx.Done():
		return nil, net.ErrClosed
	}
}

// Dial connects through the inner layer and completes the TLS handshake:
// the server must present a node certificate of the cluster CA.
func (s *tlsStream) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, err := s.inner.Dial(address, timeout)
	if err != nil {
		return nil, err
	}
	if timeout <= 0 {
		timeout = handshakeTimeout
	}
	tc := tls.Client(c, s.t.client)
	ctx, cancel := context.WithTimeout(s.ctx, timeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("raft: TLS handshake with %s: %w", address, err)
	}
	return tc, nil
}

// Close stops listening and ends handshakes in progress.
func (s *tlsStream) Close() error {
	s.cancel()
	return s.inner.Close()
}

// Addr is the inner layer's advertised address.
func (s *tlsStream) Addr() net.Addr { return s.inner.Addr() }

// raftLayer wraps the Raft stream layer in mutual TLS when the node has
// certificates (DESIGN.md §4); -dev and insecure nodes speak plain TCP.
func (n *Node) raftLayer(stream *raftStream) raft.StreamLayer {
	if n.tls == nil {
		return stream
	}
	return newTLSStream(stream, n.tls, n.log)
}

// caller kinds, as authorize (admin.go) tells them apart.
type callerKind int

const (
	callerUnknown      callerKind = iota // no verified certificate: the token decides
	callerNode                           // a node certificate of the cluster CA
	callerOperatorCert                   // an operator client certificate of the cluster CA
)

// nodeOnlyMethods are the admin RPCs only nodes call (forwarded raw
// commands and catch-up reads); with node TLS no operator may call them.
var nodeOnlyMethods = map[string]bool{
	gwelbv1.Admin_Apply_FullMethodName:   true,
	gwelbv1.Admin_CatchUp_FullMethodName: true,
}

// caller identifies the TLS peer of an admin call by its verified
// certificate (DESIGN.md §4).
func (n *Node) caller(ctx context.Context) (callerKind, string) {
	if n.tls == nil {
		return callerUnknown, ""
	}
	p, ok := peer.FromContext(ctx)
	if !ok {
		return callerUnknown, ""
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return callerUnknown, ""
	}
	if name, err := pki.PeerNodeName(info.State); err == nil {
		return callerNode, name
	}
	if name, ok := pki.PeerClientName(info.State); ok {
		return callerOperatorCert, name
	}
	return callerUnknown, ""
}
