package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/gwelb/gwelb/fsm"
)

// frame encodes one WebSocket frame (FIN set), masked with key if given.
func frame(op byte, payload []byte, key []byte) []byte {
	b := []byte{0x80 | op}
	mask := byte(0)
	if key != nil {
		mask = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		b = append(b, mask|byte(n))
	case n < 1<<16:
		b = append(b, mask|126, byte(n>>8), byte(n))
	default:
		b = append(b, mask|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	p := bytes.Clone(payload)
	if key != nil {
		b = append(b, key...)
		for i := range p {
			p[i] ^= key[i%4]
		}
	}
	return append(b, p...)
}

// TestFrameScanner feeds frames of every header form, whole and byte by
// byte, and checks that boundaries fall exactly between frames.
func TestFrameScanner(t *testing.T) {
	key := []byte{1, 2, 3, 4}
	frames := [][]byte{
		frame(0x1, nil, nil),
		frame(0x1, []byte("hello"), nil),
		frame(0x2, bytes.Repeat([]byte{7}, 125), key),
		frame(0x2, bytes.Repeat([]byte{7}, 126), nil),
		frame(0x2, bytes.Repeat([]byte{7}, 65535), key),
		frame(0x2, bytes.Repeat([]byte{7}, 65536), nil),
		frame(0x9, []byte("ping"), key),
		frame(opClose, []byte{0x03, 0xe8}, nil),
	}
	var stream []byte
	var ends []int
	for _, f := range frames {
		stream = append(stream, f...)
		ends = append(ends, len(stream))
	}
	for _, chunk := range []int{1, 3, 1000, len(stream)} {
		var f frameScanner
		var got []int
		for off := 0; off < len(stream); {
			end := min(off+chunk, len(stream))
			p := stream[off:end]
			for len(p) > 0 {
				k, ended := f.advance(p)
				p = p[k:]
				if ended {
					got = append(got, end-len(p))
					if !f.atBoundary() {
						t.Fatalf("chunk %d: frame ended at %d but not at a boundary", chunk, end-len(p))
					}
				}
			}
			off = end
		}
		if len(got) != len(ends) {
			t.Fatalf("chunk %d: boundaries %v, want %v", chunk, got, ends)
		}
		for i := range got {
			if got[i] != ends[i] {
				t.Fatalf("chunk %d: boundaries %v, want %v", chunk, got, ends)
			}
		}
		if !f.sawClose {
			t.Errorf("chunk %d: the close frame went by unnoticed", chunk)
		}
	}
}

// wsMember is a member that accepts WebSockets, greets, echoes, and
// records the close status the proxy sent it.
type wsMember struct {
	mu     sync.Mutex
	status []websocket.StatusCode
}

func (m *wsMember) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer c.CloseNow()
	c.Write(r.Context(), websocket.MessageText, []byte("hi"))
	for {
		typ, msg, err := c.Read(r.Context())
		if err != nil {
			m.mu.Lock()
			m.status = append(m.status, websocket.CloseStatus(err))
			m.mu.Unlock()
			return
		}
		c.Write(r.Context(), typ, msg)
	}
}

func (m *wsMember) statuses() []websocket.StatusCode {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]websocket.StatusCode(nil), m.status...)
}

// TestCloseWebSocketsGoingAway: a stopping node closes every tunnel with
// 1001 to the client and a close to the member (DESIGN.md §6.3), waits for
// the handshakes, and closes a tunnel opened afterwards at once.
func TestCloseWebSocketsGoingAway(t *testing.T) {
	m := &wsMember{}
	ts := httptest.NewServer(m)
	t.Cleanup(ts.Close)
	h := startProxy(t, mustTable(t, fsm.PoolSpec{Name: "backend", Prefix: "/backend", Sticky: fsm.StickySpec{Cookie: "ROUTEID"}, Members: []fsm.MemberSpec{{Route: "1", URL: ts.URL}}}), Options{}, ListenerConfig{})

	open := func() *websocket.Conn {
		t.Helper()
		c, _, err := websocket.Dial(t.Context(), "ws://"+h.addr+"/backend/ws", &websocket.DialOptions{HTTPClient: h.client})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.CloseNow() })
		return c
	}
	dial := func() *websocket.Conn {
		t.Helper()
		c := open()
		if _, msg, err := c.Read(t.Context()); err != nil || string(msg) != "hi" {
			t.Fatalf("greeting: %q %v", msg, err)
		}
		return c
	}
	clients := []*websocket.Conn{dial(), dial()}
	// One echo each way first: the tunnels carry traffic before they close.
	for _, c := range clients {
		if err := c.Write(t.Context(), websocket.MessageBinary, []byte("ping")); err != nil {
			t.Fatal(err)
		}
		if _, msg, err := c.Read(t.Context()); err != nil || string(msg) != "ping" {
			t.Fatalf("echo: %q %v", msg, err)
		}
	}
	if n := h.srv.WebSockets(); n != 2 {
		t.Fatalf("WebSockets() = %d, want 2", n)
	}

	// The clients read concurrently, as a browser does: the close handshake
	// needs the client's answer.
	got := make(chan error, len(clients))
	for _, c := range clients {
		go func() {
			_, _, err := c.Read(context.Background())
			got <- err
		}()
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	n, err := h.srv.CloseWebSockets(ctx)
	if err != nil || n != 2 {
		t.Fatalf("CloseWebSockets = %d, %v; want 2, nil", n, err)
	}
	for range clients {
		err := <-got
		if s := websocket.CloseStatus(err); s != websocket.StatusGoingAway {
			t.Errorf("client read after shutdown: status %v (%v), want 1001 going away", s, err)
		}
	}
	waitFor(t, 5*time.Second, "both members to see a close frame", func() bool { return len(m.statuses()) == 2 })
	for _, s := range m.statuses() {
		if s != websocket.StatusGoingAway {
			t.Errorf("member saw close status %v, want 1001 going away", s)
		}
	}
	if n := h.srv.WebSockets(); n != 0 {
		t.Errorf("WebSockets() after close = %d, want 0", n)
	}

	// Opened while the node is stopping (on a connection accepted before):
	// closed at once, the same way.
	c := open()
	for err == nil {
		_, _, err = c.Read(t.Context()) // the greeting may come before the close
	}
	if s := websocket.CloseStatus(err); s != websocket.StatusGoingAway {
		t.Errorf("tunnel opened after CloseWebSockets: status %v (%v), want 1001", s, err)
	}
}

// rawFrames reads frames from r (the member's side: client frames are
// masked) and sends each, unmasked, on out.
func rawFrames(r io.Reader, out chan<- [2][]byte) {
	defer close(out)
	br := bufio.NewReader(r)
	for {
		var h [2]byte
		if _, err := io.ReadFull(br, h[:]); err != nil {
			return
		}
		n := uint64(h[1] & 0x7f)
		switch n {
		case 126:
			var b [2]byte
			io.ReadFull(br, b[:])
			n = uint64(binary.BigEndian.Uint16(b[:]))
		case 127:
			var b [8]byte
			io.ReadFull(br, b[:])
			n = binary.BigEndian.Uint64(b[:])
		}
		var key [4]byte
		masked := h[1]&0x80 != 0
		if masked {
			io.ReadFull(br, key[:])
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(br, p); err != nil {
			return
		}
		if masked {
			for i := range p {
				p[i] ^= key[i%4]
			}
		}
		out <- [2][]byte{{h[0] & 0x0f}, p}
	}
}

// TestCloseWebSocketsAtFrameBoundary: with a frame half sent in each
// direction when the node starts going away, each end gets the rest of
// that frame and then the close frame, never a close frame inside another
// frame. Both ends are raw byte streams here, so every byte is seen.
func TestCloseWebSocketsAtFrameBoundary(t *testing.T) {
	memberFrame := frame(0x1, []byte("0123456789"), nil)
	clientFrame := frame(0x2, []byte("abcdefghij"), []byte{9, 8, 7, 6})
	finish := make(chan struct{})
	frames := make(chan [2][]byte, 16)
	memberGone := make(chan struct{})
	member := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer close(memberGone)
		defer conn.Close()
		io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n")
		conn.Write(memberFrame[:7]) // header and half the payload
		in := make(chan [2][]byte, 16)
		go rawFrames(brw, in)
		<-finish
		conn.Write(memberFrame[7:])
		for f := range in {
			frames <- f
			if f[0][0] == opClose {
				conn.Write(frame(opClose, f[1], nil)) // the member answers the close
				return
			}
		}
	}))
	t.Cleanup(member.Close)
	h := startProxy(t, mustTable(t, fsm.PoolSpec{Name: "backend", Prefix: "/backend", Sticky: fsm.StickySpec{Cookie: "ROUTEID"}, Members: []fsm.MemberSpec{{Route: "1", URL: member.URL}}}), Options{}, ListenerConfig{})

	conn, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	io.WriteString(conn, "GET /backend/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	half := make([]byte, 7)
	if _, err := io.ReadFull(br, half); err != nil || !bytes.Equal(half, memberFrame[:7]) {
		t.Fatalf("first half of the member's frame: %q %v", half, err)
	}
	conn.Write(clientFrame[:9]) // header, key and 3 payload bytes

	// The proxy must have forwarded the client's half frame before going
	// away, or the test proves nothing: wait for the tunnel to exist and
	// for its scanner to be inside that frame.
	var tun *wsTunnel
	waitFor(t, 5*time.Second, "the client's half frame to pass the tunnel", func() bool {
		h.srv.tunnels.mu.Lock()
		defer h.srv.tunnels.mu.Unlock()
		for tt := range h.srv.tunnels.open {
			tt.wmu.Lock()
			mid := !tt.up.atBoundary()
			tt.wmu.Unlock()
			if mid {
				tun = tt
				return true
			}
		}
		return false
	})
	closed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_, err := h.srv.CloseWebSockets(ctx)
		closed <- err
	}()
	waitFor(t, 5*time.Second, "the tunnel to go away", tun.leaving.Load)

	close(finish) // the member ends its frame
	rest := make([]byte, len(memberFrame)-7)
	if _, err := io.ReadFull(br, rest); err != nil || !bytes.Equal(rest, memberFrame[7:]) {
		t.Fatalf("rest of the member's frame: %q %v", rest, err)
	}
	var next [2]byte
	if _, err := io.ReadFull(br, next[:]); err != nil {
		t.Fatal(err)
	}
	if next[0] != 0x80|opClose {
		t.Fatalf("after the member's frame the client got %x, want a close frame", next)
	}
	payload := make([]byte, next[1]&0x7f)
	io.ReadFull(br, payload)
	if code := binary.BigEndian.Uint16(payload); code != CloseGoingAway {
		t.Errorf("client's close code %d, want 1001", code)
	}

	conn.Write(clientFrame[9:])                                 // the client ends its frame...
	conn.Write(frame(opClose, payload[:2], []byte{1, 1, 1, 1})) // ...and answers the close
	var got []string
	for f := range frames {
		got = append(got, string(f[0])+string(f[1]))
		if f[0][0] == opClose {
			if code := binary.BigEndian.Uint16(f[1]); code != CloseGoingAway {
				t.Errorf("member's close code %d, want 1001", code)
			}
			break
		}
	}
	if len(got) != 2 || got[0] != "\x02abcdefghij" {
		t.Errorf("member got frames %q, want the client's whole frame, then one close", got)
	}
	if err := <-closed; err != nil {
		t.Errorf("CloseWebSockets: %v", err)
	}
	// The tunnel ended: the client's connection is closed.
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "reset") {
		t.Errorf("client after the handshake: %v, want EOF", err)
	}
	<-memberGone
}
