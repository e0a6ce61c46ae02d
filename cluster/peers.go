package cluster

import (
	"context"
	"fmt"
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
//
// With node TLS, a peer is dialed with this node's certificate and must
// prove a node certificate of the cluster CA before any call goes out; the
// call is authorised on the peer by that certificate, and the operator
// token is never sent (DESIGN.md §4): an address learnt from gossip is not
// trusted with it. Without TLS (-dev, insecure) calls carry the token, as
// before §4.
type peerClients struct {
	token string // "" with node TLS
	creds credentials.TransportCredentials

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

func newPeerClients(cfg Config, t *nodeTLS) (*peerClients, error) {
	if t != nil {
		return &peerClients{creds: credentials.NewTLS(t.client), conns: map[string]*grpc.ClientConn{}}, nil
	}
	return &peerClients{token: cfg.Token, creds: insecure.NewCredentials(), conns: map[string]*grpc.ClientConn{}}, nil
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

// outgoing adds the forwarded mark to ctx, and the token when the node
// runs without TLS.
func (p *peerClients) outgoing(ctx context.Context) context.Context {
	md := metadata.Pairs(forwardedKey, "1")
	if p.token != "" {
		md.Set("authorization", "Bearer "+p.token)
	}
	return metadata.NewOutgoingContext(ctx, md)
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
