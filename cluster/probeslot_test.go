package cluster

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// TestProbeOffsetSlots checks where probeOffset puts a node's probes of
// one interval: a small node's in one slot (one timer wakeup for all of
// them, DESIGN.md §1.3 step 8), a large node's spread over at least
// n/probesPerSlot slots with none holding much more than twice
// probesPerSlot; every offset less than the interval, and the same on
// every call.
func TestProbeOffsetSlots(t *testing.T) {
	type member struct{ pool, route string }
	members := func(n int, pools ...string) []member {
		var ms []member
		for i := range n {
			pool := pools[i%len(pools)]
			ms = append(ms, member{pool, fmt.Sprintf("%s_%05d", pool, i/len(pools))})
		}
		return ms
	}
	hosts := func(n int) []member {
		var ms []member
		for i := range n {
			ms = append(ms, member{"web", fmt.Sprintf("gwe-%d.dc%d.example.net", i, i%3)})
		}
		return ms
	}
	// The demo's members (deploy/compose).
	demo := []member{{"frontend", "GWE_F_1"}, {"frontend", "GWE_F_2"}, {"frontend", "GWE_F_3"},
		{"backend", "1"}, {"backend", "2"}, {"backend", "3"}}
	// A hash fills slots unevenly: of 625 slots of 16 on average the fullest
	// holds about 30, more than 36 for one set of names in 300.
	full := 2*probesPerSlot + probesPerSlot/4
	for _, c := range []struct {
		name      string
		members   []member
		interval  time.Duration
		minSlots  int // distinct offsets at least
		maxSlots  int // distinct offsets at most
		maxInSlot int // members sharing one offset at most
	}{
		{"demo 2 pools x 3", demo, 2 * time.Second, 1, 1, 6},
		{"one full slot", members(probesPerSlot, "backend"), 2 * time.Second, 1, 1, probesPerSlot},
		{"one past a slot", members(probesPerSlot+1, "backend"), 2 * time.Second, 1, 2, probesPerSlot + 1},
		{"1,000 at 2s", members(1000, "backend", "frontend"), 2 * time.Second, 1000 / probesPerSlot, probeSlots(1000), full},
		{"10,000 at 2s", members(10_000, "GWE_B"), 2 * time.Second, 10_000 / probesPerSlot, probeSlots(10_000), full},
		{"10,000 hosts at 2s", hosts(10_000), 2 * time.Second, 10_000 / probesPerSlot, probeSlots(10_000), full},
		{"10,000 at 1h", members(10_000, "a", "b", "c"), time.Hour, 10_000 / probesPerSlot, probeSlots(10_000), full},
		// An interval shorter than the slot count in nanoseconds: slots of
		// no width, every offset 0.
		{"10,000 at 100ns", members(10_000, "GWE_B"), 100 * time.Nanosecond, 1, 1, 10_000},
	} {
		t.Run(c.name, func(t *testing.T) {
			n := len(c.members)
			slots := probeSlots(n)
			if want := (n + probesPerSlot - 1) / probesPerSlot; slots != want {
				t.Fatalf("%d members: %d slots, want %d", n, slots, want)
			}
			width := c.interval / time.Duration(slots)
			inSlot := map[time.Duration]int{}
			for _, m := range c.members {
				off := probeOffset(m.pool, m.route, c.interval, n)
				if off < 0 || off >= c.interval {
					t.Fatalf("%s/%s: offset %v outside [0, %v)", m.pool, m.route, off, c.interval)
				}
				if again := probeOffset(m.pool, m.route, c.interval, n); again != off {
					t.Fatalf("%s/%s: offset %v, then %v", m.pool, m.route, off, again)
				}
				if width > 0 && (off%width != width/2 || off/width >= time.Duration(slots)) {
					t.Fatalf("%s/%s: offset %v is not the middle of one of %d slots of %v", m.pool, m.route, off, slots, width)
				}
				inSlot[off]++
			}
			most := 0
			for _, k := range inSlot {
				most = max(most, k)
			}
			t.Logf("%d members, %v: %d slots, %d used, at most %d in one", n, c.interval, slots, len(inSlot), most)
			if len(inSlot) < c.minSlots || len(inSlot) > c.maxSlots {
				t.Errorf("%d distinct offsets, want %d to %d", len(inSlot), c.minSlots, c.maxSlots)
			}
			if most > c.maxInSlot {
				t.Errorf("%d members share one offset, want at most %d", most, c.maxInSlot)
			}
		})
	}
}

// TestProbeDelay checks that probeDelay finds the next instant, now
// included, that is offset past a whole number of intervals from epoch: a
// probe started later lands on the instants of those started before.
func TestProbeDelay(t *testing.T) {
	epoch := time.Now()
	const interval = 2 * time.Second
	for _, c := range []struct {
		elapsed, offset, want time.Duration
	}{
		{0, 0, 0},
		{0, time.Second, time.Second},
		{0, interval - 1, interval - 1},
		{time.Second, time.Second, 0},
		{time.Second + 1, time.Second, interval - 1},
		{1500 * time.Millisecond, 250 * time.Millisecond, 750 * time.Millisecond},
		{7*interval + 100*time.Millisecond, time.Second, 900 * time.Millisecond},
		{7*interval + 1100*time.Millisecond, time.Second, 1900 * time.Millisecond},
		{1000*interval - 1, 0, 1},
	} {
		now := epoch.Add(c.elapsed)
		got := probeDelay(epoch, now, interval, c.offset)
		if got != c.want {
			t.Errorf("%v after epoch, offset %v: delay %v, want %v", c.elapsed, c.offset, got, c.want)
		}
		if got < 0 || got >= interval || (now.Add(got).Sub(epoch)-c.offset)%interval != 0 {
			t.Errorf("%v after epoch, offset %v: delay %v is not on the offset's instants", c.elapsed, c.offset, got)
		}
	}
}

// A probe's successor is due an interval after it was due, however long
// its round trip took, so the probes of a slot stay on the slot's
// instants; one that outlasted its interval skips to the next instant.
func TestNextDue(t *testing.T) {
	due := time.Now()
	const interval = 2 * time.Second
	for _, c := range []struct {
		took, want time.Duration // after due
	}{
		{0, interval},
		{3 * time.Millisecond, interval},                  // a loopback round trip
		{40 * time.Millisecond, interval},                 // a remote one: no drift
		{interval - 1, interval},                          // just in time
		{interval, 2 * interval},                          // an instant missed
		{2*interval + 500*time.Millisecond, 3 * interval}, // two missed
		{5*interval + 1, 6 * interval},                    // five
	} {
		if got := nextDue(due, due.Add(c.took), interval).Sub(due); got != c.want {
			t.Errorf("a probe that took %v: next due %v after it was, want %v", c.took, got, c.want)
		}
	}
}

// TestProbeSlotCount checks that sync counts the node's probes of each
// interval (probeSlots's n) as the table changes them, and that the
// slots' origin, the prober's first start, stays.
func TestProbeSlotCount(t *testing.T) {
	node, f := probeTestNode(t)
	st := benchState(13)
	for _, p := range st.GetPools() {
		p.Health = &gwelbv1.HealthCheck{IntervalMs: time.Hour.Milliseconds(), Fall: 10}
	}
	st.GetPools()[1].Health = &gwelbv1.HealthCheck{IntervalMs: 30 * time.Minute.Milliseconds(), Fall: 10}
	frontend := proto.Clone(st.GetPools()[1]).(*gwelbv1.Pool)
	apply := restoreState(t, f, st)
	p := node.prober
	var epoch time.Time
	want := func(label string, counts map[time.Duration]int) {
		t.Helper()
		p.mu.Lock()
		defer p.mu.Unlock()
		probed := map[time.Duration]int{}
		for _, byRoute := range p.probes {
			for _, pr := range byRoute {
				probed[pr.spec.Interval]++
			}
		}
		if fmt.Sprint(p.perInterval) != fmt.Sprint(counts) || fmt.Sprint(probed) != fmt.Sprint(counts) {
			t.Fatalf("%s: counted %v, probing %v, want %v", label, p.perInterval, probed, counts)
		}
		if epoch.IsZero() {
			epoch = p.epoch
		}
		if epoch.IsZero() || !p.epoch.Equal(epoch) {
			t.Fatalf("%s: epoch %v, was %v", label, p.epoch, epoch)
		}
	}
	want("restored", map[time.Duration]int{time.Hour: 13, 30 * time.Minute: 3})

	apply(&gwelbv1.Command{RequestId: "rm", Op: &gwelbv1.Command_RemoveMember{RemoveMember: &gwelbv1.RemoveMember{Pool: "backend", Route: "GWE_B_00003"}}})
	want("member removed", map[time.Duration]int{time.Hour: 12, 30 * time.Minute: 3})

	apply(&gwelbv1.Command{RequestId: "move", Op: &gwelbv1.Command_PutMember{PutMember: &gwelbv1.PutMember{Member: &gwelbv1.Member{
		Pool: "backend", Route: "GWE_B_00004", Url: "http://127.0.9.9:9080", Weight: 1}}}})
	want("URL change", map[time.Duration]int{time.Hour: 12, 30 * time.Minute: 3})

	frontend.Health = &gwelbv1.HealthCheck{IntervalMs: time.Hour.Milliseconds(), Fall: 10}
	apply(&gwelbv1.Command{RequestId: "interval", Op: &gwelbv1.Command_PutPool{PutPool: &gwelbv1.PutPool{Pool: frontend}}})
	want("frontend's interval changed", map[time.Duration]int{time.Hour: 15})

	apply(&gwelbv1.Command{RequestId: "rmpool", Op: &gwelbv1.Command_RemovePool{RemovePool: &gwelbv1.RemovePool{Name: "frontend"}}})
	want("pool removed", map[time.Duration]int{time.Hour: 12})

	p.stop()
	want("stopped", map[time.Duration]int{})
}
