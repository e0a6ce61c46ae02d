package ui

import (
	"bytes"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gwelb/gwelb/internal/metrics"
)

// TestRates: the dashboard's per-member rates come from the node's own
// registry (the one /metrics serves): requests, 5xx and retries per second
// over the last readings, re-pins as totals by cause.
func TestRates(t *testing.T) {
	reg := metrics.New()
	p := reg.Proxy
	rt := newRateTracker(reg.Gatherer())
	t0 := time.Unix(1000, 0)
	if v := rt.read(t0); v == nil || v.Over != 0 {
		t.Fatalf("first reading: %+v, want no rates yet", v)
	}
	p.Requests.WithLabelValues("backend", "1", "200").Add(40)
	p.Requests.WithLabelValues("backend", "1", "502").Add(8)
	p.Requests.WithLabelValues("backend", "1", "5xx").Add(2)
	p.Retries.WithLabelValues("backend", "1").Add(4)
	p.Repins.WithLabelValues("backend", metrics.CauseMemberUnusable).Add(3)
	v := rt.read(t0.Add(2 * time.Second))
	if v.Over != 2*time.Second {
		t.Fatalf("rates over %v, want 2s", v.Over)
	}
	got := v.Members[memberKey{"backend", "1"}]
	for _, c := range []struct {
		name      string
		got, want float64
	}{{"requests/s", got.Requests, 25}, {"5xx/s", got.Errors, 5}, {"retries/s", got.Retries, 2}} {
		if math.Abs(c.got-c.want) > 1e-9 {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if n := v.Repins[memberKey{"backend", metrics.CauseMemberUnusable}]; n != 3 {
		t.Errorf("re-pins member_unusable = %v, want 3", n)
	}
	// Readings older than the window are dropped: after a quiet 30 s the
	// rates are 0 again.
	for s := 3; s <= 33; s++ {
		v = rt.read(t0.Add(time.Duration(s) * time.Second))
	}
	if r := v.Members[memberKey{"backend", "1"}]; r.Requests != 0 || r.Errors != 0 {
		t.Errorf("after 30 quiet seconds: %+v, want 0", r)
	}
	if v.Over > rateWindow+time.Second {
		t.Errorf("rates over %v, want at most the window (%v)", v.Over, rateWindow)
	}
	if (&rateTracker{}).read(t0) != nil {
		t.Errorf("rates without a registry")
	}
}

// TestAuditTee: the node's audit records reach the dashboard's recent
// writes whatever the log level, and the log gets what it got before.
func TestAuditTee(t *testing.T) {
	var out bytes.Buffer
	h := NewHistory(2)
	log := slog.New(AuditTee(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelWarn}), h)).With("node", "n1")
	log.Info("audit", "who", "token", "via", "n2", "rpc", "SetMemberState", "pool", "backend", "route", "2", "state", "drain", "request_id", "ab12", "outcome", "ok", "index", uint64(42))
	log.Info("audit", "who", "read_token", "rpc", "PutMember", "outcome", "error", "code", "PermissionDenied", "error", "PutMember needs the read-write token")
	log.Info("something else")
	log.Warn("a warning")
	// At log_level warn the audit records are still written; other info lines are not.
	if strings.Count(out.String(), "msg=audit") != 2 || strings.Contains(out.String(), "something else") || !strings.Contains(out.String(), "a warning") {
		t.Errorf("the log at warn level got:\n%s", out.String())
	}
	w := h.Recent()
	if len(w) != 2 {
		t.Fatalf("%d writes recorded, want 2: %+v", len(w), w)
	}
	if r := w[1]; r.Who != "token via n2" || r.What != "SetMemberState pool=backend route=2 state=drain" || r.Outcome != "ok (index 42)" || !r.OK() || r.Node != "n1" || !h.Has("ab12") {
		t.Errorf("the drain's record: %+v", r)
	}
	if r := w[0]; r.OK() || r.Outcome != "PermissionDenied: PutMember needs the read-write token" {
		t.Errorf("the refused write's record: %+v", r)
	}
	log.Info("audit", "who", "token", "rpc", "RemovePool", "outcome", "ok") // the ring keeps 2
	if w := h.Recent(); len(w) != 2 || w[0].What != "RemovePool" || h.Has("ab12") {
		t.Errorf("after a third write: %+v", w)
	}
}

// TestDevLogin: a -dev node without any token logs in with an empty one,
// read-write, as its admin API admits every call; with a token configured
// an empty one is refused.
func TestDevLogin(t *testing.T) {
	for _, tc := range []struct {
		token string
		want  int
	}{{"", http.StatusSeeOther}, {"tok", http.StatusUnauthorized}} {
		srv, err := Handler(Options{Node: "dev", GRPCAddr: "127.0.0.1:1", Token: tc.token, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		r := httptest.NewRequest("POST", "/ui/login", strings.NewReader("token="))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.RemoteAddr = "127.0.0.1:4000"
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, r)
		if w.Code != tc.want {
			t.Errorf("configured token %q, empty login: %d, want %d", tc.token, w.Code, tc.want)
		}
		srv.Close()
	}
}
