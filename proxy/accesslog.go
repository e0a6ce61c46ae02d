package proxy

import (
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// AccessLogFormat is the shape of the access log's lines (config
// access_log_format).
type AccessLogFormat int

const (
	// AccessLogCombined is Apache's combined format followed by gwelb's
	// routing fields (the default).
	AccessLogCombined AccessLogFormat = iota
	// AccessLogJSON is one JSON object per line, with the fields of
	// accessLogJSONFields in that order, every one always present.
	AccessLogJSON
)

// ParseAccessLogFormat reads the access_log_format setting: "combined"
// (also the empty default) or "json".
func ParseAccessLogFormat(s string) (AccessLogFormat, error) {
	switch s {
	case "", "combined":
		return AccessLogCombined, nil
	case "json":
		return AccessLogJSON, nil
	}
	return 0, fmt.Errorf("%q: want combined or json", s)
}

func (f AccessLogFormat) String() string {
	if f == AccessLogJSON {
		return "json"
	}
	return "combined"
}

// accessLogger writes one line per request. In the combined format
// (AccessLogCombined), Apache's combined format followed by gwelb's
// routing fields:
//
//	127.0.0.1 - - [24/Nov/2026:05:30:00 +0000] "GET /backend/x HTTP/1.1" 200 2 "-" "curl/8.5" pool=backend alias="-" cookie=".2" route=3 retried_from=2 upstream=127.0.0.1:9093 upstream_time=0.001 time=0.006 node=n1
//
// Client-supplied fields are always quoted with Go escaping; the others
// (address, pool, routes, upstream, node: from the socket, the replicated
// table and the config) are written bare when they are plain visible ASCII,
// and quoted otherwise. No byte of a request or of the configuration can end
// a line, start a field or close a quote. retried_from names the member
// whose connection failed when the one retry (routing contract rule 8)
// moved the request to route; "-" when it was not retried.
//
// In the JSON format (AccessLogJSON) every line is one object with the
// same fields under stable names (accessLogJSONFields), strings escaped by
// JSON's rules (a byte that is not UTF-8 becomes U+FFFD).
//
// Neither format allocates: lines are built in pooled buffers.
type accessLogger struct {
	mu     sync.Mutex
	w      io.Writer
	format AccessLogFormat
	node   []byte // the node's name, encoded once for the format
}

// accessLogJSONFields are the keys of a JSON access log line, in order;
// README.md documents them. A test holds the writer to this list.
var accessLogJSONFields = []string{
	"timestamp", "node", "remote_addr", "method", "uri", "proto", "status", "bytes",
	"referer", "user_agent", "pool", "alias", "cookie", "route", "retried_from",
	"upstream", "upstream_time", "time",
}

// newAccessLogger returns the access log writing to w, or nil when w is nil.
func newAccessLogger(w io.Writer, format AccessLogFormat, node string) *accessLogger {
	if w == nil {
		return nil
	}
	l := &accessLogger{w: w, format: format}
	if format == AccessLogJSON {
		l.node = appendJSONString(nil, node)
	} else {
		l.node = appendField(nil, node)
	}
	return l
}

var lineBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// logEntry is what the access log shows of a request and its answer; its
// strings may point into the connection's head buffer (head.go).
type logEntry struct {
	remote             string // the client's address, without the port
	method, uri, proto string
	referer, userAgent string
	status             int   // answered to the client; 0 if none was
	bytes              int64 // response body bytes
}

func (l *accessLogger) log(e *logEntry, st *reqState, start time.Time) {
	if l == nil {
		return
	}
	bp := lineBuffers.Get().(*[]byte)
	b := (*bp)[:0]
	if l.format == AccessLogJSON {
		b = l.appendJSON(b, e, st, start)
	} else {
		b = l.appendCombined(b, e, st, start)
	}
	l.mu.Lock()
	l.w.Write(b)
	l.mu.Unlock()
	*bp = b
	lineBuffers.Put(bp)
}

// logFields are the parts of a line both formats share.
type logFields struct {
	host, pool, route, retriedFrom, upstream string
	status                                   int
}

func fieldsOf(e *logEntry, st *reqState) logFields {
	f := logFields{status: e.status, retriedFrom: st.retriedFrom, host: e.remote}
	if f.status == 0 {
		f.status = st.status
	}
	if st.pv != nil {
		f.pool = st.pv.spec.Name
		if st.member >= 0 {
			f.route = st.pv.members[st.member].route
			f.upstream = st.pv.members[st.member].host
		}
	}
	return f
}

func (l *accessLogger) appendCombined(b []byte, e *logEntry, st *reqState, start time.Time) []byte {
	f := fieldsOf(e, st)
	b = appendField(b, f.host)
	b = append(b, " - - ["...)
	b = start.AppendFormat(b, "02/Jan/2006:15:04:05 -0700")
	b = append(b, "] "...)
	b = appendQuotedRequestLine(b, e.method, e.uri, e.proto)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(f.status), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, e.bytes, 10)
	b = append(b, ' ')
	b = appendQuoted(b, e.referer)
	b = append(b, ' ')
	b = appendQuoted(b, e.userAgent)
	if st.pv != nil {
		b = append(b, " pool="...)
		b = appendField(b, f.pool)
	}
	b = append(b, " alias="...)
	b = appendQuoted(b, st.keys.query)
	b = append(b, " cookie="...)
	b = appendQuoted(b, st.keys.cookie)
	b = append(b, " route="...)
	b = appendField(b, f.route)
	b = append(b, " retried_from="...)
	b = appendField(b, f.retriedFrom)
	b = append(b, " upstream="...)
	b = appendField(b, f.upstream)
	b = append(b, " upstream_time="...)
	b = strconv.AppendFloat(b, st.upstreamTime.Seconds(), 'f', 3, 64)
	b = append(b, " time="...)
	b = strconv.AppendFloat(b, time.Since(start).Seconds(), 'f', 3, 64)
	b = append(b, " node="...)
	b = append(b, l.node...)
	return append(b, '\n')
}

func (l *accessLogger) appendJSON(b []byte, e *logEntry, st *reqState, start time.Time) []byte {
	f := fieldsOf(e, st)
	b = append(b, `{"timestamp":"`...)
	b = start.UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
	b = append(b, `","node":`...)
	b = append(b, l.node...)
	b = append(b, `,"remote_addr":`...)
	b = appendJSONString(b, f.host)
	b = append(b, `,"method":`...)
	b = appendJSONString(b, e.method)
	b = append(b, `,"uri":`...)
	b = appendJSONString(b, e.uri)
	b = append(b, `,"proto":`...)
	b = appendJSONString(b, e.proto)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(f.status), 10)
	b = append(b, `,"bytes":`...)
	b = strconv.AppendInt(b, e.bytes, 10)
	b = append(b, `,"referer":`...)
	b = appendJSONString(b, e.referer)
	b = append(b, `,"user_agent":`...)
	b = appendJSONString(b, e.userAgent)
	b = append(b, `,"pool":`...)
	b = appendJSONString(b, f.pool)
	b = append(b, `,"alias":`...)
	b = appendJSONString(b, st.keys.query)
	b = append(b, `,"cookie":`...)
	b = appendJSONString(b, st.keys.cookie)
	b = append(b, `,"route":`...)
	b = appendJSONString(b, f.route)
	b = append(b, `,"retried_from":`...)
	b = appendJSONString(b, f.retriedFrom)
	b = append(b, `,"upstream":`...)
	b = appendJSONString(b, f.upstream)
	b = append(b, `,"upstream_time":`...)
	b = strconv.AppendFloat(b, st.upstreamTime.Seconds(), 'f', 3, 64)
	b = append(b, `,"time":`...)
	b = strconv.AppendFloat(b, time.Since(start).Seconds(), 'f', 3, 64)
	return append(b, "}\n"...)
}

func appendQuoted(b []byte, s string) []byte {
	if s == "" {
		return append(b, `"-"`...)
	}
	return appendQuote(b, s)
}

// appendQuote is strconv.AppendQuote, with a fast path for what most
// fields are: printable ASCII that needs no escape (strconv looks each
// rune up in its Unicode tables, several times slower).
func appendQuote(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c >= 0x7f || c == '"' || c == '\\' {
			return strconv.AppendQuote(b, s)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendQuotedRequestLine appends strconv.Quote(method+" "+uri+" "+proto)
// without building that string: Go quoting works rune by rune, and no rune
// spans the ASCII spaces between the parts, so quoting each part and
// joining the insides gives the same bytes.
func appendQuotedRequestLine(b []byte, method, uri, proto string) []byte {
	b = appendQuote(b, method)
	for _, part := range [...]string{uri, proto} {
		b[len(b)-1] = ' ' // the closing quote becomes the separator
		n := len(b)
		b = appendQuote(b, part)
		b = append(b[:n], b[n+1:]...) // drop the part's opening quote
	}
	return b
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
			return appendQuote(b, s)
		}
	}
	return append(b, s...)
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string. Control bytes, DEL, U+2028
// and U+2029 are escaped, so a line stays one line for any reader; a byte
// that is not part of valid UTF-8 becomes U+FFFD, as encoding/json does.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != 0x7f {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
