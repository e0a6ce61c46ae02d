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
