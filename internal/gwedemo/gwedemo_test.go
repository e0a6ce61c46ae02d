package gwedemo

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// newTestServer starts s on a loopback httptest server.
func newTestServer(t *testing.T, s *Server) *httptest.Server {
	t.Helper()
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return ts
}

// do sends one request and returns the response with its body read.
func do(t *testing.T, method, url string, body io.Reader, hdr http.Header) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, body)
	if err != nil {
		t.Fatalf("new request %s %s: %v", method, url, err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body of %s %s: %v", method, url, err)
	}
	return resp, b
}

func TestNameAndForwardedHeaders(t *testing.T) {
	ts := newTestServer(t, New("GWE_F_1", "/frontend"))
	tests := []struct {
		name   string
		method string
		path   string
		hdr    http.Header
		want   map[string]string // response headers; "" means absent
	}{
		{
			name: "root", method: http.MethodGet, path: "/",
			want: map[string]string{HeaderGotForwardedFor: "", HeaderGotCookie: ""},
		},
		{
			name: "deep path post", method: http.MethodPost, path: "/frontend/cometd/handshake",
		},
		{
			name: "about under other prefix", method: http.MethodGet, path: "/backend/about",
		},
		{
			name: "forwarded headers echoed", method: http.MethodGet, path: "/frontend/x",
			hdr: http.Header{
				"X-Forwarded-For":   {"10.0.0.1", "10.0.0.2"},
				"X-Forwarded-Proto": {"https"},
				"X-Forwarded-Host":  {"gwe.example.com"},
				"Cookie":            {"gwelb=1; other=x"},
			},
			want: map[string]string{
				HeaderGotForwardedFor:   "10.0.0.1, 10.0.0.2",
				HeaderGotForwardedProto: "https",
				HeaderGotForwardedHost:  "gwe.example.com",
				HeaderGotCookie:         "gwelb=1; other=x",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := do(t, tt.method, ts.URL+tt.path, nil, tt.hdr)
			if resp.StatusCode != http.StatusOK {
				t.Errorf("status = %d, want 200", resp.StatusCode)
			}
			if got := string(body); got != "GWE_F_1\n" {
				t.Errorf("body = %q, want %q", got, "GWE_F_1\n")
			}
			if got := resp.Header.Get(HeaderServer); got != "GWE_F_1" {
				t.Errorf("%s = %q, want GWE_F_1", HeaderServer, got)
			}
			if got := resp.Header.Get("Content-Type"); !strings.HasPrefix(got, "text/plain") {
				t.Errorf("Content-Type = %q, want text/plain", got)
			}
			for k, want := range tt.want {
				if got := resp.Header.Get(k); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
		})
	}
}

// TestNoEcho: with the echo off (benchmarks) the answer is the same
// whatever the balancer forwarded.
func TestNoEcho(t *testing.T) {
	s := New("2", "/backend")
	s.SetEcho(false)
	ts := newTestServer(t, s)
	hdr := http.Header{"X-Forwarded-For": {"127.0.0.1"}, "Cookie": {"ROUTEID=.2"}}
	resp, body := do(t, http.MethodGet, ts.URL+"/backend/x", nil, hdr)
	if string(body) != "2\n" || resp.Header.Get(HeaderServer) != "2" {
		t.Errorf("answer %q from %q, want \"2\\n\" from 2", body, resp.Header.Get(HeaderServer))
	}
	for _, k := range []string{HeaderGotForwardedFor, HeaderGotForwardedProto, HeaderGotForwardedHost, HeaderGotCookie} {
		if v := resp.Header.Get(k); v != "" {
			t.Errorf("%s = %q with the echo off, want absent", k, v)
		}
	}
}

func TestHealthFlip(t *testing.T) {
	s := New("1", "/backend/") // the trailing slash must not matter
	ts := newTestServer(t, s)
	steps := []struct {
		method     string
		path       string
		wantStatus int
		wantBody   string
		wantHealth bool
	}{
		{http.MethodGet, "/backend/about", http.StatusOK, "ok\n", true},
		{http.MethodGet, "/_demo/health", http.StatusOK, "up\n", true},
		{http.MethodPost, "/_demo/health?state=down", http.StatusOK, "down\n", false},
		{http.MethodGet, "/backend/about", http.StatusServiceUnavailable, "unhealthy\n", false},
		{http.MethodGet, "/_demo/health", http.StatusOK, "down\n", false},
		{http.MethodGet, "/backend/x", http.StatusOK, "1\n", false}, // unhealthy still serves
		{http.MethodPost, "/_demo/health?state=sideways", http.StatusBadRequest, "state must be up or down\n", false},
		{http.MethodPost, "/_demo/health?state=up", http.StatusOK, "up\n", true},
		{http.MethodGet, "/backend/about", http.StatusOK, "ok\n", true},
		{http.MethodDelete, "/_demo/health", http.StatusMethodNotAllowed, "method not allowed\n", true},
		{http.MethodGet, "/_demo/nope", http.StatusNotFound, "unknown demo endpoint\n", true},
	}
	for i, st := range steps {
		resp, body := do(t, st.method, ts.URL+st.path, nil, nil)
		if resp.StatusCode != st.wantStatus || string(body) != st.wantBody {
			t.Errorf("step %d %s %s = %d %q, want %d %q", i, st.method, st.path,
				resp.StatusCode, body, st.wantStatus, st.wantBody)
		}
		if s.Healthy() != st.wantHealth {
			t.Errorf("step %d: Healthy() = %v, want %v", i, s.Healthy(), st.wantHealth)
		}
	}
	// Three /backend/about and one /backend/x; the /_demo/ steps are not counted.
	if got := s.Requests(); got != 4 {
		t.Errorf("Requests() = %d, want 4", got)
	}

	s.SetHealthy(false)
	if resp, _ := do(t, http.MethodGet, ts.URL+"/backend/about", nil, nil); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("after SetHealthy(false): status = %d, want 503", resp.StatusCode)
	}
}

func TestEchoLargeBody(t *testing.T) {
	ts := newTestServer(t, New("1", "/backend"))
	const size = 16 << 20
	body := make([]byte, size)
	rng := rand.NewChaCha8([32]byte{1, 2, 3})
	_, _ = rng.Read(body)
	want := sha256.Sum256(body)

	for _, method := range []string{http.MethodPost, http.MethodPut} {
		t.Run(method, func(t *testing.T) {
			hdr := http.Header{"Content-Type": {"application/x-test"}}
			resp, got := do(t, method, ts.URL+"/backend/upload/echo", bytes.NewReader(body), hdr)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status = %d, want 200", resp.StatusCode)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/x-test" {
				t.Errorf("Content-Type = %q, want application/x-test", ct)
			}
			if len(got) != size || sha256.Sum256(got) != want {
				t.Errorf("echoed %d bytes with a different digest, want %d identical bytes", len(got), size)
			}
		})
	}
}

func TestBlob(t *testing.T) {
	ts := newTestServer(t, New("1", ""))
	tests := []struct {
		size       string
		wantStatus int
		wantLen    int
	}{
		{"0", http.StatusOK, 0},
		{"1", http.StatusOK, 1},
		{"250", http.StatusOK, 250},
		{"251", http.StatusOK, 251},
		{"252", http.StatusOK, 252},
		{"3000007", http.StatusOK, 3000007}, // spans several internal chunks
		{"", http.StatusBadRequest, -1},
		{"-1", http.StatusBadRequest, -1},
		{"abc", http.StatusBadRequest, -1},
		{fmt.Sprint(MaxBlobSize + 1), http.StatusBadRequest, -1},
	}
	for _, tt := range tests {
		t.Run("size="+tt.size, func(t *testing.T) {
			resp, body := do(t, http.MethodGet, ts.URL+"/x/blob?size="+tt.size, nil, nil)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status = %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			if tt.wantLen < 0 {
				return
			}
			if resp.ContentLength != int64(tt.wantLen) || len(body) != tt.wantLen {
				t.Fatalf("Content-Length %d, body %d bytes, want %d", resp.ContentLength, len(body), tt.wantLen)
			}
			for i, b := range body {
				if b != byte(i%251) {
					t.Fatalf("byte %d = %d, want %d", i, b, i%251)
				}
			}
		})
	}
}

func TestSlow(t *testing.T) {
	ts := newTestServer(t, New("7", ""))
	tests := []struct {
		query      string
		wantStatus int
		wantBody   string
	}{
		{"ms=0", http.StatusOK, "7\n"},
		{"ms=5", http.StatusOK, "7\n"},
		{"ms=-1", http.StatusBadRequest, ""},
		{"ms=soon", http.StatusBadRequest, ""},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			resp, body := do(t, http.MethodGet, ts.URL+"/frontend/slow?"+tt.query, nil, nil)
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status = %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			if tt.wantBody != "" && string(body) != tt.wantBody {
				t.Errorf("body = %q, want %q", body, tt.wantBody)
			}
		})
	}

	t.Run("client gone", func(t *testing.T) {
		// A request whose context is already done must not wait out the minute.
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		req := httptest.NewRequestWithContext(ctx, http.MethodGet, "/slow?ms=60000", nil)
		rec := httptest.NewRecorder()
		start := time.Now()
		New("7", "").ServeHTTP(rec, req)
		if d := time.Since(start); d > 30*time.Second {
			t.Errorf("ServeHTTP took %v after the client left", d)
		}
		if rec.Body.Len() != 0 {
			t.Errorf("wrote %q to a departed client", rec.Body.String())
		}
	})
}

func TestWebSocket(t *testing.T) {
	s := New("GWE_B_2", "/backend")
	ts := newTestServer(t, s)
	ctx := t.Context()

	c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(ts.URL, "http")+"/backend/cometd", nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.CloseNow()
	if got := resp.Header.Get(HeaderServer); got != "GWE_B_2" {
		t.Errorf("handshake %s = %q, want GWE_B_2", HeaderServer, got)
	}
	c.SetReadLimit(MaxMessageSize)

	typ, msg, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read greeting: %v", err)
	}
	if typ != websocket.MessageText || string(msg) != "GWE_B_2" {
		t.Fatalf("greeting = %v %q, want text %q", typ, msg, "GWE_B_2")
	}

	big := make([]byte, 1<<20)
	_, _ = rand.NewChaCha8([32]byte{9}).Read(big)
	msgs := []struct {
		typ  websocket.MessageType
		data []byte
	}{
		{websocket.MessageText, []byte("hello")},
		{websocket.MessageBinary, big},
		{websocket.MessageBinary, nil},
	}
	for i, m := range msgs {
		if err := c.Write(ctx, m.typ, m.data); err != nil {
			t.Fatalf("write message %d: %v", i, err)
		}
		typ, got, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("read echo %d: %v", i, err)
		}
		if typ != m.typ || !bytes.Equal(got, m.data) {
			t.Errorf("echo %d = %v with %d bytes, want %v with %d identical bytes", i, typ, len(got), m.typ, len(m.data))
		}
	}
	if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Errorf("close: %v", err)
	}
	if got := s.Requests(); got != 1 {
		t.Errorf("Requests() = %d, want 1 for one WebSocket session", got)
	}
}

func TestRequestURIVerbatim(t *testing.T) {
	ts := newTestServer(t, New("1", "/backend"))
	const uri = "/backend/a%20b?x=%2F"

	t.Run("raw tcp", func(t *testing.T) {
		var d net.Dialer
		conn, err := d.DialContext(t.Context(), "tcp", ts.Listener.Addr().String())
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer conn.Close()
		if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: gwe\r\nConnection: close\r\n\r\n", uri); err != nil {
			t.Fatalf("write request: %v", err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("read response: %v", err)
		}
		defer resp.Body.Close()
		if got := resp.Header.Get(HeaderURI); got != uri {
			t.Errorf("%s = %q, want %q", HeaderURI, got, uri)
		}
	})

	t.Run("opaque url", func(t *testing.T) {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, ts.URL, nil)
		if err != nil {
			t.Fatalf("new request: %v", err)
		}
		// Opaque is sent as the request target unchanged, so no re-escaping happens.
		req.URL.Opaque = "/backend/a%20b"
		req.URL.RawQuery = "x=%2F"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("get: %v", err)
		}
		defer resp.Body.Close()
		if got := resp.Header.Get(HeaderURI); got != uri {
			t.Errorf("%s = %q, want %q", HeaderURI, got, uri)
		}
	})
}

func TestHealthConcurrent(t *testing.T) {
	// Run under -race: flips and reads from many goroutines must not race.
	s := New("1", "")
	done := make(chan struct{})
	for i := range 8 {
		go func() {
			defer func() { done <- struct{}{} }()
			for j := range 1000 {
				s.SetHealthy((i+j)%2 == 0)
				_ = s.Healthy()
			}
		}()
	}
	for range 8 {
		<-done
	}
}
