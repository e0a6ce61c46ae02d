package proxy

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/gwelb/gwelb/fsm"
)

// pickCase is one request shape of the hot path: key parse + table lookup.
type pickCase struct {
	name   string
	target string
	cookie string
	want   string // route the pick must land on; "" for any member
}

var pickCases = []pickCase{
	{"cookie", "/backend/cometd/connect", "JSESSIONID=0123456789abcdef; ROUTEID=.2; _ga=GA1.2.3", "2"},
	{"alias", "/frontend/cometd/connect?transport=long-polling&alias=.GWE_F_3&jsonp=x", "", "GWE_F_3"},
	{"roundrobin", "/backend/cometd/connect", "_ga=GA1.2.3", ""},
}

// pickServer is a Server holding a real 3-member table per pool; the
// members are never contacted.
func pickServer(t testing.TB) *Server {
	t.Helper()
	members := func(routes ...string) []fsm.MemberSpec {
		var ms []fsm.MemberSpec
		for i, r := range routes {
			ms = append(ms, fsm.MemberSpec{Route: r, URL: fmt.Sprintf("http://127.0.0.1:%d", 19001+i)})
		}
		return ms
	}
	tbl := mustTable(t,
		fsm.PoolSpec{Name: "frontend", Prefix: "/frontend", Sticky: fsm.StickySpec{Query: "alias", Cookie: "FRONTEND_ROUTEID", Insert: true}, Members: members("GWE_F_1", "GWE_F_2", "GWE_F_3")},
		fsm.PoolSpec{Name: "backend", Prefix: "/backend", Sticky: fsm.StickySpec{Cookie: "ROUTEID", Insert: true}, Members: members("1", "2", "3")},
	)
	s := New(Options{Logger: discardLogger()})
	s.Update(tbl)
	return s
}

// pickFunc returns the hot path for one request, built once: the same
// steps ServeHTTP takes from the pool to the member index.
func pickFunc(t testing.TB, s *Server, c pickCase) func() int {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, c.target, nil)
	if c.cookie != "" {
		req.Header.Set("Cookie", c.cookie)
	}
	pv := s.view.Load().match(req.URL.Path)
	if pv == nil {
		t.Fatalf("no pool for %s", c.target)
	}
	const now = 1_700_000_000_000_000_000
	return func() int {
		keys := readSticky(req, pv.spec.Sticky.Query, pv.spec.Sticky.Cookie)
		value := keys.value()
		return pv.pick(value, fsm.RouteOf(value), now)
	}
}

func checkPick(t testing.TB, s *Server, c pickCase, i int) {
	t.Helper()
	pv := s.view.Load().match(httptest.NewRequest(http.MethodGet, c.target, nil).URL.Path)
	if i < 0 || (c.want != "" && pv.pool.Member(i).Route != c.want) {
		t.Fatalf("%s: picked %d, want route %q", c.name, i, c.want)
	}
}

// BenchmarkPick measures the sticky key parse and the table lookup; the
// design requires them to allocate nothing.
func BenchmarkPick(b *testing.B) {
	s := pickServer(b)
	for _, c := range pickCases {
		b.Run(c.name, func(b *testing.B) {
			pick := pickFunc(b, s, c)
			checkPick(b, s, c, pick())
			b.ReportAllocs()
			for b.Loop() {
				if pick() < 0 {
					b.Fatal("no member")
				}
			}
		})
	}
}

func TestPickAllocs(t *testing.T) {
	s := pickServer(t)
	for _, c := range pickCases {
		pick := pickFunc(t, s, c)
		checkPick(t, s, c, pick())
		if n := testing.AllocsPerRun(1000, func() { pick() }); n != 0 {
			t.Errorf("%s: %v allocs per pick, want 0", c.name, n)
		}
	}
}

// BenchmarkProxy is a whole sticky request through the proxy to a gwedemo
// member over loopback, for reference.
func BenchmarkProxy(b *testing.B) {
	back := startMembers(b, "/backend", "1", "2", "3")
	h := startProxy(b, mustTable(b, backendPool(back)), Options{AccessLog: io.Discard}, ListenerConfig{})
	req, err := http.NewRequest(http.MethodGet, h.base+"/backend/cometd/connect", nil)
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Cookie", "ROUTEID=.2")
	do := func(b *testing.B) {
		resp, err := h.client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			do(b)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			req := req.Clone(req.Context())
			for pb.Next() {
				resp, err := h.client.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	})
}
