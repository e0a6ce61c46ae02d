package proxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gwelb/gwelb/fsm"
	"github.com/gwelb/gwelb/internal/gwedemo"
)

// syncBuffer is an io.Writer safe for the access logger and the test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// lines returns the complete lines written so far.
func (s *syncBuffer) lines() []string {
	str := s.String()
	if i := strings.LastIndexByte(str, '\n'); i >= 0 {
		return strings.Split(str[:i], "\n")
	}
	return nil
}

// observation is one call of Observer.ObserveFailure.
type observation struct {
	pool, route string
	err         error
}

// recObserver records the proxy's passive health signals.
type recObserver struct {
	mu  sync.Mutex
	obs []observation
}

func (o *recObserver) ObserveFailure(pool, route string, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.obs = append(o.obs, observation{pool, route, err})
}

func (o *recObserver) calls() []observation {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.obs)
}

// routes lists the routes observed failing, in order.
func (o *recObserver) routes() []string {
	var rs []string
	for _, ob := range o.calls() {
		rs = append(rs, ob.pool+"/"+ob.route)
	}
	return rs
}

// member is one stand-in GWE server.
type member struct {
	route string
	demo  *gwedemo.Server
	ts    *httptest.Server
}

func (m *member) spec() fsm.MemberSpec { return fsm.MemberSpec{Route: m.route, URL: m.ts.URL} }

// startMembers starts one gwedemo server per route on loopback; each
// answers with its route name.
func startMembers(t testing.TB, prefix string, routes ...string) []*member {
	t.Helper()
	var ms []*member
	for _, r := range routes {
		d := gwedemo.New(r, prefix)
		ts := httptest.NewServer(d)
		t.Cleanup(ts.Close)
		ms = append(ms, &member{route: r, demo: d, ts: ts})
	}
	return ms
}

func memberSpecs(ms []*member) []fsm.MemberSpec {
	var specs []fsm.MemberSpec
	for _, m := range ms {
		specs = append(specs, m.spec())
	}
	return specs
}

// backendPool is the guide's backend balancer: cookie ROUTEID, inserted
// as "ROUTEID=.<route>; Path=/".
func backendPool(ms []*member) fsm.PoolSpec {
	return fsm.PoolSpec{
		Name: "backend", Prefix: "/backend", Sticky: fsm.StickySpec{Cookie: "ROUTEID", Insert: true},
		FailTimeout: new(5 * time.Second), Members: memberSpecs(ms),
	}
}

// frontendPool is the guide's frontend balancer: query parameter alias,
// then cookie FRONTEND_ROUTEID (pure cookie mode, so it inserts it too).
func frontendPool(ms []*member) fsm.PoolSpec {
	return fsm.PoolSpec{
		Name: "frontend", Prefix: "/frontend", Sticky: fsm.StickySpec{Query: "alias", Cookie: "FRONTEND_ROUTEID", Insert: true},
		FailTimeout: new(30 * time.Second), Members: memberSpecs(ms),
	}
}

// editMember returns a copy of spec with edit applied to the member route.
func editMember(spec fsm.PoolSpec, route string, edit func(*fsm.MemberSpec)) fsm.PoolSpec {
	spec.Members = slices.Clone(spec.Members)
	for i := range spec.Members {
		if spec.Members[i].Route == route {
			edit(&spec.Members[i])
			return spec
		}
	}
	panic("no member " + route)
}

func mustTable(t testing.TB, pools ...fsm.PoolSpec) *fsm.Table {
	t.Helper()
	tbl, err := fsm.NewTable(1, pools)
	if err != nil {
		t.Fatalf("NewTable: %v", err)
	}
	return tbl
}

// rendezvousRoute is the member a pool of tbl gives a sticky value whose
// route is unknown or unusable, by the table alone (no quarantine).
func rendezvousRoute(t testing.TB, tbl *fsm.Table, pool, value string) string {
	t.Helper()
	p := tbl.Pool(pool)
	i := p.Rendezvous(value, nil)
	if i < 0 {
		t.Fatalf("no rendezvous member for %q in %s", value, pool)
	}
	return p.Member(i).Route
}

// harness is a proxy Server behind a real loopback listener.
type harness struct {
	srv    *Server
	ln     *Listener
	base   string // http://127.0.0.1:port
	addr   string // 127.0.0.1:port
	log    *syncBuffer
	obs    *recObserver
	client *http.Client
}

// tcpMember is a member written against raw TCP: it listens on loopback
// and runs handle for each connection in a goroutine of its own (handle
// closes it). It returns the member's URL.
func tcpMember(t testing.TB, handle func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go handle(c)
		}
	}()
	return "http://" + ln.Addr().String()
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// startProxy serves a new Server on lc (loopback, port 0 by default),
// updated with tbl unless it is nil. Unset AccessLog, Observer and Logger
// get a recording buffer, a recording observer and a silent logger.
func startProxy(t testing.TB, tbl *fsm.Table, opts Options, lc ListenerConfig) *harness {
	t.Helper()
	h := &harness{}
	if opts.AccessLog == nil {
		h.log = &syncBuffer{}
		opts.AccessLog = h.log
	}
	if opts.Observer == nil {
		h.obs = &recObserver{}
		opts.Observer = h.obs
	}
	if opts.Logger == nil {
		opts.Logger = discardLogger()
	}
	if lc.Addr == "" {
		lc.Addr = "127.0.0.1:0"
	}
	h.srv = New(opts)
	if tbl != nil {
		h.srv.Update(tbl)
	}
	ln, err := h.srv.Listen(lc)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	h.ln = ln
	h.addr = ln.Addr().String()
	scheme := "http"
	if lc.CertFile != "" {
		scheme = "https"
	}
	h.base = scheme + "://" + h.addr
	served := make(chan error, 1)
	go func() { served <- ln.Serve() }()
	tr := &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 16}
	h.client = &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := ln.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		h.srv.Close()
	})
	return h
}

// result is a response with its body read.
type result struct {
	status int
	body   string
	header http.Header
}

// server is the member that answered (gwedemo's X-GWE-Server), "" if none.
func (r result) server() string { return r.header.Get(gwedemo.HeaderServer) }

// setCookies are the response's Set-Cookie values.
func (r result) setCookies() []string { return r.header.Values("Set-Cookie") }

func (r result) String() string {
	return fmt.Sprintf("%d server=%q set-cookie=%q body=%.80q", r.status, r.server(), r.setCookies(), r.body)
}

// do sends a request through the proxy; hdr values are sent as separate
// header lines.
func (h *harness) do(t testing.TB, method, target string, hdr http.Header, body io.Reader) result {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, h.base+target, body)
	if err != nil {
		t.Fatalf("NewRequest %s %s: %v", method, target, err)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v[0]
			continue
		}
		req.Header[k] = v
	}
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, target, err)
	}
	return result{status: resp.StatusCode, body: string(b), header: resp.Header}
}

// get sends GET target with each cookie string on its own Cookie line.
func (h *harness) get(t testing.TB, target string, cookies ...string) result {
	t.Helper()
	var hdr http.Header
	if len(cookies) > 0 {
		hdr = http.Header{"Cookie": cookies}
	}
	return h.do(t, http.MethodGet, target, hdr, nil)
}

// raw sends one request written byte for byte on a fresh connection and
// reads the answer.
func (h *harness) raw(t testing.TB, request string) result {
	t.Helper()
	c, err := net.DialTimeout("tcp", h.addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(15 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, request); err != nil {
		t.Fatalf("write request: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read response to %.60q: %v", request, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return result{status: resp.StatusCode, body: string(b), header: resp.Header}
}

// rawGet sends "GET target HTTP/1.1" with the given extra header lines.
func (h *harness) rawGet(t testing.TB, target string, headerLines ...string) result {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n", target, h.addr)
	for _, l := range headerLines {
		b.WriteString(l + "\r\n")
	}
	b.WriteString("\r\n")
	return h.raw(t, b.String())
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

// logLine waits for the access log line that contains marker and returns it.
func (h *harness) logLine(t testing.TB, marker string) string {
	t.Helper()
	var line string
	waitFor(t, 5*time.Second, "access log line with "+marker, func() bool {
		for _, l := range h.log.lines() {
			if strings.Contains(l, marker) {
				line = l
				return true
			}
		}
		return false
	})
	return line
}

// wantServer fails unless r is a 200 from member route.
func wantServer(t testing.TB, r result, route string) {
	t.Helper()
	if r.status != http.StatusOK || r.server() != route || r.body != route+"\n" {
		t.Fatalf("got %v, want 200 from member %s", r, route)
	}
}

// wantCookie fails unless r sets exactly want (or no cookie when want is "").
func wantCookie(t testing.TB, r result, want string) {
	t.Helper()
	got := r.setCookies()
	if want == "" {
		if len(got) != 0 {
			t.Fatalf("Set-Cookie = %q, want none", got)
		}
		return
	}
	if len(got) != 1 || got[0] != want {
		t.Fatalf("Set-Cookie = %q, want exactly %q", got, want)
	}
}
