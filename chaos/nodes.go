package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/template"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/metadata"

	"github.com/gwelb/gwelb/internal/childproc"
	"github.com/gwelb/gwelb/internal/pki"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// Ports of a node: the same in every namespace; offset by the node's index
// on loopback.
const (
	portGRPC   = 27000
	portRaft   = 27100
	portGossip = 27200
	portHTTP   = 28000
	portOps    = 28100
)

// failTimeout is every pool's local quarantine after a connection failure.
const failTimeout = 5 * time.Second

// nodeConfig is what the config template needs.
type nodeConfig struct {
	Name, DataDir, IP      string
	GRPC, Raft, Gossip     int
	HTTP, Ops              int
	BootstrapExpect        int
	RetryJoin              []string
	Token, AccessLog       string
	GossipKey              string
	TLS                    pki.Bundle // DESIGN.md §4 (secure.go)
	FailTimeout            time.Duration
	Frontends, Backends    []memberConfig
	HealthInterval         string
	HealthTimeout          string
	HealthRise, HealthFall int
}

// memberConfig is one seed member of a pool.
type memberConfig struct{ Route, URL string }

func members(ss []*server) []memberConfig {
	out := make([]memberConfig, 0, len(ss))
	for _, s := range ss {
		out = append(out, memberConfig{s.name, s.url})
	}
	return out
}

// configTemplate is a node's gwelb config. Health probing is fast (200 ms,
// rise and fall 2) so that a dead GWE server is routed around within about
// a second; Raft timing keeps gwelb's defaults.
var configTemplate = template.Must(template.New("node").Funcs(template.FuncMap{"join": strings.Join}).Parse(
	`# gwelb chaos suite: node {{.Name}} (generated)
node: {{.Name}}
data_dir: {{.DataDir}}
raft_addr: {{.IP}}:{{.Raft}}
gossip_addr: {{.IP}}:{{.Gossip}}
grpc_addr: {{.IP}}:{{.GRPC}}
bootstrap_expect: {{.BootstrapExpect}}
{{- if .RetryJoin}}
retry_join: [{{join .RetryJoin ", "}}]
{{- end}}
token: {{.Token}}
gossip_key: {{.GossipKey}}
tls: {ca_file: "{{.TLS.CAFile}}", cert_file: "{{.TLS.CertFile}}", key_file: "{{.TLS.KeyFile}}"}
listeners:
  - addr: {{.IP}}:{{.HTTP}}
ops: {addr: "{{.IP}}:{{.Ops}}"}
access_log: {{.AccessLog}}
log_level: info
timeouts: {connect: 2s}
pools:
  - name: frontend
    prefix: /frontend
    sticky: {query: alias, cookie: FRONTEND_ROUTEID}
    fail_timeout: {{.FailTimeout}}
    health: {interval: {{.HealthInterval}}, timeout: {{.HealthTimeout}}, rise: {{.HealthRise}}, fall: {{.HealthFall}}}
    members:
{{- range .Frontends}}
      - {route: "{{.Route}}", url: "{{.URL}}"}
{{- end}}
  - name: backend
    prefix: /backend
    sticky: {cookie: ROUTEID, insert: true}
    fail_timeout: {{.FailTimeout}}
    health: {interval: {{.HealthInterval}}, timeout: {{.HealthTimeout}}, rise: {{.HealthRise}}, fall: {{.HealthFall}}}
    members:
{{- range .Backends}}
      - {route: "{{.Route}}", url: "{{.URL}}"}
{{- end}}
`))

// gnode is one gwelb balancer node.
type gnode struct {
	name                           string
	idx                            int
	ip                             string
	grpcAddr, gossipAddr, raftAddr string
	httpAddr, opsAddr              string
	dir, cfgPath, logPath          string

	mu     sync.Mutex
	proc   *childproc.Proc
	conn   *grpc.ClientConn
	api    gwelbv1.AdminClient
	paused bool
	member bool // expected in the Raft configuration
}

// newNode prepares node name: its address and directory.
func (d *driver) newNode(ctx context.Context, name string, idx int) (*gnode, error) {
	ip, err := d.net.addNode(ctx, name, idx)
	if err != nil {
		return nil, err
	}
	off := 0
	if !d.net.netns {
		off = idx
	}
	n := &gnode{name: name, idx: idx, ip: ip}
	n.grpcAddr = net.JoinHostPort(ip, strconv.Itoa(portGRPC+off))
	n.raftAddr = net.JoinHostPort(ip, strconv.Itoa(portRaft+off))
	n.gossipAddr = net.JoinHostPort(ip, strconv.Itoa(portGossip+off))
	n.httpAddr = net.JoinHostPort(ip, strconv.Itoa(portHTTP+off))
	n.opsAddr = net.JoinHostPort(ip, strconv.Itoa(portOps+off))
	n.dir = filepath.Join(d.work, name)
	n.cfgPath = filepath.Join(n.dir, "gwelb.yaml")
	n.logPath = filepath.Join(n.dir, "gwelb.log")
	if err := os.MkdirAll(n.dir, 0o755); err != nil {
		return nil, fmt.Errorf("node dir: %w", err)
	}
	if !d.net.netns {
		for _, a := range []string{n.grpcAddr, n.raftAddr, n.gossipAddr, n.httpAddr, n.opsAddr} {
			if err := portFree(a); err != nil {
				return nil, err
			}
		}
	}
	return n, nil
}

// writeConfig writes the node's config: a founding node expects
// bootstrapExpect nodes and joins them through retryJoin; a node added
// later (0, nil) waits for gwelbctl join.
func (d *driver) writeConfig(n *gnode, bootstrapExpect int, retryJoin []string) error {
	off := 0
	if !d.net.netns {
		off = n.idx
	}
	cfg := nodeConfig{
		Name: n.name, DataDir: filepath.Join(n.dir, "data"), IP: n.ip,
		GRPC: portGRPC + off, Raft: portRaft + off, Gossip: portGossip + off, HTTP: portHTTP + off, Ops: portOps + off,
		BootstrapExpect: bootstrapExpect, RetryJoin: retryJoin, Token: d.token,
		AccessLog: filepath.Join(n.dir, "access.log"), FailTimeout: failTimeout,
		Frontends: members(d.serversOf("frontend")), Backends: members(d.serversOf("backend")),
		HealthInterval: "200ms", HealthTimeout: "300ms", HealthRise: 2, HealthFall: 2,
	}
	var err error
	if cfg.TLS, err = d.nodeBundle(n); err != nil {
		return err
	}
	if cfg.GossipKey, err = d.gossipKey(); err != nil {
		return err
	}
	var b strings.Builder
	if err := configTemplate.Execute(&b, cfg); err != nil {
		return fmt.Errorf("config of %s: %w", n.name, err)
	}
	if err := os.WriteFile(n.cfgPath, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("config of %s: %w", n.name, err)
	}
	return nil
}

// portFree fails when addr is taken (loopback mode shares the host's ports).
func portFree(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("port %s is taken: %w", addr, err)
	}
	return ln.Close()
}

// start starts the node's process and a fresh admin API connection.
func (d *driver) startNode(n *gnode) error {
	argv := d.net.wrap(n.name, []string{filepath.Join(d.bin, "gwelb"), "agent", "-config", n.cfgPath})
	p, err := childproc.Start(n.name, argv, nil, n.logPath)
	if err != nil {
		return err
	}
	creds, err := d.adminCreds()
	if err != nil {
		p.Kill()
		return err
	}
	conn, err := grpc.NewClient(n.grpcAddr,
		grpc.WithTransportCredentials(creds),
		grpc.WithPerRPCCredentials(bearer(d.token)),
		// Reconnect fast after a restart: gRPC's default backoff grows to 2 min.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 500 * time.Millisecond},
			MinConnectTimeout: time.Second,
		}))
	if err != nil {
		p.Kill()
		return fmt.Errorf("admin client of %s: %w", n.name, err)
	}
	n.mu.Lock()
	old := n.conn
	n.proc, n.conn, n.api, n.paused = p, conn, gwelbv1.NewAdminClient(conn), false
	n.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

// bearer sends the cluster token with every RPC.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearer) RequireTransportSecurity() bool { return false }

// client returns the node's admin API client.
func (n *gnode) client() gwelbv1.AdminClient {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.api
}

// running tells whether the node's process runs (it may be stopped).
func (n *gnode) running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.proc != nil && !n.proc.Exited()
}

// live tells whether the node runs and is not stopped.
func (n *gnode) live() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.proc != nil && !n.proc.Exited() && !n.paused
}

func (n *gnode) isMember() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.member
}

func (n *gnode) setMember(m bool) {
	n.mu.Lock()
	n.member = m
	n.mu.Unlock()
}

// signal sends sig to the node's process and tracks SIGSTOP/SIGCONT.
func (n *gnode) signal(sig syscall.Signal) error {
	n.mu.Lock()
	p := n.proc
	n.mu.Unlock()
	if p == nil {
		return fmt.Errorf("%s: not started", n.name)
	}
	if err := p.Signal(sig); err != nil {
		return err
	}
	n.mu.Lock()
	switch sig {
	case syscall.SIGSTOP:
		n.paused = true
	case syscall.SIGCONT:
		n.paused = false
	}
	n.mu.Unlock()
	return nil
}

// kill ends the node's process with SIGKILL and waits for it.
func (n *gnode) kill() error {
	n.mu.Lock()
	p := n.proc
	n.paused = false
	n.mu.Unlock()
	return p.Kill()
}

// dumpAndKill ends a hung node, its goroutines dumped into its log.
func (n *gnode) dumpAndKill() error {
	n.mu.Lock()
	p := n.proc
	n.paused = false
	n.mu.Unlock()
	return p.DumpAndKill()
}

// waitExit waits for the node's process to end.
func (n *gnode) waitExit(ctx context.Context, d time.Duration) error {
	n.mu.Lock()
	p := n.proc
	n.mu.Unlock()
	if p == nil {
		return nil
	}
	return p.Wait(ctx, d)
}

// status asks the node for its own view (Status). The call is marked as
// a peer's ("x-gwelb-forwarded"): asked by a client, a node also sums the
// requests in flight over every peer it believes alive, which waits up to
// a second on a peer that is stopped or cut off, and the driver polls
// Status every few tens of milliseconds to time elections and verdicts.
func (n *gnode) status(ctx context.Context, timeout time.Duration) (*gwelbv1.StatusResponse, error) {
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, "x-gwelb-forwarded", "1"), timeout)
	defer cancel()
	st, err := n.client().Status(ctx, &gwelbv1.StatusRequest{})
	if err != nil {
		return nil, fmt.Errorf("status of %s: %w", n.name, err)
	}
	return st, nil
}

// ready asks the node's /readyz.
func (d *driver) ready(ctx context.Context, n *gnode) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.opsAddr+"/readyz", nil)
	if err != nil {
		return false
	}
	resp, err := d.ctlHTTP.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
