// Command streams is deploy/bench/run.sh's second measurement, after wrk's
// requests/s: what a balancer does with big bodies, WebSockets and idle
// connections, in front of bin/gwe-demo servers. It talks to 127.0.0.1
// only and prints one line of key=value pairs for run.sh:
//
//	streams -mode up -url http://127.0.0.1:PORT -cookie ROUTEID=.2
//	  up_mbps= up_bytes=     (POST 16 MiB to /backend/echo, the echo streaming back at once: MB/s each way)
//	streams -mode down -url ... -cookie ...
//	  down_mbps= down_bytes= (GET /backend/blob?size=16 MiB)
//	streams -mode ws -url ... -cookie ...
//	  ws_msgs= ws_n=         (echoed 64-byte messages/s over 8 WebSockets, and how many)
//	streams -mode idle -url ... -pid PID
//	  idle_kib=              (balancer RSS growth per idle keep-alive connection)
//
// The *_bytes and ws_n counts are the work done, for run.sh to divide the
// balancer's CPU time by (its cost per GB and per message).
package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

func main() {
	mode := flag.String("mode", "up", "up, down, ws or idle")
	base := flag.String("url", "", "the balancer, http://127.0.0.1:PORT")
	cookie := flag.String("cookie", "ROUTEID=.2", "Cookie header of every request")
	dur := flag.Duration("d", 3*time.Second, "how long each measurement runs")
	pid := flag.Int("pid", 0, "the balancer's process (idle mode): its RSS and its children's")
	conns := flag.Int("conns", 500, "idle connections (idle mode)")
	flag.Parse()
	if !strings.HasPrefix(*base, "http://127.0.0.1:") {
		fail(fmt.Errorf("-url must be http://127.0.0.1:PORT"))
	}
	switch *mode {
	case "up", "down":
		url := *base + "/backend/echo"
		if *mode == "down" {
			url = *base + "/backend/blob?size=" + strconv.Itoa(size)
		}
		mbps, moved, err := bodies(url, *cookie, *dur, *mode == "up")
		if err != nil {
			fmt.Printf("%s_mbps=-\n", *mode)
			fmt.Fprintln(os.Stderr, *mode+":", err)
			return
		}
		fmt.Printf("%s_mbps=%.0f %s_bytes=%d\n", *mode, mbps, *mode, moved)
	case "ws":
		rate, n, err := echoes("ws"+strings.TrimPrefix(*base, "http")+"/backend/ws", *cookie, *dur)
		if err != nil {
			fmt.Println("ws_msgs=-")
			fmt.Fprintln(os.Stderr, "ws:", err)
			return
		}
		fmt.Printf("ws_msgs=%.0f ws_n=%d\n", rate, n)
	case "idle":
		kib, err := idle(strings.TrimPrefix(*base, "http://"), *cookie, *pid, *conns)
		if err != nil {
			fmt.Println("idle_kib=-")
			fmt.Fprintln(os.Stderr, "idle:", err)
			return
		}
		fmt.Printf("idle_kib=%.1f\n", kib)
	default:
		fail(fmt.Errorf("unknown -mode %q", *mode))
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "streams:", err)
	os.Exit(2)
}

const size = 16 << 20

// bodies moves 16 MiB bodies for d, one after the other on one keep-alive
// connection, and returns MB/s and the bytes moved (of the request body
// when up: the echo carries as much back at the same time).
func bodies(url, cookie string, d time.Duration, up bool) (float64, int64, error) {
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	payload := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	var moved int64
	start := time.Now()
	for time.Since(start) < d || moved == 0 {
		var req *http.Request
		var err error
		if up {
			req, err = http.NewRequest(http.MethodPost, url, bytes.NewReader(payload))
		} else {
			req, err = http.NewRequest(http.MethodGet, url, nil)
		}
		if err != nil {
			return 0, 0, err
		}
		req.Header.Set("Cookie", cookie)
		resp, err := client.Do(req)
		if err != nil {
			return 0, 0, err
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || n != size {
			return 0, 0, fmt.Errorf("status %d, %d bytes, %v", resp.StatusCode, n, err)
		}
		moved += n
	}
	return float64(moved) / 1e6 / time.Since(start).Seconds(), moved, nil
}

// echoes sends 64-byte messages on 8 WebSockets for d, each waiting for
// its echo, and returns messages echoed per second and how many.
func echoes(url, cookie string, d time.Duration) (float64, int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d+10*time.Second)
	defer cancel()
	var count atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	msg := bytes.Repeat([]byte("m"), 64)
	start := time.Now()
	for range 8 {
		wg.Go(func() {
			c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: http.Header{"Cookie": {cookie}}})
			if err != nil {
				errs <- err
				return
			}
			defer c.CloseNow()
			if _, _, err := c.Read(ctx); err != nil { // the greeting
				errs <- err
				return
			}
			for time.Since(start) < d {
				if err := c.Write(ctx, websocket.MessageBinary, msg); err != nil {
					errs <- err
					return
				}
				if _, _, err := c.Read(ctx); err != nil {
					errs <- err
					return
				}
				count.Add(1)
			}
			c.Close(websocket.StatusNormalClosure, "")
		})
	}
	wg.Wait()
	select {
	case err := <-errs:
		return 0, 0, err
	default:
	}
	return float64(count.Load()) / time.Since(start).Seconds(), count.Load(), nil
}

// idle opens conns keep-alive connections, each after one request, and
// returns how much the balancer's resident memory grew per connection.
func idle(addr, cookie string, pid, conns int) (float64, error) {
	if pid <= 0 {
		return 0, fmt.Errorf("-pid required")
	}
	before, err := rss(pid)
	if err != nil {
		return 0, err
	}
	req := "GET /backend/x HTTP/1.1\r\nHost: " + addr + "\r\nCookie: " + cookie + "\r\n\r\n"
	var open []net.Conn
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	for range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return 0, err
		}
		open = append(open, c)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, req); err != nil {
			return 0, err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	// Idle for a while: a balancer may shed per-connection buffers then
	// (gwelb parks them after 1 s).
	time.Sleep(3 * time.Second)
	after, err := rss(pid)
	if err != nil {
		return 0, err
	}
	return float64(after-before) / 1024 / float64(conns), nil
}

// rss is the resident memory of pid and its children, in bytes.
func rss(pid int) (int64, error) {
	total, err := rssOf(pid)
	if err != nil {
		return 0, err
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces; ppid follows the last ')'.
		s := string(stat)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			if n, err := rssOf(child); err == nil {
				total += n
			}
		}
	}
	return total, nil
}

func rssOf(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for %d", pid)
}
