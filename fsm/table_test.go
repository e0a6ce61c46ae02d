package fsm

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// seedPools is the guide's single load balancer for both clusters.
func seedPools() []PoolSpec {
	return []PoolSpec{
		{
			Name: "frontend", Prefix: "/frontend", QueryParam: "alias", Cookie: "FRONTEND_ROUTEID",
			InsertCookie: true, FailTimeout: 30 * time.Second,
			Members: []MemberSpec{
				{Route: "GWE_F_1", URL: "http://127.0.0.1:8081"},
				{Route: "GWE_F_2", URL: "http://127.0.0.1:8082"},
			},
		},
		{
			Name: "backend", Prefix: "/backend", Cookie: "ROUTEID",
			InsertCookie: true, FailTimeout: 5 * time.Second,
			Members: []MemberSpec{
				{Route: "1", URL: "http://127.0.0.1:9081/", Weight: 2},
				{Route: "2", URL: "https://gwe-2.example.com:9082"},
				{Route: "3", URL: "http://[::1]:9083", State: Drain},
			},
		},
	}
}

func mustTable(t testing.TB, pools ...PoolSpec) *Table {
	t.Helper()
	tbl, err := NewTable(7, pools)
	if err != nil {
		t.Fatalf("NewTable: %v", err)
	}
	return tbl
}

func TestNewTableBuildsSeed(t *testing.T) {
	tbl := mustTable(t, seedPools()...)
	if got := tbl.Index(); got != 7 {
		t.Errorf("Index() = %d, want 7", got)
	}
	var names []string
	for _, p := range tbl.Pools() {
		names = append(names, p.Name())
	}
	// "/frontend" is longer than "/backend": longest prefix first.
	if want := []string{"frontend", "backend"}; !slices.Equal(names, want) {
		t.Errorf("Pools() = %v, want %v", names, want)
	}
	be := tbl.Pool("backend")
	if be == nil {
		t.Fatal(`Pool("backend") = nil`)
	}
	if tbl.Pool("nope") != nil {
		t.Error(`Pool("nope") != nil`)
	}
	spec := be.Spec()
	if spec.CookieAttrs.Path != "/" {
		t.Errorf("default cookie path = %q, want /", spec.CookieAttrs.Path)
	}
	if spec.Members != nil {
		t.Errorf("Spec().Members = %v, want nil (members live in Members())", spec.Members)
	}
	ms := be.Members()
	if len(ms) != 3 {
		t.Fatalf("len(Members()) = %d, want 3", len(ms))
	}
	// Definition order is kept; the trailing "/" of a member URL is dropped
	// so the request target is appended unchanged.
	for i, want := range []struct {
		route, scheme, host, path string
		weight                    int
		state                     AdminState
	}{
		{"1", "http", "127.0.0.1:9081", "", 2, Active},
		{"2", "https", "gwe-2.example.com:9082", "", 1, Active},
		{"3", "http", "[::1]:9083", "", 1, Drain},
	} {
		m := be.Member(i)
		if m.Route != want.route || m.Target.Scheme != want.scheme || m.Target.Host != want.host || m.Target.Path != want.path || m.Weight != want.weight || m.State != want.state {
			t.Errorf("member %d = {%s %s %s %q w=%d %v}, want %+v", i, m.Route, m.Target.Scheme, m.Target.Host, m.Target.Path, m.Weight, m.State, want)
		}
		if j, ok := be.Lookup(want.route); !ok || j != i {
			t.Errorf("Lookup(%q) = %d, %v; want %d, true", want.route, j, ok, i)
		}
	}
	if _, ok := be.Lookup("GWE_F_1"); ok {
		t.Error(`backend Lookup("GWE_F_1") found a frontend member`)
	}
	// The input slice is not aliased: changing it after NewTable changes nothing.
	pools := seedPools()
	tbl2 := mustTable(t, pools...)
	pools[1].Members[0].Route = "changed"
	if _, ok := tbl2.Pool("backend").Lookup("1"); !ok {
		t.Error("table changed when the caller's PoolSpec slice changed")
	}
}

func TestNewTableEmpty(t *testing.T) {
	tbl := mustTable(t)
	if tbl.Match("/frontend") != nil || len(tbl.Pools()) != 0 {
		t.Error("empty table matches a pool")
	}
	// A pool without members is valid (members are added later).
	p := mustTable(t, PoolSpec{Name: "b", Prefix: "/b", Cookie: "ROUTEID"}).Pool("b")
	if got := p.Pick("", "", 0, nil); got != -1 {
		t.Errorf("empty pool Pick = %d, want -1", got)
	}
}

func TestNewTableErrors(t *testing.T) {
	pool := func(edit func(*PoolSpec)) []PoolSpec {
		ps := seedPools()
		edit(&ps[1])
		return ps
	}
	member := func(edit func(*MemberSpec)) []PoolSpec {
		return pool(func(p *PoolSpec) { edit(&p.Members[1]) })
	}
	tests := []struct {
		name  string
		pools []PoolSpec
		want  string // substring of the error
	}{
		{"duplicate route", member(func(m *MemberSpec) { m.Route = "1" }), `route "1": duplicate`},
		{"empty route", member(func(m *MemberSpec) { m.Route = "" }), `route ""`},
		{"route with space", member(func(m *MemberSpec) { m.Route = "GWE F" }), `route "GWE F"`},
		{"route with semicolon", member(func(m *MemberSpec) { m.Route = "a;b" }), `route "a;b"`},
		{"route with quote", member(func(m *MemberSpec) { m.Route = `a"b` }), `route`},
		{"route non-ASCII", member(func(m *MemberSpec) { m.Route = "é" }), `route`},
		{"url with path (the guide's BalancerMember form)", member(func(m *MemberSpec) { m.URL = "http://198.51.100.1:9083/backend" }), "no path"},
		{"url with query", member(func(m *MemberSpec) { m.URL = "http://127.0.0.1:1/?a=b" }), "no path, query"},
		{"url with user", member(func(m *MemberSpec) { m.URL = "http://u:p@127.0.0.1:1" }), "no path, query or user"},
		{"url scheme", member(func(m *MemberSpec) { m.URL = "ftp://127.0.0.1:1" }), "want http://"},
		{"url without scheme", member(func(m *MemberSpec) { m.URL = "127.0.0.1:9082" }), "url"},
		{"url without host", member(func(m *MemberSpec) { m.URL = "http://" }), "want http://"},
		{"url unparsable", member(func(m *MemberSpec) { m.URL = "http://[::1" }), "url"},
		{"weight negative", member(func(m *MemberSpec) { m.Weight = -1 }), "weight -1"},
		{"weight too big", member(func(m *MemberSpec) { m.Weight = 1001 }), "weight 1001"},
		{"bad admin state", member(func(m *MemberSpec) { m.State = 9 }), "AdminState(9)"},
		{"duplicate prefix", pool(func(p *PoolSpec) { p.Prefix = "/frontend" }), `prefix "/frontend" already used by pool "frontend"`},
		{"duplicate name", pool(func(p *PoolSpec) { p.Name = "frontend" }), "duplicate name"},
		{"empty name", pool(func(p *PoolSpec) { p.Name = "" }), "name is empty"},
		{"prefix without slash", pool(func(p *PoolSpec) { p.Prefix = "backend" }), "must start with /"},
		{"prefix trailing slash", pool(func(p *PoolSpec) { p.Prefix = "/backend/" }), "not end with /"},
		{"empty prefix", pool(func(p *PoolSpec) { p.Prefix = "" }), "must start with /"},
		{"no sticky key", pool(func(p *PoolSpec) { p.Cookie = ""; p.InsertCookie = false }), "needs a sticky query parameter or cookie"},
		{"insert without cookie", pool(func(p *PoolSpec) { p.Cookie = ""; p.QueryParam = "alias" }), "insert_cookie needs a cookie name"},
		{"cookie name with space", pool(func(p *PoolSpec) { p.Cookie = "ROUTE ID" }), "not a valid token"},
		{"cookie name with semicolon", pool(func(p *PoolSpec) { p.Cookie = "ROUTE;ID" }), "not a valid token"},
		{"cookie name with equals", pool(func(p *PoolSpec) { p.Cookie = "ROUTE=ID" }), "not a valid token"},
		{"cookie name with comma", pool(func(p *PoolSpec) { p.Cookie = "ROUTE,ID" }), "not a valid token"},
		{"cookie name quoted", pool(func(p *PoolSpec) { p.Cookie = `"ROUTEID"` }), "not a valid token"},
		{"cookie name control char", pool(func(p *PoolSpec) { p.Cookie = "ROUTE\x01ID" }), "not a valid token"},
		{"cookie name non-ASCII", pool(func(p *PoolSpec) { p.Cookie = "ROUTÉID" }), "not a valid token"},
		{"same_site case", pool(func(p *PoolSpec) { p.CookieAttrs.SameSite = "lax" }), `same_site "lax"`},
		{"negative fail_timeout", pool(func(p *PoolSpec) { p.FailTimeout = -time.Second }), "fail_timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tbl, err := NewTable(1, tt.pools)
			if err == nil {
				t.Fatalf("NewTable succeeded, want error containing %q", tt.want)
			}
			if tbl != nil {
				t.Errorf("NewTable returned a table with error %v", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestNewTableAcceptsEdges(t *testing.T) {
	tests := []struct {
		name string
		edit func(*PoolSpec)
	}{
		{"weight 1000", func(p *PoolSpec) { p.Members[0].Weight = 1000 }},
		{"weight 0 means 1", func(p *PoolSpec) { p.Members[0].Weight = 0 }},
		{"query only, no cookie", func(p *PoolSpec) { p.Cookie = ""; p.InsertCookie = false; p.QueryParam = "alias" }},
		{"root prefix", func(p *PoolSpec) { p.Prefix = "/" }},
		{"route with dot", func(p *PoolSpec) { p.Members[0].Route = "GWE.F.1" }},
		{"same_site None", func(p *PoolSpec) { p.CookieAttrs.SameSite = "None" }},
		{"zero fail_timeout", func(p *PoolSpec) { p.FailTimeout = 0 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ps := seedPools()
			tt.edit(&ps[1])
			if _, err := NewTable(1, ps); err != nil {
				t.Errorf("NewTable: %v", err)
			}
		})
	}
	p := mustTable(t, PoolSpec{Name: "b", Prefix: "/b", Cookie: "R", Members: []MemberSpec{{Route: "1", URL: "http://h:1"}}}).Pool("b")
	if w := p.Member(0).Weight; w != 1 {
		t.Errorf("weight 0 became %d, want 1", w)
	}
}

func TestMatch(t *testing.T) {
	pools := []PoolSpec{
		{Name: "frontend", Prefix: "/frontend", QueryParam: "alias"},
		{Name: "backend", Prefix: "/backend", Cookie: "ROUTEID"},
		{Name: "api", Prefix: "/backend/api", Cookie: "ROUTEID"},
	}
	tests := []struct {
		path string
		want string // "" means no pool
	}{
		{"/frontend", "frontend"},
		{"/frontend/", "frontend"},
		{"/frontend/resources/js/x.js", "frontend"},
		{"/frontendX", ""},
		{"/frontend.js", ""},
		{"/front", ""},
		{"/Frontend/x", ""},
		{"/backend", "backend"},
		{"/backend/cometd", "backend"},
		{"/backend/api", "api"},
		{"/backend/api/", "api"},
		{"/backend/api/v1", "api"},
		{"/backend/apix", "backend"},
		{"/", ""},
		{"", ""},
		{"/other/frontend", ""},
		{"frontend/x", ""},
	}
	// The order pools are given in must not matter: the longest prefix wins.
	for _, order := range [][]int{{0, 1, 2}, {2, 1, 0}, {1, 2, 0}} {
		var ps []PoolSpec
		for _, i := range order {
			ps = append(ps, pools[i])
		}
		tbl := mustTable(t, ps...)
		for _, tt := range tests {
			got := ""
			if p := tbl.Match(tt.path); p != nil {
				got = p.Name()
			}
			if got != tt.want {
				t.Errorf("order %v: Match(%q) = %q, want %q", order, tt.path, got, tt.want)
			}
		}
	}
	// A root pool catches everything the others do not.
	tbl := mustTable(t, append(pools, PoolSpec{Name: "root", Prefix: "/", Cookie: "R"})...)
	for path, want := range map[string]string{"/": "root", "/x": "root", "/frontendX": "root", "/frontend/x": "frontend", "/backend/api/x": "api"} {
		if p := tbl.Match(path); p == nil || p.Name() != want {
			t.Errorf("with root pool: Match(%q) = %v, want %s", path, p, want)
		}
	}
}

func TestAdminState(t *testing.T) {
	for _, s := range []AdminState{Active, Drain, Disabled} {
		got, err := ParseAdminState(s.String())
		if err != nil || got != s {
			t.Errorf("ParseAdminState(%q) = %v, %v", s.String(), got, err)
		}
	}
	for _, bad := range []string{"", "Active", "DRAIN", "down", "enabled"} {
		if _, err := ParseAdminState(bad); err == nil {
			t.Errorf("ParseAdminState(%q) succeeded", bad)
		}
	}
	if got := AdminState(5).String(); got != "AdminState(5)" {
		t.Errorf("AdminState(5).String() = %q", got)
	}
	if Up.String() != "up" || Down.String() != "down" {
		t.Errorf("verdict strings = %q, %q", Up, Down)
	}
	for _, tt := range []struct {
		s    AdminState
		v    Verdict
		want bool
	}{
		{Active, Up, true}, {Drain, Up, true}, {Disabled, Up, false},
		{Active, Down, false}, {Drain, Down, false}, {Disabled, Down, false},
	} {
		m := Member{MemberSpec: MemberSpec{State: tt.s, Verdict: tt.v}}
		if got := m.Usable(); got != tt.want {
			t.Errorf("Usable(%v, %v) = %v, want %v", tt.s, tt.v, got, tt.want)
		}
	}
}

func TestSmoothWRR(t *testing.T) {
	schedule := func(weights ...int) []int {
		spec := PoolSpec{Name: "p", Prefix: "/p", Cookie: "R"}
		for i, w := range weights {
			spec.Members = append(spec.Members, MemberSpec{Route: fmt.Sprint(i), URL: "http://h:1", Weight: w})
		}
		return mustTable(t, spec).Pool("p").Schedule()
	}
	// nginx's documented example: weights 5, 1, 1 give a a b a c a a.
	if got, want := schedule(5, 1, 1), []int{0, 0, 1, 0, 2, 0, 0}; !slices.Equal(got, want) {
		t.Errorf("schedule(5,1,1) = %v, want %v", got, want)
	}
	if got, want := schedule(1, 1, 1), []int{0, 1, 2}; !slices.Equal(got, want) {
		t.Errorf("schedule(1,1,1) = %v, want %v", got, want)
	}
	if got := schedule(); len(got) != 0 {
		t.Errorf("schedule() = %v, want empty", got)
	}
	for _, ws := range [][]int{{1, 3}, {5, 1, 1}, {2, 3, 5, 7}, {1000, 1}, {10, 10, 1}, {4, 4, 4, 4, 1}} {
		got := schedule(ws...)
		total := 0
		for _, w := range ws {
			total += w
		}
		if len(got) != total {
			t.Errorf("schedule(%v) has %d entries, want %d", ws, len(got), total)
			continue
		}
		// Every member appears weight times, and the spread is smooth: in
		// every prefix of the schedule each member's count stays within
		// one of its exact share.
		counts := make([]int, len(ws))
		for k, i := range got {
			counts[i]++
			for j, w := range ws {
				exact := float64((k+1)*w) / float64(total)
				if d := float64(counts[j]) - exact; d > 1 || d < -1 {
					t.Errorf("schedule(%v): after %d picks member %d has %d, exact share %.2f", ws, k+1, j, counts[j], exact)
				}
			}
		}
		for j, w := range ws {
			if counts[j] != w {
				t.Errorf("schedule(%v): member %d appears %d times, want %d", ws, j, counts[j], w)
			}
		}
	}
}
