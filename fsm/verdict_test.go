package fsm

import (
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

const (
	up   = gwelbv1.Verdict_VERDICT_UP
	down = gwelbv1.Verdict_VERDICT_DOWN
)

func fxObs(node string, isDown bool, cause string) *gwelbv1.Observation {
	return &gwelbv1.Observation{Pool: "backend", Route: "1", Node: node, Down: isDown, UnixNanos: t0, Cause: cause}
}

func TestVerdictMajority(t *testing.T) {
	abc := []string{"a", "b", "c"}
	tests := []struct {
		name      string
		obs       []*gwelbv1.Observation
		balancers []string
		want      gwelbv1.Verdict
		cause     string
	}{
		{"no observations", nil, abc, up, "up: 0/3 nodes observe down"},
		{"1 of 3 down", []*gwelbv1.Observation{fxObs("a", true, "refused")}, abc, up, "up: 1/3 nodes observe down"},
		{"2 of 3 down", []*gwelbv1.Observation{fxObs("c", true, "timeout"), fxObs("b", true, "refused"), fxObs("a", false, "")}, abc, down, "2/3 nodes observe down: refused"},
		{"3 of 3 down, first cause in node order", []*gwelbv1.Observation{fxObs("c", true, "c"), fxObs("a", true, ""), fxObs("b", true, "b")}, abc, down, "3/3 nodes observe down: b"},
		{"2 of 4 is no majority", []*gwelbv1.Observation{fxObs("a", true, ""), fxObs("b", true, "")}, []string{"a", "b", "c", "d"}, up, "up: 2/4 nodes observe down"},
		{"3 of 4 down", []*gwelbv1.Observation{fxObs("a", true, ""), fxObs("b", true, ""), fxObs("d", true, "")}, []string{"a", "b", "c", "d"}, down, "3/4 nodes observe down"},
		{"non-balancers have no say", []*gwelbv1.Observation{fxObs("x", true, ""), fxObs("y", true, ""), fxObs("a", true, "")}, abc, up, "up: 1/3 nodes observe down"},
		{"single balancer decides alone", []*gwelbv1.Observation{fxObs("a", true, "refused")}, []string{"a"}, down, "1/1 nodes observe down: refused"},
		{"empty set: a lone dev node decides", []*gwelbv1.Observation{fxObs("dev", true, "refused")}, nil, down, "1/1 nodes observe down: refused"},
		{"empty set: observing nodes are the set", []*gwelbv1.Observation{fxObs("a", true, ""), fxObs("b", false, "")}, nil, up, "up: 1/2 nodes observe down"},
		{"empty set, no observations", nil, nil, up, "up: 0/0 nodes observe down"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cur := verdictFields{verdict: up, since: 1}
			if tt.want == up {
				cur = verdictFields{verdict: down, since: 1}
			}
			obs := slices.Clone(tt.obs)
			got := deriveVerdict(cur, obs, tt.balancers, 0, nil, t0)
			if got.verdict != tt.want || got.cause != tt.cause || got.since != t0 {
				t.Errorf("got %v %q since %d, want %v %q since t0", got.verdict, got.cause, got.since, tt.want, tt.cause)
			}
			if !slices.Equal(obs, tt.obs) {
				t.Error("deriveVerdict reordered its input")
			}
			// Deriving again at a later time changes nothing: verdicts move
			// only when what is observed does.
			if again := deriveVerdict(got, obs, tt.balancers, 0, nil, t0+1); !again.equal(got) {
				t.Errorf("not stable: %+v then %+v", got, again)
			}
		})
	}
}

func TestVerdictThreeBalancers(t *testing.T) {
	h := fxNew(t)
	h.must(cmdBalancers(t0, "a", "b", "c"))
	h.must(fxBackendWith(t0)...)
	steps := []struct {
		cmd   *gwelbv1.Command
		want  gwelbv1.Verdict
		since int64
		cause string
	}{
		{cmdObserve(t0+10, "backend", "1", "a", true, t0+9, "connection refused"), up, t0, ""},
		{cmdObserve(t0+20, "backend", "1", "b", true, t0+19, "connect timeout"), down, t0 + 20, "2/3 nodes observe down: connection refused"},
		{cmdObserve(t0+30, "backend", "1", "c", true, t0+29, ""), down, t0 + 20, "2/3 nodes observe down: connection refused"},
		{cmdObserve(t0+40, "backend", "1", "a", false, t0+39, ""), down, t0 + 20, "2/3 nodes observe down: connection refused"},
		{cmdObserve(t0+50, "backend", "1", "b", false, t0+49, ""), up, t0 + 50, "up: 1/3 nodes observe down"},
	}
	for i, s := range steps {
		h.must(s.cmd)
		m := h.member("backend", "1")
		if m.GetVerdict() != s.want || m.GetVerdictSinceUnixNanos() != s.since || m.GetVerdictCause() != s.cause {
			t.Fatalf("step %d: %v since %d %q, want %v since %d %q", i, m.GetVerdict(), m.GetVerdictSinceUnixNanos(), m.GetVerdictCause(), s.want, s.since, s.cause)
		}
		p := h.f.Table().Pool("backend")
		j, _ := p.Lookup("1")
		if (p.Member(j).Verdict == Down) != (s.want == down) {
			t.Fatalf("step %d: table verdict %v", i, p.Member(j).Verdict)
		}
		if other := h.member("backend", "2"); other.GetVerdict() != up {
			t.Fatalf("step %d: another member changed", i)
		}
	}
	// Without a flap window only the last flip is kept.
	if got := h.member("backend", "1").GetFlipsUnixNanos(); !slices.Equal(got, []int64{t0 + 50}) {
		t.Errorf("flips = %v", got)
	}
	// Routing follows: a session pinned to 1 moves while 1 is down.
	h.must(cmdObserve(t0+60, "backend", "1", "a", true, t0+59, ""), cmdObserve(t0+60, "backend", "1", "c", true, t0+59, ""))
	p := h.f.Table().Pool("backend")
	i1, _ := p.Lookup("1")
	if got := p.Pick("s.1", "1", 0, nil); got == i1 || got < 0 {
		t.Errorf("Pick = %d while member 1 is down", got)
	}
}

func TestVerdictStaleObservationIgnored(t *testing.T) {
	h := fxNew(t)
	h.must(cmdBalancers(t0, "a"))
	h.must(fxBackendWith(t0)...)
	h.must(cmdObserve(t0+100, "backend", "1", "a", false, t0+100, ""))
	before := h.f.State()
	npub := len(h.published)
	// The node's down view from before its up view arrives late.
	h.must(cmdObserve(t0+200, "backend", "1", "a", true, t0+50, "refused"))
	after := h.f.State()
	before.Index = after.Index
	if !proto.Equal(before, after) || len(h.published) != npub || h.member("backend", "1").GetVerdict() != up {
		t.Fatalf("stale observation applied: %v", h.member("backend", "1"))
	}
	if obs := after.GetObservations(); len(obs) != 1 || obs[0].GetDown() || obs[0].GetUnixNanos() != t0+100 {
		t.Fatalf("observations = %v", obs)
	}
	// The same time is not older: it replaces (a retry is a no-op).
	h.must(cmdObserve(t0+300, "backend", "1", "a", true, t0+100, "refused"))
	if h.member("backend", "1").GetVerdict() != down {
		t.Fatal("observation with equal time ignored")
	}
}

func TestVerdictBalancerSetChanges(t *testing.T) {
	h := fxNew(t)
	h.must(cmdBalancers(t0, "a", "b", "c"))
	h.must(fxBackendWith(t0)...)
	h.must(cmdObserve(t0+1, "backend", "1", "a", true, t0, "refused"),
		cmdObserve(t0+1, "backend", "1", "b", true, t0, "refused"),
		cmdObserve(t0+1, "backend", "2", "a", true, t0, "refused"))
	if h.member("backend", "1").GetVerdict() != down {
		t.Fatal("want DOWN with 2/3")
	}
	// a leaves; d joins. Only b's down view is left, but d has not
	// judged yet and could make 2/3: the verdict stands until it does.
	h.must(cmdBalancers(t0+10, "b", "c", "d"))
	if m := h.member("backend", "1"); m.GetVerdict() != down {
		t.Fatalf("after a left, before d judged: %v", m)
	}
	// d sees it up: 1/3, so UP again.
	h.must(cmdObserve(t0+11, "backend", "1", "d", false, t0+11, ""))
	m := h.member("backend", "1")
	if m.GetVerdict() != up || m.GetVerdictSinceUnixNanos() != t0+11 || m.GetVerdictCause() != "up: 1/3 nodes observe down" {
		t.Fatalf("after a left and d judged: %v", m)
	}
	for _, o := range h.f.State().GetObservations() {
		if o.GetNode() == "a" {
			t.Fatalf("observation of removed balancer kept: %v", o)
		}
	}
	// a is no balancer now: its views are ignored.
	h.must(cmdObserve(t0+20, "backend", "1", "a", true, t0+20, ""))
	if len(h.f.State().GetObservations()) != 2 {
		t.Fatalf("observation by a non-balancer recorded: %v", h.f.State().GetObservations())
	}
	// Shrinking the set can make a minority a majority.
	h.must(cmdBalancers(t0+30, "b"))
	if m := h.member("backend", "1"); m.GetVerdict() != down || m.GetVerdictCause() != "1/1 nodes observe down: refused" {
		t.Fatalf("after shrink to b: %v", m)
	}
}

func TestVerdictDevNode(t *testing.T) {
	h := fxNew(t)
	h.must(fxBackendWith(t0)...) // no SetBalancers: a lone -dev node
	h.must(cmdObserve(t0+1, "backend", "3", "dev", true, t0+1, "connection refused"))
	if m := h.member("backend", "3"); m.GetVerdict() != down || m.GetVerdictCause() != "1/1 nodes observe down: connection refused" {
		t.Fatalf("member = %v", m)
	}
	h.must(cmdObserve(t0+2, "backend", "3", "dev", false, t0+2, ""))
	if m := h.member("backend", "3"); m.GetVerdict() != up {
		t.Fatalf("member = %v", m)
	}
}

// fxFlappyBackend is a backend pool that holds a member down for 30 s after
// more than 2 flips within a minute.
func fxFlappyBackend() *gwelbv1.Pool {
	p := fxBackend()
	p.Health = &gwelbv1.HealthCheck{FlapLimit: 2, FlapWindowMs: 60_000, HoldDownMs: 30_000}
	return p
}

func TestVerdictFlapDamping(t *testing.T) {
	sec := int64(time.Second)
	h := fxNew(t)
	h.must(cmdBalancers(t0, "a"), cmdPutPool(t0, fxFlappyBackend()),
		cmdPutMember(t0, "backend", "1", "http://10.0.0.1:1"), cmdPutMember(t0, "backend", "2", "http://10.0.0.2:1"))
	obs := func(at int64, isDown bool) *gwelbv1.Command {
		return cmdObserve(at, "backend", "1", "a", isDown, at, "probe")
	}
	h.must(obs(t0+1*sec, true), obs(t0+2*sec, false)) // 2 flips: at the limit, not over it
	if m := h.member("backend", "1"); m.GetVerdict() != up || m.GetHoldDownUntilUnixNanos() != 0 || len(m.GetFlipsUnixNanos()) != 2 {
		t.Fatalf("after 2 flips: %v", m)
	}
	h.must(obs(t0+3*sec, true)) // third flip within the window: held down
	m := h.member("backend", "1")
	holdUntil := t0 + 33*sec
	if m.GetVerdict() != down || m.GetHoldDownUntilUnixNanos() != holdUntil || !strings.Contains(m.GetVerdictCause(), "flapping (3 flips in 1m0s), held down until") {
		t.Fatalf("after 3 flips: %v", m)
	}
	// Up again, but held: the verdict stays DOWN until the hold ends.
	h.must(obs(t0+4*sec, false), obs(t0+10*sec, true), obs(t0+11*sec, false))
	if m := h.member("backend", "1"); m.GetVerdict() != down || m.GetHoldDownUntilUnixNanos() != holdUntil || m.GetVerdictSinceUnixNanos() != t0+3*sec {
		t.Fatalf("while held: %v", m)
	}
	// A command just before the end does not release it ...
	h.must(cmdSetState(holdUntil-1, "backend", "2", gwelbv1.AdminState_ADMIN_STATE_DRAIN))
	if m := h.member("backend", "1"); m.GetVerdict() != down {
		t.Fatalf("released early: %v", m)
	}
	// ... any command at or after the end does, with the history forgotten.
	npub := len(h.published)
	h.must(cmdSetState(holdUntil, "backend", "2", gwelbv1.AdminState_ADMIN_STATE_DRAIN)) // a no-op but for the release
	m = h.member("backend", "1")
	if m.GetVerdict() != up || m.GetHoldDownUntilUnixNanos() != 0 || m.GetVerdictSinceUnixNanos() != holdUntil ||
		!slices.Equal(m.GetFlipsUnixNanos(), []int64{holdUntil}) || len(h.published) != npub+1 {
		t.Fatalf("after hold: %v (published %d)", m, len(h.published)-npub)
	}
	p := h.f.Table().Pool("backend")
	i, _ := p.Lookup("1")
	if !p.Member(i).Usable() {
		t.Fatal("released member not usable in the table")
	}
	// Released while still observed down: stays DOWN, hold cleared.
	h2 := fxNew(t)
	h2.must(cmdBalancers(t0, "a"), cmdPutPool(t0, fxFlappyBackend()), cmdPutMember(t0, "backend", "1", "http://10.0.0.1:1"))
	h2.must(obs(t0+1*sec, true), obs(t0+2*sec, false), obs(t0+3*sec, true))
	h2.must(obs(t0+40*sec, true))
	if m := h2.member("backend", "1"); m.GetVerdict() != down || m.GetHoldDownUntilUnixNanos() != 0 || m.GetVerdictSinceUnixNanos() != t0+3*sec ||
		m.GetVerdictCause() != "1/1 nodes observe down: probe; hold-down over" {
		t.Fatalf("released while down: %v", m)
	}
}

func TestVerdictFlapDampingRefusesUp(t *testing.T) {
	hc := &gwelbv1.HealthCheck{FlapLimit: 1, FlapWindowMs: 10_000, HoldDownMs: 5_000}
	sec := int64(time.Second)
	cur := verdictFields{verdict: down, since: t0, flips: []int64{t0}}
	got := deriveVerdict(cur, []*gwelbv1.Observation{fxObs("a", false, "")}, []string{"a"}, 0, hc, t0+sec)
	if got.verdict != down || got.holdUntil != t0+6*sec || got.since != t0 || !slices.Equal(got.flips, []int64{t0}) {
		t.Fatalf("got %+v", got)
	}
	if !slices.Equal(cur.flips, []int64{t0}) {
		t.Fatal("input modified")
	}
	// Flips older than the window do not count.
	got = deriveVerdict(cur, []*gwelbv1.Observation{fxObs("a", false, "")}, []string{"a"}, 0, hc, t0+10*sec)
	if got.verdict != up || got.holdUntil != 0 || !slices.Equal(got.flips, []int64{t0 + 10*sec}) {
		t.Fatalf("got %+v", got)
	}
}

func TestVerdictFlipHistoryBounded(t *testing.T) {
	cur := verdictFields{verdict: up}
	hc := &gwelbv1.HealthCheck{FlapWindowMs: 1 << 40} // damping off, huge window
	for i := range 200 {
		isDown := cur.verdict == up
		cur = deriveVerdict(cur, []*gwelbv1.Observation{fxObs("a", isDown, "")}, nil, 0, hc, t0+int64(i))
	}
	if len(cur.flips) != maxFlips || cur.flips[maxFlips-1] != t0+199 {
		t.Fatalf("%d flips kept, last %d", len(cur.flips), cur.flips[len(cur.flips)-1])
	}
}

func TestHealthSpecWithDefaults(t *testing.T) {
	got := HealthSpec{Rise: 5, FlapLimit: 3}.WithDefaults("/frontend")
	want := HealthSpec{Path: "/frontend/about", Interval: 2 * time.Second, Timeout: time.Second, Rise: 5, Fall: 2, ExpectStatus: 200, FlapLimit: 3}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if got := (HealthSpec{}).WithDefaults("/").Path; got != "/about" {
		t.Errorf("root pool path = %q", got)
	}
	if got := (HealthSpec{Path: "/health"}).WithDefaults("/x").Path; got != "/health" {
		t.Errorf("explicit path replaced: %q", got)
	}
}
