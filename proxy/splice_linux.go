package proxy

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/gwelb/gwelb/internal/rawio"
)

// Zero-copy bodies (DESIGN.md §1.2 step 5 and 7): once the bytes a
// connection's reader had buffered are drained, the rest of a
// Content-Length body moves from one plain TCP socket to the other through
// a kernel pipe with splice(2), never entering user space. It is Go's own
// io.Copy(*net.TCPConn, *io.LimitedReader) path (internal/poll's Splice),
// taken one pipe load at a time: each fill returns as soon as some bytes
// arrived, so the body read timeout (body.go) counts exactly the time
// spent waiting for the client, apart from the time spent waiting for the
// member to take the bytes, and the access log counts every byte.

// splicedBytes counts the bytes spliced since the process started (the
// tests check that a body took this path).
var splicedBytes atomic.Int64

// spliceMax is a pipe's capacity and the most one fill moves. Not Go's
// maxSpliceSize (1 MiB): what waits in the pipe is, like what waits
// unsent in dst (spliceNotsentLowat), bytes between their writer and
// their reader, and the fewer there are, the likelier the reader still
// has them in cache. With both bounds the CPU of make bench's client and
// member paid 731 ms per GB of 16 MiB downloads (1 MiB and 128 KiB: 870;
// HAProxy 716), for 1259 MB/s (1107; HAProxy 1151), the balancer's CPU
// 497 ms per GB (471).
const spliceMax = 256 << 10

// splicePipe is a pipe whose read end feeds dst; inPipe bytes wait in it.
type splicePipe struct {
	rfd, wfd int
	inPipe   int
	cleanup  runtime.Cleanup // closes the pipe once the pool drops it
}

// close closes a pipe that still holds bytes (for a connection that failed).
func (p *splicePipe) close() {
	p.cleanup.Stop()
	syscall.Close(p.rfd)
	syscall.Close(p.wfd)
}

// pipes keeps empty pipes for the next body; one the pool drops is closed
// by its cleanup.
var pipes = sync.Pool{New: func() any {
	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		return nil
	}
	// A bigger pipe moves a body in fewer calls; a smaller one (the
	// user's pipe quota reached) still works.
	_, _, _ = syscall.Syscall(syscall.SYS_FCNTL, uintptr(fds[0]), syscall.F_SETPIPE_SZ, spliceMax)
	p := &splicePipe{rfd: fds[0], wfd: fds[1]}
	p.cleanup = runtime.AddCleanup(p, func(fds [2]int) {
		syscall.Close(fds[0])
		syscall.Close(fds[1])
	}, fds)
	return p
}}

// spliceNotsentLowat bounds the bytes a spliced body leaves queued, not
// yet sent, in dst's socket (TCP_NOTSENT_LOWAT): a drain stops there and
// waits for dst to send, where it would otherwise queue up to the whole
// autotuned send buffer (MiBs). The bytes in flight are the congestion
// window's, untouched, so a distant peer is not slowed; what shrinks is
// the time between the sender writing a byte and the receiver reading it,
// which decides whether the receiver finds the spliced pages still in its
// CPU's cache. In make bench (client and member on one CPU, the balancer
// on the other) the client's copy of a 16 MiB download cost twice as much
// per byte without it (perf on that CPU: _copy_to_iter 11.8% of it
// against 6.0% behind HAProxy, which copies through 16 KiB buffers, at
// the same MB/s), and downloads ran at 0.75-0.90x HAProxy; with it
// 1.02-1.14x at 128 KiB, that CPU's cost per GB 875 ms instead of 1053
// (HAProxy 851), the balancer's 520 ms instead of 360 (HAProxy 780); see
// spliceMax for 64 KiB. A 10 Gb/s link drains half of 64 KiB (the
// wakeup point) in 26 us, longer than a drain takes to refill it.
const spliceNotsentLowat = 64 << 10

// tcpNotsentLowat is TCP_NOTSENT_LOWAT (linux/tcp.h), absent from syscall.
const tcpNotsentLowat = 25

// splicer moves bytes from src to dst through a pipe taken from the pool
// while bytes are in flight: an idle tunnel or keep-alive connection
// holds no pipe.
type splicer struct {
	src, dst syscall.RawConn
	p        *splicePipe
	lowat    bool // dst's TCP_NOTSENT_LOWAT is set
}

// newSplicer returns a splicer from src to dst, or nil unless both are
// plain TCP connections (TLS, or a test's pipe, cannot splice).
func newSplicer(src, dst net.Conn) *splicer {
	rs, rd := rawio.TCP(src), rawio.TCP(dst)
	if rs == nil || rd == nil {
		return nil
	}
	return &splicer{src: rs, dst: rd}
}

// fill moves up to max bytes (at least 1) from src into the pipe, waiting
// for src to have some under its read deadline. It returns 0 and nil at
// the end of src's stream. The pipe must be empty (drain).
func (s *splicer) fill(limit int64) (int, error) {
	if s.p == nil {
		p, _ := pipes.Get().(*splicePipe)
		if p == nil {
			return 0, errNoPipe
		}
		s.p = p
	}
	if !s.lowat {
		// Only a connection that splices gets it (a small request body
		// never does), and keeps it: a later big write only waits in
		// smaller steps. Best effort, like the pipe size: a kernel
		// without it (before 3.12) still splices.
		s.lowat = true
		_ = s.dst.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpNotsentLowat, spliceNotsentLowat)
		})
	}
	limit = min(limit, spliceMax)
	var n int64
	var serr error
	err := s.src.Read(func(fd uintptr) bool {
		for {
			n, serr = syscall.Splice(int(fd), nil, s.p.wfd, nil, int(limit), spliceFlags)
			if serr != syscall.EINTR {
				break
			}
		}
		return serr != syscall.EAGAIN // EAGAIN: wait for src to be readable
	})
	if err == nil {
		err = serr
	}
	n = max(n, 0)
	s.p.inPipe += int(n)
	if err != nil {
		return int(n), fmt.Errorf("splice read: %w", err)
	}
	return int(n), nil
}

// drain writes what is in the pipe to dst, waiting for dst under its write
// deadline; then the empty pipe goes back to the pool.
func (s *splicer) drain() (int, error) {
	written := 0
	for s.p != nil && s.p.inPipe > 0 {
		var n int64
		var serr error
		err := s.dst.Write(func(fd uintptr) bool {
			for {
				n, serr = syscall.Splice(s.p.rfd, nil, int(fd), nil, s.p.inPipe, spliceFlags)
				if serr != syscall.EINTR {
					break
				}
			}
			return serr != syscall.EAGAIN // EAGAIN: wait for dst to take more
		})
		if err == nil {
			err = serr
		}
		if n > 0 {
			s.p.inPipe -= int(n)
			written += int(n)
			splicedBytes.Add(n)
		}
		if err != nil {
			return written, fmt.Errorf("splice write: %w", err)
		}
		if n == 0 {
			return written, fmt.Errorf("splice: %w", syscall.EPIPE)
		}
	}
	s.release()
	return written, nil
}

// release gives an empty pipe back to the pool and closes one that still
// holds bytes (they are for a connection that failed).
func (s *splicer) release() {
	if s == nil || s.p == nil {
		return
	}
	if s.p.inPipe == 0 {
		pipes.Put(s.p)
	} else {
		s.p.close()
	}
	s.p = nil
}

// errNoPipe: the process is out of file descriptors or pipe quota.
var errNoPipe = errors.New("splice: cannot create a pipe")

const spliceFlags = 0x1 | 0x2 // SPLICE_F_MOVE | SPLICE_F_NONBLOCK
