package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The client side of the forwarding path (DESIGN.md §1.2): one goroutine
// per connection reads request heads with the strict parser (head.go),
// behind the connection guard (guard.go), and serves them one after the
// other (forward.go). Its buffers, parsed head and per-request state are
// the connection's, reused from one keep-alive request to the next.

// Connection states, for Shutdown.
const (
	connIdle   int32 = iota // between requests (or before the first): Shutdown closes it
	connActive              // serving a request: Shutdown waits for it
	connTunnel              // a WebSocket: CloseWebSockets ends it (websocket.go)
	connClosed
)

// clientConn is one client connection.
type clientConn struct {
	s      *Server
	l      *Listener
	g      *guardConn
	tc     *tlsGuardConn // nil for plain HTTP
	tls    bool
	remote string // the client's address without the port, for X-Forwarded-For and the log
	br     *bufio.Reader
	bw     *bufio.Writer
	state  atomic.Int32

	pre   prefixReader // the reader under br once the connection was parked
	x     exchange
	entry logEntry
	// Body decoders: the request's (read by the body sender) and the
	// response's (read by the request's goroutine) at once.
	reqLength, respLength   lengthReader
	reqChunked, respChunked chunkedReader
	wg                      sync.WaitGroup // body senders (forward.go), waited for before the next request
	idled                   bool           // finish's toIdle ran and turned the connection idle
	noAwait                 bool           // finish's wait for the next request lasted to its deadline once
}

// serve reads and serves requests until the connection closes.
func (c *clientConn) serve() {
	defer func() {
		if p := recover(); p != nil {
			buf := make([]byte, 16<<10)
			buf = buf[:runtime.Stack(buf, false)]
			c.s.log.Error("panic serving a connection", "remote", c.remote, "panic", p, "stack", string(buf))
		}
		c.wg.Wait()
		c.close()
		c.release()
	}()
	if c.tc != nil {
		c.tc.ConnectionState() // the handshake, bounded by the handshake timeout
		c.tls = true
	}
	lc := &c.l.lc
	first := true
	var done time.Time // when the last answer was done
	for {
		// Wait for the request's first byte: the header timeout for the
		// first request, the keep-alive idle timeout between requests.
		if first {
			_ = c.g.SetReadDeadline(time.Now().Add(lc.ReadHeaderTimeout))
			if _, err := c.br.Peek(1); err != nil {
				return
			}
		} else if !c.awaitRequest(lc.IdleTimeout, done) {
			return
		}
		if !c.state.CompareAndSwap(connIdle, connActive) {
			return // Shutdown closed the connection
		}
		if !first {
			_ = c.g.SetReadDeadline(time.Now().Add(lc.ReadHeaderTimeout))
		}
		first = false
		if err := c.x.head.readHead(c.br, c.l.maxHead); err != nil {
			c.refuseHead(err)
			return
		}
		_ = c.g.SetReadDeadline(time.Time{})
		keep := c.s.serve(&c.x)
		c.wg.Wait()
		done = time.Now()
		if !c.finish(keep, done) {
			return
		}
	}
}

// finish writes out the answer's last bytes and, to keep the connection,
// turns it idle and sets the deadline of the wait for the next request:
// hotWait (or the idle timeout if shorter) from start. Where it can, the
// write waits for the client's next request from inside a raw read
// (rawio.IO.WriteAwait, as a member's request does; DESIGN.md §1.2 step
// 7), turning the connection idle between the two, so that awaitRequest's
// read finds the request instead of first finding nothing, as it did for
// two requests in three under wrk (4.66 system calls a request before, 4
// after). Bytes that reached the socket after the
// request was read and before that write (a pipelined request sent apart
// from the one before it, a FIN) are then not seen until the deadline;
// a connection whose wait ever lasted to the deadline does not wait so
// again (awaitRequest).
func (c *clientConn) finish(keep bool, start time.Time) bool {
	c.idled = false
	if keep {
		_ = c.g.SetReadDeadline(start.Add(min(hotWait, c.l.lc.IdleTimeout)))
		c.g.await = !c.noAwait && c.br.Buffered() == 0 && c.g.betweenRequests()
	}
	err := c.bw.Flush()
	c.g.await = false
	if err != nil || !keep {
		return false
	}
	return c.idled || c.toIdle()
}

// toIdle turns a connection that served its request idle, unless
// Shutdown closed it or is under way. It is the guard's then: it runs
// between the answer's last write and the wait for the next request.
func (c *clientConn) toIdle() bool {
	c.idled = c.state.CompareAndSwap(connActive, connIdle) && !c.l.shutting.Load()
	return c.idled
}

// hotWait is how long a keep-alive connection waits for its next request
// with its buffers; after that it parks them (awaitRequest).
const hotWait = time.Second

// Buffers of connections, shared: an idle connection holds none.
var (
	readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4<<10) }}
	writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4<<10) }}
)

// awaitRequest waits up to idle from start for the first byte of the
// next request, finish having set the deadline of hotWait. A client that
// keeps its connection busy finds it with its buffers; one that goes
// quiet for hotWait has them given back to the pools, and the connection
// waits on a one-byte read, so that thousands of idle keep-alive
// connections cost little more than their goroutines.
func (c *clientConn) awaitRequest(idle time.Duration, start time.Time) bool {
	if c.br.Buffered() > 0 {
		return true // pipelined: the next head is here already
	}
	_, err := c.br.Peek(1)
	if err == nil {
		return true
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) || c.g.stopped.Load() {
		return false
	}
	// The deadline passed, maybe in finish's wait, which then missed
	// nothing or bytes that came before it (finish): no such wait again.
	c.noAwait = true
	if idle <= hotWait {
		return false
	}
	c.release()
	c.x.forget()
	_ = c.g.SetReadDeadline(start.Add(idle))
	if n, err := c.g.Read(c.pre.b[:]); n != 1 || err != nil {
		return false
	}
	c.pre.pending = true
	c.br = readers.Get().(*bufio.Reader)
	c.br.Reset(&c.pre)
	c.bw = writers.Get().(*bufio.Writer)
	c.bw.Reset(c.g)
	return true
}

// release gives the connection's buffers back to the pools.
func (c *clientConn) release() {
	if c.br != nil {
		c.br.Reset(nil)
		readers.Put(c.br)
		c.br = nil
	}
	if c.bw != nil {
		c.bw.Reset(nil)
		writers.Put(c.bw)
		c.bw = nil
	}
}

// forget drops what the last request left behind: the head buffers (a
// request's and its answer's, with the header lists and trailers; the log
// entry's strings point into them) and the routing state (the view it
// used). A parked connection then holds its structs, goroutine and socket
// only; the next request allocates them again, as a new connection's
// first does.
func (x *exchange) forget() {
	x.head, x.resp, x.st = reqHead{}, respHead{}, reqState{}
	c := x.c
	c.entry = logEntry{}
	c.reqChunked, c.respChunked = chunkedReader{}, chunkedReader{}
	c.reqLength, c.respLength = lengthReader{}, lengthReader{}
}

// prefixReader is a parked connection's reader: the byte that woke it,
// then the connection.
type prefixReader struct {
	g       *guardConn
	b       [1]byte
	pending bool
}

func (p *prefixReader) Read(b []byte) (int, error) {
	if p.pending && len(b) > 0 {
		p.pending = false
		b[0] = p.b[0]
		return 1, nil
	}
	return p.g.Read(b)
}

// refuseHead answers a head the parser refused (400, 417, 431, 505) and
// lingers on close; a head cut off by a timeout or the client's close gets
// no answer, as with net/http.
func (c *clientConn) refuseHead(err error) {
	var he *headError
	switch {
	case errors.As(err, &he):
		c.writeError(he.status, he.why)
	case errors.Is(err, errHeadTooLarge):
		c.writeError(431, "")
	default:
		var ne net.Error
		if errors.Is(err, io.EOF) || errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) || errors.Is(err, errUnexpectedEOFHead) {
			return
		}
		if !errors.Is(err, errBadFraming) {
			return
		}
		c.writeError(400, "")
	}
	c.g.linger.Store(true)
}

// writeError writes a head error's answer, as net/http's server does:
// plain text, the connection closed.
func (c *clientConn) writeError(code int, why string) {
	text := statusText(code)
	body := strconv.Itoa(code) + " " + text
	if why != "" {
		body += ": " + why
	}
	_ = c.g.SetWriteDeadline(time.Now().Add(5 * time.Second))
	c.bw.WriteString("HTTP/1.1 " + strconv.Itoa(code) + " " + text + "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
	c.bw.Flush()
}

func (c *clientConn) close() {
	c.state.Store(connClosed)
	c.g.Close()
	c.l.untrack(c)
}

// Serve accepts connections until Shutdown; it then returns nil.
func (l *Listener) Serve() error {
	var delay time.Duration
	for {
		nc, err := l.ln.Accept()
		if err != nil {
			if l.shutting.Load() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) {
				// Out of file descriptors and the like: wait, as net/http does.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				l.s.log.Warn("accept failed; retrying", "listener", l.ln.Addr().String(), "err", err, "delay", delay)
				time.Sleep(delay)
				continue
			}
			return errors.Join(errors.New("serve "+l.ln.Addr().String()), err)
		}
		delay = 0
		c := &clientConn{s: l.s, l: l, br: readers.Get().(*bufio.Reader), bw: writers.Get().(*bufio.Writer)}
		switch g := nc.(type) {
		case *guardConn:
			c.g = g
		case *tlsGuardConn:
			c.g, c.tc = g.guardConn, g
		}
		c.br.Reset(c.g)
		c.bw.Reset(c.g)
		c.pre.g = c.g
		c.g.then = c.toIdle
		c.x.c = c
		c.remote = remoteHost(c.g.RemoteAddr())
		if !l.track(c) {
			c.g.Close()
			return nil
		}
		go c.serve()
	}
}

func remoteHost(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

func (l *Listener) track(c *clientConn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.shutting.Load() {
		return false
	}
	l.conns[c] = struct{}{}
	return true
}

func (l *Listener) untrack(c *clientConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.conns, c)
}

// Shutdown stops accepting, closes idle keep-alive connections, waits for
// requests in flight until ctx ends, then closes what remains. WebSocket
// tunnels are not its business: Server.CloseWebSockets ends them
// (DESIGN.md §6.3).
func (l *Listener) Shutdown(ctx context.Context) error {
	l.shutting.Store(true)
	l.ln.Close()
	tick := time.NewTimer(time.Millisecond)
	defer tick.Stop()
	wait := time.Millisecond
	for {
		if l.closeIdle() == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			l.closeAll()
			return ctx.Err()
		case <-tick.C:
			wait = min(2*wait, 50*time.Millisecond)
			tick.Reset(wait)
		}
	}
}

// closeIdle closes the connections between requests and returns how many
// are serving one.
func (l *Listener) closeIdle() int {
	l.mu.Lock()
	var idle []*clientConn
	active := 0
	for c := range l.conns {
		switch {
		case c.state.CompareAndSwap(connIdle, connClosed):
			idle = append(idle, c)
		case c.state.Load() == connActive:
			active++
		}
	}
	l.mu.Unlock()
	for _, c := range idle {
		c.g.Close()
	}
	return active
}

// closeAll closes every connection but the tunnels.
func (l *Listener) closeAll() {
	l.mu.Lock()
	var all []*clientConn
	for c := range l.conns {
		if c.state.Load() != connTunnel {
			all = append(all, c)
		}
	}
	l.mu.Unlock()
	for _, c := range all {
		c.g.Close()
	}
}

// statusText is net/http's reason phrase, or "status code N".
func statusText(code int) string {
	if t := http.StatusText(code); t != "" {
		return t
	}
	return "status code " + strconv.Itoa(code)
}
