package cluster_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/gwelb/gwelb/cluster"
	"github.com/gwelb/gwelb/fsm"
	"github.com/gwelb/gwelb/internal/gwedemo"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
	"github.com/gwelb/gwelb/proxy"
)

const testToken = "test-token"

// testNode is one real gwelb node: control plane, data plane and a listener.
type testNode struct {
	cfg   cluster.Config
	node  *cluster.Node
	proxy *proxy.Server
	ln    *proxy.Listener
	url   string // data-plane base URL
	dead  bool
}

// testCluster runs real nodes over real TCP on loopback in this process.
type testCluster struct {
	t       *testing.T
	nodes   []*testNode
	gwe     map[string]*httptest.Server // backend route -> demo GWE server
	mu      sync.Mutex
	clients map[string]*grpc.ClientConn
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("GWELB_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// newTestCluster starts n nodes with bootstrap_expect n, seeded with a
// backend pool of three demo GWE servers, and waits for a leader and the
// seeded table on every node.
func newTestCluster(t *testing.T, n int) *testCluster {
	t.Helper()
	c := &testCluster{t: t, gwe: map[string]*httptest.Server{}, clients: map[string]*grpc.ClientConn{}}
	var members []fsm.MemberSpec
	for _, route := range []string{"1", "2", "3"} {
		s := httptest.NewServer(gwedemo.New(route, "/backend"))
		t.Cleanup(s.Close)
		c.gwe[route] = s
		members = append(members, fsm.MemberSpec{Route: route, URL: s.URL})
	}
	seed := []fsm.PoolSpec{{
		Name: "backend", Prefix: "/backend", Cookie: "ROUTEID", InsertCookie: true,
		FailTimeout: 5 * time.Second, Members: members,
	}}
	var gossipAddrs []string
	var cfgs []cluster.Config
	for i := range n {
		cfg := c.nodeConfig(fmt.Sprintf("n%d", i+1))
		cfg.BootstrapExpect = n
		cfg.Seed = seed
		cfgs = append(cfgs, cfg)
		gossipAddrs = append(gossipAddrs, cfg.GossipAddr)
	}
	for i := range cfgs {
		cfgs[i].RetryJoin = gossipAddrs
		c.start(cfgs[i])
	}
	t.Cleanup(c.killAll)
	c.waitLeader()
	c.waitAll("seeded table on every node", func(tn *testNode) bool {
		tab := tn.proxy.Table()
		return tab != nil && tab.Pool("backend") != nil
	})
	return c
}

// nodeConfig is a fresh node's config with free loopback ports.
func (c *testCluster) nodeConfig(name string) cluster.Config {
	return cluster.Config{
		Name:       name,
		DataDir:    filepath.Join(c.t.TempDir(), name),
		RaftAddr:   freeAddr(c.t),
		GossipAddr: freeAddr(c.t),
		GRPCAddr:   freeAddr(c.t),
		Token:      testToken,
		Timing:     cluster.Timing{GossipProfile: "local"},
		Logger:     testLogger(c.t).With("node", name),
	}
}

// start runs a node with cfg and its proxy; it is added to c.nodes, or
// replaces the entry with the same name (a restart).
func (c *testCluster) start(cfg cluster.Config) *testNode {
	c.t.Helper()
	tn := &testNode{cfg: cfg, proxy: proxy.New(proxy.Options{Logger: cfg.Logger})}
	cfg.OnTable = tn.proxy.Update
	cfg.InFlight = tn.proxy.InFlight
	node, err := cluster.Start(cfg)
	if err != nil {
		c.t.Fatalf("start %s: %v", cfg.Name, err)
	}
	tn.node = node
	ln, err := tn.proxy.Listen(proxy.ListenerConfig{Addr: "127.0.0.1:0"})
	if err != nil {
		c.t.Fatal(err)
	}
	tn.ln = ln
	tn.url = "http://" + ln.Addr().String()
	go ln.Serve()
	for i, old := range c.nodes {
		if old.cfg.Name == cfg.Name {
			c.nodes[i] = tn
			return tn
		}
	}
	c.nodes = append(c.nodes, tn)
	return tn
}

// kill stops a node without goodbye (and its data plane).
func (c *testCluster) kill(tn *testNode) {
	tn.dead = true
	tn.node.Kill()
	tn.ln.Shutdown(context.Background())
	tn.proxy.Close()
	c.mu.Lock()
	if cc := c.clients[tn.node.GRPCAddr()]; cc != nil {
		cc.Close()
		delete(c.clients, tn.node.GRPCAddr())
	}
	c.mu.Unlock()
}

func (c *testCluster) killAll() {
	for _, tn := range c.nodes {
		if !tn.dead {
			c.kill(tn)
		}
	}
	c.mu.Lock()
	for _, cc := range c.clients {
		cc.Close()
	}
	c.mu.Unlock()
}

// live returns the nodes that are running.
func (c *testCluster) live() []*testNode {
	var out []*testNode
	for _, tn := range c.nodes {
		if !tn.dead {
			out = append(out, tn)
		}
	}
	return out
}

// waitLeader waits until every live node agrees on one leader, and returns it.
func (c *testCluster) waitLeader() *testNode {
	c.t.Helper()
	var leader *testNode
	waitFor(c.t, 20*time.Second, "a leader every live node agrees on", func() bool {
		leader = nil
		name := ""
		for _, tn := range c.live() {
			l := tn.node.Leader()
			if l == "" || (name != "" && l != name) {
				return false
			}
			name = l
			if tn.node.IsLeader() {
				leader = tn
			}
		}
		return leader != nil
	})
	return leader
}

func (c *testCluster) followers() []*testNode {
	var out []*testNode
	for _, tn := range c.live() {
		if !tn.node.IsLeader() {
			out = append(out, tn)
		}
	}
	return out
}

// waitAll waits until cond holds on every live node.
func (c *testCluster) waitAll(what string, cond func(*testNode) bool) {
	c.t.Helper()
	waitFor(c.t, 20*time.Second, what, func() bool {
		for _, tn := range c.live() {
			if !cond(tn) {
				return false
			}
		}
		return true
	})
}

// admin returns an authenticated admin client for tn and a context.
func (c *testCluster) admin(tn *testNode) (gwelbv1.AdminClient, context.Context) {
	return c.adminWithToken(tn, testToken)
}

func (c *testCluster) adminWithToken(tn *testNode, token string) (gwelbv1.AdminClient, context.Context) {
	c.mu.Lock()
	defer c.mu.Unlock()
	addr := tn.node.GRPCAddr()
	cc := c.clients[addr]
	if cc == nil {
		var err error
		cc, err = grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			c.t.Fatal(err)
		}
		c.clients[addr] = cc
	}
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+token)
	return gwelbv1.NewAdminClient(cc), ctx
}

// get sends GET path through tn's data plane with an optional cookie and
// returns the serving GWE server's name and the response's Set-Cookie.
func get(t testing.TB, tn *testNode, path, cookie string) (server, setCookie string, err error) {
	req, _ := http.NewRequest("GET", tn.url+path, nil)
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", "", fmt.Errorf("GET %s via %s: %s", path, tn.cfg.Name, resp.Status)
	}
	return resp.Header.Get(gwedemo.HeaderServer), resp.Header.Get("Set-Cookie"), nil
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
