package cluster

import (
	"context"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gwelb/gwelb/fsm"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// prober probes every member from this node and reports changes of this
// node's view as observations through Raft; the FSM turns the observations
// of all nodes into the cluster's verdict. In steady state it writes nothing.
type prober struct {
	n      *Node
	client *http.Client

	mu     sync.Mutex
	probes map[string]map[string]*probe // by pool, then route
}

// probe is the goroutine that watches one member.
type probe struct {
	pool, route, url string
	spec             fsm.HealthSpec
	passive          chan error // failures the proxy saw, counted as failed probes
	cancel           context.CancelFunc
	metrics          probeMetrics // gwelb_probe_duration_seconds, gwelb_probe_failures_total (metrics.go)
}

func newProber(n *Node) *prober {
	dial := n.cfg.ProbeDialer
	if dial == nil {
		dial = (&net.Dialer{Timeout: 2 * time.Second}).DialContext
	}
	return &prober{
		n: n,
		client: &http.Client{
			Transport: &http.Transport{
				DialContext:         dial,
				TLSClientConfig:     n.cfg.ProbeTLS,
				MaxIdleConnsPerHost: 1,
				IdleConnTimeout:     30 * time.Second,
			},
			// A redirect is an answer; the expected status decides.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		probes: map[string]map[string]*probe{},
	}
}

// sync starts probes for new members and stops those of removed or changed
// ones. It runs on every new table, after prev (nil at first), and must not
// block. It costs what the change touched (DESIGN.md §5.2): a pool with the
// layout it had in prev has the same settings, routes and URLs, so its
// probes stand as they are; only a pool whose layout changed, or that came
// or went, is walked.
func (p *prober) sync(ctx context.Context, prev, t *fsm.Table) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pool := range t.Pools() {
		if prev != nil && pool.SameLayout(prev.Pool(pool.Name())) {
			continue
		}
		p.syncPool(ctx, pool)
	}
	for name, probes := range p.probes {
		if t.Pool(name) == nil {
			for route, pr := range probes {
				p.stopProbe(pr)
				delete(probes, route)
			}
			delete(p.probes, name)
		}
	}
}

// syncPool makes the probes of one pool match its members.
func (p *prober) syncPool(ctx context.Context, pool *fsm.Pool) {
	spec := pool.Spec().Health
	probes := p.probes[pool.Name()]
	if probes == nil {
		probes = map[string]*probe{}
		p.probes[pool.Name()] = probes
	}
	seen := make(map[string]bool, pool.Len())
	for _, m := range pool.All() {
		seen[m.Route] = true
		if old := probes[m.Route]; old != nil {
			if old.url == m.URL && old.spec == spec {
				continue
			}
			old.cancel()
		}
		pctx, cancel := context.WithCancel(ctx)
		pr := &probe{pool: pool.Name(), route: m.Route, url: m.URL, spec: spec, passive: make(chan error, 8), cancel: cancel,
			metrics: p.n.probeMetricsFor(pool.Name(), m.Route)}
		probes[m.Route] = pr
		go p.run(pctx, pr)
	}
	for route, pr := range probes {
		if !seen[route] {
			p.stopProbe(pr)
			delete(probes, route)
		}
	}
}

// stopProbe ends a probe of a member that is gone.
func (p *prober) stopProbe(pr *probe) {
	pr.cancel()
	p.n.deleteProbeMetrics(pr.pool, pr.route)
}

// fail counts a failure the data plane saw as a failed probe.
func (p *prober) fail(pool, route string, err error) {
	p.mu.Lock()
	pr := p.probes[pool][route]
	p.mu.Unlock()
	if pr == nil {
		return
	}
	select {
	case pr.passive <- err:
	default: // enough failures are queued already
	}
}

func (p *prober) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for name, probes := range p.probes {
		for _, pr := range probes {
			pr.cancel()
		}
		delete(p.probes, name)
	}
}

// run probes one member every interval, starting at an offset derived from
// its name so that a node's probes spread over the interval instead of
// firing together. The node's view flips to down after Fall consecutive
// failures and back up after Rise successes; each flip is submitted as an
// observation, retried until Raft takes it.
func (p *prober) run(ctx context.Context, pr *probe) {
	down, reported := p.lastObserved(pr)
	cause := ""
	changedAt := time.Now()
	var ok, failed int
	h := fnv.New64a()
	io.WriteString(h, pr.pool+"\x00"+pr.route)
	timer := time.NewTimer(time.Duration(h.Sum64() % uint64(pr.spec.Interval)))
	defer timer.Stop()
	for {
		var err error
		select {
		case <-ctx.Done():
			return
		case err = <-pr.passive:
			err = fmt.Errorf("proxy: %w", err)
		case <-timer.C:
			start := time.Now()
			err = p.check(ctx, pr)
			if ctx.Err() == nil {
				pr.metrics.duration.Observe(time.Since(start).Seconds())
			}
			timer.Reset(pr.spec.Interval)
		}
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			pr.metrics.failures.Inc()
		}
		if err == nil {
			ok, failed = ok+1, 0
			if down && ok >= pr.spec.Rise {
				down, cause, changedAt = false, fmt.Sprintf("%d probes ok", ok), time.Now()
			}
		} else {
			ok, failed = 0, failed+1
			if !down && failed >= pr.spec.Fall {
				down, cause, changedAt = true, err.Error(), time.Now()
			}
		}
		if down != reported {
			if p.report(ctx, pr, down, cause, changedAt) {
				reported = down
			}
		}
	}
}

// lastObserved returns what the FSM last recorded from this node about the
// member, so a restarted node reports only real changes. A member never
// observed by this node counts as up and reported. It reads that one
// member's observations (FSM.Member), not the whole state: at 10,000
// members a node starts 10,000 probes.
func (p *prober) lastObserved(pr *probe) (down, reported bool) {
	_, obs, ok := p.n.fsm.Member(pr.pool, pr.route)
	if !ok {
		return false, false
	}
	for _, o := range obs {
		if o.GetNode() == p.n.cfg.Name {
			return o.GetDown(), o.GetDown()
		}
	}
	return false, false
}

// check makes one probe: GET <url><path>, healthy when the status matches.
func (p *prober) check(ctx context.Context, pr *probe) error {
	ctx, cancel := context.WithTimeout(ctx, pr.spec.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, pr.url+pr.spec.Path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "gwelb-probe")
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode != pr.spec.ExpectStatus {
		return fmt.Errorf("probe: status %d, want %d", resp.StatusCode, pr.spec.ExpectStatus)
	}
	return nil
}

// report submits this node's changed view; false means try again later
// (no leader yet, for instance).
func (p *prober) report(ctx context.Context, pr *probe, down bool, cause string, at time.Time) bool {
	obs := &gwelbv1.Observation{Pool: pr.pool, Route: pr.route, Node: p.n.cfg.Name, Down: down, UnixNanos: at.UnixNano(), Cause: cause}
	ctx, cancel := context.WithTimeout(ctx, pr.spec.Interval+p.n.cfg.WriteTimeout)
	defer cancel()
	_, err := p.n.apply(ctx, &gwelbv1.Command{Op: &gwelbv1.Command_Observe{Observe: &gwelbv1.Observe{Observation: obs}}})
	if err != nil {
		p.n.log.Debug("observation not recorded yet", "pool", pr.pool, "route", pr.route, "down", down, "err", err)
		return false
	}
	p.n.log.Info("observed member", "pool", pr.pool, "route", pr.route, "down", down, "cause", cause)
	return true
}

// ObserveFailure counts a request failure the proxy saw (connection refused,
// reset, timeout) as a failed probe of that member; it implements
// proxy.Observer.
func (n *Node) ObserveFailure(pool, route string, err error) {
	if n.prober != nil {
		n.prober.fail(pool, route, err)
	}
}
