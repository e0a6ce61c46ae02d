package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gwelb/gwelb/fsm"
	"github.com/gwelb/gwelb/internal/gwedemo"
)

// Each test here performs an attack found on loopback against a real proxy
// over real sockets, and fails if the attack works again.

// dialRaw opens a connection to the proxy with a deadline on everything.
func (h *harness) dialRaw(t testing.TB) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", h.addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.SetDeadline(time.Now().Add(20 * time.Second)); err != nil {
		t.Fatal(err)
	}
	return c
}

// readAnswer reads one response from br, body included.
func readAnswer(t testing.TB, br *bufio.Reader, method string) result {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return result{status: resp.StatusCode, body: string(b), header: resp.Header}
}

// wantClosed fails unless the proxy closes the connection (after what was
// already read from br): EOF, not a reset and not a timeout.
func wantClosed(t testing.TB, br *bufio.Reader) {
	t.Helper()
	n, err := io.Copy(io.Discard, br)
	if err != nil {
		t.Fatalf("after the answer: %v (%d more bytes), want the connection closed", err, n)
	}
	if n != 0 {
		t.Fatalf("%d bytes after the answer, want the connection closed", n)
	}
}

// memberRequests is how many requests all of ms served.
func memberRequests(ms ...[]*member) int64 {
	var n int64
	for _, list := range ms {
		for _, m := range list {
			n += m.demo.Requests()
		}
	}
	return n
}

// Attack: POST /backend/echo with Cookie ROUTEID=.2 and a malformed chunked
// body, to each node. Before: the member was quarantined, reported to the
// health Observer (the cluster verdict went DOWN) and visitors were
// re-pinned. Now: the client gets 400 and its connection is closed; the
// member stays, unreported, and keeps its sessions.
func TestAttackMalformedBodyNotMembersFault(t *testing.T) {
	back := startMembers(t, "/backend", "1", "3")
	// Member 2 reads the whole body before answering, as GWE does: the
	// body fails before any answer, where the member used to be blamed.
	spec := backendPool(back)
	spec.Members = append(spec.Members, fsm.MemberSpec{Route: "2", URL: readAllMember(t, "2").url})
	tbl := mustTable(t, spec)
	head := func(marker string) string {
		return "POST /backend/upload?m=" + marker + " HTTP/1.1\r\nHost: gwe\r\nCookie: ROUTEID=.2\r\nTransfer-Encoding: chunked\r\n\r\n"
	}
	tests := []struct {
		name string
		// send writes the attack on c (the head is written first).
		body string
		// want is the status the client must get; 0 when it has gone.
		want int
		// reset: the client resets the connection mid-body instead.
		reset bool
	}{
		{name: "chunk size zz", body: "zz\r\nhello\r\n0\r\n\r\n", want: http.StatusBadRequest},
		{name: "chunk size zz after a chunk", body: "5\r\nhello\r\nzz\r\n", want: http.StatusBadRequest},
		{name: "data not followed by CRLF", body: "5\r\nhelloXX0\r\n\r\n", want: http.StatusBadRequest},
		{name: "bare LF in chunk line", body: "5\nhello\r\n0\r\n\r\n", want: http.StatusBadRequest},
		{name: "chunk size over 16 digits", body: "00000000000000005\r\nhello\r\n0\r\n\r\n", want: http.StatusBadRequest},
		{name: "bare LF in trailer", body: "5\r\nhello\r\n0\r\nX-T: 1\n\r\n", want: http.StatusBadRequest},
		{name: "obs-fold in trailer", body: "0\r\nX-T: 1\r\n 2\r\n\r\n", want: http.StatusBadRequest},
		// net/http's own chunked reader refuses this one (too much
		// extension per data byte); the guard lets it through: the
		// client-error path does not depend on the guard.
		{name: "chunk extensions flood", body: strings.Repeat("1;"+strings.Repeat("e", 3000)+"\r\nx\r\n", 20), want: http.StatusBadRequest},
		{name: "client resets mid-body", body: "5\r\nhello\r\n", reset: true},
	}
	for _, node := range []string{"node A", "node B"} {
		h := startProxy(t, tbl, Options{}, ListenerConfig{})
		for _, tt := range tests {
			t.Run(node+"/"+tt.name, func(t *testing.T) {
				marker := strings.ReplaceAll(node+tt.name, " ", "-")
				for i := range 4 {
					c := h.dialRaw(t)
					if _, err := io.WriteString(c, head(fmt.Sprint(marker, i))+tt.body); err != nil {
						t.Fatal(err)
					}
					if tt.reset {
						// The proxy must have the request before the reset:
						// wait for member 2 to see it, then reset.
						waitFor(t, 5*time.Second, "the request in flight to 2", func() bool { return h.srv.InFlight("backend", "2") == 1 })
						c.(*net.TCPConn).SetLinger(0)
						c.Close()
						h.logLine(t, fmt.Sprint(marker, i))
						continue
					}
					br := bufio.NewReader(c)
					r := readAnswer(t, br, http.MethodPost)
					if r.status != tt.want || r.server() != "" {
						t.Fatalf("attack %d: got %v, want %d from the balancer", i, r, tt.want)
					}
					wantClosed(t, br)
				}
				if got := h.obs.calls(); len(got) != 0 {
					t.Fatalf("the health Observer received %+v: a client's body was blamed on the member", got)
				}
				// Member 2 is not quarantined: its sessions stay, no new cookie.
				for range 3 {
					r := h.get(t, "/backend/x", "ROUTEID=.2")
					wantServer(t, r, "2")
					wantCookie(t, r, "")
				}
				if n := h.srv.InFlight("backend", "2"); n != 0 {
					t.Errorf("%d requests still counted in flight to 2", n)
				}
			})
		}
	}
}

// readAll is a member that reads the whole request body before it
// answers, as GWE's servlets do: the retry copy of a body must live until
// the answer. It answers its name, as gwedemo does.
type readAll struct {
	url       string
	received  atomic.Int64 // body bytes, all requests
	inHandler atomic.Int64 // requests being read
	maxHeld   atomic.Int64 // the longest a request held the upstream connection, in ns
}

func readAllMember(t testing.TB, name string) *readAll {
	t.Helper()
	m := &readAll{}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		m.inHandler.Add(1)
		defer func() {
			m.inHandler.Add(-1)
			held := int64(time.Since(start))
			for old := m.maxHeld.Load(); held > old && !m.maxHeld.CompareAndSwap(old, held); old = m.maxHeld.Load() {
			}
		}()
		buf := make([]byte, 32<<10)
		for {
			n, err := r.Body.Read(buf)
			m.received.Add(int64(n))
			if err != nil {
				break
			}
		}
		w.Header().Set(gwedemo.HeaderServer, name)
		io.WriteString(w, name+"\n")
	}))
	t.Cleanup(ts.Close)
	m.url = ts.URL
	return m
}

// Attack: 100 concurrent POSTs of 1 MiB + 1 byte, the last byte held back.
// Before: every body was kept whole for a retry with no global budget (RSS
// 21 -> 198 MB). Now: bodies are kept only while limits.retry_buffer_total
// allows; the rest are forwarded without a retry copy, and all are answered.
func TestAttackRetryBufferBudget(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 100 MiB")
	}
	const (
		conns = 100
		size  = 1<<20 + 1
	)
	member := readAllMember(t, "1")
	spec := fsm.PoolSpec{Name: "backend", Prefix: "/backend", Sticky: fsm.StickySpec{Cookie: "ROUTEID", Insert: true},
		Members: []fsm.MemberSpec{{Route: "1", URL: member.url}}}
	h := startProxy(t, mustTable(t, spec), Options{}, ListenerConfig{}) // defaults: 1 MiB per body, 64 MiB in all
	const budget = 64 << 20

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	body := bytes.Repeat([]byte("dom-mutation;"), size/13+1)[:size]
	held := make([]net.Conn, conns)
	var wg sync.WaitGroup
	for i := range held {
		c := h.dialRaw(t)
		held[i] = c
		wg.Go(func() {
			fmt.Fprintf(c, "POST /backend/upload HTTP/1.1\r\nHost: gwe\r\nContent-Length: %d\r\n\r\n", size)
			if _, err := c.Write(body[:size-1]); err != nil {
				t.Errorf("write body: %v", err)
			}
		})
	}
	wg.Wait()
	waitFor(t, 60*time.Second, "every body but its last byte at the member", func() bool { return member.received.Load() == conns*(size-1) })

	inUse, peak := h.srv.RetryBuffered()
	runtime.GC()
	var during runtime.MemStats
	runtime.ReadMemStats(&during)
	growth := int64(during.HeapInuse) - int64(before.HeapInuse)
	t.Logf("retry copies: %d MiB in use, peak %d MiB (budget %d MiB); live heap grew %d MiB", inUse>>20, peak>>20, budget>>20, growth>>20)
	if inUse > budget || peak > budget {
		t.Fatalf("retry copies hold %d bytes (peak %d), over the %d-byte budget", inUse, peak, budget)
	}
	if inUse < budget-2<<20 {
		t.Errorf("retry copies hold %d bytes: the budget (%d) should be full with 100 bodies waiting", inUse, budget)
	}
	// What the proxy holds in all, not only what it counts: the budget plus
	// buffers per connection, far from 100 whole bodies.
	if growth > budget+32<<20 {
		t.Errorf("live heap grew by %d MiB with 100 bodies held, want at most the %d MiB budget plus 32 MiB", growth>>20, budget>>20)
	}

	// The last bytes: every request is answered, kept or not.
	for _, c := range held {
		wg.Go(func() {
			if _, err := c.Write(body[size-1:]); err != nil {
				t.Errorf("write last byte: %v", err)
				return
			}
			if r := readAnswer(t, bufio.NewReader(c), http.MethodPost); r.status != http.StatusOK || r.body != "1\n" {
				t.Errorf("got %v, want 200 from the member", r)
			}
		})
	}
	wg.Wait()
	waitFor(t, 10*time.Second, "the retry budget back to zero", func() bool { inUse, _ := h.srv.RetryBuffered(); return inUse == 0 })
}

// A body copy is given back as soon as the member answers: a member that
// answers before the body is complete (GWE's echo) holds no budget.
func TestRetryCopyGivenBackOnAnswer(t *testing.T) {
	back := startMembers(t, "/backend", "1")
	h := startProxy(t, mustTable(t, backendPool(back)), Options{}, ListenerConfig{})
	c := h.dialRaw(t)
	fmt.Fprintf(c, "POST /backend/echo HTTP/1.1\r\nHost: gwe\r\nContent-Length: %d\r\n\r\n%s", 200<<10, bytes.Repeat([]byte("a"), 100<<10))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodPost})
	if err != nil {
		t.Fatal(err)
	}
	// The echo answered with half the body still to come.
	waitFor(t, 5*time.Second, "the copy given back", func() bool { inUse, _ := h.srv.RetryBuffered(); return inUse == 0 })
	if _, err := c.Write(bytes.Repeat([]byte("b"), 100<<10)); err != nil {
		t.Fatal(err)
	}
	if n, err := io.Copy(io.Discard, resp.Body); err != nil || n != 200<<10 {
		t.Fatalf("echo: %d bytes, %v", n, err)
	}
}

// Attack: connections sending a body at 1 byte / 5 s. Before: 100 upstream
// connections to one member were held for 40 s. Now: after the body read
// timeout (plus one second per body_min_rate bytes received) the client
// gets 408, its connection is closed and the upstream connection released;
// the member is not blamed. A body that keeps the minimum rate goes through.
func TestAttackSlowBody(t *testing.T) {
	const grace = 300 * time.Millisecond
	tests := []struct {
		name  string
		conns int
		// chunk bytes every interval, count times; then the client waits.
		chunk, count int
		every        time.Duration
		finish       bool // the client then completes its body
		want         int
	}{
		{name: "1 byte then silence, 100 connections", conns: 100, chunk: 1, count: 1, want: http.StatusRequestTimeout},
		{name: "1 byte every 100ms", conns: 10, chunk: 1, count: 100, every: 100 * time.Millisecond, want: http.StatusRequestTimeout},
		{name: "steady 2 KB/s for 1.2s", conns: 10, chunk: 200, count: 12, every: 100 * time.Millisecond, finish: true, want: http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			member := readAllMember(t, "1")
			spec := fsm.PoolSpec{Name: "backend", Prefix: "/backend", Sticky: fsm.StickySpec{Cookie: "ROUTEID", Insert: true},
				Members: []fsm.MemberSpec{{Route: "1", URL: member.url}}}
			h := startProxy(t, mustTable(t, spec), Options{BodyReadTimeout: grace, BodyMinRate: 1000}, ListenerConfig{})
			total := tt.chunk * tt.count
			if !tt.finish {
				total += 1000 // never all sent
			}
			start := time.Now()
			var wg sync.WaitGroup
			for range tt.conns {
				c := h.dialRaw(t)
				wg.Go(func() {
					fmt.Fprintf(c, "POST /backend/upload HTTP/1.1\r\nHost: gwe\r\nCookie: ROUTEID=.1\r\nContent-Length: %d\r\n\r\n", total)
					br := bufio.NewReader(c)
					answered := make(chan result, 1)
					go func() { answered <- readAnswer(t, br, http.MethodPost) }()
					tick := time.NewTicker(max(tt.every, time.Millisecond))
					defer tick.Stop()
				send:
					for i := range tt.count {
						if _, err := c.Write(bytes.Repeat([]byte("x"), tt.chunk)); err != nil {
							break // the proxy gave up on us: the answer says why
						}
						if i == tt.count-1 {
							break
						}
						select {
						case <-tick.C:
						case r := <-answered:
							answered <- r
							break send
						}
					}
					r := <-answered
					if r.status != tt.want {
						t.Errorf("got %v, want %d", r, tt.want)
						return
					}
					if tt.want == http.StatusRequestTimeout {
						wantClosed(t, br)
					}
				})
			}
			wg.Wait()
			took := time.Since(start)
			waitFor(t, 5*time.Second, "every upstream request released", func() bool { return member.inHandler.Load() == 0 })
			held := time.Duration(member.maxHeld.Load())
			t.Logf("%d connections answered within %v; each upstream connection held at most %v", tt.conns, took.Round(time.Millisecond), held.Round(time.Millisecond))
			// What the attack held: the upstream connection, from the head
			// reaching the member to the member seeing it closed.
			if tt.want == http.StatusRequestTimeout && held > grace+time.Second {
				t.Errorf("an upstream connection was held %v, want about the %v body timeout", held, grace)
			}
			if got := h.obs.calls(); len(got) != 0 {
				t.Errorf("the health Observer received %+v: a slow client was blamed on the member", got)
			}
			wantServer(t, h.get(t, "/backend/x", "ROUTEID=.1"), "1")
		})
	}
}

// Attack: paths a member resolves into another pool than the one the
// listener matched (listeners[].pools bypassed). Now: 400 before any pool is
// chosen, and no member sees them.
func TestAttackPaths(t *testing.T) {
	s := startSeed(t, Options{}, ListenerConfig{Pools: []string{"backend"}})
	targets := []string{
		"/backend/../frontend/x",
		"/backend/%2e%2e/frontend/x",
		"/backend/%2E%2E/frontend/x",
		"/backend/.%2e/frontend/x",
		"/backend/..%2ffrontend/x",
		"/backend/..%2Ffrontend/x",
		"/backend/..;/frontend/x",
		"/backend/..;jsessionid=1/frontend/x",
		"/backend/./x",
		"/backend/x/.",
		"/backend/x/..",
		"/backend/x/..?alias=.GWE_F_1",
		"/backend/..\\frontend\\x",
		"/backend/..%5cfrontend/x",
		"/backend/..%5Cfrontend/x",
		"/backend/a%2fb",
		"/backend/%2e",
		"/backend/x%2ejs",
		"http://gwe/backend/../frontend/x",
		"http://gwe/backend/%2e%2e/frontend/x",
	}
	before := memberRequests(s.front, s.back)
	for _, target := range targets {
		t.Run(target, func(t *testing.T) {
			r := s.rawGet(t, target)
			if r.status != http.StatusBadRequest || r.server() != "" {
				t.Fatalf("got %v, want 400 from the balancer", r)
			}
		})
	}
	if n := memberRequests(s.front, s.back) - before; n != 0 {
		t.Errorf("members saw %d of the refused requests", n)
	}
	// Ordinary GWE paths, dots and all, still pass.
	for _, target := range []string{"/backend/cometd/connect", "/backend/resources/js/track.min.js", "/backend/..x/.y/a..b"} {
		if r := s.rawGet(t, target); r.status != http.StatusOK || r.server() == "" {
			t.Errorf("%s: got %v, want 200 from a member", target, r)
		}
	}
}

// Attack: Upgrade: h2c with HTTP2-Settings (h2c smuggling), and any other
// upgrade token. Before: tunnelled to the member. Now: only WebSocket is
// tunnelled; other upgrades reach the member as plain requests without
// Upgrade or HTTP2-Settings, and the connection closes after the answer.
func TestAttackUpgradeOnlyWebSocket(t *testing.T) {
	got := make(chan http.Header, 1)
	// A member that would switch to h2c (or anything) if asked.
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Clone()
		if p := r.Header.Get("Upgrade"); p != "" {
			w.Header().Set("Upgrade", p)
			w.Header().Set("Connection", "Upgrade")
			w.WriteHeader(http.StatusSwitchingProtocols)
			return
		}
		io.WriteString(w, "plain\n")
	}))
	t.Cleanup(up.Close)
	h := startProxy(t, mustTable(t, fsm.PoolSpec{Name: "backend", Prefix: "/backend", Sticky: fsm.StickySpec{Cookie: "ROUTEID"},
		Members: []fsm.MemberSpec{{Route: "1", URL: up.URL}}}), Options{}, ListenerConfig{})
	tests := []struct {
		name  string
		lines []string
	}{
		{"h2c", []string{"Upgrade: h2c", "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA", "Connection: Upgrade, HTTP2-Settings"}},
		{"h2c without naming the settings", []string{"Upgrade: h2c", "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA", "Connection: Upgrade"}},
		{"websocket and h2c", []string{"Upgrade: websocket, h2c", "Connection: Upgrade"}},
		{"h2c then websocket", []string{"Upgrade: h2c", "Upgrade: websocket", "Connection: Upgrade"}},
		{"other token", []string{"Upgrade: TLS/1.2", "Connection: Upgrade"}},
		{"websocket over POST", []string{"Upgrade: websocket", "Connection: Upgrade"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := http.MethodGet
			if strings.Contains(tt.name, "POST") {
				method = http.MethodPost
			}
			c := h.dialRaw(t)
			fmt.Fprintf(c, "%s /backend/x HTTP/1.1\r\nHost: gwe\r\nContent-Length: 0\r\n%s\r\n\r\n", method, strings.Join(tt.lines, "\r\n"))
			br := bufio.NewReader(c)
			r := readAnswer(t, br, method)
			if r.status != http.StatusOK || r.body != "plain\n" {
				t.Fatalf("got %v, want the member's plain 200", r)
			}
			hdr := <-got
			for _, k := range []string{"Upgrade", "Http2-Settings"} {
				if v, ok := hdr[k]; ok {
					t.Errorf("member got %s: %q", k, v)
				}
			}
			wantClosed(t, br) // Connection: close, which ReadResponse removes from the header

		})
	}
}

// Attack: CONNECT and TRACE were forwarded. Now: 405 from the balancer.
func TestAttackMethods(t *testing.T) {
	s := startSeed(t, Options{}, ListenerConfig{})
	before := memberRequests(s.front, s.back)
	for _, req := range []string{
		"CONNECT gwe.example.com:443 HTTP/1.1\r\nHost: gwe.example.com:443\r\n\r\n",
		"CONNECT /backend/x HTTP/1.1\r\nHost: gwe\r\nCookie: ROUTEID=.2\r\n\r\n",
		"TRACE /backend/x HTTP/1.1\r\nHost: gwe\r\nCookie: ROUTEID=.2\r\n\r\n",
		"TRACE /frontend/x?alias=.GWE_F_1 HTTP/1.1\r\nHost: gwe\r\n\r\n",
	} {
		t.Run(strings.Fields(req)[0]+" "+strings.Fields(req)[1], func(t *testing.T) {
			r := s.raw(t, req)
			if r.status != http.StatusMethodNotAllowed || r.server() != "" || r.header.Get("Allow") == "" {
				t.Fatalf("got %v (Allow %q), want 405 from the balancer with Allow", r, r.header.Get("Allow"))
			}
		})
	}
	if n := memberRequests(s.front, s.back) - before; n != 0 {
		t.Errorf("members saw %d CONNECT/TRACE requests", n)
	}
}

// Attack: ambiguous framing (Content-Length with Transfer-Encoding, obs-fold,
// bare LF line endings, and their relatives) was accepted and forwarded.
// Now: 400 and the connection closed, as HAProxy does; no member sees the
// request, nor what was smuggled behind it.
func TestAttackAmbiguousFraming(t *testing.T) {
	s := startSeed(t, Options{}, ListenerConfig{})
	const smuggled = "GET /frontend/smuggled?alias=.GWE_F_1 HTTP/1.1\r\nHost: gwe\r\n\r\n"
	tests := []struct{ name, req string }{
		{"CL and TE", "POST /backend/echo HTTP/1.1\r\nHost: gwe\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled},
		{"TE and CL", "POST /backend/echo HTTP/1.1\r\nHost: gwe\r\nTransfer-Encoding: chunked\r\nContent-Length: 60\r\n\r\n0\r\n\r\n" + smuggled},
		{"CL and TE, odd case", "POST /backend/echo HTTP/1.1\r\nHost: gwe\r\ncontent-length: 4\r\ntransfer-ENCODING: Chunked\r\n\r\n0\r\n\r\n" + smuggled},
		{"TE on HTTP/1.0", "POST /backend/echo HTTP/1.0\r\nHost: gwe\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled},
		{"two TE lines", "POST /backend/echo HTTP/1.1\r\nHost: gwe\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
		{"TE not chunked", "POST /backend/echo HTTP/1.1\r\nHost: gwe\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"},
		{"two CL values", "POST /backend/echo HTTP/1.1\r\nHost: gwe\r\nContent-Length: 0\r\nContent-Length: 61\r\n\r\n" + smuggled},
		{"CL with sign", "POST /backend/echo HTTP/1.1\r\nHost: gwe\r\nContent-Length: +0\r\n\r\n" + smuggled},
		{"CL list", "POST /backend/echo HTTP/1.1\r\nHost: gwe\r\nContent-Length: 0, 0\r\n\r\n" + smuggled},
		{"obs-fold", "GET /backend/x HTTP/1.1\r\nHost: gwe\r\nX-Folded: a\r\n b\r\n\r\n"},
		{"obs-fold with tab", "GET /backend/x HTTP/1.1\r\nHost: gwe\r\nCookie: a=1\r\n\tROUTEID=.2\r\n\r\n"},
		{"obs-fold hiding TE", "POST /backend/echo HTTP/1.1\r\nHost: gwe\r\nContent-Length: 4\r\nX: y\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled},
		{"bare LF after the request line", "GET /backend/x HTTP/1.1\nHost: gwe\r\n\r\n"},
		{"bare LF after a header", "GET /backend/x HTTP/1.1\r\nHost: gwe\nCookie: ROUTEID=.2\r\n\r\n"},
		{"bare LF ending the head", "GET /backend/x HTTP/1.1\r\nHost: gwe\r\n\n"},
		{"bare LF everywhere", "GET /backend/x HTTP/1.1\nHost: gwe\n\n"},
		{"valid request then a smuggling one", "GET /backend/x HTTP/1.1\r\nHost: gwe\r\n\r\nGET /backend/y HTTP/1.1\r\nHost: gwe\r\nX: a\r\n b\r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := memberRequests(s.front, s.back)
			c := s.dialRaw(t)
			if _, err := io.WriteString(c, tt.req); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(c)
			r := readAnswer(t, br, http.MethodGet)
			seen := int64(0)
			if strings.HasPrefix(tt.name, "valid request") {
				// The first, well-formed request may be answered; the
				// second one must not be.
				if r.status != http.StatusOK {
					t.Fatalf("first request: %v, want 200", r)
				}
				seen = 1
				r = readAnswer(t, br, http.MethodGet)
			}
			if r.status != http.StatusBadRequest || r.server() != "" {
				t.Fatalf("got %v, want 400 from the balancer", r)
			}
			wantClosed(t, br)
			if n := memberRequests(s.front, s.back) - before; n != seen {
				t.Errorf("members saw %d requests, want %d", n, seen)
			}
		})
	}
}

// The guard follows keep-alive and pipelined requests of every framing:
// well-formed requests on one connection, sent at once and byte by byte,
// are all answered in order.
func TestGuardKeepsPipelinesInSync(t *testing.T) {
	s := startSeed(t, Options{}, ListenerConfig{})
	reqs := []struct {
		method, raw, want string
	}{
		{"GET", "GET /backend/x HTTP/1.1\r\nHost: gwe\r\nCookie: ROUTEID=.1\r\n\r\n", "1\n"},
		{"POST", "POST /backend/echo HTTP/1.1\r\nHost: gwe\r\nContent-Length: 11\r\nCookie: ROUTEID=.2\r\n\r\nhello world", "hello world"},
		{"POST", "POST /backend/echo HTTP/1.1\r\nHost: gwe\r\nTransfer-Encoding: chunked\r\nCookie: ROUTEID=.3\r\n\r\n5;ext=\"a b\"\r\nhello\r\n6 \r\n world\r\n0\r\nX-Trailer: yes\r\n\r\n", "hello world"},
		{"POST", "POST /backend/echo HTTP/1.1\r\nHost: gwe\r\ncontent-length:  5 \r\nContent-Length: 5\r\nCookie: ROUTEID=.1\r\n\r\nGET /", "GET /"},
		{"HEAD", "HEAD /frontend/x?alias=.GWE_F_2 HTTP/1.1\r\nHost: gwe\r\n\r\n", ""},
		{"GET", "GET /frontend/x HTTP/1.1\r\nHost: gwe\r\nUpgrade-Insecure-Requests: 1\r\nX-Long: " + strings.Repeat("v", 3*lineKeep) + "\r\nCookie: FRONTEND_ROUTEID=.GWE_F_3\r\n\r\n", "GWE_F_3\n"},
		{"POST", "POST /backend/echo HTTP/1.1\r\nHost: gwe\r\nTransfer-Encoding: chunked\r\nCookie: ROUTEID=.2\r\n\r\n0\r\n\r\n", ""},
		{"GET", "GET /backend/x HTTP/1.0\r\nHost: gwe\r\nConnection: keep-alive\r\nCookie: ROUTEID=.2\r\n\r\n", "2\n"},
	}
	var all strings.Builder
	for _, r := range reqs {
		all.WriteString(r.raw)
	}
	for _, mode := range []string{"at once", "byte by byte"} {
		t.Run(mode, func(t *testing.T) {
			c := s.dialRaw(t)
			c.(*net.TCPConn).SetNoDelay(true)
			go func() {
				if mode == "at once" {
					io.WriteString(c, all.String())
					return
				}
				for i := 0; i < all.Len(); i++ {
					if _, err := io.WriteString(c, all.String()[i:i+1]); err != nil {
						return
					}
				}
			}()
			br := bufio.NewReader(c)
			for i, want := range reqs {
				r := readAnswer(t, br, want.method)
				if r.status != http.StatusOK || r.body != want.want {
					t.Fatalf("request %d (%s): got %v, want 200 %q", i, want.raw[:20], r, want.want)
				}
			}
		})
	}
}

// Attack: hostile values in every field of the access log. Each request
// stays one line of the documented shape, whatever the client or the
// configuration holds.
func TestAttackAccessLogOneLinePerRequest(t *testing.T) {
	s := startSeed(t, Options{}, ListenerConfig{})
	hostile := [][]string{
		{"/backend/x?m=1", `User-Agent: a" route=9 upstream=evil "`, `Referer: "\"`},
		{"/backend/x?m=2%0D%0A127.0.0.1%20-%20-", "Cookie: ROUTEID=\".2\\\"\"; x=\""},
		{"/backend/\xff\xfe\"x?m=3", "User-Agent: \xc3\x28\xa0\xa1", "Cookie: ROUTEID=.2\xff"},
		{"/frontend/x?alias=%22%0A.GWE_F_1&m=4", "Referer: \t\t"},
		{"/nowhere?m=5\"", "User-Agent: \\\\\\"},
	}
	before := len(s.log.lines())
	for _, h := range hostile {
		s.raw(t, "GET "+h[0]+" HTTP/1.1\r\nHost: gwe\r\nConnection: close\r\n"+strings.Join(h[1:], "\r\n")+"\r\n\r\n")
	}
	waitFor(t, 5*time.Second, "the access log lines", func() bool { return len(s.log.lines()) >= before+len(hostile) })
	shape := regexp.MustCompile(`^[0-9.:]+ - - \[[^\]]+\] "(?:[^"\\]|\\.)*" \d{3} \d+ "(?:[^"\\]|\\.)*" "(?:[^"\\]|\\.)*"( pool=[!#-\[\]-~]+)? alias="(?:[^"\\]|\\.)*" cookie="(?:[^"\\]|\\.)*" route=[!#-\[\]-~]+ retried_from=[!#-\[\]-~]+ upstream=[!#-\[\]-~]+ upstream_time=[0-9.]+ time=[0-9.]+ node=[!#-\[\]-~]+$`)
	lines := s.log.lines()[before:]
	for _, l := range lines {
		if !shape.MatchString(l) {
			t.Errorf("access log line does not have the documented shape: %q", l)
		}
	}
	if len(lines) != len(hostile) {
		t.Errorf("%d requests wrote %d lines: %q", len(hostile), len(lines), lines)
	}

	// Fields from the configuration: the validator refuses such names,
	// but the log escapes them anyway.
	var buf syncBuffer
	l := newAccessLogger(&buf, AccessLogCombined, "n1\n127.0.0.1 - -")
	pv := &poolView{spec: fsm.PoolSpec{Name: "pool\n127.0.0.1 - - [forged]"}, members: []*memberState{{route: "r\" x=\"1", host: "h\r\nx"}}}
	req := httptest.NewRequest(http.MethodGet, "/backend/x", nil)
	l.log(entryOf(req, 200, 0), &reqState{pv: pv, member: 0, retriedFrom: "f\n"}, time.Now())
	got := buf.String()
	if strings.Count(got, "\n") != 1 || !strings.HasSuffix(got, "\n") {
		t.Fatalf("one request wrote %q", got)
	}
	for _, want := range []string{` pool="pool\n127.0.0.1 - - [forged]" `, ` route="r\" x=\"1" `, ` retried_from="f\n" `, ` upstream="h\r\nx" `, ` node="n1\n127.0.0.1 - -"`} {
		if !strings.Contains(got, want) {
			t.Errorf("log line %q lacks %q", got, want)
		}
	}
}

// limits.max_conns: beyond it, a new connection waits until one closes.
func TestMaxConns(t *testing.T) {
	back := startMembers(t, "/backend", "1")
	h := startProxy(t, mustTable(t, backendPool(back)), Options{}, ListenerConfig{MaxConns: 2})
	get := "GET /backend/x HTTP/1.1\r\nHost: gwe\r\n\r\n"
	var open []net.Conn
	for range 2 {
		c := h.dialRaw(t)
		io.WriteString(c, get)
		if r := readAnswer(t, bufio.NewReader(c), http.MethodGet); r.status != http.StatusOK {
			t.Fatalf("got %v", r)
		}
		open = append(open, c)
	}
	third := h.dialRaw(t) // the kernel accepts it; the proxy does not yet
	io.WriteString(third, get)
	br := bufio.NewReader(third)
	third.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := br.Peek(1); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a third connection over max_conns 2 was served: %v", err)
	}
	third.SetReadDeadline(time.Now().Add(10 * time.Second))
	open[0].Close()
	if r := readAnswer(t, br, http.MethodGet); r.status != http.StatusOK {
		t.Fatalf("third connection after one closed: got %v", r)
	}
}

// The guard and the body reader must not break what worked: a refused
// request is closed with a FIN after the answer, never a reset (the
// client must be able to read the 400), even when it keeps sending.
func TestRefusedConnectionLingers(t *testing.T) {
	s := startSeed(t, Options{}, ListenerConfig{})
	c := s.dialRaw(t)
	io.WriteString(c, "GET /backend/x HTTP/1.1\r\nHost: gwe\nX: 1\r\n\r\n")
	// More bytes the proxy never reads.
	go c.Write(bytes.Repeat([]byte("y"), 64<<10))
	br := bufio.NewReader(c)
	r := readAnswer(t, br, http.MethodGet)
	if r.status != http.StatusBadRequest {
		t.Fatalf("got %v, want 400", r)
	}
	if _, err := io.Copy(io.Discard, br); err != nil && errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("connection reset after the 400: %v", err)
	}
}

// The client-visible answers the body path can give never include the
// member's name: a malformed body is the balancer's 400 even when the
// member had already answered part of the request.
func TestMalformedBodyAfterMemberAnswered(t *testing.T) {
	back := startMembers(t, "/backend", "1")
	h := startProxy(t, mustTable(t, backendPool(back)), Options{}, ListenerConfig{})
	c := h.dialRaw(t)
	// gwedemo's echo answers once it has 4 KiB to send; then the body
	// goes bad.
	io.WriteString(c, "POST /backend/echo HTTP/1.1\r\nHost: gwe\r\nTransfer-Encoding: chunked\r\n\r\n2000\r\n"+strings.Repeat("e", 0x2000)+"\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodPost})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Header.Get(gwedemo.HeaderServer) != "1" {
		t.Fatalf("echo from %q", resp.Header.Get(gwedemo.HeaderServer))
	}
	io.WriteString(c, "zz\r\n")
	// The answer is cut off: the connection closes, nothing else.
	io.Copy(io.Discard, resp.Body)
	wantClosed(t, br)
	if got := h.obs.calls(); len(got) != 0 {
		t.Errorf("the Observer received %+v", got)
	}
	wantServer(t, h.get(t, "/backend/x", "ROUTEID=.1"), "1")
}

// panicLog records the messages of the proxy's logger that report a
// handler panic (net/http recovers it, logs it through the listener's
// error log, which is the proxy's logger, and closes the connection).
type panicLog struct {
	mu  sync.Mutex
	got []string
}

func (l *panicLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *panicLog) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *panicLog) WithGroup(string) slog.Handler            { return l }
func (l *panicLog) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "panic") {
		l.mu.Lock()
		l.got = append(l.got, r.Message)
		l.mu.Unlock()
	}
	return nil
}

func (l *panicLog) panics() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.got)
}

// take returns the panics logged since the last take and forgets them
// (one fuzz input at a time).
func (l *panicLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.got
	l.got = nil
	return p
}

// A request answered before its body was all read: what the client sends
// after is never read as a request, the connection closes after the
// answer, and nothing waits for the rest of the body. (Found by
// FuzzRequestHead: net/http's drain after the handler hit EOF, started its
// background read and panicked on the next keep-alive read, golang/go#68560.)
func TestAnsweredBeforeBodyRead(t *testing.T) {
	back := startMembers(t, "/backend", "1")
	// Member 2 answers at once, before reading the body (full duplex).
	early := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.NewResponseController(w).EnableFullDuplex()
		w.Header().Set(gwedemo.HeaderServer, "2")
		io.WriteString(w, "2\n")
	}))
	t.Cleanup(early.Close)
	spec := backendPool(back)
	spec.Members = append(spec.Members, fsm.MemberSpec{Route: "2", URL: early.URL})
	tbl := mustTable(t, spec)
	const smuggled = "GET /backend/smuggled HTTP/1.1\r\nHost: gwe\r\nCookie: ROUTEID=.1\r\n\r\n"
	tests := []struct {
		name string
		head string // sent first
		// later is sent once the answer has arrived; "" sends nothing.
		later string
		want  int
	}{
		{"100-continue, body never sent, member does not read it", "POST /backend/x HTTP/1.1\r\nHost: gwe\r\nCookie: ROUTEID=.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n", "", http.StatusOK},
		{"odd method, 100-continue, no body", "0 /backend/ HTTP/1.1\r\nHost:\r\nCookie: ROUTEID=.1\r\nEXpeCt:100-Continue\r\nContent-Length:1\r\n\r\n", "", http.StatusOK},
		{"member answers first, the body brings a request", fmt.Sprintf("POST /backend/x HTTP/1.1\r\nHost: gwe\r\nCookie: ROUTEID=.2\r\nContent-Length: %d\r\n\r\n", len(smuggled)), smuggled, http.StatusOK},
		{"member answers first, 100-continue", "POST /backend/x HTTP/1.1\r\nHost: gwe\r\nCookie: ROUTEID=.2\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n", "", http.StatusOK},
		{"404 before the body, which never comes", "POST /nowhere HTTP/1.1\r\nHost: gwe\r\nContent-Length: 100000\r\n\r\n", "", http.StatusNotFound},
		{"404 with a request in its body", fmt.Sprintf("POST /nowhere HTTP/1.1\r\nHost: gwe\r\nContent-Length: %d\r\n\r\n%s", len(smuggled), smuggled), "", http.StatusNotFound},
		{"400 path with a request in its body", fmt.Sprintf("POST /backend/../x HTTP/1.1\r\nHost: gwe\r\nContent-Length: %d\r\n\r\n%s", len(smuggled), smuggled), "", http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logs := &panicLog{}
			h := startProxy(t, tbl, Options{Logger: slog.New(logs)}, ListenerConfig{})
			for range 10 { // the panic was a race: try it often
				before := back[0].demo.Requests()
				c := h.dialRaw(t)
				io.WriteString(c, tt.head)
				br := bufio.NewReader(c)
				r := readAnswer(t, br, http.MethodPost)
				if r.status != tt.want {
					t.Fatalf("got %v, want %d", r, tt.want)
				}
				io.WriteString(c, tt.later) // may fail: the proxy may have closed already
				wantClosed(t, br)
				if n := back[0].demo.Requests() - before; n > 1 || (!strings.Contains(tt.head, ".1\r\n") && n != 0) {
					t.Fatalf("the member served %d requests: the body was read as a request", n)
				}
			}
			if p := logs.panics(); len(p) > 0 {
				t.Fatalf("the proxy panicked: %s", p)
			}
		})
	}
	// Bodies read to their end keep the connection: GWE's POSTs reuse it.
	h := startProxy(t, mustTable(t, backendPool(back)), Options{}, ListenerConfig{})
	c := h.dialRaw(t)
	br := bufio.NewReader(c)
	for i := range 3 {
		io.WriteString(c, "POST /backend/echo HTTP/1.1\r\nHost: gwe\r\nContent-Length: 5\r\n\r\nhello")
		if r := readAnswer(t, br, http.MethodPost); r.status != http.StatusOK || r.body != "hello" {
			t.Fatalf("request %d on one connection: %v", i, r)
		}
	}
}
