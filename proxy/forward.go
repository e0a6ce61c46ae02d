package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gwelb/gwelb/fsm"
)

// This file is one request's way through the balancer, top to bottom
// (DESIGN.md §1.2): refuse, route and pick, then the attempt loop — send
// the head (and the body, full duplex) to the member, read its answer —
// where a member's connection failure quarantines it, reports it to the
// Observer and moves the request once to the fallback (routing contract
// rule 8); then the answer is relayed with the route cookie (rule 7), or
// the connection becomes a WebSocket tunnel; and the request is recorded
// in the metrics and the access log. Nothing here is a callback: each
// step reads and writes the request's own state (exchange, reqState) in
// order.

// reqState is one request's routing decision and what became of it, for
// the metrics (metrics.go) and the access log (accesslog.go).
type reqState struct {
	pv      *poolView
	keys    stickyKeys
	value   string // the sticky value that decided (query beats cookie)
	carried string // the route the request carried, "" if none
	member  int    // index of the member serving the request
	behind  bool   // refused: this node may be behind the cluster (§6.1)
	body    *reqBody

	upstreamStart time.Time
	upstreamTime  time.Duration
	status        int // status the member answered; 0 if none did
	// retriedFrom is the route of the member whose connection failed
	// when the one retry (rule 8) moved the request; "" when none did.
	retriedFrom string

	websocket bool // the member accepted a WebSocket: counted in gwelb_websockets until the request ends
}

// exchange is one request on a client connection, reused by the next.
type exchange struct {
	c     *clientConn
	head  reqHead
	resp  respHead
	st    reqState
	start time.Time

	status int   // the status answered to the client; 0 if none was
	bytes  int64 // response body bytes written to the client
	close  bool  // the connection closes after this answer
	// extraHeader is a header line (CRLF included) for the balancer's own
	// answer (answer), "" for none.
	extraHeader string

	send *bodySender // the attempt's body sender, nil without a body
}

// serve answers one request; it reports whether the connection may carry
// another.
func (s *Server) serve(x *exchange) bool {
	x.start = time.Now()
	x.st = reqState{member: -1}
	x.status, x.bytes, x.send, x.extraHeader = 0, 0, nil, ""
	x.close = !x.head.keepAlive || x.head.upgrade
	s.exchange(x)
	if b := x.st.body; b != nil {
		b.finish()
		if !b.complete() {
			// Answered before the client's body was all read: the rest
			// of it must never be read as the next request.
			x.c.g.stopReading()
			x.close = true
		}
	}
	x.c.wg.Wait()
	s.record(&x.st, x.status)
	s.accessLog.log(x.logEntry(), &x.st, x.start)
	return !x.close
}

// exchange routes the request, forwards it with at most one retry and
// relays the answer.
func (s *Server) exchange(x *exchange) {
	h, st := &x.head, &x.st
	if code, reason := refuse(h.method, h.target); code != 0 {
		x.answer(code, reason)
		return
	}

	// Route and pick (rules 1–6); a pick that would move a session waits
	// for a stale table to catch up once (§6.1).
	var pv *poolView
	for held := false; ; held = true {
		v := s.view.Load()
		if v == nil {
			x.answer(http.StatusServiceUnavailable, "gwelb: not ready: no routing table yet")
			return
		}
		pv = v.match(h.path)
		if pv == nil || (len(x.c.l.lc.Pools) > 0 && !slices.Contains(x.c.l.lc.Pools, pv.spec.Name)) {
			x.answer(http.StatusNotFound, "gwelb: no pool serves this path")
			return
		}
		st.pv = pv
		st.keys = readStickyHead(h, pv.spec.Sticky.Query, pv.spec.Sticky.Cookie)
		st.value = st.keys.value()
		st.carried = fsm.RouteOf(st.value)
		st.member = pv.pick(st.value, st.carried, time.Now().UnixNano())
		moves := st.carried != "" && (st.member < 0 || pv.pool.Member(st.member).Route != st.carried)
		if held && moves && s.refuseStaleMove(pv, st.carried) {
			// Still behind after the wait: 503 keeps the visitor's
			// cookie, and their retry reaches a node that knows the
			// member, or this one caught up (DESIGN.md §6.1).
			st.member, st.behind = -1, true
			x.extraHeader = "Retry-After: 1\r\n"
			x.answer(http.StatusServiceUnavailable, "gwelb: this node may be behind the cluster: route "+st.carried+" is unknown or disabled here; try again")
			return
		}
		if held || !moves || !s.awaitFresh(s.ctx, x.start) {
			break
		}
	}
	if st.member < 0 {
		x.answer(http.StatusServiceUnavailable, "gwelb: no usable member in pool "+pv.spec.Name)
		return
	}
	websocket := isWebSocket(h)
	if h.chunked || h.length > 0 {
		var src io.Reader
		if h.chunked {
			x.c.reqChunked.reset(x.c.br)
			src = &x.c.reqChunked
		} else {
			x.c.reqLength = lengthReader{r: x.c.br, n: h.length}
			src = &x.c.reqLength
		}
		st.body = s.newBody(src, x.c.g)
		if !h.chunked && x.c.tc == nil {
			st.body.length, st.body.guard = &x.c.reqLength, x.c.g // may be spliced (body.go)
		}
	}
	pv.members[st.member].inflight.Add(1)
	// A retry may move the request; release whichever member serves it last.
	defer func() { pv.members[st.member].inflight.Add(-1) }()

	// The attempt loop (rule 8). A connection the member closed while it
	// sat in the pool is replaced once without blame; a member's own
	// connection failure quarantines it, is observed, and moves the
	// request to the fallback once.
	var uc *upConn
	redialed, retried := false, false
	for {
		ms := pv.members[st.member]
		var reused bool
		var err error
		st.upstreamStart = time.Now()
		uc, reused, err = s.connect(ms, redialed)
		if err == nil {
			err = s.roundTrip(x, uc, ms, websocket)
		}
		if err == nil {
			break
		}
		if uc != nil {
			uc.conn.Close()
		}
		rewound := x.abandonBody()
		if st.upstreamTime == 0 {
			st.upstreamTime = time.Since(st.upstreamStart)
		}
		if x.clientFailed() {
			x.answerClientFailure()
			return
		}
		if reused && !redialed && isConnFailure(err) && rewound {
			redialed = true // the member closed an idle connection: not its failure
			continue
		}
		// The member's failure: quarantine after a connection failure,
		// and a health observation either way.
		s.fail(st, err)
		if !isConnFailure(err) || retried || !rewound {
			x.answerUpstreamFailure(err)
			return
		}
		next := pv.pickExcept(st.value, st.carried, time.Now().UnixNano(), st.member)
		if next < 0 {
			x.answerUpstreamFailure(err)
			return
		}
		s.log.Info("retrying on fallback member", "pool", pv.spec.Name, "failed", ms.route, "fallback", pv.members[next].route, "err", err)
		ms.metrics.retries.Inc()
		ms.inflight.Add(-1)
		pv.members[next].inflight.Add(1)
		st.retriedFrom = ms.route
		st.member = next
		retried, redialed = true, false
	}

	// The member answered.
	ms := pv.members[st.member]
	if st.body != nil {
		st.body.answered() // no retry can follow: the kept body goes
	}
	if x.resp.status == http.StatusSwitchingProtocols {
		s.tunnelWebSocket(x, uc, websocket)
		return
	}
	if s.relay(x, uc) {
		ms.pool.put(uc, time.Now())
	} else {
		uc.conn.Close()
	}
}

// connect returns a connection to ms: a warm one from its pool unless
// fresh is set, else a new one; reused says which.
func (s *Server) connect(ms *memberState, fresh bool) (*upConn, bool, error) {
	if !fresh {
		if uc := ms.pool.get(time.Now()); uc != nil {
			return uc, true, nil
		}
	}
	uc, err := s.dial(s.ctx, ms)
	return uc, false, err
}

// roundTrip sends the request head to the member, starts its body, and
// reads the member's response head into x.resp, relaying 100 Continue.
func (s *Server) roundTrip(x *exchange, uc *upConn, ms *memberState, websocket bool) error {
	h := &x.head
	x.writeRequestHead(uc.bw, ms, websocket)
	// Without a body to send, the flush waits for the answer (await.go),
	// for awaitMax at most: the read below finds it there, or waits
	// the rest of the response header timeout itself.
	sent := time.Now()
	t := s.opts.ResponseHeaderTimeout
	uc.await = x.st.body == nil && uc.raw.Ready()
	if uc.await {
		d := awaitMax
		if t > 0 {
			d = min(d, t)
		}
		_ = uc.conn.SetReadDeadline(sent.Add(d))
	}
	err := uc.bw.Flush()
	if t > 0 {
		_ = uc.conn.SetReadDeadline(sent.Add(t))
	} else if uc.await {
		_ = uc.conn.SetReadDeadline(time.Time{})
	}
	uc.await = false
	if err != nil {
		return err
	}
	if b := x.st.body; b != nil {
		x.send = newBodySender(x, uc, b.reader(), h.chunked, h.expect)
		x.c.wg.Add(1)
		go x.send.run()
	}
	for {
		if err := x.resp.read(uc.br, h.method == http.MethodHead); err != nil {
			return err
		}
		if x.resp.status >= 200 || x.resp.status == http.StatusSwitchingProtocols {
			break
		}
		// An interim answer: 100 Continue lets the body go.
		if x.resp.status == http.StatusContinue && x.send != nil {
			x.send.proceed()
		}
		if h.minor >= 1 {
			c := x.c
			c.bw.WriteString("HTTP/1.1 ")
			c.bw.WriteString(x.resp.statusLine)
			c.bw.WriteString("\r\n\r\n")
			if err := c.bw.Flush(); err != nil {
				x.close = true
			}
		}
	}
	_ = uc.conn.SetReadDeadline(time.Time{})
	x.st.status = x.resp.status
	x.st.upstreamTime = time.Since(x.st.upstreamStart)
	return nil
}

// abandonBody ends the failed attempt's body: its sender stops, and the
// body is rewound for the next attempt. It reports whether the next
// attempt can send the whole body (true without a body).
func (x *exchange) abandonBody() bool {
	b := x.st.body
	if b == nil {
		return true
	}
	ok := b.rewind()
	if x.send != nil {
		if ok {
			// The sender's reads now fail and its connection is closed:
			// it ends at once.
			x.send.proceed()
			<-x.send.done
		}
		x.send = nil
	}
	return ok
}

// clientFailed reports whether the request failed on the client's side:
// reading its body failed (malformed, reset, too slow).
func (x *exchange) clientFailed() bool {
	timedOut, err := x.st.body.clientFailure()
	return timedOut || err != nil
}

// answerClientFailure answers a request whose body failed on the client's
// side: 408 after the body timeout, 400 for a malformed body, nothing
// (499 in the log) for a client gone. The member is not blamed.
func (x *exchange) answerClientFailure() {
	timedOut, cerr := x.st.body.clientFailure()
	g := x.c.g
	g.stopReading()
	x.close = true
	x.c.s.log.Debug("request body failed on the client's side", "pool", x.st.pv.spec.Name, "timeout", timedOut, "err", cerr)
	switch {
	case timedOut:
		x.answer(http.StatusRequestTimeout, "gwelb: request body too slow")
	case g.refused() || errors.Is(cerr, errBadFraming) || errors.Is(cerr, errChunkLine) || errors.Is(cerr, errChunkExcess) || errors.Is(cerr, errTrailerLarge):
		x.answer(http.StatusBadRequest, "gwelb: malformed request body")
	default:
		x.status = 499 // the client went away mid-body
	}
}

// answerUpstreamFailure answers a request the member (and the fallback)
// gave no response: 504 on a timeout, else 502; never 500.
func (x *exchange) answerUpstreamFailure(err error) {
	st := x.st
	x.c.s.log.Warn("upstream request failed", "pool", st.pv.spec.Name, "route", st.pv.members[st.member].route, "err", err)
	if isTimeout(err) {
		x.answer(http.StatusGatewayTimeout, "gwelb: upstream timeout")
		return
	}
	x.answer(http.StatusBadGateway, "gwelb: upstream unavailable")
}

// fail records that the request's current member gave no response:
// quarantine after a connection failure, and a health observation.
func (s *Server) fail(st *reqState, err error) {
	m := st.pv.members[st.member]
	if isConnFailure(err) {
		m.quarantinedUntil.Store(time.Now().Add(st.pv.spec.Quarantine()).UnixNano())
	}
	(*s.observer.Load()).ObserveFailure(st.pv.spec.Name, m.route, err)
}

// isConnFailure reports whether err means the member never answered:
// refused, unreachable, reset or closed before any response byte, or a
// connect timeout.
func isConnFailure(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// writeRequestHead writes the head sent to the member: the request line
// with the target byte for byte, Host the member's, the client's headers
// but the hop-by-hop ones, X-Forwarded-For appended to as Apache does,
// X-Forwarded-Host and -Proto set (a client's own are dropped), and the
// body's framing.
func (x *exchange) writeRequestHead(bw *bufio.Writer, ms *memberState, websocket bool) {
	h := &x.head
	bw.WriteString(h.method)
	bw.WriteByte(' ')
	bw.WriteString(h.forwardTarget())
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(ms.host)
	bw.WriteString("\r\n")
	for _, hd := range h.headers {
		if dropRequestHeader(hd.name, websocket) || (h.connNames && namedByConnection(h.headers, hd.name)) {
			continue
		}
		bw.WriteString(hd.name)
		bw.WriteString(": ")
		bw.WriteString(hd.value)
		bw.WriteString("\r\n")
	}
	bw.WriteString("X-Forwarded-For: ")
	for _, hd := range h.headers {
		if len(hd.name) == 15 && strings.EqualFold(hd.name, "x-forwarded-for") {
			bw.WriteString(hd.value)
			bw.WriteString(", ")
		}
	}
	bw.WriteString(x.c.remote)
	if h.host != "" {
		bw.WriteString("\r\nX-Forwarded-Host: ")
		bw.WriteString(h.host)
	}
	if x.c.tls {
		bw.WriteString("\r\nX-Forwarded-Proto: https\r\n")
	} else {
		bw.WriteString("\r\nX-Forwarded-Proto: http\r\n")
	}
	if h.teTrailer {
		bw.WriteString("Te: trailers\r\n")
	}
	if websocket {
		bw.WriteString("Connection: Upgrade\r\nUpgrade: websocket\r\n")
	}
	switch {
	case h.chunked:
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	case h.length >= 0:
		bw.WriteString("Content-Length: ")
		writeInt(bw, h.length)
		bw.WriteString("\r\n")
	}
	bw.WriteString("\r\n")
}

// dropRequestHeader reports whether a client's header stops at the
// balancer: hop-by-hop headers (RFC 9110 §7.6.1), the ones the balancer
// writes itself, and any Upgrade but WebSocket's (policy.go).
func dropRequestHeader(name string, websocket bool) bool {
	switch len(name) {
	case 2:
		return strings.EqualFold(name, "te")
	case 4:
		return strings.EqualFold(name, "host")
	case 7:
		return strings.EqualFold(name, "upgrade") || strings.EqualFold(name, "trailer")
	case 9:
		return strings.EqualFold(name, "forwarded")
	case 10:
		return strings.EqualFold(name, "connection") || strings.EqualFold(name, "keep-alive")
	case 14:
		return strings.EqualFold(name, "content-length") || (!websocket && strings.EqualFold(name, "http2-settings"))
	case 15:
		return strings.EqualFold(name, "x-forwarded-for")
	case 16:
		return strings.EqualFold(name, "proxy-connection") || strings.EqualFold(name, "x-forwarded-host")
	case 17:
		return strings.EqualFold(name, "transfer-encoding") || strings.EqualFold(name, "x-forwarded-proto")
	case 18:
		return strings.EqualFold(name, "proxy-authenticate")
	case 19:
		return strings.EqualFold(name, "proxy-authorization")
	}
	return false
}

// dropResponseHeader reports whether a member's header stops at the
// balancer: hop-by-hop headers and the framing it writes itself.
func dropResponseHeader(name string) bool {
	switch len(name) {
	case 2:
		return strings.EqualFold(name, "te")
	case 7:
		return strings.EqualFold(name, "upgrade") || strings.EqualFold(name, "trailer")
	case 10:
		return strings.EqualFold(name, "connection") || strings.EqualFold(name, "keep-alive")
	case 14:
		return strings.EqualFold(name, "content-length")
	case 16:
		return strings.EqualFold(name, "proxy-connection")
	case 17:
		return strings.EqualFold(name, "transfer-encoding")
	case 18:
		return strings.EqualFold(name, "proxy-authenticate")
	case 19:
		return strings.EqualFold(name, "proxy-authorization")
	}
	return false
}

// Response body framings.
const (
	frameNone    = iota // no body (HEAD, 1xx, 204, 304)
	frameLength         // Content-Length
	frameChunked        // chunked
	frameClose          // until the member closes
)

// relay writes the member's answer to the client: its head with the
// hop-by-hop headers removed and the route cookie inserted when the
// member serving is not the one the request named (rule 7), then its
// body, streamed. It reports whether the member connection can serve
// another request.
func (s *Server) relay(x *exchange, uc *upConn) (reusable bool) {
	c, h, r := x.c, &x.head, &x.resp
	framing := frameClose
	switch {
	case h.method == http.MethodHead || r.status < 200 || r.status == http.StatusNoContent || r.status == http.StatusNotModified:
		framing = frameNone
	case r.chunked:
		framing = frameChunked
	case r.length >= 0:
		framing = frameLength
	}
	// The client's framing: chunked for a body of unknown length, unless
	// the client speaks HTTP/1.0; then the body ends with the connection.
	toClientChunked := false
	if framing == frameChunked || framing == frameClose {
		if h.minor >= 1 {
			toClientChunked = true
		} else {
			x.close = true
		}
	}
	bw := c.bw
	x.writeResponseHead()
	switch {
	case toClientChunked:
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	case r.length >= 0 && (framing == frameLength || framing == frameNone):
		bw.WriteString("Content-Length: ")
		writeInt(bw, r.length)
		bw.WriteString("\r\n")
	}
	x.status = r.status
	x.writeConnection()
	bw.WriteString("\r\n")

	// The body, streamed: flushed whenever the member has nothing more
	// ready, so that a long poll's answer or a stream's event goes out
	// at once.
	var src io.Reader
	switch framing {
	case frameNone:
		return x.finishBody(uc, r, true)
	case frameLength:
		c.respLength = lengthReader{r: uc.br, n: r.length}
		src = &c.respLength
	case frameChunked:
		c.respChunked.reset(uc.br)
		src = &c.respChunked
	case frameClose:
		src = uc.br
	}
	// A Content-Length body between plain TCP connections is spliced
	// (splice_linux.go) once the member's reader is drained and what the
	// client's writer holds is out; its last spliceMin bytes are read as
	// before, and wait for the connection's flush.
	var sp *splicer
	if framing == frameLength && c.tc == nil && r.length > 2*spliceMin {
		sp = newSplicer(uc.conn, c.g.Conn)
	}
	bp := copyBuffers.Get().(*[]byte)
	buf := *bp
	complete := false
	for {
		if sp != nil && uc.br.Buffered() == 0 && c.respLength.n > spliceMin {
			if bw.Flush() != nil {
				x.close = true
				break
			}
			n, err := sp.fill(c.respLength.n - spliceMin)
			c.respLength.n -= int64(n)
			if n > 0 {
				w, werr := sp.drain()
				x.bytes += int64(w)
				if werr != nil {
					err = werr
				}
			}
			sp.release()
			if err != nil || n == 0 {
				// Either side broke mid-body (n == 0: the member closed
				// early): the answer is cut off, and so is the connection.
				x.close = true
				break
			}
			continue
		}
		n, err := src.Read(buf)
		if n > 0 {
			if toClientChunked {
				bw.Write(appendChunkHeader(bw.AvailableBuffer(), n))
			}
			if _, werr := bw.Write(buf[:n]); werr != nil {
				x.close = true
				break
			}
			if toClientChunked {
				bw.WriteString("\r\n")
			}
			x.bytes += int64(n)
			// The last bytes wait for the connection's flush after the
			// request is recorded (conn.go), as net/http's did: whoever
			// has the whole answer sees the request ended.
			if uc.br.Buffered() == 0 && (framing != frameLength || c.respLength.n > 0) {
				if werr := bw.Flush(); werr != nil {
					x.close = true
					break
				}
			}
		}
		if err == io.EOF {
			complete = true
			break
		}
		if err != nil {
			// The member's side broke mid-body: the client's answer is
			// cut off, and so is its connection.
			x.close = true
			break
		}
	}
	copyBuffers.Put(bp)
	if complete && toClientChunked {
		bw.WriteString("0\r\n")
		if framing == frameChunked {
			bw.Write(c.respChunked.trailer)
		}
		bw.WriteString("\r\n")
	}
	return x.finishBody(uc, r, complete && framing != frameClose)
}

// finishBody settles the request body once the answer is out: the member
// connection can serve another request only when the whole body went to
// it and its answer was framed.
func (x *exchange) finishBody(uc *upConn, r *respHead, framed bool) bool {
	reusable := framed && !r.close && r.minor >= 1
	if x.send == nil {
		return reusable
	}
	b := x.st.body
	if !b.complete() {
		// The member answered before the body was all read: the
		// connection's byte stream cannot carry another request.
		x.c.g.stopReading()
		x.close = true
		uc.conn.Close()
		x.send.proceed()
		<-x.send.done
		return false
	}
	// The body is in; its last bytes may still be on their way to the
	// member, which must take them soon.
	_ = uc.conn.SetWriteDeadline(time.Now().Add(time.Second))
	x.send.proceed()
	<-x.send.done
	_ = uc.conn.SetWriteDeadline(time.Time{})
	return reusable && x.send.ok
}

// writeResponseHead writes the member's status line and its headers less
// the hop-by-hop ones, then the route cookie (rule 7); the caller adds the
// framing headers and the blank line.
func (x *exchange) writeResponseHead() {
	bw, r := x.c.bw, &x.resp
	bw.WriteString("HTTP/1.1 ")
	bw.WriteString(r.statusLine)
	bw.WriteString("\r\n")
	for _, hd := range r.headers {
		if dropResponseHeader(hd.name) || (r.connNames && namedByConnection(r.headers, hd.name)) {
			continue
		}
		bw.WriteString(hd.name)
		bw.WriteString(": ")
		bw.WriteString(hd.value)
		bw.WriteString("\r\n")
	}
	x.writeSetCookie()
}

// writeSetCookie inserts the route cookie when the member serving is not
// the one the request's sticky value named (rule 7).
func (x *exchange) writeSetCookie() {
	st := &x.st
	if st.pv.spec.Sticky.Insert && st.pv.pool.Member(st.member).Route != st.carried {
		if ck := st.pv.cookies[st.member]; ck != "" {
			x.c.bw.WriteString("Set-Cookie: ")
			x.c.bw.WriteString(ck)
			x.c.bw.WriteString("\r\n")
		}
	}
}

// writeConnection tells the client whether the connection stays.
func (x *exchange) writeConnection() {
	if x.c.l.shutting.Load() {
		x.close = true // the listener is shutting down (DESIGN.md §6.3)
	}
	switch {
	case x.close:
		x.c.bw.WriteString("Connection: close\r\n")
	case x.head.minor == 0:
		x.c.bw.WriteString("Connection: keep-alive\r\n")
	}
}

// answer writes one of the balancer's own answers to a request it does
// not forward. A body the request has is not read: the connection closes
// after the answer.
func (x *exchange) answer(code int, msg string) {
	h := &x.head
	if (h.chunked || h.length > 0) && x.st.body == nil {
		x.close = true
		x.c.g.stopReading()
	}
	bw := x.c.bw
	bw.WriteString("HTTP/1.1 ")
	writeInt(bw, int64(code))
	bw.WriteByte(' ')
	bw.WriteString(statusText(code))
	bw.WriteString("\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nCache-Control: no-store\r\n")
	if code == http.StatusMethodNotAllowed {
		bw.WriteString("Allow: " + allowHeader + "\r\n")
	}
	bw.WriteString(x.extraHeader)
	bw.WriteString("Date: ")
	bw.Write(time.Now().UTC().AppendFormat(bw.AvailableBuffer(), http.TimeFormat))
	bw.WriteString("\r\nContent-Length: ")
	writeInt(bw, int64(len(msg)+1))
	bw.WriteString("\r\n")
	x.writeConnection()
	bw.WriteString("\r\n")
	if h.method != http.MethodHead {
		bw.WriteString(msg)
		bw.WriteByte('\n')
		x.bytes = int64(len(msg) + 1)
	}
	x.status = code // written out by the connection's flush (conn.go)
}

// logEntry is the request as the access log shows it.
func (x *exchange) logEntry() *logEntry {
	h := &x.head
	e := &x.c.entry
	referer, _ := h.get("Referer")
	ua, _ := h.get("User-Agent")
	*e = logEntry{
		remote: x.c.remote, method: h.method, uri: h.target, proto: h.proto,
		referer: referer, userAgent: ua, status: x.status, bytes: x.bytes,
	}
	return e
}

// writeInt writes v in decimal, formatted in bw's own buffer.
func writeInt(bw *bufio.Writer, v int64) {
	bw.Write(strconv.AppendInt(bw.AvailableBuffer(), v, 10))
}
