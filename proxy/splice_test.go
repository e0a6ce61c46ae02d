package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gwelb/gwelb/fsm"
)

// Bodies bigger than the retry copy move between plain TCP sockets by
// splice(2) (splice_linux.go): every byte arrives, in order, the access
// log counts them, and TLS listeners keep the copying path.
func TestSpliceBodies(t *testing.T) {
	const size = 5<<20 + 12345 // past the 1 MiB retry copy, and not a multiple of any buffer
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = byte(i * 7 % 253)
	}
	certFile, keyFile, clientRoots := writeSelfSigned(t, t.TempDir())
	for _, tt := range []struct {
		name       string
		lc         ListenerConfig
		up         bool
		expect     bool // Expect: 100-continue
		wantSplice bool
	}{
		{name: "up", up: true, wantSplice: true},
		{name: "up, Expect 100-continue", up: true, expect: true, wantSplice: true},
		{name: "down", wantSplice: true},
		{name: "up, TLS listener", up: true, lc: ListenerConfig{CertFile: certFile, KeyFile: keyFile}},
		{name: "down, TLS listener", lc: ListenerConfig{CertFile: certFile, KeyFile: keyFile}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			back := startMembers(t, "/backend", "1")
			h := startProxy(t, mustTable(t, backendPool(back)), Options{}, tt.lc)
			tr := h.client.Transport.(*http.Transport)
			tr.TLSClientConfig = &tls.Config{RootCAs: clientRoots}
			tr.ExpectContinueTimeout = time.Second // gwedemo writes its head before reading, so it sends no 100: the client waits this long
			before := splicedBytes.Load()
			var req *http.Request
			var err error
			if tt.up {
				req, err = http.NewRequest(http.MethodPost, h.base+"/backend/echo?marker="+strconv.Itoa(len(tt.name)), bytes.NewReader(payload))
			} else {
				req, err = http.NewRequest(http.MethodGet, h.base+"/backend/blob?size="+strconv.Itoa(size), nil)
			}
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Cookie", "ROUTEID=.1")
			if tt.expect {
				req.Header.Set("Expect", "100-continue")
			}
			resp, err := h.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK || len(got) != size {
				t.Fatalf("status %d, %d bytes, %v; want 200 and %d bytes", resp.StatusCode, len(got), err, size)
			}
			if tt.up {
				if !bytes.Equal(got, payload) {
					t.Fatal("the echo differs from the body sent")
				}
			} else {
				for i, c := range got {
					if c != byte(i%251) {
						t.Fatalf("byte %d is %d, want %d", i, c, i%251)
					}
				}
			}
			spliced := splicedBytes.Load() - before
			if tt.wantSplice && runtime.GOOS == "linux" && spliced < size/2 {
				t.Errorf("%d bytes spliced, want most of the %d", spliced, size)
			}
			if !tt.wantSplice && spliced != 0 {
				t.Errorf("%d bytes spliced through a TLS listener", spliced)
			}
			// The access log counts the response body's bytes.
			waitFor(t, 5*time.Second, "the access log line", func() bool { return len(h.log.lines()) > 0 })
			if line := h.log.lines()[0]; !strings.Contains(line, " 200 "+strconv.Itoa(size)+" ") {
				t.Errorf("access log line %q does not count %d bytes", line, size)
			}
		})
	}
}

// The body read timeout holds while a body is spliced: a client that
// stalls after the retry copy was given up gets 408, and the member is not
// blamed; one that keeps sending completes.
func TestSpliceSlowBody(t *testing.T) {
	const grace = time.Second
	for _, tt := range []struct {
		name  string
		parts int // 1 MiB parts sent
		pause time.Duration
		stall bool // the client stops after the parts
		want  int
	}{
		{name: "stalls after 3 MiB", parts: 3, stall: true, want: http.StatusRequestTimeout},
		{name: "pauses between parts", parts: 4, pause: 300 * time.Millisecond, want: http.StatusOK},
	} {
		t.Run(tt.name, func(t *testing.T) {
			member := readAllMember(t, "1")
			spec := fsm.PoolSpec{Name: "backend", Prefix: "/backend", Sticky: fsm.StickySpec{Cookie: "ROUTEID", Insert: true},
				Members: []fsm.MemberSpec{{Route: "1", URL: member.url}}}
			// A high minimum rate: what was received extends the grace
			// by almost nothing.
			h := startProxy(t, mustTable(t, spec), Options{BodyReadTimeout: grace, BodyMinRate: 1 << 30}, ListenerConfig{})
			total := tt.parts << 20
			if tt.stall {
				total += 1 << 20
			}
			before := splicedBytes.Load()
			c := h.dialRaw(t)
			fmt.Fprintf(c, "POST /backend/upload HTTP/1.1\r\nHost: gwe\r\nCookie: ROUTEID=.1\r\nContent-Length: %d\r\n\r\n", total)
			part := bytes.Repeat([]byte("x"), 1<<20)
			for i := range tt.parts {
				if i > 0 {
					time.Sleep(tt.pause) // the client's pace, not synchronisation
				}
				if _, err := c.Write(part); err != nil {
					t.Fatalf("write part %d: %v", i, err)
				}
			}
			start := time.Now()
			br := bufio.NewReader(c)
			r := readAnswer(t, br, http.MethodPost)
			if r.status != tt.want {
				t.Fatalf("got %v, want %d", r, tt.want)
			}
			if tt.stall {
				if took := time.Since(start); took > grace+2*time.Second {
					t.Errorf("408 after %v, want about %v", took, grace)
				}
				wantClosed(t, br)
			} else if got := member.received.Load(); got != int64(total) {
				t.Errorf("member received %d bytes, want %d", got, total)
			}
			if runtime.GOOS == "linux" && splicedBytes.Load() == before {
				t.Error("nothing was spliced")
			}
			if got := h.obs.calls(); len(got) != 0 {
				t.Errorf("the health Observer received %+v: a slow client was blamed on the member", got)
			}
		})
	}
}
