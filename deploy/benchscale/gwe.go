package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/gwelb/gwelb/internal/gwedemo"
)

// gwe is one stand-in GWE server, served in the harness's process (the
// demo server's handler) so that it can count the health probes it gets:
// the probe rate per GWE server is one of the figures.
type gwe struct {
	name, prefix string
	addr, url    string
	probes       atomic.Int64 // GET <prefix>/about
	requests     atomic.Int64 // everything else
	handler      http.Handler
	srv          *http.Server
}

func (g *gwe) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == g.prefix+"/about" {
		g.probes.Add(1)
	} else {
		g.requests.Add(1)
	}
	g.handler.ServeHTTP(w, r)
}

// startGWE serves a GWE server named name on addr (loopback).
func startGWE(name, prefix, addr string) (*gwe, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("GWE server %s: %w", name, err)
	}
	g := &gwe{name: name, prefix: prefix, addr: ln.Addr().String(), url: "http://" + ln.Addr().String()}
	g.handler = gwedemo.New(name, prefix)
	g.srv = &http.Server{Handler: g, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := g.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Printf("GWE server %s: %v\n", name, err)
		}
	}()
	return g, nil
}

func (g *gwe) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = g.srv.Shutdown(ctx)
}

// bigIP is the loopback address of the i-th member of the single-node
// phase: 127.1.0.1 onwards, 200 to a /24 (Linux routes all of 127/8 to lo).
func bigIP(i int) string { return fmt.Sprintf("127.1.%d.%d", i/200, i%200+1) }

// probeCountPath answers a GWE server farm's probe count (not a probe).
const probeCountPath = "/_bench/probes"

// serveFarm is the child process mode (-farm-count): GWE servers on
// bigIP(first) .. bigIP(first+count-1), port port, until killed. A farm
// holds a listener and a kept-alive probe connection per member, so the
// 10,000 members are split over farms to stay under the file limit.
func serveFarm(first, count, port int) error {
	g := &gwe{name: "farm", prefix: "/backend"}
	demo := gwedemo.New("farm", "/backend")
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == probeCountPath {
			fmt.Fprintf(w, "%d\n", g.probes.Load())
			return
		}
		if r.URL.Path == g.prefix+"/about" {
			g.probes.Add(1)
		}
		demo.ServeHTTP(w, r)
	})
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	for i := first; i < first+count; i++ {
		ln, err := net.Listen("tcp", net.JoinHostPort(bigIP(i), strconv.Itoa(port)))
		if err != nil {
			return fmt.Errorf("farm listener %d: %w", i, err)
		}
		go func() { errc <- srv.Serve(ln) }()
	}
	return <-errc
}
