package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gwelb/gwelb/internal/gwedemo"
)

// Budgets of one FuzzRequestHead execution. Go's fuzzing worker treats a
// call that runs 10 s as a deadlock, so everything together stays well
// below that even on a busy machine.
const (
	headBudget      = 6 * time.Second // from the first byte sent until the proxy has answered and closed
	headMaxRequests = 4               // complete requests sent per execution: a pipelined pile of slow ones would outlast the budget
	headMaxInput    = 64 << 10        // more than the proxy reads before answering 431
	headMaxBody     = 1 << 20         // response body bytes read; the rest is cut off (gwedemo's /blob goes to 1 GiB)
)

// headSeeds are requests as browsers, GWE's JavaScript and scanners send
// them, and the ways they go wrong.
var headSeeds = []string{
	"GET /backend/x HTTP/1.1\r\nHost: gwelb\r\nCookie: ROUTEID=.2\r\n\r\n",
	"GET /frontend/x?alias=.GWE_F_2 HTTP/1.1\r\nHost: gwelb\r\nCookie: FRONTEND_ROUTEID=.GWE_F_1\r\n\r\n",
	// Sticky to the member that drops connections: retried on the fallback, body replayed.
	"POST /backend/echo HTTP/1.1\r\nHost: gwelb\r\nCookie: ROUTEID=.4\r\nContent-Length: 5\r\n\r\nhello",
	"POST /frontend/echo?alias=x.GWE_F_1 HTTP/1.1\r\nHost: gwelb\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n",
	"GET /backend/a HTTP/1.1\r\nHost: g\r\n\r\nHEAD /frontend/b HTTP/1.1\r\nHost: g\r\n\r\nGET /backend/c HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n",
	"GET /backend/ws HTTP/1.1\r\nHost: g\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nCookie: ROUTEID=.3\r\n\r\n",
	"GET /frontend/ws HTTP/1.1\r\nHost: g\r\nUpgrade: h2c, websocket\r\nConnection: keep-alive, Upgrade\r\n\r\n",
	"POST /backend/echo HTTP/1.1\r\nHost: g\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
	"GET http://elsewhere/backend/x HTTP/1.1\r\nHost: g\r\n\r\n",
	"OPTIONS * HTTP/1.1\r\nHost: g\r\n\r\n",
	"CONNECT /backend/x HTTP/1.1\r\nHost: g\r\n\r\n",
	"GET /backend/x HTTP/1.0\r\n\r\n",
	"POST /backend/echo HTTP/1.1\r\nHost: g\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /frontend/x HTTP/1.1\r\nHost: g\r\n\r\n",
	"GET /frontendX HTTP/1.1\r\nHost: g\r\n\r\n",
	"GET //backend/../backend/%20x;p?alias=%2e1&alias=.2#f HTTP/1.1\r\nHost: g\r\n\r\n",
	"GET /backend/x HTTP/1.1\r\nHost: g\r\nCookie: ROUTEID=\".3\"; ROUTEID=.1\r\nCookie: ROUTEID=\r\nX-Forwarded-For: 1.2.3.4\r\nForwarded: for=evil\r\nX-Forwarded-Host: evil\r\n\r\n",
	"GET /backend/x HTTP/1.1\r\nHost: g\r\nX-Big: " + strings.Repeat("a", 9000) + "\r\n\r\n",
	"POST /backend/echo HTTP/1.1\r\nHost: g\r\nContent-Length: 100\r\n\r\nabc",
	"GET /backend/slow?ms=50 HTTP/1.1\r\nHost: g\r\n\r\n",
	"GET /backend/blob?size=2000000 HTTP/1.1\r\nHost: g\r\n\r\n",
	"GET /_demo/health HTTP/1.1\r\nHost: g\r\n\r\n",
	"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
	"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
	// net/http's own 400 (no Host) has a body even for HEAD, closed by the close.
	"HEAD * HTTP/1.1\n\n0 * HTTP/0.0\n\n",
}

// FuzzRequestHead sends arbitrary bytes, as the request head (and maybe a
// body and more pipelined requests), over a real TCP connection to a real
// proxy in front of real demo GWE servers and one member that drops every
// connection. Whatever it sends, the proxy must never answer 500 itself,
// never panic, and answer every complete request or close the connection
// within the budget; once the client stops sending, it must close.
//
// One proxy serves every execution of a fuzzing process; each execution
// uses a fresh connection from a different loopback source address, so
// that a long run does not exhaust ephemeral ports with TIME_WAIT.
func FuzzRequestHead(f *testing.F) {
	for _, s := range headSeeds {
		f.Add([]byte(s))
	}
	front := startMembers(f, "/frontend", "GWE_F_1", "GWE_F_2")
	back := startMembers(f, "/backend", "1", "2", "3")
	// Member 4 accepts and then drops every connection before answering:
	// the proxy's retry and quarantine paths.
	drop := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
			c.Close()
		}
	}))
	f.Cleanup(drop.Close)
	back = append(back, &member{route: "4", ts: drop})
	logs := &panicLog{} // attack_test.go
	h := startProxy(f, mustTable(f, frontendPool(front), backendPool(back)), Options{
		ConnectTimeout:        time.Second,
		ResponseHeaderTimeout: 500 * time.Millisecond, // /slow answers 504 quickly
		AccessLog:             io.Discard,             // still formatted: fuzzed fields go through it
		Observer:              NopObserver{},
		Logger:                slog.New(logs),
	}, ListenerConfig{ReadHeaderTimeout: 2 * time.Second, IdleTimeout: 2 * time.Second, MaxHeaderBytes: 4 << 10})
	var source atomic.Uint32

	f.Fuzz(func(t *testing.T, raw []byte) {
		input, methods, tail := headRequests(raw)
		d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+source.Add(1)%250))}}
		c, err := d.Dial("tcp", h.addr)
		if err != nil {
			// Not every system routes all of 127.0.0.0/8 to loopback.
			d.LocalAddr = nil
			if c, err = d.Dial("tcp", h.addr); err != nil {
				// A proxy that stops accepting fails here; so does a host
				// whose netfilter connection-tracking table is full
				// (dmesg: "nf_conntrack: table full, dropping packet").
				t.Fatalf("dial the proxy: %v", err)
			}
		}
		defer func() {
			// Reset rather than close: no TIME_WAIT left behind.
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}()
		deadline := time.Now().Add(headBudget)
		if err := c.SetDeadline(deadline); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(input); err != nil && !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("write %d bytes: %v", len(input), err)
		}
		// A handler panic is recovered by net/http, which logs it and then
		// closes the connection: by the time the client sees the close,
		// the log has it.
		defer func() {
			if p := logs.take(); len(p) > 0 {
				t.Fatalf("the proxy panicked on %q: %s", input, p)
			}
		}()
		r := bufio.NewReader(c)
		check := func(resp *http.Response) {
			if resp.StatusCode == http.StatusInternalServerError && resp.Header.Get(gwedemo.HeaderServer) == "" {
				t.Fatalf("the proxy answered 500 to %q", input)
			}
		}

		// Every complete request gets its answer while the connection is
		// still open for writing (the server may close it instead: a bad
		// request, Connection: close, an upgrade).
		upgraded, closed := false, false
	requests:
		for _, method := range methods {
			for {
				resp, err := http.ReadResponse(r, &http.Request{Method: method})
				if err != nil {
					if headClosed(err) {
						closed = true
						break requests
					}
					if headTimeout(err) {
						t.Fatalf("no answer to a complete %s request within %v: %q", method, headBudget, input)
					}
					t.Fatalf("unreadable answer to %q: %v", input, err)
				}
				check(resp)
				if resp.StatusCode == http.StatusSwitchingProtocols {
					upgraded = true // the rest is the member's WebSocket
					break requests
				}
				if resp.StatusCode >= 200 {
					n, _ := io.Copy(io.Discard, io.LimitReader(resp.Body, headMaxBody))
					resp.Body.Close()
					if n == headMaxBody {
						return // answered; the reset cuts the rest off
					}
					if resp.Close {
						// The server closes after this answer. (net/http's
						// own 400s have a body even for HEAD: unframed, the
						// rest cannot be read as answers.)
						closed = true
						break requests
					}
					break
				}
				// 1xx (100 Continue): the final answer follows.
			}
		}

		// Connections end with a reset, not a close, wherever the test can
		// choose: a long run opens thousands of connections a second, and
		// netfilter keeps a connection that ended in TIME_WAIT in its
		// tracking table for two minutes; a full table drops every new
		// connection on the host.
		if closed || (tail == tailNone && !upgraded) {
			return // answered in full, nothing pending
		}

		// rest reads what the proxy still answers (none of it a 500 of its
		// own) until it closes the connection or answers that it will;
		// false if until came first.
		rest := func(until time.Time) bool {
			if err := c.SetReadDeadline(until); err != nil {
				t.Fatal(err)
			}
			for !upgraded {
				resp, err := http.ReadResponse(r, &http.Request{Method: http.MethodGet})
				if err != nil {
					if headTimeout(err) {
						return false
					}
					break // closed, or the rest is not HTTP: drained below
				}
				check(resp)
				_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, headMaxBody))
				resp.Body.Close()
				if err != nil && headTimeout(err) {
					return false
				}
				if resp.Close {
					return true // answered, and the proxy says it closes
				}
				if resp.StatusCode == http.StatusSwitchingProtocols {
					break
				}
			}
			_, err := io.Copy(io.Discard, r)
			return err == nil || !headTimeout(err)
		}
		// What follows the complete requests does not parse: the server
		// answers 400 and closes by itself (if it waits after all, the
		// close for writing below ends that).
		if tail == tailBad && !upgraded {
			soon := time.Now().Add(time.Second)
			if deadline.Before(soon) {
				soon = deadline
			}
			if rest(soon) {
				return
			}
		}
		// The client is done sending: whatever was left incomplete must
		// not keep the connection open.
		if err := c.(*net.TCPConn).CloseWrite(); err != nil && !errors.Is(err, syscall.ENOTCONN) && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("close write: %v", err)
		}
		if !rest(deadline) {
			t.Fatalf("the proxy neither answered nor closed within %v after the client stopped sending %q", headBudget, input)
		}
	})
}

// What follows the complete requests of an input.
type headTail int

const (
	tailNone  headTail = iota // nothing
	tailShort                 // the start of a request: the server waits for the rest
	tailBad                   // bytes that do not parse as a request
)

// headRequests returns what to send for a fuzzed input: the input with an
// end of head if it has none, cut after the first headMaxRequests complete
// requests; the methods of its complete requests in order, read with the
// parser the proxy's server uses; and what follows them. An upgrade
// request ends the list: what follows it goes to the member's WebSocket.
func headRequests(raw []byte) (input []byte, methods []string, tail headTail) {
	input = raw[:min(len(raw), headMaxInput)]
	if !bytes.Contains(input, []byte("\r\n\r\n")) && !bytes.Contains(input, []byte("\n\n")) {
		input = append(bytes.Clone(input), "\r\n\r\n"...)
	}
	src := bytes.NewReader(input)
	br := bufio.NewReader(src)
	for {
		left := input[len(input)-src.Len()-br.Buffered():]
		req, err := http.ReadRequest(br)
		if err != nil {
			// Only a whole head that does not parse is sure to be refused
			// at once; the server waits for the end of a line or a head.
			if !errors.Is(err, io.ErrUnexpectedEOF) && (bytes.Contains(left, []byte("\r\n\r\n")) || bytes.Contains(left, []byte("\n\n"))) {
				return input, methods, tailBad
			}
			return input, methods, tailShort
		}
		if _, err := io.Copy(io.Discard, req.Body); err != nil {
			return input, methods, tailShort // a body the server reads while the proxy forwards it
		}
		methods = append(methods, req.Method)
		if req.Header.Get("Upgrade") != "" || req.Close {
			return input, methods, tailShort // the rest is not for net/http
		}
		rest := src.Len() + br.Buffered()
		if rest == 0 {
			return input, methods, tailNone
		}
		if len(methods) == headMaxRequests {
			// Whatever follows the last request sent would be another one.
			return input[:len(input)-rest], methods, tailNone
		}
	}
}

// headTimeout reports whether err is the execution's deadline passing.
func headTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// headClosed reports whether err means the proxy closed the connection.
func headClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, net.ErrClosed)
}
