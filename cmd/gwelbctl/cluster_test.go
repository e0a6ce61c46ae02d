package main

import (
	"encoding/json"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/gwelb/gwelb/cluster/clustertest"
	"github.com/gwelb/gwelb/internal/testnet"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// These tests run gwelbctl against real three-node clusters
// (cluster/clustertest): control plane, data plane and listener per node,
// over real TCP on loopback.

// ctl runs gwelbctl against the admin API of tn with the cluster token.
func ctl(t *testing.T, tn *clustertest.Node, args ...string) result {
	t.Helper()
	return cliEnv(t, nil, append(caArgs(tn, "--addr", tn.Node.GRPCAddr(), "--token", clustertest.Token), args...)...)
}

// caArgs adds --ca-file when tn serves its admin API over TLS, as every
// clustertest node does by default (DESIGN.md §4).
func caArgs(tn *clustertest.Node, args ...string) []string {
	if tn.Cfg.TLS.Enabled() {
		args = append(args, "--ca-file", tn.Cfg.TLS.CAFile)
	}
	return args
}

// ctlProto runs gwelbctl -o json against tn, wants success and parses its
// output into m.
func ctlProto(t *testing.T, tn *clustertest.Node, m proto.Message, args ...string) {
	t.Helper()
	r := ctl(t, tn, append([]string{"-o", "json"}, args...)...)
	wantOK(t, r)
	if err := protojson.Unmarshal([]byte(r.stdout), m); err != nil {
		t.Fatalf("%v -o json: %v; output:\n%s", args, err, r.stdout)
	}
}

// ctlProtoList runs gwelbctl -o json against tn, wants success and parses
// its output, a JSON array of messages, with newMsg.
func ctlProtoList[M proto.Message](t *testing.T, tn *clustertest.Node, newMsg func() M, args ...string) []M {
	t.Helper()
	r := ctl(t, tn, append([]string{"-o", "json"}, args...)...)
	wantOK(t, r)
	var raws []json.RawMessage
	if err := json.Unmarshal([]byte(r.stdout), &raws); err != nil {
		t.Fatalf("%v -o json: not a JSON array: %v; output:\n%s", args, err, r.stdout)
	}
	out := make([]M, 0, len(raws))
	for _, raw := range raws {
		m := newMsg()
		if err := protojson.Unmarshal(raw, m); err != nil {
			t.Fatalf("%v -o json: element %s: %v", args, raw, err)
		}
		out = append(out, m)
	}
	return out
}

// members lists the backend pool as gwelbctl member list on tn shows it,
// by route.
func members(t *testing.T, tn *clustertest.Node) map[string]*gwelbv1.Member {
	t.Helper()
	out := map[string]*gwelbv1.Member{}
	for _, ms := range ctlProtoList(t, tn, func() *gwelbv1.MemberStatus { return &gwelbv1.MemberStatus{} }, "member", "list", "--pool", "backend") {
		out[ms.GetMember().GetRoute()] = ms.GetMember()
	}
	return out
}

// raftPeers lists the Raft peers as gwelbctl raft peers on tn shows them,
// by id.
func raftPeers(t *testing.T, tn *clustertest.Node) map[string]*gwelbv1.RaftPeer {
	t.Helper()
	out := map[string]*gwelbv1.RaftPeer{}
	for _, p := range ctlProtoList(t, tn, func() *gwelbv1.RaftPeer { return &gwelbv1.RaftPeer{} }, "raft", "peers") {
		out[p.GetId()] = p
	}
	return out
}

// routable tells whether tn's data plane has a member for route in the
// backend pool.
func routable(tn *clustertest.Node, route string) bool {
	tab := tn.Proxy.Table()
	if tab == nil || tab.Pool("backend") == nil {
		return false
	}
	_, ok := tab.Pool("backend").Lookup(route)
	return ok
}

// firstLine is the first line of s.
func firstLine(s string) string { return strings.SplitN(s, "\n", 2)[0] }

// otherThan returns the live nodes of c except the given ones.
func otherThan(c *clustertest.Cluster, not ...*clustertest.Node) []*clustertest.Node {
	var out []*clustertest.Node
	for _, tn := range c.Live() {
		if !slices.Contains(not, tn) {
			out = append(out, tn)
		}
	}
	return out
}

// TestCLIAgainstCluster drives every gwelbctl verb except join and leave
// against one real three-node cluster. The subtests share it, each with its
// own members; the last one takes the quorum away.
func TestCLIAgainstCluster(t *testing.T) {
	c := clustertest.New(t, 3)
	gwe1 := c.GWE["1"].URL
	// roles returns the leader and the followers as they are now; each
	// subtest asks afresh, so one's leadership change cannot confuse the next.
	roles := func() (*clustertest.Node, []*clustertest.Node) { return c.WaitLeader(), c.Followers() }

	t.Run("status table", func(t *testing.T) {
		leader, fs := roles()
		r := ctl(t, fs[0], "status")
		wantOK(t, r)
		wantLine(t, r.stdout, `^Node:\s+`+fs[0].Cfg.Name+`$`)
		wantLine(t, r.stdout, `^Raft state:\s+Follower$`)
		wantLine(t, r.stdout, `^Leader:\s+`+leader.Cfg.Name+` \(`+regexp.QuoteMeta(leader.Node.GRPCAddr())+`\)$`)
		wantLine(t, r.stdout, `^Pool backend \(prefix /backend\):$`)
		wantLine(t, r.stdout, `^2\s+`+regexp.QuoteMeta(c.GWE["2"].URL)+`\s+1\s+active\s+up\s`)
		voters := 0
		for l := range strings.SplitSeq(r.stdout, "\n") {
			if regexp.MustCompile(`^n\d\s+127\.0\.0\.1:\d+\s+Voter\b`).MatchString(l) {
				voters++
			}
		}
		if voters != 3 {
			t.Errorf("status shows %d voters, want 3:\n%s", voters, r.stdout)
		}
	})

	t.Run("status json", func(t *testing.T) {
		leader, _ := roles()
		for _, tn := range c.Live() {
			var st gwelbv1.StatusResponse
			ctlProto(t, tn, &st, "status")
			if st.GetNode() != tn.Cfg.Name || st.GetLeader() != leader.Cfg.Name || st.GetLeaderGrpcAddr() != leader.Node.GRPCAddr() {
				t.Errorf("%s: node %q leader %q at %q, want %s, %s at %s", tn.Cfg.Name, st.GetNode(), st.GetLeader(), st.GetLeaderGrpcAddr(),
					tn.Cfg.Name, leader.Cfg.Name, leader.Node.GRPCAddr())
			}
			var voters, leaders []string
			for _, p := range st.GetPeers() {
				if p.GetSuffrage() == "Voter" {
					voters = append(voters, p.GetId())
				}
				if p.GetLeader() {
					leaders = append(leaders, p.GetId())
				}
			}
			slices.Sort(voters)
			if !slices.Equal(voters, []string{"n1", "n2", "n3"}) || !slices.Equal(leaders, []string{leader.Cfg.Name}) {
				t.Errorf("%s: voters %v, leaders %v; want n1 n2 n3 and %s", tn.Cfg.Name, voters, leaders, leader.Cfg.Name)
			}
			if len(st.GetGossip()) != 3 || len(st.GetPools()) != 1 || len(st.GetPools()[0].GetMembers()) < 3 {
				t.Errorf("%s: %d gossip members, pools %v", tn.Cfg.Name, len(st.GetGossip()), st.GetPools())
			}
		}
	})

	t.Run("member add and list", func(t *testing.T) {
		_, fs := roles()
		r := ctl(t, fs[0], "member", "add", "backend", "cli-add", gwe1, "--weight", "3")
		wantOK(t, r)
		wantLine(t, r.stdout, `^member backend/cli-add added \(`+regexp.QuoteMeta(gwe1)+`, weight 3, active\) \(index \d+\)$`)
		// Acknowledged means committed: the other follower shows it once it
		// has applied it.
		clustertest.WaitFor(t, 10*time.Second, "cli-add in member list on "+fs[1].Cfg.Name, func() bool {
			return members(t, fs[1])["cli-add"] != nil
		})
		m := members(t, fs[1])["cli-add"]
		if m.GetUrl() != gwe1 || m.GetWeight() != 3 || m.GetState() != gwelbv1.AdminState_ADMIN_STATE_ACTIVE {
			t.Errorf("member list on %s shows %v", fs[1].Cfg.Name, m)
		}
		r = ctl(t, fs[1], "member", "list")
		wantOK(t, r)
		wantLine(t, r.stdout, `^backend\s+cli-add\s+`+regexp.QuoteMeta(gwe1)+`\s+3\s+active\s+up\s+\d+$`)
		c.WaitAll("cli-add routable everywhere", func(tn *clustertest.Node) bool { return routable(tn, "cli-add") })
		for _, tn := range c.Live() {
			if server, _, err := clustertest.Get(t, tn, "/backend/x", "ROUTEID=.cli-add"); err != nil || server != "1" {
				t.Errorf("%s: ROUTEID=.cli-add served by %q (%v), want the server behind cli-add (1)", tn.Cfg.Name, server, err)
			}
		}
	})

	t.Run("member drain disable enable remove", func(t *testing.T) {
		leader, fs := roles()
		wantOK(t, ctl(t, leader, "member", "add", "backend", "cli-state", gwe1))
		// route answers on the other nodes show the admin state at work.
		routeOn := func(tn *clustertest.Node, value string) *gwelbv1.RouteResponse {
			var rr gwelbv1.RouteResponse
			ctlProto(t, tn, &rr, "route", "backend", value)
			return &rr
		}
		waitState := func(state string, want gwelbv1.AdminState) {
			t.Helper()
			for _, tn := range fs {
				clustertest.WaitFor(t, 10*time.Second, "cli-state "+state+" on "+tn.Cfg.Name, func() bool {
					m := members(t, tn)["cli-state"]
					return m != nil && m.GetState() == want
				})
			}
		}
		waitState("active", gwelbv1.AdminState_ADMIN_STATE_ACTIVE)

		r := ctl(t, fs[0], "member", "drain", "backend", "cli-state")
		wantOK(t, r)
		wantLine(t, r.stdout, `^member backend/cli-state is now drain \(index \d+\)$`)
		waitState("drain", gwelbv1.AdminState_ADMIN_STATE_DRAIN)
		if rr := routeOn(fs[1], ".cli-state"); rr.GetRoute() != "cli-state" || rr.GetReason() != "sticky" {
			t.Errorf("a drained member lost its sticky session: %v", rr)
		}

		r = ctl(t, fs[1], "member", "disable", "backend", "cli-state")
		wantOK(t, r)
		wantLine(t, r.stdout, `^member backend/cli-state is now disabled \(index \d+\)$`)
		waitState("disabled", gwelbv1.AdminState_ADMIN_STATE_DISABLED)
		if rr := routeOn(fs[0], ".cli-state"); rr.GetRoute() == "cli-state" || rr.GetReason() != "fallback" {
			t.Errorf("a disabled member still gets its session: %v", rr)
		}

		r = ctl(t, leader, "member", "enable", "backend", "cli-state")
		wantOK(t, r)
		wantLine(t, r.stdout, `^member backend/cli-state is now active \(index \d+\)$`)
		waitState("active", gwelbv1.AdminState_ADMIN_STATE_ACTIVE)
		if rr := routeOn(fs[1], ".cli-state"); rr.GetRoute() != "cli-state" || rr.GetReason() != "sticky" {
			t.Errorf("an enabled member does not get its session back: %v", rr)
		}

		r = ctl(t, fs[1], "member", "remove", "backend", "cli-state")
		wantOK(t, r)
		wantLine(t, r.stdout, `^member backend/cli-state removed \(index \d+\)$`)
		for _, tn := range c.Live() {
			clustertest.WaitFor(t, 10*time.Second, "cli-state gone on "+tn.Cfg.Name, func() bool {
				return members(t, tn)["cli-state"] == nil && !routable(tn, "cli-state")
			})
		}
	})

	t.Run("route", func(t *testing.T) {
		leader, fs := roles()
		r := ctl(t, fs[0], "route", "backend", ".2")
		wantOK(t, r)
		wantLine(t, r.stdout, `^NODE\s+INDEX\s+ROUTE\s+URL\s+REASON\s+QUARANTINED$`)
		wantLine(t, r.stdout, `^`+fs[0].Cfg.Name+`\s+\d+\s+2\s+`+regexp.QuoteMeta(c.GWE["2"].URL)+`\s+sticky\s+-$`)

		// Nodes agree once they have applied the same log.
		c.WaitAll("every node at the leader's table index", func(tn *clustertest.Node) bool {
			return tn.Node.Table().Index() == leader.Node.Table().Index()
		})
		for _, value := range []string{".2", "abc.nope", "plain"} {
			rows := []routeRow{}
			r := ctl(t, fs[1], "-o", "json", "route", "backend", value, "--all-nodes")
			wantOK(t, r)
			if err := json.Unmarshal([]byte(r.stdout), &rows); err != nil {
				t.Fatalf("route --all-nodes -o json: %v\n%s", err, r.stdout)
			}
			if len(rows) != 3 {
				t.Fatalf("route %q --all-nodes: %d rows, want 3:\n%s", value, len(rows), r.stdout)
			}
			for i, row := range rows {
				if row.Error != "" || row.Route == "" || row.Route != rows[0].Route || row.Node != "n"+string(rune('1'+i)) {
					t.Errorf("route %q --all-nodes: row %d %+v, first %+v", value, i, row, rows[0])
				}
			}
			if value == ".2" && rows[0].Route != "2" {
				t.Errorf("route .2 --all-nodes picked %q", rows[0].Route)
			}
		}
		r = ctl(t, leader, "route", "backend", "abc.nope", "--all-nodes")
		wantOK(t, r)
		if strings.Contains(r.stdout, "DISAGREEMENT") {
			t.Errorf("nodes disagree:\n%s", r.stdout)
		}
		for _, tn := range c.Live() {
			wantLine(t, r.stdout, `^`+tn.Cfg.Name+`\s+`+regexp.QuoteMeta(tn.Node.GRPCAddr())+`\s+\d+\s+\S+\s+http://\S+\s+fallback\s+-\s+-$`)
		}
	})

	t.Run("raft peers", func(t *testing.T) {
		leader, fs := roles()
		r := ctl(t, fs[1], "raft", "peers")
		wantOK(t, r)
		wantLine(t, r.stdout, `^ID\s+ADDRESS\s+SUFFRAGE\s+LEADER$`)
		for _, tn := range c.Live() {
			mark := "-"
			if tn == leader {
				mark = `\*`
			}
			wantLine(t, r.stdout, `^`+tn.Cfg.Name+`\s+`+regexp.QuoteMeta(tn.Cfg.RaftAddr)+`\s+Voter\s+`+mark+`$`)
		}
		if peers := raftPeers(t, fs[0]); len(peers) != 3 || !peers[leader.Cfg.Name].GetLeader() {
			t.Errorf("raft peers -o json: %v", peers)
		}
	})

	t.Run("errors", func(t *testing.T) {
		leader, fs := roles()
		t.Run("wrong token", func(t *testing.T) {
			r := cliEnv(t, nil, caArgs(fs[0], "--addr", fs[0].Node.GRPCAddr(), "--token", "wrong", "status")...)
			wantFail(t, r, exitUnauthorised, `^gwelbctl: unauthorised: check --token / GWELB_TOKEN\n$`)
			r = cliEnv(t, nil, caArgs(fs[0], "--addr", fs[0].Node.GRPCAddr(), "--token", "wrong", "member", "disable", "backend", "1")...)
			wantFail(t, r, exitUnauthorised, `^gwelbctl: unauthorised: check --token / GWELB_TOKEN\n$`)
			r = cliEnv(t, nil, caArgs(fs[0], "--addr", fs[0].Node.GRPCAddr(), "member", "list")...)
			wantFail(t, r, exitUnauthorised, `^gwelbctl: unauthorised`)
			if m := members(t, leader)["1"]; m.GetState() != gwelbv1.AdminState_ADMIN_STATE_ACTIVE {
				t.Errorf("a write with a wrong token changed member 1: %v", m)
			}
		})
		t.Run("not found", func(t *testing.T) {
			for _, tc := range []struct {
				args    []string
				pattern string
			}{
				{[]string{"member", "drain", "backend", "nope"}, `nope`},
				{[]string{"member", "remove", "backend", "nope"}, `nope`},
				{[]string{"member", "enable", "nopool", "1"}, `nopool`},
				{[]string{"member", "list", "--pool", "nopool"}, `^gwelbctl: pool "nopool" not found\n$`},
				{[]string{"route", "nopool", ".1"}, `^gwelbctl: no pool "nopool"\n$`},
				{[]string{"leave", "--node", "nonode"}, `^gwelbctl: no node "nonode" in the raft configuration\n$`},
				{[]string{"raft", "transfer-leader", "--node", "nonode"}, `^gwelbctl: no node "nonode" in the raft configuration\n$`},
			} {
				// Through a follower: forwarded writes keep their status.
				wantFail(t, ctl(t, fs[0], tc.args...), exitNotFound, tc.pattern)
			}
		})
		t.Run("unreachable", func(t *testing.T) {
			addr := testnet.ClosedAddr(t)
			r := cliEnv(t, nil, "--addr", addr, "--token", clustertest.Token, "status")
			wantFail(t, r, exitUnreachable, `^gwelbctl: cannot reach gwelb node at `+regexp.QuoteMeta(addr)+`: connection refused\n$`)
			r = cliEnv(t, nil, "--addr", addr, "--token", clustertest.Token, "member", "drain", "backend", "1")
			wantFail(t, r, exitUnreachable, `^gwelbctl: cannot reach gwelb node at `)
		})
		t.Run("invalid member", func(t *testing.T) {
			// gwelbctl judges with the cluster's validator before sending:
			// the same words as the admin API, one line, exit 1, nothing added.
			for _, tc := range []struct {
				args   []string
				member *gwelbv1.Member
			}{
				{[]string{"ftp://h:1"}, &gwelbv1.Member{Url: "ftp://h:1"}},
				{[]string{"http://h:1/backend"}, &gwelbv1.Member{Url: "http://h:1/backend"}},
				{[]string{gwe1, "--weight", "5000"}, &gwelbv1.Member{Url: gwe1, Weight: 5000}},
			} {
				r := ctl(t, fs[0], append([]string{"member", "add", "backend", "cli-bad"}, tc.args...)...)
				tc.member.Pool, tc.member.Route = "backend", "cli-bad"
				client, ctx := c.Admin(leader)
				_, err := client.PutMember(ctx, &gwelbv1.PutMemberRequest{Member: tc.member})
				st, _ := status.FromError(err)
				if st.Code() != codes.InvalidArgument {
					t.Fatalf("admin API: %v, want InvalidArgument", err)
				}
				wantFail(t, r, exitError, "^"+regexp.QuoteMeta("gwelbctl: "+st.Message())+"\n$")
			}
			if m := members(t, leader)["cli-bad"]; m != nil {
				t.Errorf("an invalid member was added: %v", m)
			}
		})
		t.Run("usage", func(t *testing.T) {
			for _, tc := range []struct {
				args  []string
				first string
			}{
				{[]string{"member", "add", "backend", "cli-usage"}, "gwelbctl: missing argument URL"},
				{[]string{"member", "add", "backend", "cli-usage", gwe1, "--state", "asleep"}, `gwelbctl: invalid --state "asleep": want active, drain or disabled`},
				{[]string{"member", "frobnicate"}, `gwelbctl: unknown command "frobnicate" for "gwelbctl member"`},
				{[]string{"raft", "peers", "extra"}, `gwelbctl: unexpected argument "extra"`},
			} {
				r := ctl(t, fs[0], tc.args...)
				if r.code != exitUsage || firstLine(r.stderr) != tc.first || !strings.Contains(r.stderr, "\nUsage:\n") || r.stdout != "" {
					t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 2 and first line %q", tc.args, r.code, r.stdout, r.stderr, tc.first)
				}
			}
			if m := members(t, leader)["cli-usage"]; m != nil {
				t.Errorf("a usage error added a member: %v", m)
			}
		})
	})

	t.Run("raft transfer-leader", func(t *testing.T) {
		old := c.WaitLeader()
		follower := otherThan(c, old)[0]
		r := ctl(t, follower, "raft", "transfer-leader")
		wantOK(t, r)
		wantLine(t, r.stdout, `^leadership transferred to n\d$`)
		next := c.WaitLeader()
		if next == old {
			t.Fatalf("leader still %s after raft transfer-leader", old.Cfg.Name)
		}
		if got := strings.TrimPrefix(strings.TrimSpace(r.stdout), "leadership transferred to "); got != next.Cfg.Name {
			t.Errorf("transfer-leader said %s, the cluster agrees on %s", got, next.Cfg.Name)
		}
		var st gwelbv1.StatusResponse
		ctlProto(t, old, &st, "status")
		if st.GetLeader() != next.Cfg.Name || st.GetRaftState() != "Follower" {
			t.Errorf("old leader's status: leader %q, state %s", st.GetLeader(), st.GetRaftState())
		}

		// Back to the old leader, by name, asked on the new leader.
		r = ctl(t, next, "raft", "transfer-leader", "--node", old.Cfg.Name)
		wantOK(t, r)
		wantLine(t, r.stdout, `^leadership transferred to `+old.Cfg.Name+`$`)
		if got := c.WaitLeader(); got != old {
			t.Errorf("transfer-leader --node %s: leader is %s", old.Cfg.Name, got.Cfg.Name)
		}
		// Writes go on through any node.
		wantOK(t, ctl(t, next, "member", "add", "backend", "cli-after-transfer", gwe1))
	})

	t.Run("snapshot save and restore", func(t *testing.T) {
		wantOK(t, ctl(t, c.WaitLeader(), "member", "add", "backend", "cli-snap", gwe1))
		c.WaitAll("cli-snap routable everywhere", func(tn *clustertest.Node) bool { return routable(tn, "cli-snap") })
		fs := c.Followers()
		path := filepath.Join(t.TempDir(), "gwelb.snap")
		r := ctl(t, fs[0], "snapshot", "save", path)
		wantOK(t, r)
		wantLine(t, r.stdout, `^saved snapshot: \d+ bytes to `+regexp.QuoteMeta(path)+`$`)

		wantOK(t, ctl(t, fs[1], "member", "remove", "backend", "cli-snap"))
		c.WaitAll("cli-snap gone everywhere", func(tn *clustertest.Node) bool { return !routable(tn, "cli-snap") })

		r = ctl(t, fs[1], "snapshot", "restore", path)
		wantOK(t, r)
		wantLine(t, r.stdout, `^restored snapshot: \d+ bytes from `+regexp.QuoteMeta(path)+` \(index \d+\)$`)
		for _, tn := range c.Live() {
			clustertest.WaitFor(t, 10*time.Second, "cli-snap back in member list and data plane of "+tn.Cfg.Name, func() bool {
				return members(t, tn)["cli-snap"] != nil && routable(tn, "cli-snap")
			})
			if server, _, err := clustertest.Get(t, tn, "/backend/x", "ROUTEID=.cli-snap"); err != nil || server != "1" {
				t.Errorf("%s: ROUTEID=.cli-snap served by %q (%v) after the restore, want 1", tn.Cfg.Name, server, err)
			}
		}
		// The cluster takes writes after a restore.
		wantOK(t, ctl(t, fs[0], "member", "add", "backend", "cli-after-restore", gwe1))
		c.WaitAll("cli-after-restore routable everywhere", func(tn *clustertest.Node) bool {
			return routable(tn, "cli-after-restore") && routable(tn, "cli-snap")
		})
	})

	// Last: takes the quorum away.
	t.Run("no leader", func(t *testing.T) {
		survivor := c.Followers()[0]
		for _, tn := range otherThan(c, survivor) {
			c.Kill(tn)
		}
		r := ctl(t, survivor, "member", "drain", "backend", "1")
		wantFail(t, r, exitNoLeader, `^gwelbctl: no leader: `)
		// Reads still answer, and say there is no leader.
		clustertest.WaitFor(t, 10*time.Second, "status without a leader", func() bool {
			var st gwelbv1.StatusResponse
			ctlProto(t, survivor, &st, "status")
			return st.GetLeader() == ""
		})
		r = ctl(t, survivor, "status")
		wantOK(t, r)
		wantLine(t, r.stdout, `^Leader:\s+\(none\)$`)
	})
}

// TestCLIJoinLeave grows a real cluster by a fourth node with gwelbctl join,
// makes it leave with gwelbctl leave, and force-removes a killed node with
// leave --node.
func TestCLIJoinLeave(t *testing.T) {
	c := clustertest.New(t, 3)
	n1 := c.Nodes[0]
	n4 := c.Start(c.NodeConfig("n4")) // no bootstrap_expect, no retry_join

	r := ctl(t, n4, "join", n1.Cfg.GossipAddr)
	wantOK(t, r)
	wantLine(t, r.stdout, `^joined 1 of 1 node\(s\)$`)
	clustertest.WaitFor(t, 20*time.Second, "n4 a voter on every node", func() bool {
		for _, tn := range c.Live() {
			if raftPeers(t, tn)["n4"].GetSuffrage() != "Voter" {
				return false
			}
		}
		return true
	})
	c.WaitAll("n4 has the member table", func(tn *clustertest.Node) bool { return routable(tn, "3") })
	if server, _, err := clustertest.Get(t, n4, "/backend/x", "ROUTEID=.3"); err != nil || server != "3" {
		t.Fatalf("n4 routes ROUTEID=.3 to %q (%v), want 3", server, err)
	}
	var st gwelbv1.StatusResponse
	ctlProto(t, n4, &st, "status")
	if st.GetLeader() == "" || len(st.GetPeers()) != 4 {
		t.Fatalf("n4's status after join: leader %q, %d peers", st.GetLeader(), len(st.GetPeers()))
	}

	r = ctl(t, n4, "leave")
	wantOK(t, r)
	wantLine(t, r.stdout, `^node at `+regexp.QuoteMeta(n4.Node.GRPCAddr())+` left the cluster$`)
	select {
	case <-n4.Node.Left():
	case <-time.After(20 * time.Second):
		t.Fatal("n4 did not leave within 20s")
	}
	c.Kill(n4)
	for _, tn := range c.Live() {
		clustertest.WaitFor(t, 20*time.Second, "n4 gone from raft peers on "+tn.Cfg.Name, func() bool {
			return raftPeers(t, tn)["n4"] == nil
		})
	}

	// Force-leave: a killed node stays a voter until an operator removes it.
	leader := c.WaitLeader()
	victim := c.Followers()[0]
	asker := otherThan(c, leader, victim)[0]
	c.Kill(victim)
	clustertest.WaitFor(t, 20*time.Second, "gossip to see "+victim.Cfg.Name+" fail", func() bool {
		var st gwelbv1.StatusResponse
		ctlProto(t, asker, &st, "status")
		for _, m := range st.GetGossip() {
			if m.GetName() == victim.Cfg.Name {
				return m.GetStatus() != "alive"
			}
		}
		return true
	})
	if raftPeers(t, leader)[victim.Cfg.Name] == nil {
		t.Fatalf("%s left the raft configuration without an operator asking", victim.Cfg.Name)
	}
	r = ctl(t, asker, "leave", "--node", victim.Cfg.Name)
	wantOK(t, r)
	wantLine(t, r.stdout, `^node `+victim.Cfg.Name+` removed from the cluster$`)
	for _, tn := range c.Live() {
		clustertest.WaitFor(t, 20*time.Second, victim.Cfg.Name+" gone from raft peers on "+tn.Cfg.Name, func() bool {
			return raftPeers(t, tn)[victim.Cfg.Name] == nil
		})
	}
	if peers := raftPeers(t, asker); len(peers) != 2 {
		t.Errorf("raft peers after force-leave: %v", peers)
	}
	// Two voters of two: writes still commit.
	wantOK(t, ctl(t, asker, "member", "add", "backend", "cli-two-left", c.GWE["2"].URL))
	c.WaitAll("cli-two-left routable on both nodes", func(tn *clustertest.Node) bool { return routable(tn, "cli-two-left") })
}
