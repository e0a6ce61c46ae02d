package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/gwelb/gwelb/cluster"
	"github.com/gwelb/gwelb/internal/pki"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
	"github.com/gwelb/gwelb/proxy"
)

// TestDashboardConfig: ops.ui and ops.tls parse, and their mistakes are
// refused naming the field.
func TestDashboardConfig(t *testing.T) {
	cfg, err := ParseConfig([]byte("ops: {addr: 127.0.0.1:8081, ui: false, tls: {cert: c.pem, key: k.pem}}\n" + validConfig))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Ops.UIEnabled() || cfg.Ops.TLS == nil || cfg.Ops.TLS.Cert != "c.pem" {
		t.Errorf("ops = %+v", cfg.Ops)
	}
	if cfg, _ := ParseConfig([]byte("ops: {addr: 127.0.0.1:8081}\n" + validConfig)); !cfg.Ops.UIEnabled() {
		t.Errorf("the dashboard is off by default")
	}
	for _, tt := range []struct{ name, head, want string }{
		{"tls without addr", "ops: {tls: {cert: c.pem, key: k.pem}}\n", "ops.tls: needs ops.addr"},
		{"tls without key", "ops: {addr: 127.0.0.1:8081, tls: {cert: c.pem}}\n", "ops.tls: both cert and key are required"},
		{"ui not a bool", "ops: {addr: 127.0.0.1:8081, ui: maybe}\n", "maybe"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tt.head + validConfig))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

// TestDashboardOff: with ops.ui: false the ops listener answers 404 at
// /ui/ and serves its other endpoints as before.
func TestDashboardOff(t *testing.T) {
	off := false
	h, closeUI, err := withDashboard(&Config{Ops: Ops{Addr: "127.0.0.1:8081", UI: &off}}, cluster.Config{Name: "n1"}, nil, nil, nil, nil,
		proxy.OpsHandler(func() error { return nil }, func() time.Duration { return 0 }))
	if err != nil {
		t.Fatal(err)
	}
	defer closeUI()
	for path, want := range map[string]int{"/ui/": 404, "/ui/login": 404, "/healthz": 200} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
		if w.Code != want {
			t.Errorf("GET %s with ops.ui false: %d, want %d", path, w.Code, want)
		}
	}
}

// TestAgentDashboard runs the daemon as a process in the secure posture
// with ops.tls: the dashboard answers over HTTPS, a drain made on it is
// applied and shows in the node's audit log on the page (who, what,
// outcome), and SIGTERM ends an open live stream rather than waiting for
// it.
func TestAgentDashboard(t *testing.T) {
	dir := t.TempDir()
	caDir := filepath.Join(dir, "ca")
	if code := tlsMain([]string{"ca", "create", "-dir", caDir}, io.Discard, os.Stderr); code != 0 {
		t.Fatalf("gwelb tls ca create: exit %d", code)
	}
	certs := filepath.Join(dir, "certs")
	if code := tlsMain([]string{"cert", "create", "-ca-dir", caDir, "-node", "a1", "-ip", "127.0.0.1", "-out", certs}, io.Discard, os.Stderr); code != 0 {
		t.Fatalf("gwelb tls cert create: exit %d", code)
	}
	var key strings.Builder
	if code := keygenMain(nil, &key, os.Stderr); code != 0 {
		t.Fatal("gwelb keygen failed")
	}
	a := &agent{name: "a1", raft: freePort(t), gossip: freePort(t), grpc: freePort(t), data: freePort(t), ops: freePort(t),
		config: filepath.Join(dir, "a1.yaml"), log: filepath.Join(dir, "a1.log")}
	cert, keyFile, ca := filepath.Join(certs, "a1.pem"), filepath.Join(certs, "a1-key.pem"), filepath.Join(caDir, pki.CACertFile)
	cfg := fmt.Sprintf(`node: a1
gossip_key: %s
tls: {ca_file: %s, cert_file: %s, key_file: %s}
data_dir: %s
raft_addr: %s
gossip_addr: %s
grpc_addr: %s
bootstrap_expect: 1
token: %s
read_token: read-only-token
raft: {gossip: local}
listeners: [{addr: %s}]
ops: {addr: %s, tls: {cert: %s, key: %s}}
shutdown: {delay: 0s, timeout: 5s}
pools:
  - name: backend
    prefix: /backend
    sticky: {cookie: ROUTEID, insert: true}
    members: [{route: "1", url: %q}]
`, strings.TrimSpace(key.String()), ca, cert, keyFile, filepath.Join(dir, "data"), a.raft, a.gossip, a.grpc, agentToken, a.data, a.ops, cert, keyFile, startGWE(t, "1"))
	if err := os.WriteFile(a.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	operatorTLS, err := pki.OperatorClientConfig(filepath.Join(caDir, pki.CACertFile), "", "", "a1")
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(a.grpc, grpc.WithTransportCredentials(credentials.NewTLS(operatorTLS)))
	if err != nil {
		t.Fatal(err)
	}
	a.adminConn, a.admin = cc, gwelbv1.NewAdminClient(cc)
	a.start(t)
	t.Cleanup(func() {
		a.stop(t, syscall.SIGKILL)
		cc.Close()
		if t.Failed() {
			b, _ := os.ReadFile(a.log)
			t.Logf("log of a1:\n%s", b)
		}
	})

	pem, err := os.ReadFile(ca)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	hc := &http.Client{
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       10 * time.Second,
	}
	base := "https://" + a.ops
	var cookie *http.Cookie
	call := func(method, path string, form url.Values) (*http.Response, string) {
		t.Helper()
		var body io.Reader
		if form != nil {
			body = strings.NewReader(form.Encode())
		}
		req, _ := http.NewRequest(method, base+path, body)
		if form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		if cookie != nil {
			req.AddCookie(cookie)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return &http.Response{StatusCode: 0, Status: err.Error()}, ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	waitUntil(t, 20*time.Second, "the dashboard over HTTPS with a table", func() bool {
		resp, _ := call("POST", "/ui/login", url.Values{"token": {agentToken}})
		if resp.StatusCode != http.StatusSeeOther {
			return false
		}
		cookie = resp.Cookies()[0]
		_, body := call("GET", "/ui/", nil)
		return strings.Contains(body, `data-member="backend/1"`)
	})
	if resp, _ := call("GET", "/ui/", nil); resp.Header.Get("Strict-Transport-Security") == "" {
		t.Errorf("the dashboard over HTTPS sends no Strict-Transport-Security")
	}
	_, body := call("GET", "/ui/", nil)
	m := regexp.MustCompile(`name="csrf" value="([0-9a-f]{64})"`).FindStringSubmatch(body)
	if m == nil {
		t.Fatal("no CSRF token on the page")
	}
	resp, _ := call("POST", "/ui/action", url.Values{"csrf": {m[1]}, "pool": {"backend"}, "route": {"1"}, "op": {"drain"}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("drain: %s", resp.Status)
	}
	st, err := a.admin.Status(adminCtx(context.Background()), &gwelbv1.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if s := st.GetPools()[0].GetMembers()[0].GetMember().GetState(); s != gwelbv1.AdminState_ADMIN_STATE_DRAIN {
		t.Errorf("backend/1 is %v after the dashboard's drain", s)
	}
	_, body = call("GET", "/ui/", nil)
	if !regexp.MustCompile(`<td>token</td><td class="what">SetMemberState pool=backend route=1 state=drain</td><td>ok \(index \d+\)</td>`).MatchString(body) {
		i := strings.Index(body, "recent admin writes")
		t.Errorf("the page does not show the audit record of the drain:\n%s", body[i:min(len(body), i+1500)])
	}

	// An open live stream, then SIGTERM: the stream ends and the node exits.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/ui/events?view=overview", nil)
	req.AddCookie(cookie)
	stream, err := (&http.Client{Transport: hc.Transport}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Body.Close()
	br := bufio.NewReader(stream.Body)
	if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "retry:") {
		t.Fatalf("live stream: %q %v", line, err)
	}
	start := time.Now()
	a.cmd.Process.Signal(syscall.SIGTERM)
	if _, err := io.Copy(io.Discard, br); err != nil && ctx.Err() != nil {
		t.Fatalf("the live stream was still open %v after SIGTERM", time.Since(start))
	}
	select {
	case <-a.exited:
	case <-ctx.Done():
		t.Fatalf("the node did not exit within 20s of SIGTERM with a live stream open")
	}
	// Without the dashboard closing its streams when the ops server shuts
	// down, the stop waits for them until leaveTimeout (10 s).
	if el := time.Since(start); el > leaveTimeout*8/10 {
		t.Errorf("SIGTERM with a live stream open: the node exited after %v: the stream held the stop", el)
	} else {
		t.Logf("SIGTERM with a live stream open: stream ended and node exited in %v", el.Round(time.Millisecond))
	}
}
