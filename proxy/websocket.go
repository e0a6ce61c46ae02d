package proxy

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// WebSockets through a stopping node (DESIGN.md §6.3). ReverseProxy
// tunnels an upgraded connection by copying bytes both ways; to end such a
// tunnel cleanly the proxy must know where WebSocket frames begin and end
// (RFC 6455 §5.2), since a close frame written in the middle of another
// frame would be read as that frame's payload. wsTunnel is the member's
// side of the tunnel as ReverseProxy sees it (the 101 response's body): it
// follows the frame headers of both directions, holding no payload, and
// when the node goes away it sends the client a close frame with code 1001
// (going away) and the member a masked one, each at a frame boundary, so
// that the client reconnects through another node and the member sees a
// closing handshake rather than a cut connection.

// CloseGoingAway is the WebSocket close code a stopping node sends both
// ends of every tunnel (RFC 6455 §7.4.1: an endpoint going away).
const CloseGoingAway = 1001

// goingAwayReason is the close frame's reason text (at most 123 bytes).
const goingAwayReason = "gwelb node shutting down"

// clientCloseWait bounds how long a tunnel that sent its close frames waits
// for the client's answering close before closing the connection: a client
// that answers sees a clean close; one that does not is not waited for.
const clientCloseWait = time.Second

// errGoneAway ends a tunnel whose closing handshakes are done. It is not
// io.EOF on purpose: ReverseProxy answers EOF from the member with a
// half-close and keeps reading the client, while this error makes it close
// both connections at once (the server end closes first, RFC 6455 §7.1.1).
var errGoneAway = errors.New("websocket closed: the node is going away")

// tunnelWebSocket answers a 101 Switching Protocols: if the request was
// a WebSocket upgrade and the member switched to WebSocket, the 101 goes
// to the client (with the route cookie, rule 7) and the connection
// becomes a tunnel, copied both ways until either side ends it (or the
// node goes away, CloseWebSockets); else the member's switch is refused
// with 502, as Go's ReverseProxy does.
func (s *Server) tunnelWebSocket(x *exchange, uc *upConn, websocket bool) {
	r, c, st := &x.resp, x.c, &x.st
	if !websocket || !r.connUp || !strings.EqualFold(r.upgrade, "websocket") {
		uc.conn.Close()
		x.st.status = 0
		s.log.Warn("member switched protocols unasked", "pool", st.pv.spec.Name, "route", st.pv.members[st.member].route, "upgrade", r.upgrade)
		x.answer(http.StatusBadGateway, "gwelb: upstream unavailable")
		return
	}
	x.close = true
	bw := c.bw
	x.writeResponseHead()
	bw.WriteString("Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	x.status = http.StatusSwitchingProtocols
	if err := bw.Flush(); err != nil {
		uc.conn.Close()
		return
	}
	s.websocketOpened(st) // gwelb_websockets, until the tunnel closes
	c.state.Store(connTunnel)
	t := &wsTunnel{body: memberSide{uc}, conn: uc.conn, set: &s.tunnels, clientClosed: make(chan struct{})}
	if s.tunnels.add(t) {
		go t.goAway() // the node is already stopping
	}
	// Both directions at once: the client's bytes (those already read
	// first) to the member, the member's to the client. A side that ends
	// cleanly half-closes the other and the tunnel waits for the second;
	// an error ends both at once.
	errc := make(chan error, 1)
	go func() {
		bp := copyBuffers.Get().(*[]byte)
		defer copyBuffers.Put(bp)
		_, err := io.CopyBuffer(t, onlyReader{c.br}, *bp)
		if err == nil {
			err = t.CloseWrite()
			if errors.Is(err, http.ErrNotSupported) {
				err = nil
			}
		} else {
			t.Close()
			c.g.Close()
		}
		errc <- err
	}()
	bp := copyBuffers.Get().(*[]byte)
	_, err := io.CopyBuffer(onlyWriter{c.g}, t, *bp)
	copyBuffers.Put(bp)
	if err == nil {
		err = c.g.CloseWrite()
	}
	if err != nil {
		t.Close()
		c.g.Close()
	}
	<-errc
	t.Close()
	c.g.Close()
}

// memberSide is the member's end of a tunnel: what its reader buffered
// after the 101 is read first.
type memberSide struct{ uc *upConn }

func (m memberSide) Read(p []byte) (int, error)  { return m.uc.br.Read(p) }
func (m memberSide) Write(p []byte) (int, error) { return upWriter(m).Write(p) }
func (m memberSide) Close() error                { return m.uc.conn.Close() }
func (m memberSide) CloseWrite() error {
	if cw, ok := m.uc.conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return http.ErrNotSupported
}

// onlyReader and onlyWriter hide the other methods of what they wrap, so
// that io.CopyBuffer uses the pooled buffer.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

type onlyWriter struct{ w io.Writer }

func (o onlyWriter) Write(p []byte) (int, error) { return o.w.Write(p) }

// tunnelSet is the server's open tunnels.
type tunnelSet struct {
	mu      sync.Mutex
	open    map[*wsTunnel]struct{}
	closing bool
	idle    chan struct{} // closed when closing and no tunnel is left
}

// add registers t and reports whether the node is already stopping.
func (ts *tunnelSet) add(t *wsTunnel) bool {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.open == nil {
		ts.open = map[*wsTunnel]struct{}{}
	}
	ts.open[t] = struct{}{}
	return ts.closing
}

func (ts *tunnelSet) remove(t *wsTunnel) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	delete(ts.open, t)
	if ts.closing && len(ts.open) == 0 && ts.idle != nil {
		close(ts.idle)
		ts.idle = nil
	}
}

// WebSockets returns the number of WebSocket tunnels open through the server.
func (s *Server) WebSockets() int {
	s.tunnels.mu.Lock()
	defer s.tunnels.mu.Unlock()
	return len(s.tunnels.open)
}

// CloseWebSockets ends every WebSocket tunnel, and any opened from now on,
// with close code 1001 (going away) to the client and a close frame to the
// member (DESIGN.md §6.3), and waits until the tunnels have closed. When
// ctx ends first, the tunnels left are cut and ctx's error is returned. It
// returns how many tunnels were open when it was called.
func (s *Server) CloseWebSockets(ctx context.Context) (int, error) {
	ts := &s.tunnels
	ts.mu.Lock()
	ts.closing = true
	open := make([]*wsTunnel, 0, len(ts.open))
	for t := range ts.open {
		open = append(open, t)
	}
	var idle chan struct{}
	if len(ts.open) > 0 {
		if ts.idle == nil {
			ts.idle = make(chan struct{})
		}
		idle = ts.idle
	}
	ts.mu.Unlock()
	for _, t := range open {
		go t.goAway() // a member that does not read must not hold up the others
	}
	if idle == nil {
		return len(open), nil
	}
	select {
	case <-idle:
		return len(open), nil
	case <-ctx.Done():
	}
	ts.mu.Lock()
	left := make([]*wsTunnel, 0, len(ts.open))
	for t := range ts.open {
		left = append(left, t)
	}
	ts.mu.Unlock()
	for _, t := range left {
		t.body.Close()
	}
	return len(open), ctx.Err()
}

// wsTunnel is the member's side of one WebSocket tunnel: Read carries the
// member's frames to the client, Write the client's to the member
// (ReverseProxy calls each from its own goroutine).
type wsTunnel struct {
	body io.ReadWriteCloser // the member connection (memberSide)
	conn net.Conn           // the same connection, for read deadlines; nil if unknown
	set  *tunnelSet

	leaving   atomic.Bool // the node goes away: close both sides at the next boundaries
	leaveOnce sync.Once
	closeOnce sync.Once

	// Read's side (member to client), used by Read only.
	down     frameScanner
	pending  []byte // what is left to send of the close frame for the client
	downSent bool   // the close frame for the client is out: what the member sends now is dropped
	sentAt   time.Time

	// Write's side (client to member), under wmu: Write and goAway both
	// write to the member.
	wmu          sync.Mutex
	up           frameScanner
	upSent       bool          // the close frame for the member is out: what the client sends now is dropped
	clientClosed chan struct{} // closed once a close frame from the client went by
	clientOnce   sync.Once
}

// goAway starts the closing handshakes: the member's close frame goes now
// if the client is between frames (else Write sends it at the end of the
// frame in progress), and a read blocked on the member is woken so that
// Read can send the client's.
func (t *wsTunnel) goAway() {
	t.leaveOnce.Do(func() {
		t.leaving.Store(true)
		t.wmu.Lock()
		t.closeUpLocked()
		t.wmu.Unlock()
		if t.conn != nil {
			t.conn.SetReadDeadline(time.Now())
		}
	})
}

// closeUpLocked sends the member a masked close frame if the client's
// stream is at a frame boundary and the client has not closed already.
func (t *wsTunnel) closeUpLocked() {
	if t.upSent || !t.up.atBoundary() {
		return
	}
	t.upSent = true
	if t.up.sawClose {
		return // the client's own close is on its way: the handshake needs nothing from us
	}
	t.body.Write(closeFrame(true))
}

// Write forwards the client's bytes to the member, following frame
// boundaries; once the node goes away it ends the frame in progress, sends
// the close frame, and drops the rest.
func (t *wsTunnel) Write(p []byte) (int, error) {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	defer t.noteClientClose()
	if t.upSent {
		t.up.scan(p)
		return len(p), nil
	}
	if !t.leaving.Load() {
		t.up.scan(p)
		return t.body.Write(p)
	}
	k, _ := t.up.advance(p)
	if k > 0 {
		if _, err := t.body.Write(p[:k]); err != nil {
			return 0, err
		}
	}
	t.closeUpLocked()
	t.up.scan(p[k:])
	return len(p), nil
}

func (t *wsTunnel) noteClientClose() {
	if t.up.sawClose {
		t.clientOnce.Do(func() { close(t.clientClosed) })
	}
}

// Read carries the member's bytes to the client, following frame
// boundaries; once the node goes away it ends the frame in progress, then
// returns the close frame for the client, then waits for the member's
// answering close (dropped: the client has its close already) and the
// client's, and ends the tunnel.
func (t *wsTunnel) Read(p []byte) (int, error) {
	for {
		if len(t.pending) > 0 {
			n := copy(p, t.pending)
			t.pending = t.pending[n:]
			return n, nil
		}
		if t.downSent {
			if t.down.sawClose {
				t.awaitClient()
				return 0, errGoneAway
			}
			n, err := t.read(p)
			t.down.scan(p[:n])
			if err != nil {
				if t.awake(err) {
					continue
				}
				t.awaitClient()
				return 0, errGoneAway
			}
			continue
		}
		if t.leaving.Load() && t.down.atBoundary() && !t.down.sawClose {
			t.pending, t.downSent, t.sentAt = closeFrame(false), true, time.Now()
			continue
		}
		n, err := t.read(p)
		if n > 0 && t.leaving.Load() && !t.down.sawClose {
			k, ended := t.down.advance(p[:n])
			if ended {
				t.pending, t.downSent, t.sentAt = closeFrame(false), true, time.Now()
				t.down.scan(p[k:n])
			}
			return k, nil
		}
		t.down.scan(p[:n])
		if err != nil && n == 0 && t.awake(err) {
			continue
		}
		return n, err
	}
}

// read reads from the member.
func (t *wsTunnel) read(p []byte) (int, error) { return t.body.Read(p) }

// awake reports whether err is goAway's wake-up of a blocked read, and
// clears the deadline so reading can go on.
func (t *wsTunnel) awake(err error) bool {
	if !t.leaving.Load() || t.conn == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	t.conn.SetReadDeadline(time.Time{})
	return true
}

// awaitClient gives the client a moment to answer the close frame it was
// sent, so that it sees a clean closing handshake.
func (t *wsTunnel) awaitClient() {
	if !t.downSent {
		return
	}
	wait := time.NewTimer(time.Until(t.sentAt.Add(clientCloseWait)))
	defer wait.Stop()
	select {
	case <-t.clientClosed:
	case <-wait.C:
	}
}

// Close closes the member connection and unregisters the tunnel.
func (t *wsTunnel) Close() error {
	var err error
	t.closeOnce.Do(func() {
		err = t.body.Close()
		t.set.remove(t)
	})
	return err
}

// CloseWrite half-closes the member connection when the client's side
// ended (ReverseProxy asks for it), if the connection can.
func (t *wsTunnel) CloseWrite() error {
	if cw, ok := t.body.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return http.ErrNotSupported
}

// closeFrame is a close frame with code 1001 and goingAwayReason, masked
// (client to member frames must be, RFC 6455 §5.3) or not (to the client).
func closeFrame(masked bool) []byte {
	payload := make([]byte, 2, 2+len(goingAwayReason))
	binary.BigEndian.PutUint16(payload, CloseGoingAway)
	payload = append(payload, goingAwayReason...)
	f := []byte{0x80 | opClose, byte(len(payload))}
	if masked {
		var key [4]byte
		rand.Read(key[:])
		f[1] |= 0x80
		f = append(f, key[:]...)
		for i := range payload {
			payload[i] ^= key[i%4]
		}
	}
	return append(f, payload...)
}

const opClose = 0x8

// frameScanner follows the frame boundaries of one direction of a
// WebSocket stream (RFC 6455 §5.2) from the headers alone: it keeps the
// header bytes seen so far and how much payload is left, never the payload.
type frameScanner struct {
	hdr      [14]byte
	n        int    // header bytes collected
	left     uint64 // payload bytes left in the current frame
	opcode   byte   // of the frame whose payload is being read
	sawClose bool   // a whole close frame went by
}

// atBoundary reports whether the stream is between two frames.
func (f *frameScanner) atBoundary() bool { return f.n == 0 && f.left == 0 }

// headerLen is the length of the header whose first two bytes are known.
func (f *frameScanner) headerLen() int {
	n := 2
	switch f.hdr[1] & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if f.hdr[1]&0x80 != 0 {
		n += 4
	}
	return n
}

// advance consumes p up to the end of the frame in progress (or all of
// p): it returns how many bytes it consumed and whether a frame ended
// there. At a boundary it consumes the next frame.
func (f *frameScanner) advance(p []byte) (int, bool) {
	i := 0
	for i < len(p) {
		if f.left > 0 {
			k := uint64(len(p) - i)
			if k > f.left {
				k = f.left
			}
			i += int(k)
			f.left -= k
			if f.left == 0 {
				f.end()
				return i, true
			}
			continue
		}
		f.hdr[f.n] = p[i]
		f.n++
		i++
		if f.n < 2 || f.n < f.headerLen() {
			continue
		}
		var size uint64
		switch l := f.hdr[1] & 0x7f; l {
		case 126:
			size = uint64(binary.BigEndian.Uint16(f.hdr[2:4]))
		case 127:
			size = binary.BigEndian.Uint64(f.hdr[2:10])
		default:
			size = uint64(l)
		}
		f.opcode = f.hdr[0] & 0x0f
		f.n = 0
		f.left = size
		if size == 0 {
			f.end()
			return i, true
		}
	}
	return i, false
}

// scan consumes all of p.
func (f *frameScanner) scan(p []byte) {
	for len(p) > 0 {
		k, _ := f.advance(p)
		p = p[k:]
	}
}

func (f *frameScanner) end() {
	if f.opcode == opClose {
		f.sawClose = true
	}
}
