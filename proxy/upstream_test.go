package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gwelb/gwelb/fsm"
)

// hangUpWhenIdle is a member that answers each request on a keep-alive
// connection and closes the connection as soon as it is idle: every
// connection the proxy keeps for later is dead when it is taken (what a
// member's idle timeout does). It reads bodies by Content-Length and
// echoes them; hungUp counts the connections it has closed.
func hangUpWhenIdle(t *testing.T) (url string, hungUp *atomic.Int64) {
	t.Helper()
	hungUp = new(atomic.Int64)
	url = tcpMember(t, func(c net.Conn) {
		defer func() {
			// Counted once closed: on loopback the FIN is in the
			// proxy's socket when Close returns.
			c.Close()
			hungUp.Add(1)
		}()
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		body, _ := io.ReadAll(req.Body)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nX-GWE-Server: 1\r\nContent-Length: "+strconv.Itoa(len(body)+2)+"\r\n\r\n1\n")
		c.Write(body)
	})
	return url, hungUp
}

// A warm connection the member closed while it sat in the pool is not the
// member's failure: the request goes again on a new connection (body
// included), the member is neither quarantined nor reported, and the
// session stays.
func TestStalePooledConnectionNotBlamed(t *testing.T) {
	url, hungUp := hangUpWhenIdle(t)
	h := startProxy(t, mustTable(t, fsm.PoolSpec{Name: "backend", Prefix: "/backend", Sticky: fsm.StickySpec{Cookie: "ROUTEID", Insert: true},
		Members: []fsm.MemberSpec{{Route: "1", URL: url}}}), Options{}, ListenerConfig{})
	body := bytes.Repeat([]byte("b"), 10<<10)
	for i := range 6 {
		var r result
		if i%2 == 0 {
			r = h.get(t, "/backend/x", "ROUTEID=.1")
		} else {
			r = h.do(t, http.MethodPost, "/backend/echo", http.Header{"Cookie": {"ROUTEID=.1"}}, bytes.NewReader(body))
		}
		if r.status != http.StatusOK || r.server() != "1" {
			t.Fatalf("request %d: %v", i, r)
		}
		if i%2 == 1 && r.body != "1\n"+string(body) {
			t.Fatalf("request %d: the body did not reach the member whole (%d bytes back)", i, len(r.body))
		}
		wantCookie(t, r, "")
		// The member has closed the now idle connection: the next request
		// meets a pooled connection its member closed.
		waitFor(t, 5*time.Second, "the member to hang up", func() bool { return hungUp.Load() >= int64(i+1) })
	}
	if got := h.obs.calls(); len(got) != 0 {
		t.Errorf("the Observer received %+v: a connection closed while idle was blamed on the member", got)
	}
	if !h.srv.QuarantinedUntil("backend", "1").IsZero() {
		t.Error("the member was quarantined")
	}
}

// halfCloseWhenIdle is a member that answers the first request on a
// connection, then half-closes it (its FIN reaches the proxy's pooled
// connection) and keeps reading: the next request that arrives on it is
// read, counted in swallowed and left unanswered, and the connection is
// closed with nothing unread, so the proxy's socket gets no reset, no
// answer, nothing after the FIN it already holds. (Jetty, GWE's server,
// half-closes idle connections this way.)
func halfCloseWhenIdle(t *testing.T) (url string, halfClosed, swallowed *atomic.Int64) {
	t.Helper()
	halfClosed, swallowed = new(atomic.Int64), new(atomic.Int64)
	url = tcpMember(t, func(c net.Conn) {
		defer c.Close()
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nX-GWE-Server: 1\r\nContent-Length: 2\r\n\r\n1\n")
		if c.(*net.TCPConn).CloseWrite() != nil {
			return
		}
		halfClosed.Add(1)
		if _, err := http.ReadRequest(br); err == nil {
			swallowed.Add(1)
		}
	})
	return url, halfClosed, swallowed
}

// A request sent on a pooled connection whose member half-closed it and
// then swallowed the request is sent again on a new connection, not left
// waiting for an answer that cannot come until the response header
// timeout: the flush that sends it waits for the answer for awaitMax at
// most, and the read after it finds the FIN (await.go).
func TestHalfClosedPooledConnection(t *testing.T) {
	url, halfClosed, swallowed := halfCloseWhenIdle(t)
	h := startProxy(t, mustTable(t, fsm.PoolSpec{Name: "backend", Prefix: "/backend", Sticky: fsm.StickySpec{Cookie: "ROUTEID", Insert: true},
		Members: []fsm.MemberSpec{{Route: "1", URL: url}}}), Options{ResponseHeaderTimeout: 30 * time.Second}, ListenerConfig{})
	for i := range 3 {
		if i > 0 {
			// The member's FIN is in the pooled connection's socket.
			waitFor(t, 5*time.Second, "the member to half-close", func() bool { return halfClosed.Load() >= int64(i) })
		}
		done := make(chan result, 1)
		go func() { done <- h.get(t, "/backend/x", "ROUTEID=.1") }()
		select {
		case r := <-done:
			if r.status != http.StatusOK || r.server() != "1" {
				t.Fatalf("request %d: %v", i, r)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("request %d: no answer in 15 s: the request on the half-closed connection waits for the response header timeout", i)
		}
	}
	if swallowed.Load() == 0 {
		t.Error("no request met a half-closed connection: the test did not test")
	}
	if got := h.obs.calls(); len(got) != 0 {
		t.Errorf("the Observer received %+v: a half-closed pooled connection was blamed on the member", got)
	}
}
