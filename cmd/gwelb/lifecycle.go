package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gwelb/gwelb/proxy"
)

// The daemon's signals (DESIGN.md §6.3, §6.4):
//
//   - SIGTERM or SIGINT starts a graceful stop: /readyz fails at once, the
//     listeners keep serving for shutdown.delay, then stop accepting while
//     requests in flight get up to shutdown.timeout and WebSockets are
//     closed with 1001 (going away); then the node leaves the cluster or
//     not, as leave_on_terminate says.
//   - A second SIGTERM or SIGINT stops the process at once (exit status 1):
//     for the cluster that is a crash, the node stays a voter.
//   - SIGHUP reloads what can change without a restart (reload.go).

// errShuttingDown is /readyz's reason once a stop has begun.
var errShuttingDown = errors.New("shutting down")

// lifecycle turns signals into the stop and reload sequences.
type lifecycle struct {
	signals   chan os.Signal
	stopping  atomic.Bool   // /readyz fails once set
	listening atomic.Bool   // every data-plane listener is open
	signalled atomic.Bool   // a SIGTERM or SIGINT came: the next one stops at once
	stop      chan struct{} // closed by the first SIGTERM or SIGINT
	stopOnce  sync.Once
	hup       chan struct{} // a SIGHUP to handle (at most one pending)
	exit      func(code int)
}

// newLifecycle catches SIGTERM, SIGINT and SIGHUP from now on: SIGHUP's
// default action would kill the process.
func newLifecycle() *lifecycle {
	lc := &lifecycle{
		signals: make(chan os.Signal, 4),
		stop:    make(chan struct{}),
		hup:     make(chan struct{}, 1),
		exit:    os.Exit,
	}
	signal.Notify(lc.signals, syscall.SIGTERM, os.Interrupt, syscall.SIGHUP)
	go lc.watch()
	return lc
}

// close stops catching signals.
func (lc *lifecycle) close() { signal.Stop(lc.signals) }

func (lc *lifecycle) watch() {
	for sig := range lc.signals {
		if sig == syscall.SIGHUP {
			select {
			case lc.hup <- struct{}{}:
			default: // one reload is already pending: it reads the files as they are then
			}
			continue
		}
		if lc.signalled.Swap(true) {
			slog.Warn("second signal: stopping at once; for the cluster this is a crash (the node stays a voter, restart it from its data_dir)", "signal", sig.String())
			lc.exit(1)
			return
		}
		slog.Info("signal: stopping gracefully (a second signal stops at once)", "signal", sig.String())
		lc.beginStop()
	}
}

// beginStop makes /readyz fail at once and starts the stop sequence.
func (lc *lifecycle) beginStop() {
	lc.stopOnce.Do(func() {
		lc.stopping.Store(true)
		close(lc.stop)
	})
}

// ready is /readyz's first check: a stopping node is never ready, and a
// starting one only once its listeners accept (the node may have caught up
// a moment before the run loop opened them).
func (lc *lifecycle) ready() error {
	if lc.stopping.Load() {
		return errShuttingDown
	}
	if !lc.listening.Load() {
		return errNotListening
	}
	return nil
}

var errNotListening = errors.New("the data-plane listeners are not open yet")

// drain is the data plane's part of a graceful stop (DESIGN.md §6.3):
// /readyz already fails; the listeners keep serving for delay so that
// keepalived, DNS health checks or a cloud load balancer move traffic
// away; then they stop accepting and close idle connections, requests in
// flight get up to timeout to finish, and every WebSocket is closed with
// 1001 (going away) so that its client reconnects through another node.
// A node that never opened its listeners has nothing to wait for.
func drain(log *slog.Logger, srv *proxy.Server, listeners []*proxy.Listener, sd Shutdown) {
	if len(listeners) == 0 {
		return
	}
	if delay := sd.DelayOrDefault(); delay > 0 {
		log.Info("shutting down: /readyz fails; still serving for shutdown.delay so that traffic moves to other nodes", "delay", delay)
		time.Sleep(delay)
	}
	timeout := sd.TimeoutOrDefault()
	start := time.Now()
	log.Info("shutting down: no new connections; waiting for requests in flight and closing WebSockets (1001 going away)",
		"timeout", timeout, "websockets", srv.WebSockets())
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, l := range listeners {
		wg.Go(func() {
			if err := l.Shutdown(ctx); err != nil {
				log.Warn("requests still in flight at shutdown.timeout were cut", "listener", l.Addr().String(), "timeout", timeout, "err", err)
			}
		})
	}
	wg.Go(func() {
		n, err := srv.CloseWebSockets(ctx)
		if err != nil {
			log.Warn("WebSockets whose closing handshake did not finish within shutdown.timeout were cut", "websockets", n, "timeout", timeout)
		} else if n > 0 {
			log.Info("closed WebSockets: going away", "websockets", n)
		}
	})
	wg.Wait()
	log.Info("data plane drained", "took", time.Since(start).Round(time.Millisecond))
}
