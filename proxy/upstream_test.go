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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	hungUp = new(atomic.Int64)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
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
			}()
		}
	}()
	return "http://" + ln.Addr().String(), hungUp
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
