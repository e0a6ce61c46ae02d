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
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// TestRates: the dashboard's per-member rates come from every node's
// cumulative counters (Status' MemberStatus.counters): requests, 5xx and
// retries per second, each node's from its own deltas and summed; a node
// that stops answering leaves the sum rather than reading as a reset.
// Re-pins are this node's totals by cause from its registry.
func TestRates(t *testing.T) {
	reg := metrics.New()
	rt := newRateTracker(reg.Gatherer())
	k := memberKey{"backend", "1"}
	at := func(reqs, errs, retries float64) map[memberKey]memberRates {
		return map[memberKey]memberRates{k: {Requests: reqs, Errors: errs, Retries: retries}}
	}
	t0 := time.Unix(1000, 0)
	if v := rt.read(t0, nodeCounts{"n1": at(100, 0, 0), "n2": at(1000, 10, 0)}); v == nil || v.Over != 0 {
		t.Fatalf("first reading: %+v, want no rates yet", v)
	}
	reg.Proxy.Repins.WithLabelValues("backend", metrics.CauseMemberUnusable).Add(3)
	v := rt.read(t0.Add(2*time.Second), nodeCounts{"n1": at(150, 10, 4), "n2": at(1000, 10, 0)})
	if v.Over != 2*time.Second {
		t.Fatalf("rates over %v, want 2s", v.Over)
	}
	got := v.Members[k]
	for _, c := range []struct {
		name      string
		got, want float64
	}{
		{"requests/s", got.Requests, 25}, {"5xx/s", got.Errors, 5}, {"retries/s", got.Retries, 2},
		{"n1 requests/s", v.PerNode["n1"][k].Requests, 25}, {"n2 requests/s", v.PerNode["n2"][k].Requests, 0},
	} {
		if math.Abs(c.got-c.want) > 1e-9 {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if n := v.Repins[memberKey{"backend", metrics.CauseMemberUnusable}]; n != 3 {
		t.Errorf("re-pins member_unusable = %v, want 3", n)
	}
	// n2 stops answering: the sum is n1's alone, not a spike.
	v = rt.read(t0.Add(3*time.Second), nodeCounts{"n1": at(180, 10, 4)})
	if r := v.Members[k].Requests; math.Abs(r-80.0/3) > 1e-9 {
		t.Errorf("with n2 silent: %v requests/s, want n1's 26.67", r)
	}
	// Readings older than the window are dropped: after a quiet 30 s the
	// rates are 0 again.
	for s := 4; s <= 34; s++ {
		v = rt.read(t0.Add(time.Duration(s)*time.Second), nodeCounts{"n1": at(180, 10, 4), "n2": at(1000, 10, 0)})
	}
	if r := v.Members[k]; r.Requests != 0 || r.Errors != 0 {
		t.Errorf("after 30 quiet seconds: %+v, want 0", r)
	}
	if v.Over > rateWindow+time.Second {
		t.Errorf("rates over %v, want at most the window (%v)", v.Over, rateWindow)
	}
	if (&rateTracker{}).read(t0, nil) != nil {
		t.Errorf("rates without counters or a registry")
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

// TestMergeWrites: the overview lists each write once, newest first: the
// audit record of the node that decided it wins over this dashboard's own
// record of it (same request_id), and a node's ring that this dashboard
// also holds is not listed twice.
func TestMergeWrites(t *testing.T) {
	t0 := time.Unix(2000, 0)
	own := Write{Time: t0, Who: "token on the dashboard of n2", What: "drain frontend/GWE_F_1", Outcome: "ok", RequestID: "r1"}
	leader := &gwelbv1.AdminWrite{UnixNanos: t0.Add(time.Millisecond).UnixNano(), Who: "token via n2",
		What: "SetMemberState pool=frontend route=GWE_F_1 state=drain", Outcome: "ok (index 9)", Node: "n1", RequestId: "r1"}
	older := &gwelbv1.AdminWrite{UnixNanos: t0.Add(-time.Second).UnixNano(), Who: "client:ops", What: "RemovePool pool=x",
		Outcome: "NotFound: no pool x", Node: "n2"}
	sn := &snapshot{Nodes: []*nodeStatus{
		{Name: "n1", Status: &gwelbv1.StatusResponse{RecentWrites: []*gwelbv1.AdminWrite{leader}}},
		{Name: "n2", Status: &gwelbv1.StatusResponse{RecentWrites: []*gwelbv1.AdminWrite{older}}},
		{Name: "n3", Err: "not alive in gossip"},
	}}
	local := []Write{own, {Time: time.Unix(0, older.UnixNanos), Who: older.Who, What: older.What, Outcome: older.Outcome, Node: "n2"}}
	got := mergeWrites(local, sn, 10)
	if len(got) != 2 {
		t.Fatalf("merged %d writes, want 2: %+v", len(got), got)
	}
	if got[0].Who != "token via n2" || got[0].Node != "n1" {
		t.Errorf("newest: %+v, want the leader's audit record", got[0])
	}
	if got[1].What != "RemovePool pool=x" {
		t.Errorf("second: %+v, want the refused RemovePool", got[1])
	}
	if n := len(mergeWrites(local, sn, 1)); n != 1 {
		t.Errorf("limit 1: %d writes", n)
	}
}
