package cluster

import (
	"context"
	"time"

	"github.com/gwelb/gwelb/fsm"
)

// TestProbe is one member's probe made outside any table, for the tests
// of the probe's connection (probeconn_test.go).
type TestProbe struct{ pr *probe }

// NewTestProbe makes a probe of url (spec.Path appended) by a prober of a
// node configured by cfg (its ProbeDialer and ProbeTLS); keep gives it a
// kept-alive place, as a member probed every probeKeepAliveMax or more
// often gets one.
func NewTestProbe(cfg Config, url string, spec fsm.HealthSpec, keep bool) *TestProbe {
	p := newProber(&Node{cfg: cfg})
	return &TestProbe{pr: &probe{p: p, pool: "test", route: "test", url: url, spec: spec, keep: keep, ctx: context.Background()}}
}

// Check makes one probe on the calling goroutine, as step does.
func (tp *TestProbe) Check(ctx context.Context) error { return tp.pr.p.check(ctx, tp.pr) }

// Stop stops the probe, as a member gone does.
func (tp *TestProbe) Stop() { tp.pr.stop() }

// Kept reports whether the probe holds an idle connection.
func (tp *TestProbe) Kept() bool {
	tp.pr.mu.Lock()
	defer tp.pr.mu.Unlock()
	return tp.pr.conn != nil
}

// AgeKeptConn makes the kept connection look idle for d longer.
func (tp *TestProbe) AgeKeptConn(d time.Duration) {
	tp.pr.mu.Lock()
	defer tp.pr.mu.Unlock()
	if tp.pr.conn != nil {
		tp.pr.conn.idle = tp.pr.conn.idle.Add(-d)
	}
}

// ProbeKeepAliveMax is the longest interval whose probes keep their
// connection.
const ProbeKeepAliveMax = probeKeepAliveMax
