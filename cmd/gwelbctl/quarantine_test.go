package main

import (
	"encoding/json"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/gwelb/gwelb/cluster"
	"github.com/gwelb/gwelb/cluster/clustertest"
	"github.com/gwelb/gwelb/fsm"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// Local quarantine (routing contract rule 8) is visible: right after a
// GWE server died, the node whose proxied request found it dead sends its
// visitors elsewhere while the cluster's verdict is still UP. route
// --all-nodes shows that node choosing the fallback, the member it skips
// and until when, while the others still say sticky; status shows the
// quarantine per node under the member. Three real nodes.
func TestLocalQuarantineVisible(t *testing.T) {
	// Probes an hour apart: the verdict stays UP for the whole test, so
	// only the proxy's own failure tells the one node; a long fail_timeout
	// keeps the quarantine while the test looks.
	slowProbes := func(_ int, cfg *cluster.Config) {
		cfg.Seed = slices.Clone(cfg.Seed)
		cfg.Seed[0].Health = fsm.HealthSpec{Interval: time.Hour, Timeout: time.Second, Rise: 2, Fall: 10}
		cfg.Seed[0].FailTimeout = new(time.Minute)
	}
	c := clustertest.New(t, 3, slowProbes)
	n1 := c.Nodes[0]
	c.GWE["2"].Stop() // its listener is gone: connection refused

	server, setCookie, err := clustertest.Get(t, n1, "/backend/x", "ROUTEID=.2")
	if err != nil || server == "2" || server == "" {
		t.Fatalf("GET with ROUTEID=.2 through n1: served by %q (%v); want the fallback", server, err)
	}
	fallback := server
	if want := "ROUTEID=." + fallback + "; Path=/"; setCookie != want {
		t.Errorf("Set-Cookie %q, want %q", setCookie, want)
	}
	before := time.Now()

	// Every node at the same table: a disagreement is quarantine alone.
	c.WaitAll("one table index", func(tn *clustertest.Node) bool { return tn.Node.Table().Index() == n1.Node.Table().Index() })

	r := ctl(t, c.Nodes[1], "-o", "json", "route", "backend", ".2", "--all-nodes")
	if r.code != exitDisagreement {
		t.Fatalf("route --all-nodes: exit %d, want %d (n1 quarantines 2); stderr %q\n%s", r.code, exitDisagreement, r.stderr, r.stdout)
	}
	var rows []routeRow
	if err := json.Unmarshal([]byte(r.stdout), &rows); err != nil || len(rows) != 3 {
		t.Fatalf("route --all-nodes -o json: %v\n%s", err, r.stdout)
	}
	for _, row := range rows {
		switch row.Node {
		case "n1":
			if row.Route != fallback || row.Reason != "fallback" || len(row.Quarantined) != 1 || row.Quarantined[0].Route != "2" || row.Quarantined[0].Node != "n1" {
				t.Errorf("n1 answers %+v; want the fallback %s and 2 quarantined", row, fallback)
				continue
			}
			q := row.Quarantined[0]
			until := time.Unix(0, q.UntilUnixNanos)
			if until.Before(before.Add(50*time.Second)) || until.After(before.Add(time.Minute)) || q.RemainingMs <= 0 || q.RemainingMs > 60_000 {
				t.Errorf("n1 quarantines 2 until %v (%d ms left); want about a minute (fail_timeout) after %v", until, q.RemainingMs, before)
			}
		default:
			if row.Route != "2" || row.Reason != "sticky" || len(row.Quarantined) != 0 || row.Error != "" {
				t.Errorf("%s answers %+v; want 2, sticky, nothing quarantined", row.Node, row)
			}
		}
	}

	// The table says the same, and why the nodes disagree.
	r = ctl(t, c.Nodes[2], "route", "backend", ".2", "--all-nodes")
	if r.code != exitDisagreement {
		t.Fatalf("route --all-nodes: exit %d\n%s", r.code, r.stdout)
	}
	wantLine(t, r.stdout, `^n1\s+\S+\s+\d+\s+`+fallback+`\s+http://\S+\s+fallback\s+2 until \d\d:\d\d:\d\dZ \([0-9hms]+ left\)\s+-$`)
	wantLine(t, r.stdout, `^n2\s+\S+\s+\d+\s+2\s+http://\S+\s+sticky\s+-\s+-$`)
	wantLine(t, r.stdout, `^DISAGREEMENT: .*\(local quarantine after a connection failure: n1 skips 2\)$`)

	// status, asked anywhere, lists n1's quarantine under member 2, with
	// the verdict still up.
	var st gwelbv1.StatusResponse
	ctlProto(t, c.Nodes[2], &st, "status")
	var found bool
	for _, ms := range st.GetPools()[0].GetMembers() {
		q := ms.GetQuarantined()
		switch ms.GetMember().GetRoute() {
		case "2":
			found = true
			if len(q) != 1 || q[0].GetNode() != "n1" || ms.GetMember().GetVerdict() != gwelbv1.Verdict_VERDICT_UP {
				t.Errorf("status: member 2 quarantined %v, verdict %v; want n1's quarantine and up", q, ms.GetMember().GetVerdict())
			}
		default:
			if len(q) != 0 {
				t.Errorf("status: member %s quarantined %v", ms.GetMember().GetRoute(), q)
			}
		}
	}
	if !found || !slices.Equal(st.GetInFlightFrom(), []string{"n1", "n2", "n3"}) {
		t.Errorf("status: member 2 found %v, in_flight_from %v", found, st.GetInFlightFrom())
	}
	r = ctl(t, c.Nodes[1], "status")
	wantOK(t, r)
	wantLine(t, r.stdout, `^2\s+`+regexp.QuoteMeta(c.GWE["2"].URL)+`\s+1\s+active\s+up\s+.*\s+n1 until \d\d:\d\d:\d\dZ \([0-9hms]+ left\)\s`)
}
