package cluster_test

// Control-plane figures over a real in-process three-node cluster
// (clustertest: Raft, gossip, admin API and data plane per node, real TCP on
// loopback). They run only with -bench; `make bench-cluster` runs them with
// the iteration counts the figures are quoted with.

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gwelb/gwelb/cluster"
	"github.com/gwelb/gwelb/cluster/clustertest"
	"github.com/gwelb/gwelb/fsm"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// productionProbes seeds the pool with the default health check (every 2 s)
// instead of clustertest's 100 ms one, so that the figures are not measured
// under ten times the probe traffic a deployment has.
func productionProbes(_ int, cfg *cluster.Config) {
	seed := slices.Clone(cfg.Seed)
	seed[0].Health = fsm.HealthSpec{}
	cfg.Seed = seed
}

// spinUntil polls cond as tightly as the scheduler allows, so that the time
// it returns at is the time cond became true give or take a scheduling
// round, and fails after timeout.
func spinUntil(b *testing.B, timeout time.Duration, what string, cond func() bool) {
	b.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			b.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		runtime.Gosched()
	}
}

// inProxy tells whether tn's data plane can route to route in the backend pool.
func inProxy(tn *clustertest.Node, route string) bool {
	tab := tn.Proxy.Table()
	if tab == nil || tab.Pool("backend") == nil {
		return false
	}
	_, ok := tab.Pool("backend").Lookup(route)
	return ok
}

// benchPut writes member route (weight w) through tn and returns the index
// the leader acknowledged, or reports the error and returns 0 (safe to call
// from several goroutines).
func benchPut(b *testing.B, c *clustertest.Cluster, tn *clustertest.Node, route, url string, w int32) uint64 {
	cl, ctx := c.Admin(tn)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := cl.PutMember(ctx, &gwelbv1.PutMemberRequest{Member: &gwelbv1.Member{Pool: "backend", Route: route, Url: url, Weight: w}})
	if err != nil {
		b.Errorf("put member %s via %s: %v", route, tn.Cfg.Name, err)
		return 0
	}
	return resp.GetIndex()
}

// quantile is the q-quantile (nearest rank) of sorted durations.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// reportLatencies reports the median, p99 and max of ds under prefix.
func reportLatencies(b *testing.B, prefix string, ds []time.Duration, p99 bool) {
	slices.Sort(ds)
	b.ReportMetric(ms(quantile(ds, 0.5)), prefix+"p50-ms")
	if p99 {
		b.ReportMetric(ms(quantile(ds, 0.99)), prefix+"p99-ms")
	}
	b.ReportMetric(ms(ds[len(ds)-1]), prefix+"max-ms")
}

// BenchmarkPutMemberPropagation measures, for each PutMember the leader
// acknowledges, the time from the acknowledgement until the new member is
// routable in the data plane of all three nodes. Run with -benchtime=200x.
func BenchmarkPutMemberPropagation(b *testing.B) {
	c := clustertest.New(b, 3, productionProbes)
	leader := c.WaitLeader()
	url := c.GWE["1"].URL
	var lat []time.Duration
	i := 0
	for b.Loop() {
		route := fmt.Sprintf("prop-%d", i)
		i++
		if benchPut(b, c, leader, route, url, 1) == 0 {
			b.FailNow()
		}
		acked := time.Now()
		spinUntil(b, 10*time.Second, route+" routable on every node", func() bool {
			for _, tn := range c.Nodes {
				if !inProxy(tn, route) {
					return false
				}
			}
			return true
		})
		lat = append(lat, time.Since(acked))
	}
	b.StopTimer()
	reportLatencies(b, "", lat, true)
	b.ReportMetric(0, "ns/op") // the figure is the latency above, not the loop time
}

// BenchmarkLeaderFailover kills the leader and measures the time until the
// two survivors agree on a new leader, and until a write through a survivor
// succeeds; then it restarts the killed node from its config and waits for
// it to catch up before the next round. Run with -benchtime=10x.
func BenchmarkLeaderFailover(b *testing.B) {
	c := clustertest.New(b, 3, productionProbes)
	url := c.GWE["2"].URL
	var elect, write []time.Duration
	round := 0
	for b.Loop() {
		b.StopTimer()
		leader := c.WaitLeader()
		cfg := leader.Cfg
		survivors := slices.DeleteFunc(slices.Clone(c.Live()), func(tn *clustertest.Node) bool { return tn == leader })
		b.StartTimer()

		killed := time.Now()
		c.Kill(leader)
		var next *clustertest.Node
		spinUntil(b, 20*time.Second, "the survivors to agree on a new leader", func() bool {
			name := survivors[0].Node.Leader()
			if name == "" || name == cfg.Name || survivors[1].Node.Leader() != name {
				return false
			}
			for _, tn := range survivors {
				if tn.Cfg.Name == name && tn.Node.IsLeader() {
					next = tn
				}
			}
			return next != nil
		})
		elect = append(elect, time.Since(killed))
		// Through the follower, as a client would: forwarded to the leader.
		route := fmt.Sprintf("failover-%d", round)
		var via *clustertest.Node
		for _, tn := range survivors {
			if tn != next {
				via = tn
			}
		}
		index := benchPut(b, c, via, route, url, 1)
		if index == 0 {
			b.FailNow()
		}
		write = append(write, time.Since(killed))
		round++

		b.StopTimer()
		restarted := c.Start(cfg)
		clustertest.WaitFor(b, 30*time.Second, cfg.Name+" back and caught up", func() bool {
			return restarted.Node.Leader() == next.Cfg.Name && restarted.Node.Table().Index() >= index && inProxy(restarted, route)
		})
		c.WaitLeader()
		b.StartTimer()
	}
	b.StopTimer()
	reportLatencies(b, "elect-", elect, false)
	reportLatencies(b, "write-", write, false)
	b.ReportMetric(0, "ns/op")
}

// BenchmarkWrites measures acknowledged writes per second through the
// leader with 1 and 16 concurrent clients. Write i flips the weight of
// member w-(i mod 64) between 1 and 2: every write changes the table, and
// the table keeps its size.
func BenchmarkWrites(b *testing.B) {
	c := clustertest.New(b, 3, productionProbes)
	leader := c.WaitLeader()
	url := c.GWE["3"].URL
	for _, clients := range []int{1, 16} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for range clients {
				wg.Go(func() {
					for {
						i := next.Add(1)
						if i > int64(b.N) {
							return
						}
						benchPut(b, c, leader, fmt.Sprintf("w-%d", i%64), url, 1+int32(i/64%2))
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
		})
	}
}
