// Package gwedemo is a stand-in Genesys Web Engagement server for demos, docs and tests.
//
// It answers with its own name so a caller can see which backend the balancer
// picked, reports what the balancer forwarded through X-GWE-* response headers,
// and offers a few endpoints (echo, blob, slow, WebSocket) that exercise
// streaming, large payloads and timeouts without needing a real GWE.
package gwedemo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// Response headers set on every answer.
const (
	HeaderServer            = "X-GWE-Server"
	HeaderURI               = "X-GWE-URI"
	HeaderGotForwardedFor   = "X-GWE-Got-Forwarded-For"
	HeaderGotForwardedProto = "X-GWE-Got-Forwarded-Proto"
	HeaderGotForwardedHost  = "X-GWE-Got-Forwarded-Host"
	HeaderGotCookie         = "X-GWE-Got-Cookie"
)

// MaxBlobSize is the largest size accepted by the /blob endpoint.
const MaxBlobSize = 1 << 30

// MaxMessageSize is the largest WebSocket message the echo loop accepts; it is held in memory.
const MaxMessageSize = 64 << 20

// maxSlow bounds /slow so a typo cannot pin a handler for hours.
const maxSlow = 10 * time.Minute

// Server is an http.Handler that mimics one GWE node.
type Server struct {
	name      string
	prefix    string
	unhealthy atomic.Bool // zero value means healthy, which is the useful default
	quiet     atomic.Bool // zero value echoes, which tests rely on
	requests  atomic.Int64
}

// New returns a healthy Server called name whose health check lives at prefix+"/about".
func New(name, prefix string) *Server {
	prefix = strings.TrimRight(prefix, "/")
	if prefix != "" && !strings.HasPrefix(prefix, "/") {
		prefix = "/" + prefix
	}
	return &Server{name: name, prefix: prefix}
}

// Name returns the route name the server answers with.
func (s *Server) Name() string { return s.name }

// SetHealthy sets whether the /about health check succeeds.
func (s *Server) SetHealthy(ok bool) { s.unhealthy.Store(!ok) }

// SetEcho sets whether answers report the forwarded headers (X-GWE-Got-*).
// Benchmarks turn it off: the echo makes a server's answer grow with what a
// balancer forwards, so servers sharing a CPU with the load generator would
// cost more behind a balancer that forwards more headers, and the figure
// would measure the echo, not the balancer.
func (s *Server) SetEcho(on bool) { s.quiet.Store(!on) }

// Healthy reports whether the /about health check succeeds.
func (s *Server) Healthy() bool { return !s.unhealthy.Load() }

// Requests returns how many requests were served, not counting /_demo/ control requests.
func (s *Server) Requests() int64 { return s.requests.Load() }

// ServeHTTP answers one request; see the package documentation for the endpoints.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set(HeaderServer, s.name)
	h.Set(HeaderURI, r.RequestURI)
	if !s.quiet.Load() {
		echoHeader(h, r.Header, "X-Forwarded-For", HeaderGotForwardedFor, ", ")
		echoHeader(h, r.Header, "X-Forwarded-Proto", HeaderGotForwardedProto, ", ")
		echoHeader(h, r.Header, "X-Forwarded-Host", HeaderGotForwardedHost, ", ")
		// HTTP/2 may split Cookie into several fields; "; " rejoins them as one header.
		echoHeader(h, r.Header, "Cookie", HeaderGotCookie, "; ")
	}

	path := r.URL.Path
	if strings.HasPrefix(path, "/_demo/") {
		s.serveDemo(w, r)
		return
	}
	s.requests.Add(1)

	if isWebSocket(r) {
		s.serveWebSocket(w, r)
		return
	}

	get := r.Method == http.MethodGet || r.Method == http.MethodHead
	switch {
	case get && path == s.prefix+"/about":
		s.serveAbout(w)
	case (r.Method == http.MethodPost || r.Method == http.MethodPut) && strings.HasSuffix(path, "/echo"):
		serveEcho(w, r)
	case get && strings.HasSuffix(path, "/blob"):
		serveBlob(w, r)
	case get && strings.HasSuffix(path, "/slow"):
		s.serveSlow(w, r)
	default:
		s.serveName(w)
	}
}

// echoHeader copies request header from into response header to, if it was sent.
func echoHeader(dst, src http.Header, from, to, sep string) {
	if v := src.Values(from); len(v) > 0 {
		dst.Set(to, strings.Join(v, sep))
	}
}

// isWebSocket reports whether r asks for a WebSocket upgrade.
func isWebSocket(r *http.Request) bool {
	for _, v := range r.Header.Values("Upgrade") {
		for tok := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), "websocket") {
				return true
			}
		}
	}
	return false
}

func (s *Server) serveName(w http.ResponseWriter) {
	writeText(w, http.StatusOK, s.name+"\n")
}

func writeText(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	_, _ = io.WriteString(w, body) // a write error only means the client left
}

func (s *Server) serveAbout(w http.ResponseWriter) {
	if s.Healthy() {
		writeText(w, http.StatusOK, "ok\n")
		return
	}
	writeText(w, http.StatusServiceUnavailable, "unhealthy\n")
}

// serveDemo handles the /_demo/ control endpoints used to steer the demo.
func (s *Server) serveDemo(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/_demo/health" {
		writeText(w, http.StatusNotFound, "unknown demo endpoint\n")
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
	case http.MethodPost:
		switch r.URL.Query().Get("state") {
		case "up":
			s.SetHealthy(true)
		case "down":
			s.SetHealthy(false)
		default:
			writeText(w, http.StatusBadRequest, "state must be up or down\n")
			return
		}
	default:
		w.Header().Set("Allow", "GET, HEAD, POST")
		writeText(w, http.StatusMethodNotAllowed, "method not allowed\n")
		return
	}
	if s.Healthy() {
		writeText(w, http.StatusOK, "up\n")
	} else {
		writeText(w, http.StatusOK, "down\n")
	}
}

// serveEcho streams the request body back while it is still arriving.
func serveEcho(w http.ResponseWriter, r *http.Request) {
	// Without full duplex, net/http's HTTP/1 server stops the body once the
	// response headers go out, which would cut any body bigger than its buffer.
	// HTTP/2 is always full duplex and reports ErrNotSupported, which is fine.
	_ = http.NewResponseController(w).EnableFullDuplex()
	if ct := r.Header.Get("Content-Type"); ct != "" {
		w.Header().Set("Content-Type", ct)
	}
	if r.ContentLength >= 0 {
		w.Header().Set("Content-Length", strconv.FormatInt(r.ContentLength, 10))
	}
	w.WriteHeader(http.StatusOK)
	// Errors mean one side went away mid-stream; the status is already sent.
	_, _ = io.Copy(w, r.Body)
}

// blobChunk holds whole cycles of the blob pattern, so every chunk starts at a
// multiple of 251 and can be written as is.
var blobChunk = func() []byte {
	b := make([]byte, 251*256)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}()

// serveBlob streams size bytes where byte i is i mod 251.
func serveBlob(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.ParseInt(r.URL.Query().Get("size"), 10, 64)
	if err != nil || n < 0 || n > MaxBlobSize {
		writeText(w, http.StatusBadRequest, fmt.Sprintf("size must be an integer in [0, %d]\n", MaxBlobSize))
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	for n > 0 {
		chunk := blobChunk[:min(n, int64(len(blobChunk)))]
		if _, err := w.Write(chunk); err != nil {
			return // the client left; nothing more to do
		}
		n -= int64(len(chunk))
	}
}

// serveSlow waits ms milliseconds before answering, or gives up with the client.
func (s *Server) serveSlow(w http.ResponseWriter, r *http.Request) {
	ms, err := strconv.ParseInt(r.URL.Query().Get("ms"), 10, 64)
	if err != nil || ms < 0 || time.Duration(ms)*time.Millisecond > maxSlow {
		writeText(w, http.StatusBadRequest, fmt.Sprintf("ms must be an integer in [0, %d]\n", maxSlow.Milliseconds()))
		return
	}
	t := time.NewTimer(time.Duration(ms) * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
		s.serveName(w)
	case <-r.Context().Done():
		// The client or the balancer gave up; there is nobody to answer.
	}
}

// serveWebSocket greets with the server name, then echoes every message back.
func (s *Server) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		// A demo is reached through arbitrary hosts and ports, so any origin goes.
		InsecureSkipVerify: true,
	})
	if err != nil {
		return // Accept has already written an error response
	}
	defer c.CloseNow()
	c.SetReadLimit(MaxMessageSize)

	ctx := r.Context()
	if err := c.Write(ctx, websocket.MessageText, []byte(s.name)); err != nil {
		return
	}
	for {
		if err := echoMessage(ctx, c); err != nil {
			// A close frame from the peer or an oversized message has
			// already been answered by the library; anything else is ours.
			if websocket.CloseStatus(err) == -1 && !errors.Is(err, io.EOF) {
				_ = c.Close(websocket.StatusInternalError, "echo failed")
			}
			return
		}
	}
}

// echoMessage reads one whole message and sends it back. Buffering the whole
// message, rather than streaming it, avoids a deadlock with peers that finish
// writing a large message before they start reading.
func echoMessage(ctx context.Context, c *websocket.Conn) error {
	typ, msg, err := c.Read(ctx)
	if err != nil {
		return fmt.Errorf("read message: %w", err)
	}
	if err := c.Write(ctx, typ, msg); err != nil {
		return fmt.Errorf("echo message: %w", err)
	}
	return nil
}
