package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gwelb/gwelb/internal/rawio"
)

// errBadFraming is what a guarded connection returns once the client sent
// a request head (or chunked framing) that two HTTP parsers could read
// differently. net/http answers any read error that is not a plain network
// error with "400 Bad Request" and "Connection: close", and closes: exactly
// what HAProxy does with such a request.
var errBadFraming = errors.New("gwelb: ambiguous or malformed request framing")

// poison is what a guarded connection hands net/http after the good bytes
// of a refused head, before the error: a NUL is invalid anywhere in a
// request line or header, so net/http's parser refuses that head with 400.
// Returning the error at once would do the same, except when the head was
// pipelined behind a request still being served: net/http's one-byte
// background read would get the error and cancel that request.
var poison = []byte("\x00\r\n")

// errStopped is what reads return once the handler has given up on the
// rest of what the client sends (stopReading). It is a read timeout on
// purpose: net/http then closes without answering, and it never takes it
// for the end of a request body, which would start its background read of
// the next request while the connection is about to be reused (the
// "invalid concurrent Body.Read call" panic of golang/go#68560).
var errStopped error = &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}

// Lingering after a refused request: the client may still be sending, and
// closing a socket with unread bytes makes the kernel answer with a reset
// that can destroy the 400 before the client reads it.
const (
	lingerTime  = 500 * time.Millisecond
	lingerBytes = 256 << 10
)

// guardListener accepts at most maxConns connections at a time (beyond
// that, new ones wait in the kernel's accept queue, as with HAProxy's
// maxconn and netutil.LimitListener), terminates TLS, and hands net/http
// connections whose request heads are checked byte for byte before
// net/http parses them.
//
// It is one wrapper rather than netutil.LimitListener around tls.Listener
// around a guard: net/http learns about TLS only from a connection that
// implements ConnectionState, and half-closes only one that implements
// CloseWrite, and LimitListener's connection type hides both.
type guardListener struct {
	net.Listener
	tls     *tls.Config   // nil: plain HTTP
	sem     chan struct{} // one token per open connection; nil: no limit
	done    chan struct{}
	once    sync.Once
	maxHead int           // bytes of one request head (or trailer) at most
	hsTime  time.Duration // TLS handshake timeout
	log     *slog.Logger
}

func newGuardListener(ln net.Listener, tc *tls.Config, maxConns, maxHead int, hsTime time.Duration, log *slog.Logger) *guardListener {
	l := &guardListener{Listener: ln, tls: tc, done: make(chan struct{}), maxHead: maxHead, hsTime: hsTime, log: log}
	if maxConns > 0 {
		l.sem = make(chan struct{}, maxConns)
	}
	return l
}

func (l *guardListener) Accept() (net.Conn, error) {
	if l.sem != nil {
		select {
		case l.sem <- struct{}{}:
		case <-l.done:
			return nil, net.ErrClosed
		}
	}
	c, err := l.Listener.Accept()
	if err != nil {
		if l.sem != nil {
			<-l.sem
		}
		return nil, err
	}
	g := &guardConn{Conn: c, l: l}
	g.p.maxHead = l.maxHead
	if l.tls == nil {
		g.raw.Init(c)
		return g, nil
	}
	tc := tls.Server(c, l.tls)
	g.Conn = tc
	return &tlsGuardConn{guardConn: g, tc: tc}, nil
}

// Close stops accepting; an Accept waiting for a free slot returns too.
func (l *guardListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// guardConn checks what the client sends before net/http reads it.
// net/http reads a connection from one goroutine at a time, so the parser
// needs no lock; Close may come from another goroutine (Shutdown).
type guardConn struct {
	net.Conn
	l        *guardListener
	p        headParser
	err      error       // sticky: returned by every Read once set (after pending)
	pending  []byte      // poison bytes still to hand out
	poisoned atomic.Bool // err is errBadFraming: linger on Close
	linger   atomic.Bool // the handler refused the request's body: linger on Close
	stopped  atomic.Bool // the handler gave up on the client's bytes: reads fail (errStopped)
	once     sync.Once
	raw      rawio.IO // reads and writes of a plain TCP connection
	// While await is set, a write to a plain TCP connection waits for
	// the client's next bytes after it, and runs then before the wait
	// (clientConn.finish).
	await bool
	then  func() bool
}

// Write writes to the client.
func (c *guardConn) Write(b []byte) (int, error) {
	if c.raw.Ready() {
		if c.await {
			return c.raw.WriteAwait(b, c.then)
		}
		return c.raw.Write(b)
	}
	return c.Conn.Write(b)
}

// betweenRequests reports whether the guard expects the first byte of a
// request head next: the client's last request, its body included, is
// read to its end, and nothing of the next one yet.
func (c *guardConn) betweenRequests() bool {
	return c.err == nil && !c.stopped.Load() && c.p.state == psHead && c.p.headLen == 0 && c.p.lineLen == 0
}

// refused reports whether the guard refused what the client sent on this
// connection: whatever failed after that is the client's doing.
func (c *guardConn) refused() bool { return c != nil && c.poisoned.Load() }

// stopReading makes every later read of the connection fail with
// errStopped, and Close linger: the handler answered without reading the
// client's body to its end, so what follows on the wire is not a request
// (it must not be parsed as one), and net/http must not wait for it with
// no deadline. A read in progress is woken.
func (c *guardConn) stopReading() {
	if c == nil {
		return
	}
	c.linger.Store(true)
	if !c.stopped.Swap(true) {
		_ = c.Conn.SetReadDeadline(time.Now())
	}
}

// inBody reports whether the client's next n bytes are all request body
// bytes the guard would only count: they may then bypass Read (spliced,
// splice_linux.go) if spliced is told of them.
func (c *guardConn) inBody(n int64) bool {
	return c != nil && c.err == nil && !c.stopped.Load() && c.p.state == psBody && n >= 0 && c.p.remaining >= uint64(n)
}

// spliced tells the guard n body bytes went by without Read (inBody).
func (c *guardConn) spliced(n int) {
	if n <= 0 || c.p.state != psBody {
		return
	}
	if uint64(n) >= c.p.remaining {
		c.p.nextHead()
		return
	}
	c.p.remaining -= uint64(n)
}

func (c *guardConn) Read(b []byte) (int, error) {
	if c.stopped.Load() {
		return 0, errStopped
	}
	if c.err != nil {
		if len(c.pending) > 0 {
			n := copy(b, c.pending)
			c.pending = c.pending[n:]
			return n, nil
		}
		return 0, c.err
	}
	var n int
	var err error
	if c.raw.Ready() {
		n, err = c.raw.Read(b)
	} else {
		n, err = c.Conn.Read(b)
	}
	if n > 0 && !c.p.passthrough() {
		if ok, why := c.p.scan(b[:n]); !ok {
			c.err = errBadFraming
			c.poisoned.Store(true)
			if c.p.state == psHead {
				c.pending = poison
			}
			// In a body or trailer the error itself is right: it fails
			// the body read, and the handler answers 400.
			c.l.log.Debug("refused a request with ambiguous framing", "remote", c.RemoteAddr().String(), "why", why)
			// What came before the bad byte is delivered: net/http then
			// stops in the middle of this head (or chunk), never with a
			// complete request made of it.
			if c.p.cut == 0 {
				return c.Read(b)
			}
			return c.p.cut, nil
		}
	}
	return n, err
}

// Close releases the connection's slot; after a refused request it first
// half-closes and drains what the client is still sending (bounded), so
// the 400 reaches it.
func (c *guardConn) Close() error {
	var err error
	c.once.Do(func() {
		if c.poisoned.Load() || c.linger.Load() {
			c.drain()
		}
		err = c.Conn.Close()
		if c.l.sem != nil {
			<-c.l.sem
		}
	})
	return err
}

func (c *guardConn) drain() {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
		if c.Conn.SetReadDeadline(time.Now().Add(lingerTime)) == nil {
			_, _ = io.CopyN(io.Discard, c.Conn, lingerBytes) // whatever it was, it is refused
		}
	}
}

// CloseWrite lets net/http half-close (it does before answering 431).
func (c *guardConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// tlsGuardConn is a guarded TLS connection. net/http sets Request.TLS from
// ConnectionState, which it calls once before reading the first request;
// the handshake runs there, in the connection's own goroutine, bounded by
// the header read timeout (net/http does the same for a *tls.Conn).
type tlsGuardConn struct {
	*guardConn
	tc     *tls.Conn
	hsOnce sync.Once
}

func (c *tlsGuardConn) ConnectionState() tls.ConnectionState {
	c.hsOnce.Do(c.handshake)
	return c.tc.ConnectionState()
}

func (c *tlsGuardConn) handshake() {
	if c.l.hsTime > 0 {
		_ = c.tc.SetDeadline(time.Now().Add(c.l.hsTime))
	}
	err := c.tc.HandshakeContext(context.Background())
	_ = c.tc.SetDeadline(time.Time{})
	if err == nil {
		return
	}
	// A plain HTTP request to the TLS port gets a readable answer, as
	// net/http gives it.
	var re tls.RecordHeaderError
	if errors.As(err, &re) && re.Conn != nil && looksLikeHTTP(re.RecordHeader[:]) {
		_, _ = io.WriteString(re.Conn, "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
	}
	c.l.log.Debug("tls handshake failed", "remote", c.RemoteAddr().String(), "err", err)
	c.err = io.EOF // net/http closes quietly
}

func looksLikeHTTP(hdr []byte) bool {
	for _, m := range []string{"GET /", "HEAD ", "POST ", "PUT /", "OPTIO"} {
		if string(hdr) == m {
			return true
		}
	}
	return false
}

// headParser follows a client's byte stream request by request: it checks
// each request head (and chunked trailer) line by line and skips bodies by
// their framing, so it knows where the next head starts on a keep-alive
// connection with pipelined requests. Its state is a few fixed-size
// fields: nothing is allocated, and nothing of a head is kept but the
// start of the current line.
//
// It refuses, with net/http then answering 400 and closing:
//   - a bare LF line ending anywhere in a head or in chunked framing;
//   - obs-fold (a header line starting with a space or tab);
//   - Content-Length together with Transfer-Encoding, Transfer-Encoding on
//     anything but HTTP/1.1, more than one Transfer-Encoding line or one other than
//     "chunked", a Content-Length that is not a number, or two that differ;
//   - an empty request line, and a head longer than maxHead;
//   - chunk framing net/http would not read the same way.
//
// Framing follows net/http's (RFC 9112 §6): a request without
// Content-Length or Transfer-Encoding has no body. After a GET with an
// Upgrade header the rest of the connection may be a WebSocket, so the
// parser stops looking; the handler closes the connection after any
// upgrade request that does not switch protocols.
type headParser struct {
	state   uint8
	maxHead int
	cut     int // bytes of the last scanned buffer before the refused byte

	// The current line.
	line    [lineKeep]byte // its first bytes
	lineLen int            // its length so far, CR included
	lastCR  bool           // its last byte so far is CR
	tail    [10]byte       // the request line's last 10 bytes (" HTTP/1.1\r")
	// The current head.
	headLen   int
	lines     int // complete lines of the head so far
	get       bool
	http11    bool // the request line says HTTP/1.1: Transfer-Encoding is honoured
	upgrade   bool
	nCL, nTE  int
	cl        uint64
	chunkLine int    // bytes of the current chunk-size line
	remaining uint64 // body bytes (Content-Length) or chunk data bytes left
	digits    int    // hex digits of the chunk size so far
}

// lineKeep is how much of a line the parser keeps: enough for the names
// and values it must read (Content-Length, Transfer-Encoding, Upgrade, the
// request method).
const lineKeep = 128

// maxChunkLine is net/http's limit for a chunk-size line.
const maxChunkLine = 4096

const (
	psHead      uint8 = iota // in a request head
	psBody                   // in a Content-Length body
	psChunkSize              // chunk size digits
	psChunkWS                // whitespace after the size
	psChunkExt               // a chunk extension
	psChunkLF                // CR seen, LF expected
	psChunkData              // chunk data
	psDataCR                 // CR after the chunk data expected
	psDataLF                 // LF after the chunk data expected
	psTrailer                // in the trailer section
	psPass                   // an upgraded connection: not HTTP any more
)

func (p *headParser) passthrough() bool { return p.state == psPass }

// scan checks b, the next bytes of the stream. When it refuses them it
// reports why and sets p.cut to the number of bytes before the refused one.
func (p *headParser) scan(b []byte) (ok bool, why string) {
	for i := 0; i < len(b); {
		switch p.state {
		case psPass:
			return true, ""
		case psBody:
			n := uint64(len(b) - i)
			if n >= p.remaining {
				i += int(p.remaining)
				p.nextHead()
				continue
			}
			p.remaining -= n
			return true, ""
		case psChunkData:
			n := uint64(len(b) - i)
			if n >= p.remaining {
				i += int(p.remaining)
				p.state = psDataCR
				continue
			}
			p.remaining -= n
			return true, ""
		case psHead, psTrailer:
			j := bytes.IndexByte(b[i:], '\n')
			seg := b[i:]
			if j >= 0 {
				seg = b[i : i+j]
			}
			if p.lineLen == 0 && len(seg) > 0 && (p.lines > 0 || p.state == psTrailer) && (seg[0] == ' ' || seg[0] == '\t') {
				return p.refuse(i, "obs-fold (a header line starting with whitespace)")
			}
			if p.headLen+len(seg) > p.maxHead {
				return p.refuse(i+p.maxHead-p.headLen, "request head too long")
			}
			p.headLen += len(seg)
			p.addToLine(seg)
			if j < 0 {
				return true, ""
			}
			i += j // at the LF
			if !p.lastCR {
				return p.refuse(i, "bare LF line ending")
			}
			p.headLen++
			if why := p.endLine(); why != "" {
				return p.refuse(i, why)
			}
			i++
		default: // chunk framing, a byte at a time: these lines are short
			c := b[i]
			if p.state != psDataCR && p.state != psDataLF {
				p.chunkLine++
				if p.chunkLine >= maxChunkLine {
					return p.refuse(i, "chunk size line too long")
				}
			}
			if why := p.chunkByte(c); why != "" {
				return p.refuse(i, why)
			}
			i++
		}
	}
	return true, ""
}

func (p *headParser) refuse(at int, why string) (bool, string) {
	p.cut = at
	return false, why
}

func (p *headParser) addToLine(seg []byte) {
	if len(seg) == 0 {
		return
	}
	if p.lineLen < lineKeep {
		copy(p.line[p.lineLen:], seg)
	}
	if p.lines == 0 && p.state == psHead {
		// Keep the request line's last bytes for its version.
		if len(seg) >= len(p.tail) {
			copy(p.tail[:], seg[len(seg)-len(p.tail):])
		} else {
			copy(p.tail[:], p.tail[len(seg):])
			copy(p.tail[len(p.tail)-len(seg):], seg)
		}
	}
	p.lineLen += len(seg)
	p.lastCR = seg[len(seg)-1] == '\r'
}

// endLine judges the line that just ended with CRLF.
func (p *headParser) endLine() string {
	n := p.lineLen - 1 // without the CR
	kept := p.line[:min(n, lineKeep)]
	p.lineLen, p.lastCR = 0, false
	if p.state == psTrailer {
		if n == 0 {
			p.nextHead()
		}
		return ""
	}
	if p.lines == 0 {
		p.lines++
		if n == 0 {
			return "empty request line"
		}
		p.get = bytes.HasPrefix(kept, []byte("GET "))
		// net/http ignores Transfer-Encoding below HTTP/1.1; RFC 9112
		// §6.1 calls its framing faulty. HTTP/1.2 and up are refused
		// with it too: nobody sends them.
		p.http11 = n >= len(p.tail)-1 && string(p.tail[:len(p.tail)-1]) == " HTTP/1.1"
		return ""
	}
	p.lines++
	if n > 0 {
		return p.header(kept, n)
	}
	// The end of the head: decide how the body is framed.
	switch {
	case p.nTE > 0 && p.nCL > 0:
		return "both Content-Length and Transfer-Encoding"
	case p.nTE > 0 && !p.http11:
		return "Transfer-Encoding in a request older than HTTP/1.1"
	case p.get && p.upgrade:
		p.state = psPass
	case p.nTE > 0:
		p.startChunk()
	case p.cl > 0:
		p.state, p.remaining = psBody, p.cl
		p.resetHead()
	default:
		p.nextHead()
	}
	return ""
}

// header judges one header line of n bytes whose first bytes are kept.
func (p *headParser) header(kept []byte, n int) string {
	colon := bytes.IndexByte(kept, ':')
	if colon < 0 {
		return "" // a long name, or no colon: net/http refuses the latter
	}
	name := kept[:colon]
	switch {
	case asciiEqualFold(name, "content-length"):
		if n > lineKeep {
			return "Content-Length line too long"
		}
		v, ok := parseDecimal(trimOWS(kept[colon+1:]))
		if !ok {
			return "invalid Content-Length"
		}
		if p.nCL > 0 && v != p.cl {
			return "two different Content-Length values"
		}
		p.nCL++
		p.cl = v
	case asciiEqualFold(name, "transfer-encoding"):
		if n > lineKeep {
			return "Transfer-Encoding line too long"
		}
		p.nTE++
		if p.nTE > 1 {
			return "more than one Transfer-Encoding"
		}
		if !asciiEqualFold(trimOWS(kept[colon+1:]), "chunked") {
			return "Transfer-Encoding other than chunked"
		}
	case asciiEqualFold(name, "upgrade"):
		p.upgrade = true
	}
	return ""
}

func (p *headParser) startChunk() {
	p.resetHead()
	p.state, p.chunkLine, p.digits, p.remaining = psChunkSize, 0, 0, 0
}

// chunkByte advances through chunk framing the way net/http's chunked
// reader reads it: hex digits, optional whitespace, an optional extension,
// CRLF; the data; CRLF.
func (p *headParser) chunkByte(c byte) string {
	switch p.state {
	case psChunkSize:
		if v, ok := hexDigit(c); ok {
			if p.digits == 16 {
				return "chunk size too large"
			}
			p.remaining = p.remaining<<4 | uint64(v)
			p.digits++
			return ""
		}
		if p.digits == 0 {
			return "invalid chunk size"
		}
		switch c {
		case ' ', '\t':
			p.state = psChunkWS
		case ';':
			p.state = psChunkExt
		case '\r':
			p.state = psChunkLF
		default:
			return "invalid chunk size"
		}
	case psChunkWS:
		switch c {
		case ' ', '\t':
		case '\r':
			p.state = psChunkLF
		default:
			return "invalid chunk size line"
		}
	case psChunkExt:
		switch c {
		case '\r':
			p.state = psChunkLF
		case '\n':
			return "bare LF in chunk framing"
		}
	case psChunkLF:
		if c != '\n' {
			return "CR without LF in chunk framing"
		}
		if p.remaining == 0 {
			p.state = psTrailer
			p.lineLen, p.lastCR = 0, false
			return ""
		}
		p.state = psChunkData
	case psDataCR:
		if c != '\r' {
			return "chunk data not followed by CRLF"
		}
		p.state = psDataLF
	case psDataLF:
		if c != '\n' {
			return "chunk data not followed by CRLF"
		}
		p.state, p.chunkLine, p.digits, p.remaining = psChunkSize, 0, 0, 0
	}
	return ""
}

// resetHead forgets the head just judged.
func (p *headParser) resetHead() {
	p.headLen, p.lines, p.lineLen, p.lastCR = 0, 0, 0, false
	p.get, p.http11, p.upgrade = false, false, false
	p.nCL, p.nTE, p.cl = 0, 0, 0
}

// nextHead expects the next request.
func (p *headParser) nextHead() {
	p.resetHead()
	p.state = psHead
}

func hexDigit(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// parseDecimal parses what net/http accepts as a Content-Length: 1 to 19
// decimal digits, below 2^63.
func parseDecimal(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 19 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	return v, v < 1<<63
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// asciiEqualFold compares b with lower, which is lower case ASCII.
func asciiEqualFold(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}
