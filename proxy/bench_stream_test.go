package proxy

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// The streaming benchmarks of make bench's second table (deploy/bench/streams),
// through a real Server on loopback to a gwedemo member: 16 MiB bodies each
// way, WebSocket echo, and the memory an idle keep-alive connection holds.
// Compare runs with benchstat; the machine's load matters (DESIGN.md §8).

const streamSize = 16 << 20

// BenchmarkStreamUp posts 16 MiB to the member's echo, which streams it
// back as it arrives (full duplex, both directions busy): MB/s of the
// request body.
func BenchmarkStreamUp(b *testing.B) {
	back := startMembers(b, "/backend", "1", "2")
	h := startProxy(b, mustTable(b, backendPool(back)), Options{AccessLog: io.Discard}, ListenerConfig{})
	payload := bytes.Repeat([]byte("0123456789abcdef"), streamSize/16)
	b.SetBytes(streamSize)
	for b.Loop() {
		req, err := http.NewRequest(http.MethodPost, h.base+"/backend/echo", bytes.NewReader(payload))
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("Cookie", "ROUTEID=.2")
		streamOne(b, h.client, req)
	}
}

// BenchmarkStreamUpChunked is BenchmarkStreamUp with a body of unknown
// length: chunked to the member, whose echo comes back chunked.
func BenchmarkStreamUpChunked(b *testing.B) {
	back := startMembers(b, "/backend", "1", "2")
	h := startProxy(b, mustTable(b, backendPool(back)), Options{AccessLog: io.Discard}, ListenerConfig{})
	payload := bytes.Repeat([]byte("0123456789abcdef"), streamSize/16)
	b.SetBytes(streamSize)
	for b.Loop() {
		body := struct{ io.Reader }{bytes.NewReader(payload)} // no Len: the client sends it chunked
		req, err := http.NewRequest(http.MethodPost, h.base+"/backend/echo", body)
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("Cookie", "ROUTEID=.2")
		streamOne(b, h.client, req)
	}
}

// BenchmarkStreamDown gets a 16 MiB blob: MB/s of the response body.
func BenchmarkStreamDown(b *testing.B) {
	back := startMembers(b, "/backend", "1", "2")
	h := startProxy(b, mustTable(b, backendPool(back)), Options{AccessLog: io.Discard}, ListenerConfig{})
	b.SetBytes(streamSize)
	for b.Loop() {
		req, err := http.NewRequest(http.MethodGet, h.base+"/backend/blob?size="+strconv.Itoa(streamSize), nil)
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("Cookie", "ROUTEID=.2")
		streamOne(b, h.client, req)
	}
}

func streamOne(b *testing.B, client *http.Client, req *http.Request) {
	resp, err := client.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || n != streamSize {
		b.Fatalf("status %d, %d bytes, %v", resp.StatusCode, n, err)
	}
}

// BenchmarkWebSocketEcho sends 64-byte messages on 8 WebSockets at once,
// each waiting for its echo (deploy/bench/streams -mode ws): one op is one
// message echoed.
func BenchmarkWebSocketEcho(b *testing.B) {
	back := startMembers(b, "/backend", "1", "2")
	h := startProxy(b, mustTable(b, backendPool(back)), Options{AccessLog: io.Discard}, ListenerConfig{})
	msg := bytes.Repeat([]byte("m"), 64)
	b.SetParallelism(max(1, 8/runtime.GOMAXPROCS(0)))
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		c, _, err := websocket.Dial(ctx, "ws://"+h.addr+"/backend/ws", &websocket.DialOptions{HTTPHeader: http.Header{"Cookie": {"ROUTEID=.2"}}})
		if err != nil {
			b.Error(err)
			return
		}
		defer c.CloseNow()
		if _, _, err := c.Read(ctx); err != nil { // the greeting
			b.Error(err)
			return
		}
		for pb.Next() {
			if err := c.Write(ctx, websocket.MessageBinary, msg); err != nil {
				b.Error(err)
				return
			}
			if _, _, err := c.Read(ctx); err != nil {
				b.Error(err)
				return
			}
		}
		c.Close(websocket.StatusNormalClosure, "")
	})
}

// BenchmarkIdleConn opens 500 keep-alive connections, one request each,
// lets them go idle past hotWait, and reports the heap and goroutine
// stack memory the proxy holds per connection (idle-B/conn): what
// deploy/bench/streams -mode idle sees as RSS growth, less the kernel's
// socket memory and the test client's own share (its 500 connections and
// readers are measured out by a client-only baseline).
func BenchmarkIdleConn(b *testing.B) {
	back := startMembers(b, "/backend", "1", "2")
	h := startProxy(b, mustTable(b, backendPool(back)), Options{AccessLog: io.Discard}, ListenerConfig{})
	const conns = 500
	var perConn float64
	for b.Loop() {
		perConn = idleCost(b, h.addr, conns)
	}
	b.ReportMetric(perConn, "idle-B/conn")
}

// idleCost returns the growth of in-use heap and stacks per connection
// with conns idle connections open.
func idleCost(b *testing.B, addr string, conns int) float64 {
	inUse := func() int64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return int64(ms.HeapInuse + ms.StackInuse)
	}
	req := "GET /backend/x HTTP/1.1\r\nHost: " + addr + "\r\nCookie: ROUTEID=.2\r\n\r\n"
	before := inUse()
	open := make([]net.Conn, 0, conns)
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	for range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		open = append(open, c)
		if _, err := io.WriteString(c, req); err != nil {
			b.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	// The client's own connections cost something too: measure a
	// baseline of as many bare loopback connections to a listener that
	// only accepts, and subtract it.
	time.Sleep(hotWait + 500*time.Millisecond) // the proxy parks its buffers after hotWait: the measurement is of that state
	after := inUse()
	base := bareConnCost(b, conns)
	return (float64(after-before) - float64(base)) / float64(conns)
}

// bareConnCost is the in-use memory of conns loopback connections, both
// ends in this process, with nothing serving them.
func bareConnCost(b *testing.B, conns int) int64 {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := int64(ms.HeapInuse + ms.StackInuse)
	var all []net.Conn
	for range conns {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			b.Fatal(err)
		}
		all = append(all, c, s)
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	after := int64(ms.HeapInuse + ms.StackInuse)
	for _, c := range all {
		c.Close()
	}
	return (after - before) / 2 // one end is the test's client, the other stands for the proxy's accepted conn, counted already
}
