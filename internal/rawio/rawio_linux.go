package rawio

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
)

// A plain TCP socket is read and written through its syscall.RawConn
// with sysRead and sysWrite, which are RawSyscall (not the Syscall of
// net.Conn's Read and Write) outside race builds. The proxy's request
// path (a client's and a member's socket) and raft's connections use it.
// Go's sockets are non-blocking, so these calls never block, and Syscall's
// bookkeeping buys nothing for them while it costs twice: its exit takes
// the P back (0.6 us a request in perf), and its entry wakes the
// runtime's sysmon thread whenever it sleeps because every P was idle.
// A balancer that waits for its peers between requests idles thousands
// of times a second, so each wakeup restarted sysmon at 20 us ticks on
// the balancer's own CPU (golang/go#18236; 1,400 wakeups and 3,100 ticks
// a second at 24k req/s in make bench). Measured in make bench's setup
// on one CPU, in 4 interleaved pairs of 4 s: 31.2 us of CPU a request
// against 34.4 (-9%), and 0.22-0.33 context switches a request against
// 0.31-0.42. An idle node wakes up a few dozen times a second, and its
// raft traffic woke sysmon each time (sysmon made 40% of an idle demo
// leader's system calls). gVisor's netstack writes its non-blocking
// sockets the same way.
//
// IO also sends a request and waits for its answer in one step:
// WriteAwait (proxy/await.go).

// IO does a plain TCP connection's reads and writes. One goroutine at a
// time reads, and one at a time writes; WriteAwait does both (each half
// keeps its call's state so that its callback, bound once, allocates
// nothing). The zero IO is unready: Init readies it.
type IO struct {
	ok     bool
	conn   net.Conn
	rc     syscall.RawConn
	rd, wr rawHalf
	aw     rawHalf // WriteAwait's
}

// rawHalf is the state of one raw call in progress.
type rawHalf struct {
	step  func(fd uintptr) bool
	p     []byte
	n     int
	errno syscall.Errno
	wrote bool        // writeThenWait's first call is over
	then  func() bool // WriteAwait's: run once all is written, before the wait
}

// Init readies x for conn and reports whether conn is plain TCP; if not
// (TLS, or a test's pipe), x stays unready and unused.
func (x *IO) Init(conn net.Conn) bool {
	rc := TCP(conn)
	if rc == nil {
		return false
	}
	*x = IO{ok: true, conn: conn, rc: rc}
	x.rd.step = x.rd.read
	x.wr.step = x.wr.write
	x.aw.step = x.aw.writeThenWait
	return true
}

// Ready reports whether Init readied x: Read, Write and WriteAwait may be
// used.
func (x *IO) Ready() bool { return x.ok }

// Read is net.Conn's Read.
func (x *IO) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, errno, err := x.run(&x.rd, p, true)
	switch {
	case err != nil:
		return 0, x.opError("read", err)
	case errno != 0:
		return 0, x.opError("read", errno)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// Write is net.Conn's Write.
func (x *IO) Write(p []byte) (int, error) {
	n, errno, err := x.run(&x.wr, p, false)
	switch {
	case err != nil:
		return n, x.opError("write", err)
	case errno != 0:
		return n, x.opError("write", errno)
	}
	return n, nil
}

// run calls h's step on p through the poller, which waits for the socket
// to be readable if reading (RawConn's Read), else writable.
func (x *IO) run(h *rawHalf, p []byte, reading bool) (int, syscall.Errno, error) {
	h.p, h.n, h.errno, h.wrote = p, 0, 0, false
	var err error
	if reading {
		err = x.rc.Read(h.step)
	} else {
		err = x.rc.Write(h.step)
	}
	n, errno := h.n, h.errno
	h.p = nil
	return n, errno, err
}

// WriteAwait writes p and returns once the peer has sent something, or
// the read deadline passed, or the connection closed (the read that
// follows reports those). If the socket cannot take all of p at once,
// the rest is written with Write and the peer is not waited for. then,
// unless nil, runs once all of p is written and before the wait (a
// client's connection turns idle there, proxy/conn.go); if it returns
// false, WriteAwait does not wait.
func (x *IO) WriteAwait(p []byte, then func() bool) (int, error) {
	x.aw.then = then
	n, errno, err := x.run(&x.aw, p, true)
	x.aw.then = nil
	switch {
	case n == len(p):
		return n, nil // a failed wait is the read's to report
	case errno == syscall.EAGAIN:
		m, err := x.Write(p[n:])
		return n + m, err
	case errno != 0:
		return n, x.opError("write", errno)
	default:
		return n, x.opError("write", err) // the raw read failed before writing (a closed connection)
	}
}

// read is Read's callback: false (wait for the poller) on EAGAIN.
func (h *rawHalf) read(fd uintptr) bool {
	for {
		n, errno := sysRead(fd, h.p)
		switch errno {
		case 0:
			h.n = n
			return true
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			h.errno = errno
			return true
		}
	}
}

// write is Write's callback: it writes until all of h.p is sent, an
// error, or EAGAIN (false: wait for the poller, then go on).
func (h *rawHalf) write(fd uintptr) bool {
	for h.n < len(h.p) {
		n, errno := sysWrite(fd, h.p[h.n:])
		switch errno {
		case 0:
			h.n += n
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			h.errno = errno
			return true
		}
	}
	return true
}

// writeThenWait is WriteAwait's raw read callback: the first call writes
// and asks to wait, unless the socket did not take everything (EAGAIN
// noted: WriteAwait writes the rest); the next one, after the poller's
// wakeup, ends the wait.
//
// Waiting without trying the socket first is unsafe in general: a read
// starts by clearing the poller's memory of readiness (internal/poll's
// prepareRead), so bytes whose arrival the poller noticed before that
// would never wake the reader (tried: answers stalled until a timeout).
// Writing from inside the read, after the clearing and before the wait,
// makes sure the answer to what is written is seen whenever it arrives.
func (h *rawHalf) writeThenWait(fd uintptr) bool {
	if h.wrote {
		return true // readable, or a spurious wakeup: the read that follows tells
	}
	h.wrote = true
	if !h.write(fd) {
		h.errno = syscall.EAGAIN
		return true
	}
	if h.errno != 0 {
		return true
	}
	return h.then != nil && !h.then() // all sent: wait, unless then says no
}

// opError wraps err as net.Conn's Read and Write do. RawConn's own errors
// (a deadline, a closed connection) come as "raw-read" or "raw-write"
// OpErrors; they get net.Conn's operation name, so that logs and
// callers see what they would see from net.Conn.
func (x *IO) opError(op string, err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		oe.Op = op
		return oe
	}
	if errno, ok := err.(syscall.Errno); ok {
		err = os.NewSyscallError(op, errno)
	}
	return &net.OpError{Op: op, Net: "tcp", Source: x.conn.LocalAddr(), Addr: x.conn.RemoteAddr(), Err: err}
}

// TCP returns c's raw connection, or nil unless c is plain TCP (TLS, or a
// test's pipe).
func TCP(c net.Conn) syscall.RawConn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// Conn is a net.Conn whose Read and Write are an IO's: what Wrap returns.
type Conn struct {
	net.Conn
	x *IO
}

// Wrap returns c reading and writing raw if it is plain TCP, else c. The
// result keeps net.Conn's contract except that one goroutine at a time
// may read and one at a time may write (crypto/tls and raft's transport
// keep to that).
func Wrap(c net.Conn) net.Conn {
	x := &IO{}
	if !x.Init(c) {
		return c
	}
	return Conn{c, x}
}

// Read is net.Conn's Read.
func (c Conn) Read(p []byte) (int, error) { return c.x.Read(p) }

// Write is net.Conn's Write.
func (c Conn) Write(p []byte) (int, error) { return c.x.Write(p) }
