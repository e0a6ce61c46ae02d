package proxy

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/pprof"
	"time"
)

// OpsOption adds an endpoint to the ops listener (OpsHandler).
type OpsOption func(*http.ServeMux)

// WithMetrics serves h, the node's Prometheus registry
// (metrics.Registry.Handler), at /metrics.
func WithMetrics(h http.Handler) OpsOption {
	return func(mux *http.ServeMux) { mux.Handle("GET /metrics", h) }
}

// WithPprof serves Go's profiles at /debug/pprof/ (ops.pprof: true). They
// are opt-in: a CPU profile or trace costs CPU while it runs, and the ops
// listener has no authentication (DESIGN.md §4).
func WithPprof() OpsOption {
	return func(mux *http.ServeMux) {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index) // also serves the named profiles (heap, goroutine, ...)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("POST /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
}

// OpsHandler serves the balancer's own health for keepalived track scripts
// and cloud load balancers: /healthz answers 200 while the process runs;
// /readyz answers 200 when ready returns nil, else 503 with the reason.
// /readyz?max_stale=10s also answers 503 while staleness (how long ago this
// node last heard from a Raft quorum) exceeds 10 s, so a VRRP address moves
// away from a node whose table may be out of date. Options add /metrics
// and /debug/pprof/.
func OpsHandler(ready func() error, staleness func() time.Duration, opts ...OpsOption) http.Handler {
	mux := http.NewServeMux()
	for _, o := range opts {
		o(mux)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		plain(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := ready(); err != nil {
			plain(w, http.StatusServiceUnavailable, "not ready: "+err.Error())
			return
		}
		if v := r.URL.Query().Get("max_stale"); v != "" {
			limit, err := time.ParseDuration(v)
			if err != nil || limit <= 0 {
				plain(w, http.StatusBadRequest, "max_stale: want a positive duration such as 10s")
				return
			}
			if age := staleness(); age > limit {
				plain(w, http.StatusServiceUnavailable, fmt.Sprintf("not ready: no contact with a raft quorum for more than %v", limit))
				return
			}
		}
		plain(w, http.StatusOK, "ready")
	})
	return mux
}

// Ready reports whether the server has a routing table with pools to route.
func (s *Server) Ready() error {
	v := s.view.Load()
	if v == nil {
		return errNoTable
	}
	if len(v.pools) == 0 {
		return errNoPools
	}
	return nil
}

var (
	errNoTable = errors.New("no routing table yet")
	errNoPools = errors.New("the routing table has no pools (the cluster has not applied its seed yet, or every pool was removed)")
)

// plain writes a short text answer.
func plain(w http.ResponseWriter, code int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	io.WriteString(w, msg+"\n")
}
