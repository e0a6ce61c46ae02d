package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/gwelb/gwelb/internal/gwedemo"
)

// lbClient follows the nodes' /readyz the way a load balancer (keepalived,
// a cloud LB) does: it polls every node, sends only to nodes that answered
// 200 last, and stops sending to a node as soon as it answers anything
// else.
type lbClient struct {
	as    []*agent
	ready []atomic.Bool
	next  atomic.Uint64
}

func newLBClient(as []*agent) *lbClient {
	return &lbClient{as: as, ready: make([]atomic.Bool, len(as))}
}

// poll refreshes the ready set every interval until ctx ends.
func (lb *lbClient) poll(ctx context.Context, interval time.Duration) {
	client := &http.Client{Timeout: interval * 4}
	for ctx.Err() == nil {
		for i, a := range lb.as {
			resp, err := client.Get("http://" + a.ops + "/readyz")
			ok := err == nil && resp.StatusCode == http.StatusOK
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			lb.ready[i].Store(ok)
		}
		select {
		case <-ctx.Done():
		case <-time.After(interval):
		}
	}
}

// pick returns a ready node, round-robin, or nil when none is.
func (lb *lbClient) pick() *agent {
	n := uint64(len(lb.as))
	start := lb.next.Add(1)
	for i := range n {
		j := (start + i) % n
		if lb.ready[j].Load() {
			return lb.as[j]
		}
	}
	return nil
}

// loadFigures are what the rolling restart's clients saw.
type loadFigures struct {
	requests, failures atomic.Int64
	wsSessions         atomic.Int64 // WebSocket connections opened, first ones included
	wsGoingAway        atomic.Int64 // closed by a stopping node with 1001
	wsReconnects       atomic.Int64 // reopened through another node after a going-away close
	mu                 sync.Mutex
	problems           []string
}

func (f *loadFigures) fail(format string, args ...any) {
	f.failures.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.problems) < 20 {
		f.problems = append(f.problems, fmt.Sprintf(format, args...))
	}
}

// httpWorker sends requests pinned to route through ready nodes until ctx
// ends; every answer must come from route's GWE server.
func httpWorker(ctx context.Context, lb *lbClient, route string, f *loadFigures) {
	client := &http.Client{Timeout: 10 * time.Second}
	for ctx.Err() == nil {
		a := lb.pick()
		if a == nil {
			time.Sleep(5 * time.Millisecond) // no node ready: an LB would queue or refuse; this client waits
			continue
		}
		req, _ := http.NewRequest("GET", "http://"+a.data+"/backend/x", nil)
		req.Header.Set("Cookie", "ROUTEID=."+route)
		f.requests.Add(1)
		resp, err := client.Do(req)
		if err != nil {
			f.fail("GET via %s: %v", a.name, err)
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get(gwedemo.HeaderServer) != route {
			f.fail("GET via %s pinned to %s: %d from %q", a.name, route, resp.StatusCode, resp.Header.Get(gwedemo.HeaderServer))
		}
	}
}

// wsWorker keeps one WebSocket pinned to route open through a ready node,
// exchanging messages; when a stopping node closes it with 1001 it
// reconnects through another ready node and must reach the same GWE server.
func wsWorker(ctx context.Context, lb *lbClient, route string, f *loadFigures) {
	goingAway := false
	for ctx.Err() == nil {
		a := lb.pick()
		if a == nil {
			time.Sleep(5 * time.Millisecond)
			continue
		}
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		c, _, err := websocket.Dial(dctx, "ws://"+a.data+"/backend/ws", &websocket.DialOptions{
			HTTPHeader: http.Header{"Cookie": {"ROUTEID=." + route}},
		})
		if err == nil {
			var msg []byte
			_, msg, err = c.Read(dctx)
			if err == nil && string(msg) != route {
				f.fail("WebSocket via %s pinned to %s greeted by %q", a.name, route, msg)
			}
		}
		cancel()
		switch {
		case err == nil:
		case ctx.Err() != nil:
			continue
		case websocket.CloseStatus(err) == websocket.StatusGoingAway:
			// Opened on a node that began to drain at that moment: closed
			// at once, the same way.
			c.CloseNow()
			f.wsGoingAway.Add(1)
			goingAway = true
			continue
		default:
			if c != nil {
				c.CloseNow()
			}
			f.fail("WebSocket open via %s: %v", a.name, err)
			continue
		}
		f.wsSessions.Add(1)
		if goingAway {
			f.wsReconnects.Add(1)
		}
		goingAway = false
		for i := 0; ctx.Err() == nil; i++ {
			msg := fmt.Sprintf("%s-%d", route, i)
			if err = c.Write(ctx, websocket.MessageText, []byte(msg)); err == nil {
				var echo []byte
				if _, echo, err = c.Read(ctx); err == nil && string(echo) != msg {
					f.fail("WebSocket echo via %s: %q, want %q", a.name, echo, msg)
				}
			}
			if err != nil {
				break
			}
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
		c.CloseNow()
		switch {
		case ctx.Err() != nil:
		case websocket.CloseStatus(err) == websocket.StatusGoingAway:
			f.wsGoingAway.Add(1)
			goingAway = true
		default:
			f.fail("WebSocket via %s ended without going away: %v", a.name, err)
		}
	}
}

// TestAgentRollingRestart restarts all three nodes one after the other
// with SIGTERM while clients that follow /readyz the way a load balancer
// does send requests and hold WebSockets through them (DESIGN.md §6.3):
// no request fails, /readyz fails at once while the stopping node still
// serves for shutdown.delay, and every WebSocket is closed with 1001 and
// reconnects through another node to the same GWE server.
func TestAgentRollingRestart(t *testing.T) {
	skipInShortMode(t)
	routes := []string{"1", "2", "3"}
	gwe := map[string]string{}
	for _, r := range routes {
		gwe[r] = startGWE(t, r)
	}
	as := startAgentsWith(t, 3, gwe, agentOptions{extra: func(*agent) string {
		// leave_on_terminate: false is the rolling-restart setting: the
		// node stays a voter that is expected back.
		return "leave_on_terminate: false\nshutdown: {delay: 2s, timeout: 10s}\n"
	}})

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	lb := newLBClient(as)
	wg.Go(func() { lb.poll(ctx, 50*time.Millisecond) })
	waitUntil(t, 10*time.Second, "the client to see every node ready", func() bool {
		for i := range as {
			if !lb.ready[i].Load() {
				return false
			}
		}
		return true
	})
	var f loadFigures
	for i := range 4 {
		wg.Go(func() { httpWorker(ctx, lb, routes[i%len(routes)], &f) })
	}
	for _, r := range routes {
		wg.Go(func() { wsWorker(ctx, lb, r, &f) })
	}
	waitUntil(t, 10*time.Second, "load on every WebSocket", func() bool { return f.wsSessions.Load() >= int64(len(routes)) })

	for _, a := range as {
		before := f.requests.Load()
		beforeAway := f.wsGoingAway.Load()
		a.cmd.Process.Signal(syscall.SIGTERM)
		// /readyz fails at once, and the listener still serves.
		waitUntil(t, 2*time.Second, a.name+"'s /readyz to fail after SIGTERM", func() bool {
			code, body := a.readyz()
			return code == http.StatusServiceUnavailable && strings.Contains(body, "shutting down")
		})
		resp, err := http.Get("http://" + a.data + "/backend/x")
		if err != nil {
			t.Fatalf("%s during shutdown.delay: %v", a.name, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s during shutdown.delay: %d, want 200", a.name, resp.StatusCode)
		}
		select {
		case <-a.exited:
		case <-time.After(30 * time.Second):
			t.Fatalf("%s did not exit within 30 s of SIGTERM", a.name)
		}
		if code := a.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("%s exited %d after SIGTERM, want 0", a.name, code)
		}
		a.start(t)
		waitUntil(t, 30*time.Second, a.name+" ready again", func() bool {
			code, _ := a.readyz()
			return code == http.StatusOK
		})
		waitUntil(t, 10*time.Second, "requests flowing after "+a.name+"'s restart", func() bool { return f.requests.Load() > before+50 })
		if f.wsGoingAway.Load() == beforeAway {
			t.Logf("%s held no WebSocket when it stopped", a.name)
		}
	}
	waitUntil(t, 10*time.Second, "every WebSocket open again", func() bool { return f.wsSessions.Load() >= int64(len(routes))+f.wsGoingAway.Load() })
	cancel()
	wg.Wait()

	t.Logf("rolling restart of 3 nodes: %d requests, %d failed; %d WebSockets closed with 1001 (going away), %d reconnected to the same GWE server through another node",
		f.requests.Load(), f.failures.Load(), f.wsGoingAway.Load(), f.wsReconnects.Load())
	if n := f.failures.Load(); n > 0 {
		t.Errorf("%d failures, first ones:\n%s", n, strings.Join(f.problems, "\n"))
	}
	if f.wsGoingAway.Load() < int64(len(routes)) || f.wsReconnects.Load() < f.wsGoingAway.Load() {
		t.Errorf("WebSockets: %d closed going away, %d reconnected; want every WebSocket (%d) closed at least once and each close followed by a reconnect",
			f.wsGoingAway.Load(), f.wsReconnects.Load(), len(routes))
	}
	for _, a := range as {
		logb, _ := os.ReadFile(a.log)
		if strings.Contains(string(logb), "differ from the replicated table") {
			t.Errorf("%s warned that its config differs from the table, which it does not", a.name)
		}
	}
}

// TestAgentSecondSignal: a second SIGTERM during the shutdown delay stops
// the process at once (exit status 1), without waiting out the delay.
func TestAgentSecondSignal(t *testing.T) {
	skipInShortMode(t)
	as := startAgentsWith(t, 1, map[string]string{"1": startGWE(t, "1")}, agentOptions{extra: func(*agent) string {
		return "shutdown: {delay: 5m}\n"
	}})
	a := as[0]
	a.cmd.Process.Signal(syscall.SIGTERM)
	waitUntil(t, 5*time.Second, "/readyz to fail after SIGTERM", func() bool {
		code, body := a.readyz()
		return code == http.StatusServiceUnavailable && strings.Contains(body, "shutting down")
	})
	select {
	case <-a.exited:
		t.Fatal("exited during shutdown.delay (5m) after one signal")
	default:
	}
	start := time.Now()
	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("still running 10 s after the second SIGTERM")
	}
	if code := a.cmd.ProcessState.ExitCode(); code != 1 {
		t.Errorf("exit status %d after a second signal, want 1", code)
	}
	t.Logf("stopped %v after the second signal", time.Since(start).Round(time.Millisecond))
	logb, _ := os.ReadFile(a.log)
	if !strings.Contains(string(logb), "second signal: stopping at once") {
		t.Errorf("no log line for the second signal:\n%s", logb)
	}
}

// TestHealthCommand: gwelb health exits 0 against a ready node, 1 against
// a stopping one and against nothing, 2 on bad usage.
func TestHealthCommand(t *testing.T) {
	skipInShortMode(t)
	as := startAgentsWith(t, 1, map[string]string{"1": startGWE(t, "1")}, agentOptions{extra: func(*agent) string {
		return "shutdown: {delay: 5m}\n"
	}})
	a := as[0]
	var out, errb strings.Builder
	if code := healthMain([]string{"-addr", a.ops}, &out, &errb); code != 0 {
		t.Errorf("health of a ready node: exit %d (%s%s)", code, out.String(), errb.String())
	}
	if code := healthMain([]string{"-addr", a.ops, "-max-stale", "10s"}, &out, &errb); code != 0 {
		t.Errorf("health -max-stale 10s of a ready node: exit %d (%s%s)", code, out.String(), errb.String())
	}
	a.cmd.Process.Signal(syscall.SIGTERM)
	waitUntil(t, 5*time.Second, "health to fail on the stopping node", func() bool {
		out.Reset()
		return healthMain([]string{"-addr", a.ops}, &out, io.Discard) == 1 && strings.Contains(out.String(), "shutting down")
	})
	a.stop(t, syscall.SIGKILL)
	if code := healthMain([]string{"-addr", a.ops, "-timeout", "1s"}, io.Discard, io.Discard); code != 1 {
		t.Errorf("health of a stopped node: exit %d, want 1", code)
	}
	if code := healthMain([]string{"-nope"}, io.Discard, io.Discard); code != 2 {
		t.Errorf("health -nope: exit %d, want 2", code)
	}
}

// TestShutdownConfig: the shutdown block's defaults, what it accepts and
// the errors naming its fields.
func TestShutdownConfig(t *testing.T) {
	tests := []struct {
		yaml           string
		delay, timeout time.Duration
		err            string
	}{
		{"", DefaultShutdownDelay, DefaultShutdownTimeout, ""},
		{"shutdown: {delay: 0s}\n", 0, DefaultShutdownTimeout, ""},
		{"shutdown: {delay: 1s, timeout: 2m}\n", time.Second, 2 * time.Minute, ""},
		{"shutdown: {delay: -1s}\n", 0, 0, "shutdown.delay -1s"},
		{"shutdown: {delay: 11m}\n", 0, 0, "shutdown.delay 11m0s"},
		{"shutdown: {timeout: -5s}\n", 0, 0, "shutdown.timeout -5s"},
		{"shutdown: {timeout: 2h}\n", 0, 0, "shutdown.timeout 2h0m0s"},
		{"shutdown: {delay: soon}\n", 0, 0, "soon"},
		{"shutdown: {grace: 1s}\n", 0, 0, "grace"},
	}
	for _, tt := range tests {
		cfg, err := ParseConfig([]byte(validConfig + tt.yaml))
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: error %v, want one naming %q", tt.yaml, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tt.yaml, err)
			continue
		}
		if d, to := cfg.Shutdown.DelayOrDefault(), cfg.Shutdown.TimeoutOrDefault(); d != tt.delay || to != tt.timeout {
			t.Errorf("%q: delay %v timeout %v, want %v %v", tt.yaml, d, to, tt.delay, tt.timeout)
		}
	}
}
