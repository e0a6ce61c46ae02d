package cluster_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gwelb/gwelb/cluster"
	"github.com/gwelb/gwelb/fsm"
)

// TestProbeConn probes loopback GWE servers as a node does and checks
// what an operator would see of the probes' connections: how many the
// member accepts (a kept-alive probe reuses one), that every probe ends
// within its timeout leaving no goroutine behind, that the answers are
// judged by their status, and that a probe stopped (its member gone)
// closes its kept connection.
func TestProbeConn(t *testing.T) {
	const timeout = 500 * time.Millisecond
	ok := func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }
	body := func(n int) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", strconv.Itoa(n))
			w.Write(make([]byte, n))
		}
	}
	for _, c := range []struct {
		name    string
		handler http.HandlerFunc
		https   bool
		ca      bool // ProbeTLS trusts the server's CA
		idle    time.Duration
		keep    bool
		between func(*cluster.TestProbe) // after each probe
		closed  bool                     // after each probe, wait until the server closed the connection
		expect  int                      // status of a healthy answer; 0: 200
		wantErr string                   // in every probe's error; "": every probe succeeds
		conns   int                      // connections the server accepted for 3 probes
		kept    bool                     // the probe keeps its connection after each probe
	}{
		{name: "keep-alive reuses one connection", handler: ok, keep: true, conns: 1, kept: true},
		{name: "not kept: a connection a probe", handler: func(w http.ResponseWriter, r *http.Request) {
			if !r.Close {
				http.Error(w, "want Connection: close", http.StatusBadRequest)
			}
		}, conns: 3},
		{name: "Connection: close answer", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Connection", "close")
		}, keep: true, conns: 3},
		{name: "HTTP/1.0 answer without keep-alive", handler: func(w http.ResponseWriter, r *http.Request) {
			conn, buf, err := w.(http.Hijacker).Hijack() // net/http answers HTTP/1.1
			if err != nil {
				return
			}
			defer conn.Close()
			buf.WriteString("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
			buf.Flush()
		}, keep: true, conns: 3},
		{name: "HTTP/1.0 answer with keep-alive", handler: func(w http.ResponseWriter, r *http.Request) {
			conn, buf, err := w.(http.Hijacker).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			for {
				buf.WriteString("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok")
				buf.Flush()
				if _, err := http.ReadRequest(buf.Reader); err != nil {
					return
				}
			}
		}, keep: true, conns: 1, kept: true},
		{name: "https with the ProbeTLS CA", handler: ok, https: true, ca: true, keep: true, conns: 1, kept: true},
		{name: "https without the CA", handler: ok, https: true, keep: true, wantErr: "certificate", conns: 3},
		{name: "server never answers", handler: func(w http.ResponseWriter, r *http.Request) {
			<-r.Context().Done()
		}, keep: true, wantErr: "context deadline exceeded", conns: 3},
		{name: "wrong status", handler: func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusServiceUnavailable)
		}, keep: true, wantErr: "probe: status 503, want 200", conns: 1, kept: true},
		{name: "redirect is an answer", handler: func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		}, keep: true, expect: http.StatusFound, conns: 1, kept: true},
		{name: "body of 64 KiB kept alive", handler: body(64 << 10), keep: true, conns: 1, kept: true},
		{name: "body over 64 KiB not kept alive", handler: body(64<<10 + 1), keep: true, conns: 3},
		{name: "server closed the idle connection", handler: ok, idle: 20 * time.Millisecond, keep: true,
			closed: true, conns: 3, kept: true},
		{name: "idle longer than twice the keep-alive", handler: ok, keep: true,
			between: func(tp *cluster.TestProbe) { tp.AgeKeptConn(2*cluster.ProbeKeepAliveMax + time.Second) }, conns: 3, kept: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			var (
				mu             sync.Mutex
				accepted, open int
				agents         = map[string]bool{}
				hosts          = map[string]bool{}
			)
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				agents[r.UserAgent()], hosts[r.Host] = true, true
				mu.Unlock()
				c.handler(w, r)
			}))
			srv.Config.IdleTimeout = c.idle
			srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the failed handshakes
			srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
				mu.Lock()
				defer mu.Unlock()
				switch s {
				case http.StateNew:
					accepted++
					open++
				case http.StateClosed, http.StateHijacked:
					open--
				}
			}
			if c.https {
				srv.StartTLS()
			} else {
				srv.Start()
			}
			defer srv.Close()
			var cfg cluster.Config
			if c.ca {
				roots := x509.NewCertPool()
				roots.AddCert(srv.Certificate())
				cfg.ProbeTLS = &tls.Config{RootCAs: roots}
			}
			expect := c.expect
			if expect == 0 {
				expect = http.StatusOK
			}
			tp := cluster.NewTestProbe(cfg, srv.URL, fsm.HealthSpec{Path: "/about", Timeout: timeout, ExpectStatus: expect}, c.keep)
			for i := range 3 {
				start := time.Now()
				done := make(chan error, 1)
				go func() { done <- tp.Check(context.Background()) }()
				var err error
				select {
				case err = <-done:
				case <-time.After(timeout + 5*time.Second):
					t.Fatalf("probe %d still running after %s (timeout %s)", i, time.Since(start), timeout)
				}
				if took := time.Since(start); took > timeout+time.Second {
					t.Errorf("probe %d took %s, timeout %s", i, took, timeout)
				}
				switch {
				case c.wantErr == "" && err != nil:
					t.Errorf("probe %d: %v", i, err)
				case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr) || !strings.HasPrefix(err.Error(), "probe: ")):
					t.Errorf("probe %d: error %v, want one with %q", i, err, c.wantErr)
				}
				if tp.Kept() != c.kept {
					t.Errorf("after probe %d: connection kept %v, want %v", i, tp.Kept(), c.kept)
				}
				if c.between != nil {
					c.between(tp)
				}
				if c.closed {
					waitClosed(t, &mu, &open)
				}
			}
			// A probe that timed out may leave its context's callback
			// running for a moment (context.AfterFunc), no longer.
			for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				leaked := probeGoroutines()
				if leaked == "" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("a probe's goroutine outlived its probe:\n%s", leaked)
				}
			}
			tp.Stop()
			if tp.Kept() {
				t.Error("a stopped probe keeps a connection")
			}
			mu.Lock()
			defer mu.Unlock()
			if accepted != c.conns {
				t.Errorf("the member accepted %d connections for 3 probes, want %d", accepted, c.conns)
			}
			if c.wantErr == "" || c.wantErr == "probe: status 503, want 200" {
				if !agents["gwelb-probe"] || len(agents) != 1 {
					t.Errorf("User-Agents %v, want gwelb-probe", agents)
				}
				if host := strings.TrimPrefix(strings.TrimPrefix(srv.URL, "https://"), "http://"); !hosts[host] || len(hosts) != 1 {
					t.Errorf("Hosts %v, want %s", hosts, host)
				}
			}
			// Stopped, the probe closed its kept connection: the member
			// sees every connection closed.
			mu.Unlock()
			waitClosed(t, &mu, &open)
			mu.Lock()
		})
	}
}

// waitClosed waits until the server counts no open connection.
func waitClosed(t *testing.T, mu *sync.Mutex, open *int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		n := *open
		mu.Unlock()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still open on the server", n)
		}
	}
}

// probeGoroutines returns the stacks of goroutines running a probe's
// round trip, or a callback it left (context.AfterFunc), "" when none.
func probeGoroutines() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var leaked []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "cluster.(*prober).roundTrip") || strings.Contains(g, "cluster.(*probeConn)") {
			leaked = append(leaked, g)
		}
	}
	return strings.Join(leaked, "\n\n")
}
