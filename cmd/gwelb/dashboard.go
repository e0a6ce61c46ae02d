package main

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gwelb/gwelb/cluster"
	"github.com/gwelb/gwelb/internal/pki"
	"github.com/gwelb/gwelb/ui"
)

// withDashboard serves the dashboard (package ui) at /ui/ in front of the
// ops endpoints h, unless ops.ui is false (then /ui/ is h's 404). The
// dashboard calls this node's admin API as the logged-in operator: over
// TLS verified against tls.ca_file when the node has one. The returned
// close ends its live streams; register it with the ops server's
// RegisterOnShutdown so a stop does not wait for open browser tabs.
func withDashboard(cfg *Config, cc cluster.Config, node *cluster.Node, gather prometheus.Gatherer, hist *ui.History, log *slog.Logger, h http.Handler) (http.Handler, func(), error) {
	if !cfg.Ops.UIEnabled() {
		return h, func() {}, nil
	}
	d, err := ui.Handler(ui.Options{
		Node: cc.Name, GRPCAddr: node.GRPCAddr(), CAFile: cc.TLS.CAFile,
		Token: cc.Token, ReadToken: cc.ReadToken, Metrics: gather, History: hist, Logger: log,
	})
	if err != nil {
		return nil, nil, err
	}
	mux := http.NewServeMux()
	mux.Handle(ui.Prefix, d)
	mux.Handle("/", h)
	return mux, d.Close, nil
}

// listenOps listens on ops.addr, over TLS when ops.tls names a
// certificate. The certificate is read again when its files change
// (polled every certPollInterval, like the listeners'); a file that fails
// to load keeps the previous certificate, logged.
func listenOps(ops Ops, log *slog.Logger) (net.Listener, error) {
	var kp *pki.KeyPair
	if ops.TLS != nil {
		var err error
		if kp, err = pki.LoadKeyPair("ops.tls.cert", ops.TLS.Cert, ops.TLS.Key, nil); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen("tcp", ops.Addr)
	if err != nil {
		return nil, fmt.Errorf("ops.addr %s: %w", ops.Addr, err)
	}
	if kp == nil {
		return ln, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}
	kp.Serve(cfg)
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(certPollInterval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				switch changed, err := kp.ReloadIfChanged(); {
				case err != nil:
					log.Error("TLS certificate not reloaded: still presenting the previous one", "field", kp.Field(), "err", err)
				case changed:
					log.Info("TLS certificate reloaded: new handshakes present it", "field", kp.Field(), "certificate", kp.Describe(), "why", "files changed")
				}
			}
		}
	}()
	return &opsListener{Listener: tls.NewListener(ln, cfg), done: done}, nil
}

// opsListener stops the certificate poll when the ops server closes it.
type opsListener struct {
	net.Listener
	once sync.Once
	done chan struct{}
}

func (l *opsListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}
