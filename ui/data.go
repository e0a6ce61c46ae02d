package ui

import (
	"context"
	"fmt"
	"net"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/gwelb/gwelb/internal/pki"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// callTimeout bounds one admin call of a page render to another node: a
// node that does not answer is shown as such rather than holding the
// page. selfTimeout bounds the call to this node, without which there is
// no page at all.
const (
	callTimeout = 1500 * time.Millisecond
	selfTimeout = 5 * time.Second
)

// dialer holds one admin API connection per (node, address). With the
// cluster CA it verifies that the server holds the node certificate of the
// node it means to call (gwelbctl's check), and presents no certificate of
// its own: the dashboard calls as the operator, with the operator's token,
// never as a node.
type dialer struct {
	caFile string

	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn
	closed bool
}

func newDialer(caFile string) *dialer {
	return &dialer{caFile: caFile, conns: map[string]*grpc.ClientConn{}}
}

func (d *dialer) client(node, addr string) (gwelbv1.AdminClient, error) {
	key := node + "\x00" + addr
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, fmt.Errorf("dashboard closed")
	}
	if cc := d.conns[key]; cc != nil {
		return gwelbv1.NewAdminClient(cc), nil
	}
	creds := insecure.NewCredentials()
	if d.caFile != "" {
		tc, err := pki.OperatorClientConfig(d.caFile, "", "", node)
		if err != nil {
			return nil, err
		}
		creds = credentials.NewTLS(tc)
	}
	cc, err := grpc.NewClient(dialAddr(addr), grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	d.conns[key] = cc
	return gwelbv1.NewAdminClient(cc), nil
}

func (d *dialer) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	for k, cc := range d.conns {
		cc.Close()
		delete(d.conns, k)
	}
}

// dialAddr turns a listen address with an unspecified host (":7001",
// "0.0.0.0:7001") into one this host can dial.
func dialAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		return net.JoinHostPort("127.0.0.1", port)
	}
	return addr
}

// forwardedKey is the admin API's relay mark (DESIGN.md §4: it grants
// nothing, a node answers for itself): with it, Status reports the called
// node's own requests in flight instead of summing every node's, so the
// dashboard can show each node's share.
const forwardedKey = "x-gwelb-forwarded"

// outgoing is ctx with the operator's token and, for per-node reads, the
// relay mark.
func outgoing(ctx context.Context, token string, own bool) context.Context {
	md := metadata.MD{}
	if token != "" {
		md.Set("authorization", "Bearer "+token)
	}
	if own {
		md.Set(forwardedKey, "1")
	}
	return metadata.NewOutgoingContext(ctx, md)
}

// self is this node's admin API client.
func (s *Server) self() (gwelbv1.AdminClient, error) {
	return s.dial.client(s.opts.Node, s.opts.GRPCAddr)
}

// nodeStatus is one node's own answer to Status, or why there is none.
type nodeStatus struct {
	Name     string
	Addr     string // admin API address gossip advertises
	Gossip   string // alive, suspect, dead, left; "" when gossip does not list it
	Suffrage string // Raft suffrage; "" when not in the Raft configuration
	Status   *gwelbv1.StatusResponse
	Err      string
}

// snapshot is what one render shows: this node's Status and every other
// node's, asked concurrently.
type snapshot struct {
	At    time.Time
	Self  *gwelbv1.StatusResponse
	Nodes []*nodeStatus // by name; this node included
}

// node returns the named node's entry, or nil.
func (sn *snapshot) node(name string) *nodeStatus {
	for _, n := range sn.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// snapshot asks this node, then every node that gossip or Raft knows, for
// its Status with the session's token. Nodes gossip does not list alive
// are shown, not called.
func (s *Server) snapshot(ctx context.Context, sess *session) (*snapshot, error) {
	c, err := s.self()
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithTimeout(ctx, selfTimeout)
	defer cancel()
	self, err := c.Status(outgoing(sctx, sess.token, true), &gwelbv1.StatusRequest{RecentWrites: true})
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	sn := &snapshot{At: time.Now(), Self: self}
	byName := map[string]*nodeStatus{}
	entry := func(name string) *nodeStatus {
		n := byName[name]
		if n == nil {
			n = &nodeStatus{Name: name}
			byName[name] = n
			sn.Nodes = append(sn.Nodes, n)
		}
		return n
	}
	me := entry(self.GetNode())
	me.Status, me.Addr = self, s.opts.GRPCAddr
	for _, g := range self.GetGossip() {
		n := entry(g.GetName())
		n.Gossip = g.GetStatus()
		if n.Addr == "" {
			n.Addr = g.GetGrpcAddr()
		}
	}
	for _, p := range self.GetPeers() {
		entry(p.GetId()).Suffrage = p.GetSuffrage()
	}
	var wg sync.WaitGroup
	for _, n := range sn.Nodes {
		switch {
		case n == me:
			continue
		case n.Gossip != "alive":
			n.Err = "not alive in gossip"
			if n.Gossip == "" {
				n.Err = "not in gossip"
			}
			continue
		case n.Addr == "":
			n.Err = "advertises no admin address"
			continue
		}
		wg.Go(func() {
			c, err := s.dial.client(n.Name, n.Addr)
			if err == nil {
				n.Status, err = c.Status(outgoing(cctx, sess.token, true), &gwelbv1.StatusRequest{RecentWrites: true})
			}
			if err != nil {
				n.Err = errText(err)
			}
		})
	}
	wg.Wait()
	sort.Slice(sn.Nodes, func(i, j int) bool { return sn.Nodes[i].Name < sn.Nodes[j].Name })
	return sn, nil
}

// routeAnswer is one node's answer to Route (route explain).
type routeAnswer struct {
	Node   string
	Addr   string
	Index  uint64
	Route  string
	URL    string
	Reason string
	Skips  []string // members this node has locally quarantined: the choice skips them
	Err    string
}

// explain asks every node the snapshot could reach which member it would
// pick for value in pool, as `gwelbctl route --all-nodes` does.
func (s *Server) explain(ctx context.Context, sess *session, sn *snapshot, pool, value string) []*routeAnswer {
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	var out []*routeAnswer
	var wg sync.WaitGroup
	for _, n := range sn.Nodes {
		a := &routeAnswer{Node: n.Name, Addr: n.Addr}
		out = append(out, a)
		if n.Status == nil {
			a.Err = n.Err
			continue
		}
		wg.Go(func() {
			c, err := s.dial.client(n.Name, n.Addr)
			var resp *gwelbv1.RouteResponse
			if err == nil {
				resp, err = c.Route(outgoing(cctx, sess.token, true), &gwelbv1.RouteRequest{Pool: pool, Value: value})
			}
			if err != nil {
				a.Err = errText(err)
				return
			}
			a.Index, a.Route, a.URL, a.Reason = resp.GetTableIndex(), resp.GetRoute(), resp.GetUrl(), resp.GetReason()
			for _, q := range resp.GetQuarantined() {
				left := time.Duration(q.GetRemainingMs()) * time.Millisecond
				a.Skips = append(a.Skips, q.GetRoute()+" (quarantined for "+left.Round(100*time.Millisecond).String()+")")
			}
		})
	}
	wg.Wait()
	return out
}
