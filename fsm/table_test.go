package fsm

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

// seedPools is the guide's single load balancer for both clusters.
func seedPools() []PoolSpec {
	return []PoolSpec{
		{
			Name: "frontend", Prefix: "/frontend", Sticky: StickySpec{Query: "alias", Cookie: "FRONTEND_ROUTEID", Insert: true},
			FailTimeout: new(30 * time.Second),
			Members: []MemberSpec{
				{Route: "GWE_F_1", URL: "http://127.0.0.1:8081"},
				{Route: "GWE_F_2", URL: "http://127.0.0.1:8082"},
			},
		},
		{
			Name: "backend", Prefix: "/backend", Sticky: StickySpec{Cookie: "ROUTEID", Insert: true},
			FailTimeout: new(5 * time.Second),
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
	if spec.Cookie.Path != "/" {
		t.Errorf("default cookie path = %q, want /", spec.Cookie.Path)
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
	p := mustTable(t, PoolSpec{Name: "b", Prefix: "/b", Sticky: StickySpec{Cookie: "ROUTEID"}}).Pool("b")
	if got := p.Pick("", "", 0, nil); got != -1 {
		t.Errorf("empty pool Pick = %d, want -1", got)
	}
}

// TestNewTableRejectsInvalid: building a table is judged by the one
// validator (every rule is tested in validate_test.go).
func TestNewTableRejectsInvalid(t *testing.T) {
	ps := seedPools()
	ps[1].Health.Path = "about"
	tbl, err := NewTable(1, ps)
	if tbl != nil || err == nil {
		t.Fatalf("NewTable = %v, %v; want an error", tbl, err)
	}
	if want := `pools[1] "backend": health.path "about": must start with /`; err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("error %v is not ErrInvalid", err)
	}
	p := mustTable(t, PoolSpec{Name: "b", Prefix: "/b", Sticky: StickySpec{Cookie: "R"}, Members: []MemberSpec{{Route: "1", URL: "http://h:1"}}}).Pool("b")
	if w := p.Member(0).Weight; w != 1 {
		t.Errorf("weight 0 became %d, want 1", w)
	}
}

func TestMatch(t *testing.T) {
	pools := []PoolSpec{
		{Name: "frontend", Prefix: "/frontend", Sticky: StickySpec{Query: "alias"}},
		{Name: "backend", Prefix: "/backend", Sticky: StickySpec{Cookie: "ROUTEID"}},
		{Name: "api", Prefix: "/backend/api", Sticky: StickySpec{Cookie: "ROUTEID"}},
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
	tbl := mustTable(t, append(pools, PoolSpec{Name: "root", Prefix: "/", Sticky: StickySpec{Cookie: "R"}})...)
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
		spec := PoolSpec{Name: "p", Prefix: "/p", Sticky: StickySpec{Cookie: "R"}}
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
