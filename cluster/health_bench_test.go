package cluster_test

import (
	"fmt"
	"math"
	"net/http/httptest"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/gwelb/gwelb/cluster"
	"github.com/gwelb/gwelb/cluster/clustertest"
	"github.com/gwelb/gwelb/fsm"
	"github.com/gwelb/gwelb/internal/gwedemo"
)

// defaultHealth seeds the pool with the default probe settings (2 s, fall 2).
func defaultHealth(i int, cfg *cluster.Config) {
	seed := slices.Clone(cfg.Seed)
	seed[0].Health = fsm.HealthSpec{}
	cfg.Seed = seed
}

// BenchmarkDetection measures, at default probe settings, the time from a
// GWE server's death to the cluster verdict DOWN (the first node applying
// it) and to the last node routing around it. A server dies at any point
// of the probe interval, so each kill first waits a different fraction of
// the interval (multiples of the golden ratio, spread evenly for any
// count): killed the moment the previous member came back, that is just
// after a probe, the figures told how far apart two members' probes are,
// not how fast a death is seen. Run with -benchtime=10x.
func BenchmarkDetection(b *testing.B) {
	c := clustertest.New(b, 3, defaultHealth)
	var toVerdict, toAll []time.Duration
	routes := []string{"1", "2", "3"}
	const interval = fsm.DefaultProbeInterval
	b.ResetTimer()
	for i := range b.N {
		route := routes[i%len(routes)]
		g := c.GWE[route]
		_, frac := math.Modf(float64(i+1) * 0.6180339887498949)
		time.Sleep(time.Duration(frac * float64(interval))) // the point of death, not a synchronisation
		died := time.Now()
		g.Stop()
		var first time.Duration
		clustertest.WaitFor(b, 30*time.Second, "verdict DOWN on every node", func() bool {
			down := 0
			for _, tn := range c.Live() {
				if verdict(tn, route) == fsm.Down {
					down++
				}
			}
			if down > 0 && first == 0 {
				first = time.Since(died)
			}
			return down == len(c.Live())
		})
		toVerdict = append(toVerdict, first)
		toAll = append(toAll, time.Since(died))
		if err := g.Start(); err != nil {
			b.Fatal(err)
		}
		c.WaitAll("verdict UP again", func(tn *clustertest.Node) bool { return verdict(tn, route) == fsm.Up })
	}
	b.StopTimer()
	reportDurations(b, "verdict", toVerdict)
	reportDurations(b, "all-nodes", toAll)
}

// BenchmarkProbeCPU1000 measures the CPU one node spends probing 1,000
// members at the default 2 s interval (the demo server answering the probes
// runs in the same process, so this is an upper bound).
func BenchmarkProbeCPU1000(b *testing.B) {
	gwe := httptest.NewServer(gwedemo.New("x", "/backend"))
	defer gwe.Close()
	c := clustertest.New(b, 1, func(i int, cfg *cluster.Config) {
		seed := slices.Clone(cfg.Seed)
		seed[0].Health = fsm.HealthSpec{}
		seed[0].Members = nil
		for m := range 1000 {
			seed[0].Members = append(seed[0].Members, fsm.MemberSpec{Route: fmt.Sprintf("m%d", m), URL: gwe.URL})
		}
		cfg.Seed = seed
	})
	_ = c
	window := 10 * time.Second
	b.ResetTimer()
	for range b.N {
		before := cpuTime()
		start := time.Now()
		deadline := start.Add(window)
		for time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond) // measurement window, not synchronisation
		}
		used := cpuTime() - before
		b.ReportMetric(100*used.Seconds()/time.Since(start).Seconds(), "cpu-%")
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportDurations reports the median and the maximum of ds in milliseconds.
func reportDurations(b *testing.B, name string, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	b.ReportMetric(float64(s[len(s)/2].Microseconds())/1000, name+"-p50-ms")
	b.ReportMetric(float64(s[len(s)-1].Microseconds())/1000, name+"-max-ms")
}
