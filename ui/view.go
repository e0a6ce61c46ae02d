package ui

import (
	"fmt"
	"html/template"
	"net/url"
	"sort"
	"strings"
	"time"

	"google.golang.org/grpc/status"

	"github.com/gwelb/gwelb/fsm"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// pageData is what every page template gets. Every string in it reaches
// the page through html/template, escaped for its context.
type pageData struct {
	Title     string
	Node      string // the node serving the dashboard
	ReadOnly  bool
	CSRF      string
	Flash     *flash
	View      string // overview, member, node: the live fragment's template
	EventsURL string // the live stream of this page
	Back      string // this page, for the actions' redirect
	Err       string // the admin API's answer when it gave none
	Now       time.Time

	Overview *overview
	Member   *memberView
	NodeView *nodeView
}

type overview struct {
	Leader     string
	TableIndex uint64
	Insecure   bool
	Nodes      []nodeRow
	NodeNames  []string // the per-node columns, in this order
	Pools      []poolRow
	Gossip     []gossipRow
	Changes    []change
	Writes     []Write
	Audit      bool // Writes come from the audit log
	Metrics    bool
	RateOver   string
	Repins     []repinRow
}

type nodeRow struct {
	Name, Addr, RaftAddr, Gossip, Suffrage, RaftState string
	Self, Leader, Insecure                            bool
	LastContact                                       string
	Applied, TableIndex                               uint64
	InFlight                                          int64
	Err                                               string
}

type gossipRow struct{ Name, Address, Status, GRPC, Raft string }

type poolRow struct {
	Name, Prefix, Sticky, FailTimeout, Health string
	Members                                   []memberRow
}

type memberRow struct {
	Pool, Route, URL       string
	Weight                 int32
	State, Verdict         string
	Since, SinceAbs, Cause string
	HoldDown               string
	Flips                  int
	InFlight               int64 // summed over the nodes that answered
	Cells                  []cell
	Rates                  *memberRates // summed over the nodes that report counters; nil without
}

// cell is one node's side of a member: its observation (replicated), its
// local quarantine and its requests in flight (asked from that node).
type cell struct {
	Node       string
	Obs        string // up, down, "" (never reported: counts as up)
	ObsAge     string
	ObsCause   string
	Quarantine string // "" when not quarantined there
	InFlight   int64
	Unknown    bool // the node did not answer
}

type change struct {
	Ago, Abs, Member, Pool, Route, What, Cause string
	Down                                       bool
	at                                         int64
}

type repinRow struct {
	Pool, Cause string
	Count       float64
}

type memberView struct {
	Found    bool
	Pool     poolRow // Members holds the one member
	Row      memberRow
	Value    string
	Note     string
	Answers  []answerRow
	Disagree bool
	Flips    []string
}

type answerRow struct {
	routeAnswer
	Why string
}

type nodeView struct {
	Found   bool
	Row     nodeRow
	Err     string
	Gossip  []gossipRow
	Members []nodeMemberRow
}

type nodeMemberRow struct {
	Pool, Route, State, Verdict string
	Obs, ObsAge, ObsCause       string
	Quarantine                  string
	InFlight                    int64
}

// recentWrites is how many admin writes the overview lists.
const recentWrites = 50

// buildOverview turns a snapshot into the overview page.
func buildOverview(sn *snapshot, rv *rateView, h *History) *overview {
	ov := &overview{
		Leader: sn.Self.GetLeader(), TableIndex: sn.Self.GetTableIndex(), Insecure: sn.Self.GetInsecure(),
		Writes: mergeWrites(h.Recent(), sn, recentWrites), Audit: h.fedByAudit(),
	}
	ov.Nodes = nodeRows(sn)
	for _, n := range sn.Nodes {
		ov.NodeNames = append(ov.NodeNames, n.Name)
	}
	ov.Pools = poolRows(sn, rv)
	for _, g := range sn.Self.GetGossip() {
		ov.Gossip = append(ov.Gossip, gossipRow{g.GetName(), g.GetAddress(), g.GetStatus(), g.GetGrpcAddr(), g.GetRaftAddr()})
	}
	ov.Changes = changes(sn, 25)
	if rv != nil {
		ov.Metrics = true
		if rv.Over > 0 {
			ov.RateOver = rv.Over.Round(time.Second).String()
		}
		for k, v := range rv.Repins {
			ov.Repins = append(ov.Repins, repinRow{k.pool, k.route, v})
		}
		sort.Slice(ov.Repins, func(i, j int) bool {
			a, b := ov.Repins[i], ov.Repins[j]
			return a.Pool < b.Pool || a.Pool == b.Pool && a.Cause < b.Cause
		})
	}
	return ov
}

func nodeRows(sn *snapshot) []nodeRow {
	raftAddr := map[string]string{}
	for _, p := range sn.Self.GetPeers() {
		raftAddr[p.GetId()] = p.GetAddress()
	}
	var rows []nodeRow
	for _, n := range sn.Nodes {
		rows = append(rows, nodeRowOf(sn, n, raftAddr[n.Name]))
	}
	return rows
}

func nodeRowOf(sn *snapshot, n *nodeStatus, raftAddr string) nodeRow {
	r := nodeRow{Name: n.Name, Addr: n.Addr, RaftAddr: raftAddr, Gossip: n.Gossip, Suffrage: n.Suffrage,
		Self: n.Name == sn.Self.GetNode(), Leader: n.Name == sn.Self.GetLeader(), Err: n.Err}
	st := n.Status
	if st == nil {
		return r
	}
	r.RaftState, r.Insecure = st.GetRaftState(), st.GetInsecure()
	r.Applied, r.TableIndex = st.GetAppliedIndex(), st.GetTableIndex()
	switch ms := st.GetLastContactMs(); {
	case st.GetRaftState() == "Leader":
		r.LastContact = "is the leader"
	case ms < 0:
		r.LastContact = "never"
	default:
		r.LastContact = (time.Duration(ms) * time.Millisecond).String() + " ago"
	}
	for _, ps := range st.GetPools() {
		for _, ms := range ps.GetMembers() {
			r.InFlight += ms.GetInFlight()
		}
	}
	return r
}

// poolRows lists the pools of this node's table with, per member, each
// node's side of it.
func poolRows(sn *snapshot, rv *rateView) []poolRow {
	// per node: pool/route -> the node's own MemberStatus
	local := map[string]map[memberKey]*gwelbv1.MemberStatus{}
	for _, n := range sn.Nodes {
		if n.Status == nil {
			continue
		}
		m := map[memberKey]*gwelbv1.MemberStatus{}
		for _, ps := range n.Status.GetPools() {
			for _, ms := range ps.GetMembers() {
				m[memberKey{ms.GetMember().GetPool(), ms.GetMember().GetRoute()}] = ms
			}
		}
		local[n.Name] = m
	}
	var pools []poolRow
	for _, ps := range sn.Self.GetPools() {
		p := ps.GetPool()
		row := poolRow{Name: p.GetName(), Prefix: p.GetPrefix(), Sticky: stickyText(p), FailTimeout: failTimeout(p), Health: healthText(p)}
		for _, ms := range ps.GetMembers() {
			row.Members = append(row.Members, memberRowOf(sn, ms, local, rv, sn.At))
		}
		pools = append(pools, row)
	}
	return pools
}

func memberRowOf(sn *snapshot, ms *gwelbv1.MemberStatus, local map[string]map[memberKey]*gwelbv1.MemberStatus, rv *rateView, now time.Time) memberRow {
	m := ms.GetMember()
	key := memberKey{m.GetPool(), m.GetRoute()}
	r := memberRow{
		Pool: m.GetPool(), Route: m.GetRoute(), URL: m.GetUrl(), Weight: max(m.GetWeight(), 1),
		State: stateName(m.GetState()), Verdict: verdictName(m.GetVerdict()),
		Since: age(now, m.GetVerdictSinceUnixNanos()), SinceAbs: abs(m.GetVerdictSinceUnixNanos()),
		Cause: m.GetVerdictCause(), Flips: len(m.GetFlipsUnixNanos()),
	}
	if hd := m.GetHoldDownUntilUnixNanos(); hd > now.UnixNano() {
		r.HoldDown = "held down for " + time.Duration(hd-now.UnixNano()).Round(time.Second).String()
	}
	obs := map[string]*gwelbv1.Observation{}
	for _, o := range ms.GetObservations() {
		obs[o.GetNode()] = o
	}
	for _, n := range sn.Nodes {
		c := cell{Node: n.Name}
		if o := obs[n.Name]; o != nil {
			c.Obs, c.ObsAge, c.ObsCause = "up", ago(now, o.GetUnixNanos()), o.GetCause()
			if o.GetDown() {
				c.Obs = "down"
			}
		}
		if mine := local[n.Name][key]; mine != nil {
			c.InFlight = mine.GetInFlight()
			c.Quarantine = quarantineOf(mine, n.Name)
			r.InFlight += c.InFlight
		} else {
			c.Unknown = true
		}
		r.Cells = append(r.Cells, c)
	}
	if rv != nil {
		mr := rv.Members[key]
		r.Rates = &mr
	}
	return r
}

// quarantineOf says whether the node that answered ms (a Status asked of
// that node alone) has the member locally quarantined (rule 8), and for
// how long still; "" when it has not.
func quarantineOf(ms *gwelbv1.MemberStatus, node string) string {
	for _, q := range ms.GetQuarantined() {
		if q.GetNode() == node || node == "" {
			left := time.Duration(q.GetRemainingMs()) * time.Millisecond
			return "for " + left.Round(100*time.Millisecond).String()
		}
	}
	return ""
}

// changes is the recent verdict history from the replicated state: each
// member's last verdict change with its cause, and each node's last change
// of observation, newest first.
func changes(sn *snapshot, limit int) []change {
	var out []change
	for _, ps := range sn.Self.GetPools() {
		for _, ms := range ps.GetMembers() {
			m := ms.GetMember()
			name := m.GetPool() + "/" + m.GetRoute()
			if t := m.GetVerdictSinceUnixNanos(); t != 0 {
				out = append(out, change{Member: name, Pool: m.GetPool(), Route: m.GetRoute(),
					What: "cluster verdict " + verdictName(m.GetVerdict()), Cause: m.GetVerdictCause(),
					Down: m.GetVerdict() == gwelbv1.Verdict_VERDICT_DOWN, at: t})
			}
			for _, o := range ms.GetObservations() {
				what := o.GetNode() + " observed up"
				if o.GetDown() {
					what = o.GetNode() + " observed down"
				}
				out = append(out, change{Member: name, Pool: m.GetPool(), Route: m.GetRoute(), What: what, Cause: o.GetCause(), Down: o.GetDown(), at: o.GetUnixNanos()})
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].at > out[j].at })
	if len(out) > limit {
		out = out[:limit]
	}
	for i := range out {
		out[i].Ago, out[i].Abs = ago(sn.At, out[i].at), abs(out[i].at)
	}
	return out
}

// why explains a Route answer's reason in an operator's words.
func why(reason string) string {
	switch reason {
	case "sticky":
		return "the member the value names is usable here: sticky hit (rule 5)"
	case "fallback":
		return "the member the value names is unknown or not usable here (admin state, verdict or local quarantine): the rendezvous replacement every node picks for this value (rule 6)"
	case "round_robin":
		return "no valid sticky value: weighted round-robin (rule 6)"
	case "none":
		return "no usable member in the pool: 503"
	}
	return reason
}

func stateName(s gwelbv1.AdminState) string { return fsm.AdminStateFromProto(s).String() }

func verdictName(v gwelbv1.Verdict) string {
	return strings.ToLower(strings.TrimPrefix(v.String(), "VERDICT_"))
}

func stickyText(p *gwelbv1.Pool) string {
	var parts []string
	if q := p.GetQueryParam(); q != "" {
		parts = append(parts, "query "+q)
	}
	if c := p.GetCookie(); c != "" {
		s := "cookie " + c
		if p.GetInsertCookie() {
			s += " (inserted)"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}

func failTimeout(p *gwelbv1.Pool) string {
	if p.FailTimeoutMs == nil {
		return "10s (default)"
	}
	if p.GetFailTimeoutMs() == 0 {
		return "off"
	}
	return (time.Duration(p.GetFailTimeoutMs()) * time.Millisecond).String()
}

func healthText(p *gwelbv1.Pool) string {
	h := fsm.PoolFromProto(p).WithDefaults().Health
	return fmt.Sprintf("GET %s every %v, down after %d, up after %d", h.Path, h.Interval, h.Fall, h.Rise)
}

// age is how long before now unixNanos was ("3m12s"); "" for 0. A time
// in the future (another node's clock) is "0s".
func age(now time.Time, unixNanos int64) string {
	if unixNanos == 0 {
		return ""
	}
	d := max(now.Sub(time.Unix(0, unixNanos)), 0)
	switch {
	case d < time.Hour:
		return d.Truncate(time.Second).String()
	case d < 48*time.Hour:
		return d.Truncate(time.Minute).String()
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// ago is age as "3m12s ago".
func ago(now time.Time, unixNanos int64) string {
	if a := age(now, unixNanos); a != "" {
		return a + " ago"
	}
	return ""
}

func abs(unixNanos int64) string {
	if unixNanos == 0 {
		return ""
	}
	return time.Unix(0, unixNanos).UTC().Format(time.RFC3339)
}

// errText is an admin API error as one line for the page.
func errText(err error) string {
	if st, ok := status.FromError(err); ok {
		return strings.ToLower(st.Code().String()[:1]) + st.Code().String()[1:] + ": " + st.Message()
	}
	return err.Error()
}

// memberURL is the link to a member's page.
func memberURL(pool, route string) string {
	return Prefix + "member?" + url.Values{"pool": {pool}, "route": {route}}.Encode()
}

func nodeURL(name string) string {
	return Prefix + "node?" + url.Values{"name": {name}}.Encode()
}

// funcs are the template helpers.
var funcs = template.FuncMap{
	"memberURL": memberURL,
	"nodeURL":   nodeURL,
	"rate": func(v float64) string {
		switch {
		case v == 0:
			return "0"
		case v < 0.1:
			return "<0.1"
		case v < 10:
			return fmt.Sprintf("%.1f", v)
		}
		return fmt.Sprintf("%.0f", v)
	},
	"count": func(v float64) string { return fmt.Sprintf("%.0f", v) },
	"actionData": func(p *pageData, pool, route, state string) actionData {
		return actionData{CSRF: p.CSRF, Back: p.Back, Pool: pool, Route: route, State: state}
	},
}

// actionData is what an action form needs.
type actionData struct{ CSRF, Back, Pool, Route, State string }
