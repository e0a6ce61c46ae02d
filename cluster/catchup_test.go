package cluster_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gwelb/gwelb/cluster"
	"github.com/gwelb/gwelb/cluster/clustertest"
	"github.com/gwelb/gwelb/fsm"
	"github.com/gwelb/gwelb/internal/gwedemo"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// visitor is one client connection, kept alive across requests.
type visitor struct {
	conn net.Conn
	r    *bufio.Reader
}

// dialVisitor connects to addr, which must accept at once.
func dialVisitor(t *testing.T, addr string) *visitor {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return &visitor{conn: conn, r: bufio.NewReader(conn)}
}

// session sends one request with cookie and returns the server
// that answered and the Set-Cookie it got.
func (v *visitor) session(t *testing.T, cookie string) (server, setCookie string) {
	t.Helper()
	v.conn.SetDeadline(time.Now().Add(10 * time.Second))
	req, _ := http.NewRequest("GET", "http://gwelb/backend/x", nil)
	req.Header.Set("Cookie", cookie)
	if err := req.Write(v.conn); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(v.r, req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: %s", cookie, resp.Status)
	}
	return resp.Header.Get(gwedemo.HeaderServer), resp.Header.Get("Set-Cookie")
}

// write makes an admin write through tn, again while it fails for want of
// a leader (a busy host can cost two nodes their leader for a moment; the
// writes are idempotent upserts).
func write(t *testing.T, c *clustertest.Cluster, tn *clustertest.Node, what string, call func(context.Context, gwelbv1.AdminClient) error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		cl, ctx := c.Admin(tn)
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := call(ctx, cl)
		cancel()
		if err == nil {
			return
		}
		if code := status.Code(err); (code != codes.Unavailable && code != codes.DeadlineExceeded) || time.Now().After(deadline) {
			t.Fatalf("%s via %s: %v", what, tn.Cfg.Name, err)
		}
		t.Logf("%s via %s: %v; again", what, tn.Cfg.Name, err)
	}
}

// TestRestartedNodeCatchesUpBeforeRouting: a node is down while a member is
// added and another enabled; restarted from its data_dir, the first
// visitors its listener accepts, pinned to those members, are not moved.
func TestRestartedNodeCatchesUpBeforeRouting(t *testing.T) {
	c := clustertest.New(t, 3)
	added := clustertest.StartGWE(t, "added", "/backend")
	enabled := clustertest.StartGWE(t, "enabled", "/backend")
	write(t, c, c.WaitLeader(), "put member enabled (disabled)", func(ctx context.Context, cl gwelbv1.AdminClient) error {
		_, err := cl.PutMember(ctx, &gwelbv1.PutMemberRequest{Member: &gwelbv1.Member{
			Pool: "backend", Route: "enabled", Url: enabled.URL, Weight: 1, State: gwelbv1.AdminState_ADMIN_STATE_DISABLED}})
		return err
	})
	c.WaitAll("member enabled (disabled) everywhere", func(tn *clustertest.Node) bool {
		_, ok := tn.Proxy.Table().Pool("backend").Lookup("enabled")
		return ok
	})

	down := c.Followers()[0]
	c.Kill(down)
	survivor := c.Live()[0]
	write(t, c, survivor, "put member added", func(ctx context.Context, cl gwelbv1.AdminClient) error {
		_, err := cl.PutMember(ctx, &gwelbv1.PutMemberRequest{Member: &gwelbv1.Member{Pool: "backend", Route: "added", Url: added.URL, Weight: 1}})
		return err
	})
	write(t, c, survivor, "enable member enabled", func(ctx context.Context, cl gwelbv1.AdminClient) error {
		_, err := cl.SetMemberState(ctx, &gwelbv1.SetMemberStateRequest{Pool: "backend", Route: "enabled", State: gwelbv1.AdminState_ADMIN_STATE_ACTIVE})
		return err
	})

	started := time.Now()
	back := c.Start(down.Cfg)
	if tab := back.Proxy.Table(); tab != nil {
		if _, ok := tab.Pool("backend").Lookup("added"); ok {
			t.Log("the restarted node had caught up before the test looked; the check below still holds")
		}
	}
	// The first visitor the listener accepts, the moment it opens.
	back.WaitServing(t, 20*time.Second)
	v := dialVisitor(t, strings.TrimPrefix(back.URL, "http://"))
	defer v.conn.Close()
	t.Logf("listener of the restarted node accepted after %v", time.Since(started))
	for _, route := range []string{"added", "enabled"} {
		server, setCookie := v.session(t, "ROUTEID=."+route)
		if server != route || setCookie != "" {
			t.Errorf("session .%s through the restarted node: served by %q with Set-Cookie %q, want %s and no new cookie", route, server, setCookie, route)
		}
	}
	if err := back.Ready(); err != nil {
		t.Errorf("listener open but not ready: %v", err)
	}
}

// readyz fetches tn's /readyz.
func readyz(t *testing.T, tn *clustertest.Node) (int, string) {
	t.Helper()
	resp, err := http.Get(tn.OpsURL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// listening reports whether tn's data-plane listener is open (clustertest
// binds it when WaitCaughtUp returns, as the daemon does).
func listening(tn *clustertest.Node) bool {
	select {
	case <-tn.Serving:
		return true
	default:
		return false
	}
}

// TestReadyzUntilCaughtUp: a restarted node answers /readyz 503 (saying
// why) and keeps its listener closed while it cannot catch up; once a
// quorum is back it catches up, answers 200 and listens. Alone past
// startup_catchup_timeout, it serves its cached table. A node without a
// table is never ready.
func TestReadyzUntilCaughtUp(t *testing.T) {
	c := clustertest.New(t, 3)
	nodes := append([]*clustertest.Node(nil), c.Nodes...)
	for _, tn := range nodes {
		c.Kill(tn)
	}

	// Alone, it cannot catch up: no quorum, no leader.
	cfg := nodes[0].Cfg
	cfg.StartupCatchupTimeout = time.Minute
	first := c.Start(cfg)
	if code, body := readyz(t, first); code != http.StatusServiceUnavailable || !strings.Contains(body, "catching up") {
		t.Fatalf("/readyz of a node that cannot catch up = %d %q, want 503 catching up", code, body)
	}
	// Long enough for a lone node to have routed before this change, and
	// for several election rounds: it must still wait.
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if listening(first) {
			t.Fatal("the listener opened before the node caught up")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, body := readyz(t, first); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz after 2s without a quorum = %d %q, want 503", code, body)
	}

	// A second node makes a quorum: both catch up, well before the minute.
	cfg2 := nodes[1].Cfg
	cfg2.StartupCatchupTimeout = time.Minute
	second := c.Start(cfg2)
	first.WaitServing(t, 20*time.Second)
	second.WaitServing(t, 20*time.Second)
	if code, body := readyz(t, first); code != http.StatusOK {
		t.Errorf("/readyz after catching up = %d %q, want 200", code, body)
	}
	if server, _, err := clustertest.Get(t, first, "/backend/x", "ROUTEID=.2"); err != nil || server != "2" {
		t.Errorf("after catching up: server %q, err %v", server, err)
	}

	// Alone with a short bound: after it, the node serves its cached table.
	c.Kill(first)
	c.Kill(second)
	cfg.StartupCatchupTimeout = 500 * time.Millisecond
	started := time.Now()
	lone := c.Start(cfg)
	lone.WaitServing(t, 20*time.Second)
	if waited := time.Since(started); waited < cfg.StartupCatchupTimeout {
		t.Errorf("listener opened after %v, before startup_catchup_timeout %v without catching up", waited, cfg.StartupCatchupTimeout)
	}
	if err := lone.Node.WaitCaughtUp(context.Background()); !errors.Is(err, cluster.ErrNotCaughtUp) {
		t.Errorf("WaitCaughtUp of a lone node = %v, want ErrNotCaughtUp", err)
	}
	if code, body := readyz(t, lone); code != http.StatusOK {
		t.Errorf("/readyz serving the cached table = %d %q, want 200", code, body)
	}
	if server, _, err := clustertest.Get(t, lone, "/backend/x", "ROUTEID=.3"); err != nil || server != "3" {
		t.Errorf("lone node on its cached table: server %q, err %v", server, err)
	}

	// A fresh node that joins nothing has no table: never ready, no listener.
	fresh := c.Start(c.NodeConfig("fresh"))
	if code, body := readyz(t, fresh); code != http.StatusServiceUnavailable || !strings.Contains(body, "catching up") {
		t.Errorf("/readyz of a fresh node = %d %q, want 503 catching up", code, body)
	}
	// A lone -dev node catches up with itself at once, but without a seed
	// its table has no pools: not ready, and it says so.
	devCfg := c.NodeConfig("dev")
	devCfg.Dev = true
	dev := c.Start(devCfg)
	dev.WaitServing(t, 20*time.Second)
	if code, body := readyz(t, dev); code != http.StatusServiceUnavailable || !strings.Contains(body, "table") {
		t.Errorf("/readyz of a node without pools = %d %q, want 503 naming the table", code, body)
	}
	if listening(fresh) {
		t.Error("a fresh node with no table opened its listener")
	}
}

// through sends GET /backend/x through tn's data plane with cookie and
// returns the status, the GWE server that answered ("" if none) and the
// Set-Cookie.
func through(t *testing.T, tn *clustertest.Node, cookie string) (code int, server, setCookie string) {
	t.Helper()
	tn.WaitServing(t, 20*time.Second)
	req, _ := http.NewRequest("GET", tn.URL+"/backend/x", nil)
	req.Header.Set("Cookie", cookie)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET via %s with %s: %v", tn.Cfg.Name, cookie, err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.Header.Get(gwedemo.HeaderServer), resp.Header.Get("Set-Cookie")
}

// knows reports whether tbl has a backend member route.
func knows(tbl *fsm.Table, route string) bool {
	if tbl == nil || tbl.Pool("backend") == nil {
		return false
	}
	_, ok := tbl.Pool("backend").Lookup(route)
	return ok
}

// putBackend adds (or replaces) an active backend member through tn.
func putBackend(t *testing.T, c *clustertest.Cluster, tn *clustertest.Node, route, url string) {
	t.Helper()
	write(t, c, tn, "put member "+route, func(ctx context.Context, cl gwelbv1.AdminClient) error {
		_, err := cl.PutMember(ctx, &gwelbv1.PutMemberRequest{Member: &gwelbv1.Member{Pool: "backend", Route: route, Url: url, Weight: 1}})
		return err
	})
}

// TestHealedFollowerDoesNotMoveSessions is the chaos suite's
// partition-follower case (invariant 1, DESIGN.md §6.1). A follower is cut
// off — its Raft receives nothing, its catch-up questions go unanswered —
// while a member is added. Cut off, it refuses a visitor pinned to the
// member it cannot know (503, cookie kept) and serves the sessions it
// knows. Then the partition heals, but its Raft stays stalled, as the
// leader's connections to it sit out TCP retransmission backoff for
// seconds after a heal: the first visitor through it is served by the new
// member all the same, from the leader's state, without waiting for Raft.
// Cut off again for longer than its refusal bound, it routes on what it
// has.
func TestHealedFollowerDoesNotMoveSessions(t *testing.T) {
	// A generous wait bound: on a busy machine the steps before the heal
	// must not use it up.
	c := clustertest.New(t, 3, func(_ int, cfg *cluster.Config) { cfg.StartupCatchupTimeout = 30 * time.Second })
	added := clustertest.StartGWE(t, "added", "/backend")
	later := clustertest.StartGWE(t, "later", "/backend")
	leader := c.WaitLeader()
	f := c.Followers()[0]
	f.WaitServing(t, 20*time.Second)

	rounds := f.Node.CatchUpRounds()
	resume := f.Node.StallRaft(true)
	t.Cleanup(resume)
	heal := f.Node.CutCatchUp()
	t.Cleanup(heal)
	clustertest.WaitFor(t, 10*time.Second, f.Cfg.Name+" to know it may be behind", func() bool { return !f.Node.Fresh(time.Now().UnixNano()) })
	clustertest.WaitFor(t, 10*time.Second, f.Cfg.Name+"'s catch-up round counted (gwelb_catchup_rounds_total)", func() bool { return f.Node.CatchUpRounds() > rounds })

	putBackend(t, c, leader, "added", added.URL)
	if server, _, err := clustertest.Get(t, leader, "/backend/x", "ROUTEID=.added"); err != nil || server != "added" {
		t.Fatalf("via the leader: server %q, err %v", server, err)
	}

	if code, server, setCookie := through(t, f, "ROUTEID=.added"); code != http.StatusServiceUnavailable || setCookie != "" {
		t.Errorf("cut off, a session on the member it cannot know: %d from %q with Set-Cookie %q, want 503 and no cookie", code, server, setCookie)
	}
	if code, server, setCookie := through(t, f, "ROUTEID=.2"); code != http.StatusOK || server != "2" || setCookie != "" {
		t.Errorf("cut off, a session it knows: %d from %q with Set-Cookie %q, want 200 from 2", code, server, setCookie)
	}

	heal()
	healed := time.Now()
	// The first visitor after the heal waits for the catch-up and is served
	// by the new member. On a starved machine the catch-up may take longer
	// than one request waits: then the visitor is refused and retries, as
	// Retry-After tells it to, but is never moved.
	for attempt := 1; ; attempt++ {
		code, server, setCookie := through(t, f, "ROUTEID=.added")
		if code == http.StatusOK && server == "added" && setCookie == "" {
			t.Logf("visitor after the heal served in %v (attempt %d)", time.Since(healed).Round(time.Millisecond), attempt)
			break
		}
		if code != http.StatusServiceUnavailable || setCookie != "" || time.Since(healed) > 10*time.Second {
			t.Fatalf("after the heal (attempt %d): %d from %q with Set-Cookie %q, want 200 from added and no new cookie", attempt, code, server, setCookie)
		}
		t.Logf("after the heal, attempt %d refused: still catching up", attempt)
	}
	if knows(f.Node.Table(), "added") {
		t.Fatal("raft delivered the member anyway: the test did not stall it")
	}

	// Raft resumes: the FSM replays up to the table the leader sent and
	// beyond, and later tables reach the data plane as ever.
	resume()
	putBackend(t, c, leader, "later", later.URL)
	clustertest.WaitFor(t, 10*time.Second, f.Cfg.Name+" to route on what raft brings", func() bool {
		return knows(f.Node.Table(), "added") && knows(f.Proxy.Table(), "later")
	})

	// Cut off for longer than the refusal bound: a node alone for that
	// long serves what it has (invariant 4), moving the visitor.
	f.Node.SetStaleRefuse(time.Second)
	t.Cleanup(f.Node.StallRaft(true)) // before the nodes stop: the leader's shutdown waits for RPCs in flight
	t.Cleanup(f.Node.CutCatchUp())
	clustertest.WaitFor(t, 10*time.Second, f.Cfg.Name+" to know it may be behind again", func() bool { return !f.Node.Fresh(time.Now().UnixNano()) })
	clustertest.WaitFor(t, 10*time.Second, f.Cfg.Name+" to pass its refusal bound", func() bool { return f.Node.MayMove(time.Now().UnixNano()) })
	if code, server, setCookie := through(t, f, "ROUTEID=.gone"); code != http.StatusOK || server == "" || setCookie == "" {
		t.Errorf("past the refusal bound, an unknown route: %d from %q with Set-Cookie %q, want 200 and a new cookie", code, server, setCookie)
	}
}

// TestFollowerWithoutTheLogCatchesUp: heartbeats still reach a follower
// but the leader's log does not (after a heal they travel on different
// connections, each in its own TCP backoff). It must not take heartbeats
// for freshness: a member added meanwhile reaches its data plane through
// catch-up within a few staleness bounds, and its visitors are not moved.
// Nodes ask each other with their node certificates, or, without TLS,
// with the token.
func TestFollowerWithoutTheLogCatchesUp(t *testing.T) {
	t.Run("node TLS", func(t *testing.T) { followerWithoutTheLog(t) })
	t.Run("insecure", func(t *testing.T) { followerWithoutTheLog(t, clustertest.Insecure) })
}

func followerWithoutTheLog(t *testing.T, opts ...clustertest.Option) {
	c := clustertest.New(t, 3, opts...)
	added := clustertest.StartGWE(t, "added", "/backend")
	leader := c.WaitLeader()
	f := c.Followers()[0]
	f.WaitServing(t, 20*time.Second)

	resume := f.Node.StallRaft(false)
	t.Cleanup(resume)
	putBackend(t, c, leader, "added", added.URL)
	clustertest.WaitFor(t, 10*time.Second, f.Cfg.Name+"'s data plane to learn the member", func() bool { return knows(f.Proxy.Table(), "added") })
	if code, server, setCookie := through(t, f, "ROUTEID=.added"); code != http.StatusOK || server != "added" || setCookie != "" {
		t.Errorf("session on the added member: %d from %q with Set-Cookie %q, want 200 from added and no new cookie", code, server, setCookie)
	}
	if knows(f.Node.Table(), "added") {
		t.Fatal("raft delivered the member anyway: the test did not stall it")
	}
	if lc := f.Node.LastContact(); lc > time.Second {
		t.Errorf("heartbeats stopped too (last contact %v ago): the test wanted them flowing", lc)
	}
}
