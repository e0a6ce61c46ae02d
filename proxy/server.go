// Package proxy is gwelb's data plane: it reads sticky values, chooses a
// member from the current *fsm.Table, forwards HTTP and WebSocket traffic,
// inserts the route cookie and turns connection failures into local
// quarantine and health observations.
package proxy

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gwelb/gwelb/fsm"
	"github.com/gwelb/gwelb/internal/metrics"
)

// Observer receives the proxy's passive health signals. The health prober
// turns them into observations; until then a no-op sink will do.
type Observer interface {
	// ObserveFailure reports that a request to member route of pool failed
	// before any response byte (connection refused, reset, timeout).
	ObserveFailure(pool, route string, err error)
}

// NopObserver discards observations.
type NopObserver struct{}

// ObserveFailure does nothing.
func (NopObserver) ObserveFailure(string, string, error) {}

// Freshness tells the data plane whether its table may be behind the
// cluster's (a node that restarted, or lost touch with the leader). The
// proxy asks only before it would move a session (the member it picked is
// not the one the request's route names): a table that may be stale must
// not move a visitor whose member was added or enabled meanwhile.
type Freshness interface {
	// Fresh reports whether a request that started at now (unix
	// nanoseconds) may trust the table. It must be cheap (an atomic load):
	// a healthy node pays nothing more.
	Fresh(now int64) bool
	// AwaitFresh returns once the table has caught up, or once the node's
	// bound on waiting has passed (a node cut off from its peers still
	// serves), or when ctx ends.
	AwaitFresh(ctx context.Context)
	// MayMove reports, after AwaitFresh, whether a request at now (unix
	// nanoseconds) may move a session whose route the table does not
	// know or knows as disabled: when the table is fresh, or once the node
	// has been behind for so long that it routes on what it has
	// (DESIGN.md §6.1). It may take a lock.
	MayMove(now int64) bool
}

// Options configure a Server; the zero value of each field picks the default.
type Options struct {
	ConnectTimeout        time.Duration // dial timeout to a member; default 5 s (the guide's proxy_connect_timeout)
	ResponseHeaderTimeout time.Duration // wait for a member's response headers; default 60 s, < 0 disables
	RetryBodyBytes        int64         // request body bytes kept for the one retry; default 1 MiB, < 0 disables body retries
	RetryBufferTotal      int64         // body bytes all requests together keep for retries; default 64 MiB
	BodyReadTimeout       time.Duration // time a request body may keep the proxy waiting (then 408); default 20 s, < 0 disables
	BodyMinRate           int64         // body bytes per second, each BodyMinRate extending BodyReadTimeout by 1 s; default 500, < 0 disables
	UpstreamTLS           *tls.Config   // for https members; nil uses the system roots
	AccessLog             io.Writer     // one line per request; nil disables
	Observer              Observer      // passive health sink; nil discards
	Logger                *slog.Logger  // error log; nil uses slog.Default()
	// AccessLogFormat is the access log's line format: combined (the
	// default) or JSON lines (config access_log_format).
	AccessLogFormat AccessLogFormat
	// NodeName is this node's name, on every access log line.
	NodeName string
	// Metrics receives the data plane's series (metrics.Registry.Proxy);
	// nil records into instruments no registry serves.
	Metrics *metrics.Proxy
}

// Server routes requests to pool members by the current Table.
type Server struct {
	opts      Options
	log       *slog.Logger
	dialer    *net.Dialer
	ctx       context.Context // what freshness waits are bound by
	accessLog *accessLogger

	retryBudget *retryBudget // limits.retry_buffer_total

	view      atomic.Pointer[view]
	observer  atomic.Pointer[Observer]
	freshness atomic.Pointer[Freshness] // nil: the table is always trusted
	tunnels   tunnelSet                 // open WebSocket tunnels, closed with 1001 on shutdown (websocket.go)

	mu      sync.Mutex              // guards members and rr across Updates
	members map[string]*memberState // by pool, route and URL
	rr      map[string]*atomic.Uint64

	// The series requests record into, resolved per member and pool by
	// Update (metrics.go); guarded by mu.
	metrics       *metrics.Proxy
	memberMetrics map[string]*memberMetrics // by pool and route
	poolMetrics   map[string]*poolMetrics   // by pool
}

// New returns a Server that answers 503 until the first Update.
func New(opts Options) *Server {
	if opts.ConnectTimeout == 0 {
		opts.ConnectTimeout = 5 * time.Second
	}
	if opts.ResponseHeaderTimeout == 0 {
		opts.ResponseHeaderTimeout = 60 * time.Second
	} else if opts.ResponseHeaderTimeout < 0 {
		opts.ResponseHeaderTimeout = 0
	}
	if opts.RetryBodyBytes == 0 {
		opts.RetryBodyBytes = DefaultRetryBodyBytes
	}
	if opts.RetryBufferTotal <= 0 {
		opts.RetryBufferTotal = DefaultRetryBufferTotal
	}
	switch {
	case opts.BodyReadTimeout == 0:
		opts.BodyReadTimeout = 20 * time.Second
	case opts.BodyReadTimeout < 0:
		opts.BodyReadTimeout = 0
	}
	switch {
	case opts.BodyMinRate == 0:
		opts.BodyMinRate = 500
	case opts.BodyMinRate < 0:
		opts.BodyMinRate = 0
	}
	if opts.Observer == nil {
		opts.Observer = NopObserver{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Server{
		opts:    opts,
		log:     opts.Logger,
		members: map[string]*memberState{},
		rr:      map[string]*atomic.Uint64{},

		retryBudget: &retryBudget{limit: opts.RetryBufferTotal},
	}
	s.SetObserver(opts.Observer)
	s.initMetrics(opts.Metrics)
	s.accessLog = newAccessLogger(opts.AccessLog, opts.AccessLogFormat, opts.NodeName)
	s.dialer = &net.Dialer{Timeout: opts.ConnectTimeout, KeepAlive: 30 * time.Second}
	s.ctx = context.Background()
	return s
}

// SetObserver replaces the passive health sink; the daemon sets it once
// the control plane, which is created after the proxy, is up.
func (s *Server) SetObserver(o Observer) { s.observer.Store(&o) }

// SetFreshness makes the proxy hold a request that would move a session
// while f says the table may be stale; the daemon sets it once the control
// plane is up.
func (s *Server) SetFreshness(f Freshness) { s.freshness.Store(&f) }

// awaitFresh waits, if the table may be stale at start, until f says it is
// fresh or waiting is over; it reports whether it asked f to wait.
func (s *Server) awaitFresh(ctx context.Context, start time.Time) bool {
	f := s.freshness.Load()
	if f == nil || (*f).Fresh(start.UnixNano()) {
		return false
	}
	(*f).AwaitFresh(ctx)
	return true
}

// refuseStaleMove reports whether a request that waited for a catch-up
// must not be moved after all: the node is still behind, and the route it
// carries is unknown to this table or disabled in it, so the operator may
// have added or enabled that member meanwhile and a move would cost the
// visitor their session (DESIGN.md §6.1, invariant 1). A member whose
// verdict is DOWN, or that this node quarantined, still fails over: that
// is news about the member, not about the table.
func (s *Server) refuseStaleMove(pv *poolView, route string) bool {
	f := s.freshness.Load()
	if f == nil || (*f).MayMove(time.Now().UnixNano()) {
		return false
	}
	i, ok := pv.pool.Lookup(route)
	return !ok || pv.pool.Member(i).State == fsm.Disabled
}

// Update makes t the table every new request is routed by. Per-member local
// state (quarantine, requests in flight) survives updates that keep the
// member's pool, route and URL.
func (s *Server) Update(t *fsm.Table) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v := s.carriedOver(t); v != nil {
		s.view.Store(v)
		return
	}
	v := &view{table: t}
	seen := map[string]bool{}
	for _, p := range t.Pools() {
		spec := p.Spec()
		rr := s.rr[spec.Name]
		if rr == nil {
			rr = new(atomic.Uint64)
			s.rr[spec.Name] = rr
		}
		pv := &poolView{pool: p, spec: spec, rr: rr, metrics: s.poolMetricsFor(spec.Name)}
		for i := range p.Len() {
			m := p.Member(i)
			key := spec.Name + "\x00" + m.Route + "\x00" + m.URL
			ms := s.members[key]
			if ms == nil {
				ms = newMemberState(m.Route, m.Target.Scheme, m.Target.Host, s.memberMetricsFor(spec.Name, m.Route))
				s.members[key] = ms
			}
			seen[key] = true
			pv.members = append(pv.members, ms)
			pv.cookies = append(pv.cookies, setCookie(spec.Sticky.Cookie, m.Route, spec.Cookie))
		}
		v.pools = append(v.pools, pv)
	}
	for key, ms := range s.members {
		if !seen[key] {
			ms.pool.close(true) // requests in flight to it finish on their own connections
			delete(s.members, key)
		}
	}
	s.pruneMetrics(t)
	s.view.Store(v)
}

// carriedOver returns the view of t built from the current view when every
// pool of t is a pool of it or a version with the same layout (the FSM
// changed admin states or verdicts only, fsm.Pool.SameLayout): member
// states, cookies and metrics are kept by index, so a change costs the
// number of pools, not of members (DESIGN.md §5.2). Otherwise nil: members
// came, went or moved, and Update builds the view afresh. Called with s.mu
// held.
func (s *Server) carriedOver(t *fsm.Table) *view {
	old := s.view.Load()
	if old == nil || len(old.pools) != len(t.Pools()) {
		return nil
	}
	v := &view{table: t, pools: make([]*poolView, len(t.Pools()))}
	for i, p := range t.Pools() {
		var pv *poolView
		for _, o := range old.pools {
			if o.spec.Name == p.Name() {
				pv = o
				break
			}
		}
		switch {
		case pv == nil || !p.SameLayout(pv.pool):
			return nil
		case pv.pool != p:
			c := *pv
			c.pool = p
			pv = &c
		}
		v.pools[i] = pv
	}
	return v
}

// Table returns the table requests are routed by, or nil before the first Update.
func (s *Server) Table() *fsm.Table {
	if v := s.view.Load(); v != nil {
		return v.table
	}
	return nil
}

// Close drops idle upstream connections.
func (s *Server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ms := range s.members {
		ms.pool.close(false)
	}
}

// InFlight returns the requests (and open WebSockets) in flight to member
// route of pool through this node.
func (s *Server) InFlight(pool, route string) int64 {
	v := s.view.Load()
	if v == nil {
		return 0
	}
	for _, pv := range v.pools {
		if pv.spec.Name != pool {
			continue
		}
		if i, ok := pv.pool.Lookup(route); ok {
			return pv.members[i].inflight.Load()
		}
	}
	return 0
}

// view is what one request sees: a Table and this node's state for its members.
type view struct {
	table *fsm.Table
	pools []*poolView // parallel to table.Pools()
}

// match returns the pool serving path, or nil.
func (v *view) match(path string) *poolView {
	p := v.table.Match(path)
	if p == nil {
		return nil
	}
	for _, pv := range v.pools {
		if pv.pool == p {
			return pv
		}
	}
	return nil
}

type poolView struct {
	pool    *fsm.Pool
	spec    fsm.PoolSpec
	rr      *atomic.Uint64
	members []*memberState // parallel to pool.Members()
	cookies []string       // Set-Cookie value per member, built once per Update
	metrics *poolMetrics   // the pool's series (metrics.go)
}

// pick chooses a member index for a request, honouring local quarantine.
func (pv *poolView) pick(value, route string, now int64) int {
	return pv.pool.Pick(value, route, pv.rr.Add(1)-1, func(i int) bool {
		return pv.members[i].quarantined(now)
	})
}

// pickExcept is pick for a retry: member except, which just failed, is
// skipped whether or not it is quarantined.
func (pv *poolView) pickExcept(value, route string, now int64, except int) int {
	return pv.pool.Pick(value, route, pv.rr.Add(1)-1, func(i int) bool {
		return i == except || pv.members[i].quarantined(now)
	})
}

// memberState is this node's local knowledge of one member.
type memberState struct {
	route            string
	host             string // the URL's host[:port], the Host header sent to it
	addr             string // host:port to dial
	tls              bool   // an https member
	pool             upstreamPool
	quarantinedUntil atomic.Int64 // unix nanoseconds
	inflight         atomic.Int64
	websockets       atomic.Int64   // open WebSocket tunnels, for gwelb_websockets
	metrics          *memberMetrics // the member's series, shared by its states of every URL
}

func (m *memberState) quarantined(now int64) bool { return m.quarantinedUntil.Load() > now }

func newMemberState(route, scheme, host string, mm *memberMetrics) *memberState {
	ms := &memberState{route: route, host: host, addr: host, tls: scheme == "https", metrics: mm}
	if _, _, err := net.SplitHostPort(host); err != nil {
		if ms.tls {
			ms.addr = net.JoinHostPort(strings.Trim(host, "[]"), "443")
		} else {
			ms.addr = net.JoinHostPort(strings.Trim(host, "[]"), "80")
		}
	}
	return ms
}

// copyBuffers shares 32 KiB copy buffers between requests.
var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}
