// Package clustertest runs real gwelb nodes (control plane, data plane and
// a listener each) over real TCP on loopback inside a test process, for the
// cluster, gwelbctl and benchmark suites.
package clustertest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/gwelb/gwelb/cluster"
	"github.com/gwelb/gwelb/fsm"
	"github.com/gwelb/gwelb/internal/gwedemo"
	"github.com/gwelb/gwelb/internal/pki"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
	"github.com/gwelb/gwelb/proxy"
)

const Token = "test-token"

// Node is one real gwelb node: control plane, data plane and a listener.
// As in the daemon, the listener binds only once the node has caught up
// with the cluster (or StartupCatchupTimeout passed); Serving is closed
// then. The ops endpoints (/healthz, /readyz) answer from the start.
type Node struct {
	Cfg     cluster.Config
	Node    *cluster.Node
	Proxy   *proxy.Server
	URL     string        // data-plane base URL, set once Serving is closed
	OpsURL  string        // /healthz and /readyz
	Serving chan struct{} // closed once the data-plane listener accepts
	dead    bool

	mu       sync.Mutex
	ln       *proxy.Listener // nil until Serving
	killed   bool
	stopWait context.CancelFunc
	waitDone chan struct{} // closed when the listener goroutine is over
	ops      *http.Server
}

// Ready is what /readyz answers: nil when the node may route.
func (tn *Node) Ready() error {
	if err := tn.Node.Ready(); err != nil {
		return err
	}
	return tn.Proxy.Ready()
}

// WaitServing waits until the node's data-plane listener accepts.
func (tn *Node) WaitServing(t testing.TB, timeout time.Duration) {
	t.Helper()
	select {
	case <-tn.Serving:
	case <-time.After(timeout):
		t.Fatalf("%s: data-plane listener not open after %v (ready: %v)", tn.Cfg.Name, timeout, tn.Ready())
	}
}

// Cluster runs real nodes over real TCP on loopback in this process.
type Cluster struct {
	t       testing.TB
	Nodes   []*Node
	GWE     map[string]*GWEServer // backend route -> demo GWE server
	mu      sync.Mutex
	clients map[string]*grpc.ClientConn

	// The cluster's CA and gossip key: NodeConfig gives every node a node
	// certificate of this CA and the key, so every cluster test runs the
	// secure path of DESIGN.md §4 (Insecure opts a node out).
	pki       *PKI
	GossipKey []byte
	dataRoot  string // node data dirs, removed after killAll
}

// PKI is a test cluster's certificate authority in a temp dir.
type PKI struct {
	t     testing.TB
	CADir string
	Dir   string // node and client certificates
	mu    sync.Mutex
	nodes map[string]pki.Bundle
}

// NewPKI creates a CA in a temp dir.
func NewPKI(t testing.TB) *PKI {
	t.Helper()
	dir := t.TempDir()
	p := &PKI{t: t, CADir: filepath.Join(dir, "ca"), Dir: filepath.Join(dir, "certs"), nodes: map[string]pki.Bundle{}}
	if _, _, err := pki.CreateCA(p.CADir, 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	return p
}

// CAFile is the CA certificate's path.
func (p *PKI) CAFile() string { return filepath.Join(p.CADir, pki.CACertFile) }

// Node returns the bundle of node name, issuing its certificate (SANs
// <name>.node.gwelb, 127.0.0.1 and localhost, so gwelbctl can verify it by
// address too) the first time.
func (p *PKI) Node(name string) pki.Bundle {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if b, ok := p.nodes[name]; ok {
		return b
	}
	cert, key, err := pki.CreateNodeCert(p.CADir, p.Dir, name, []net.IP{net.IPv4(127, 0, 0, 1)}, []string{"localhost"}, 24*time.Hour)
	if err != nil {
		p.t.Fatal(err)
	}
	b := pki.Bundle{CAFile: p.CAFile(), CertFile: cert, KeyFile: key}
	p.nodes[name] = b
	return b
}

// Client issues an operator client certificate and returns its files.
func (p *PKI) Client(name string) (certFile, keyFile string) {
	p.t.Helper()
	cert, key, err := pki.CreateClientCert(p.CADir, p.Dir, name, 24*time.Hour)
	if err != nil {
		p.t.Fatal(err)
	}
	return cert, key
}

// PKI is the cluster's certificate authority.
func (c *Cluster) PKI() *PKI { return c.pki }

// Insecure is an Option for a node without TLS and gossip key
// (insecure: true), as nodes ran before DESIGN.md §4's rules.
func Insecure(_ int, cfg *cluster.Config) {
	cfg.TLS, cfg.GossipKey, cfg.Insecure = pki.Bundle{}, nil, true
}

// FreeAddr returns a loopback address whose port is free for TCP and UDP
// (gossip uses both), chosen outside the kernel's ephemeral range
// (32768-60999 on Linux) and never handed out twice while this process
// lives, by this process or by any other test binary that uses FreeAddr:
// go test runs packages in parallel, and a node restarted by a test must
// bind its ports again after they sat free for a moment (a rolling
// restart), so a port is reserved machine-wide by a file naming this
// process (reserve).
//
// Why not listen on port 0 and close: the kernel then hands the same
// ephemeral port to the next socket anyone opens — another test binary's
// outgoing connection, say — before our node binds it, and the node fails
// with "address already in use" on a busy machine.
func FreeAddr(t testing.TB) string {
	t.Helper()
	freeMu.Lock()
	defer freeMu.Unlock()
	for range 1000 {
		port := 20000 + mrand.IntN(12000)
		if freeUsed[port] || !reserve(port) {
			continue
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		pc, err := net.ListenPacket("udp", addr)
		ln.Close()
		if err != nil {
			continue
		}
		pc.Close()
		freeUsed[port] = true
		return addr
	}
	t.Fatal("no free loopback port in 20000-31999")
	return ""
}

// reserve claims port for this process across test binaries: it creates
// <tmp>/gwelb-test-ports/<port> holding this process's id, or takes over
// such a file whose process is gone. It reports whether the port is now
// this process's.
func reserve(port int) bool {
	dir := filepath.Join(os.TempDir(), "gwelb-test-ports")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return true // no shared directory: fall back to this process's own bookkeeping
	}
	path := filepath.Join(dir, strconv.Itoa(port))
	for range 2 {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o666)
		if err == nil {
			fmt.Fprint(f, os.Getpid())
			f.Close()
			return true
		}
		b, rerr := os.ReadFile(path)
		pid, perr := strconv.Atoi(strings.TrimSpace(string(b)))
		if rerr != nil || perr != nil || pid <= 0 {
			return false // being written right now, or unreadable: leave it
		}
		if err := syscall.Kill(pid, 0); pid == os.Getpid() || err == nil || errors.Is(err, syscall.EPERM) {
			return false // a live test process holds it
		}
		os.Remove(path) // its process is gone: try once more
	}
	return false
}

var (
	freeMu   sync.Mutex
	freeUsed = map[int]bool{}
)

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("GWELB_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// Probe is the health check of the seeded pool: fast, so that tests see
// verdicts change within a second.
//
// The timeout is generous on purpose: a blocked or stopped server fails at
// once (connection refused), while a healthy one on a busy 2-core machine
// running -race can take hundreds of milliseconds to answer, and must not
// be observed down for it.
var Probe = fsm.HealthSpec{Interval: 100 * time.Millisecond, Timeout: 2 * time.Second, Rise: 2, Fall: 2}

// Option adjusts the config of the i-th node (0-based) before it starts.
type Option func(i int, cfg *cluster.Config)

// New starts n nodes with bootstrap_expect n, seeded with a backend pool of
// three demo GWE servers (routes 1, 2, 3) probed every 100 ms, and waits for
// a leader and the seeded table on every node.
func New(t testing.TB, n int, opts ...Option) *Cluster {
	t.Helper()
	c := newCluster(t)
	var members []fsm.MemberSpec
	for _, route := range []string{"1", "2", "3"} {
		g := StartGWE(t, route, "/backend")
		c.GWE[route] = g
		members = append(members, fsm.MemberSpec{Route: route, URL: g.URL})
	}
	seed := []fsm.PoolSpec{{
		Name: "backend", Prefix: "/backend", Sticky: fsm.StickySpec{Cookie: "ROUTEID", Insert: true},
		FailTimeout: new(5 * time.Second), Health: Probe, Members: members,
	}}
	var gossipAddrs []string
	var cfgs []cluster.Config
	for i := range n {
		cfg := c.NodeConfig(fmt.Sprintf("n%d", i+1))
		cfg.BootstrapExpect = n
		cfg.Seed = seed
		for _, o := range opts {
			o(i, &cfg)
		}
		cfgs = append(cfgs, cfg)
		gossipAddrs = append(gossipAddrs, cfg.GossipAddr)
	}
	for i := range cfgs {
		cfgs[i].RetryJoin = gossipAddrs
		c.Start(cfgs[i])
	}
	t.Cleanup(c.killAll)
	c.WaitLeader()
	c.WaitAll("seeded table and an open listener on every node", func(tn *Node) bool {
		tab := tn.Proxy.Table()
		return tab != nil && tab.Pool("backend") != nil && isClosed(tn.Serving)
	})
	return c
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// NewEmpty returns a cluster with no nodes yet, its CA and gossip key made:
// start nodes with Start(NodeConfig(name)). Nodes are killed at cleanup.
func NewEmpty(t testing.TB) *Cluster {
	t.Helper()
	c := newCluster(t)
	t.Cleanup(c.killAll)
	return c
}

// newCluster makes the CA, gossip key and data directory root; the caller
// registers killAll (after anything the nodes use that cleanup removes).
func newCluster(t testing.TB) *Cluster {
	t.Helper()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	return &Cluster{t: t, GWE: map[string]*GWEServer{}, clients: map[string]*grpc.ClientConn{}, pki: NewPKI(t), GossipKey: key, dataRoot: t.TempDir()}
}

// NodeConfig is a fresh node's config with free loopback ports, a node
// certificate of the cluster's CA and the cluster's gossip key.
func (c *Cluster) NodeConfig(name string) cluster.Config {
	return cluster.Config{
		Name:       name,
		DataDir:    c.dataDir(name),
		RaftAddr:   FreeAddr(c.t),
		GossipAddr: FreeAddr(c.t),
		GRPCAddr:   FreeAddr(c.t),
		TLS:        c.pki.Node(name),
		GossipKey:  c.GossipKey,
		Token:      Token,
		Timing:     cluster.Timing{GossipProfile: "local"},
		Logger:     testLogger(c.t).With("node", name),
	}
}

// NonVoterConfig is NodeConfig for a node that asks to be a non-voter
// (voter: false) and joins by gossip through the cluster's nodes.
func (c *Cluster) NonVoterConfig(name string) cluster.Config {
	cfg := c.NodeConfig(name)
	cfg.NonVoter, cfg.RetryJoin = true, c.GossipAddrs()
	return cfg
}

// GossipAddrs lists the gossip addresses of the cluster's nodes (a
// retry_join list).
func (c *Cluster) GossipAddrs() []string {
	var out []string
	for _, tn := range c.Nodes {
		out = append(out, tn.Cfg.GossipAddr)
	}
	return out
}

// Start runs a node with cfg and its proxy; it is added to c.Nodes, or
// replaces the entry with the same name (a restart). It returns at once:
// the data-plane listener binds once the node has caught up (Serving).
func (c *Cluster) Start(cfg cluster.Config) *Node {
	c.t.Helper()
	tn := &Node{Cfg: cfg, Proxy: proxy.New(proxy.Options{Logger: cfg.Logger}), Serving: make(chan struct{}), waitDone: make(chan struct{})}
	cfg.OnTable = tn.Proxy.Update
	cfg.InFlight = tn.Proxy.InFlight
	cfg.Quarantine = tn.Proxy.QuarantinedUntil
	if cfg.Counters == nil {
		cfg.Counters = tn.Proxy.MemberCounters
	}
	node, err := cluster.Start(cfg)
	if err != nil {
		c.t.Fatalf("start %s: %v", cfg.Name, err)
	}
	tn.Node = node
	tn.Proxy.SetObserver(node)
	tn.Proxy.SetFreshness(node)

	opsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		c.t.Fatal(err)
	}
	tn.ops = &http.Server{Handler: proxy.OpsHandler(tn.Ready, node.LastContact), ReadHeaderTimeout: 5 * time.Second}
	tn.OpsURL = "http://" + opsLn.Addr().String()
	go tn.ops.Serve(opsLn)

	ctx, cancel := context.WithCancel(context.Background())
	tn.stopWait = cancel
	go tn.serveWhenCaughtUp(ctx, c.t)

	for i, old := range c.Nodes {
		if old.Cfg.Name == cfg.Name {
			c.Nodes[i] = tn
			return tn
		}
	}
	c.Nodes = append(c.Nodes, tn)
	return tn
}

// serveWhenCaughtUp binds the data-plane listener once the node has
// caught up, as the daemon does, and serves until Kill. The port is
// chosen then: one picked earlier and bound late could be taken meanwhile.
func (tn *Node) serveWhenCaughtUp(ctx context.Context, t testing.TB) {
	defer close(tn.waitDone)
	if err := tn.Node.WaitCaughtUp(ctx); err != nil && !errors.Is(err, cluster.ErrNotCaughtUp) {
		return // killed first
	}
	ln, err := tn.Proxy.Listen(proxy.ListenerConfig{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Errorf("%s: %v", tn.Cfg.Name, err)
		return
	}
	tn.mu.Lock()
	if tn.killed {
		tn.mu.Unlock()
		ln.Shutdown(context.Background())
		return
	}
	tn.ln = ln
	tn.URL = "http://" + ln.Addr().String()
	tn.mu.Unlock()
	close(tn.Serving)
	ln.Serve()
}

// Kill stops a node without goodbye (and its data plane).
func (c *Cluster) Kill(tn *Node) {
	tn.dead = true
	tn.stopWait()
	tn.Node.Kill()
	tn.mu.Lock()
	tn.killed = true
	ln := tn.ln
	tn.mu.Unlock()
	if ln != nil {
		ln.Shutdown(context.Background())
	}
	<-tn.waitDone
	tn.ops.Close()
	tn.Proxy.Close()
	c.mu.Lock()
	if cc := c.clients[tn.Node.GRPCAddr()]; cc != nil {
		cc.Close()
		delete(c.clients, tn.Node.GRPCAddr())
	}
	c.mu.Unlock()
}

func (c *Cluster) killAll() {
	for _, tn := range c.Nodes {
		if !tn.dead {
			c.Kill(tn)
		}
	}
	c.mu.Lock()
	for _, cc := range c.clients {
		cc.Close()
	}
	c.mu.Unlock()
}

// live returns the nodes that are running.
func (c *Cluster) Live() []*Node {
	var out []*Node
	for _, tn := range c.Nodes {
		if !tn.dead {
			out = append(out, tn)
		}
	}
	return out
}

// waitLeader waits until every live node agrees on one leader, and returns it.
func (c *Cluster) WaitLeader() *Node {
	c.t.Helper()
	var leader *Node
	WaitFor(c.t, 20*time.Second, "a leader every live node agrees on", func() bool {
		leader = nil
		name := ""
		for _, tn := range c.Live() {
			l := tn.Node.Leader()
			if l == "" || (name != "" && l != name) {
				return false
			}
			name = l
			if tn.Node.IsLeader() {
				leader = tn
			}
		}
		return leader != nil
	})
	return leader
}

func (c *Cluster) Followers() []*Node {
	var out []*Node
	for _, tn := range c.Live() {
		if !tn.Node.IsLeader() {
			out = append(out, tn)
		}
	}
	return out
}

// waitAll waits until cond holds on every live node.
func (c *Cluster) WaitAll(what string, cond func(*Node) bool) {
	c.t.Helper()
	WaitFor(c.t, 20*time.Second, what, func() bool {
		for _, tn := range c.Live() {
			if !cond(tn) {
				return false
			}
		}
		return true
	})
}

// admin returns an authenticated admin client for tn and a context.
func (c *Cluster) Admin(tn *Node) (gwelbv1.AdminClient, context.Context) {
	return c.AdminWithToken(tn, Token)
}

func (c *Cluster) AdminWithToken(tn *Node, token string) (gwelbv1.AdminClient, context.Context) {
	c.mu.Lock()
	defer c.mu.Unlock()
	addr := tn.Node.GRPCAddr()
	cc := c.clients[addr]
	if cc == nil {
		creds := insecure.NewCredentials()
		if tn.Cfg.TLS.Enabled() {
			// As gwelbctl: verify that the server is a node of the CA; the
			// token authenticates the operator.
			tc, err := pki.OperatorClientConfig(c.pki.CAFile(), "", "", "")
			if err != nil {
				c.t.Fatal(err)
			}
			creds = credentials.NewTLS(tc)
		}
		var err error
		cc, err = grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
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
// The request waits (up to 20 s) for the node's listener to open, as a
// client retrying its connection would.
func Get(t testing.TB, tn *Node, path, cookie string) (server, setCookie string, err error) {
	select {
	case <-tn.Serving:
	case <-time.After(20 * time.Second):
		return "", "", fmt.Errorf("GET %s via %s: the listener did not open within 20s (ready: %v)", path, tn.Cfg.Name, tn.Ready())
	}
	req, _ := http.NewRequest("GET", tn.URL+path, nil)
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
		return "", "", fmt.Errorf("GET %s via %s: %s", path, tn.Cfg.Name, resp.Status)
	}
	return resp.Header.Get(gwedemo.HeaderServer), resp.Header.Get("Set-Cookie"), nil
}

// waitFor polls cond until it holds or the deadline passes.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// GWEServer is a demo GWE server on a fixed loopback address that a test
// can stop (connections refused) and start again.
type GWEServer struct {
	URL  string
	Demo *gwedemo.Server
	addr string

	mu  sync.Mutex
	srv *http.Server
}

// StartGWE starts a demo GWE server named route serving prefix.
func StartGWE(t testing.TB, route, prefix string) *GWEServer {
	t.Helper()
	g := &GWEServer{Demo: gwedemo.New(route, prefix), addr: FreeAddr(t)}
	g.URL = "http://" + g.addr
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Stop)
	return g
}

// Start listens again on the server's address.
func (g *GWEServer) Start() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.srv != nil {
		return nil
	}
	ln, err := net.Listen("tcp", g.addr)
	if err != nil {
		return fmt.Errorf("restart GWE server %s: %w", g.addr, err)
	}
	g.srv = &http.Server{Handler: g.Demo, ReadHeaderTimeout: 5 * time.Second}
	go g.srv.Serve(ln)
	return nil
}

// Stop closes the listener and every connection: the server is dead.
func (g *GWEServer) Stop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.srv != nil {
		g.srv.Close()
		g.srv = nil
	}
}

// dataDir is a new, empty data directory for a node named name.
func (c *Cluster) dataDir(name string) string {
	dir, err := os.MkdirTemp(c.dataRoot, name+"-")
	if err != nil {
		c.t.Fatal(err)
	}
	return dir
}
