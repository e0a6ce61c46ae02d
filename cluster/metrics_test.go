package cluster_test

import (
	"context"
	"fmt"
	"math"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gwelb/gwelb/cluster"
	"github.com/gwelb/gwelb/cluster/clustertest"
	"github.com/gwelb/gwelb/internal/metrics"
	"github.com/gwelb/gwelb/internal/metrics/metricstest"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
	"github.com/gwelb/gwelb/proxy"
)

// TestMetricsThreeNodes runs three real nodes, each with its own registry
// served at /metrics by a real ops listener, and reads what Prometheus
// would: every scrape parses with the Prometheus text parser; exactly one
// node says it leads; verdicts, admin states and probes follow the
// cluster; Raft's and memberlist's go-metrics series are there; a member
// removed from the table takes its series with it. DESIGN.md §8.1.
func TestMetricsThreeNodes(t *testing.T) {
	regs := []*metrics.Registry{metrics.New(), metrics.New(), metrics.New()}
	c := clustertest.New(t, 3, func(i int, cfg *cluster.Config) { cfg.Metrics = regs[i].Cluster })
	urls := make([]string, len(c.Nodes))
	for i, tn := range c.Nodes {
		ops := httptest.NewServer(proxy.OpsHandler(tn.Ready, tn.Node.LastContact, proxy.WithMetrics(regs[i].Handler(nil))))
		t.Cleanup(ops.Close)
		urls[i] = ops.URL + "/metrics"
	}
	// waitScrapes scrapes every node until check finds nothing wrong.
	waitScrapes := func(what string, check func(i int, f metricstest.Families) string) []metricstest.Families {
		t.Helper()
		var fs []metricstest.Families
		var bad []string
		clustertest.WaitFor(t, 20*time.Second, what, func() bool {
			fs, bad = fs[:0], bad[:0]
			for i, u := range urls {
				f := metricstest.Scrape(t, u)
				fs = append(fs, f)
				if why := check(i, f); why != "" {
					bad = append(bad, c.Nodes[i].Cfg.Name+": "+why)
				}
			}
			if len(bad) > 0 {
				t.Logf("%s: not yet: %s", what, strings.Join(bad, "; "))
			}
			return len(bad) == 0
		})
		return fs
	}
	const pool = "backend"

	// Leadership is judged in the retried check: under load an election
	// can come between a scrape and a look at the node afterwards.
	leadersSeen := 0
	fs := waitScrapes("a steady cluster in every scrape", func(i int, f metricstest.Families) string {
		var why []string
		if i == 0 {
			leadersSeen = 0
		}
		if lead, _ := f.Value(metrics.RaftLeader); lead == 1 {
			leadersSeen++
			if !c.Nodes[i].Node.IsLeader() {
				why = append(why, "raft_leader = 1 on a node that does not lead")
			}
		}
		if i == len(c.Nodes)-1 && leadersSeen != 1 {
			why = append(why, fmt.Sprintf("raft_leader = 1 on %d nodes, want exactly 1", leadersSeen))
		}
		for _, prefix := range []string{"raft_", "memberlist_", "go_", "process_"} {
			if len(f.Names(prefix)) == 0 {
				why = append(why, "no "+prefix+" series")
			}
		}
		for _, route := range []string{"1", "2", "3"} {
			if v, ok := f.Value(metrics.MemberUp, "pool", pool, "route", route); !ok || v != 1 {
				why = append(why, fmt.Sprintf("member_up{%s} = %v", route, v))
			}
			if v, ok := f.Value(metrics.MemberAdminState, "pool", pool, "route", route, "state", "active"); !ok || v != 1 {
				why = append(why, fmt.Sprintf("admin_state{%s,active} = %v", route, v))
			}
			if f.Sum(metrics.MemberAdminState, "pool", pool, "route", route) != 1 {
				why = append(why, "admin_state of "+route+" does not sum to 1")
			}
			if v, _ := f.Value(metrics.ProbeDurationSeconds, "pool", pool, "route", route); v == 0 {
				why = append(why, "no probe of "+route+" observed")
			}
		}
		if v, _ := f.Value(metrics.LeaderChangesTotal); v < 1 {
			why = append(why, "no leader change counted")
		}
		if _, ok := f.Value(metrics.CatchUpRoundsTotal); !ok {
			why = append(why, "no catch-up rounds counter")
		}
		if v, _ := f.Value(metrics.TableIndex); v < 1 {
			why = append(why, "no table index")
		}
		return strings.Join(why, ", ")
	})
	for i, f := range fs {
		lead, _ := f.Value(metrics.RaftLeader)
		contact, _ := f.Value(metrics.LastQuorumContactSeconds)
		if lead == 1 {
			if contact != 0 {
				t.Errorf("leader's last quorum contact %v s, want 0", contact)
			}
		} else if contact > 5 || math.IsInf(contact, 1) {
			t.Errorf("%s: last quorum contact %v s in a healthy cluster", c.Nodes[i].Cfg.Name, contact)
		}
		if hb := f.Names("raft_replication_heartbeat"); len(hb) > 0 {
			t.Errorf("%s: %v: heartbeat timings are filtered out (DESIGN.md §8.1)", c.Nodes[i].Cfg.Name, hb)
		}
		if raft := f.Names("raft_"); len(raft) > 0 {
			t.Logf("%s: %d raft_ families (e.g. %s), %d memberlist_", c.Nodes[i].Cfg.Name, len(raft), raft[0], len(f.Names("memberlist_")))
		}
	}

	// GWE server 2 dies: the cluster's verdict, and every node's probe
	// failures, say so. Member 3 is drained.
	c.GWE["2"].Stop()
	cl, ctx := c.Admin(c.Nodes[0])
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := cl.SetMemberState(ctx, &gwelbv1.SetMemberStateRequest{Pool: pool, Route: "3", State: gwelbv1.AdminState_ADMIN_STATE_DRAIN}); err != nil {
		t.Fatal(err)
	}
	fs = waitScrapes("member 2 down and member 3 drained on every node", func(i int, f metricstest.Families) string {
		var why []string
		if v, _ := f.Value(metrics.MemberUp, "pool", pool, "route", "2"); v != 0 {
			why = append(why, "member_up{2} = 1")
		}
		if v, _ := f.Value(metrics.ProbeFailuresTotal, "pool", pool, "route", "2"); v < 2 {
			why = append(why, fmt.Sprintf("probe_failures{2} = %v", v))
		}
		if v, _ := f.Value(metrics.MemberAdminState, "pool", pool, "route", "3", "state", "drain"); v != 1 {
			why = append(why, "admin_state{3,drain} = 0")
		}
		if v, _ := f.Value(metrics.MemberAdminState, "pool", pool, "route", "3", "state", "active"); v != 0 {
			why = append(why, "admin_state{3,active} = 1")
		}
		return strings.Join(why, ", ")
	})
	for i, f := range fs {
		if v, _ := f.Value(metrics.ProbeFailuresTotal, "pool", pool, "route", "1"); v != 0 {
			t.Errorf("%s: %v probe failures of healthy member 1", c.Nodes[i].Cfg.Name, v)
		}
	}

	// Member 1 leaves the table: its series leave every node's exposition.
	if _, err := cl.RemoveMember(ctx, &gwelbv1.RemoveMemberRequest{Pool: pool, Route: "1"}); err != nil {
		t.Fatal(err)
	}
	waitScrapes("no series of removed member 1", func(i int, f metricstest.Families) string {
		var why []string
		for _, name := range []string{metrics.MemberUp, metrics.MemberAdminState, metrics.ProbeDurationSeconds, metrics.ProbeFailuresTotal} {
			if n := f.Count(name, "route", "1"); n != 0 {
				why = append(why, fmt.Sprintf("%d %s series", n, name))
			}
		}
		return strings.Join(why, ", ")
	})
}
