package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"github.com/gwelb/gwelb/internal/childproc"
	"github.com/gwelb/gwelb/internal/gwedemo"
	"github.com/gwelb/gwelb/internal/pki"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// Port offsets from -port-base (default 61000); node i adds i. The default
// range lies above Linux's ephemeral ports (32768-60999), where no
// connection's local port and no listener on port 0 lands, and apart from
// the 20000-31999 that clustertest.FreeAddr and the chaos suite use.
const (
	offGRPC   = 0
	offRaft   = 100
	offGossip = 200
	offHTTP   = 300
	offOps    = 400
	offGWE    = 500
	maxNodes  = 100
)

// nodeConfig is what the config template needs.
type nodeConfig struct {
	Name, DataDir                 string
	GRPC, Raft, Gossip, HTTP, Ops int
	BootstrapExpect               int
	NonVoter                      bool
	RetryJoin                     []string
	Token, GossipKey              string
	TLS                           pki.Bundle
	Members                       []memberConfig
	HealthInterval                string // "" keeps gwelb's default (2s)
}

// memberConfig is one seed member of pool backend.
type memberConfig struct{ Route, URL string }

// configTemplate is a node's config: the secure posture of DESIGN.md §4
// (mutual TLS for Raft and node-to-node gRPC, an encrypted gossip ring, a
// token on the admin API), gwelb's default Raft timing and default health
// probing (2 s interval), one pool as the guide's backend cluster.
var configTemplate = template.Must(template.New("node").Funcs(template.FuncMap{"join": strings.Join}).Parse(
	`# gwelb bench-scale: node {{.Name}} (generated)
node: {{.Name}}
data_dir: {{.DataDir}}
raft_addr: 127.0.0.1:{{.Raft}}
gossip_addr: 127.0.0.1:{{.Gossip}}
grpc_addr: 127.0.0.1:{{.GRPC}}
{{- if .BootstrapExpect}}
bootstrap_expect: {{.BootstrapExpect}}
{{- end}}
{{- if .NonVoter}}
voter: false
{{- end}}
{{- if .RetryJoin}}
retry_join: [{{join .RetryJoin ", "}}]
{{- end}}
token: {{.Token}}
gossip_key: {{.GossipKey}}
tls: {ca_file: "{{.TLS.CAFile}}", cert_file: "{{.TLS.CertFile}}", key_file: "{{.TLS.KeyFile}}"}
listeners:
  - addr: 127.0.0.1:{{.HTTP}}
ops: {addr: "127.0.0.1:{{.Ops}}"}
pools:
  - name: backend
    prefix: /backend
    sticky: {cookie: ROUTEID, insert: true}
{{- if .HealthInterval}}
    health: {interval: {{.HealthInterval}}}
{{- end}}
    members:
{{- range .Members}}
      - {route: "{{.Route}}", url: "{{.URL}}"}
{{- end}}
`))

// node is one gwelb balancer process.
type node struct {
	name              string
	voter             bool
	grpcAddr, gossip  string
	httpAddr, opsAddr string
	dir, cfg, log     string
	proc              *childproc.Proc
	conn              *grpc.ClientConn
	api               gwelbv1.AdminClient
}

// secrets are the cluster's CA, gossip key and token, made once per run.
type secrets struct {
	dir, ca   string
	gossipKey string
	token     string
	creds     credentials.TransportCredentials
}

func newSecrets(dir string) (*secrets, error) {
	s := &secrets{dir: dir}
	caDir := filepath.Join(dir, "ca")
	ca, _, err := pki.CreateCA(caDir, 24*time.Hour)
	if err != nil {
		return nil, fmt.Errorf("CA: %w", err)
	}
	s.ca = ca
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("gossip key: %w", err)
	}
	s.gossipKey = base64.StdEncoding.EncodeToString(key)
	tok := make([]byte, 32)
	if _, err := rand.Read(tok); err != nil {
		return nil, fmt.Errorf("token: %w", err)
	}
	s.token = base64.RawURLEncoding.EncodeToString(tok)
	tc, err := pki.OperatorClientConfig(ca, "", "", "")
	if err != nil {
		return nil, fmt.Errorf("admin TLS: %w", err)
	}
	s.creds = credentials.NewTLS(tc)
	return s, nil
}

// bundle issues node name's certificate (IP SAN 127.0.0.1).
func (s *secrets) bundle(name string) (pki.Bundle, error) {
	out := filepath.Join(s.dir, "certs")
	cert, key, err := pki.CreateNodeCert(filepath.Join(s.dir, "ca"), out, name, []net.IP{net.IPv4(127, 0, 0, 1)}, nil, 24*time.Hour)
	if err != nil {
		return pki.Bundle{}, fmt.Errorf("certificate of %s: %w", name, err)
	}
	return pki.Bundle{CAFile: s.ca, CertFile: cert, KeyFile: key}, nil
}

// newNode lays out node i (0-based), writes its config and certificate.
func newNode(work string, base, i int, name string, voter bool, bootstrapExpect int, retryJoin []string, sec *secrets, members []memberConfig, healthInterval string) (*node, error) {
	port := func(off int) int { return base + off + i }
	n := &node{
		name: name, voter: voter,
		grpcAddr: "127.0.0.1:" + strconv.Itoa(port(offGRPC)),
		gossip:   "127.0.0.1:" + strconv.Itoa(port(offGossip)),
		httpAddr: "127.0.0.1:" + strconv.Itoa(port(offHTTP)),
		opsAddr:  "127.0.0.1:" + strconv.Itoa(port(offOps)),
		dir:      filepath.Join(work, name),
	}
	n.cfg, n.log = filepath.Join(n.dir, "gwelb.yaml"), filepath.Join(n.dir, "gwelb.log")
	if err := os.MkdirAll(n.dir, 0o755); err != nil {
		return nil, fmt.Errorf("dir of %s: %w", name, err)
	}
	for _, off := range []int{offGRPC, offRaft, offGossip, offHTTP, offOps} {
		if err := portFree("127.0.0.1:" + strconv.Itoa(port(off))); err != nil {
			return nil, err
		}
	}
	b, err := sec.bundle(name)
	if err != nil {
		return nil, err
	}
	cfg := nodeConfig{
		Name: name, DataDir: filepath.Join(n.dir, "data"),
		GRPC: port(offGRPC), Raft: port(offRaft), Gossip: port(offGossip), HTTP: port(offHTTP), Ops: port(offOps),
		BootstrapExpect: bootstrapExpect, NonVoter: !voter, RetryJoin: retryJoin,
		Token: sec.token, GossipKey: sec.gossipKey, TLS: b, Members: members, HealthInterval: healthInterval,
	}
	var sb strings.Builder
	if err := configTemplate.Execute(&sb, cfg); err != nil {
		return nil, fmt.Errorf("config of %s: %w", name, err)
	}
	if err := os.WriteFile(n.cfg, []byte(sb.String()), 0o644); err != nil {
		return nil, fmt.Errorf("config of %s: %w", name, err)
	}
	return n, nil
}

// portFree fails when addr is taken.
func portFree(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("port %s is taken (try -port-base): %w", addr, err)
	}
	ln.Close()
	pc, err := net.ListenPacket("udp", addr) // gossip's port is UDP too
	if err != nil {
		return fmt.Errorf("port %s/udp is taken (try -port-base): %w", addr, err)
	}
	return pc.Close()
}

// start runs bin/gwelb agent for the node and opens its admin client.
func (n *node) start(bin string, sec *secrets) error {
	p, err := childproc.Start(n.name, []string{filepath.Join(bin, "gwelb"), "agent", "-config", n.cfg}, nil, n.log)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(n.grpcAddr, grpc.WithTransportCredentials(sec.creds), grpc.WithPerRPCCredentials(bearer(sec.token)))
	if err != nil {
		_ = p.Kill()
		return fmt.Errorf("admin client of %s: %w", n.name, err)
	}
	n.proc, n.conn, n.api = p, conn, gwelbv1.NewAdminClient(conn)
	return nil
}

// stop kills the node and closes its admin client.
func (n *node) stop() error {
	if n.conn != nil {
		n.conn.Close()
	}
	return n.proc.Kill()
}

// bearer sends the cluster token with every RPC.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearer) RequireTransportSecurity() bool { return true }

// status asks the node for its own view. Marked as a peer's call
// ("x-gwelb-forwarded"), as the chaos driver does: asked by a client, a
// node also sums the requests in flight over every peer it believes alive,
// 49 calls here.
func (n *node) status(ctx context.Context, timeout time.Duration) (*gwelbv1.StatusResponse, error) {
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, "x-gwelb-forwarded", "1"), timeout)
	defer cancel()
	st, err := n.api.Status(ctx, &gwelbv1.StatusRequest{})
	if err != nil {
		return nil, fmt.Errorf("status of %s: %w", n.name, err)
	}
	return st, nil
}

// routeSticky sends one sticky request (Cookie ROUTEID=.<route>) through
// the node's data plane and checks that GWE server route answered.
func (n *node) routeSticky(ctx context.Context, hc *http.Client, route string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.httpAddr+"/backend/bench", nil)
	if err != nil {
		return fmt.Errorf("request to %s: %w", n.name, err)
	}
	req.Header.Set("Cookie", "ROUTEID=."+route)
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("request to %s: %w", n.name, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("request to %s: status %d", n.name, resp.StatusCode)
	}
	if got := resp.Header.Get(gwedemo.HeaderServer); got != route {
		return fmt.Errorf("request to %s for route %s reached %q", n.name, route, got)
	}
	return nil
}
