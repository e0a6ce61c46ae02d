package proxy

import (
	"iter"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/gwelb/gwelb/fsm"
	"github.com/gwelb/gwelb/internal/metrics"
)

// The data plane's metrics (DESIGN.md §8.1). A request only increments
// handles resolved before it started: Update resolves each member's
// series when a table arrives and keeps them with the member, swapped in
// with the view, so recording allocates nothing and takes no lock. The
// per-member gauges (in flight, WebSockets, quarantine) are not recorded
// at all: the registry reads them from the current view at scrape time.

// memberMetrics are one member's series, kept per pool and route across
// table updates (a member whose URL changes keeps counting on them) and
// deleted when the route leaves the table.
type memberMetrics struct {
	m           *metrics.Proxy
	pool, route string
	retries     prometheus.Counter
	duration    prometheus.Observer
	// codes are resolved on a code's first use, so a member has series
	// only for the codes it answered (at most metrics.NumCodes).
	codes [metrics.NumCodes]atomic.Pointer[prometheus.Counter]

	mu      sync.Mutex // orders resolving a code with remove
	removed bool
}

func newMemberMetrics(m *metrics.Proxy, pool, route string) *memberMetrics {
	return &memberMetrics{
		m: m, pool: pool, route: route,
		retries:  m.Retries.WithLabelValues(pool, route),
		duration: m.UpstreamDuration.WithLabelValues(pool, route),
	}
}

// code returns the requests counter of status.
func (mm *memberMetrics) code(status int) prometheus.Counter {
	i := metrics.CodeIndex(status)
	if c := mm.codes[i].Load(); c != nil {
		return *c
	}
	return mm.resolve(i)
}

func (mm *memberMetrics) resolve(i int) prometheus.Counter {
	mm.mu.Lock()
	defer mm.mu.Unlock()
	if c := mm.codes[i].Load(); c != nil {
		return *c
	}
	if mm.removed {
		// A request routed by an older view ended after its member
		// left the table: creating the series again would keep a
		// removed member's series forever.
		return discarded
	}
	c := mm.m.Requests.WithLabelValues(mm.pool, mm.route, metrics.CodeLabel(i))
	mm.codes[i].Store(&c)
	return c
}

// remove deletes the member's series.
func (mm *memberMetrics) remove() {
	mm.mu.Lock()
	defer mm.mu.Unlock()
	mm.removed = true
	mm.m.Requests.DeletePartialMatch(prometheus.Labels{"pool": mm.pool, "route": mm.route})
	mm.m.Retries.DeleteLabelValues(mm.pool, mm.route)
	mm.m.UpstreamDuration.DeleteLabelValues(mm.pool, mm.route)
}

// MemberCounters returns this node's cumulative counts of member route of
// pool: requests answered, of them 5xx, and retries, read from the
// member's series (zero when the current view has no such member). The
// cluster's Status reports them (cluster.Config.Counters, passed this
// method like InFlight) so a dashboard computes cluster-wide rates.
func (s *Server) MemberCounters(pool, route string) (requests, errors5xx, retries uint64) {
	v := s.view.Load()
	if v == nil {
		return 0, 0, 0
	}
	for _, pv := range v.pools {
		if pv.spec.Name != pool {
			continue
		}
		i, ok := pv.pool.Lookup(route)
		if !ok {
			return 0, 0, 0
		}
		mm := pv.members[i].metrics
		for c := range mm.codes {
			p := mm.codes[c].Load()
			if p == nil {
				continue
			}
			n := counterValue(*p)
			requests += n
			if l := metrics.CodeLabel(c); len(l) > 0 && l[0] == '5' {
				errors5xx += n
			}
		}
		return requests, errors5xx, counterValue(mm.retries)
	}
	return 0, 0, 0
}

func counterValue(c prometheus.Counter) uint64 {
	var m dto.Metric
	if c.Write(&m) != nil {
		return 0
	}
	return uint64(m.GetCounter().GetValue())
}

// discarded counts what no series should keep.
var discarded = prometheus.NewCounter(prometheus.CounterOpts{Name: "gwelb_discarded", Help: "not exported"})

// poolMetrics are one pool's series.
type poolMetrics struct {
	repins   [len(metrics.RepinCauses)]prometheus.Counter
	noMember prometheus.Counter // the pool's own 503: no usable member
	behind   prometheus.Counter // 503: this node may be behind the cluster
}

func newPoolMetrics(m *metrics.Proxy, pool string) *poolMetrics {
	pm := &poolMetrics{noMember: m.Requests.WithLabelValues(pool, "", "503"), behind: m.RefusedBehind.WithLabelValues(pool)}
	for i, cause := range metrics.RepinCauses {
		pm.repins[i] = m.Repins.WithLabelValues(pool, cause)
	}
	return pm
}

// Indexes of poolMetrics.repins, in metrics.RepinCauses order.
const (
	repinUnknownRoute = iota
	repinMemberUnusable
	repinAdminState
)

// initMetrics makes the server record into m (its own unregistered
// instruments when nil) and report its members' gauges from the current view.
func (s *Server) initMetrics(m *metrics.Proxy) {
	if m == nil {
		m = metrics.NewProxy()
	}
	s.metrics = m
	s.memberMetrics = map[string]*memberMetrics{}
	s.poolMetrics = map[string]*poolMetrics{}
	m.SetMembers(s.memberGauges)
}

// memberMetricsFor returns the series of member route of pool, creating
// them on the member's first table. Called with s.mu held.
func (s *Server) memberMetricsFor(pool, route string) *memberMetrics {
	key := pool + "\x00" + route
	mm := s.memberMetrics[key]
	if mm == nil {
		mm = newMemberMetrics(s.metrics, pool, route)
		s.memberMetrics[key] = mm
	}
	return mm
}

// poolMetricsFor returns the series of pool. Called with s.mu held.
func (s *Server) poolMetricsFor(pool string) *poolMetrics {
	pm := s.poolMetrics[pool]
	if pm == nil {
		pm = newPoolMetrics(s.metrics, pool)
		s.poolMetrics[pool] = pm
	}
	return pm
}

// pruneMetrics deletes the series of members and pools t no longer has, so
// the exposition follows the member table. Called with s.mu held.
func (s *Server) pruneMetrics(t *fsm.Table) {
	for key, mm := range s.memberMetrics {
		if p := t.Pool(mm.pool); p != nil {
			if _, ok := p.Lookup(mm.route); ok {
				continue
			}
		}
		mm.remove()
		delete(s.memberMetrics, key)
	}
	for name := range s.poolMetrics {
		if t.Pool(name) == nil {
			s.metrics.Repins.DeletePartialMatch(prometheus.Labels{"pool": name})
			s.metrics.Requests.DeletePartialMatch(prometheus.Labels{"pool": name})
			s.metrics.RefusedBehind.DeleteLabelValues(name)
			delete(s.poolMetrics, name)
		}
	}
}

// memberGauges yields every member of the current view with this node's
// local state of it, for the scrape.
func (s *Server) memberGauges(yield func(metrics.MemberState) bool) {
	v := s.view.Load()
	if v == nil {
		return
	}
	now := time.Now().UnixNano()
	for _, pv := range v.pools {
		for _, ms := range pv.members {
			if !yield(metrics.MemberState{
				Pool: pv.spec.Name, Route: ms.route,
				InFlight: ms.inflight.Load(), WebSockets: ms.websockets.Load(),
				Quarantined: ms.quarantined(now),
			}) {
				return
			}
		}
	}
}

var _ iter.Seq[metrics.MemberState] = (*Server)(nil).memberGauges

// websocketOpened counts a WebSocket the member accepted (101); record
// uncounts it when the tunnel closes, which ends the request.
func (s *Server) websocketOpened(st *reqState) {
	st.websocket = true
	st.pv.members[st.member].websockets.Add(1)
}

// record counts a finished request: its code and upstream time on the
// member that served it last, and a re-pin by cause. It allocates nothing.
func (s *Server) record(st *reqState, answered int) {
	pv := st.pv
	if pv == nil {
		return // answered before a pool was chosen (404, 400, 405)
	}
	if st.member < 0 {
		if st.behind {
			pv.metrics.behind.Inc()
		} else {
			pv.metrics.noMember.Inc()
		}
		return
	}
	ms := pv.members[st.member]
	if st.websocket {
		ms.websockets.Add(-1)
	}
	status := answered
	if status == 0 {
		status = st.status
	}
	mm := ms.metrics
	mm.code(status).Inc()
	if st.status != 0 || status == http.StatusBadGateway || status == http.StatusGatewayTimeout {
		mm.duration.Observe(st.upstreamTime.Seconds())
	}
	if st.carried != "" && ms.route != st.carried {
		pv.metrics.repins[repinCause(pv.pool, st.carried)].Inc()
	}
}

// repinCause says why a request that carried route was served by another
// member: the route is unknown, the member disabled, or else unusable
// (verdict DOWN, quarantined here, or it failed this request, rule 8).
func repinCause(p *fsm.Pool, route string) int {
	i, ok := p.Lookup(route)
	switch {
	case !ok:
		return repinUnknownRoute
	case p.Member(i).State == fsm.Disabled:
		return repinAdminState
	default:
		return repinMemberUnusable
	}
}
