package cluster_test

import (
	"testing"
	"time"

	"github.com/gwelb/gwelb/cluster/clustertest"
)

// An idle leader holds its AppendEntries to a non-voter to a fixed cadence
// of one hold (4 commit timeouts, 600 ms) after the previous one came
// back, instead of raft's one to two commit timeouts, and those to a
// voter for a beat hold (6 s), since the voter's heartbeats name the
// commit index; every follower stays fresh throughout (DESIGN.md §1.3,
// §6.1): no catch-up round begins. Without the hold, each follower
// receives 13-27 AppendEntries in the 4 s window; without the beat hold,
// each voter receives 6-8; counted from the previous arrival alone, the
// followers' news would look 1.2 s old and they would catch up every
// second, and a voter that did not count the heartbeats' commit index
// would catch up every second too.
func TestIdleAppendEntriesHeld(t *testing.T) {
	c, _ := withNonVoter(t)
	leader := c.WaitLeader()
	hold := leader.Node.IdleHold()
	if hold != 600*time.Millisecond {
		t.Fatalf("hold %v, want 600ms (4 commit timeouts)", hold)
	}
	followers := c.Followers()
	clustertest.WaitFor(t, 20*time.Second, "every follower knows the leader's hold from gossip, and the leader their count of heartbeats", func() bool {
		for _, f := range followers {
			if f.Node.LeaderIdleHold() != hold || !leader.Node.CountsBeats(f.Cfg.Name) {
				return false
			}
		}
		return true
	})
	// A write makes every follower's next idle AppendEntries wait a whole
	// hold (or beat hold) from now, as counted below.
	putMember(t, c, leader, "4", c.GWE["1"].URL)
	c.WaitAll("member 4 in every node's own FSM", func(tn *clustertest.Node) bool {
		_, ok := tn.Node.Table().Pool("backend").Lookup("4")
		return ok
	})
	received := map[string]uint64{}
	rounds := map[string]uint64{}
	for _, f := range followers {
		received[f.Cfg.Name] = f.Node.AppendEntriesReceived()
		rounds[f.Cfg.Name] = f.Node.CatchUpRounds()
	}
	held, _ := leader.Node.AppendEntriesHeld()

	const window = 4 * time.Second
	for end := time.Now().Add(window); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		for _, f := range followers {
			if !f.Node.Fresh(time.Now().UnixNano()) {
				t.Fatalf("%s does not trust its table while the cluster idles", f.Cfg.Name)
			}
		}
	}
	for _, f := range followers {
		name := f.Cfg.Name
		n := f.Node.AppendEntriesReceived() - received[name]
		least, most := uint64(2), uint64(window/hold)+2
		if !f.Node.NonVoter() {
			least, most = 0, 1 // the one carrying the write's commit index, if it came late
		}
		if n < least || n > most {
			t.Errorf("%s (non-voter %v) received %d AppendEntries in %v, want %d..%d", name, f.Node.NonVoter(), n, window, least, most)
		}
		if r := f.Node.CatchUpRounds() - rounds[name]; r != 0 {
			t.Errorf("%s began %d catch-up rounds while the cluster idled", name, r)
		}
	}
	if n, _ := leader.Node.AppendEntriesHeld(); n-held < uint64(len(followers)) {
		t.Errorf("the leader held %d idle AppendEntries in %v, want at least one per follower", n-held, window)
	}
}

// A voter of the build before stamped heartbeats (its gossip carries the
// hold but not "hb") gets its idle AppendEntries every hold, as a
// non-voter does, and stays fresh: held for the beat hold, it would catch
// up every second, as during a rolling upgrade whose first new node leads.
func TestVoterWithoutBeatsGetsTheHold(t *testing.T) {
	c := clustertest.New(t, 3)
	leader := c.WaitLeader()
	old := c.Followers()[0]
	if err := old.Node.GossipNoBeats(); err != nil {
		t.Fatal(err)
	}
	clustertest.WaitFor(t, 10*time.Second, "the leader sees "+old.Cfg.Name+" gossip no count of heartbeats", func() bool {
		return !leader.Node.CountsBeats(old.Cfg.Name) && leader.Node.CountsHold(old.Cfg.Name)
	})
	const window = 4 * time.Second
	if n := idleTrusting(t, old, window); n < 4 {
		t.Errorf("%s received %d AppendEntries in %v, want one a hold (600 ms) after the previous came back (5-8)", old.Cfg.Name, n, window)
	}
}

// idleTrusting watches tn for window while the cluster idles: the test
// fails if tn stops trusting its table or begins a catch-up round. It
// returns the AppendEntries tn received meanwhile.
func idleTrusting(t *testing.T, tn *clustertest.Node, window time.Duration) (appends uint64) {
	t.Helper()
	received, rounds := tn.Node.AppendEntriesReceived(), tn.Node.CatchUpRounds()
	for end := time.Now().Add(window); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if !tn.Node.Fresh(time.Now().UnixNano()) {
			t.Fatalf("%s does not trust its table while the cluster idles", tn.Cfg.Name)
		}
	}
	if r := tn.Node.CatchUpRounds() - rounds; r != 0 {
		t.Errorf("%s began %d catch-up rounds while the cluster idled", tn.Cfg.Name, r)
	}
	return tn.Node.AppendEntriesReceived() - received
}

// A held idle AppendEntries gives way the moment the leader appends: with
// the hold made an hour and the followers' catch-up questions cut off
// (their answers would carry the change too), a member added on the
// leader is applied by every follower's own Raft well within the wait.
// Without the release, raft's replication loop to each follower sat in
// the held call for the hour.
func TestHeldAppendEntriesGiveWayToWrites(t *testing.T) {
	c := clustertest.New(t, 3)
	leader := c.WaitLeader()
	for _, f := range c.Followers() {
		t.Cleanup(f.Node.CutCatchUp())
	}
	leader.Node.HoldIdleAppends(time.Hour)
	for i, route := range []string{"4", "5"} { // the second: held again after the first
		clustertest.WaitFor(t, 10*time.Second, "an idle AppendEntries held for each follower", func() bool {
			return leader.Node.AppendEntriesHolding() == 2
		})
		_, spared := leader.Node.AppendEntriesHeld()
		putMember(t, c, leader, route, c.GWE["1"].URL)
		c.WaitAll("member "+route+" in every node's own FSM", func(tn *clustertest.Node) bool {
			_, ok := tn.Node.Table().Pool("backend").Lookup(route)
			return ok
		})
		if _, n := leader.Node.AppendEntriesHeld(); n-spared < 2 {
			t.Errorf("change %d: %d held AppendEntries answered from the follower's last answer, want one per follower", i+1, n-spared)
		}
	}
}

// A follower of a build before the hold (its gossip carries none) counts
// each AppendEntries as sent when the previous arrived, so the leader
// sends it raft's cadence: held, its news would look a hold older and it
// would catch up every second, as during a rolling upgrade whose first new
// node leads.
func TestOlderFollowerGetsRaftsCadence(t *testing.T) {
	c := clustertest.New(t, 3)
	leader := c.WaitLeader()
	old := c.Followers()[0]
	if err := old.Node.GossipNoHold(); err != nil {
		t.Fatal(err)
	}
	clustertest.WaitFor(t, 10*time.Second, "the leader sees "+old.Cfg.Name+" gossip no hold", func() bool {
		return !leader.Node.CountsHold(old.Cfg.Name)
	})
	// Raft's cadence: one every 150-300 ms after the previous came back,
	// 13-26 in the window; held, at most 8.
	const window = 4 * time.Second
	if n := idleTrusting(t, old, window); n < 12 {
		t.Errorf("%s received %d AppendEntries in %v, want raft's cadence (13-26)", old.Cfg.Name, n, window)
	}
}

// A follower's freshness moves as each AppendEntries or heartbeat naming
// the commit index arrives, not only when the monitor looks (every
// 500 ms, DESIGN.md §6.1): with the monitor's looks stopped on every
// follower, each keeps trusting its table through 3 s of idle, and a
// member added meanwhile reaches it. Without noteContact the trust ends a
// second after the monitor's last look.
func TestFollowerFreshAsAppendEntriesArrive(t *testing.T) {
	c := clustertest.New(t, 3)
	leader := c.WaitLeader()
	followers := c.Followers()
	clustertest.WaitFor(t, 20*time.Second, "every follower knows the leader's hold from gossip", func() bool {
		for _, f := range followers {
			if f.Node.LeaderIdleHold() != leader.Node.IdleHold() || !f.Node.Fresh(time.Now().UnixNano()) {
				return false
			}
		}
		return true
	})
	for _, f := range followers {
		t.Cleanup(f.Node.UnwatchFreshness())
	}
	const window = 3 * time.Second
	wrote := false
	for start, now := time.Now(), time.Now(); now.Sub(start) < window; now = time.Now() {
		for _, f := range followers {
			if !f.Node.Fresh(now.UnixNano()) {
				t.Fatalf("%s stopped trusting its table %v after the monitor's last look, the cluster idle", f.Cfg.Name, now.Sub(start).Round(time.Millisecond))
			}
		}
		if !wrote && now.Sub(start) > window/2 {
			putMember(t, c, leader, "4", c.GWE["1"].URL)
			wrote = true
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.WaitAll("member 4 in every node's own FSM", func(tn *clustertest.Node) bool {
		_, ok := tn.Node.Table().Pool("backend").Lookup("4")
		return ok
	})
}
