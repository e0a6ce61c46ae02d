package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/gwelb/gwelb/fsm"
	"github.com/gwelb/gwelb/internal/metrics"
	"github.com/gwelb/gwelb/internal/metrics/metricstest"
)

// metricsHarness is a proxy with a registry, behind a real data-plane
// listener and a real ops listener serving /metrics.
type metricsHarness struct {
	*harness
	metricsURL string
}

func startMetricsProxy(t *testing.T, tbl *fsm.Table) *metricsHarness {
	t.Helper()
	reg := metrics.New()
	h := startProxy(t, tbl, Options{Metrics: reg.Proxy}, ListenerConfig{})
	ops := httptest.NewServer(OpsHandler(h.srv.Ready, func() time.Duration { return 0 }, WithMetrics(reg.Handler(discardLogger()))))
	t.Cleanup(ops.Close)
	return &metricsHarness{harness: h, metricsURL: ops.URL + "/metrics"}
}

// series is one expected series value: family, label pairs, value.
type series struct {
	name   string
	labels []string
	want   float64
}

// waitSeries scrapes until every series has its value: a request is
// counted as its handler returns, which may be just after the client read
// the answer.
func (mh *metricsHarness) waitSeries(t *testing.T, what string, want ...series) metricstest.Families {
	t.Helper()
	var f metricstest.Families
	var bad []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		f = metricstest.Scrape(t, mh.metricsURL)
		bad = bad[:0]
		for _, s := range want {
			if got := f.Sum(s.name, s.labels...); got != s.want {
				bad = append(bad, s.name+"{"+strings.Join(s.labels, ",")+"} = "+ftoa(got)+", want "+ftoa(s.want))
			}
		}
		if len(bad) == 0 {
			return f
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s:\n%s", what, strings.Join(bad, "\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func ftoa(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// TestMetricsFollowRouting drives sticky hits, every re-pin cause, a
// retry with quarantine after a member's listener dies, and a WebSocket
// through a real listener, and reads the counters back the way Prometheus
// would: scraped from a real ops listener and parsed by its text parser.
// Routing contract rules 5, 6 and 8; DESIGN.md §8.1.
func TestMetricsFollowRouting(t *testing.T) {
	back := startMembers(t, "/backend", "1", "2", "3", "4")
	pool := backendPool(back)
	pool.FailTimeout = new(time.Minute) // the quarantine outlasts the test on a busy machine
	mh := startMetricsProxy(t, mustTable(t, pool))
	const req, rep, retries, inflight = metrics.RequestsTotal, metrics.RepinsTotal, metrics.RetriesTotal, metrics.InFlight

	// Sticky hits: counted on the member, with their upstream time; no re-pin.
	for range 5 {
		wantServer(t, mh.get(t, "/backend/x", "ROUTEID=.2"), "2")
	}
	mh.waitSeries(t, "after 5 sticky hits on 2",
		series{req, []string{"pool", "backend", "route", "2", "code", "200"}, 5},
		series{metrics.UpstreamDurationSeconds, []string{"pool", "backend", "route", "2"}, 5},
		series{rep, nil, 0},
	)

	// A new session is not a re-pin.
	if r := mh.get(t, "/backend/x"); r.status != http.StatusOK {
		t.Fatalf("new session: %v", r)
	}
	// Re-pins, by cause. Unknown route:
	mh.get(t, "/backend/x", "ROUTEID=.9")
	// The member is disabled:
	mh.srv.Update(mustTable(t, editMember(pool, "3", func(m *fsm.MemberSpec) { m.State = fsm.Disabled })))
	mh.get(t, "/backend/x", "ROUTEID=.3")
	// The verdict is down:
	down := editMember(pool, "3", func(m *fsm.MemberSpec) { m.State = fsm.Disabled })
	down = editMember(down, "4", func(m *fsm.MemberSpec) { m.Verdict = fsm.Down })
	mh.srv.Update(mustTable(t, down))
	mh.get(t, "/backend/x", "ROUTEID=.4")
	f := mh.waitSeries(t, "after one re-pin of each cause",
		series{req, nil, 9},
		series{rep, []string{"pool", "backend", "cause", metrics.CauseUnknownRoute}, 1},
		series{rep, []string{"pool", "backend", "cause", metrics.CauseAdminState}, 1},
		series{rep, []string{"pool", "backend", "cause", metrics.CauseMemberUnusable}, 1},
		series{retries, nil, 0},
	)

	served2 := f.Sum(req, "pool", "backend", "route", "2")

	// Member 2's listener dies: the next request to it is retried on the
	// fallback and 2 is quarantined; the one after goes round it directly.
	back[1].ts.Close()
	fallback := rendezvousRoute(t, mustTable(t, editMember(down, "2", func(m *fsm.MemberSpec) { m.State = fsm.Disabled })), "backend", ".2")
	r := mh.get(t, "/backend/x", "ROUTEID=.2")
	wantServer(t, r, fallback)
	wantServer(t, mh.get(t, "/backend/x", "ROUTEID=.2"), fallback)
	f = mh.waitSeries(t, "after the death of member 2",
		series{retries, []string{"pool", "backend", "route", "2"}, 1},
		series{retries, nil, 1},
		series{rep, []string{"pool", "backend", "cause", metrics.CauseMemberUnusable}, 3},
		series{metrics.Quarantined, []string{"pool", "backend", "route", "2"}, 1},
		series{metrics.Quarantined, nil, 1},
		series{req, []string{"pool", "backend", "route", "2"}, served2}, // the failed try counts on the fallback, which answered
		series{inflight, nil, 0},
	)
	if n := f.Count(req, "pool", "backend", "route", "2"); n != 1 {
		t.Errorf("member 2 has %d requests series, want only code 200", n)
	}

	// A WebSocket is in flight, and counted, while it is open.
	c, _, err := websocket.Dial(t.Context(), "ws://"+mh.addr+"/backend/ws", &websocket.DialOptions{HTTPHeader: http.Header{"Cookie": {"ROUTEID=.1"}}, HTTPClient: mh.client})
	if err != nil {
		t.Fatalf("websocket: %v", err)
	}
	if _, msg, err := c.Read(t.Context()); err != nil || string(msg) != "1" {
		t.Fatalf("websocket greeting %q, %v; want 1", msg, err)
	}
	mh.waitSeries(t, "with a WebSocket open to 1",
		series{metrics.WebSockets, []string{"pool", "backend", "route", "1"}, 1},
		series{inflight, []string{"pool", "backend", "route", "1"}, 1},
	)
	c.Close(websocket.StatusNormalClosure, "")
	mh.waitSeries(t, "after the WebSocket closed",
		series{metrics.WebSockets, nil, 0},
		series{inflight, nil, 0},
		series{req, []string{"pool", "backend", "route", "1", "code", "101"}, 1},
	)
}

// TestMetricsSeriesFollowTable: a member removed from the table loses its
// series, so label cardinality stays bounded by the table; a pool with no
// usable member counts its 503s under route "".
func TestMetricsSeriesFollowTable(t *testing.T) {
	back := startMembers(t, "/backend", "1", "2")
	pool := backendPool(back)
	mh := startMetricsProxy(t, mustTable(t, pool))
	mh.get(t, "/backend/x", "ROUTEID=.1")
	mh.get(t, "/backend/x", "ROUTEID=.2")
	mh.waitSeries(t, "one request on each member",
		series{metrics.RequestsTotal, []string{"route", "1"}, 1},
		series{metrics.RequestsTotal, []string{"route", "2"}, 1},
	)

	only1 := pool
	only1.Members = pool.Members[:1]
	mh.srv.Update(mustTable(t, only1))
	f := metricstest.Scrape(t, mh.metricsURL)
	for _, name := range []string{metrics.RequestsTotal, metrics.UpstreamDurationSeconds, metrics.RetriesTotal, metrics.InFlight, metrics.Quarantined, metrics.WebSockets} {
		if n := f.Count(name, "route", "2"); n != 0 {
			t.Errorf("%s: %d series of removed member 2", name, n)
		}
		if name != metrics.RequestsTotal && f.Count(name, "route", "1") != 1 {
			t.Errorf("%s: member 1 has %d series, want 1", name, f.Count(name, "route", "1"))
		}
	}
	if v, _ := f.Value(metrics.RequestsTotal, "route", "1", "code", "200"); v != 1 {
		t.Errorf("member 1 lost its count: %v", v)
	}

	// Its route comes back: it counts from zero.
	mh.srv.Update(mustTable(t, pool))
	mh.get(t, "/backend/x", "ROUTEID=.2")
	mh.waitSeries(t, "member 2 back", series{metrics.RequestsTotal, []string{"route", "2"}, 1})

	// No usable member: the pool's own 503.
	mh.srv.Update(mustTable(t, editMember(editMember(pool, "1", func(m *fsm.MemberSpec) { m.State = fsm.Disabled }), "2", func(m *fsm.MemberSpec) { m.Verdict = fsm.Down })))
	if r := mh.get(t, "/backend/x", "ROUTEID=.2"); r.status != http.StatusServiceUnavailable {
		t.Fatalf("no usable member: %v", r)
	}
	mh.waitSeries(t, "the pool's 503", series{metrics.RequestsTotal, []string{"pool", "backend", "route", "", "code", "503"}, 1})

	// The pool goes: every series of it goes.
	front := startMembers(t, "/frontend", "GWE_F_1")
	mh.srv.Update(mustTable(t, frontendPool(front)))
	f = metricstest.Scrape(t, mh.metricsURL)
	for _, name := range []string{metrics.RequestsTotal, metrics.RepinsTotal, metrics.RefusedBehindTotal, metrics.InFlight} {
		if n := f.Count(name, "pool", "backend"); n != 0 {
			t.Errorf("%s: %d series of removed pool backend", name, n)
		}
	}
}

// TestMetricsRecordAllocs: what a request records allocates nothing
// (DESIGN.md §1.2): the series are resolved when the table arrives.
func TestMetricsRecordAllocs(t *testing.T) {
	s, st, answered := recordSetup(t)
	s.record(st, answered) // resolves the code's series once
	if n := testing.AllocsPerRun(1000, func() { s.record(st, answered) }); n != 0 {
		t.Errorf("%v allocs per recorded request, want 0", n)
	}
}

// recordSetup is a server with a table and the state of a finished
// request that carried route 2 and was re-pinned to another member.
func recordSetup(t testing.TB) (*Server, *reqState, int) {
	s := pickServer(t)
	pv := s.view.Load().match("/backend/x")
	st := &reqState{pv: pv, carried: "2", member: 0, status: 200, upstreamTime: time.Millisecond}
	return s, st, 200
}

// BenchmarkRecord is the metrics' share of a request: expect 0 allocs/op.
func BenchmarkRecord(b *testing.B) {
	s, st, answered := recordSetup(b)
	b.ReportAllocs()
	for b.Loop() {
		s.record(st, answered)
	}
}

// TestOpsPprofOptIn: /debug/pprof/ answers only with WithPprof
// (ops.pprof: true), and /metrics only with WithMetrics.
func TestOpsPprofOptIn(t *testing.T) {
	reg := metrics.New()
	ready := func() error { return nil }
	stale := func() time.Duration { return 0 }
	for _, tt := range []struct {
		name          string
		opts          []OpsOption
		pprof, scrape int
	}{
		{"plain", nil, http.StatusNotFound, http.StatusNotFound},
		{"metrics", []OpsOption{WithMetrics(reg.Handler(discardLogger()))}, http.StatusNotFound, http.StatusOK},
		{"metrics and pprof", []OpsOption{WithMetrics(reg.Handler(discardLogger())), WithPprof()}, http.StatusOK, http.StatusOK},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ops := httptest.NewServer(OpsHandler(ready, stale, tt.opts...))
			defer ops.Close()
			for path, want := range map[string]int{"/debug/pprof/": tt.pprof, "/debug/pprof/goroutine?debug=1": tt.pprof, "/metrics": tt.scrape, "/healthz": http.StatusOK} {
				resp, err := http.Get(ops.URL + path)
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != want {
					t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, want)
				}
			}
		})
	}
}

// TestMetricsRefusedBehind: a node that may be behind the cluster refuses
// a session it cannot place (DESIGN.md §6.1) and counts the 503 in
// gwelb_refused_behind_total, not as the pool's "no usable member" 503;
// a pool with no usable member still counts there.
func TestMetricsRefusedBehind(t *testing.T) {
	back := startMembers(t, "/backend", "1", "2")
	pool := editMember(backendPool(back), "2", func(m *fsm.MemberSpec) { m.State = fsm.Disabled })
	mh := startMetricsProxy(t, mustTable(t, pool))
	mh.srv.SetFreshness(&fakeFreshness{}) // not fresh, and catching up changes nothing
	for _, cookie := range []string{"ROUTEID=.added", "ROUTEID=.2"} {
		if r := mh.get(t, "/backend/x", cookie); r.status != http.StatusServiceUnavailable {
			t.Fatalf("%s on a node behind: %v, want 503", cookie, r)
		}
	}
	noMember := []string{"pool", "backend", "route", "", "code", "503"}
	mh.waitSeries(t, "after two refusals of a node behind",
		series{metrics.RefusedBehindTotal, []string{"pool", "backend"}, 2},
		series{metrics.RequestsTotal, noMember, 0},
	)
	mh.srv.Update(mustTable(t, editMember(pool, "1", func(m *fsm.MemberSpec) { m.Verdict = fsm.Down })))
	if r := mh.get(t, "/backend/x"); r.status != http.StatusServiceUnavailable {
		t.Fatalf("no usable member: %v, want 503", r)
	}
	mh.waitSeries(t, "after a 503 for want of a member",
		series{metrics.RefusedBehindTotal, []string{"pool", "backend"}, 2},
		series{metrics.RequestsTotal, noMember, 1},
	)
	// The pool goes, and its refusals' series with it.
	mh.srv.Update(mustTable(t, frontendPool(startMembers(t, "/frontend", "GWE_F_1"))))
	if n := metricstest.Scrape(t, mh.metricsURL).Count(metrics.RefusedBehindTotal, "pool", "backend"); n != 0 {
		t.Errorf("%s: %d series of removed pool backend", metrics.RefusedBehindTotal, n)
	}
}
