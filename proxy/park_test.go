package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gwelb/gwelb/fsm"
)

// A keep-alive connection idle past hotWait gives back its buffers and
// forgets its last request (conn.go, awaitRequest); the next request on it
// is served as on a new connection, whatever it carries.
func TestParkedConnectionServesAgain(t *testing.T) {
	back := startMembers(t, "/backend", "1", "2")
	h := startProxy(t, mustTable(t, backendPool(back)), Options{}, ListenerConfig{})
	for _, tt := range []struct {
		name, second string
		want         string // in the answer's body
	}{
		{name: "GET", second: "GET /backend/x?marker=get HTTP/1.1\r\nHost: gwe\r\nCookie: ROUTEID=.1\r\n\r\n", want: "1\n"},
		{name: "POST with a length", second: "POST /backend/echo?marker=length HTTP/1.1\r\nHost: gwe\r\nCookie: ROUTEID=.2\r\nContent-Length: 5\r\n\r\nhello", want: "hello"},
		{name: "POST chunked", second: "POST /backend/echo?marker=chunked HTTP/1.1\r\nHost: gwe\r\nCookie: ROUTEID=.2\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n", want: "hello"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := h.dialRaw(t)
			br := bufio.NewReader(c)
			// A first request with a different member, cookie and
			// body, so that anything left over would show.
			fmt.Fprintf(c, "POST /backend/echo HTTP/1.1\r\nHost: first\r\nCookie: ROUTEID=.1\r\nContent-Length: 3\r\n\r\nabc")
			if r := readAnswer(t, br, http.MethodPost); r.status != http.StatusOK || r.body != "abc" {
				t.Fatalf("first request: %v", r)
			}
			time.Sleep(hotWait + 300*time.Millisecond) // the idle time is the scenario
			io.WriteString(c, tt.second)
			r := readAnswer(t, br, strings.Fields(tt.second)[0])
			if r.status != http.StatusOK || r.body != tt.want {
				t.Fatalf("after parking: %v, want 200 %q", r, tt.want)
			}
		})
	}
	t.Run("log", func(t *testing.T) {
		for _, marker := range []string{"get", "length", "chunked"} {
			line := ""
			waitFor(t, 5*time.Second, "the log line of "+marker, func() bool {
				for _, l := range h.log.lines() {
					if strings.Contains(l, "marker="+marker) {
						line = l
						return true
					}
				}
				return false
			})
			if !strings.Contains(line, " 200 ") || strings.Contains(line, "first") {
				t.Errorf("log line %q", line)
			}
		}
	})
}

// A client whose next request reaches the proxy before the answer to the
// one before it (pipelining, in a segment of its own) gets both answered.
// The wait for the next request that the answer's write starts (conn.go,
// finish) cannot see bytes that came before it, so it lasts to the hot
// deadline, and the read after it finds them; the connection does not
// wait that way again.
func TestPipelinedApartIsAnswered(t *testing.T) {
	held := make(chan struct{}, 1)
	release := make(chan struct{})
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has("hold") {
			held <- struct{}{}
			<-release
		}
		io.WriteString(w, r.URL.RawQuery)
	}))
	t.Cleanup(ts.Close)
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	h := startProxy(t, mustTable(t, fsm.PoolSpec{Name: "backend", Prefix: "/backend", Sticky: fsm.StickySpec{Cookie: "ROUTEID"},
		Members: []fsm.MemberSpec{{Route: "1", URL: ts.URL}}}), Options{}, ListenerConfig{})
	c := h.dialRaw(t)
	c.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(c)
	req := func(query string) string {
		return "GET /backend/x?" + query + " HTTP/1.1\r\nHost: gwe\r\nCookie: ROUTEID=.1\r\n\r\n"
	}
	io.WriteString(c, req("hold&n=1"))
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("the first request did not reach the member")
	}
	// On loopback a write is in the proxy's socket when it returns.
	io.WriteString(c, req("n=2"))
	close(release)
	for _, want := range []string{"hold&n=1", "n=2"} {
		if r := readAnswer(t, br, http.MethodGet); r.status != http.StatusOK || r.body != want {
			t.Fatalf("got %v, want 200 %q", r, want)
		}
	}
	for i := 3; i < 6; i++ {
		q := fmt.Sprintf("n=%d", i)
		io.WriteString(c, req(q))
		if r := readAnswer(t, br, http.MethodGet); r.status != http.StatusOK || r.body != q {
			t.Fatalf("request %d after them: got %v, want 200 %q", i, r, q)
		}
	}
}
