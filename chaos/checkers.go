package main

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"
)

// The invariants of DESIGN.md, as the checkers name them.
const (
	invStickiness      = "stickiness"
	invAgreement       = "agreement"
	invDurability      = "durability"
	invAvailability    = "availability"
	invLinearizability = "linearizability"
)

// isPut tells whether an admin write puts the whole member (a create
// that took effect did).
func isPut(op *AdminOp) bool { return op.Kind == opPut || op.Kind == opCreate }

// disabling tells whether an admin write may make its member unusable:
// removed, or disabled.
func disabling(op *AdminOp) bool {
	return op.Kind == opRemove || (isPut(op) || op.Kind == opSet) && op.State == "disabled"
}

// enabling tells whether an admin write makes its member usable (active or
// drain: a draining member keeps its sticky sessions).
func enabling(op *AdminOp) bool {
	return (isPut(op) || op.Kind == opSet) && op.State != "disabled"
}

// adminUnusable returns, per member key, the windows during which an
// operator may have made the member unusable: from the invocation of a
// remove or disable until an acknowledged enable invoked after the disable
// surely took effect has returned, plus the propagation slack. A disable
// of unknown outcome may take effect up to the horizon after its caller
// gave up. The members of keys do not exist at first: they are unusable
// from the start until the first acknowledged put has returned, plus the
// slack.
func adminUnusable(ops []AdminOp, keys []string, slack, horizon T) map[string][]Window {
	byKey := map[string][]*AdminOp{}
	for i := range ops {
		op := &ops[i]
		if op.effectful() {
			byKey[op.Key] = append(byKey[op.Key], op)
		}
	}
	out := map[string][]Window{}
	for _, k := range keys {
		end := never
		for _, e := range byKey[k] {
			if e.Outcome == outOK && isPut(e) && enabling(e) && e.Return+slack < end {
				end = e.Return + slack
			}
		}
		out[k] = append(out[k], Window{From: 0, To: end, Why: "not created yet"})
	}
	for k, kops := range byKey {
		for _, o := range kops {
			if !disabling(o) {
				continue
			}
			surely := o.Return
			if o.Outcome == outIndeterminate {
				surely = o.Return + horizon
			}
			end := never
			for _, e := range kops {
				if e.Outcome == outOK && enabling(e) && e.Invoke > surely && e.Return+slack < end {
					end = e.Return + slack
				}
			}
			out[k] = append(out[k], Window{From: o.Invoke, To: end, Why: fmt.Sprintf("admin op %d: %s %s", o.ID, o.Kind, o.State)})
		}
	}
	return out
}

// StickinessStats tells how much the stickiness check saw.
type StickinessStats struct {
	Checked       int `json:"checked"`        // answered requests that carried a known route
	Moves         int `json:"moves"`          // of them, served elsewhere or re-pinned
	ByServerDown  int `json:"by_server_down"` // moves excused: the route's server was down
	ByAdmin       int `json:"by_admin"`       // moves excused: an operator removed or disabled the route
	StaleRequests int `json:"stale_requests"` // checked requests through a node in a node_stale window
	StaleMoves    int `json:"stale_moves"`    // of the moves, those through a node in a node_stale window (no excuse for it)
	PastRefusal   int `json:"past_refusal"`   // moves excused: through a node behind for longer than it refuses moves (staleRefuse)
	NewSessions   int `json:"new_sessions"`   // answered requests that carried no route
	SessionsMoved int `json:"sessions_moved"` // sessions with at least one excused move
}

// staleRefuse mirrors cluster/catchup.go (DESIGN.md §6.1, §8): how long a
// node that knows it may be behind refuses to move a session whose member
// it does not know or knows as disabled. Behind for longer (cut off, or
// the quorum gone), it routes on what it has (invariant 4). The window's
// start is when the node lost touch; it noticed a moment later, so this
// errs on the strict side.
const staleRefuse = 30 * T(time.Second)

// pastRefusal tells whether r went through a node that had been behind for
// longer than staleRefuse when r began.
func pastRefusal(h *History, r *Request) bool {
	for _, w := range h.Windows.NodeStale[r.Node] {
		if w.From+staleRefuse <= r.Start && r.Start <= w.To {
			return true
		}
	}
	return false
}

// checkStickiness checks invariant 1: a session stays on the GWE server its
// sticky value names for as long as that member is usable, through every
// node. Every answered request is checked against the route it carried: a
// different server, or a new route in Set-Cookie, is a move, and a move is
// allowed only if the carried route may have been unusable (server down,
// removed or disabled) during the request. A node that restarted, was
// paused or cut off gets no more slack than the others: it catches up
// before it routes, or before it moves a session, and one that cannot
// answers 503 rather than move a session it cannot place (checked by
// checkAvailability), so a visitor does not lose a chat because the node
// they reached was behind. Only a node behind for longer than staleRefuse
// routes on what it has. (Requests through such nodes are still counted,
// to show what the run exercised.) A cookie must also name the server that
// answered, and a new session must get one.
func checkStickiness(h *History) ([]Violation, StickinessStats) {
	admin := adminUnusable(h.Admin, h.Extra, h.Slack, h.Horizon)
	var st StickinessStats
	moved := map[string]bool{}
	var out []Violation
	for i := range h.Requests {
		r := &h.Requests[i]
		if !r.ok() {
			continue
		}
		setRoute := routeOf(r.SetCookie)
		if setRoute != "" {
			if srv, ok := h.RouteServer[key(r.Pool, setRoute)]; ok && srv != r.Server {
				out = append(out, Violation{invStickiness, r.Start, fmt.Sprintf(
					"request %d (%s, session %s, node %s): Set-Cookie names route %s of server %s but server %q answered",
					r.ID, r.Pool, r.Session, r.Node, setRoute, srv, r.Server)})
			}
		}
		carried := routeOf(r.Sent)
		if carried == "" {
			st.NewSessions++
			if h.InsertPools[r.Pool] && setRoute == "" {
				out = append(out, Violation{invStickiness, r.Start, fmt.Sprintf(
					"request %d (%s, session %s, node %s): a new session got no sticky cookie (server %q)",
					r.ID, r.Pool, r.Session, r.Node, r.Server)})
			}
			continue
		}
		k := key(r.Pool, carried)
		want, known := h.RouteServer[k]
		if !known {
			continue
		}
		st.Checked++
		stale := anyOverlap(h.Windows.NodeStale[r.Node], r.Start, r.End)
		if stale {
			st.StaleRequests++
		}
		if r.Server == want && (setRoute == "" || setRoute == carried) {
			continue
		}
		st.Moves++
		if stale {
			st.StaleMoves++
		}
		server, byAdmin := anyOverlap(h.Windows.ServerDown[want], r.Start, r.End), anyOverlap(admin[k], r.Start, r.End)
		if server || byAdmin {
			if server {
				st.ByServerDown++
			} else {
				st.ByAdmin++
			}
			moved[r.Session] = true
			continue
		}
		if pastRefusal(h, r) {
			st.PastRefusal++
			moved[r.Session] = true
			continue
		}
		what := fmt.Sprintf("server %q", r.Server)
		if setRoute != "" && setRoute != carried {
			what += fmt.Sprintf(" with Set-Cookie route %s", setRoute)
		}
		node := r.Node
		if stale {
			node += ", in a node_stale window"
		}
		out = append(out, Violation{invStickiness, r.Start, fmt.Sprintf(
			"request %d (%s %s, session %s, node %s, %v-%v): carried route %s (server %s, usable) but was served by %s",
			r.ID, r.Kind, r.Pool, r.Session, node, r.Start, r.End, carried, want, what)})
	}
	st.SessionsMoved = len(moved)
	return out, st
}

// AgreementStats tells how much evidence the agreement check had.
type AgreementStats struct {
	Groups     int `json:"groups"`      // (fault, round, way of asking) groups
	Compared   int `json:"compared"`    // groups with at least two answers at one table index
	Probes     int `json:"probes"`      // answers in all
	Comparable int `json:"comparable"`  // answers given at a known, unchanging table index
	Incomplete int `json:"incomplete"`  // groups with fewer than two comparable answers
	NodesMaxed int `json:"nodes_maxed"` // most nodes compared in one group
}

// checkAgreement checks invariant 2: after a server's verdict went DOWN,
// every node sends the same sticky value to the same replacement. Answers
// are compared only between nodes that answered at the same table index
// (the same replicated state), which the probes bracket with Status calls
// before and after; and no node may send it to the dead server.
func checkAgreement(h *History) ([]Violation, AgreementStats) {
	type gk struct {
		fault, round int
		pool, value  string
		via          string
	}
	groups := map[gk][]*AgreementProbe{}
	var st AgreementStats
	for i := range h.Agreement {
		p := &h.Agreement[i]
		k := gk{p.Fault, p.Round, p.Pool, p.Value, p.Via}
		groups[k] = append(groups[k], p)
		st.Probes++
	}
	keys := slices.Collect(maps.Keys(groups))
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if a.fault != b.fault {
			return a.fault < b.fault
		}
		if a.round != b.round {
			return a.round < b.round
		}
		return a.via+a.pool+a.value < b.via+b.pool+b.value
	})
	var out []Violation
	for _, k := range keys {
		st.Groups++
		byIndex := map[uint64][]*AgreementProbe{}
		for _, p := range groups[k] {
			if p.Err != "" || p.IndexBefore != p.IndexAfter || p.IndexBefore == 0 || (p.Route == "" && p.Server == "") {
				continue
			}
			st.Comparable++
			srv := p.Server
			if srv == "" {
				srv = h.RouteServer[key(p.Pool, p.Route)]
			}
			if srv != "" && srv == p.Dead {
				out = append(out, Violation{invAgreement, p.At, fmt.Sprintf(
					"fault %d: node %s (%s) still sends %s %q to dead server %s at table index %d",
					p.Fault, p.Node, p.Via, p.Pool, p.Value, p.Dead, p.IndexBefore)})
			}
			byIndex[p.IndexBefore] = append(byIndex[p.IndexBefore], p)
		}
		compared := false
		for index, ps := range byIndex {
			if len(ps) < 2 {
				continue
			}
			compared = true
			st.NodesMaxed = max(st.NodesMaxed, len(ps))
			answers := map[string][]string{}
			for _, p := range ps {
				answers[p.answer()] = append(answers[p.answer()], p.Node)
			}
			if len(answers) > 1 {
				var parts []string
				for _, a := range slices.Sorted(maps.Keys(answers)) {
					parts = append(parts, fmt.Sprintf("%s -> %s", strings.Join(answers[a], ","), a))
				}
				out = append(out, Violation{invAgreement, ps[0].At, fmt.Sprintf(
					"fault %d round %d: nodes at table index %d disagree on %s %q (%s): %s",
					k.fault, k.round, index, k.pool, k.value, k.via, strings.Join(parts, "; "))})
			}
		}
		if compared {
			st.Compared++
		} else {
			st.Incomplete++
		}
	}
	return out, st
}

// finalRead is the last successful read of the history, the state the
// run ended with.
func finalRead(h *History) *AdminOp {
	var last *AdminOp
	for i := range h.Admin {
		op := &h.Admin[i]
		if op.Kind == opRead && op.Outcome == outOK && (last == nil || op.Invoke > last.Invoke) {
			last = op
		}
	}
	return last
}

// checkDurability checks invariant 3: every acknowledged admin write is in
// the final state, unless a later write to the same member replaced it.
// The final value of a member must be the effect of a write that no
// acknowledged write followed (or of one whose outcome is unknown, or the
// initial absence if nothing was acknowledged). Every node must also end
// with the same members as the final read.
func checkDurability(h *History) []Violation {
	if h.Partial {
		return nil // an interrupted run has no final read to check against
	}
	final := finalRead(h)
	if final == nil {
		return []Violation{{invDurability, h.End, "no final read of the member table succeeded: durability unchecked"}}
	}
	byKey := map[string][]*AdminOp{}
	for i := range h.Admin {
		op := &h.Admin[i]
		if op.effectful() && op.Invoke < final.Invoke {
			byKey[op.Key] = append(byKey[op.Key], op)
		}
	}
	var out []Violation
	for _, k := range slices.Sorted(maps.Keys(byKey)) {
		ops := byKey[k]
		got := final.Read[k]
		acked := false
		var candidates []string
		match := false
		for _, o := range ops {
			if o.Outcome == outOK {
				acked = true
			}
			superseded := false
			for _, o2 := range ops {
				if o2.Outcome == outOK && o2.Invoke > o.returnOrNever() {
					superseded = true
					break
				}
			}
			if superseded {
				continue
			}
			want := effectOf(o)
			candidates = append(candidates, fmt.Sprintf("op %d %s", o.ID, describeVal(want)))
			if got.Present == want.Present && (!got.Present || got.State == want.State && (!isPut(o) || got.Weight == want.Weight)) {
				match = true
			}
		}
		if !acked && !got.Present {
			match = true
		}
		if !match {
			out = append(out, Violation{invDurability, final.Invoke, fmt.Sprintf(
				"member %s ends %s, but the writes that may be last are: %s",
				k, describeVal(got), strings.Join(candidates, "; "))})
		}
	}
	for _, n := range h.FinalNodes {
		for _, k := range h.Extra {
			if got, want := n.Members[k], final.Read[k]; got != want {
				out = append(out, Violation{invDurability, h.End, fmt.Sprintf(
					"node %s ends (table index %d) with member %s %s, the leader's final read says %s",
					n.Node, n.TableIndex, k, describeVal(got), describeVal(want))})
			}
		}
	}
	return out
}

// effectOf is the state a write leaves its member in (the weight of a set
// is whatever it was).
func effectOf(op *AdminOp) MemberVal {
	switch op.Kind {
	case opRemove:
		return MemberVal{}
	case opPut, opCreate:
		return MemberVal{Present: true, Weight: op.Weight, State: op.State}
	}
	return MemberVal{Present: true, State: op.State}
}

func describeVal(v MemberVal) string {
	if !v.Present {
		return "absent"
	}
	if v.Weight == 0 {
		return v.State
	}
	return fmt.Sprintf("%s weight %d", v.State, v.Weight)
}

// AvailabilityStats counts the failures the checker excused, by cause.
type AvailabilityStats struct {
	Requests        int `json:"requests"`
	OK              int `json:"ok"`
	NodeUnavailable int `json:"node_unavailable"` // through a killed, paused or starting node
	StaleRefused    int `json:"stale_refused"`    // 503s of a node behind the cluster for a route it may not know (DESIGN.md §6.1)
	ServerDeath     int `json:"server_death"`     // 502/504 while a GWE server had just died
	WSBreaks        int `json:"ws_breaks"`        // WebSocket sessions cut by a fault
	AdminFailed     int `json:"admin_failed"`     // admin calls that failed while leadership or the node was in trouble
	AdminOK         int `json:"admin_ok"`         // admin calls answered (ok or not found)
}

// adminGrace widens an admin call's interval backwards when looking for a
// fault that excuses its failure: a fault just before the call may still
// be felt.
const adminGrace = T(1e9)

// refusedWhileBehind tells whether r, answered 503, may be a node's
// refusal to move a session it cannot place (DESIGN.md §6.1): the node may
// have been behind (a node_stale window, or leader trouble, when every
// follower loses the leader's log), and the route r carried may have been
// made unusable by an operator (not created yet, removed, disabled) at a
// time the node's table could reflect — from the window's start, less the
// propagation slack, to r's end. A node refuses nothing else: a route its
// table honours is served, and a member it has as DOWN fails over.
func refusedWhileBehind(h *History, r *Request, admin map[string][]Window) bool {
	carried := routeOf(r.Sent)
	if !r.answered() || r.Status != http.StatusServiceUnavailable || carried == "" {
		return false
	}
	from := never
	for _, w := range h.Windows.NodeStale[r.Node] {
		if w.overlaps(r.Start, r.End) {
			from = min(from, w.From)
		}
	}
	for _, w := range h.Windows.LeaderTrouble {
		if w.overlaps(r.Start, r.End) {
			from = min(from, w.From)
		}
	}
	if from == never {
		return false
	}
	k := key(r.Pool, carried)
	if _, known := h.RouteServer[k]; !known {
		return true // a route no member of the run ever had
	}
	return anyOverlap(admin[k], from-h.Slack, r.End)
}

// checkAvailability checks invariant 4: requests through a node that is
// up (not killed, stopped or starting; a node cut off from its peers still
// serves) succeed — except 502/504 while a GWE server of the pool had just
// been killed and not every node knew (the retry's fallback may be a
// second member on the same dead server), and a 503 from a node that may
// be behind for a session it may not be able to place (refusedWhileBehind,
// the other side of invariant 1); WebSockets stay open unless
// their node or server fails; admin calls succeed unless the node they
// address or the leader was in trouble, or the cluster was without quorum.
func checkAvailability(h *History) ([]Violation, AvailabilityStats) {
	var out []Violation
	st := AvailabilityStats{Requests: len(h.Requests)}
	admin := adminUnusable(h.Admin, h.Extra, h.Slack, h.Horizon)
	for i := range h.Requests {
		r := &h.Requests[i]
		if r.ok() {
			st.OK++
			continue
		}
		if anyOverlap(h.Windows.NodeDown[r.Node], r.Start, r.End) {
			st.NodeUnavailable++
			continue
		}
		if refusedWhileBehind(h, r, admin) {
			st.StaleRefused++
			continue
		}
		if r.answered() && (r.Status == http.StatusBadGateway || r.Status == http.StatusGatewayTimeout) {
			killed := false
			for _, srv := range h.PoolServers[r.Pool] {
				killed = killed || anyOverlap(h.Windows.ServerKilled[srv], r.Start, r.End)
			}
			if killed {
				st.ServerDeath++
				continue
			}
		}
		what := r.Err
		if what == "" {
			what = fmt.Sprintf("status %d", r.Status)
		}
		out = append(out, Violation{invAvailability, r.Start, fmt.Sprintf(
			"request %d (%s %s, session %s, sent %q) through node %s, which was up, failed at %v-%v: %s",
			r.ID, r.Kind, r.Pool, r.Session, r.Sent, r.Node, r.Start, r.End, what)})
	}
	for _, b := range h.WSBreaks {
		if anyOverlap(h.Windows.NodeDown[b.Node], b.LastOK, b.At) || anyOverlap(h.Windows.ServerDown[b.Server], b.LastOK, b.At) {
			st.WSBreaks++
			continue
		}
		out = append(out, Violation{invAvailability, b.At, fmt.Sprintf(
			"WebSocket of session %s (%s) through node %s to server %s broke at %v (last echo %v) with node and server up: %s",
			b.Session, b.Pool, b.Node, b.Server, b.At, b.LastOK, b.Err)})
	}
	for i := range h.Admin {
		op := &h.Admin[i]
		switch op.Outcome {
		case outOK, outNotFound, outExists:
			st.AdminOK++
			continue
		case outInvalid:
			out = append(out, Violation{invAvailability, op.Invoke, fmt.Sprintf(
				"admin op %d (%s %s via %s) was rejected as invalid: %s", op.ID, op.Kind, op.Key, op.Via, op.Err)})
			continue
		}
		from := op.Invoke - adminGrace
		if anyOverlap(h.Windows.NodeDown[op.Via], from, op.Return) || anyOverlap(h.Windows.NodeIsolated[op.Via], from, op.Return) ||
			anyOverlap(h.Windows.LeaderTrouble, from, op.Return) {
			st.AdminFailed++
			continue
		}
		out = append(out, Violation{invAvailability, op.Invoke, fmt.Sprintf(
			"admin op %d (%s %s %s via %s, %s) %s at %v-%v with the node, the leader and a quorum up: %s",
			op.ID, op.Kind, op.Key, op.State, op.Via, op.Tool, op.Outcome, op.Invoke, op.Return, op.Err)})
	}
	return out, st
}
