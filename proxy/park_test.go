package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
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
