package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"github.com/gwelb/gwelb/cluster/clustertest"
	"github.com/gwelb/gwelb/internal/gwedemo"
	"github.com/gwelb/gwelb/internal/pki"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// The agent tests run real gwelb processes: this test binary, re-executed
// with agentEnv set, is the daemon (the same code, race detector included).
const agentEnv = "GWELB_TEST_AGENT"

func TestMain(m *testing.M) {
	if os.Getenv(agentEnv) == "1" {
		main() // "gwelb agent -config FILE"; exits
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// freePort returns a loopback address free a moment ago, below the
// ephemeral range (32768+ on Linux), so that an outgoing connection of
// another test does not take it before the agent binds it.
// freePort is a free loopback address outside the ephemeral port range.
func freePort(t *testing.T) string { return clustertest.FreeAddr(t) }

// agent is one gwelb process and its addresses.
type agent struct {
	name, config, log        string
	raft, gossip, grpc, data string
	ops                      string
	cmd                      *exec.Cmd
	exited                   chan struct{}
	admin                    gwelbv1.AdminClient
	adminConn                *grpc.ClientConn
}

const agentToken = "agent-test-token"

func (a *agent) start(t *testing.T) {
	t.Helper()
	logf, err := os.OpenFile(a.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "agent", "-config", a.config)
	cmd.Env = append(os.Environ(), agentEnv+"=1")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	a.cmd = cmd
	a.exited = make(chan struct{})
	go func() {
		cmd.Wait()
		logf.Close()
		close(a.exited)
	}()
}

func (a *agent) running() bool {
	select {
	case <-a.exited:
		return false
	default:
		return a.cmd != nil
	}
}

// stop sends sig and waits for the process to exit.
func (a *agent) stop(t *testing.T, sig os.Signal) {
	t.Helper()
	if !a.running() {
		return
	}
	a.cmd.Process.Signal(sig)
	select {
	case <-a.exited:
	case <-time.After(20 * time.Second):
		a.cmd.Process.Kill()
		<-a.exited
		t.Errorf("%s did not exit within 20s of %v", a.name, sig)
	}
}

func (a *agent) readyz() (int, string) {
	resp, err := http.Get("http://" + a.ops + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func adminCtx(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+agentToken)
}

// startAgents starts n gwelb processes that bootstrap one cluster, seeded
// with a backend pool of the given demo GWE servers, and waits until every
// one answers /readyz with 200.
func startAgents(t *testing.T, n int, gwe map[string]string) []*agent {
	t.Helper()
	return startAgentsWith(t, n, gwe, agentOptions{})
}

// agentOptions add to the configs startAgentsWith writes.
type agentOptions struct {
	dir         string                            // where configs, logs and certificates go; default a new temp dir
	extra       func(a *agent) string             // top-level YAML lines for a's config
	listenerTLS func(a *agent) (cert, key string) // serve a's data plane over TLS with these files
}

// startAgentsWith is startAgents with options.
func startAgentsWith(t *testing.T, n int, gwe map[string]string, opt agentOptions) []*agent {
	t.Helper()
	dir := opt.dir
	if dir == "" {
		dir = t.TempDir()
	}
	// The daemons run the secure posture of DESIGN.md §4: a CA, a node
	// certificate each and a gossip key, as gwelb tls and gwelb keygen make.
	caDir := filepath.Join(dir, "ca")
	if code := tlsMain([]string{"ca", "create", "-dir", caDir}, io.Discard, os.Stderr); code != 0 {
		t.Fatalf("gwelb tls ca create: exit %d", code)
	}
	var keyOut strings.Builder
	if code := keygenMain(nil, &keyOut, os.Stderr); code != 0 {
		t.Fatalf("gwelb keygen: exit %d", code)
	}
	gossipKey := strings.TrimSpace(keyOut.String())
	operatorTLS, err := pki.OperatorClientConfig(filepath.Join(caDir, pki.CACertFile), "", "", "")
	if err != nil {
		t.Fatal(err)
	}
	var as []*agent
	var join []string
	for i := range n {
		a := &agent{name: fmt.Sprintf("a%d", i+1), raft: freePort(t), gossip: freePort(t), grpc: freePort(t), data: freePort(t), ops: freePort(t)}
		a.config = filepath.Join(dir, a.name+".yaml")
		a.log = filepath.Join(dir, a.name+".log")
		join = append(join, a.gossip)
		as = append(as, a)
	}
	var members strings.Builder
	for route, url := range gwe {
		fmt.Fprintf(&members, "      - {route: %q, url: %q}\n", route, url)
	}
	for _, a := range as {
		if code := tlsMain([]string{"cert", "create", "-ca-dir", caDir, "-node", a.name, "-out", filepath.Join(dir, "certs")}, io.Discard, os.Stderr); code != 0 {
			t.Fatalf("gwelb tls cert create -node %s: exit %d", a.name, code)
		}
		cfg := fmt.Sprintf(`node: %s
gossip_key: %s
tls: {ca_file: %s, cert_file: %s, key_file: %s}
data_dir: %s
raft_addr: %s
gossip_addr: %s
grpc_addr: %s
bootstrap_expect: %d
retry_join: [%s]
token: %s
raft: {gossip: local}
listeners:
  - addr: %s
%sops: {addr: %s}
log_level: debug
pools:
  - name: backend
    prefix: /backend
    sticky: {cookie: ROUTEID, insert: true}
    members:
%s`, a.name, gossipKey, filepath.Join(caDir, pki.CACertFile), filepath.Join(dir, "certs", a.name+".pem"), filepath.Join(dir, "certs", a.name+"-key.pem"),
			filepath.Join(dir, a.name), a.raft, a.gossip, a.grpc, n, strings.Join(join, ", "), agentToken, a.data, listenerTLS(a, opt), a.ops, members.String())
		if opt.extra != nil {
			cfg += opt.extra(a)
		}
		if err := os.WriteFile(a.config, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		cc, err := grpc.NewClient(a.grpc, grpc.WithTransportCredentials(credentials.NewTLS(operatorTLS)))
		if err != nil {
			t.Fatal(err)
		}
		a.adminConn, a.admin = cc, gwelbv1.NewAdminClient(cc)
		a.start(t)
	}
	t.Cleanup(func() {
		for _, a := range as {
			a.cmd.Process.Signal(syscall.SIGCONT)
			a.stop(t, syscall.SIGKILL)
			a.adminConn.Close()
			if b, err := os.ReadFile(a.log); err == nil && (strings.Contains(string(b), "DATA RACE") || t.Failed()) {
				t.Logf("log of %s:\n%s", a.name, b)
				if strings.Contains(string(b), "DATA RACE") {
					t.Errorf("%s: data race", a.name)
				}
			}
		}
	})
	for _, a := range as {
		waitUntil(t, 30*time.Second, a.name+" ready", func() bool {
			code, _ := a.readyz()
			return code == http.StatusOK
		})
	}
	return as
}

// listenerTLS is the tls line of a's listener, if any.
func listenerTLS(a *agent, opt agentOptions) string {
	if opt.listenerTLS == nil {
		return ""
	}
	cert, key := opt.listenerTLS(a)
	return fmt.Sprintf("    tls: {cert: %s, key: %s}\n", cert, key)
}

func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// leaderAndFollower asks every agent for the leader.
func leaderAndFollower(t *testing.T, as []*agent) (leader, follower *agent) {
	t.Helper()
	waitUntil(t, 20*time.Second, "a leader", func() bool {
		leader, follower = nil, nil
		for _, a := range as {
			ctx, cancel := context.WithTimeout(adminCtx(context.Background()), time.Second)
			st, err := a.admin.Status(ctx, &gwelbv1.StatusRequest{})
			cancel()
			if err != nil {
				return false
			}
			if st.GetRaftState() == "Leader" {
				leader = a
			} else {
				follower = a
			}
		}
		return leader != nil && follower != nil
	})
	return leader, follower
}

func putMember(t *testing.T, via *agent, route, url string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(adminCtx(context.Background()), 10*time.Second)
	defer cancel()
	if _, err := via.admin.PutMember(ctx, &gwelbv1.PutMemberRequest{Member: &gwelbv1.Member{Pool: "backend", Route: route, Url: url, Weight: 1}}); err != nil {
		t.Fatalf("put member %s via %s: %v", route, via.name, err)
	}
}

// visit sends one request on conn (kept open) with the route cookie.
func visit(conn net.Conn, r *bufio.Reader, route string) (server, setCookie string, err error) {
	conn.SetDeadline(time.Now().Add(15 * time.Second))
	req, _ := http.NewRequest("GET", "http://gwelb/backend/x", nil)
	req.Header.Set("Cookie", "ROUTEID=."+route)
	if err := req.Write(conn); err != nil {
		return "", "", err
	}
	resp, err := http.ReadResponse(r, req)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.Header.Get(gwedemo.HeaderServer), resp.Header.Get("Set-Cookie"), nil
}

func startGWE(t *testing.T, name string) string {
	ts := httptest.NewServer(gwedemo.New(name, "/backend"))
	t.Cleanup(ts.Close)
	return ts.URL
}

// TestAgentCatchesUpBeforeListening runs three gwelb processes. A follower
// is SIGKILLed, a member is added, the follower restarts from its
// data_dir: its data-plane listener opens only after it logged that it
// caught up, and the first visitor it accepts, pinned to the new member,
// is not moved. Then the follower is SIGSTOPped while another member is
// added and a visitor's request waits in its accept queue: resumed, it
// serves that visitor on the new member too (it notices it did not run,
// and catches up before moving a session).
func TestAgentCatchesUpBeforeListening(t *testing.T) {
	skipInShortMode(t)
	as := startAgents(t, 3, map[string]string{"1": startGWE(t, "1"), "2": startGWE(t, "2")})
	leader, f := leaderAndFollower(t, as)

	f.stop(t, syscall.SIGKILL)
	putMember(t, leader, "late", startGWE(t, "late"))
	f.start(t)
	var conn net.Conn
	waitUntil(t, 20*time.Second, f.name+"'s listener to accept", func() bool {
		c, err := net.DialTimeout("tcp", f.data, time.Second)
		if err != nil {
			return false
		}
		conn = c
		return true
	})
	r := bufio.NewReader(conn)
	if server, setCookie, err := visit(conn, r, "late"); err != nil || server != "late" || setCookie != "" {
		t.Errorf("first visitor of the restarted node, pinned to the member added while it was down: served by %q with Set-Cookie %q (%v)", server, setCookie, err)
	}
	conn.Close()
	logb, _ := os.ReadFile(f.log)
	restart := string(logb)[strings.LastIndex(string(logb), "gwelb started"):]
	caught, listening := strings.Index(restart, "caught up with the cluster"), strings.Index(restart, "msg=listening")
	if caught < 0 || listening < 0 || listening < caught {
		t.Errorf("restarted node: caught up at %d, listening at %d in its log: want listening after caught up", caught, listening)
	}

	// Paused: the member is added while the node cannot run, and a
	// visitor's request is already waiting when it resumes.
	conn, err := net.DialTimeout("tcp", f.data, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r = bufio.NewReader(conn)
	if server, _, err := visit(conn, r, "1"); err != nil || server != "1" {
		t.Fatalf("before the pause: %q (%v)", server, err)
	}
	if err := f.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	putMember(t, leader, "while-paused", startGWE(t, "while-paused"))
	type answer struct {
		server, setCookie string
		err               error
	}
	got := make(chan answer, 1)
	go func() {
		s, c, err := visit(conn, r, "while-paused")
		got <- answer{s, c, err}
	}()
	// The pause must outlast two heartbeat timeouts for the node to know
	// it may be stale: this is the fault's length, not a wait for a result.
	time.Sleep(1500*time.Millisecond - time.Since(stopped))
	if err := f.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	select {
	case a := <-got:
		if a.err != nil || a.server != "while-paused" || a.setCookie != "" {
			t.Errorf("visitor queued on the paused node, pinned to the member added meanwhile: served by %q with Set-Cookie %q (%v)", a.server, a.setCookie, a.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no answer from the resumed node")
	}
	for _, a := range as {
		a.stop(t, syscall.SIGTERM)
	}
}

// skipInShortMode skips a test that runs gwelb processes under -short.
func skipInShortMode(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs gwelb processes")
	}
}
