package main

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"

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
// certificate. It returns that certificate (nil without TLS) for the
// reloader, which reads it again on SIGHUP and when its files change, like
// the listeners' (reload.go).
func listenOps(ops Ops) (net.Listener, *pki.KeyPair, error) {
	var kp *pki.KeyPair
	if ops.TLS != nil {
		var err error
		if kp, err = pki.LoadKeyPair("ops.tls.cert", ops.TLS.Cert, ops.TLS.Key, nil); err != nil {
			return nil, nil, err
		}
	}
	ln, err := net.Listen("tcp", ops.Addr)
	if err != nil {
		return nil, nil, fmt.Errorf("ops.addr %s: %w", ops.Addr, err)
	}
	if kp == nil {
		return ln, nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}
	kp.Serve(cfg)
	return tls.NewListener(ln, cfg), kp, nil
}
