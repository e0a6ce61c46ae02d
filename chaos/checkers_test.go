package main

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The checkers must be able to fail: each test feeds a small hand-built
// history with one planted violation and expects exactly that one, and the
// same history without it to pass.

const s = T(time.Second)

// baseHistory is a three-node cluster in front of backend servers 1..3
// (routes 1..3 and the extra route x1 on server 1) and frontend servers
// GWE_F_1..2.
func baseHistory() *History {
	return &History{
		End:   100 * s,
		Nodes: []string{"n1", "n2", "n3"},
		RouteServer: map[string]string{
			"backend/1": "1", "backend/2": "2", "backend/3": "3", "backend/x1": "1",
			"frontend/GWE_F_1": "GWE_F_1", "frontend/GWE_F_2": "GWE_F_2",
		},
		PoolServers: map[string][]string{"backend": {"1", "2", "3"}, "frontend": {"GWE_F_1", "GWE_F_2"}},
		InsertPools: map[string]bool{"backend": true},
		Windows:     newWindows(),
		Slack:       s,
		Horizon:     10 * s,
		Extra:       []string{"backend/x1"},
	}
}

func req(id int64, node string, start T, pool, sent, server, setCookie string) Request {
	return Request{ID: id, Session: "v1/1", Kind: "http", Pool: pool, Node: node, Start: start, End: start + s/10,
		Sent: sent, Server: server, SetCookie: setCookie, Status: 200}
}

// only asserts that vs is exactly one violation of inv mentioning want.
func only(t *testing.T, vs []Violation, inv, want string) {
	t.Helper()
	if len(vs) != 1 {
		t.Fatalf("want exactly one %s violation mentioning %q, got %d: %+v", inv, want, len(vs), vs)
	}
	if vs[0].Invariant != inv || !strings.Contains(vs[0].Detail, want) {
		t.Fatalf("want a %s violation mentioning %q, got %+v", inv, want, vs[0])
	}
}

func none(t *testing.T, vs []Violation) {
	t.Helper()
	if len(vs) != 0 {
		t.Fatalf("want no violation, got %d: %+v", len(vs), vs)
	}
}

func TestStickinessCleanHistoryPasses(t *testing.T) {
	h := baseHistory()
	h.Requests = []Request{
		req(1, "n1", 1*s, "backend", "", "2", ".2"), // new session, pinned to 2
		req(2, "n2", 2*s, "backend", ".2", "2", ""), // through another node: still 2
		req(3, "n3", 3*s, "backend", ".2", "2", ""), // and the third
		req(4, "n1", 3*s, "frontend", ".GWE_F_1", "GWE_F_1", ""),
		req(5, "n2", 4*s, "frontend", "abc.GWE_F_2", "GWE_F_2", ""),
	}
	vs, _ := checkStickiness(h)
	none(t, vs)
}

func TestStickinessCatchesAMovedSession(t *testing.T) {
	h := baseHistory()
	h.Requests = []Request{
		req(1, "n1", 1*s, "backend", ".2", "2", ""),
		req(2, "n2", 2*s, "backend", ".2", "3", ".3"), // planted: 2 is up, yet re-pinned to 3
		req(3, "n3", 3*s, "backend", ".3", "3", ""),
	}
	vs, _ := checkStickiness(h)
	only(t, vs, invStickiness, "request 2 ")
}

func TestStickinessCatchesAFrontendAliasOnTheWrongServer(t *testing.T) {
	h := baseHistory()
	h.Requests = []Request{req(7, "n3", 5*s, "frontend", ".GWE_F_1", "GWE_F_2", "")}
	vs, _ := checkStickiness(h)
	only(t, vs, invStickiness, "request 7 ")
}

func TestStickinessExcusesAServerDeath(t *testing.T) {
	h := baseHistory()
	h.Windows.ServerDown["2"] = []Window{{From: 10 * s, To: 20 * s}}
	h.Requests = []Request{
		req(1, "n1", 11*s, "backend", ".2", "3", ".3"), // 2 is dead: re-pinned, fine
		req(2, "n2", 25*s, "backend", ".3", "3", ""),   // stays on 3 after 2 came back
		req(3, "n2", 26*s, "backend", ".2", "1", ".1"), // planted: a session still on 2 moved after 2 was back
	}
	vs, _ := checkStickiness(h)
	only(t, vs, invStickiness, "request 3 ")
}

// A node that was behind is no excuse: it must catch up before it moves a
// session. Its requests are counted.
func TestStickinessCatchesAMoveThroughAStaleNode(t *testing.T) {
	h := baseHistory()
	h.Windows.ServerDown["2"] = []Window{{From: 10 * s, To: 20 * s}}
	// n3 was killed at 15 s with a table where 2 was down, and caught up at 32 s.
	h.Windows.NodeStale["n3"] = []Window{{From: 15 * s, To: 32 * s}}
	h.Requests = []Request{
		req(1, "n3", 19*s, "backend", ".2", "1", ".1"), // 2 was down during the request: excused
		req(2, "n3", 30*s, "backend", ".2", "1", ".1"), // planted: 2 is back, n3's table is old
		req(3, "n3", 31*s, "backend", ".3", "3", ""),
	}
	vs, st := checkStickiness(h)
	only(t, vs, invStickiness, "request 2 ")
	if !strings.Contains(vs[0].Detail, "node_stale") {
		t.Errorf("the violation does not say the node was stale: %s", vs[0].Detail)
	}
	if st.StaleRequests != 3 || st.StaleMoves != 2 || st.ByServerDown != 1 {
		t.Fatalf("want 3 requests and 2 moves through the stale node, one excused by the server's death, got %+v", st)
	}
}

func TestStickinessExcusesAnOperatorDisableUntilItIsUndone(t *testing.T) {
	h := baseHistory()
	h.Admin = []AdminOp{
		{ID: 0, Kind: opPut, Key: "backend/x1", State: "active", Weight: 1, Invoke: 1 * s, Return: 1*s + s/10, Outcome: outOK},
		{ID: 1, Kind: opSet, Key: "backend/x1", State: "disabled", Invoke: 10 * s, Return: 10*s + s/10, Outcome: outOK},
		{ID: 2, Kind: opSet, Key: "backend/x1", State: "active", Invoke: 20 * s, Return: 20*s + s/10, Outcome: outOK},
	}
	h.Requests = []Request{
		req(1, "n1", 12*s, "backend", ".x1", "3", ".3"), // disabled: fails over
		req(2, "n2", 20*s, "backend", ".x1", "2", ".2"), // the enable is in flight: still excused
		req(3, "n2", 30*s, "backend", ".x1", "2", ".2"), // planted: x1 active again for 10 s
	}
	vs, _ := checkStickiness(h)
	only(t, vs, invStickiness, "request 3 ")
}

func TestStickinessCatchesACookieNamingAnotherServer(t *testing.T) {
	h := baseHistory()
	h.Requests = []Request{req(4, "n1", 1*s, "backend", "", "2", ".3")}
	vs, _ := checkStickiness(h)
	only(t, vs, invStickiness, "Set-Cookie names route 3")
}

func TestStickinessCatchesANewSessionWithoutCookie(t *testing.T) {
	h := baseHistory()
	h.Requests = []Request{
		req(5, "n1", 1*s, "backend", "", "2", ""),
		req(6, "n1", 1*s, "frontend", ".GWE_F_1", "GWE_F_1", ""), // the frontend pool inserts nothing
	}
	vs, _ := checkStickiness(h)
	only(t, vs, invStickiness, "no sticky cookie")
}

func probe(node, via string, index uint64, route, server string) AgreementProbe {
	return AgreementProbe{Fault: 3, Round: 1, Pool: "backend", Value: "agree.2", Via: via, Node: node, Dead: "2",
		IndexBefore: index, IndexAfter: index, Route: route, Server: server, At: 40 * s}
}

func TestAgreementCleanHistoryPasses(t *testing.T) {
	h := baseHistory()
	h.Agreement = []AgreementProbe{
		probe("n1", "http", 50, "3", "3"), probe("n2", "http", 50, "3", "3"), probe("n3", "http", 50, "3", "3"),
		probe("n1", "rpc", 50, "3", ""), probe("n2", "rpc", 50, "3", ""),
		probe("n3", "rpc", 49, "1", ""), // a node behind: not compared
	}
	vs, st := checkAgreement(h)
	none(t, vs)
	if st.Compared != 2 || st.NodesMaxed != 3 {
		t.Fatalf("want 2 groups compared with up to 3 nodes, got %+v", st)
	}
}

func TestAgreementCatchesDisagreeingNodes(t *testing.T) {
	h := baseHistory()
	h.Agreement = []AgreementProbe{
		probe("n1", "http", 50, "3", "3"), probe("n2", "http", 50, "1", "1"), probe("n3", "http", 50, "3", "3"),
	}
	vs, _ := checkAgreement(h)
	only(t, vs, invAgreement, "n2 -> route 1")
}

func TestAgreementCatchesADeadReplacement(t *testing.T) {
	h := baseHistory()
	p := probe("n1", "http", 50, "2", "2")
	h.Agreement = []AgreementProbe{p}
	vs, _ := checkAgreement(h)
	only(t, vs, invAgreement, "dead server 2")
}

func TestAgreementIgnoresAnswersAcrossATableChange(t *testing.T) {
	h := baseHistory()
	moving := probe("n2", "http", 50, "1", "1")
	moving.IndexAfter = 51
	h.Agreement = []AgreementProbe{probe("n1", "http", 50, "3", "3"), moving}
	vs, st := checkAgreement(h)
	none(t, vs)
	if st.Incomplete != 1 {
		t.Fatalf("want the group counted incomplete, got %+v", st)
	}
}

func write(id int, kind, state string, weight int32, invoke, ret T, outcome string) AdminOp {
	return AdminOp{ID: id, Kind: kind, Key: "backend/x1", State: state, Weight: weight, Via: "n1", Tool: "grpc",
		Invoke: invoke, Return: ret, Outcome: outcome}
}

func read(id int, at T, v MemberVal) AdminOp {
	r := map[string]MemberVal{}
	if v.Present {
		r["backend/x1"] = v
	}
	return AdminOp{ID: id, Kind: opRead, Via: "n2", Tool: "grpc", Invoke: at, Return: at + s/10, Outcome: outOK, Read: r}
}

func TestDurabilityCleanHistoryPasses(t *testing.T) {
	h := baseHistory()
	h.Admin = []AdminOp{
		write(1, opPut, "active", 2, 1*s, 2*s, outOK),
		write(2, opSet, "drain", 0, 3*s, 4*s, outOK),
		write(3, opSet, "disabled", 0, 5*s, 6*s, outIndeterminate), // maybe applied
		read(4, 90*s, MemberVal{Present: true, Weight: 2, State: "disabled"}),
	}
	h.FinalNodes = []NodeState{{Node: "n1", TableIndex: 9, Members: map[string]MemberVal{"backend/x1": {Present: true, Weight: 2, State: "disabled"}}}}
	none(t, checkDurability(h))
}

func TestDurabilityCatchesALostWrite(t *testing.T) {
	h := baseHistory()
	h.Admin = []AdminOp{
		write(1, opPut, "active", 2, 1*s, 2*s, outOK),
		write(2, opSet, "drain", 0, 3*s, 4*s, outOK),
		read(3, 90*s, MemberVal{Present: true, Weight: 2, State: "active"}), // planted: the drain is gone
	}
	only(t, checkDurability(h), invDurability, "member backend/x1 ends active")
}

func TestDurabilityCatchesANodeThatEndsElsewhere(t *testing.T) {
	h := baseHistory()
	h.Admin = []AdminOp{
		write(1, opPut, "active", 2, 1*s, 2*s, outOK),
		read(2, 90*s, MemberVal{Present: true, Weight: 2, State: "active"}),
	}
	h.FinalNodes = []NodeState{
		{Node: "n1", TableIndex: 9, Members: map[string]MemberVal{"backend/x1": {Present: true, Weight: 2, State: "active"}}},
		{Node: "n2", TableIndex: 9, Members: map[string]MemberVal{}}, // planted
	}
	only(t, checkDurability(h), invDurability, "node n2 ends")
}

func TestAvailabilityCleanHistoryPasses(t *testing.T) {
	h := baseHistory()
	h.Windows.NodeDown["n2"] = []Window{{From: 10 * s, To: 15 * s}}
	h.Windows.ServerKilled["3"] = []Window{{From: 30 * s, To: 32 * s}}
	h.Windows.LeaderTrouble = []Window{{From: 50 * s, To: 55 * s}}
	failed := req(1, "n2", 12*s, "backend", ".1", "", "")
	failed.Status, failed.Err = 0, "connection refused"
	badGateway := req(2, "n1", 31*s, "backend", ".3", "", "")
	badGateway.Status = 502
	h.Requests = []Request{failed, badGateway, req(3, "n1", 40*s, "backend", ".1", "1", "")}
	h.WSBreaks = []WSBreak{{Session: "v9/1", Pool: "backend", Node: "n2", Server: "1", LastOK: 9 * s, At: 11 * s, Err: "EOF"}}
	h.Admin = []AdminOp{write(1, opPut, "active", 1, 51*s, 59*s, outIndeterminate), write(2, opPut, "active", 1, 70*s, 71*s, outOK)}
	vs, st := checkAvailability(h)
	none(t, vs)
	if st.NodeUnavailable != 1 || st.ServerDeath != 1 || st.WSBreaks != 1 || st.AdminFailed != 1 {
		t.Fatalf("wrong excuse counts: %+v", st)
	}
}

func TestAvailabilityCatchesAFailureThroughALiveNode(t *testing.T) {
	h := baseHistory()
	h.Windows.NodeDown["n2"] = []Window{{From: 10 * s, To: 15 * s}}
	failed := req(1, "n1", 12*s, "backend", ".1", "", "") // planted: n1 was up
	failed.Status = 503
	h.Requests = []Request{failed}
	vs, _ := checkAvailability(h)
	only(t, vs, invAvailability, "request 1 ")
}

func TestAvailabilityCatchesA502OutsideTheServerDeathWindow(t *testing.T) {
	h := baseHistory()
	h.Windows.ServerKilled["3"] = []Window{{From: 30 * s, To: 32 * s}}
	bad := req(2, "n1", 40*s, "backend", ".3", "", "")
	bad.Status = 502
	h.Requests = []Request{bad}
	vs, _ := checkAvailability(h)
	only(t, vs, invAvailability, "status 502")
}

func TestAvailabilityCatchesAWebSocketCutWithoutCause(t *testing.T) {
	h := baseHistory()
	h.WSBreaks = []WSBreak{{Session: "v9/1", Pool: "backend", Node: "n2", Server: "1", LastOK: 20 * s, At: 21 * s, Err: "EOF"}}
	vs, _ := checkAvailability(h)
	only(t, vs, invAvailability, "WebSocket of session v9/1")
}

func TestAvailabilityCatchesAnAdminWriteFailingInCalm(t *testing.T) {
	h := baseHistory()
	h.Windows.LeaderTrouble = []Window{{From: 50 * s, To: 55 * s}}
	h.Admin = []AdminOp{write(1, opPut, "active", 1, 70*s, 78*s, outIndeterminate)}
	vs, _ := checkAvailability(h)
	only(t, vs, invAvailability, "admin op 1 ")
}

func TestLinearizabilityCleanHistoryPasses(t *testing.T) {
	h := baseHistory()
	h.Admin = []AdminOp{
		write(1, opPut, "active", 2, 1*s, 2*s, outOK),
		write(2, opSet, "drain", 0, 3*s, 5*s, outOK),
		read(3, 4*s, MemberVal{Present: true, Weight: 2, State: "active"}), // concurrent with the set: either is fine
		write(4, opRemove, "", 0, 6*s, 7*s, outIndeterminate),
		read(5, 8*s, MemberVal{Present: true, Weight: 2, State: "drain"}), // the remove has not happened (yet)
		read(6, 9*s, MemberVal{}),                                         // now it has
		write(7, opSet, "active", 0, 10*s, 11*s, outNotFound),
		write(8, opPut, "disabled", 1, 12*s, 13*s, outFailed), // never reached a node: left out
		read(9, 14*s, MemberVal{}),
	}
	vs, st := checkLinearizability(h, 10*time.Second, "")
	none(t, vs)
	if st.Keys != 1 || st.Indeterminate != 1 {
		t.Fatalf("unexpected stats %+v", st)
	}
}

func TestLinearizabilityCatchesAStaleRead(t *testing.T) {
	h := baseHistory()
	h.Admin = []AdminOp{
		write(1, opPut, "active", 2, 1*s, 2*s, outOK),
		write(2, opSet, "drain", 0, 3*s, 4*s, outOK),
		read(3, 5*s, MemberVal{Present: true, Weight: 2, State: "active"}), // planted: the drain was acknowledged
	}
	vs, _ := checkLinearizability(h, 10*time.Second, "")
	only(t, vs, invLinearizability, "backend/x1")
}

func TestLinearizabilityCatchesARemoveThatFoundNothing(t *testing.T) {
	h := baseHistory()
	h.Admin = []AdminOp{
		write(1, opPut, "active", 2, 1*s, 2*s, outOK),
		write(2, opRemove, "", 0, 3*s, 4*s, outNotFound), // planted: the member was there
	}
	vs, _ := checkLinearizability(h, 10*time.Second, "")
	only(t, vs, invLinearizability, "backend/x1")
}

func TestAdminUnusableWindows(t *testing.T) {
	ops := []AdminOp{
		write(1, opRemove, "", 0, 10*s, 11*s, outIndeterminate),
		write(2, opPut, "active", 1, 12*s, 13*s, outOK), // may precede the remove: does not close it
		write(3, opPut, "drain", 1, 30*s, 31*s, outOK),  // past the horizon: closes it
	}
	got := adminUnusable(ops, nil, s, 10*s)["backend/x1"]
	if len(got) != 1 || got[0].From != 10*s || got[0].To != 32*s {
		t.Fatalf("want one window [10s, 32s], got %+v", got)
	}
	got = adminUnusable(ops, []string{"backend/x1"}, s, 10*s)["backend/x1"]
	if len(got) != 2 || got[0].From != 0 || got[0].To != 14*s {
		t.Fatalf("want [0s, 14s] (not created before the first put) first, got %+v", got)
	}
}

// The move the chaos suite used to excuse as "through stale": a node down
// while a member was added serves a session pinned to it.
func TestStickinessCatchesAStaleNodeThatNeverSawTheMember(t *testing.T) {
	h := baseHistory()
	h.Admin = []AdminOp{write(1, opPut, "active", 1, 10*s, 10*s+s/10, outOK)}
	// n1 was killed at 5 s, before x1 existed, and caught up at 14 s.
	h.Windows.NodeStale["n1"] = []Window{{From: 5 * s, To: 14 * s}}
	h.Requests = []Request{
		req(1, "n2", 11*s, "backend", "", "1", ".x1"),
		req(2, "n1", 13*s, "backend", ".x1", "2", ".2"), // planted: the cluster had x1 since 10 s
		req(3, "n2", 13*s, "backend", ".x1", "1", ""),
	}
	vs, st := checkStickiness(h)
	only(t, vs, invStickiness, "request 2 ")
	if st.ByAdmin != 0 || st.StaleMoves != 1 || st.StaleRequests != 1 {
		t.Fatalf("want one unexcused move through the stale node, got %+v", st)
	}
}

func TestTheSeedFixesTheSchedule(t *testing.T) {
	p, err := profileNamed("long", 5)
	if err != nil {
		t.Fatal(err)
	}
	draw := func(seed uint64, netns bool) []string {
		r := rand.New(rand.NewPCG(seed, 0))
		out := p.plan(r, netns, 5)
		for range 20 {
			out = append(out, p.draw(r, netns, 5))
		}
		return out
	}
	a, b := draw(42, true), draw(42, true)
	if !slices.Equal(a, b) {
		t.Fatalf("seed 42 gave two schedules:\n%v\n%v", a, b)
	}
	if slices.Equal(a, draw(43, true)) {
		t.Fatal("seeds 42 and 43 gave the same schedule")
	}
	for _, k := range draw(42, false) {
		if slices.Contains(partitionKinds, k) {
			t.Fatalf("a partition (%s) was scheduled without namespaces", k)
		}
	}
}

func TestClassifyAdminErrors(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{nil, outOK},
		{status.Error(codes.NotFound, "member not found"), outNotFound},
		{status.Error(codes.InvalidArgument, "bad"), outInvalid},
		{status.Error(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp 100.127.77.11:27000: connect: connection refused"`), outFailed},
		{status.Error(codes.Unavailable, "no leader: none elected within 5s"), outIndeterminate},
		{status.Error(codes.DeadlineExceeded, "context deadline exceeded"), outIndeterminate},
	} {
		if got, _ := classify(c.err); got != c.want {
			t.Errorf("classify(%v) = %s, want %s", c.err, got, c.want)
		}
	}
}

// A node that may be behind answers 503 rather than move a session whose
// member it may have missed (DESIGN.md §6.1): excused for a route an
// operator may have changed since the node lost touch, and nowhere else.
func TestAvailabilityExcusesOnlyTheRefusalsOfANodeBehind(t *testing.T) {
	h := baseHistory()
	h.Admin = []AdminOp{write(1, opPut, "active", 1, 10*s, 10*s+s/10, outOK)}
	// n1 was cut off at 8 s, before x1 existed, and caught up at 14 s.
	h.Windows.NodeStale["n1"] = []Window{{From: 8 * s, To: 14 * s}}
	refused := func(id int64, node string, start T, sent string) Request {
		r := req(id, node, start, "backend", sent, "", "")
		r.Status = 503
		return r
	}
	h.Requests = []Request{
		refused(1, "n1", 12*s, ".x1"), // x1 was created while n1 was cut off
		refused(2, "n1", 13*s, ".2"),  // planted: 2 was in every table n1 ever had
		refused(3, "n2", 12*s, ".x1"), // planted: n2 was never behind
		refused(4, "n1", 20*s, ".x1"), // planted: n1 had caught up
	}
	vs, st := checkAvailability(h)
	if len(vs) != 3 || !strings.Contains(vs[0].Detail, "request 2 ") || !strings.Contains(vs[1].Detail, "request 3 ") || !strings.Contains(vs[2].Detail, "request 4 ") {
		t.Fatalf("want requests 2, 3 and 4 as violations, got %+v", vs)
	}
	if st.StaleRefused != 1 {
		t.Fatalf("want one refusal excused, got %+v", st)
	}
	// Moves in its place are the stickiness checker's violations.
	h.Requests = []Request{req(1, "n1", 12*s, "backend", ".x1", "2", ".2")}
	vs, _ = checkStickiness(h)
	only(t, vs, invStickiness, "request 1 ")
}

// Behind for longer than it refuses (cut off, or the quorum gone), a node
// routes on what it has: a move through it is excused then, not before.
func TestStickinessExcusesAMoveOnlyPastTheRefusalBound(t *testing.T) {
	h := baseHistory()
	h.Admin = []AdminOp{write(1, opPut, "active", 1, 10*s, 10*s+s/10, outOK)}
	h.Windows.NodeStale["n1"] = []Window{{From: 8 * s, To: 60 * s}}
	h.Requests = []Request{
		req(1, "n1", 8*s+staleRefuse+s, "backend", ".x1", "2", ".2"),
		req(2, "n1", 8*s+staleRefuse-s, "backend", ".x1", "2", ".2"), // planted: still within the bound
	}
	vs, st := checkStickiness(h)
	only(t, vs, invStickiness, "request 2 ")
	if st.PastRefusal != 1 {
		t.Fatalf("want one move excused past the bound, got %+v", st)
	}
}

// gwelbctl member add creates: it is refused, changing nothing, when the
// route exists. The model takes both outcomes, and catches a create that
// claims to have found a member that was not there, or to have created one
// that was.
func TestLinearizabilityModelsCreate(t *testing.T) {
	clean := []AdminOp{
		write(1, opCreate, "drain", 2, 1*s, 2*s, outOK),
		write(2, opCreate, "active", 3, 3*s, 4*s, outExists), // x1 was there: left as it is
		read(3, 5*s, MemberVal{Present: true, Weight: 2, State: "drain"}),
		write(4, opRemove, "", 0, 6*s, 7*s, outOK),
		write(5, opCreate, "active", 1, 8*s, 9*s, outOK),
		read(6, 10*s, MemberVal{Present: true, Weight: 1, State: "active"}),
	}
	for _, tc := range []struct {
		name  string
		admin []AdminOp
		want  string // "" for no violation
	}{
		{"clean", clean, ""},
		{"exists while absent", append(slices.Clone(clean[:4]), write(5, opCreate, "active", 1, 8*s, 9*s, outExists)), "backend/x1"},
		{"created while present", append(slices.Clone(clean[:1]), write(2, opCreate, "active", 3, 3*s, 4*s, outOK)), "backend/x1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := baseHistory()
			h.Admin = tc.admin
			vs, _ := checkLinearizability(h, 10*time.Second, "")
			if tc.want == "" {
				none(t, vs)
				return
			}
			only(t, vs, invLinearizability, tc.want)
		})
	}
	// A refused create is an answer, not a failure, and changes nothing.
	h := baseHistory()
	h.Admin = clean
	if vs, st := checkAvailability(h); len(vs) != 0 || st.AdminOK != len(clean) {
		t.Errorf("availability of a clean create history: %+v, %+v", vs, st)
	}
	if vs := checkDurability(h); len(vs) != 0 {
		t.Errorf("durability of a clean create history: %+v", vs)
	}
}

// A WebSocket handshake the node answers 502 right after a GWE server's
// death is excused as an HTTP request's is (the dial records its error
// too); outside the window it is a violation.
func TestAvailabilityJudgesAWebSocketHandshakeByItsAnswer(t *testing.T) {
	h := baseHistory()
	h.Windows.ServerKilled["2"] = []Window{{From: 30 * s, To: 32 * s}}
	ws := func(id int64, start T) Request {
		r := req(id, "n1", start, "backend", ".2", "", "")
		r.Kind, r.Status, r.Err = "ws", 502, "failed to WebSocket dial: expected handshake response status code 101 but got 502"
		return r
	}
	h.Requests = []Request{ws(1, 31*s), ws(2, 40*s)} // planted: request 2, long after the death
	vs, st := checkAvailability(h)
	only(t, vs, invAvailability, "request 2 ")
	if st.ServerDeath != 1 {
		t.Fatalf("want the handshake in the window excused, got %+v", st)
	}
}
