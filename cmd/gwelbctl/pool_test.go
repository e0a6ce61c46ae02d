package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gwelb/gwelb/cluster/clustertest"
	"github.com/gwelb/gwelb/fsm"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// wantUsage wants exit 2 with the message first and the usage after it.
func wantUsage(t *testing.T, r result, msg string) {
	t.Helper()
	if r.code != exitUsage || !strings.HasPrefix(r.stderr, "gwelbctl: ") || !strings.Contains(firstLine(r.stderr), msg) || !strings.Contains(r.stderr, "Usage:") {
		t.Fatalf("exit %d, stderr %q; want exit 2 with %q and the usage", r.code, r.stderr, msg)
	}
}

// backendSpec is the backend pool as tn's data plane has it, members included.
func backendSpec(tn *clustertest.Node) (fsm.PoolSpec, bool) {
	tab := tn.Proxy.Table()
	if tab == nil || tab.Pool("backend") == nil {
		return fsm.PoolSpec{}, false
	}
	p := tab.Pool("backend")
	spec := p.Spec()
	spec.Members = nil
	for _, m := range p.Members() {
		spec.Members = append(spec.Members, m.MemberSpec)
	}
	return spec, true
}

// lastIndex is tn's Raft last log index, as status shows it.
func lastIndex(t *testing.T, tn *clustertest.Node) uint64 {
	t.Helper()
	var st gwelbv1.StatusResponse
	ctlProto(t, tn, &st, "status")
	return st.GetLastLogIndex()
}

// TestPoolSetAgainstCluster: a pool setting changed with pool set through
// a follower is what every node's data plane does next — the inserted
// cookie gets Secure and SameSite=None on every node; a setting the
// validator refuses is refused before anything is sent, naming it.
func TestPoolSetAgainstCluster(t *testing.T) {
	c := clustertest.New(t, 3)
	c.WaitLeader()
	f := c.Followers()[0]

	for _, tn := range c.Live() {
		if _, sc, err := clustertest.Get(t, tn, "/backend/x", ""); err != nil || strings.Contains(sc, "Secure") {
			t.Fatalf("%s: before: Set-Cookie %q (%v)", tn.Cfg.Name, sc, err)
		}
	}

	before := lastIndex(t, f)
	r := ctl(t, f, "pool", "set", "backend", "--cookie-same-site", "None")
	wantFail(t, r, exitError, `cookie.same_site "None": None needs cookie.secure: true`)
	r = ctl(t, f, "pool", "set", "backend", "--fail-timeout", "25h")
	wantFail(t, r, exitError, `fail_timeout 25h0m0s: want 0s \(no quarantine\) to 24h0m0s`)
	wantFail(t, ctl(t, f, "pool", "set", "nope", "--fail-timeout", "1s"), exitNotFound, `pool "nope" not found`)
	wantUsage(t, ctl(t, f, "pool", "set", "backend", "--fail-timeout", "soon"), `invalid argument "soon" for "--fail-timeout"`)
	wantUsage(t, ctl(t, f, "pool", "set", "backend"), "nothing to set")
	if after := lastIndex(t, f); after != before {
		t.Errorf("refused pool sets wrote to the log: last index %d -> %d", before, after)
	}

	r = ctl(t, f, "pool", "set", "backend", "--cookie-secure", "--cookie-same-site", "None", "--fail-timeout", "0s", "--health-fall", "3")
	wantOK(t, r)
	wantLine(t, r.stdout, `^~ pool backend cookie.secure false -> true$`)
	wantLine(t, r.stdout, `^~ pool backend cookie.same_site "" -> "None"$`)
	wantLine(t, r.stdout, `^~ pool backend fail_timeout 5s -> 0s$`)
	wantLine(t, r.stdout, `^~ pool backend health.fall 2 -> 3$`)
	wantLine(t, r.stdout, `^pool backend updated \(index \d+\)$`)

	c.WaitAll("the new cookie settings on every data plane", func(tn *clustertest.Node) bool {
		p, ok := backendSpec(tn)
		return ok && p.Cookie.Secure && p.Cookie.SameSite == "None"
	})
	for _, tn := range c.Live() {
		_, sc, err := clustertest.Get(t, tn, "/backend/x", "")
		if err != nil || !strings.Contains(sc, "; Secure") || !strings.Contains(sc, "SameSite=None") {
			t.Errorf("%s: after pool set: Set-Cookie %q (%v), want Secure and SameSite=None", tn.Cfg.Name, sc, err)
		}
		if p, _ := backendSpec(tn); p.Quarantine() != 0 || p.Health.Fall != 3 || len(p.Members) != 3 {
			t.Errorf("%s: fail_timeout %v, health.fall %d, %d members; want 0s, 3, the 3 members kept", tn.Cfg.Name, p.Quarantine(), p.Health.Fall, len(p.Members))
		}
	}

	r = ctl(t, c.WaitLeader(), "pool", "show", "backend")
	wantOK(t, r)
	wantLine(t, r.stdout, `^cookie.secure\s+true$`)
	wantLine(t, r.stdout, `^fail_timeout\s+0s$`)
	wantLine(t, r.stdout, `^health.path\s+/backend/about$`)
	wantLine(t, r.stdout, `^2\s+`+regexp.QuoteMeta(c.GWE["2"].URL)+`\s+1\s+active\s+up`)
	r = ctl(t, f, "pool", "list")
	wantOK(t, r)
	wantLine(t, r.stdout, `^backend\s+/backend\s+cookie=ROUTEID insert\s+0s\s+3$`)

	r = ctl(t, f, "pool", "set", "backend", "--cookie-secure")
	wantOK(t, r)
	if r.stdout != "pool backend: no change\n" {
		t.Errorf("a set that changes nothing: %q", r.stdout)
	}
}

// writeFile writes a config file for apply and returns its path.
func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "n1.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestApplyAgainstCluster: apply --dry-run prints the plan and changes
// nothing; apply applies it (pool setting, new member, changed weight,
// removed member) on every node and keeps the admin state an operator
// gave a member; a second apply has nothing to do; a file that would empty
// a pool is refused unless --force.
func TestApplyAgainstCluster(t *testing.T) {
	c := clustertest.New(t, 3)
	c.WaitLeader()
	f := c.Followers()[0]
	g := c.GWE
	wantOK(t, ctl(t, f, "member", "drain", "backend", "2"))

	// A node's whole config (the keys apply does not read included), with
	// the seeded backend pool edited: fail_timeout, member 2's weight,
	// member 3 gone, member 4 new, member 2 written active (the file is not
	// told about drains).
	file := writeFile(t, fmt.Sprintf(`node: n1
data_dir: /var/lib/gwelb
grpc_addr: 127.0.0.1:7001
listeners: [{addr: 127.0.0.1:8080}]
pools:
  - name: backend
    prefix: /backend
    sticky: {cookie: ROUTEID, insert: true}
    fail_timeout: 7s
    health: {interval: 100ms, timeout: 2s}
    members:
      - {route: "1", url: %q}
      - {route: "2", url: %q, weight: 3, state: active}
      - {route: "4", url: %q, state: drain}
`, g["1"].URL, g["2"].URL, g["3"].URL))

	before := lastIndex(t, f)
	r := ctl(t, f, "apply", "-f", file, "--dry-run")
	wantOK(t, r)
	for _, l := range []string{
		`~ pool backend fail_timeout 5s -> 7s`,
		`~ pool backend member 2 weight 1 -> 3`,
		`- pool backend member 3 url=` + g["3"].URL + ` weight=1 state=active`,
		`+ pool backend member 4 url=` + g["3"].URL + ` weight=1 state=drain`,
		`dry run: 4 change(s) planned, nothing applied`,
	} {
		wantLine(t, r.stdout, "^"+regexp.QuoteMeta(l)+"$")
	}
	if strings.Contains(r.stdout, "member 2 state") {
		t.Errorf("the plan changes member 2's admin state:\n%s", r.stdout)
	}
	if after := lastIndex(t, f); after != before {
		t.Errorf("apply --dry-run wrote to the log: last index %d -> %d", before, after)
	}

	r = ctl(t, f, "apply", "-f", file)
	wantOK(t, r)
	wantLine(t, r.stdout, `^applied: ~ pool backend fail_timeout 5s -> 7s \(index \d+\)$`)
	wantLine(t, r.stdout, `^applied: - pool backend member 3 .* \(index \d+\)$`)
	wantLine(t, r.stdout, `^4 change\(s\) applied$`)
	c.WaitAll("the applied table on every node", func(tn *clustertest.Node) bool {
		p, ok := backendSpec(tn)
		if !ok || p.Quarantine() != 7*time.Second || len(p.Members) != 3 {
			return false
		}
		m := map[string]fsm.MemberSpec{}
		for _, x := range p.Members {
			m[x.Route] = x
		}
		return m["2"].Weight == 3 && m["2"].State == fsm.Drain && m["4"].State == fsm.Drain && m["4"].URL == g["3"].URL && m["3"].URL == ""
	})

	r = ctl(t, c.WaitLeader(), "apply", "-f", file, "--dry-run")
	wantOK(t, r)
	if r.stdout != "no changes: the cluster's pools and members match the file\n" {
		t.Errorf("apply after apply: %q", r.stdout)
	}

	// A file that empties the pool: refused, nothing changed; --force
	// --dry-run shows what it would do.
	empty := writeFile(t, `pools:
  - name: backend
    prefix: /backend
    sticky: {cookie: ROUTEID, insert: true}
    fail_timeout: 7s
    health: {interval: 100ms, timeout: 2s}
    members: []
`)
	before = lastIndex(t, f)
	r = ctl(t, f, "apply", "-f", empty)
	if r.code != exitError || !strings.Contains(r.stderr, "refused: the plan removes every member of pool backend") || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("apply of an emptying file: exit %d, stderr %q", r.code, r.stderr)
	}
	if after := lastIndex(t, f); after != before {
		t.Errorf("a refused apply wrote to the log: last index %d -> %d", before, after)
	}
	r = ctl(t, f, "apply", "-f", empty, "--force", "--dry-run")
	wantOK(t, r)
	wantLine(t, r.stdout, `^- pool backend member 1 `)

	// A file the validator refuses: every problem, naming the field.
	bad := writeFile(t, `pools:
  - name: backend
    prefix: backend
    sticky: {cookie: ROUTEID}
    members: [{route: "1", url: "ftp://x", weight: 0}]
`)
	wantFail(t, ctl(t, f, "apply", "-f", bad), exitError, `prefix "backend": want / or a path.*; pools\[0\] "backend": members\[0\] "1": url "ftp://x"`)
	typo := writeFile(t, "pools:\n  - name: backend\n    prefix: /backend\n    fail_timout: 5s\n")
	wantFail(t, ctl(t, f, "apply", "-f", typo), exitError, `field fail_timout not found`)
	wantUsage(t, ctl(t, f, "apply"), `missing -f FILE`)
}

// TestMemberAddKeepsAdminState is issue #10's bug: after member drain,
// member add of the same route made it active again. add now refuses an
// existing route and leaves it as it is; --update and set-weight change URL
// and weight but not the admin state; weight 0 is refused before sending.
func TestMemberAddKeepsAdminState(t *testing.T) {
	c := clustertest.New(t, 3)
	c.WaitLeader()
	f := c.Followers()[0]
	g := c.GWE
	wantOK(t, ctl(t, f, "member", "drain", "backend", "2"))

	r := ctl(t, f, "member", "add", "backend", "2", g["1"].URL, "--weight", "2")
	wantFail(t, r, exitError, `member backend/2 already exists; it was not changed: use --update`)
	m := members(t, f)["2"]
	if m.GetState() != gwelbv1.AdminState_ADMIN_STATE_DRAIN || m.GetUrl() != g["2"].URL || m.GetWeight() != 1 {
		t.Fatalf("member 2 after a refused add: %v", m)
	}

	wantUsage(t, ctl(t, f, "member", "add", "backend", "2", g["2"].URL, "--update", "--state", "active"), `--state with --update`)
	r = ctl(t, f, "member", "add", "backend", "2", g["1"].URL, "--update", "--weight", "2")
	wantOK(t, r)
	wantLine(t, r.stdout, `^member backend/2 updated \(`+regexp.QuoteMeta(g["1"].URL)+`, weight 2; admin state kept\) \(index \d+\)$`)
	m = members(t, f)["2"]
	if m.GetState() != gwelbv1.AdminState_ADMIN_STATE_DRAIN || m.GetUrl() != g["1"].URL || m.GetWeight() != 2 {
		t.Errorf("member 2 after add --update: %v, want drain, %s, weight 2", m, g["1"].URL)
	}

	r = ctl(t, f, "member", "set-weight", "backend", "2", "5")
	wantOK(t, r)
	wantLine(t, r.stdout, `^member backend/2 weight is now 5 \(index \d+\)$`)
	m = members(t, f)["2"]
	if m.GetState() != gwelbv1.AdminState_ADMIN_STATE_DRAIN || m.GetUrl() != g["1"].URL || m.GetWeight() != 5 {
		t.Errorf("member 2 after set-weight: %v, want drain, %s, weight 5", m, g["1"].URL)
	}

	before := lastIndex(t, f)
	wantFail(t, ctl(t, f, "member", "add", "backend", "9", g["1"].URL, "--weight", "0"), exitError, `put member backend/9: weight 0: want 1\.\.1000 \(to give a member no new sessions, drain it`)
	wantFail(t, ctl(t, f, "member", "set-weight", "backend", "2", "0"), exitError, `weight 0: want 1\.\.1000`)
	wantFail(t, ctl(t, f, "member", "set-weight", "backend", "2", "1001"), exitError, `weight 1001: want 1\.\.1000`)
	wantUsage(t, ctl(t, f, "member", "set-weight", "backend", "2", "x"), `invalid WEIGHT "x"`)
	if after := lastIndex(t, f); after != before {
		t.Errorf("refused weights wrote to the log: last index %d -> %d", before, after)
	}
	wantFail(t, ctl(t, f, "member", "set-weight", "backend", "nope", "3"), exitNotFound, `not found`)
	wantFail(t, ctl(t, f, "member", "add", "backend", "nope", g["1"].URL, "--update"), exitNotFound, `not found`)

	// A new route is added as before.
	r = ctl(t, f, "member", "add", "backend", "9", g["3"].URL, "--state", "drain")
	wantOK(t, r)
	if m := members(t, f)["9"]; m.GetState() != gwelbv1.AdminState_ADMIN_STATE_DRAIN || m.GetWeight() != 1 {
		t.Errorf("new member 9: %v", m)
	}
}

// TestPoolSetConcurrent: three operators change different settings of one
// pool at the same moment, each through another node. pool set reads the
// pool and writes it back whole, so without the compare-and-set one
// write's read would be older than another's write and undo it; with it,
// the loser is refused, reads again and applies its change on top: every
// node ends with all three changes, round after round.
func TestPoolSetConcurrent(t *testing.T) {
	c := clustertest.New(t, 3)
	c.WaitLeader()
	nodes := c.Live()
	for round := 1; round <= 3; round++ {
		fall, timeout, interval := 3+round, time.Duration(5+round)*time.Second, time.Duration(round)*time.Second
		sets := [][]string{
			{"--health-fall", strconv.Itoa(fall)},
			{"--fail-timeout", timeout.String()},
			{"--health-interval", interval.String()},
		}
		start := make(chan struct{})
		results := make([]result, len(sets))
		var wg sync.WaitGroup
		for i, set := range sets {
			wg.Go(func() {
				<-start
				results[i] = ctl(t, nodes[i%len(nodes)], append([]string{"pool", "set", "backend"}, set...)...)
			})
		}
		close(start)
		wg.Wait()
		for i, r := range results {
			if r.code != exitOK {
				t.Fatalf("round %d: pool set %v: exit %d, stderr %q", round, sets[i], r.code, r.stderr)
			}
		}
		c.WaitAll(fmt.Sprintf("round %d: all three changes on every node", round), func(tn *clustertest.Node) bool {
			p, ok := backendSpec(tn)
			return ok && p.Health.Fall == fall && p.Quarantine() == timeout && p.Health.Interval == interval
		})
	}
}

// TestApplyConflict: apply prints a plan from the pools it read, then
// writes. A pool set landing in between (another operator) used to be
// overwritten by the plan's older view of the pool; now the plan's PutPool
// is a compare-and-set, apply stops with a clear line and the other
// change stays. It fails without PoolChange.Was in the request.
func TestApplyConflict(t *testing.T) {
	c := clustertest.New(t, 3)
	c.WaitLeader()
	f := c.Followers()[0]
	g := c.GWE
	file := writeFile(t, fmt.Sprintf(`pools:
  - name: backend
    prefix: /backend
    sticky: {cookie: ROUTEID, insert: true}
    fail_timeout: 7s
    health: {interval: 100ms, timeout: 2s}
    members:
      - {route: "1", url: %q}
      - {route: "2", url: %q}
      - {route: "3", url: %q}
`, g["1"].URL, g["2"].URL, g["3"].URL))

	var other result
	args := append(caArgs(f, "--addr", f.Node.GRPCAddr(), "--token", clustertest.Token), "apply", "-f", file)
	var stdout, stderr bytes.Buffer
	e := env{getenv: func(string) string { return "" }, now: func() time.Time { return testNow }, planned: func() {
		// Another operator, through another node, after the plan was read.
		other = ctl(t, c.WaitLeader(), "pool", "set", "backend", "--health-fall", "9")
	}}
	code := runWith(t.Context(), e, args, &stdout, &stderr)
	wantOK(t, other)
	r := result{stdout.String(), stderr.String(), code}
	wantFail(t, r, exitError, `apply: ~ pool backend fail_timeout 5s -> 7s: .*another writer changed the pool after this plan was read, and its change stays \(0 of 1 changes applied; run apply again to continue\)`)
	c.WaitAll("the other writer's change, and not the stale plan's, on every node", func(tn *clustertest.Node) bool {
		p, ok := backendSpec(tn)
		return ok && p.Health.Fall == 9 && p.Quarantine() == 5*time.Second
	})

	// Run again: a plan from the new state, which keeps health.fall 9 only
	// if the file says so; this file leaves it out, so it goes back to
	// the default, as the printed plan says.
	r = ctl(t, f, "apply", "-f", file)
	wantOK(t, r)
	wantLine(t, r.stdout, `^~ pool backend .*fail_timeout 5s -> 7s`)
	c.WaitAll("the second apply on every node", func(tn *clustertest.Node) bool {
		p, ok := backendSpec(tn)
		return ok && p.Quarantine() == 7*time.Second
	})
}
