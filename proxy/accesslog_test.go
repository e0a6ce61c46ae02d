package proxy

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gwelb/gwelb/fsm"
)

func TestParseAccessLogFormat(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    AccessLogFormat
		wantErr bool
	}{
		{"", AccessLogCombined, false},
		{"combined", AccessLogCombined, false},
		{"json", AccessLogJSON, false},
		{"JSON", 0, true},
		{"common", 0, true},
	} {
		got, err := ParseAccessLogFormat(tc.in)
		if (err != nil) != tc.wantErr || (err == nil && got != tc.want) {
			t.Errorf("ParseAccessLogFormat(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
		if err != nil && !strings.Contains(err.Error(), "want combined or json") {
			t.Errorf("ParseAccessLogFormat(%q): error %q does not say what is accepted", tc.in, err)
		}
	}
}

// jsonLine decodes one JSON access log line, checks that it has exactly
// the documented keys in the documented order, and returns it.
func jsonLine(t *testing.T, line string) map[string]any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(line))
	dec.UseNumber()
	var keys []string
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not a JSON object: %q", line)
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		keys = append(keys, tok.(string))
		var v any
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("%q: value of %s: %v", line, tok, err)
		}
	}
	if !slices.Equal(keys, accessLogJSONFields) {
		t.Errorf("keys %v, want %v", keys, accessLogJSONFields)
	}
	m := map[string]any{}
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		t.Fatalf("%q: %v", line, err)
	}
	for k, v := range m {
		_, isNum := v.(float64)
		_, isStr := v.(string)
		switch k {
		case "status", "bytes", "upstream_time", "time":
			if !isNum {
				t.Errorf("%s = %#v, want a number", k, v)
			}
		default:
			if !isStr {
				t.Errorf("%s = %#v, want a string", k, v)
			}
		}
	}
	return m
}

// The JSON format: one object per request with every documented field,
// the same values the combined format shows.
func TestAccessLogJSON(t *testing.T) {
	s := startSeed(t, Options{AccessLogFormat: AccessLogJSON, NodeName: "n1"}, ListenerConfig{})
	wantServer(t, s.get(t, "/frontend/x?alias=.GWE_F_2&marker=one", "FRONTEND_ROUTEID=.GWE_F_1"), "GWE_F_2")
	m := jsonLine(t, s.logLine(t, "marker=one"))
	want := map[string]any{
		"node": "n1", "remote_addr": "127.0.0.1", "method": "GET", "uri": "/frontend/x?alias=.GWE_F_2&marker=one",
		"proto": "HTTP/1.1", "status": 200.0, "bytes": 8.0, "referer": "", "user_agent": "Go-http-client/1.1",
		"pool": "frontend", "alias": ".GWE_F_2", "cookie": ".GWE_F_1", "route": "GWE_F_2", "retried_from": "",
		"upstream": strings.TrimPrefix(s.front[1].ts.URL, "http://"),
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %#v, want %#v", k, m[k], v)
		}
	}
	ts, err := time.Parse(time.RFC3339Nano, m["timestamp"].(string))
	if err != nil || time.Since(ts) > time.Minute || time.Since(ts) < 0 {
		t.Errorf("timestamp %q: %v", m["timestamp"], err)
	}

	// A balancer answer: no member, empty strings, still every field.
	s.get(t, "/nowhere?marker=two")
	m = jsonLine(t, s.logLine(t, "marker=two"))
	if m["status"] != 404.0 || m["pool"] != "" || m["route"] != "" || m["upstream"] != "" {
		t.Errorf("404 line: %v", m)
	}

	// Hostile client values stay inside their strings, one line each.
	before := len(s.log.lines())
	s.rawGet(t, "/backend/x?marker=three%0A%22", "User-Agent: a\" \"route\":\"9\"}{\"x\":\"", "Referer: \xff\xfe\u2028", "Cookie: ROUTEID=.2\\\"")
	waitFor(t, 5*time.Second, "the access log line", func() bool { return len(s.log.lines()) > before })
	lines := s.log.lines()[before:]
	if len(lines) != 1 {
		t.Fatalf("one request wrote %d lines: %q", len(lines), lines)
	}
	m = jsonLine(t, lines[0])
	if m["referer"] != "\ufffd\ufffd\u2028" || m["user_agent"] != `a" "route":"9"}{"x":"` {
		t.Errorf("hostile line decoded to referer %q user_agent %q", m["referer"], m["user_agent"])
	}
	if strings.ContainsRune(lines[0], '\u2028') {
		t.Errorf("line carries U+2028 unescaped: %q", lines[0])
	}
}

// appendJSONString agrees with encoding/json on every string it can
// represent, and never writes a control byte.
func TestAppendJSONString(t *testing.T) {
	for _, s := range []string{"", "plain", `q"b\s`, "\x00\x01\x1f\n\r\t", "é✓😀", "\xff", "a\xc3", "\u2028\u2029", "\x7f"} {
		got := appendJSONString(nil, s)
		var back string
		if err := json.Unmarshal(got, &back); err != nil {
			t.Errorf("%q: %s does not parse: %v", s, got, err)
			continue
		}
		if want := strings.ToValidUTF8(s, "\ufffd"); utf8.ValidString(s) && back != s || !utf8.ValidString(s) && back != want {
			t.Errorf("%q round-trips to %q", s, back)
		}
		if bytes.ContainsFunc(got, func(r rune) bool { return r < 0x20 || r == 0x7f || r == '\u2028' || r == '\u2029' }) {
			t.Errorf("%q: %q holds an unescaped control character", s, got)
		}
	}
}

// appendQuotedRequestLine writes what strconv.Quote of the joined request
// line writes, without building it; appendQuote's fast path writes what
// strconv.Quote does.
func TestAppendQuotedRequestLine(t *testing.T) {
	for _, s := range []string{"", " ", "~", "plain ascii", "\x7f", "\x1f", `"`, `\`, "é", "\xff"} {
		if got, want := string(appendQuote(nil, s)), strconv.Quote(s); got != want {
			t.Errorf("appendQuote(%q) = %s, want %s", s, got, want)
		}
	}
	for _, p := range [][3]string{
		{"GET", "/backend/x?a=1", "HTTP/1.1"},
		{"", "", ""},
		{"G\"ET", "/\xff\xc3", "HTTP/1.1\n"},
		{"GET", "/é\\", "\xe2\x82"},
	} {
		want := strconv.Quote(p[0] + " " + p[1] + " " + p[2])
		if got := string(appendQuotedRequestLine([]byte("x"), p[0], p[1], p[2])); got != "x"+want {
			t.Errorf("%q: got %s, want x%s", p, got, want)
		}
	}
}

// The one retry of rule 8 shows in both formats: the line names the
// member that served and the member whose connection failed.
func TestAccessLogRetriedFrom(t *testing.T) {
	back := startMembers(t, "/backend", "1", "2", "3")
	back[1].ts.Close() // member 2 refuses connections
	tbl := mustTable(t, backendPool(back))
	fallback := rendezvousRoute(t, mustTable(t, editMember(backendPool(back), "2", func(m *fsm.MemberSpec) { m.State = fsm.Disabled })), "backend", ".2")
	for _, format := range []AccessLogFormat{AccessLogCombined, AccessLogJSON} {
		t.Run(format.String(), func(t *testing.T) {
			h := startProxy(t, tbl, Options{AccessLogFormat: format, NodeName: "n2"}, ListenerConfig{})
			wantServer(t, h.get(t, "/backend/x?marker=retried", "ROUTEID=.2"), fallback)
			// Quarantined now: the next request goes to the fallback
			// without trying 2, and is no retry.
			wantServer(t, h.get(t, "/backend/x?marker=direct", "ROUTEID=.2"), fallback)
			retried, direct := h.logLine(t, "marker=retried"), h.logLine(t, "marker=direct")
			if format == AccessLogJSON {
				m, d := jsonLine(t, retried), jsonLine(t, direct)
				if m["route"] != fallback || m["retried_from"] != "2" || m["node"] != "n2" {
					t.Errorf("retried request logged route %v retried_from %v node %v; want %s, 2, n2", m["route"], m["retried_from"], m["node"], fallback)
				}
				if d["retried_from"] != "" {
					t.Errorf("request to the fallback without a retry logged retried_from %v", d["retried_from"])
				}
				return
			}
			if want := " route=" + fallback + " retried_from=2 upstream="; !strings.Contains(retried, want) || !strings.HasSuffix(retried, " node=n2") {
				t.Errorf("retried request logged %q; want %q and node=n2", retried, want)
			}
			if !strings.Contains(direct, " retried_from=- ") {
				t.Errorf("request to the fallback without a retry logged %q", direct)
			}
		})
	}
}

// logCase is one request as the access logger sees it, outside any server.
func logCase() (*logEntry, *reqState) {
	pv := &poolView{spec: fsm.PoolSpec{Name: "backend"}, members: []*memberState{{route: "2", host: "127.0.0.1:9092"}}}
	req := httptest.NewRequest(http.MethodGet, "/backend/cometd/connect?x=1", nil)
	req.Header.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64)")
	req.Header.Set("Referer", "https://shop.example/cart")
	st := &reqState{pv: pv, member: 0, keys: stickyKeys{cookie: ".2"}, upstreamTime: 1500 * time.Microsecond}
	return entryOf(req, 200, 512), st
}

// entryOf is the access log's view of req answered with status and n
// body bytes.
func entryOf(req *http.Request, status int, n int64) *logEntry {
	host, _, err := net.SplitHostPort(req.RemoteAddr)
	if err != nil {
		host = req.RemoteAddr
	}
	return &logEntry{remote: host, method: req.Method, uri: req.RequestURI, proto: req.Proto,
		referer: req.Referer(), userAgent: req.UserAgent(), status: status, bytes: n}
}

// The access log must stay cheap: a line costs no allocation in either
// format (the pooled buffer is reused).
func TestAccessLogAllocs(t *testing.T) {
	e, st := logCase()
	for _, format := range []AccessLogFormat{AccessLogCombined, AccessLogJSON} {
		l := newAccessLogger(io.Discard, format, "n1")
		l.log(e, st, time.Now()) // warm the buffer pool
		if n := testing.AllocsPerRun(1000, func() { l.log(e, st, time.Now()) }); n != 0 {
			t.Errorf("%s: %v allocs per line, want 0", format, n)
		}
	}
}

func BenchmarkAccessLog(b *testing.B) {
	e, st := logCase()
	for _, format := range []AccessLogFormat{AccessLogCombined, AccessLogJSON} {
		b.Run(format.String(), func(b *testing.B) {
			l := newAccessLogger(io.Discard, format, "n1")
			start := time.Now()
			b.ReportAllocs()
			for b.Loop() {
				l.log(e, st, start)
			}
		})
	}
}
