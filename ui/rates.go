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

// counters is one reading of this node's counters.
type counters struct {
	at       time.Time
	requests map[memberKey]float64
	errors   map[memberKey]float64 // 5xx answers
	retries  map[memberKey]float64
	repins   map[memberKey]float64 // {pool, cause}
}

// memberRates are one member's rates on this node, per second.
type memberRates struct {
	Requests, Errors, Retries float64
}

// rateTracker turns counter readings into per-second rates over the last
// rateWindow. Renders feed it; it keeps a short history of readings.
type rateTracker struct {
	g prometheus.Gatherer

	mu       sync.Mutex
	readings []counters // oldest first, spanning a little over rateWindow
}

func newRateTracker(g prometheus.Gatherer) *rateTracker { return &rateTracker{g: g} }

// rateView is what a page shows of the metrics.
type rateView struct {
	Members map[memberKey]memberRates
	Repins  map[memberKey]float64 // {pool, cause} -> total since start
	Over    time.Duration         // the span the rates cover; 0 before a second reading
}

// read gathers the counters now and returns rates against the oldest
// reading inside the window; nil without a registry.
func (t *rateTracker) read(now time.Time) *rateView {
	if t == nil || t.g == nil {
		return nil
	}
	cur, err := gather(t.g, now)
	if err != nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	// Keep readings at least 1 s apart and drop those older than the window
	// (keeping one at or beyond it as the base).
	if n := len(t.readings); n == 0 || now.Sub(t.readings[n-1].at) >= time.Second {
		t.readings = append(t.readings, cur)
	}
	for len(t.readings) > 2 && now.Sub(t.readings[1].at) >= rateWindow {
		t.readings = t.readings[1:]
	}
	v := &rateView{Members: map[memberKey]memberRates{}, Repins: cur.repins}
	base := t.readings[0]
	dt := now.Sub(base.at)
	if dt < time.Second {
		for k := range cur.requests {
			v.Members[k] = memberRates{}
		}
		return v
	}
	v.Over = dt
	sec := dt.Seconds()
	rate := func(now, then map[memberKey]float64, k memberKey) float64 {
		d := now[k] - then[k]
		if d < 0 { // a counter reset (a member removed and added again)
			d = now[k]
		}
		return d / sec
	}
	for k := range cur.requests {
		v.Members[k] = memberRates{
			Requests: rate(cur.requests, base.requests, k),
			Errors:   rate(cur.errors, base.errors, k),
			Retries:  rate(cur.retries, base.retries, k),
		}
	}
	for k := range cur.retries {
		if _, ok := v.Members[k]; !ok {
			v.Members[k] = memberRates{Retries: rate(cur.retries, base.retries, k)}
		}
	}
	return v
}

// gather reads the counters the dashboard shows from g.
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
