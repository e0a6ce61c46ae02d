package main

import (
	"strings"
	"time"
)

// T is a point in a run: the time since the run started, on the driver's
// monotonic clock. Every record of a history uses it.
type T = time.Duration

// never is the end of an open window and the return time of an
// indeterminate admin operation: later than anything a run records.
const never = T(1<<62 - 1)

// Window is an interval [From, To] of a run, closed at both ends.
type Window struct {
	From T      `json:"from"`
	To   T      `json:"to"`
	Why  string `json:"why,omitempty"`
}

// overlaps tells whether w and [from, to] share a point.
func (w Window) overlaps(from, to T) bool { return w.From <= to && from <= w.To }

// anyOverlap tells whether any of ws shares a point with [from, to].
func anyOverlap(ws []Window, from, to T) bool {
	for _, w := range ws {
		if w.overlaps(from, to) {
			return true
		}
	}
	return false
}

// Request is one visitor request through one balancer node, or one
// WebSocket handshake (Kind "ws").
type Request struct {
	ID        int64  `json:"id"`
	Visitor   int    `json:"visitor"`
	Session   string `json:"session"`
	Kind      string `json:"kind"` // http or ws
	Pool      string `json:"pool"`
	Node      string `json:"node"`
	Start     T      `json:"start"`
	End       T      `json:"end"`
	Sent      string `json:"sent,omitempty"`       // the sticky value sent (alias or cookie value); "" for none
	Server    string `json:"server,omitempty"`     // X-GWE-Server, or a WebSocket's first message
	SetCookie string `json:"set_cookie,omitempty"` // value of the pool's sticky cookie in Set-Cookie, if any
	Status    int    `json:"status"`
	Err       string `json:"err,omitempty"`
}

// ok tells whether the request got an answer from a GWE server.
func (r *Request) ok() bool {
	return r.Err == "" && (r.Status >= 200 && r.Status <= 299 || r.Kind == "ws" && r.Status == 101)
}

// answered tells whether the node answered r with r.Status: a WebSocket
// dial that got an HTTP answer other than 101 records the dial's error
// too.
func (r *Request) answered() bool { return r.Err == "" || r.Kind == "ws" && r.Status != 0 }

// WSBreak is a WebSocket session that ended without the visitor asking.
type WSBreak struct {
	Visitor int    `json:"visitor"`
	Session string `json:"session"`
	Pool    string `json:"pool"`
	Node    string `json:"node"`
	Server  string `json:"server"`
	LastOK  T      `json:"last_ok"` // the last echo that came back intact
	At      T      `json:"at"`
	Err     string `json:"err"`
}

// Admin operation kinds and outcomes.
const (
	opPut = "put"
	// opCreate is gwelbctl's member add: a put that the FSM refuses when
	// the route exists (outExists), leaving the member as it is.
	opCreate = "create"
	opRemove = "remove"
	opSet    = "set"
	opRead   = "read"

	outOK            = "ok"
	outNotFound      = "notfound"
	outExists        = "exists"        // a create found the member there: certainly not applied
	outFailed        = "failed"        // certainly not applied (the node was never reached)
	outIndeterminate = "indeterminate" // may or may not have been applied
	outInvalid       = "invalid"       // rejected as malformed: a driver bug
)

// MemberVal is what the admin API holds for one extra member.
type MemberVal struct {
	Present bool   `json:"present"`
	Weight  int32  `json:"weight,omitempty"`
	State   string `json:"state,omitempty"` // active, drain, disabled
}

// AdminOp is one call of the admin API by the operator client: a write on
// one member (key "pool/route"), or a linearizable read of all of them.
type AdminOp struct {
	ID      int                  `json:"id"`
	Client  int                  `json:"client"`
	Kind    string               `json:"kind"`
	Key     string               `json:"key,omitempty"`
	Weight  int32                `json:"weight,omitempty"` // put
	State   string               `json:"state,omitempty"`  // put, set
	Via     string               `json:"via"`              // node addressed
	Tool    string               `json:"tool"`             // grpc or gwelbctl
	Invoke  T                    `json:"invoke"`
	Return  T                    `json:"return"`
	Outcome string               `json:"outcome"`
	Index   uint64               `json:"index,omitempty"`
	Err     string               `json:"err,omitempty"`
	Read    map[string]MemberVal `json:"read,omitempty"` // read: every extra member present, by key
}

// effectful tells whether the operation may have changed the state.
func (op *AdminOp) effectful() bool {
	return op.Kind != opRead && (op.Outcome == outOK || op.Outcome == outIndeterminate)
}

// returnOrNever is the return time, or never for an operation whose
// outcome is unknown: it may take effect at any time after its invocation.
func (op *AdminOp) returnOrNever() T {
	if op.Outcome == outIndeterminate {
		return never
	}
	return op.Return
}

// AgreementProbe is one node's answer, after a GWE server's verdict went
// DOWN, to "where do you send this sticky value?", asked of every live
// node with the same value.
type AgreementProbe struct {
	Fault       int    `json:"fault"`
	Round       int    `json:"round"`
	Pool        string `json:"pool"`
	Value       string `json:"value"`
	Via         string `json:"via"` // http, rpc or gwelbctl
	Node        string `json:"node"`
	Dead        string `json:"dead"` // the server whose sessions are re-routed
	IndexBefore uint64 `json:"index_before"`
	IndexAfter  uint64 `json:"index_after"`
	Route       string `json:"route,omitempty"`
	Server      string `json:"server,omitempty"`
	Err         string `json:"err,omitempty"`
	At          T      `json:"at"`
}

// answer is what probes are compared by: the route if known, else the server.
func (p *AgreementProbe) answer() string {
	if p.Route != "" {
		return "route " + p.Route
	}
	return "server " + p.Server
}

// NodeState is one node's view of the extra members at the end of a run.
type NodeState struct {
	Node       string               `json:"node"`
	TableIndex uint64               `json:"table_index"`
	Members    map[string]MemberVal `json:"members"`
}

// Windows are the intervals during which the driver's faults excuse
// behaviour that would otherwise break an invariant.
type Windows struct {
	// NodeDown: the node's process was killed, stopped (SIGSTOP), starting,
	// or gone; requests through it may fail.
	NodeDown map[string][]Window `json:"node_down"`
	// NodeStale: the node's table may be older than the cluster's; From is
	// when it lost touch, To when it had caught up again. No excuse for a
	// move (the node catches up before it moves a session, or answers 503:
	// refusedWhileBehind), except past staleRefuse; the report counts the
	// requests through it.
	NodeStale map[string][]Window `json:"node_stale"`
	// NodeIsolated: the node was cut off from its peers (partition).
	NodeIsolated map[string][]Window `json:"node_isolated"`
	// ServerDown: a GWE server was dead or failing its health check, from
	// the fault until every node routes to it again (verdict UP, local
	// quarantine over) plus slack.
	ServerDown map[string][]Window `json:"server_down"`
	// ServerKilled: a GWE server's process was dead and not every node knew
	// yet: from the kill until the verdict was DOWN everywhere, plus slack.
	ServerKilled map[string][]Window `json:"server_killed"`
	// LeaderTrouble: the leader was killed, paused, cut off, restarted or
	// replaced; admin calls may fail until a new leader serves.
	LeaderTrouble []Window `json:"leader_trouble"`
}

func newWindows() Windows {
	return Windows{
		NodeDown: map[string][]Window{}, NodeStale: map[string][]Window{}, NodeIsolated: map[string][]Window{},
		ServerDown: map[string][]Window{}, ServerKilled: map[string][]Window{},
	}
}

// History is everything a run recorded; the checkers are pure functions of it.
type History struct {
	End         T                   `json:"end"`
	Nodes       []string            `json:"nodes"`
	RouteServer map[string]string   `json:"route_server"` // "pool/route" -> server name, for every route visitors can meet
	PoolServers map[string][]string `json:"pool_servers"` // pool -> its GWE servers
	InsertPools map[string]bool     `json:"insert_pools"` // pools that insert their sticky cookie
	Requests    []Request           `json:"-"`
	WSBreaks    []WSBreak           `json:"-"`
	Admin       []AdminOp           `json:"-"`
	Agreement   []AgreementProbe    `json:"-"`
	FinalNodes  []NodeState         `json:"final_nodes"`
	Windows     Windows             `json:"windows"`
	Driver      []Violation         `json:"-"`       // what the driver itself saw break (recovery timeouts)
	Slack       T                   `json:"slack"`   // propagation slack added to the end of admin windows
	Horizon     T                   `json:"horizon"` // how long an indeterminate admin write may still take effect
	Extra       []string            `json:"extra"`   // keys of the extra members the operator plays with
	Partial     bool                `json:"partial"` // the run was interrupted: no final read
}

// Violation is one broken invariant.
type Violation struct {
	Invariant string `json:"invariant"`
	At        T      `json:"at"`
	Detail    string `json:"detail"`
}

// routeOf is the routing contract's rule 3: the route is what follows the
// first "." of a sticky value.
func routeOf(value string) string {
	_, route, ok := strings.Cut(value, ".")
	if !ok {
		return ""
	}
	return route
}

func key(pool, route string) string { return pool + "/" + route }
