package main

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/gwelb/gwelb/internal/metrics"
	"github.com/gwelb/gwelb/internal/metrics/metricstest"
)

// TestAgentServesMetrics runs the daemon as a process and scrapes its ops
// listener: the registry runAgent wires into the data and control planes is
// the one /metrics serves, with Raft's and memberlist's series, and
// /debug/pprof/ stays closed without ops.pprof.
func TestAgentServesMetrics(t *testing.T) {
	a := startAgents(t, 1, map[string]string{"1": startGWE(t, "1")})[0]
	req, _ := http.NewRequest(http.MethodGet, "http://"+a.data+"/backend/x", nil)
	req.Header.Set("Cookie", "ROUTEID=.1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("sticky request: %s", resp.Status)
	}
	var f metricstest.Families
	waitUntil(t, 20*time.Second, "the request, the leader and the go-metrics series in /metrics", func() bool {
		f = metricstest.Scrape(t, "http://"+a.ops+"/metrics")
		req, _ := f.Value(metrics.RequestsTotal, "pool", "backend", "route", "1", "code", "200")
		lead, _ := f.Value(metrics.RaftLeader)
		up, _ := f.Value(metrics.MemberUp, "pool", "backend", "route", "1")
		return req == 1 && lead == 1 && up == 1 && len(f.Names("raft_")) > 0 && len(f.Names("memberlist_")) > 0
	})
	resp, err = http.Get("http://" + a.ops + "/debug/pprof/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("/debug/pprof/ without ops.pprof: %s, want 404", resp.Status)
	}
}
