package fsm

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// Probe defaults, as documented on the HealthCheck message.
const (
	DefaultProbeInterval = 2 * time.Second
	DefaultProbeTimeout  = time.Second
	DefaultProbeRise     = 2
	DefaultProbeFall     = 2
	DefaultExpectStatus  = 200
)

// maxFlips bounds the flip history of a member when flap damping is off, so
// a long flap window cannot grow the replicated state without limit.
const maxFlips = 64

// WithDefaults returns h with unset probe fields filled in for a pool with
// the given prefix. Flap damping has no defaults: it is off unless asked for.
func (h HealthSpec) WithDefaults(prefix string) HealthSpec {
	if h.Path == "" {
		h.Path = strings.TrimSuffix(prefix, "/") + "/about"
	}
	if h.Interval == 0 {
		h.Interval = DefaultProbeInterval
	}
	if h.Timeout == 0 {
		h.Timeout = DefaultProbeTimeout
	}
	if h.Rise == 0 {
		h.Rise = DefaultProbeRise
	}
	if h.Fall == 0 {
		h.Fall = DefaultProbeFall
	}
	if h.ExpectStatus == 0 {
		h.ExpectStatus = DefaultExpectStatus
	}
	return h
}

// verdictFields are the members' fields the FSM derives from observations;
// operators never set them.
type verdictFields struct {
	verdict   gwelbv1.Verdict
	since     int64
	cause     string
	holdUntil int64
	flips     []int64
}

func verdictOf(m *gwelbv1.Member) verdictFields {
	return verdictFields{
		verdict:   m.GetVerdict(),
		since:     m.GetVerdictSinceUnixNanos(),
		cause:     m.GetVerdictCause(),
		holdUntil: m.GetHoldDownUntilUnixNanos(),
		flips:     slices.Clone(m.GetFlipsUnixNanos()),
	}
}

func (v verdictFields) applyTo(m *gwelbv1.Member) {
	m.Verdict = v.verdict
	m.VerdictSinceUnixNanos = v.since
	m.VerdictCause = v.cause
	m.HoldDownUntilUnixNanos = v.holdUntil
	m.FlipsUnixNanos = v.flips
}

// Probers returns the balancer nodes assigned to probe member route of
// pool (bounded probing, DESIGN.md §5.5): the k nodes of balancers (sorted)
// with the highest rendezvous score of (node, pool, route), sorted by name;
// every balancer when k is 0 or at least their number. Every node computes
// the same set from the replicated balancers and the pool's health.probers,
// and when a balancer goes only the members it probed move, each to the
// next node in its own ranking. With no balancers it returns nil: the
// observing nodes decide (a lone -dev node).
func Probers(pool, route string, k int, balancers []string) []string {
	if k <= 0 || k >= len(balancers) {
		return balancers
	}
	type scored struct {
		node  string
		score uint64
	}
	key := pool + "\x00" + route
	all := make([]scored, len(balancers))
	for i, b := range balancers {
		all[i] = scored{b, hrwHash(b, key)}
	}
	slices.SortFunc(all, func(a, b scored) int {
		if a.score != b.score {
			if a.score > b.score {
				return -1
			}
			return 1
		}
		return strings.Compare(a.node, b.node)
	})
	out := make([]string, k)
	for i := range out {
		out[i] = all[i].node
	}
	slices.Sort(out)
	return out
}

// tally counts what the deciding nodes observe of one member: its assigned
// probers, and the nodes that do not probe it but whose data plane saw it
// fail (passive observations of down).
type tally struct {
	nodes   int    // size of the deciding set
	down    int    // how many of them observe down
	pending int    // assigned probers that have not judged since they were assigned (SetBalancers only)
	cause   string // first non-empty cause of a down observation, in node order
}

// countObservations tallies obs (the latest observation per node of one
// member) against the member's assigned probers (Probers, sorted). Each
// prober counts, as up until it reports down; a node outside the set counts
// only while its passive observation says down, adding itself to both sides
// of the majority. With no probers (no balancer set) the observing nodes
// are the set, so a lone -dev node decides alone.
func countObservations(obs []*gwelbv1.Observation, probers []string) tally {
	var t tally
	t.nodes = len(probers)
	// Walk in node order so "first cause" is the same on every node whatever
	// order the caller keeps observations in (the FSM keeps them in node
	// order: then there is nothing to copy).
	byNode := func(a, b *gwelbv1.Observation) int { return strings.Compare(a.GetNode(), b.GetNode()) }
	sorted := obs
	if !slices.IsSortedFunc(obs, byNode) {
		sorted = slices.Clone(obs)
		slices.SortFunc(sorted, byNode)
	}
	prev := ""
	for i, o := range sorted {
		if i > 0 && o.GetNode() == prev {
			continue // one voice per node
		}
		prev = o.GetNode()
		switch {
		case len(probers) == 0:
			t.nodes++
		case isMember(probers, o.GetNode()):
		case o.GetPassive() && o.GetDown():
			t.nodes++ // a passive reporter is counted while it reports down
		default:
			continue
		}
		if o.GetDown() {
			t.down++
			if t.cause == "" {
				t.cause = o.GetCause()
			}
		}
	}
	return t
}

// isMember reports whether sorted holds name.
func isMember(sorted []string, name string) bool {
	_, ok := slices.BinarySearch(sorted, name)
	return ok
}

// quorum is a strict majority of the deciding set.
func (t tally) quorum() int { return t.nodes/2 + 1 }

// verdict is DOWN when a strict majority observes down, so one partitioned
// or broken balancer can never take a GWE server out of rotation.
func (t tally) verdict() gwelbv1.Verdict {
	if t.down > 0 && t.down >= t.quorum() {
		return gwelbv1.Verdict_VERDICT_DOWN
	}
	return gwelbv1.Verdict_VERDICT_UP
}

func (t tally) String() string {
	if t.verdict() == gwelbv1.Verdict_VERDICT_DOWN {
		s := fmt.Sprintf("%d/%d nodes observe down", t.down, t.nodes)
		if t.cause != "" {
			s += ": " + t.cause
		}
		return s
	}
	return fmt.Sprintf("up: %d/%d nodes observe down", t.down, t.nodes)
}

// deriveVerdict re-derives a member's verdict fields at command time now
// from the latest observations of that member, counted against its
// assigned probers (sorted; empty means the observing nodes decide), and
// the pool's health check (nil: no flap damping). pending is how many of
// the probers were assigned by this command and have not judged yet: a
// DOWN verdict stands while they could still make the majority, so that
// replacing a prober that observed down does not lift the verdict before
// its successor has probed (it reports its first judgment promptly,
// cluster/health.go). It is a pure function: it reads no clock and leaves
// its arguments unchanged.
//
// Flap damping: a flip is a change of verdict. When flap_limit > 0 and a
// flip would make the flips within flap_window exceed flap_limit, the member
// is held DOWN until now+hold_down: a flip to DOWN is recorded and starts
// the hold, a flip to UP is refused. While held the verdict stays DOWN
// whatever the observations say; the first derivation at or after the end of
// the hold forgets the old flips, so the member is judged afresh.
func deriveVerdict(cur verdictFields, obs []*gwelbv1.Observation, probers []string, pending int, hc *gwelbv1.HealthCheck, now int64) verdictFields {
	t := countObservations(obs, probers)
	t.pending = pending
	next := cur
	next.flips = slices.Clone(cur.flips)

	released := false
	if cur.holdUntil != 0 {
		if now < cur.holdUntil {
			// Held: only DOWN is possible, and the member is already DOWN.
			return next
		}
		next.holdUntil = 0
		next.flips = nil
		released = true
	}

	target := t.verdict()
	if target == gwelbv1.Verdict_VERDICT_UP && cur.verdict == gwelbv1.Verdict_VERDICT_DOWN && t.down+t.pending >= t.quorum() {
		return next // new probers have not judged yet: the verdict stands
	}
	if target == cur.verdict {
		if released {
			next.cause = t.String() + "; hold-down over"
		}
		return next
	}

	window := hc.GetFlapWindowMs() * int64(time.Millisecond)
	flips := recentFlips(next.flips, now, window)
	flips = append(flips, now)
	limit := int(hc.GetFlapLimit())
	if limit > 0 && len(flips) > limit {
		next.holdUntil = addSat(now, hc.GetHoldDownMs()*int64(time.Millisecond))
		hold := fmt.Sprintf("flapping (%d flips in %v), held down until %s",
			len(flips), time.Duration(window), time.Unix(0, next.holdUntil).UTC().Format(time.RFC3339Nano))
		if target == gwelbv1.Verdict_VERDICT_UP {
			// Coming up again would be one flip too many: stay DOWN.
			next.flips = flips[:len(flips)-1]
			next.cause = t.String() + "; " + hold
			return next
		}
		next.verdict, next.since, next.flips = target, now, flips
		next.cause = t.String() + "; " + hold
		return next
	}
	if len(flips) > maxFlips {
		flips = slices.Clone(flips[len(flips)-maxFlips:])
	}
	next.verdict, next.since, next.cause, next.flips = target, now, t.String(), flips
	return next
}

// recentFlips returns the flips less than window before now (a flip
// "later" than now, from a proposer whose clock ran ahead, is kept).
func recentFlips(flips []int64, now, window int64) []int64 {
	var out []int64
	for _, f := range flips {
		if now-f < window {
			out = append(out, f)
		}
	}
	return out
}

// addSat adds without overflowing: a huge hold-down saturates instead of
// wrapping into the past.
func addSat(a, b int64) int64 {
	if b > 0 && a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

func (v verdictFields) equal(w verdictFields) bool {
	return v.verdict == w.verdict && v.since == w.since && v.cause == w.cause &&
		v.holdUntil == w.holdUntil && slices.Equal(v.flips, w.flips)
}
