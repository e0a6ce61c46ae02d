package fsm

import (
	"fmt"
	"math"
	"testing"
)

// backendPool builds a pool "b" whose members are routes 1..n with the given
// weights (all 1 when weights is nil), after edit had its say on the specs.
func backendPool(t testing.TB, n int, weights []int, edit func([]MemberSpec)) *Pool {
	t.Helper()
	spec := PoolSpec{Name: "b", Prefix: "/backend", Sticky: StickySpec{Cookie: "ROUTEID", Insert: true}}
	for i := range n {
		w := 1
		if weights != nil {
			w = weights[i]
		}
		spec.Members = append(spec.Members, MemberSpec{Route: fmt.Sprint(i + 1), URL: fmt.Sprintf("http://127.0.0.1:%d", 9081+i), Weight: w})
	}
	if edit != nil {
		edit(spec.Members)
	}
	return mustTable(t, spec).Pool("b")
}

func routeAt(p *Pool, i int) string {
	if i < 0 {
		return "-"
	}
	return p.Member(i).Route
}

func values(n int) []string {
	vs := make([]string, n)
	for i := range vs {
		vs[i] = fmt.Sprintf("visitor-%d", i)
	}
	return vs
}

func TestPickStickyHit(t *testing.T) {
	tests := []struct {
		name  string
		edit  func([]MemberSpec)
		skip  func(int) bool
		route string
		hit   bool // the named member is chosen
	}{
		{"active", nil, nil, "2", true},
		{"drain keeps its sessions", func(ms []MemberSpec) { ms[1].State = Drain }, nil, "2", true},
		{"disabled fails over", func(ms []MemberSpec) { ms[1].State = Disabled }, nil, "2", false},
		{"verdict down fails over", func(ms []MemberSpec) { ms[1].Verdict = Down }, nil, "2", false},
		{"drain and down fails over", func(ms []MemberSpec) { ms[1].State = Drain; ms[1].Verdict = Down }, nil, "2", false},
		{"locally skipped fails over", nil, func(i int) bool { return i == 1 }, "2", false},
		{"skip of another member is no matter", nil, func(i int) bool { return i == 0 }, "2", true},
		{"unknown route", nil, nil, "9", false},
		{"route is case-sensitive", nil, nil, "GWE_F_2", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := backendPool(t, 3, nil, tt.edit)
			value := "." + tt.route
			got := p.Pick(value, tt.route, 0, tt.skip)
			if tt.hit {
				if routeAt(p, got) != tt.route {
					t.Fatalf("Pick(%q) = %s, want the sticky member %s", value, routeAt(p, got), tt.route)
				}
				return
			}
			if got < 0 || routeAt(p, got) == tt.route {
				t.Fatalf("Pick(%q) = %s, want a fallback member", value, routeAt(p, got))
			}
			// The fallback is the rendezvous winner for the value, so it
			// does not depend on the round-robin position.
			want := p.Rendezvous(value, tt.skip)
			for n := range uint64(10) {
				if again := p.Pick(value, tt.route, n, tt.skip); again != want {
					t.Fatalf("Pick(%q, n=%d) = %s, want the rendezvous winner %s", value, n, routeAt(p, again), routeAt(p, want))
				}
			}
		})
	}
}

func TestPickNoValueRoundRobin(t *testing.T) {
	p := backendPool(t, 3, []int{1, 2, 1}, nil)
	sched := p.Schedule()
	for n := range uint64(3 * len(sched)) {
		if got, want := p.Pick("", "", n, nil), sched[n%uint64(len(sched))]; got != want {
			t.Errorf("Pick(n=%d) = %d, want schedule entry %d", n, got, want)
		}
	}
	// Drain, disabled, down and skipped members take no new sessions: the
	// walk moves on to the next entry of the schedule.
	p = backendPool(t, 4, nil, func(ms []MemberSpec) {
		ms[0].State = Drain
		ms[1].State = Disabled
		ms[2].Verdict = Down
	})
	for n := range uint64(8) {
		if got := p.Pick("", "", n, nil); routeAt(p, got) != "4" {
			t.Errorf("Pick(n=%d) = %s, want 4 (the only active, up member)", n, routeAt(p, got))
		}
	}
	if got := p.Pick("", "", 0, func(i int) bool { return i == 3 }); got != -1 {
		t.Errorf("Pick with the last member skipped = %s, want -1", routeAt(p, got))
	}
	// Drain members still answer for their sessions.
	if got := p.Pick(".1", "1", 0, nil); routeAt(p, got) != "1" {
		t.Errorf("Pick(.1) on a drain member = %s, want 1", routeAt(p, got))
	}
}

func TestPickNothingUsable(t *testing.T) {
	p := backendPool(t, 2, nil, func(ms []MemberSpec) {
		ms[0].State = Disabled
		ms[1].Verdict = Down
	})
	for _, v := range []string{"", ".1", ".2", "abc", "x.9"} {
		if got := p.Pick(v, routeAfterDot(v), 0, nil); got != -1 {
			t.Errorf("Pick(%q) = %s, want -1", v, routeAt(p, got))
		}
	}
	// Only drain members left: their sessions stay, new ones have nowhere to go.
	p = backendPool(t, 2, nil, func(ms []MemberSpec) { ms[0].State = Drain; ms[1].State = Drain })
	if got := p.Pick(".1", "1", 0, nil); routeAt(p, got) != "1" {
		t.Errorf("Pick(.1) with all drain = %s, want 1", routeAt(p, got))
	}
	for _, v := range []string{"", "abc", ".9"} {
		if got := p.Pick(v, routeAfterDot(v), 0, nil); got != -1 {
			t.Errorf("Pick(%q) with all drain = %s, want -1", v, routeAt(p, got))
		}
	}
}

// routeAfterDot mirrors the proxy's rule; fsm takes the route as given.
func routeAfterDot(v string) string {
	for i := 0; i < len(v); i++ {
		if v[i] == '.' {
			return v[i+1:]
		}
	}
	return ""
}

func TestRendezvousDeterministic(t *testing.T) {
	// Two tables built independently from the same specs (as two nodes
	// would) agree on every value; so does the same table asked twice.
	a := backendPool(t, 5, []int{1, 2, 3, 1, 1}, nil)
	b := backendPool(t, 5, []int{1, 2, 3, 1, 1}, nil)
	seen := map[string]int{}
	for _, v := range values(2000) {
		ra, rb := routeAt(a, a.Rendezvous(v, nil)), routeAt(b, b.Rendezvous(v, nil))
		if ra != rb || ra == "-" {
			t.Fatalf("Rendezvous(%q): %s on one table, %s on the other", v, ra, rb)
		}
		if again := routeAt(a, a.Rendezvous(v, nil)); again != ra {
			t.Fatalf("Rendezvous(%q) = %s then %s", v, ra, again)
		}
		seen[ra]++
	}
	if len(seen) != 5 {
		t.Errorf("2000 values reached %d of 5 members: %v", len(seen), seen)
	}
	// Member order in the spec does not matter, only routes do.
	c := backendPool(t, 5, []int{1, 2, 3, 1, 1}, func(ms []MemberSpec) { ms[0], ms[4] = ms[4], ms[0] })
	for _, v := range values(2000) {
		if ra, rc := routeAt(a, a.Rendezvous(v, nil)), routeAt(c, c.Rendezvous(v, nil)); ra != rc {
			t.Fatalf("Rendezvous(%q) = %s, but %s after reordering members", v, ra, rc)
		}
	}
}

func TestRendezvousStability(t *testing.T) {
	const n = 10000
	vs := values(n)
	full := backendPool(t, 5, nil, nil)
	before := make([]string, n)
	for i, v := range vs {
		before[i] = routeAt(full, full.Rendezvous(v, nil))
	}
	removals := []struct {
		name string
		pool *Pool
	}{
		{"member 3 removed", backendPool(t, 5, nil, nil)}, // replaced below
		{"member 3 disabled", backendPool(t, 5, nil, func(ms []MemberSpec) { ms[2].State = Disabled })},
		{"member 3 down", backendPool(t, 5, nil, func(ms []MemberSpec) { ms[2].Verdict = Down })},
		{"member 3 draining", backendPool(t, 5, nil, func(ms []MemberSpec) { ms[2].State = Drain })},
	}
	spec := PoolSpec{Name: "b", Prefix: "/backend", Sticky: StickySpec{Cookie: "ROUTEID"}}
	for _, r := range []string{"1", "2", "4", "5"} {
		spec.Members = append(spec.Members, MemberSpec{Route: r, URL: "http://127.0.0.1:1"})
	}
	removals[0].pool = mustTable(t, spec).Pool("b")
	for _, rm := range removals {
		t.Run(rm.name, func(t *testing.T) {
			moved := map[string]int{}
			for i, v := range vs {
				after := routeAt(rm.pool, rm.pool.Rendezvous(v, nil))
				switch {
				case before[i] != "3" && after != before[i]:
					t.Fatalf("value %q moved from %s to %s though its member is still there", v, before[i], after)
				case before[i] == "3" && (after == "3" || after == "-"):
					t.Fatalf("value %q stayed on %s", v, after)
				case before[i] == "3":
					moved[after]++
				}
			}
			// The orphaned sessions spread over all the others rather than
			// landing on one neighbour.
			if len(moved) != 4 {
				t.Errorf("sessions of member 3 moved to %v, want all four others", moved)
			}
		})
	}
	// A skip function (local quarantine) is the same as removing the member.
	for i, v := range vs {
		after := routeAt(full, full.Rendezvous(v, func(j int) bool { return full.Member(j).Route == "3" }))
		if before[i] != "3" && after != before[i] {
			t.Fatalf("with 3 skipped, value %q moved from %s to %s", v, before[i], after)
		}
	}
	// Adding a member only takes sessions for itself.
	grown := backendPool(t, 6, nil, nil)
	gained := 0
	for i, v := range vs {
		after := routeAt(grown, grown.Rendezvous(v, nil))
		if after != before[i] {
			if after != "6" {
				t.Fatalf("after adding member 6, value %q moved from %s to %s", v, before[i], after)
			}
			gained++
		}
	}
	if share := float64(gained) / n; math.Abs(share-1.0/6) > 0.03 {
		t.Errorf("new member 6 took %.3f of sessions, want about 1/6", share)
	}
}

func TestRendezvousWeights(t *testing.T) {
	const n = 30000
	tests := []struct {
		weights []int
	}{
		{[]int{1, 1, 1}},
		{[]int{1, 3}},
		{[]int{1, 2, 3, 4}},
		{[]int{10, 1}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.weights), func(t *testing.T) {
			p := backendPool(t, len(tt.weights), tt.weights, nil)
			counts := make([]int, len(tt.weights))
			for _, v := range values(n) {
				counts[p.Rendezvous(v, nil)]++
			}
			total := 0
			for _, w := range tt.weights {
				total += w
			}
			for i, w := range tt.weights {
				want := float64(w) / float64(total)
				got := float64(counts[i]) / n
				if math.Abs(got-want) > 0.02 {
					t.Errorf("member %d (weight %d) got %.3f of sessions, want %.3f ± 0.02 (counts %v)", i+1, w, got, want, counts)
				}
			}
		})
	}
}

func TestRendezvousSkipsDrain(t *testing.T) {
	p := backendPool(t, 3, nil, func(ms []MemberSpec) { ms[0].State = Drain })
	for _, v := range values(3000) {
		if got := routeAt(p, p.Rendezvous(v, nil)); got == "1" || got == "-" {
			t.Fatalf("Rendezvous(%q) = %s, want an active member", v, got)
		}
	}
}

func TestRoundRobinSkip(t *testing.T) {
	p := backendPool(t, 3, nil, nil)
	skip2 := func(i int) bool { return i == 1 }
	counts := map[string]int{}
	for n := range uint64(300) {
		counts[routeAt(p, p.RoundRobin(n, skip2))]++
	}
	// The skipped member's turns go to the next member in the schedule.
	if counts["2"] != 0 || counts["1"] != 100 || counts["3"] != 200 {
		t.Errorf("RoundRobin with 2 skipped = %v, want 1:100 3:200", counts)
	}
	if got := p.RoundRobin(5, func(int) bool { return true }); got != -1 {
		t.Errorf("RoundRobin with all skipped = %d, want -1", got)
	}
	// Huge counters wrap without panicking.
	if got := p.RoundRobin(math.MaxUint64, nil); got < 0 {
		t.Errorf("RoundRobin(MaxUint64) = %d", got)
	}
}
