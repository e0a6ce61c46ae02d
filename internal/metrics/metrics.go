// Package metrics defines every metric gwelb exposes and the Prometheus
// registry the ops listener serves at /metrics (DESIGN.md §8.1).
//
// One Registry per node holds the data plane's instruments (Proxy, used by
// package proxy), the control plane's (Cluster, used by package cluster),
// Go's runtime and process collectors, and a bridge for the go-metrics
// series Raft and memberlist emit. The registry is gwelb's own, never
// prometheus.DefaultRegisterer, so nothing a library registers globally
// leaks into the exposition.
//
// Labels are bounded by the member table: pool and route names, a status
// code out of a fixed set (CodeLabel), a re-pin cause out of three, an
// admin state out of three. No value a client sends ever becomes a label.
package metrics

import (
	"fmt"
	"iter"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	gometrics "github.com/hashicorp/go-metrics/compat"
	gometricsprom "github.com/hashicorp/go-metrics/compat/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Names of gwelb's own series; the README's "Metrics" table documents
// each.
const (
	RequestsTotal            = "gwelb_requests_total"
	UpstreamDurationSeconds  = "gwelb_upstream_duration_seconds"
	RetriesTotal             = "gwelb_retries_total"
	RepinsTotal              = "gwelb_repins_total"
	RefusedBehindTotal       = "gwelb_refused_behind_total"
	Quarantined              = "gwelb_quarantined"
	InFlight                 = "gwelb_inflight"
	WebSockets               = "gwelb_websockets"
	MemberUp                 = "gwelb_member_up"
	MemberAdminState         = "gwelb_member_admin_state"
	ProbeDurationSeconds     = "gwelb_probe_duration_seconds"
	ProbeFailuresTotal       = "gwelb_probe_failures_total"
	RaftLeader               = "gwelb_raft_leader"
	TableIndex               = "gwelb_table_index"
	LastQuorumContactSeconds = "gwelb_last_quorum_contact_seconds"
	LeaderChangesTotal       = "gwelb_leader_changes_total"
	CatchUpRoundsTotal       = "gwelb_catchup_rounds_total"
)

// Re-pin causes: why a request that carried a route was served by another
// member (routing contract rule 6; the label of RepinsTotal).
const (
	// CauseUnknownRoute: no member of the pool has the route (removed, or
	// a route from another cluster or a forged cookie).
	CauseUnknownRoute = "unknown_route"
	// CauseMemberUnusable: the member exists and is not disabled, but its
	// verdict is DOWN, this node quarantined it, or it failed this very
	// request and the retry moved it (rule 8).
	CauseMemberUnusable = "member_unusable"
	// CauseAdminState: the member is disabled.
	CauseAdminState = "admin_state"
)

// RepinCauses lists every value of RepinsTotal's cause label.
var RepinCauses = [...]string{CauseUnknownRoute, CauseMemberUnusable, CauseAdminState}

// Registry is one node's metrics: what /metrics serves.
type Registry struct {
	reg     *prometheus.Registry
	Proxy   *Proxy   // the data plane's instruments
	Cluster *Cluster // the control plane's instruments
}

// New returns a registry with the data and control planes' instruments,
// Go's runtime and process collectors, and the series Raft and memberlist
// emit through go-metrics.
func New() *Registry {
	r := &Registry{reg: prometheus.NewRegistry(), Proxy: NewProxy(), Cluster: NewCluster()}
	r.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		r.Proxy,
		r.Cluster,
		goMetricsSink(),
	)
	return r
}

// Gatherer is the registry, for tests and for anything else that serves it.
func (r *Registry) Gatherer() prometheus.Gatherer { return r.reg }

// Handler serves the registry in the Prometheus text format (or protobuf
// when the scraper asks). A collector that fails does not fail the scrape:
// what could be gathered is served and the error is logged.
func (r *Registry) Handler(log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.Default()
	}
	return promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{
		ErrorLog:            slogPrinter{log},
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4, // a scrape gathers the whole registry; more at once only queue
		Timeout:             10 * time.Second,
	})
}

// slogPrinter turns promhttp's error log into WARN records.
type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Println(v ...any) {
	p.log.Warn("metrics: " + strings.TrimSuffix(fmt.Sprintln(v...), "\n"))
}

// Code labels. A member's requests are counted under a fixed, small set of
// code values, so the series per member stay bounded whatever a member
// answers: the exact code for the ones an operator tells apart (the
// WebSocket upgrade, success, redirects and caching, the balancer's own
// answers 400/404/405/408/431/499/502/503/504, the usual client and server
// errors), else its class "1xx".."5xx", and "other" outside 100..599. A
// query for all server errors is code=~"5.*".
var exactCodes = [...]int{101, 200, 204, 206, 301, 302, 304, 400, 401, 403, 404, 405, 408, 413, 429, 431, 499, 500, 502, 503, 504}

// NumCodes is the number of values of the code label.
const NumCodes = len(exactCodes) + 6

// codeLabels[i] is the label of code index i; codeIndex maps a status to it.
var (
	codeLabels [NumCodes]string
	codeIndex  [600]uint8
)

func init() {
	for i, c := range exactCodes {
		codeLabels[i] = strconv.Itoa(c)
	}
	classes := len(exactCodes)
	for k := range 5 {
		codeLabels[classes+k] = strconv.Itoa(k+1) + "xx"
	}
	codeLabels[NumCodes-1] = "other"
	for c := 100; c < 600; c++ {
		codeIndex[c] = uint8(classes + c/100 - 1)
	}
	for i, c := range exactCodes {
		codeIndex[c] = uint8(i)
	}
}

// CodeIndex maps an HTTP status to the index of its code label, in
// 0..NumCodes-1.
func CodeIndex(status int) int {
	if status < 100 || status >= 600 {
		return NumCodes - 1
	}
	return int(codeIndex[status])
}

// CodeLabel is the code label of index i (see CodeIndex).
func CodeLabel(i int) string { return codeLabels[i] }

// Buckets of the histograms, in seconds. Upstream times reach the CometD
// long poll (GWE holds a connect for up to about 30 s) and
// timeouts.response_header (60 s); probes stop at their timeout (1 s by
// default).
var (
	upstreamBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}
	probeBuckets    = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}
)

// Proxy is the data plane's instruments. Counters are resolved per member
// when a table arrives (package proxy keeps the handles with the member),
// so a request only increments; the gauges are read from the data plane's
// state at scrape time (SetMembers).
type Proxy struct {
	// Requests counts requests a member served (or failed), by the
	// member that served last and the status the client got; route "" is
	// the pool's own 503 when no member was usable (a node behind the
	// cluster counts its refusals in RefusedBehind instead).
	Requests *prometheus.CounterVec
	// UpstreamDuration observes the time from sending a request to its
	// (last) member until that member's response headers, or its failure.
	UpstreamDuration *prometheus.HistogramVec
	// Retries counts requests retried on the fallback after a connection
	// failure of the member named by route (rule 8).
	Retries *prometheus.CounterVec
	// Repins counts requests that carried a route and were served by
	// another member, by cause (RepinCauses).
	Repins *prometheus.CounterVec
	// RefusedBehind counts the 503s of a node that may be behind the
	// cluster (DESIGN.md §6.1), by pool: not a pool without members, a
	// node to look at.
	RefusedBehind *prometheus.CounterVec

	members sync.Mutex // guards seq
	seq     iter.Seq[MemberState]

	quarantined, inflight, websockets *prometheus.Desc
}

// MemberState is the data plane's local state of one member, read at
// scrape time.
type MemberState struct {
	Pool, Route string
	InFlight    int64 // requests and WebSockets in flight through this node
	WebSockets  int64 // WebSockets open through this node
	Quarantined bool  // this node quarantined the member (rule 8)
}

// NewProxy returns the data plane's instruments, registered nowhere: New
// registers its own. A proxy without a registry records into these.
func NewProxy() *Proxy {
	mr := []string{"pool", "route"}
	return &Proxy{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: RequestsTotal,
			Help: "Requests forwarded to a member, by the member that served last and the status the client got (exact for common codes, else the class such as 5xx); route is empty for the pool's own 503 when no member was usable."},
			[]string{"pool", "route", "code"}),
		UpstreamDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: UpstreamDurationSeconds,
			Help:    "Seconds from sending a request to its member until the member's response headers (or its failure); after a retry, the fallback's time.",
			Buckets: upstreamBuckets}, mr),
		Retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: RetriesTotal,
			Help: "Requests retried on the fallback member because the member named by route refused, reset or did not accept the connection (routing contract rule 8)."}, mr),
		Repins: prometheus.NewCounterVec(prometheus.CounterOpts{Name: RepinsTotal,
			Help: "Requests that carried a route and were served by another member (their session moves), by cause: unknown_route, member_unusable (verdict down, quarantined, or failed and retried), admin_state (disabled)."},
			[]string{"pool", "cause"}),
		RefusedBehind: prometheus.NewCounterVec(prometheus.CounterOpts{Name: RefusedBehindTotal,
			Help: "Requests answered 503 (Retry-After, cookie kept) because this node may be behind the cluster: the route they carried is unknown or disabled on its table, and it could not catch up (DESIGN.md §6.1)."},
			[]string{"pool"}),
		quarantined: prometheus.NewDesc(Quarantined, "1 while this node quarantines the member after a connection failure (fail_timeout), else 0.", mr, nil),
		inflight:    prometheus.NewDesc(InFlight, "Requests (WebSockets included) in flight to the member through this node.", mr, nil),
		websockets:  prometheus.NewDesc(WebSockets, "WebSockets open to the member through this node.", mr, nil),
	}
}

// SetMembers installs the source of the per-member gauges; each scrape
// iterates it once. The proxy sets it when it starts.
func (p *Proxy) SetMembers(seq iter.Seq[MemberState]) {
	p.members.Lock()
	p.seq = seq
	p.members.Unlock()
}

// Describe implements prometheus.Collector.
func (p *Proxy) Describe(ch chan<- *prometheus.Desc) {
	p.Requests.Describe(ch)
	p.UpstreamDuration.Describe(ch)
	p.Retries.Describe(ch)
	p.Repins.Describe(ch)
	p.RefusedBehind.Describe(ch)
	ch <- p.quarantined
	ch <- p.inflight
	ch <- p.websockets
}

// Collect implements prometheus.Collector.
func (p *Proxy) Collect(ch chan<- prometheus.Metric) {
	p.Requests.Collect(ch)
	p.UpstreamDuration.Collect(ch)
	p.Retries.Collect(ch)
	p.Repins.Collect(ch)
	p.RefusedBehind.Collect(ch)
	p.members.Lock()
	seq := p.seq
	p.members.Unlock()
	if seq == nil {
		return
	}
	for m := range seq {
		ch <- prometheus.MustNewConstMetric(p.quarantined, prometheus.GaugeValue, b2f(m.Quarantined), m.Pool, m.Route)
		ch <- prometheus.MustNewConstMetric(p.inflight, prometheus.GaugeValue, float64(m.InFlight), m.Pool, m.Route)
		ch <- prometheus.MustNewConstMetric(p.websockets, prometheus.GaugeValue, float64(m.WebSockets), m.Pool, m.Route)
	}
}

// Cluster is the control plane's instruments. Probe series are resolved
// per probe (one goroutine per member); the table- and Raft-derived gauges
// are read at scrape time (SetState).
type Cluster struct {
	// ProbeDuration observes each active health probe of a member from
	// this node, failed ones included.
	ProbeDuration *prometheus.HistogramVec
	// ProbeFailures counts failed active probes and connection failures
	// the data plane reported (both count against the member, §5.5).
	ProbeFailures *prometheus.CounterVec
	// LeaderChanges counts changes of the leader this node knows,
	// including to "no leader".
	LeaderChanges prometheus.Counter
	// CatchUpRounds counts the catch-up rounds this node began after it
	// started: its table went without news from the leader's log for the
	// staleness bound, or the node did not run for that long.
	CatchUpRounds prometheus.Counter

	state sync.Mutex // guards src
	src   func() ClusterState

	memberUp, adminState, raftLeader, tableIndex, lastContact *prometheus.Desc
}

// ClusterState is what the control plane reports at scrape time.
type ClusterState struct {
	Leader bool // this node is the Raft leader
	// TableIndex is the Raft index of the table this node applied.
	TableIndex uint64
	// LastQuorumContact is how long ago this node heard from a quorum (0
	// on the leader; < 0 when never).
	LastQuorumContact time.Duration
	// Members is the applied table's members with the cluster's verdict.
	Members iter.Seq[ClusterMember]
}

// ClusterMember is one member of the applied table.
type ClusterMember struct {
	Pool, Route string
	Up          bool   // the cluster's verdict
	State       string // admin state: one of AdminStates
}

// AdminStates lists every value of MemberAdminState's state label.
var AdminStates = [...]string{"active", "drain", "disabled"}

// NewCluster returns the control plane's instruments, registered nowhere:
// New registers its own. A node without a registry records into these.
func NewCluster() *Cluster {
	mr := []string{"pool", "route"}
	return &Cluster{
		ProbeDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: ProbeDurationSeconds,
			Help:    "Seconds each active health probe of the member from this node took, failed ones included.",
			Buckets: probeBuckets}, mr),
		ProbeFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ProbeFailuresTotal,
			Help: "Failed health probes of the member from this node: active probes, and connection failures the data plane reported (they count as failed probes)."}, mr),
		LeaderChanges: prometheus.NewCounter(prometheus.CounterOpts{Name: LeaderChangesTotal,
			Help: "Changes of the Raft leader this node has seen, a change to no leader included."}),
		CatchUpRounds: prometheus.NewCounter(prometheus.CounterOpts{Name: CatchUpRoundsTotal,
			Help: "Catch-up rounds this node began after it started: its table went without news from the leader's log for 2 x heartbeat_timeout, or the node did not run for that long (DESIGN.md section 6.1)."}),
		memberUp:    prometheus.NewDesc(MemberUp, "The cluster's verdict on the member (a majority of balancer nodes decides): 1 up, 0 down.", mr, nil),
		adminState:  prometheus.NewDesc(MemberAdminState, "1 for the member's admin state (active, drain, disabled), 0 for the others.", []string{"pool", "route", "state"}, nil),
		raftLeader:  prometheus.NewDesc(RaftLeader, "1 on the Raft leader, 0 on other nodes.", nil, nil),
		tableIndex:  prometheus.NewDesc(TableIndex, "Raft index of the routing table this node applied.", nil, nil),
		lastContact: prometheus.NewDesc(LastQuorumContactSeconds, "Seconds since this node last heard from a Raft quorum (the leader); 0 on the leader, +Inf before any contact.", nil, nil),
	}
}

// SetState installs the source of the table- and Raft-derived gauges; the
// node sets it when it starts.
func (c *Cluster) SetState(src func() ClusterState) {
	c.state.Lock()
	c.src = src
	c.state.Unlock()
}

// Describe implements prometheus.Collector.
func (c *Cluster) Describe(ch chan<- *prometheus.Desc) {
	c.ProbeDuration.Describe(ch)
	c.ProbeFailures.Describe(ch)
	c.LeaderChanges.Describe(ch)
	c.CatchUpRounds.Describe(ch)
	for _, d := range []*prometheus.Desc{c.memberUp, c.adminState, c.raftLeader, c.tableIndex, c.lastContact} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Cluster) Collect(ch chan<- prometheus.Metric) {
	c.ProbeDuration.Collect(ch)
	c.ProbeFailures.Collect(ch)
	c.LeaderChanges.Collect(ch)
	c.CatchUpRounds.Collect(ch)
	c.state.Lock()
	src := c.src
	c.state.Unlock()
	if src == nil {
		return
	}
	st := src()
	ch <- prometheus.MustNewConstMetric(c.raftLeader, prometheus.GaugeValue, b2f(st.Leader))
	ch <- prometheus.MustNewConstMetric(c.tableIndex, prometheus.GaugeValue, float64(st.TableIndex))
	contact := st.LastQuorumContact.Seconds()
	if st.LastQuorumContact < 0 {
		contact = math.Inf(1)
	}
	ch <- prometheus.MustNewConstMetric(c.lastContact, prometheus.GaugeValue, contact)
	if st.Members == nil {
		return
	}
	for m := range st.Members {
		ch <- prometheus.MustNewConstMetric(c.memberUp, prometheus.GaugeValue, b2f(m.Up), m.Pool, m.Route)
		for _, s := range AdminStates {
			ch <- prometheus.MustNewConstMetric(c.adminState, prometheus.GaugeValue, b2f(m.State == s), m.Pool, m.Route, s)
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// The go-metrics bridge. hashicorp/raft v1.7.3 and memberlist v0.6.0 emit
// through github.com/hashicorp/go-metrics/compat, which forwards to
// github.com/armon/go-metrics unless built with the hashicorpmetrics tag;
// the compat packages used here follow the same tag, so the sink sits
// wherever those libraries really emit. go-metrics has one global sink per
// process: it is installed once, and every Registry of the process (one in
// the daemon; several when tests run nodes in one process) serves it.
var (
	sinkOnce sync.Once
	sink     prometheus.Collector
)

func goMetricsSink() prometheus.Collector {
	sinkOnce.Do(func() {
		// The sink registers itself; a throwaway registry keeps it out of
		// prometheus.DefaultRegisterer. Series never expire: a counter
		// that vanished after a quiet minute would come back from zero
		// and hide its increase (gauges Raft sets in one role only keep
		// their last value: gwelb_raft_leader says the role).
		s, err := gometricsprom.NewPrometheusSinkFrom(gometricsprom.PrometheusOpts{
			Name:       "gwelb_gometrics_bridge",
			Registerer: prometheus.NewRegistry(),
		})
		if err != nil {
			panic("metrics: go-metrics sink: " + err.Error()) // a fresh registry cannot refuse it
		}
		cfg := gometrics.DefaultConfig("") // series keep raft_…, memberlist_… names
		cfg.EnableHostname = false         // no host name in the series names
		cfg.EnableRuntimeMetrics = false   // the Go collector reports the runtime
		// Raft times every heartbeat to every follower, twice (a series
		// per peer and a labelled one): at 49 followers that was a tenth
		// of an idle leader's CPU (DESIGN.md §8.1). Replication latency
		// per follower stays in raft_replication_appendEntries_rpc.
		cfg.BlockedPrefixes = []string{"raft.replication.heartbeat"}
		if _, err := gometrics.NewGlobal(cfg, s); err != nil {
			panic("metrics: go-metrics global: " + err.Error())
		}
		sink = s
	})
	return sink
}
