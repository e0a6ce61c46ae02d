package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
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

// rawMember is a member that answers every request with its name and
// nothing else, reading and writing raw bytes: it allocates nothing per
// request, so that a benchmark counts the proxy's allocations alone.
func rawMember(t testing.TB, name string) string {
	t.Helper()
	answer := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-GWE-Server: " + name + "\r\nContent-Length: " + fmt.Sprint(len(name)+1) + "\r\n\r\n" + name + "\n")
	return tcpMember(t, func(c net.Conn) {
		defer c.Close()
		br := bufio.NewReader(c)
		for {
			length := 0
			for {
				line, err := br.ReadSlice('\n')
				if err != nil {
					return
				}
				if len(line) <= 2 {
					break
				}
				if bytes.HasPrefix(line, []byte("Content-Length: ")) {
					for _, d := range line[len("Content-Length: ") : len(line)-2] {
						length = length*10 + int(d-'0')
					}
				}
			}
			if _, err := br.Discard(length); err != nil {
				return
			}
			if _, err := c.Write(answer); err != nil {
				return
			}
		}
	})
}

// rawClient sends one fixed request on a keep-alive connection and reads
// the answer's head and body without allocating.
type rawClient struct {
	c   net.Conn
	br  *bufio.Reader
	req []byte
	buf []byte
}

func newRawClient(t testing.TB, addr string, req string) *rawClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawClient{c: c, br: bufio.NewReader(c), req: []byte(req), buf: make([]byte, 4096)}
}

// do sends the request and returns the answer's status code and whether
// it set a cookie.
func (rc *rawClient) do() (status int, setCookie bool, err error) {
	if _, err := rc.c.Write(rc.req); err != nil {
		return 0, false, err
	}
	length := -1
	for first := true; ; first = false {
		line, err := rc.br.ReadSlice('\n')
		if err != nil {
			return 0, false, err
		}
		if len(line) <= 2 {
			break
		}
		if first && len(line) > 12 {
			status = int(line[9]-'0')*100 + int(line[10]-'0')*10 + int(line[11]-'0')
		}
		if bytes.HasPrefix(line, []byte("Content-Length: ")) {
			length = 0
			for _, c := range line[len("Content-Length: ") : len(line)-2] {
				length = length*10 + int(c-'0')
			}
		}
		if bytes.HasPrefix(line, []byte("Set-Cookie: ")) {
			setCookie = true
		}
	}
	if length < 0 {
		return status, setCookie, fmt.Errorf("no Content-Length")
	}
	_, err = io.ReadFull(rc.br, rc.buf[:length])
	return status, setCookie, err
}

// proxyBench is a proxy in front of three raw members.
func proxyBench(t testing.TB) *harness {
	t.Helper()
	spec := fsm.PoolSpec{Name: "backend", Prefix: "/backend", Sticky: fsm.StickySpec{Cookie: "ROUTEID", Insert: true}}
	for _, r := range []string{"1", "2", "3"} {
		spec.Members = append(spec.Members, fsm.MemberSpec{Route: r, URL: rawMember(t, r)})
	}
	return startProxy(t, mustTable(t, spec), Options{AccessLog: io.Discard}, ListenerConfig{})
}

// benchRequests are the two request shapes of BenchmarkProxy: a sticky
// hit, and a new session that gets its route cookie inserted.
var benchRequests = []struct{ name, req string }{
	{"sticky", "GET /backend/cometd/connect HTTP/1.1\r\nHost: gwe\r\nUser-Agent: bench\r\nCookie: JSESSIONID=0123456789abcdef; ROUTEID=.2\r\n\r\n"},
	{"new", "GET /backend/cometd/connect HTTP/1.1\r\nHost: gwe\r\nUser-Agent: bench\r\n\r\n"},
}

// postRequest is a GWE long-poll POST with a 200-byte body, for
// BenchmarkProxy/post (what a request body costs: its reader, timeout,
// retry copy and sender).
var postRequest = "POST /backend/cometd/connect HTTP/1.1\r\nHost: gwe\r\nContent-Type: application/json\r\nCookie: ROUTEID=.2\r\nContent-Length: 200\r\n\r\n" + string(bytes.Repeat([]byte("x"), 200))

// BenchmarkProxy is a whole keep-alive request through the proxy to a
// member over loopback, sticky and new session (cookie insertion). Client
// and members allocate nothing, so allocs/op is the proxy's own: the
// design requires 0 (DESIGN.md §1.2).
func BenchmarkProxy(b *testing.B) {
	h := proxyBench(b)
	for _, br := range append(benchRequests, struct{ name, req string }{"post", postRequest}) {
		b.Run(br.name, func(b *testing.B) {
			rc := newRawClient(b, h.addr, br.req)
			b.ReportAllocs()
			for b.Loop() {
				if status, _, err := rc.do(); err != nil || status != 200 {
					b.Fatalf("status %d, %v", status, err)
				}
			}
		})
		b.Run(br.name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.SetParallelism(8)
			b.RunParallel(func(pb *testing.PB) {
				rc := newRawClient(b, h.addr, br.req)
				for pb.Next() {
					if status, _, err := rc.do(); err != nil || status != 200 {
						b.Errorf("status %d, %v", status, err)
						return
					}
				}
			})
		})
	}
}

// TestProxyAllocs: a proxied keep-alive request allocates nothing in
// steady state, sticky or new session with the cookie inserted.
func TestProxyAllocs(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("measures allocations over many requests; not under the race detector (sync.Pool drops items)")
	}
	h := proxyBench(t)
	for _, br := range benchRequests {
		rc := newRawClient(t, h.addr, br.req)
		for range 100 { // warm: pools, buffers, the member connections
			if status, cookie, err := rc.do(); err != nil || status != 200 || cookie != (br.name == "new") {
				t.Fatalf("%s: status %d, cookie %v, %v", br.name, status, cookie, err)
			}
		}
		if n := testing.AllocsPerRun(2000, func() { rc.do() }); n != 0 {
			t.Errorf("%s: %v allocs per proxied request, want 0", br.name, n)
		}
	}
}
