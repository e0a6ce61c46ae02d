package proxy

import "time"

// Sending a request and waiting for the member's answer in one step
// (DESIGN.md §1.2, step 5). net.Conn's Read tries the socket before it
// waits, so the read that follows a request sent to a member finds
// nothing (EAGAIN) and reads again after the poller's wakeup: one of a
// proxied request's seven system calls (make bench on a virtual machine
// where a system call costs microseconds: 6.8-6.9 a request before, 6.0
// after; 37.4 us of CPU a request before, 36.2 after).
// An upConn's flush of a request without a body (upWriter,
// rawio.IO.WriteAwait) writes the bytes and then waits for the answer to
// be readable, so that the read finds it.
//
// The client's side does the same with the answer's last write
// (conn.go, finish): there the wait is bounded by hotWait, because bytes
// already in the socket (a request pipelined in a segment of its own,
// whose arrival the poller saw while the answer was being made) wake
// nothing and are read only when the wait times out.

// awaitMax bounds the wait in a flush: after it the ordinary read waits.
// Bytes that reached the socket before the flush (a member that
// half-closed a pooled connection, say) are then read at most awaitMax
// late, and an answer slower than awaitMax (a long poll) costs the read
// that finds nothing after all, once. Not shorter: a deadline earlier
// than every other timer wakes an idle thread blocked in the poller to
// re-arm it (a system call and a wakeup per request: 20 ms made the
// serial new-session BenchmarkProxy 35% slower with two Ps), while the
// keep-alive connections' hotWait deadlines, 1 s, are already set.
const awaitMax = time.Second

// upWriter is what an upConn's bufio.Writer flushes to: the connection,
// raw where it can be (internal/rawio), awaiting the answer while
// uc.await is set.
type upWriter struct{ uc *upConn }

func (w upWriter) Write(p []byte) (int, error) {
	switch {
	case w.uc.await:
		return w.uc.raw.WriteAwait(p, nil)
	case w.uc.raw.Ready():
		return w.uc.raw.Write(p)
	}
	return w.uc.conn.Write(p)
}

// upReader is what an upConn's bufio.Reader reads: the connection, raw
// where it can be.
type upReader struct{ uc *upConn }

func (r upReader) Read(p []byte) (int, error) {
	if r.uc.raw.Ready() {
		return r.uc.raw.Read(p)
	}
	return r.uc.conn.Read(p)
}
