package ui

import (
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/gwelb/gwelb/internal/metrics"
)

// The metric families the dashboard reads from this node's registry.
const (
	metricRequests = metrics.RequestsTotal // {pool, route, code}
	metricRetries  = metrics.RetriesTotal  // {pool, route}
	metricRepins   = metrics.RepinsTotal   // {pool, cause}
)

// rateWindow is the span rates are computed over: long enough to smooth a
// 2 s refresh, short enough to show a burst of errors within seconds.
const rateWindow = 10 * time.Second

// memberKey names a member.
type memberKey struct{ pool, route string }

// counters is one reading of this node's re-pin counters.
type counters struct {
	at       time.Time
	requests map[memberKey]float64
	errors   map[memberKey]float64 // 5xx answers
	retries  map[memberKey]float64
	repins   map[memberKey]float64 // {pool, cause}
}

// memberRates are one member's rates, per second (or, in nodeCounts, its
// cumulative counts).
type memberRates struct {
	Requests, Errors, Retries float64
}

// nodeCounts are the cumulative counters each node reported in its Status
// (MemberStatus.counters): node -> member -> counts.
type nodeCounts map[string]map[memberKey]memberRates

// countsOf reads every answering node's counters from a snapshot; nodes
// that report none are left out.
func countsOf(sn *snapshot) nodeCounts {
	out := nodeCounts{}
	for _, n := range sn.Nodes {
		if n.Status == nil {
			continue
		}
		for _, ps := range n.Status.GetPools() {
			for _, ms := range ps.GetMembers() {
				c := ms.GetCounters()
				if c == nil {
					continue
				}
				m := out[n.Name]
				if m == nil {
					m = map[memberKey]memberRates{}
					out[n.Name] = m
				}
				m[memberKey{ms.GetMember().GetPool(), ms.GetMember().GetRoute()}] = memberRates{
					Requests: float64(c.GetRequests()), Errors: float64(c.GetServerErrors()), Retries: float64(c.GetRetries()),
				}
			}
		}
	}
	return out
}

// rateTracker turns the cluster's counter readings into per-second rates
// over the last rateWindow. Renders feed it; it keeps a short history of
// readings. Rates are computed per node, from that node's own deltas, and
// summed: a node that stops answering drops out of the sum instead of
// looking like a counter reset.
type rateTracker struct {
	g prometheus.Gatherer // this node's registry, for re-pins; may be nil

	mu       sync.Mutex
	readings []reading // oldest first, spanning a little over rateWindow
}

type reading struct {
	at    time.Time
	nodes nodeCounts
}

func newRateTracker(g prometheus.Gatherer) *rateTracker { return &rateTracker{g: g} }

// rateView is what a page shows of the metrics.
type rateView struct {
	Members map[memberKey]memberRates            // summed over the nodes
	PerNode map[string]map[memberKey]memberRates // each node's share
	Repins  map[memberKey]float64                // {pool, cause} -> this node's total since start
	Over    time.Duration                        // the span the rates cover; 0 before a second reading
}

// read takes the counters every node reported (cur) at now and returns
// rates against each node's oldest reading inside the window; nil when no
// node reports counters and there is no registry.
func (t *rateTracker) read(now time.Time, cur nodeCounts) *rateView {
	if t == nil || (t.g == nil && len(cur) == 0) {
		return nil
	}
	v := &rateView{Members: map[memberKey]memberRates{}, PerNode: map[string]map[memberKey]memberRates{}}
	if t.g != nil {
		if c, err := gather(t.g, now); err == nil {
			v.Repins = c.repins
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	// Keep readings at least 1 s apart and drop those older than the window
	// (keeping one at or beyond it as the base).
	if n := len(t.readings); n == 0 || now.Sub(t.readings[n-1].at) >= time.Second {
		t.readings = append(t.readings, reading{at: now, nodes: cur})
	}
	for len(t.readings) > 2 && now.Sub(t.readings[1].at) >= rateWindow {
		t.readings = t.readings[1:]
	}
	for node, members := range cur {
		var base map[memberKey]memberRates
		var dt time.Duration
		for _, r := range t.readings {
			if b, ok := r.nodes[node]; ok {
				base, dt = b, now.Sub(r.at)
				break
			}
		}
		per := map[memberKey]memberRates{}
		v.PerNode[node] = per
		for k, c := range members {
			var r memberRates
			if dt >= time.Second {
				sec := dt.Seconds()
				b := base[k]
				rate := func(now, then float64) float64 {
					d := now - then
					if d < 0 { // a counter reset (a member removed and added again, a node restarted)
						d = now
					}
					return d / sec
				}
				r = memberRates{Requests: rate(c.Requests, b.Requests), Errors: rate(c.Errors, b.Errors), Retries: rate(c.Retries, b.Retries)}
				v.Over = max(v.Over, dt)
			}
			per[k] = r
			sum := v.Members[k]
			sum.Requests += r.Requests
			sum.Errors += r.Errors
			sum.Retries += r.Retries
			v.Members[k] = sum
		}
	}
	return v
}

// gather reads this node's counters from g (the dashboard shows its
// re-pins).
func gather(g prometheus.Gatherer, now time.Time) (counters, error) {
	c := counters{at: now, requests: map[memberKey]float64{}, errors: map[memberKey]float64{},
		retries: map[memberKey]float64{}, repins: map[memberKey]float64{}}
	mfs, err := g.Gather()
	if err != nil && len(mfs) == 0 {
		return c, err
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case metricRequests, metricRetries, metricRepins:
		default:
			continue
		}
		for _, m := range mf.GetMetric() {
			v := m.GetCounter().GetValue()
			l := labels(m)
			switch mf.GetName() {
			case metricRequests:
				k := memberKey{l["pool"], l["route"]}
				c.requests[k] += v
				if strings.HasPrefix(l["code"], "5") {
					c.errors[k] += v
				}
			case metricRetries:
				c.retries[memberKey{l["pool"], l["route"]}] += v
			case metricRepins:
				c.repins[memberKey{l["pool"], l["cause"]}] += v
			}
		}
	}
	return c, nil
}

func labels(m *dto.Metric) map[string]string {
	out := make(map[string]string, len(m.GetLabel()))
	for _, lp := range m.GetLabel() {
		out[lp.GetName()] = lp.GetValue()
	}
	return out
}
