package fsm

import (
	"fmt"
	"slices"
	"testing"

	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// Bounded probing (DESIGN.md §5.5, issue 13 item 2): each member is probed
// by the k balancers of its rendezvous ranking, and its verdict is their
// majority.

var fiveNodes = []string{"n1", "n2", "n3", "n4", "n5"}

func TestProbersChoice(t *testing.T) {
	for _, tc := range []struct {
		name      string
		k         int
		balancers []string
		want      int
	}{
		{"k=0 is every balancer", 0, fiveNodes, 5},
		{"k above the balancers is every balancer", 7, fiveNodes, 5},
		{"k=3 of 5", 3, fiveNodes, 3},
		{"k=1 of 5", 1, fiveNodes, 1},
		{"no balancers: the observing nodes decide", 3, nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Probers("backend", "1", tc.k, tc.balancers)
			if len(got) != tc.want || !slices.IsSorted(got) {
				t.Fatalf("Probers = %v, want %d sorted", got, tc.want)
			}
			for _, n := range got {
				if !slices.Contains(tc.balancers, n) {
					t.Fatalf("prober %s is no balancer", n)
				}
			}
			if again := Probers("backend", "1", tc.k, slices.Clone(tc.balancers)); !slices.Equal(again, got) {
				t.Fatalf("not deterministic: %v then %v", got, again)
			}
		})
	}
}

// TestProbersSpreadAndMinimalMoves: over many members every node probes
// about k/n of them, and when a balancer goes only the members it probed
// get a new prober (each keeps the other two).
func TestProbersSpreadAndMinimalMoves(t *testing.T) {
	const members, k = 3000, 3
	count := map[string]int{}
	for i := range members {
		for _, n := range Probers("frontend", fmt.Sprint(i), k, fiveNodes) {
			count[n]++
		}
	}
	for _, n := range fiveNodes {
		if want := members * k / len(fiveNodes); count[n] < want*9/10 || count[n] > want*11/10 {
			t.Errorf("%s probes %d members, want about %d", n, count[n], want)
		}
	}
	without := slices.DeleteFunc(slices.Clone(fiveNodes), func(n string) bool { return n == "n3" })
	moved := 0
	for i := range members {
		before := Probers("frontend", fmt.Sprint(i), k, fiveNodes)
		after := Probers("frontend", fmt.Sprint(i), k, without)
		if !slices.Contains(before, "n3") {
			if !slices.Equal(before, after) {
				t.Fatalf("member %d not probed by n3 moved: %v -> %v", i, before, after)
			}
			continue
		}
		moved++
		kept := 0
		for _, n := range after {
			if slices.Contains(before, n) {
				kept++
			}
		}
		if kept != k-1 {
			t.Fatalf("member %d: %v -> %v keeps %d probers, want %d", i, before, after, kept, k-1)
		}
	}
	if moved != count["n3"] {
		t.Errorf("%d members moved, n3 probed %d", moved, count["n3"])
	}
}

// boundedFx is the backend pool with k probers among five balancers and
// two non-voters, and the probers and non-probers of member 1.
func boundedFx(t *testing.T, k int32) (h *fxHarness, probers, others []string) {
	h = fxNew(t)
	h.must(fxCmd(t0, &gwelbv1.SetBalancers{Nodes: fiveNodes, Observers: []string{"nv1", "nv2"}}))
	h.must(cmdPutPool(t0, withProbers(fxBackend(), k)), cmdPutMember(t0, "backend", "1", "http://10.0.0.1:9081"))
	probers = Probers("backend", "1", int(k), fiveNodes)
	for _, n := range fiveNodes {
		if !slices.Contains(probers, n) {
			others = append(others, n)
		}
	}
	return h, probers, others
}

func TestBoundedVerdict(t *testing.T) {
	type obs struct {
		who     string // "p0".."p2": the member's probers; "o0", "o1": balancers that do not probe it; "nv1": a non-voter; "x": unknown node
		down    bool
		passive bool
	}
	for _, tc := range []struct {
		name  string
		obs   []obs
		want  gwelbv1.Verdict
		cause string
	}{
		{"no observations", nil, up, ""},
		{"one prober", []obs{{"p0", true, false}}, up, ""},
		{"two probers: majority of three", []obs{{"p0", true, false}, {"p1", true, false}}, down, "2/3 nodes observe down: c"},
		{"non-probers' active views are ignored", []obs{{"p0", true, false}, {"o0", true, false}, {"o1", true, false}}, up, ""},
		{"one passive reporter cannot tip an odd set", []obs{{"p0", true, false}, {"nv1", true, true}}, up, ""},
		{"passive reporters join the majority", []obs{{"p0", true, false}, {"nv1", true, true}, {"o0", true, true}}, down, "3/5 nodes observe down: c"},
		{"passive reporters alone, outnumbered by probers", []obs{{"nv1", true, true}, {"o0", true, true}}, up, ""},
		{"a passive up counts for nothing", []obs{{"p0", true, false}, {"p1", true, false}, {"nv1", false, true}, {"o0", false, true}}, down, "2/3 nodes observe down: c"},
		{"unknown node ignored", []obs{{"p0", true, false}, {"x", true, true}}, up, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, probers, others := boundedFx(t, 3)
			names := map[string]string{"nv1": "nv1", "x": "x"}
			for i, p := range probers {
				names[fmt.Sprintf("p%d", i)] = p
			}
			for i, o := range others {
				names[fmt.Sprintf("o%d", i)] = o
			}
			for i, o := range tc.obs {
				c := cmdObserve(t0+int64(i+1), "backend", "1", names[o.who], o.down, t0+int64(i+1), "c")
				c.GetObserve().GetObservation().Passive = o.passive
				h.must(c)
			}
			m := h.member("backend", "1")
			if m.GetVerdict() != tc.want || (tc.cause != "" && m.GetVerdictCause() != tc.cause) {
				t.Fatalf("verdict %v (%q), want %v (%q)", m.GetVerdict(), m.GetVerdictCause(), tc.want, tc.cause)
			}
		})
	}
}

// TestBoundedReassign: when a prober that observed down leaves the
// balancers, its successor is pending: the DOWN verdict stands until it
// judges, and its judgment decides.
func TestBoundedReassign(t *testing.T) {
	for _, successorDown := range []bool{true, false} {
		t.Run(fmt.Sprintf("successor_down=%v", successorDown), func(t *testing.T) {
			h, probers, _ := boundedFx(t, 3)
			h.must(cmdObserve(t0+1, "backend", "1", probers[0], true, t0+1, "refused"),
				cmdObserve(t0+1, "backend", "1", probers[1], true, t0+1, "refused"))
			if h.member("backend", "1").GetVerdict() != down {
				t.Fatal("want DOWN with 2/3")
			}
			// probers[0] dies: the leader drops it from the balancers.
			live := slices.DeleteFunc(slices.Clone(fiveNodes), func(n string) bool { return n == probers[0] })
			h.must(fxCmd(t0+10, &gwelbv1.SetBalancers{Nodes: live, Observers: []string{"nv1", "nv2"}}))
			next := Probers("backend", "1", 3, live)
			var successor string
			for _, n := range next {
				if !slices.Contains(probers, n) {
					successor = n
				}
			}
			if successor == "" || len(next) != 3 {
				t.Fatalf("probers %v -> %v: no successor", probers, next)
			}
			for _, o := range h.f.State().GetObservations() {
				if o.GetNode() == probers[0] {
					t.Fatalf("observation of the dead prober kept: %v", o)
				}
			}
			if h.member("backend", "1").GetVerdict() != down {
				t.Fatalf("verdict lifted before the successor judged: %v", h.member("backend", "1"))
			}
			h.must(cmdObserve(t0+20, "backend", "1", successor, successorDown, t0+20, "refused"))
			want := up
			if successorDown {
				want = down
			}
			if m := h.member("backend", "1"); m.GetVerdict() != want {
				t.Fatalf("after the successor judged %v: %v", successorDown, m)
			}
		})
	}
}

// TestBoundedProbersChange: a PutPool with a new health.probers moves the
// members; observations of nodes no longer probing are dropped.
func TestBoundedProbersChange(t *testing.T) {
	h, probers, _ := boundedFx(t, 0) // every balancer probes
	for _, n := range fiveNodes {
		h.must(cmdObserve(t0+1, "backend", "1", n, n == probers[0], t0+1, ""))
	}
	h.must(cmdPassive(t0+1, "backend", "1", "nv1", true, t0+1, ""))
	h.must(cmdPutPool(t0+2, withProbers(fxBackend(), 1)))
	one := Probers("backend", "1", 1, fiveNodes)
	var nodes []string
	for _, o := range h.f.State().GetObservations() {
		nodes = append(nodes, o.GetNode())
	}
	if want := append(slices.Clone(one), "nv1"); !slices.Equal(nodes, want) {
		t.Fatalf("observations by %v, want %v (the one prober and the passive reporter)", nodes, want)
	}
	// The one prober and the passive reporter decide: DOWN iff the prober
	// observes down (1 + 1 of 2).
	wantDown := one[0] == probers[0]
	if got := h.member("backend", "1").GetVerdict() == down; got != wantDown {
		t.Fatalf("verdict down=%v, want %v: %v", got, wantDown, h.member("backend", "1"))
	}
}

// TestBoundedObserversLeave: a non-voter's passive observations are
// dropped when it is no longer a live observer.
func TestBoundedObserversLeave(t *testing.T) {
	h, probers, _ := boundedFx(t, 3)
	h.must(cmdObserve(t0+1, "backend", "1", probers[0], true, t0+1, ""),
		cmdPassive(t0+1, "backend", "1", "nv1", true, t0+1, ""),
		cmdPassive(t0+1, "backend", "1", "nv2", true, t0+1, ""))
	if h.member("backend", "1").GetVerdict() != down {
		t.Fatal("want DOWN with 3/5")
	}
	h.must(fxCmd(t0+5, &gwelbv1.SetBalancers{Nodes: fiveNodes, Observers: []string{"nv2"}}))
	if m := h.member("backend", "1"); m.GetVerdict() != up || m.GetVerdictCause() != "up: 2/4 nodes observe down" {
		t.Fatalf("after nv1 left: %v", m)
	}
	// A non-voter that is no observer has no say.
	h.must(cmdPassive(t0+6, "backend", "1", "nv1", true, t0+6, ""))
	if m := h.member("backend", "1"); m.GetVerdict() != up {
		t.Fatalf("passive view of a non-observer counted: %v", m)
	}
}

func TestValidateProbers(t *testing.T) {
	for _, tc := range []struct {
		k  int
		ok bool
	}{{0, true}, {3, true}, {64, true}, {-1, false}, {65, false}} {
		p := PoolFromProto(withProbers(fxBackend(), int32(tc.k))).WithDefaults()
		if err := ValidatePool(p); (err == nil) != tc.ok {
			t.Errorf("probers %d: %v", tc.k, err)
		}
	}
}
