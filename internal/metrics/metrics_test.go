package metrics

import (
	"net/http/httptest"
	"strings"
	"testing"

	gometrics "github.com/hashicorp/go-metrics/compat"

	"github.com/gwelb/gwelb/internal/metrics/metricstest"
)

// TestCodeLabels: every status maps to one of a fixed, small set of code
// labels, so the series per member stay bounded whatever a member answers.
func TestCodeLabels(t *testing.T) {
	for _, tt := range []struct {
		status int
		want   string
	}{
		{200, "200"}, {101, "101"}, {304, "304"}, {499, "499"}, {502, "502"}, {503, "503"}, {504, "504"},
		{201, "2xx"}, {299, "2xx"}, {307, "3xx"}, {418, "4xx"}, {511, "5xx"}, {102, "1xx"},
		{0, "other"}, {99, "other"}, {600, "other"}, {999, "other"}, {-1, "other"},
	} {
		if got := CodeLabel(CodeIndex(tt.status)); got != tt.want {
			t.Errorf("status %d: code label %q, want %q", tt.status, got, tt.want)
		}
	}
	seen := map[string]bool{}
	for s := -10; s < 1000; s++ {
		i := CodeIndex(s)
		if i < 0 || i >= NumCodes {
			t.Fatalf("status %d: index %d out of 0..%d", s, i, NumCodes-1)
		}
		seen[CodeLabel(i)] = true
	}
	if len(seen) != NumCodes {
		t.Errorf("%d distinct labels reached, want %d", len(seen), NumCodes)
	}
}

// TestRegistryExposition: a fresh registry serves, in the text format that
// Prometheus' parser reads, the Go and process collectors and the
// table-derived gauges its sources report; go-metrics (Raft's and
// memberlist's library) reaches it.
func TestRegistryExposition(t *testing.T) {
	r := New()
	r.Cluster.SetState(func() ClusterState {
		return ClusterState{Leader: true, TableIndex: 42, LastQuorumContact: -1, Members: func(yield func(ClusterMember) bool) {
			yield(ClusterMember{Pool: "backend", Route: "1", Up: true, State: "drain"})
		}}
	})
	r.Proxy.SetMembers(func(yield func(MemberState) bool) {
		yield(MemberState{Pool: "backend", Route: "1", InFlight: 3, WebSockets: 2, Quarantined: true})
	})
	emitGoMetrics()
	srv := httptest.NewServer(r.Handler(nil))
	defer srv.Close()
	f := metricstest.Scrape(t, srv.URL)
	for _, tt := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{RaftLeader, nil, 1},
		{TableIndex, nil, 42},
		{MemberUp, []string{"route", "1"}, 1},
		{MemberAdminState, []string{"route", "1", "state", "drain"}, 1},
		{MemberAdminState, []string{"route", "1", "state", "active"}, 0},
		{InFlight, []string{"route", "1"}, 3},
		{WebSockets, []string{"route", "1"}, 2},
		{Quarantined, []string{"route", "1"}, 1},
		{"gwelbtest_bridge_total", nil, 1},
	} {
		if got, ok := f.Value(tt.name, tt.labels...); !ok || got != tt.want {
			t.Errorf("%s%v = %v (found: %v), want %v", tt.name, tt.labels, got, ok, tt.want)
		}
	}
	if v, _ := f.Value(LastQuorumContactSeconds); v < 1e300 {
		t.Errorf("last quorum contact before any contact = %v, want +Inf", v)
	}
	for _, prefix := range []string{"go_", "process_"} {
		if len(f.Names(prefix)) == 0 {
			t.Errorf("no %s series", prefix)
		}
	}
	for name := range f {
		if strings.HasPrefix(name, "gwelb_gometrics") {
			t.Errorf("the bridge's placeholder %s is exposed", name)
		}
	}
}

// emitGoMetrics emits a counter the way Raft and memberlist do (through
// go-metrics' compat package, to its global sink).
func emitGoMetrics() { gometrics.IncrCounter([]string{"gwelbtest", "bridge", "total"}, 1) }
