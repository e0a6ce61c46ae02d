package proxy

import (
	"bufio"
	"errors"
	"io"
	"net/url"
	"strings"
	"unsafe"
)

// The request head parser of the forwarding path (DESIGN.md §1.2). It
// reads one request head from a client connection's reader into the
// connection's own buffer, reused from request to request, and gives the
// request line and the header lines as strings that point into that
// buffer: they are valid until the connection reads its next head, which
// is after the request's access log line is written. Nothing is allocated
// for an ordinary request.
//
// It is strict where two HTTP parsers could disagree (routing contract
// rule 9, DESIGN.md §4): it refuses what the connection guard (guard.go)
// refuses, on its own, so that each is a check of the other — a bare LF,
// obs-fold, Content-Length with Transfer-Encoding, a Transfer-Encoding
// other than one "chunked" on HTTP/1.1, Content-Lengths that are not one
// decimal number — and what net/http's server refuses: a malformed request
// line or version, a method or header name that is not a token, a header
// value with a control byte, a missing or repeated Host on HTTP/1.1, a
// request target net/url does not parse. FuzzHeadDifferential holds it to
// net/http's framing.

// header is one header line of a head: name and value (without optional
// whitespace) point into the head buffer.
type header struct{ name, value string }

// errHeadTooLarge is a head longer than the listener's limit (431).
var errHeadTooLarge = errors.New("request head too large")

// headError is a head the parser refuses: status (400, 417, 505) and why.
type headError struct {
	status int
	why    string
}

func (e *headError) Error() string { return e.why }

func badHead(why string) *headError { return &headError{status: 400, why: why} }

// Refusals, made once: refusing allocates nothing either.
var (
	errBadRequestLine = badHead("malformed request line")
	errBadMethod      = badHead("invalid method")
	errBadVersion     = badHead("malformed HTTP version")
	errVersion        = &headError{status: 505, why: "HTTP version not supported"}
	errBareLF         = badHead("bare LF line ending")
	errObsFold        = badHead("obs-fold")
	errBadHeaderLine  = badHead("malformed header line")
	errBadHeaderName  = badHead("invalid header name")
	errBadHeaderValue = badHead("invalid header value")
	errNoHost         = badHead("missing required Host header")
	errManyHosts      = badHead("too many Host headers")
	errBadHost        = badHead("malformed Host header")
	errBadCL          = badHead("invalid Content-Length")
	errTwoCL          = badHead("different Content-Length values")
	errCLAndTE        = badHead("both Content-Length and Transfer-Encoding")
	errBadTE          = badHead("unsupported Transfer-Encoding")
	errBadTarget      = badHead("invalid request target")
	errExpect         = &headError{status: 417, why: "unsupported Expect"}
)

// reqHead is one parsed request head. The strings point into buf.
type reqHead struct {
	buf   []byte // the raw head, CRLFs included
	lines []int  // end offsets of the header lines in buf (after CRLF)

	method, target, proto string
	minor                 int // HTTP/1.<minor>
	headers               []header

	host      string // Host (or the authority of an absolute-form target)
	path      string // the decoded path, as net/http's URL.Path
	rawPath   string // the path as sent
	rawQuery  string
	hasQuery  bool
	length    int64 // Content-Length; -1 when none
	chunked   bool
	keepAlive bool // the client lets the connection stay open
	expect    bool // Expect: 100-continue
	upgrade   bool // an Upgrade header was sent
	teTrailer bool // TE names "trailers"
	connNames bool // Connection names a header other than close, keep-alive, upgrade
}

// str returns buf[i:j] as a string sharing its bytes.
func (h *reqHead) str(i, j int) string {
	if i >= j {
		return ""
	}
	return unsafe.String(&h.buf[i], j-i)
}

// get returns the value of the first header called name (canonical or
// not: compared without case), and whether there was one.
func (h *reqHead) get(name string) (string, bool) {
	for i := range h.headers {
		if strings.EqualFold(h.headers[i].name, name) {
			return h.headers[i].value, true
		}
	}
	return "", false
}

// readHead reads one head from br into h. max bounds the head (request
// line and header lines, CRLFs included). It returns errHeadTooLarge, a
// *headError, or the reader's error (io.EOF before any byte: the client
// closed between requests).
func (h *reqHead) readHead(br *bufio.Reader, max int) error {
	h.buf = h.buf[:0]
	h.lines = h.lines[:0]
	for {
		line, err := br.ReadSlice('\n')
		if len(h.buf)+len(line) > max {
			return errHeadTooLarge
		}
		h.buf = append(h.buf, line...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			if len(h.buf) > 0 && errors.Is(err, io.EOF) {
				return errUnexpectedEOFHead
			}
			return err
		}
		n := len(h.buf)
		if n < 2 || h.buf[n-2] != '\r' {
			return errBareLF
		}
		h.lines = append(h.lines, n)
		start := 0
		if len(h.lines) > 1 {
			start = h.lines[len(h.lines)-2]
		}
		if n-start == 2 {
			if len(h.lines) == 1 {
				return errBadRequestLine // an empty request line
			}
			return h.parse()
		}
	}
}

// errUnexpectedEOFHead is a head cut off by the end of the stream.
var errUnexpectedEOFHead = errors.New("unexpected EOF in request head")

// parse judges the head in buf (complete, every line ending in CRLF).
func (h *reqHead) parse() error {
	h.headers = h.headers[:0]
	h.host, h.path, h.rawPath, h.rawQuery, h.hasQuery = "", "", "", "", false
	h.length, h.chunked, h.expect, h.upgrade, h.teTrailer = -1, false, false, false, false
	h.connNames = false
	// The request line: method SP target SP version, nothing else.
	end := h.lines[0] - 2
	line := h.str(0, end)
	sp1 := strings.IndexByte(line, ' ')
	if sp1 <= 0 {
		return errBadRequestLine
	}
	rest := line[sp1+1:]
	sp2 := strings.IndexByte(rest, ' ')
	if sp2 <= 0 {
		return errBadRequestLine
	}
	h.method, h.target, h.proto = line[:sp1], rest[:sp2], rest[sp2+1:]
	if !isToken(h.method) {
		return errBadMethod
	}
	switch h.proto {
	case "HTTP/1.1":
		h.minor = 1
	case "HTTP/1.0":
		h.minor = 0
	default:
		p := h.proto
		if len(p) != 8 || p[:5] != "HTTP/" || p[6] != '.' || !isDigit(p[5]) || !isDigit(p[7]) {
			return errBadVersion
		}
		if p[5] != '1' {
			return errVersion
		}
		h.minor = int(p[7] - '0')
	}
	for i := 0; i < len(h.target); i++ {
		if c := h.target[i]; c < ' ' || c == 0x7f {
			return errBadTarget
		}
	}

	var hosts, cls int
	closeTok, keepTok := false, false
	for li := 1; li < len(h.lines)-1; li++ {
		start, stop := h.lines[li-1], h.lines[li]-2
		if c := h.buf[start]; c == ' ' || c == '\t' {
			return errObsFold
		}
		l := h.str(start, stop)
		colon := strings.IndexByte(l, ':')
		if colon <= 0 {
			return errBadHeaderLine
		}
		name := l[:colon]
		if !isToken(name) {
			return errBadHeaderName
		}
		value := trimOWSString(l[colon+1:])
		if !validValue(value) {
			return errBadHeaderValue
		}
		h.headers = append(h.headers, header{name, value})
		switch len(name) {
		case 4:
			if strings.EqualFold(name, "host") {
				hosts++
				h.host = value
			}
		case 14:
			if strings.EqualFold(name, "content-length") {
				v, ok := parseDecimal(unsafe.Slice(unsafe.StringData(value), len(value)))
				if !ok {
					return errBadCL
				}
				if cls > 0 && int64(v) != h.length {
					return errTwoCL
				}
				cls++
				h.length = int64(v)
			}
		case 17:
			if strings.EqualFold(name, "transfer-encoding") {
				if h.chunked || h.minor == 0 || !strings.EqualFold(value, "chunked") {
					return errBadTE
				}
				h.chunked = true
			}
		case 6:
			if strings.EqualFold(name, "expect") && value != "" {
				if !strings.EqualFold(value, "100-continue") {
					return errExpect
				}
				h.expect = true
			}
		case 7:
			if strings.EqualFold(name, "upgrade") {
				h.upgrade = true
			}
		case 2:
			if strings.EqualFold(name, "te") && hasTokenString(value, "trailers") {
				h.teTrailer = true
			}
		case 10:
			if strings.EqualFold(name, "connection") {
				for t := range strings.SplitSeq(value, ",") {
					switch t = trimOWSString(t); {
					case strings.EqualFold(t, "close"):
						closeTok = true
					case strings.EqualFold(t, "keep-alive"):
						keepTok = true
					case strings.EqualFold(t, "upgrade"), t == "":
					default:
						h.connNames = true
					}
				}
			}
		}
	}
	if h.chunked && cls > 0 {
		return errCLAndTE
	}
	if h.chunked {
		h.length = -1
	}
	if h.minor >= 1 {
		if hosts == 0 {
			return errNoHost
		}
		h.keepAlive = !closeTok
	} else {
		h.keepAlive = keepTok && !closeTok
	}
	if hosts > 1 {
		return errManyHosts
	}
	if !validHost(h.host) {
		return errBadHost
	}
	if h.method == "CONNECT" {
		return nil // refused with 405 before its target matters
	}
	return h.parseTarget()
}

// parseTarget reads the path and query of the request target as net/http
// does: origin form ("/p?q") without allocating unless the path holds
// percent-escapes; absolute form ("http://h/p?q") and "*" through net/url.
func (h *reqHead) parseTarget() error {
	t := h.target
	if strings.HasPrefix(t, "/") {
		p, q, hasQ := strings.Cut(t, "?")
		h.rawPath, h.rawQuery, h.hasQuery = p, q, hasQ
		if strings.IndexByte(p, '%') < 0 {
			h.path = p
			return nil
		}
		dec, err := url.PathUnescape(p)
		if err != nil {
			return errBadTarget
		}
		h.path = dec
		return nil
	}
	u, err := url.ParseRequestURI(t)
	if err != nil {
		return errBadTarget
	}
	h.path, h.rawQuery, h.hasQuery = u.Path, u.RawQuery, u.ForceQuery || u.RawQuery != ""
	h.rawPath = rawPath(t)
	if u.Host != "" {
		h.host = u.Host
	}
	return nil
}

// forwardTarget is the target sent to the member: the client's own bytes
// in origin form; the path and query of an absolute-form target.
func (h *reqHead) forwardTarget() string {
	if strings.HasPrefix(h.target, "/") {
		return h.target
	}
	if h.target == "*" {
		return "*"
	}
	p := h.rawPath
	if p == "" {
		p = "/"
	}
	if h.hasQuery {
		return p + "?" + h.rawQuery
	}
	return p
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// tokenTable marks the bytes of an RFC 9110 token.
var tokenTable = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !tokenTable[s[i]] {
			return false
		}
	}
	return true
}

// validValue is net/http's check of a header value: no control byte but HTAB.
func validValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// hostTable marks the bytes net/http accepts in a Host header.
var hostTable = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!$%&'()*+,-.:;=[]_~" {
		t[c] = true
	}
	return t
}()

func validHost(s string) bool {
	for i := 0; i < len(s); i++ {
		if !hostTable[s[i]] {
			return false
		}
	}
	return true
}

func trimOWSString(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// hasTokenString reports whether a comma-separated value names token.
func hasTokenString(v, token string) bool {
	for t := range strings.SplitSeq(v, ",") {
		if strings.EqualFold(trimOWSString(t), token) {
			return true
		}
	}
	return false
}

// namedByConnection reports whether a Connection line of headers names
// header name: such headers are hop-by-hop and go no further.
func namedByConnection(headers []header, name string) bool {
	for _, h := range headers {
		if len(h.name) == 10 && strings.EqualFold(h.name, "connection") && hasTokenString(h.value, name) {
			return true
		}
	}
	return false
}

// respHead is a member's response head. The strings point into buf.
type respHead struct {
	buf   []byte
	lines []int

	minor      int
	status     int
	statusLine string // "200 OK": the status line after the version
	headers    []header
	length     int64 // Content-Length; -1 when none
	chunked    bool
	close      bool // the member closes the connection after this answer
	connNames  bool // Connection names other headers
	upgrade    string
	connUp     bool // Connection names upgrade
}

// errBadResponse is a response head the balancer cannot read (502).
var errBadResponse = errors.New("gwelb: malformed response from member")

// maxResponseHead bounds a member's response head.
const maxResponseHead = 1 << 20

// read reads one response head from br.
func (r *respHead) read(br *bufio.Reader, head bool) error {
	r.buf, r.lines = r.buf[:0], r.lines[:0]
	for {
		line, err := br.ReadSlice('\n')
		if len(r.buf)+len(line) > maxResponseHead {
			return errBadResponse
		}
		r.buf = append(r.buf, line...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			if errors.Is(err, io.EOF) && len(r.buf) > 0 {
				return io.ErrUnexpectedEOF
			}
			return err
		}
		r.lines = append(r.lines, len(r.buf))
		start := 0
		if len(r.lines) > 1 {
			start = r.lines[len(r.lines)-2]
		}
		if l := len(r.buf) - start; l == 1 || (l == 2 && r.buf[start] == '\r') {
			if len(r.lines) == 1 {
				return errBadResponse
			}
			return r.parse()
		}
	}
}

func (r *respHead) str(i, j int) string {
	for j > i && (r.buf[j-1] == '\n' || r.buf[j-1] == '\r') {
		j--
	}
	if i >= j {
		return ""
	}
	return unsafe.String(&r.buf[i], j-i)
}

func (r *respHead) parse() error {
	r.headers = r.headers[:0]
	r.length, r.chunked, r.close, r.connNames, r.upgrade, r.connUp = -1, false, false, false, "", false
	line := r.str(0, r.lines[0])
	if len(line) < 12 || line[:7] != "HTTP/1." || !isDigit(line[7]) || line[8] != ' ' {
		return errBadResponse
	}
	r.minor = int(line[7] - '0')
	r.statusLine = line[9:]
	code := r.statusLine
	if len(code) > 3 {
		if code[3] != ' ' {
			return errBadResponse
		}
		code = code[:3]
	}
	if len(code) != 3 || !isDigit(code[0]) || !isDigit(code[1]) || !isDigit(code[2]) || code[0] == '0' {
		return errBadResponse
	}
	r.status = int(code[0]-'0')*100 + int(code[1]-'0')*10 + int(code[2]-'0')
	if len(r.statusLine) == 3 {
		r.statusLine = code
	}
	keepAlive := false
	for li := 1; li < len(r.lines)-1; li++ {
		l := r.str(r.lines[li-1], r.lines[li])
		colon := strings.IndexByte(l, ':')
		if colon <= 0 {
			return errBadResponse
		}
		name, value := l[:colon], trimOWSString(l[colon+1:])
		if !isToken(name) || !validValue(value) {
			return errBadResponse
		}
		r.headers = append(r.headers, header{name, value})
		switch {
		case strings.EqualFold(name, "content-length"):
			v, ok := parseDecimal(unsafe.Slice(unsafe.StringData(value), len(value)))
			if !ok || (r.length >= 0 && int64(v) != r.length) {
				return errBadResponse
			}
			r.length = int64(v)
		case strings.EqualFold(name, "transfer-encoding"):
			if !strings.EqualFold(value, "chunked") || r.chunked {
				return errBadResponse
			}
			r.chunked = true
		case strings.EqualFold(name, "connection"):
			for t := range strings.SplitSeq(value, ",") {
				switch t = trimOWSString(t); {
				case strings.EqualFold(t, "close"):
					r.close = true
				case strings.EqualFold(t, "keep-alive"):
					keepAlive = true
				case strings.EqualFold(t, "upgrade"):
					r.connUp = true
				case t == "":
				default:
					r.connNames = true
				}
			}
		case strings.EqualFold(name, "upgrade"):
			r.upgrade = value
		}
	}
	if r.chunked {
		r.length = -1
	}
	if r.minor == 0 && !keepAlive {
		r.close = true
	}
	return nil
}
