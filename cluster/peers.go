package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// forwardedKey marks a call one node makes to another on a client's behalf.
const forwardedKey = "x-gwelb-forwarded"

// peerClients holds one admin API connection per peer address.
type peerClients struct {
	token string
	creds credentials.TransportCredentials

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

func newPeerClients(cfg Config) (*peerClients, error) {
	p := &peerClients{token: cfg.Token, creds: insecure.NewCredentials(), conns: map[string]*grpc.ClientConn{}}
	if cfg.TLS != nil {
		tc, err := clientTLS(cfg.TLS)
		if err != nil {
			return nil, err
		}
		p.creds = credentials.NewTLS(tc)
	}
	return p, nil
}

// clientTLS presents the node's certificate to peers and verifies theirs.
func clientTLS(t *TLS) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls: load key pair: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	if t.CAFile != "" {
		pool, err := loadCA(t.CAFile)
		if err != nil {
			return nil, err
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

func loadCA(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tls ca_file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("tls ca_file %s: no PEM certificates", path)
	}
	return pool, nil
}

func (p *peerClients) client(addr string) (gwelbv1.AdminClient, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if cc := p.conns[addr]; cc != nil {
		return gwelbv1.NewAdminClient(cc), nil
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(p.creds))
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	p.conns[addr] = cc
	return gwelbv1.NewAdminClient(cc), nil
}

// outgoing adds the token and the forwarded mark to ctx.
func (p *peerClients) outgoing(ctx context.Context) context.Context {
	md := metadata.Pairs(forwardedKey, "1")
	if p.token != "" {
		md.Set("authorization", "Bearer "+p.token)
	}
	return metadata.NewOutgoingContext(ctx, md)
}

func (p *peerClients) apply(ctx context.Context, addr string, data []byte) (*gwelbv1.WriteResponse, error) {
	c, err := p.client(addr)
	if err != nil {
		return nil, err
	}
	return c.Apply(p.outgoing(ctx), &gwelbv1.ApplyRequest{Command: data})
}

func (p *peerClients) leave(ctx context.Context, addr, node string) error {
	c, err := p.client(addr)
	if err != nil {
		return err
	}
	_, err = c.Leave(p.outgoing(ctx), &gwelbv1.LeaveRequest{Node: node})
	return err
}

func (p *peerClients) status(ctx context.Context, addr string) (*gwelbv1.StatusResponse, error) {
	c, err := p.client(addr)
	if err != nil {
		return nil, err
	}
	return c.Status(p.outgoing(ctx), &gwelbv1.StatusRequest{})
}

func (p *peerClients) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for addr, cc := range p.conns {
		cc.Close()
		delete(p.conns, addr)
	}
}
