package proxy

import (
	"errors"
	"net/http"
)

// OpsHandler serves the balancer's own health for keepalived track scripts
// and cloud load balancers: /healthz answers 200 while the process runs;
// /readyz answers 200 when ready returns nil, else 503 with the reason.
func OpsHandler(ready func() error) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		plain(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := ready(); err != nil {
			plain(w, http.StatusServiceUnavailable, "not ready: "+err.Error())
			return
		}
		plain(w, http.StatusOK, "ready")
	})
	return mux
}

// Ready reports whether the server has a routing table.
func (s *Server) Ready() error {
	if s.view.Load() == nil {
		return errNoTable
	}
	return nil
}

var errNoTable = errors.New("no routing table yet")
