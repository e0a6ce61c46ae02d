//go:build unix

package proxy

import (
	"net"
	"os"
	"syscall"
)

// Waiting without trying the socket first is unsafe in general: a Read
// starts by clearing the poller's memory of readiness (internal/poll's
// prepareRead), so bytes whose arrival the poller noticed before that
// would never wake the reader (tried: answers stalled until a timeout).
// The awaiter clears first: it writes the request from inside a raw read,
// after the clearing and before the wait, so the answer is seen whenever
// it arrives.

// awaiter writes a connection's last bytes and waits for its peer.
type awaiter struct {
	conn  net.Conn
	rc    syscall.RawConn
	step  func(fd uintptr) bool // a.writeThenWait, bound once: a wait allocates nothing
	p     []byte
	n     int
	wrote bool
	werr  error
}

// init readies a for conn; it reports false (and a stays unused) unless
// conn is plain TCP.
func (a *awaiter) init(conn net.Conn) bool {
	rc := rawTCP(conn)
	if rc == nil {
		return false
	}
	*a = awaiter{conn: conn, rc: rc}
	a.step = a.writeThenWait
	return true
}

// write writes p and returns once the peer has sent something, or the
// read deadline passed, or the connection closed (the read that follows
// reports those). If the socket cannot take all of p at once, the rest
// is written with conn's Write and the peer is not waited for.
func (a *awaiter) write(p []byte) (int, error) {
	a.p, a.n, a.wrote, a.werr = p, 0, false, nil
	err := a.rc.Read(a.step)
	n, werr := a.n, a.werr
	a.p, a.werr = nil, nil
	switch {
	case n == len(p):
		return n, nil // a failed wait is the read's to report
	case werr == syscall.EAGAIN:
		m, err := a.conn.Write(p[n:])
		return n + m, err
	case werr != nil:
		return n, &net.OpError{Op: "write", Net: "tcp", Source: a.conn.LocalAddr(), Addr: a.conn.RemoteAddr(), Err: os.NewSyscallError("write", werr)}
	default:
		return n, err // the raw read failed before writing (a closed connection)
	}
}

// writeThenWait is write's raw read callback: the first call writes and
// asks to wait, unless the socket did not take everything; the next one,
// after the poller's wakeup, ends the wait.
func (a *awaiter) writeThenWait(fd uintptr) bool {
	if a.wrote {
		return true // readable, or a spurious wakeup: the read that follows tells
	}
	a.wrote = true
	for a.n < len(a.p) {
		m, e := syscall.Write(int(fd), a.p[a.n:])
		if e == syscall.EINTR {
			continue
		}
		if e != nil {
			a.werr = e
			return true
		}
		a.n += m
	}
	return false // all sent: wait
}

// rawTCP returns c's raw connection, or nil unless c is plain TCP (TLS,
// or a test's pipe).
func rawTCP(c net.Conn) syscall.RawConn {
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
