package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// accessLogger writes one line per request in Apache's combined format,
// followed by gwelb's routing fields:
//
//	127.0.0.1 - - [24/Nov/2026:05:30:00 +0000] "GET /backend/x HTTP/1.1" 200 2 "-" "curl/8.5" pool=backend alias="-" cookie=".2" route=2 upstream=127.0.0.1:9092 upstream_time=0.001 time=0.001
//
// Client-supplied fields are always quoted with Go escaping; the others
// (address, pool, route, upstream: from the socket and the replicated
// table) are written bare when they are plain visible ASCII, and quoted
// otherwise. No byte of a request or of the configuration can end a line,
// start a field or close a quote.
type accessLogger struct {
	mu sync.Mutex
	w  io.Writer
}

var lineBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

func (l *accessLogger) log(r *http.Request, lw *logWriter, st *reqState, start time.Time) {
	if l == nil {
		return
	}
	bp := lineBuffers.Get().(*[]byte)
	b := (*bp)[:0]
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	b = appendField(b, host)
	b = append(b, " - - ["...)
	b = start.AppendFormat(b, "02/Jan/2006:15:04:05 -0700")
	b = append(b, "] "...)
	b = strconv.AppendQuote(b, r.Method+" "+r.RequestURI+" "+r.Proto)
	status := lw.status
	if status == 0 {
		status = st.status // upgraded connections answer through the hijacked conn
	}
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, lw.bytes, 10)
	b = append(b, ' ')
	b = appendQuoted(b, r.Referer())
	b = append(b, ' ')
	b = appendQuoted(b, r.UserAgent())
	if st.pv != nil {
		b = append(b, " pool="...)
		b = appendField(b, st.pv.spec.Name)
	}
	b = append(b, " alias="...)
	b = appendQuoted(b, st.keys.query)
	b = append(b, " cookie="...)
	b = appendQuoted(b, st.keys.cookie)
	b = append(b, " route="...)
	upstream := ""
	if st.member >= 0 {
		b = appendField(b, st.pv.members[st.member].route)
		upstream = st.pv.members[st.member].host
	} else {
		b = append(b, '-')
	}
	b = append(b, " upstream="...)
	b = appendField(b, upstream)
	b = append(b, " upstream_time="...)
	b = strconv.AppendFloat(b, st.upstreamTime.Seconds(), 'f', 3, 64)
	b = append(b, " time="...)
	b = strconv.AppendFloat(b, time.Since(start).Seconds(), 'f', 3, 64)
	b = append(b, '\n')
	l.mu.Lock()
	l.w.Write(b)
	l.mu.Unlock()
	*bp = b
	lineBuffers.Put(bp)
}

func appendQuoted(b []byte, s string) []byte {
	if s == "" {
		return append(b, `"-"`...)
	}
	return strconv.AppendQuote(b, s)
}

// appendField appends s bare when it is visible ASCII without quotes or
// backslashes, "-" when it is empty, and quoted otherwise; a bare field
// therefore never starts with a quote, and the two cannot be confused.
func appendField(b []byte, s string) []byte {
	if s == "" {
		return append(b, '-')
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '"' || c == '\\' {
			return strconv.AppendQuote(b, s)
		}
	}
	return append(b, s...)
}

// logWriter records the status and body size for the access log. It
// unwraps for http.ResponseController, so flushing and the WebSocket
// hijack reach the real connection.
type logWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
	// closeUnlessSwitched closes the connection after any final answer:
	// set for requests that asked to upgrade (101 Switching Protocols is
	// written on the hijacked connection, not here).
	closeUnlessSwitched bool
}

func (w *logWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
		if w.closeUnlessSwitched {
			w.Header().Set("Connection", "close")
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *logWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

func (w *logWriter) Flush() { http.NewResponseController(w.ResponseWriter).Flush() }

func (w *logWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Hijack is here for callers that type-assert http.Hijacker instead of
// using http.ResponseController.
func (w *logWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(w.ResponseWriter).Hijack()
}
