package cluster_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gwelb/gwelb/cluster"
	"github.com/gwelb/gwelb/cluster/clustertest"
	"github.com/gwelb/gwelb/fsm"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// verdict is member route's verdict in tn's routing table.
func verdict(tn *clustertest.Node, route string) fsm.Verdict {
	p := tn.Proxy.Table().Pool("backend")
	i, ok := p.Lookup(route)
	if !ok {
		return fsm.Down
	}
	return p.Member(i).Verdict
}

// observed reports whether node name's latest observation of route says down.
func observed(tn *clustertest.Node, route, name string) (down, ok bool) {
	for _, ps := range tn.Node.Status().GetPools() {
		for _, ms := range ps.GetMembers() {
			if ms.GetMember().GetRoute() != route {
				continue
			}
			for _, o := range ms.GetObservations() {
				if o.GetNode() == name {
					return o.GetDown(), true
				}
			}
		}
	}
	return false, false
}

// probeBlocker cuts chosen nodes' health probes off from chosen GWE
// servers, as a firewall between one balancer and one server would; the
// data plane still reaches them.
type probeBlocker struct {
	mu      sync.Mutex
	blocked map[string]bool // host:port
}

// on installs the blocker in the probe dialer of the nodes with index idx.
func (b *probeBlocker) on(idx ...int) clustertest.Option {
	return func(i int, cfg *cluster.Config) {
		for _, j := range idx {
			if i != j {
				continue
			}
			d := &net.Dialer{}
			cfg.ProbeDialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
				b.mu.Lock()
				cut := b.blocked[addr]
				b.mu.Unlock()
				if cut {
					return nil, &net.OpError{Op: "dial", Net: network, Err: syscall.ECONNREFUSED}
				}
				conn, err := d.DialContext(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				// A firewall also cuts the probes' kept-alive connection.
				return &blockableConn{Conn: conn, cut: func() bool { return b.isBlocked(addr) }}, nil
			}
		}
	}
}

func (b *probeBlocker) isBlocked(addr string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.blocked[addr]
}

// blockableConn fails its writes once its server is blocked.
type blockableConn struct {
	net.Conn
	cut func() bool
}

func (c *blockableConn) Write(p []byte) (int, error) {
	if c.cut() {
		c.Conn.Close()
		return 0, &net.OpError{Op: "write", Net: "tcp", Err: syscall.ECONNRESET}
	}
	return c.Conn.Write(p)
}

func (b *probeBlocker) block(url string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.blocked == nil {
		b.blocked = map[string]bool{}
	}
	b.blocked[url[len("http://"):]] = true
}

// TestServerDeathFailsOverTogether: a backend dies; every node sends its
// sessions to the same replacement with the same new cookie, and the
// re-pinned session stays there after the server returns.
func TestServerDeathFailsOverTogether(t *testing.T) {
	c := clustertest.New(t, 3)
	for _, tn := range c.Live() {
		if server, _, err := clustertest.Get(t, tn, "/backend/x", "ROUTEID=.2"); err != nil || server != "2" {
			t.Fatalf("before: %s routes .2 to %q (%v)", tn.Cfg.Name, server, err)
		}
	}
	died := time.Now()
	c.GWE["2"].Stop()
	c.WaitAll("verdict DOWN for member 2 on every node", func(tn *clustertest.Node) bool { return verdict(tn, "2") == fsm.Down })
	t.Logf("verdict DOWN on all nodes %v after the server died", time.Since(died))

	var replacement, cookie string
	for _, tn := range c.Live() {
		server, setCookie, err := clustertest.Get(t, tn, "/backend/x", "ROUTEID=.2")
		if err != nil {
			t.Fatal(err)
		}
		if server == "2" {
			t.Fatalf("%s still routes to the dead server", tn.Cfg.Name)
		}
		if replacement == "" {
			replacement, cookie = server, setCookie
		}
		if server != replacement || setCookie != cookie {
			t.Errorf("%s sends .2 to %q with %q; another node sends it to %q with %q", tn.Cfg.Name, server, setCookie, replacement, cookie)
		}
	}
	if cookie != "ROUTEID=."+replacement+"; Path=/" {
		t.Errorf("re-pin cookie = %q, want ROUTEID=.%s; Path=/", cookie, replacement)
	}

	if err := c.GWE["2"].Start(); err != nil {
		t.Fatal(err)
	}
	c.WaitAll("verdict UP for member 2 again", func(tn *clustertest.Node) bool { return verdict(tn, "2") == fsm.Up })
	for _, tn := range c.Live() {
		server, setCookie, err := clustertest.Get(t, tn, "/backend/x", "ROUTEID=."+replacement)
		if err != nil {
			t.Fatal(err)
		}
		if server != replacement || setCookie != "" {
			t.Errorf("re-pinned session via %s went to %q (Set-Cookie %q), want it to stay on %q", tn.Cfg.Name, server, setCookie, replacement)
		}
	}
}

// TestOneNodeAloneCannotEvictAServer: one balancer cannot reach server 3;
// the verdict stays UP and visitors of server 3 are untouched everywhere.
func TestOneNodeAloneCannotEvictAServer(t *testing.T) {
	var b probeBlocker
	c := clustertest.New(t, 3, b.on(0))
	lonely := c.Nodes[0]
	b.block(c.GWE["3"].URL)
	c.WaitAll("n1's observation of member 3 as down recorded", func(tn *clustertest.Node) bool {
		down, ok := observed(tn, "3", lonely.Cfg.Name)
		return ok && down
	})
	for _, tn := range c.Live() {
		if v := verdict(tn, "3"); v != fsm.Up {
			t.Errorf("%s: verdict of member 3 is %v after one node observed it down, want up", tn.Cfg.Name, v)
		}
		server, setCookie, err := clustertest.Get(t, tn, "/backend/x", "ROUTEID=.3")
		if err != nil || server != "3" || setCookie != "" {
			t.Errorf("%s: session .3 went to %q (Set-Cookie %q, err %v), want it untouched on 3", tn.Cfg.Name, server, setCookie, err)
		}
	}
}

// TestMajorityEvictsAServer: two of three balancers see server 3 down, so
// the verdict goes DOWN everywhere, including on the node that still
// reaches it, and all three agree on the replacement.
func TestMajorityEvictsAServer(t *testing.T) {
	var b probeBlocker
	c := clustertest.New(t, 3, b.on(0, 1))
	b.block(c.GWE["3"].URL)
	c.WaitAll("verdict DOWN for member 3 on every node", func(tn *clustertest.Node) bool { return verdict(tn, "3") == fsm.Down })
	var replacement string
	for _, tn := range c.Live() {
		server, _, err := clustertest.Get(t, tn, "/backend/x", "ROUTEID=.3")
		if err != nil {
			t.Fatal(err)
		}
		if server == "3" {
			t.Errorf("%s still routes .3 to member 3", tn.Cfg.Name)
		}
		if replacement == "" {
			replacement = server
		} else if server != replacement {
			t.Errorf("%s sends .3 to %q, another node to %q", tn.Cfg.Name, server, replacement)
		}
	}
}

// TestNoRaftWritesInSteadyState: with every server healthy, probing writes
// nothing to the Raft log.
func TestNoRaftWritesInSteadyState(t *testing.T) {
	c := clustertest.New(t, 3)
	leader := c.WaitLeader()
	// Steady state first: the start may still write (the leader records
	// the balancer set as gossip completes, a prober new to a member
	// reports its first view, §5.5). Settled is five probe rounds in a row
	// without a command.
	settled, rounds := leader.Node.Table().Index(), 0
	clustertest.WaitFor(t, 20*time.Second, "five probe rounds without a command", func() bool {
		time.Sleep(clustertest.Probe.Interval) // the round being counted, not synchronisation
		if now := leader.Node.Table().Index(); now != settled {
			settled, rounds = now, 0
			return false
		}
		rounds++
		return rounds >= 5
	})
	// Commands, not raw log entries: on a busy machine a leader election may
	// append its no-op entry, which is not a write.
	start := leader.Node.Table().Index()
	// Twenty probe rounds at 100 ms; no command may be applied.
	deadline := time.Now().Add(20 * clustertest.Probe.Interval)
	for time.Now().Before(deadline) {
		if now := leader.Node.Table().Index(); now != start {
			t.Fatalf("a command was applied in steady state: table index %d -> %d", start, now)
		}
		time.Sleep(clustertest.Probe.Interval)
	}
}

// TestDrainAndDisableWithSessionsInFlight: drain keeps existing sessions and
// requests in flight and sends no new ones; status shows the requests in
// flight; disable moves the sessions, with a new cookie.
func TestDrainAndDisableWithSessionsInFlight(t *testing.T) {
	c := clustertest.New(t, 3)
	tn := c.Followers()[0]
	cl, ctx := c.Admin(tn)

	// A slow request in flight to member 2 through tn.
	slowDone := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest("GET", tn.URL+"/backend/slow?ms=1500", nil)
		req.Header.Set("Cookie", "ROUTEID=.2")
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				err = errors.New(resp.Status)
			}
		}
		slowDone <- err
	}()
	// Asked on another node: the count is summed over the cluster.
	other, octx := c.Admin(c.Followers()[1])
	inFlight := func() int64 {
		st, err := other.Status(octx, &gwelbv1.StatusRequest{})
		if err != nil {
			return -1
		}
		for _, ps := range st.GetPools() {
			for _, ms := range ps.GetMembers() {
				if ms.GetMember().GetRoute() == "2" {
					return ms.GetInFlight()
				}
			}
		}
		return -1
	}
	clustertest.WaitFor(t, 5*time.Second, "status to show the request in flight", func() bool { return inFlight() == 1 })

	if _, err := cl.SetMemberState(ctx, &gwelbv1.SetMemberStateRequest{Pool: "backend", Route: "2", State: gwelbv1.AdminState_ADMIN_STATE_DRAIN}); err != nil {
		t.Fatal(err)
	}
	c.WaitAll("member 2 draining everywhere", func(tn *clustertest.Node) bool {
		p := tn.Proxy.Table().Pool("backend")
		i, _ := p.Lookup("2")
		return p.Member(i).State == fsm.Drain
	})
	for _, n := range c.Live() {
		if server, _, err := clustertest.Get(t, n, "/backend/x", "ROUTEID=.2"); err != nil || server != "2" {
			t.Errorf("%s: draining member lost its session: %q %v", n.Cfg.Name, server, err)
		}
		for range 12 {
			if server, _, _ := clustertest.Get(t, n, "/backend/x", ""); server == "2" {
				t.Errorf("%s: a new session went to the draining member", n.Cfg.Name)
			}
		}
	}
	if err := <-slowDone; err != nil {
		t.Errorf("request in flight during drain: %v", err)
	}
	clustertest.WaitFor(t, 5*time.Second, "in-flight count back to 0", func() bool { return inFlight() == 0 })

	if _, err := cl.SetMemberState(ctx, &gwelbv1.SetMemberStateRequest{Pool: "backend", Route: "2", State: gwelbv1.AdminState_ADMIN_STATE_DISABLED}); err != nil {
		t.Fatal(err)
	}
	c.WaitAll("member 2 disabled everywhere", func(tn *clustertest.Node) bool {
		p := tn.Proxy.Table().Pool("backend")
		i, _ := p.Lookup("2")
		return p.Member(i).State == fsm.Disabled
	})
	var replacement string
	for _, n := range c.Live() {
		server, setCookie, err := clustertest.Get(t, n, "/backend/x", "ROUTEID=.2")
		if err != nil || server == "2" || setCookie != "ROUTEID=."+server+"; Path=/" {
			t.Errorf("%s: disabled member's session went to %q with %q (%v)", n.Cfg.Name, server, setCookie, err)
		}
		if replacement == "" {
			replacement = server
		} else if server != replacement {
			t.Errorf("%s sends .2 to %q, another node to %q", n.Cfg.Name, server, replacement)
		}
	}
}

// TestVerdictConvergesAcrossLeaderKill: a server dies and the leader is
// killed at the same moment; once a new leader exists the survivors still
// agree the server is DOWN.
func TestVerdictConvergesAcrossLeaderKill(t *testing.T) {
	c := clustertest.New(t, 3)
	leader := c.WaitLeader()
	c.GWE["1"].Stop()
	c.Kill(leader)
	c.WaitLeader()
	c.WaitAll("verdict DOWN for member 1 on the survivors", func(tn *clustertest.Node) bool { return verdict(tn, "1") == fsm.Down })
	var replacement string
	for _, tn := range c.Live() {
		server, _, err := clustertest.Get(t, tn, "/backend/x", "ROUTEID=.1")
		if err != nil || server == "1" {
			t.Fatalf("%s: session .1 went to %q (%v)", tn.Cfg.Name, server, err)
		}
		if replacement == "" {
			replacement = server
		} else if server != replacement {
			t.Errorf("%s sends .1 to %q, the other survivor to %q", tn.Cfg.Name, server, replacement)
		}
	}
}

// TestWatchStreamsVerdictChanges: a Watch stream on a follower shows the
// verdict change when a server dies.
func TestWatchStreamsVerdictChanges(t *testing.T) {
	c := clustertest.New(t, 3)
	cl, ctx := c.Admin(c.Followers()[0])
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	stream, err := cl.Watch(ctx, &gwelbv1.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if watchedVerdict(first, "3") != gwelbv1.Verdict_VERDICT_UP {
		t.Fatalf("first event: member 3 not up: %v", first)
	}
	c.GWE["3"].Stop()
	for {
		ev, err := stream.Recv()
		if err != nil {
			t.Fatalf("watch ended before member 3 went down: %v", err)
		}
		if watchedVerdict(ev, "3") == gwelbv1.Verdict_VERDICT_DOWN {
			if ev.GetTableIndex() <= first.GetTableIndex() {
				t.Errorf("table index did not advance: %d -> %d", first.GetTableIndex(), ev.GetTableIndex())
			}
			return
		}
	}
}

func watchedVerdict(ev *gwelbv1.WatchEvent, route string) gwelbv1.Verdict {
	for _, ps := range ev.GetPools() {
		for _, ms := range ps.GetMembers() {
			if ms.GetMember().GetRoute() == route {
				return ms.GetMember().GetVerdict()
			}
		}
	}
	return -1
}

// TestReplayedVerdictsNotNews: a lone node that restarts applies its log
// again, as leader. The verdict changes in it were logged when they
// happened; logged again at info they read as a member failing at the
// time of the restart. They are logged at debug ("verdict replayed"), and
// a change after the restart is still news ("verdict changed").
func TestReplayedVerdictsNotNews(t *testing.T) {
	c := clustertest.New(t, 1)
	n := c.Nodes[0]
	c.GWE["2"].Stop()
	c.WaitAll("verdict DOWN for member 2", func(tn *clustertest.Node) bool { return verdict(tn, "2") == fsm.Down })

	c.Kill(n)
	rec := &auditRecorder{}
	cfg := n.Cfg
	cfg.Logger = slog.New(auditHandler{r: rec})
	c.Start(cfg)
	c.WaitLeader()
	clustertest.WaitFor(t, 20*time.Second, "the restarted leader to log member 2's change as replayed", func() bool {
		return len(rec.logged("verdict replayed", "route", "2", "verdict", "down")) > 0
	})
	if got := rec.logged("verdict changed", "route", "2"); len(got) > 0 {
		t.Errorf("a replayed verdict logged as news: %v", got[0].attrs)
	}
	for _, r := range rec.logged("verdict replayed") {
		if r.level != slog.LevelDebug {
			t.Errorf("verdict replayed at %v, want debug", r.level)
		}
	}

	c.GWE["3"].Stop()
	clustertest.WaitFor(t, 20*time.Second, "member 3's new verdict logged as news", func() bool {
		return len(rec.logged("verdict changed", "route", "3", "verdict", "down")) > 0
	})
}
