package ui

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gwelb/gwelb/cluster"
	"github.com/gwelb/gwelb/cluster/clustertest"
	"github.com/gwelb/gwelb/fsm"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

const readToken = "test-read-token"

// dash is a real three-node cluster in the secure posture of DESIGN.md §4
// (node TLS, gossip key, tokens), seeded with the guide's two pools in
// front of demo GWE servers on loopback, and a dashboard on every node.
type dash struct {
	c    *clustertest.Cluster
	ui   map[string]*uiNode // by node name
	gwe  map[string]*clustertest.GWEServer
	hist map[string]*History // each node's audit log feeds its dashboard, as in the daemon
}

type uiNode struct {
	name string
	srv  *Server
	url  string // http://127.0.0.1:port
}

// newDash starts the cluster and the dashboards. refresh is the
// dashboards' periodic re-render.
func newDash(t *testing.T, refresh time.Duration) *dash {
	t.Helper()
	d := &dash{ui: map[string]*uiNode{}, gwe: map[string]*clustertest.GWEServer{}, hist: map[string]*History{}}
	var front []fsm.MemberSpec
	for _, r := range []string{"GWE_F_1", "GWE_F_2"} {
		g := clustertest.StartGWE(t, r, "/frontend")
		d.gwe[r] = g
		front = append(front, fsm.MemberSpec{Route: r, URL: g.URL})
	}
	frontend := fsm.PoolSpec{Name: "frontend", Prefix: "/frontend", Sticky: fsm.StickySpec{Query: "alias", Cookie: "FRONTEND_ROUTEID"},
		FailTimeout: new(30 * time.Second), Health: clustertest.Probe, Members: front}
	d.c = clustertest.New(t, 3, func(_ int, cfg *cluster.Config) {
		cfg.ReadToken = readToken
		cfg.Seed = append(cfg.Seed, frontend)
		h := NewHistory(50)
		d.hist[cfg.Name] = h
		cfg.Logger = slog.New(AuditTee(cfg.Logger.Handler(), h))
	})
	maps := d.c.GWE
	for r, g := range maps {
		d.gwe[r] = g
	}
	for _, tn := range d.c.Nodes {
		d.ui[tn.Cfg.Name] = startUI(t, d.c, tn, refresh, d.hist[tn.Cfg.Name])
	}
	return d
}

func startUI(t *testing.T, c *clustertest.Cluster, tn *clustertest.Node, refresh time.Duration, h *History) *uiNode {
	t.Helper()
	srv, err := Handler(Options{
		Node: tn.Cfg.Name, GRPCAddr: tn.Node.GRPCAddr(), CAFile: c.PKI().CAFile(),
		Token: clustertest.Token, ReadToken: readToken, Refresh: refresh, Logger: tn.Cfg.Logger, History: h,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 5 * time.Second}
	hs.RegisterOnShutdown(srv.Close)
	go hs.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := hs.Shutdown(ctx); err != nil {
			t.Errorf("%s: dashboard shutdown: %v (a live stream kept it open)", tn.Cfg.Name, err)
		}
	})
	return &uiNode{name: tn.Cfg.Name, srv: srv, url: "http://" + ln.Addr().String()}
}

// member returns pool/route as node name's table has it.
func (d *dash) member(t *testing.T, node, pool, route string) *gwelbv1.Member {
	t.Helper()
	for _, tn := range d.c.Live() {
		if tn.Cfg.Name != node {
			continue
		}
		for _, m := range tn.Node.Status().GetPools() {
			for _, ms := range m.GetMembers() {
				if ms.GetMember().GetPool() == pool && ms.GetMember().GetRoute() == route {
					return ms.GetMember()
				}
			}
		}
	}
	return nil
}

// waitAll waits until cond holds for pool/route on every node.
func (d *dash) waitAll(t *testing.T, what, pool, route string, cond func(*gwelbv1.Member) bool) {
	t.Helper()
	clustertest.WaitFor(t, 10*time.Second, what, func() bool {
		for _, tn := range d.c.Live() {
			if m := d.member(t, tn.Cfg.Name, pool, route); m == nil || !cond(m) {
				return false
			}
		}
		return true
	})
}

// client is a browser stand-in over plain HTTP: it keeps the session
// cookie by hand (net/http's cookie jar never sends a Secure cookie over
// http, browsers do on loopback) and never follows redirects.
type client struct {
	t      *testing.T
	base   string
	cookie *http.Cookie
	csrf   string
}

var noRedirect = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Timeout:       10 * time.Second,
}

func (c *client) do(method, path string, form url.Values, hdr map[string]string) (*http.Response, string) {
	c.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, c.base+path, body)
	if err != nil {
		c.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if c.cookie != nil {
		req.AddCookie(c.cookie)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([0-9a-f]{64})"`)

// login logs in with token and reads the session's CSRF token from the
// dashboard page.
func login(t *testing.T, u *uiNode, token string) *client {
	t.Helper()
	c := &client{t: t, base: u.url}
	resp, body := c.do("POST", "/ui/login", url.Values{"token": {token}}, nil)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login on %s: %s\n%s", u.name, resp.Status, body)
	}
	for _, ck := range resp.Cookies() {
		if ck.Name == cookieName(u.name) {
			c.cookie = ck
		}
	}
	if c.cookie == nil {
		t.Fatalf("login on %s: no session cookie in %v", u.name, resp.Header["Set-Cookie"])
	}
	resp, body = c.do("GET", "/ui/", nil, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("dashboard of %s after login: %s", u.name, resp.Status)
	}
	m := csrfRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("dashboard of %s: no CSRF token in the page", u.name)
	}
	c.csrf = m[1]
	return c
}

type memberT = gwelbv1.Member

const (
	active = gwelbv1.AdminState_ADMIN_STATE_ACTIVE
	drain  = gwelbv1.AdminState_ADMIN_STATE_DRAIN
)
