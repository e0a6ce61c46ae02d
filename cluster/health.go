package cluster

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/bits"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/gwelb/gwelb/fsm"
	"github.com/gwelb/gwelb/internal/rawio"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// prober probes the members assigned to this node and reports changes of
// this node's view as observations through Raft; the FSM turns the
// observations into the cluster's verdict. In steady state it writes
// nothing. Bounded probing (DESIGN.md §5.5): a member is probed by the
// pool's health.probers balancers of its rendezvous ranking
// (fsm.Probers over the replicated balancers, the live voters), so a GWE
// server gets k probes per interval however many balancer nodes run; a
// node that does not probe a member still reports the failures its data
// plane sees of it, as passive observations (passiveView).
type prober struct {
	n    *Node
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// kept counts the probes that keep their connection between probes
	// (probe.keep): at most probeKeptConns.
	kept int

	mu        sync.Mutex
	probes    map[string]map[string]*probe // by pool, then route
	balancers []string                     // the FSM's balancers at the last sync
	passive   map[probeKey]*passiveView    // members this node does not probe whose failures it saw lately
	// perInterval counts the probes by interval, the n of probeSlots;
	// epoch is when the first probe started, the origin of every
	// interval's slots (probe.start).
	perInterval map[time.Duration]int
	epoch       time.Time
}

// probeKey names a member.
type probeKey struct{ pool, route string }

// probe watches one member. It holds no goroutine while it waits: a
// timer (time.AfterFunc) starts one for each probe that is due, and a
// failure the proxy reports starts one when none runs; that goroutine
// handles the member's events one at a time, in order (step), and ends
// when none is left (DESIGN.md §1.3 step 8, §8). That goroutine also
// makes the probe's HTTP round trip itself, on a connection of its own
// (probeConn), which it alone reads and writes: net/http's Transport ran
// two goroutines per connection (readLoop, writeLoop) and handed each
// request and answer across them, about four more goroutine wakeups a
// probe (~200 µs of CPU each on a small VM; probes were a fifth of an
// idle node's wakeups). At 10,000 members a goroutine parked per member, and a
// kept-alive connection with its two goroutines and buffers, cost a
// voter about 30 KB a member; this costs 2.5 KB, most of it the member's
// metrics series (BenchmarkProbeMemory).
type probe struct {
	p                *prober
	pool, route, url string
	spec             fsm.HealthSpec
	metrics          probeMetrics    // gwelb_probe_duration_seconds, gwelb_probe_failures_total (metrics.go)
	keep             bool            // keeps its connection between probes (a place of prober.kept)
	ctx              context.Context // the node's: ends when it stops

	mu      sync.Mutex
	timer   *time.Timer        // fires when the next probe is due
	next    time.Time          // when timer fires: on the slot's instants (start, nextDue)
	stopped bool               // the member is gone, moved or reassigned
	running bool               // a goroutine is in step
	due     bool               // the timer fired: a probe is due
	passive []error            // failures the proxy saw, counted as failed probes (at most passiveQueue)
	cancel  context.CancelFunc // ends the probe or report in flight; nil when none
	conn    *probeConn         // the kept connection while it idles; a probe in flight takes it out

	st probeState // step's alone
}

// probeState is a probe's view of its member, kept between events.
type probeState struct {
	started        bool      // lastObserved was read (at the first event: sync must not block)
	down, recorded bool      // this node's view; whether the FSM has one of it on record
	reported       bool      // the view Raft last took
	cause          string    // why the view last flipped
	changedAt      time.Time // when it flipped
	ok, failed     int       // consecutive successes, failures
}

// passiveQueue bounds the proxy's failures waiting for a probe's step:
// beyond it, enough failures are queued already.
const passiveQueue = 8

// probeKeepAliveMax is the longest probe interval for which a probe keeps
// its connection open for the next probe (probe.keep); probes further
// apart close it after the answer. A connection idle for longer than
// twice this is closed at the next probe, and a new one dialled. A
// kept-alive connection costs a socket (and its TLS state) for as long
// as it idles, no goroutine (the probe's own goroutine reads and writes
// it, only during a probe); it saves a TCP (and TLS) handshake and their
// wakeups a probe only when probes come often.
const probeKeepAliveMax = 5 * time.Second

// probeKeptConns bounds the members whose probes keep their connection
// (a socket each, with its TLS state for https; the buffers are pooled,
// not kept with it), however many members a node probes often: the
// first ones started get it, the others a connection a probe. A fixed
// set, not the least recently used connections: probes cycle through the
// members, so an LRU set smaller than their number would close every
// connection before its next probe, and open one more.
const probeKeptConns = 1024

// probeBodyMax is the most of an answer's body a probe reads; a longer
// answer's connection is closed, not kept.
const probeBodyMax = 64 << 10

// newProber makes a node's prober. Its probes make their HTTP round
// trips on their own goroutines (probe.step), over connections they dial
// and read themselves (probeConn), with net/http's wire format
// (Request.Write, ReadResponse) but not its Transport: the Transport's
// two goroutines per connection (readLoop, writeLoop) and its handing of
// each request and answer across them cost about four goroutine wakeups
// a probe, which an idle node pays on every probe (type probe).
func newProber(n *Node) *prober {
	dial := n.cfg.ProbeDialer
	if dial == nil {
		dial = (&net.Dialer{Timeout: 2 * time.Second}).DialContext
	}
	return &prober{
		n:           n,
		dial:        dial,
		probes:      map[string]map[string]*probe{},
		passive:     map[probeKey]*passiveView{},
		perInterval: map[time.Duration]int{},
	}
}

// sync starts probes for new members and members newly assigned to this
// node, and stops those of removed, changed or reassigned ones. It runs on
// every new table, after prev (nil at first), and must not block. It costs
// what the change touched (DESIGN.md §5.2): a pool with the layout and
// health settings it had in prev has the same routes, URLs and probers, so
// its probes stand as they are; only a pool whose layout or health check
// changed, or that came or went, is walked, and every pool when the
// balancers changed (each member's probers may have moved). The new probes
// start once every pool is synced, when the number of probes of each
// interval, which spaces their first probes (probe.start), is known.
func (p *prober) sync(ctx context.Context, prev, t *fsm.Table) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n.nonVoter.Load() {
		return // probers are chosen among the voters (DESIGN.md §5.5): a non-voter only reports passively
	}
	// The FSM's state is the table's: the hook runs on the goroutine that
	// applies, before the next command.
	balancers := p.n.fsm.Balancers()
	moved := !slices.Equal(balancers, p.balancers)
	if moved && len(balancers) > 0 && !slices.Contains(p.balancers, p.n.cfg.Name) {
		// Back among the balancers (after a partition, say): the FSM
		// forgot this node's observations when it left, so every probe
		// starts again from what the FSM has on record (lastObserved).
		p.stopAll()
	}
	p.balancers = balancers
	var started []*probe
	for _, pool := range t.Pools() {
		if !moved && prev != nil {
			if old := prev.Pool(pool.Name()); pool.SameLayout(old) && pool.Spec().Health == old.Spec().Health {
				continue
			}
		}
		started = p.syncPool(ctx, pool, started)
	}
	for name, probes := range p.probes {
		if t.Pool(name) == nil {
			for route, pr := range probes {
				p.stopProbe(pr)
				delete(probes, route)
			}
			delete(p.probes, name)
		}
	}
	if len(started) > 0 {
		now := time.Now()
		if p.epoch.IsZero() {
			p.epoch = now
		}
		for _, pr := range started {
			pr.start(p.epoch, now, p.perInterval[pr.spec.Interval])
		}
	}
}

// syncPool makes the probes of one pool match the members assigned to
// this node (all of them while there is no balancer set: a lone -dev node).
// It appends the probes it made to started, for sync to start.
func (p *prober) syncPool(ctx context.Context, pool *fsm.Pool, started []*probe) []*probe {
	spec := pool.Spec().Health
	probes := p.probes[pool.Name()]
	if probes == nil {
		probes = map[string]*probe{}
		p.probes[pool.Name()] = probes
	}
	seen := make(map[string]bool, pool.Len())
	for _, m := range pool.All() {
		if len(p.balancers) > 0 && !slices.Contains(fsm.Probers(pool.Name(), m.Route, spec.Probers, p.balancers), p.n.cfg.Name) {
			continue // another node probes it; stopped below if this one did
		}
		seen[m.Route] = true
		if pv := p.passive[probeKey{pool.Name(), m.Route}]; pv != nil {
			// Probing takes over: the probe counts this node's failures.
			pv.cancel()
			delete(p.passive, probeKey{pool.Name(), m.Route})
		}
		if old := probes[m.Route]; old != nil {
			if old.url == m.URL && old.spec == spec {
				continue
			}
			p.end(old)
		}
		pr := &probe{p: p, pool: pool.Name(), route: m.Route, url: m.URL, spec: spec, ctx: ctx,
			metrics: p.n.probeMetricsFor(pool.Name(), m.Route)}
		if spec.Interval <= probeKeepAliveMax && p.kept < probeKeptConns {
			pr.keep = true
			p.kept++
		}
		probes[m.Route] = pr
		p.perInterval[spec.Interval]++
		started = append(started, pr)
	}
	for route, pr := range probes {
		if !seen[route] {
			p.stopProbe(pr)
			delete(probes, route)
		}
	}
	return started
}

// stopProbe ends a probe of a member that is gone.
func (p *prober) stopProbe(pr *probe) {
	p.end(pr)
	p.n.deleteProbeMetrics(pr.pool, pr.route)
}

// end stops a probe, frees its kept-alive place and uncounts it. Called
// with p.mu held.
func (p *prober) end(pr *probe) {
	pr.stop()
	if pr.keep {
		p.kept--
	}
	if p.perInterval[pr.spec.Interval]--; p.perInterval[pr.spec.Interval] <= 0 {
		delete(p.perInterval, pr.spec.Interval)
	}
}

// fail counts a failure the data plane saw as a failed probe of the
// member's probe on this node, or, when this node does not probe it, in
// its passive view of the member (started on the first failure).
func (p *prober) fail(pool, route string, err error) {
	p.mu.Lock()
	if pr := p.probes[pool][route]; pr != nil {
		p.mu.Unlock()
		pr.fail(err)
		return
	}
	ch := p.passiveFor(probeKey{pool, route})
	p.mu.Unlock()
	if ch == nil {
		return
	}
	select {
	case ch <- err:
	default: // enough failures are queued already
	}
}

// stop ends every probe (the node stops, or it became a non-voter); the
// passive views stay, a non-voter reports passively too, and end with the
// node.
func (p *prober) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopAll()
}

func (p *prober) stopAll() {
	for name, probes := range p.probes {
		for _, pr := range probes {
			p.end(pr)
		}
		delete(p.probes, name)
	}
}

// start arms the member's first probe at its slot's offset (probeOffset)
// past a whole number of intervals from epoch, the prober's first start:
// the first such instant from now on (probeDelay). n is the number of the
// node's probes of this interval, this one included (sync counts them
// before it starts any). Each wakeup costs an idle node ~150 µs of CPU,
// and the runtime runs every timer due at one instant in one wakeup: the
// probes of a slot cost one between them (DESIGN.md §1.3 step 8), where
// offsets hashed anywhere in the interval cost one each. Counting from
// epoch puts a probe started later (a new member, a changed URL) on the
// instants of the running probes of its slot, and keeps a member's phase
// across such restarts while the slot count stays. Running probes keep
// their timers when n changes: moving them would cost sync a walk of
// every probe (it costs what changed, DESIGN.md §5.2) and put off some
// probes by up to an interval. The later probes are due an interval
// after the previous one was due (nextDue), so they stay on those
// instants.
func (pr *probe) start(epoch, now time.Time, n int) {
	d := probeDelay(epoch, now, pr.spec.Interval, probeOffset(pr.pool, pr.route, pr.spec.Interval, n))
	pr.mu.Lock()
	defer pr.mu.Unlock()
	pr.next = now.Add(d)
	pr.timer = time.AfterFunc(d, pr.fire)
}

// probesPerSlot is the most probes of one interval a slot holds on
// average (probeSlots): they share a timer wakeup, and on a busy node
// their answers often share a netpoll. Past 16 a probe saves little more
// (a ~150 µs wakeup shared by 16 is under 10 µs a probe, against its own
// ~200 µs of CPU) and the burst grows: at 10,000 members probed every 2 s
// by one node, 625 slots 3.2 ms apart of 16 round trips each (the
// fullest about twice that: a hash fills them unevenly), ~3 ms of CPU
// that a 2-core node clears within the slot, at the rate hashed offsets
// gave too. Up to 16 members of an interval (the demo's 6) share one slot.
const probesPerSlot = 16

// probeSlots is the number of slots over the interval for a node's n
// probes of that interval: ceil(n / probesPerSlot), at least 1.
func probeSlots(n int) int {
	return max(1, (n+probesPerSlot-1)/probesPerSlot)
}

// probeOffset is where in interval a member's probes are due, for a node
// that probes n members at that interval: the middle of one of
// probeSlots(n) equal slots, the one a hash h of its name falls in as a
// fraction of 2⁶⁴. So it is the name's own phase (h/2⁶⁴ × interval)
// rounded to the middle of its slot, half a slot away at most, and stays
// deterministic. Always less than interval.
func probeOffset(pool, route string, interval time.Duration, n int) time.Duration {
	f := fnv.New64a()
	io.WriteString(f, pool+"\x00"+route)
	// fnv64a's high bits hardly change with a name's last bytes (GWE_B_00001,
	// GWE_B_00002, ...: 10,000 such fell in 123 of 625 slots): murmur3's
	// finalizer mixes every bit into them.
	h := f.Sum64()
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	slots := probeSlots(n)
	slot, _ := bits.Mul64(h, uint64(slots)) // ⌊h × slots / 2⁶⁴⌋
	width := interval / time.Duration(slots)
	return time.Duration(slot)*width + width/2
}

// probeDelay is the time from now to the next instant, now included, that
// is offset past a whole number of intervals after epoch (not after now).
func probeDelay(epoch, now time.Time, interval, offset time.Duration) time.Duration {
	return (offset - now.Sub(epoch)%interval + interval) % interval
}

// nextDue is when the probe after one due at due is: an interval later,
// or, for a probe that outlasted its interval, the first such instant
// after now. Counted from when the probe was due, not from when its round
// trip ended, so the probes of a slot stay in one wakeup whatever their
// round trips took (a remote member's, or a slow one's, would otherwise
// drift out of its slot by their differences, a little every interval).
func nextDue(due, now time.Time, interval time.Duration) time.Time {
	next := due.Add(interval)
	if !next.After(now) {
		next = next.Add((now.Sub(next)/interval + 1) * interval)
	}
	return next
}

// fire runs when a probe is due.
func (pr *probe) fire() {
	pr.mu.Lock()
	if pr.stopped {
		pr.mu.Unlock()
		return
	}
	pr.due = true
	run := !pr.running
	pr.running = true
	pr.mu.Unlock()
	if run {
		pr.step()
	}
}

// fail queues a failure the proxy saw, counted as a failed probe; it
// never blocks.
func (pr *probe) fail(err error) {
	pr.mu.Lock()
	if pr.stopped || len(pr.passive) >= passiveQueue {
		pr.mu.Unlock()
		return // gone, or enough failures are queued already
	}
	pr.passive = append(pr.passive, err)
	run := !pr.running
	pr.running = true
	pr.mu.Unlock()
	if run {
		go pr.step()
	}
}

// stop ends the probe: no probe is due any more, and one in flight (or
// its report) is cancelled and not counted. The kept connection is
// closed: here while it idles, by the probe in flight (putConn) if one
// has it.
func (pr *probe) stop() {
	pr.mu.Lock()
	pr.stopped = true
	pr.passive = nil
	if pr.timer != nil {
		pr.timer.Stop()
	}
	if pr.cancel != nil {
		pr.cancel()
	}
	c := pr.conn
	pr.conn = nil
	pr.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// takeConn takes the probe's kept connection for a probe, nil when it
// has none or it idled for too long (closed then).
func (pr *probe) takeConn(now time.Time) *probeConn {
	pr.mu.Lock()
	c := pr.conn
	pr.conn = nil
	pr.mu.Unlock()
	if c != nil && now.Sub(c.idle) > 2*probeKeepAliveMax {
		c.Close()
		return nil
	}
	return c
}

// putConn keeps c for the probe's next probe, or closes it when the
// probe was stopped meanwhile.
func (pr *probe) putConn(c *probeConn, now time.Time) {
	c.idle = now
	pr.mu.Lock()
	if !pr.stopped && pr.conn == nil {
		pr.conn, c = c, nil
	}
	pr.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// step handles the member's events, the proxy's failures first, until
// none is left; one goroutine at a time runs it (running). Each probe is
// made and counted, and the next armed an interval after it ended. The
// node's view flips to down after Fall consecutive failures and back up
// after Rise successes; each flip is submitted as an observation, retried
// on the next event until Raft takes it.
//
// A probe with nothing on record for a member whose verdict is DOWN
// reports its first settled view (Rise successes or Fall failures) even
// when it did not flip: it is a prober new to the member (a prober died,
// or this node joined), and the FSM holds the verdict until it has judged
// (DESIGN.md §5.5).
func (pr *probe) step() {
	p, st := pr.p, &pr.st
	for {
		pr.mu.Lock()
		var err error
		check := false
		switch {
		case pr.stopped || pr.ctx.Err() != nil:
			pr.running = false
			pr.mu.Unlock()
			return
		case len(pr.passive) > 0:
			err = fmt.Errorf("proxy: %w", pr.passive[0])
			pr.passive = pr.passive[1:]
			if len(pr.passive) == 0 {
				pr.passive = nil // a healthy member holds no queue
			}
		case pr.due:
			pr.due, check = false, true
		default:
			pr.running = false
			pr.mu.Unlock()
			return
		}
		ctx, cancel := context.WithCancel(pr.ctx)
		pr.cancel = cancel
		pr.mu.Unlock()

		if !st.started {
			st.down, st.recorded = p.lastObserved(pr)
			st.reported, st.changedAt, st.started = st.down, time.Now(), true
		}
		if check {
			start := time.Now()
			err = p.check(ctx, pr)
			if ctx.Err() == nil {
				pr.metrics.duration.Observe(time.Since(start).Seconds())
			}
			pr.mu.Lock()
			if !pr.stopped {
				pr.next = nextDue(pr.next, time.Now(), pr.spec.Interval)
				pr.timer.Reset(time.Until(pr.next))
			}
			pr.mu.Unlock()
		}
		if ctx.Err() == nil {
			pr.observe(ctx, err)
		}
		cancel()
		pr.mu.Lock()
		pr.cancel = nil
		pr.mu.Unlock()
	}
}

// observe counts one probe's outcome (err nil for a success) and reports
// a changed view.
func (pr *probe) observe(ctx context.Context, err error) {
	p, st := pr.p, &pr.st
	if err != nil {
		pr.metrics.failures.Inc()
		st.ok, st.failed = 0, st.failed+1
		if !st.down && st.failed >= pr.spec.Fall {
			st.down, st.cause, st.changedAt = true, err.Error(), time.Now()
		}
	} else {
		st.ok, st.failed = st.ok+1, 0
		if st.down && st.ok >= pr.spec.Rise {
			st.down, st.cause, st.changedAt = false, fmt.Sprintf("%d probes ok", st.ok), time.Now()
		}
	}
	settled := st.ok >= pr.spec.Rise || st.failed >= pr.spec.Fall
	if st.down != st.reported || (!st.recorded && settled && p.verdictDown(pr)) {
		if st.cause == "" && !st.down {
			st.cause = fmt.Sprintf("%d probes ok", st.ok)
		}
		if p.report(ctx, pr, st.down, st.cause, st.changedAt) {
			st.reported, st.recorded = st.down, true
		}
	}
}

// verdictDown reports whether the member's verdict in this node's table is DOWN.
func (p *prober) verdictDown(pr *probe) bool {
	pool := p.n.fsm.Table().Pool(pr.pool)
	if pool == nil {
		return false
	}
	i, ok := pool.Lookup(pr.route)
	return ok && pool.Member(i).Verdict == fsm.Down
}

// lastObserved returns what the FSM last recorded from this node about the
// member, so a restarted node reports only real changes, and whether it has
// anything on record. A member never observed by this node counts as up. It
// reads that one member's observations (FSM.Member), not the whole state:
// at 10,000 members a node starts 10,000 probes.
func (p *prober) lastObserved(pr *probe) (down, recorded bool) {
	_, obs, ok := p.n.fsm.Member(pr.pool, pr.route)
	if !ok {
		return false, false
	}
	for _, o := range obs {
		if o.GetNode() == p.n.cfg.Name {
			return o.GetDown(), true
		}
	}
	return false, false
}

// check makes one probe: GET <url><path>, healthy when the status
// matches. The calling goroutine (step) makes the round trip itself
// (roundTrip); a redirect is an answer, and no proxy is used.
func (p *prober) check(ctx context.Context, pr *probe) error {
	ctx, cancel := context.WithTimeout(ctx, pr.spec.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, pr.url+pr.spec.Path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "gwelb-probe")
	req.Close = !pr.keep // Connection: close
	status, err := p.roundTrip(ctx, pr, req)
	if err != nil {
		// Worded as net/http's client words it: Get "<url>": <why>.
		return fmt.Errorf("probe: %w", &url.Error{Op: "Get", URL: req.URL.String(), Err: err})
	}
	if status != pr.spec.ExpectStatus {
		return fmt.Errorf("probe: status %d, want %d", status, pr.spec.ExpectStatus)
	}
	return nil
}

// roundTrip sends req over the probe's kept connection, or a new one,
// and returns the answer's status; it keeps the connection for the next
// probe when the probe keeps one and the connection may carry it, else
// closes it. A kept connection that fails before any answer came (the
// member closed it while it idled; a 408 it sent then) is retried once
// on a new connection, as net/http's Transport does. ctx's deadline, or
// its end, interrupts a blocked dial, handshake, write or read.
func (p *prober) roundTrip(ctx context.Context, pr *probe, req *http.Request) (int, error) {
	deadline, _ := ctx.Deadline()
	c := pr.takeConn(time.Now())
	for {
		reused := c != nil
		if !reused {
			var err error
			if c, err = p.dialProbe(ctx, req.URL, deadline); err != nil {
				return 0, probeCtxErr(ctx, err)
			}
		}
		c.SetDeadline(deadline)
		conn := c.Conn
		stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
		status, reusable, early, err := c.exchange(req)
		if !stop() {
			reusable = false // ctx ended: the deadline is past, maybe not yet set
		}
		retry := reused && ctx.Err() == nil &&
			((early && !errors.Is(err, os.ErrDeadlineExceeded)) || (err == nil && status == http.StatusRequestTimeout))
		if reusable && pr.keep && !retry {
			c.SetDeadline(time.Time{}) // no deadline timer armed while it idles
			pr.putConn(c, time.Now())
		} else {
			c.Close()
		}
		if retry {
			c = nil
			continue
		}
		if err != nil {
			return 0, probeCtxErr(ctx, err)
		}
		return status, nil
	}
}

// probeCtxErr is err, or the context's error when its deadline or end
// interrupted the probe (net/http's client said "context deadline
// exceeded" so).
func probeCtxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return context.DeadlineExceeded // the connection's deadline is ctx's
	}
	return err
}

// dialProbe connects to u's host (port 80 or 443 when it names none)
// with the prober's dialer, and for https completes the TLS handshake
// with the node's ProbeTLS (ServerName u's host when it sets none).
func (p *prober) dialProbe(ctx context.Context, u *url.URL, deadline time.Time) (*probeConn, error) {
	port := u.Port()
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("unsupported protocol scheme %q", u.Scheme)
	case port != "":
	case u.Scheme == "https":
		port = "443"
	default:
		port = "80"
	}
	conn, err := p.dial(ctx, "tcp", net.JoinHostPort(u.Hostname(), port))
	if err != nil {
		return nil, err
	}
	// Raw reads and writes, below TLS as for raft's connections
	// (internal/rawio): an idle node's probes are a few round trips a
	// second, and each of net.Conn's system calls woke the runtime's
	// sysmon thread that had gone to sleep with every P idle.
	conn = rawio.Wrap(conn)
	if u.Scheme == "https" {
		cfg := &tls.Config{}
		if p.n.cfg.ProbeTLS != nil {
			cfg = p.n.cfg.ProbeTLS.Clone()
		}
		if cfg.ServerName == "" {
			cfg.ServerName = u.Hostname()
		}
		tc := tls.Client(conn, cfg)
		conn.SetDeadline(deadline)
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, err
		}
		conn = tc
	}
	return &probeConn{Conn: conn}, nil
}

// probeConn is a probe's connection to its member (a *tls.Conn for
// https), read and written only by the probe's goroutine during a probe;
// between probes a probe that keeps its connection holds it (probe.conn),
// no goroutine and no buffer with it.
type probeConn struct {
	net.Conn
	idle time.Time // when its last answer was read
}

// The buffers a probe writes its request through and reads its answer
// through (longer header lines too), 1 KiB each: taken for a probe, not
// kept with an idle connection.
var (
	probeWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 1<<10) }}
	probeReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 1<<10) }}
)

// exchange writes req on c and reads the answer, at most probeBodyMax of
// its body. It returns the answer's status and whether c may carry the
// next request: the answer read to its end, no byte after it, neither
// Connection: close nor HTTP/1.0 without keep-alive. early reports an
// error before any byte of an answer came.
func (c *probeConn) exchange(req *http.Request) (status int, reusable, early bool, err error) {
	bw := probeWriters.Get().(*bufio.Writer)
	bw.Reset(c.Conn)
	err = req.Write(bw)
	if err == nil {
		err = bw.Flush()
	}
	bw.Reset(nil)
	probeWriters.Put(bw)
	if err != nil {
		return 0, false, true, err
	}
	br := probeReaders.Get().(*bufio.Reader)
	br.Reset(c.Conn)
	defer func() {
		br.Reset(nil)
		probeReaders.Put(br)
	}()
	if _, err := br.Peek(1); err != nil {
		return 0, false, true, err
	}
	resp, err := http.ReadResponse(br, req)
	// Informational answers (103 Early Hints) precede the answer, as
	// net/http's Transport skips them (at most 5); 101 is an answer.
	for i := 0; err == nil && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols && i < 5; i++ {
		resp, err = http.ReadResponse(br, req)
	}
	if err != nil {
		return 0, false, false, err
	}
	// The status decides, however the body ends; one byte beyond
	// probeBodyMax tells a longer body, not read to its end.
	n, err := io.Copy(io.Discard, io.LimitReader(resp.Body, probeBodyMax+1))
	reusable = err == nil && n <= probeBodyMax && !resp.Close && resp.StatusCode >= 200 && br.Buffered() == 0
	return resp.StatusCode, reusable, false, nil
}

// report submits this node's changed view; false means try again later
// (no leader yet, for instance).
func (p *prober) report(ctx context.Context, pr *probe, down bool, cause string, at time.Time) bool {
	obs := &gwelbv1.Observation{Pool: pr.pool, Route: pr.route, Node: p.n.cfg.Name, Down: down, UnixNanos: at.UnixNano(), Cause: cause}
	return p.submit(ctx, obs, pr.spec.Interval+p.n.cfg.WriteTimeout)
}

// submit proposes obs through Raft within timeout; false means try again
// later.
func (p *prober) submit(ctx context.Context, obs *gwelbv1.Observation, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	what := "observed member"
	if obs.GetPassive() {
		what = "observed member passively"
	}
	_, err := p.n.apply(ctx, &gwelbv1.Command{Op: &gwelbv1.Command_Observe{Observe: &gwelbv1.Observe{Observation: obs}}})
	if err != nil {
		p.n.log.Debug(what+": not recorded yet", "pool", obs.GetPool(), "route", obs.GetRoute(), "down", obs.GetDown(), "err", err)
		return false
	}
	p.n.log.Info(what, "pool", obs.GetPool(), "route", obs.GetRoute(), "down", obs.GetDown(), "cause", obs.GetCause())
	return true
}

// passiveView is this node's view of a member it does not probe, from the
// failures its data plane reports (routing contract rule 8): down after
// Fall failures with no quiet gap between them, up again after a quiet
// gap; each flip is proposed as a passive observation, forwarded to the
// leader like any write (DESIGN.md §5.5). It lives while failures come and
// ends after a quiet gap, so it costs nothing for a healthy member.
type passiveView struct {
	failures chan error
	cancel   context.CancelFunc
}

// passiveFor returns the failure channel of member k's passive view,
// starting one; nil when the node is stopping. Called with p.mu held.
func (p *prober) passiveFor(k probeKey) chan error {
	if pv := p.passive[k]; pv != nil {
		return pv.failures
	}
	pool := p.n.fsm.Table().Pool(k.pool)
	if pool == nil || p.n.ctx.Err() != nil {
		return nil
	}
	if _, ok := pool.Lookup(k.route); !ok {
		return nil
	}
	spec := pool.Spec().WithDefaults()
	ctx, cancel := context.WithCancel(p.n.ctx)
	pv := &passiveView{failures: make(chan error, 8), cancel: cancel}
	p.passive[k] = pv
	go p.runPassive(ctx, k, pv, spec)
	return pv.failures
}

// runPassive keeps one passive view. The quiet gap that clears it is the
// longer of the pool's fail_timeout (this node's proxy sends the member
// nothing while it is quarantined) and rise × interval (the probers' time
// to see it up again), plus an interval.
func (p *prober) runPassive(ctx context.Context, k probeKey, pv *passiveView, spec fsm.PoolSpec) {
	h := spec.Health
	quiet := time.Duration(h.Rise) * h.Interval
	if spec.FailTimeout != nil && *spec.FailTimeout > quiet {
		quiet = *spec.FailTimeout
	}
	quiet += h.Interval
	pr := &probe{pool: k.pool, route: k.route, spec: h}
	failed, down, reported := 0, false, false
	cause := ""
	timer := time.NewTimer(quiet)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case err := <-pv.failures:
			failed++
			timer.Reset(quiet)
			if !down && failed >= h.Fall {
				down, cause = true, fmt.Sprintf("proxy (passive): %v", err)
			}
		case <-timer.C:
			failed = 0
			if !p.inTable(k) {
				p.mu.Lock()
				if p.passive[k] == pv {
					delete(p.passive, k)
				}
				p.mu.Unlock()
				pv.cancel()
				return // the member is gone, and its observations with it
			}
			if down {
				down, cause = false, "no failures for "+quiet.String()
			}
			if down == reported {
				p.mu.Lock()
				if len(pv.failures) == 0 && p.passive[k] == pv {
					delete(p.passive, k)
					p.mu.Unlock()
					pv.cancel()
					return
				}
				p.mu.Unlock()
			}
			timer.Reset(quiet)
		}
		if down != reported && p.reportPassive(ctx, pr, down, cause) {
			reported = down
		}
	}
}

// inTable reports whether member k is in this node's table.
func (p *prober) inTable(k probeKey) bool {
	pool := p.n.fsm.Table().Pool(k.pool)
	if pool == nil {
		return false
	}
	_, ok := pool.Lookup(k.route)
	return ok
}

// reportPassive submits this node's changed passive view; false means try
// again later.
func (p *prober) reportPassive(ctx context.Context, pr *probe, down bool, cause string) bool {
	obs := &gwelbv1.Observation{Pool: pr.pool, Route: pr.route, Node: p.n.cfg.Name, Down: down, UnixNanos: time.Now().UnixNano(), Cause: cause, Passive: true}
	return p.submit(ctx, obs, p.n.cfg.WriteTimeout)
}

// ObserveFailure counts a request failure the proxy saw (connection refused,
// reset, timeout) as a failed probe of that member; it implements
// proxy.Observer.
func (n *Node) ObserveFailure(pool, route string, err error) {
	if n.prober != nil {
		n.prober.fail(pool, route, err)
	}
}
