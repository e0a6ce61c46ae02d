package proxy

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// reqBody is a client's request body on its way to a member. It exists so
// that the proxy can tell the client's failures from the member's:
//
//   - it records its own read errors (a malformed chunked body, a client
//     that resets or goes quiet), so that a request that failed because
//     of its client never quarantines a member, never counts toward a
//     retry and never reaches the health Observer;
//   - it enforces the body read timeout: the time spent waiting for the
//     client may not exceed grace plus one second per minRate bytes
//     received (Apache mod_reqtimeout's body=20,MinRate=500), after which
//     the read fails, the upstream connection is closed and the client
//     gets 408;
//   - it keeps what has arrived, up to limit bytes and while the server's
//     retry budget allows, so that a request whose member failed before
//     answering can be sent once more to the fallback (routing contract
//     rule 8) without buffering bodies up front.
type reqBody struct {
	src     io.Reader // the client's body, decoded (chunk.go)
	rc      deadliner // the client connection, whose read deadline the timeout sets
	limit   int64     // bytes kept for a retry at most; 0 keeps nothing
	budget  *retryBudget
	grace   time.Duration // 0: no body timeout
	minRate int64         // bytes per second that extend grace; 0: none
	// For splice: the client's Content-Length body (src) and its
	// connection, nil unless the body can be spliced (a plain TCP
	// listener; splice_linux.go).
	length *lengthReader
	guard  *guardConn

	mu        sync.Mutex
	err       error // the first error reading the client (not io.EOF)
	eof       bool
	timedOut  bool  // the body timeout fired
	finished  bool  // the handler returned
	gen       int   // attempt: readers of an earlier attempt are cut off
	replayLen int64 // bytes the current attempt replays from the copy before reading on
	received  int64
	waited    time.Duration // time spent blocked reading the client
	readStart time.Time     // zero unless a read of the client is in progress
	readDone  sync.Cond     // on mu: signalled when a read of the client ends
	timer     *time.Timer
	// The retry copy, in chunks that double from the first read's size
	// (at least minChunk) to maxChunk, so that a 200-byte long-poll body
	// holds 512 bytes of the budget, not 32 KiB.
	keeping  bool
	kept     [][]byte
	keptLen  int64
	reserved int64
	keptArr  [4][]byte // kept's first backing array: small bodies allocate only their chunk
}

const (
	minChunk = 512
	maxChunk = 32 << 10
)

// Defaults of Options.RetryBodyBytes and Options.RetryBufferTotal, shared
// with the config validator.
const (
	DefaultRetryBodyBytes   = 1 << 20
	DefaultRetryBufferTotal = 64 << 20
)

// errBodyTimeout is what a read of a body whose timeout fired returns when
// no read was in progress to be interrupted.
var errBodyTimeout = errors.New("gwelb: request body read timeout")

// deadliner is what the body timeout needs of the client connection.
type deadliner interface{ SetReadDeadline(time.Time) error }

func (s *Server) newBody(src io.Reader, rc deadliner) *reqBody {
	b := &reqBody{
		src: src, rc: rc, limit: s.opts.RetryBodyBytes, budget: s.retryBudget,
		grace: s.opts.BodyReadTimeout, minRate: s.opts.BodyMinRate,
		keeping: s.opts.RetryBodyBytes > 0,
	}
	b.kept = b.keptArr[:0]
	b.readDone.L = &b.mu
	return b
}

// reader returns the current attempt's body: the client's for the
// first, the kept copy and then the rest of the client's after a rewind.
func (b *reqBody) reader() io.Reader {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.gen == 0 {
		return firstAttempt{b}
	}
	return &replayReader{b: b, gen: b.gen, limit: b.replayLen}
}

// firstAttempt is the first attempt's reader.
type firstAttempt struct{ b *reqBody }

func (f firstAttempt) Read(p []byte) (int, error) { return f.b.read(p, 0) }

func (b *reqBody) read(p []byte, gen int) (int, error) {
	start, err := b.begin(gen)
	if err != nil {
		return 0, err
	}
	n, err := b.src.Read(p)
	return n, b.end(start, gen, n, p[:n], err)
}

// spliceMin is the least a body must have left for splicing to be
// worth it; its last spliceMin bytes always go through user space, so
// that the end of a body is seen by the readers that were written for it
// (the request body's eof, the response's last bytes held for the
// connection's flush).
const spliceMin = 64 << 10

// splice moves the next bytes of the client's body to the member through
// sp (splice_linux.go), as read would with a buffer: the same attempt
// check, the same accounting for the body read timeout. It does so only
// once the retry copy was given up (a body bigger than retry_body_bytes,
// or the budget spent: no retry can need the bytes) and the client
// connection's reader holds nothing: ok is false when read must be used.
// werr is the member's side failing (the bytes are lost), err the client's.
func (b *reqBody) splice(gen int, sp *splicer) (n int, err, werr error, ok bool) {
	l := b.length
	b.mu.Lock()
	if l == nil || b.keeping || l.r.Buffered() > 0 || l.n <= spliceMin || !b.guard.inBody(l.n) {
		b.mu.Unlock()
		return 0, nil, nil, false
	}
	b.mu.Unlock()
	start, err := b.begin(gen)
	if err != nil {
		return 0, err, nil, true
	}
	n, err = sp.fill(l.n - spliceMin)
	if n == 0 && err == nil {
		err = io.ErrUnexpectedEOF // the client closed in the middle of the body
	}
	l.n -= int64(n)
	b.guard.spliced(n)
	err = b.end(start, gen, n, nil, err)
	if n > 0 {
		_, werr = sp.drain()
	}
	sp.release()
	return n, err, werr, true
}

// begin starts a read of the client for attempt gen: it fails if the
// attempt was abandoned, the body failed or ended, or its timeout fired;
// else it marks the read in progress (for the timeout and rewind).
func (b *reqBody) begin(gen int) (time.Time, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case gen != b.gen || b.readStart != (time.Time{}):
		return time.Time{}, io.ErrClosedPipe // an abandoned attempt's transport
	case b.err != nil:
		return time.Time{}, b.err
	case b.eof:
		return time.Time{}, io.EOF
	case b.timedOut:
		b.err = errBodyTimeout
		return time.Time{}, errBodyTimeout
	}
	start := time.Now()
	b.readStart = start
	if b.grace > 0 && b.timer == nil {
		b.timer = time.AfterFunc(b.grace, b.watch)
	}
	return start, nil
}

// end records a read of the client that began at start and returned n
// bytes (got, kept for a retry; nil when spliced) and err; it returns the
// error the reader sees.
func (b *reqBody) end(start time.Time, gen, n int, got []byte, err error) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.readStart = time.Time{}
	b.readDone.Broadcast()
	b.waited += time.Since(start)
	b.received += int64(n)
	if got != nil && n > 0 && b.keeping && gen == b.gen {
		b.keep(got)
	}
	if f, ok := b.src.(interface{ finished() bool }); ok && err == nil && f.finished() {
		// A Content-Length body whose last byte just arrived: it is
		// complete now, not at the next read (a member that has it all
		// may answer before that read).
		b.eof = true
		if b.timer != nil {
			b.timer.Stop()
		}
	}
	switch {
	case err == io.EOF:
		b.eof = true
		if b.timer != nil {
			b.timer.Stop()
		}
	case err != nil && b.err == nil:
		b.err = err
	}
	return err
}

// allowed is how long the client may have kept the body waiting so far.
func (b *reqBody) allowed() time.Duration {
	d := b.grace
	if b.minRate > 0 {
		d += time.Duration(float64(b.received) / float64(b.minRate) * float64(time.Second))
	}
	return d
}

// watch runs when the client may have kept the body waiting too long.
// Only time spent blocked on the client counts: a member slow to take the
// body is not the client's fault.
func (b *reqBody) watch() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.finished || b.eof || b.err != nil || b.timedOut {
		return
	}
	now := time.Now()
	waited := b.waited
	if !b.readStart.IsZero() {
		waited += now.Sub(b.readStart)
	}
	if allowed := b.allowed(); waited < allowed {
		b.timer.Reset(max(allowed-waited, 10*time.Millisecond))
		return
	}
	b.timedOut = true
	if !b.readStart.IsZero() {
		// Wake the blocked read: it fails with a timeout, the transport
		// closes the upstream connection, and the handler answers 408.
		_ = b.rc.SetReadDeadline(now)
	}
}

// keep appends what was just read to the retry copy, or gives the copy up
// when the request's limit or the server's budget would be exceeded.
func (b *reqBody) keep(p []byte) {
	if b.keptLen+int64(len(p)) > b.limit {
		b.drop()
		return
	}
	for len(p) > 0 {
		last := len(b.kept) - 1
		if last < 0 || len(b.kept[last]) == cap(b.kept[last]) {
			size := minChunk
			if last >= 0 {
				size = min(2*cap(b.kept[last]), maxChunk)
			} else {
				for size < len(p) && size < maxChunk {
					size *= 2
				}
			}
			if !b.budget.take(int64(size)) {
				b.drop()
				return
			}
			b.reserved += int64(size)
			b.kept = append(b.kept, make([]byte, 0, size))
			last++
		}
		c := b.kept[last]
		n := min(len(p), cap(c)-len(c))
		b.kept[last] = append(c, p[:n]...)
		p = p[n:]
		b.keptLen += int64(n)
	}
}

// drop gives up the retry copy and its share of the budget.
func (b *reqBody) drop() {
	b.keeping = false
	b.kept = nil
	b.keptLen = 0
	b.budget.give(b.reserved)
	b.reserved = 0
}

// rewind prepares the body for another attempt (reader): what the
// attempts so far read, then the rest of the client's body. It reports
// false when that cannot be had (bytes were read and not kept, the client
// failed, a read is in progress). The earlier attempt's reader is cut off
// either way.
func (b *reqBody) rewind() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	// A read of the client the abandoned attempt started is still in
	// flight (a member that closed a pooled connection fails the attempt
	// while the body is still arriving): wait for it, so its bytes land in
	// the copy before the replay is measured. The read ends with the
	// client's bytes, its error or the body timeout.
	for !b.readStart.IsZero() && b.err == nil && !b.timedOut {
		b.readDone.Wait()
	}
	ok := b.err == nil && !b.timedOut && b.readStart.IsZero() && b.keptLen == b.received
	b.gen++
	b.replayLen = b.keptLen
	return ok
}

// answered tells the body a member has answered: no retry can follow, so
// the copy is given back (unless a retry is replaying it right now).
func (b *reqBody) answered() {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.gen == 0 {
		b.drop() // a later attempt may still be replaying it: finish gives it back
	}
}

// finish runs when the handler returns: the copy and the timer go.
func (b *reqBody) finish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.finished = true
	if b.timer != nil {
		b.timer.Stop()
	}
	b.drop()
}

// complete reports whether the client's body was read to its end.
func (b *reqBody) complete() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.eof
}

// clientFailure reports whether the body timeout fired and the error the
// client's side of the body failed with; nil if the client is not to blame.
func (b *reqBody) clientFailure() (timedOut bool, err error) {
	if b == nil {
		return false, nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.timedOut, b.err
}

// spliceSource returns the body and attempt r reads, if what it reads next
// comes from the client rather than the retry copy.
func spliceSource(r io.Reader) (*reqBody, int, bool) {
	switch r := r.(type) {
	case firstAttempt:
		return r.b, 0, true
	case *replayReader:
		return r.b, r.gen, r.pos >= r.limit
	}
	return nil, 0, false
}

// replayReader is a later attempt's body: the first limit bytes of the
// kept copy, then the client's.
type replayReader struct {
	b     *reqBody
	gen   int
	pos   int64
	limit int64
}

func (r *replayReader) Read(p []byte) (int, error) {
	if r.pos < r.limit && len(p) > 0 {
		b := r.b
		b.mu.Lock()
		if r.gen != b.gen {
			b.mu.Unlock()
			return 0, io.ErrClosedPipe
		}
		off := r.pos
		n := 0
		for _, c := range b.kept {
			if off >= int64(len(c)) {
				off -= int64(len(c))
				continue
			}
			k := copy(p[n:], c[off:min(int64(len(c)), off+r.limit-r.pos-int64(n))])
			n += k
			off = 0
			if n == len(p) || r.pos+int64(n) == r.limit {
				break
			}
		}
		b.mu.Unlock()
		if n == 0 {
			return 0, io.ErrUnexpectedEOF // the copy is gone
		}
		r.pos += int64(n)
		return n, nil
	}
	return r.b.read(p, r.gen)
}

// retryBudget bounds the bytes all requests together keep for retries
// (limits.retry_buffer_total): beyond it a body is simply not kept, and
// its request is not retried, but still forwarded.
type retryBudget struct {
	limit int64
	used  atomic.Int64
	peak  atomic.Int64
}

func (r *retryBudget) take(n int64) bool {
	for {
		u := r.used.Load()
		if u+n > r.limit {
			return false
		}
		if r.used.CompareAndSwap(u, u+n) {
			for p := r.peak.Load(); u+n > p && !r.peak.CompareAndSwap(p, u+n); p = r.peak.Load() {
			}
			return true
		}
	}
}

func (r *retryBudget) give(n int64) {
	if n != 0 {
		r.used.Add(-n)
	}
}

// RetryBuffered returns the bytes currently kept for retries by all
// requests in flight, and the most ever kept at once; neither exceeds
// limits.retry_buffer_total.
func (s *Server) RetryBuffered() (inUse, peak int64) {
	return s.retryBudget.used.Load(), s.retryBudget.peak.Load()
}

// bodySender copies one attempt's request body to the member, while the
// request's goroutine reads the answer (full duplex, rule 9): chunked
// bodies are sent chunked, trailer included. With Expect: 100-continue it
// waits for the member's 100 (or a second, as Go's transport does).
type bodySender struct {
	x        *exchange
	uc       *upConn
	r        io.Reader
	chunked  bool
	cont     chan struct{} // closed by proceed; nil without Expect
	contOnce sync.Once
	done     chan struct{} // closed when run returns
	ok       bool          // the whole body went to the member (read after done)
}

// expectContinueWait is how long a body waits for the member's 100 Continue.
const expectContinueWait = time.Second

func newBodySender(x *exchange, uc *upConn, r io.Reader, chunked, expect bool) *bodySender {
	bs := &bodySender{x: x, uc: uc, r: r, chunked: chunked, done: make(chan struct{})}
	if expect {
		bs.cont = make(chan struct{})
	}
	return bs
}

// proceed lets a body waiting for 100 Continue go.
func (bs *bodySender) proceed() {
	if bs.cont != nil {
		bs.contOnce.Do(func() { close(bs.cont) })
	}
}

func (bs *bodySender) run() {
	defer bs.x.c.wg.Done()
	defer close(bs.done)
	if bs.cont != nil {
		t := time.NewTimer(expectContinueWait)
		select {
		case <-bs.cont:
		case <-t.C:
		}
		t.Stop()
	}
	bw := bs.uc.bw
	bp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bp)
	buf := *bp
	// A Content-Length body from a plain TCP client to a plain TCP member
	// may be spliced once the retry copy is given up (reqBody.splice).
	var sp *splicer
	b, gen, spliceable := spliceSource(bs.r)
	if spliceable && !bs.chunked && b.length != nil {
		sp = newSplicer(b.guard.Conn, bs.uc.conn)
	}
	for {
		if sp != nil {
			n, err, werr, ok := b.splice(gen, sp)
			if werr != nil {
				return // the member's side: its answer (or failure) says more
			}
			if ok && n > 0 && err == nil {
				continue
			}
			if ok && err != nil {
				if err != io.ErrClosedPipe {
					bs.uc.conn.Close()
				}
				return
			}
		}
		n, err := bs.r.Read(buf)
		if n > 0 {
			if bs.chunked {
				bw.Write(appendChunkHeader(bw.AvailableBuffer(), n))
			}
			bw.Write(buf[:n])
			if bs.chunked {
				bw.WriteString("\r\n")
			}
			if bw.Flush() != nil {
				return // the member's side: its answer (or failure) says more
			}
		}
		if err == io.EOF {
			if bs.chunked {
				bw.WriteString("0\r\n")
				bw.Write(bs.x.c.reqChunked.trailer)
				bw.WriteString("\r\n")
			}
			bs.ok = bw.Flush() == nil
			return
		}
		if err != nil {
			if err != io.ErrClosedPipe {
				// The client's side failed: wake the request's goroutine,
				// which may be waiting for the member's answer.
				bs.uc.conn.Close()
			}
			return
		}
	}
}
