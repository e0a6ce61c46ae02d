package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
)

// nodeMeta is what a node tells its peers about itself through gossip
// (memberlist limits it to 512 bytes).
type nodeMeta struct {
	Raft string `json:"r"` // Raft transport address
	GRPC string `json:"g"` // admin API address
	// Leaving is set when the node is about to leave gossip on purpose.
	// Peers need it: memberlist v0.6.0 calls NotifyLeave alike for a
	// graceful leave and for a failure (the State of the Node it passes is
	// never set; the left/dead distinction stays in its private node map),
	// and only a graceful leaver may be removed from Raft.
	Leaving bool `json:"l,omitempty"`
	// NonVoter asks the leader to admit the node as a Raft non-voter
	// (suffrage.go).
	NonVoter bool `json:"nv,omitempty"`
	// IdleHold is how long, in milliseconds, the node as leader holds an
	// idle AppendEntries after the previous one to the same follower came
	// back (transport.go): its followers count one as sent that much after
	// the previous arrival (catchup.go). Absent (an older build): 0.
	IdleHold int64 `json:"ih,omitempty"`
	// Beats says the node, as a follower, counts the commit index the
	// leader's heartbeats name (transport.go stampBeat, catchup.go beat):
	// as a voter it may then get idle AppendEntries only every beat hold.
	// Absent (an older build): false.
	Beats bool `json:"hb,omitempty"`
}

// maxDepartures bounds how many graceful leavers a node remembers. A
// leaver is forgotten once it is out of the Raft configuration or gossips
// again; the bound only matters if many leave while no leader can remove
// them, and then the oldest are forgotten first (and stay voters until an
// operator's "gwelbctl leave NODE", as a failed node would).
const maxDepartures = 64

// departures is what a node knows about graceful gossip leaves: whether it
// is leaving itself, and which peers left on purpose, so that the leader
// can remove them from Raft when their own removal did not complete.
// Every node keeps the list, so a new leader has it too. The zero value is
// ready to use.
type departures struct {
	leaving atomic.Bool // this node announces Leaving in its meta
	mu      sync.Mutex
	left    map[string]time.Time // peer name -> when it left gossip
}

// add remembers that name left gossip on purpose, forgetting the oldest
// leaver when the list is full.
func (d *departures) add(name string, at time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.left == nil {
		d.left = map[string]time.Time{}
	}
	if _, ok := d.left[name]; !ok && len(d.left) >= maxDepartures {
		oldest := ""
		for n, t := range d.left {
			if oldest == "" || t.Before(d.left[oldest]) || (t.Equal(d.left[oldest]) && n < oldest) {
				oldest = n
			}
		}
		delete(d.left, oldest)
	}
	d.left[name] = at
}

// forget drops name: it rejoined, or is out of the Raft configuration.
func (d *departures) forget(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.left, name)
}

// names lists the remembered leavers, sorted.
func (d *departures) names() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]string, 0, len(d.left))
	for n := range d.left {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// leaveGossip leaves gossip on purpose. It first gossips its meta again
// with Leaving set and waits for that broadcast to go out: the leave
// message that follows supersedes it in memberlist's broadcast queue, so
// sent together the flag would be lost. "Gone out" means sent a few times
// (twice in a three-node cluster) to whichever peers gossip and probes
// picked, possibly the same one twice, so it then push/pulls with every
// live peer too, handing them the flag over TCP before the leave. A peer
// that hears the leave but missed the flag anyway takes the node for
// failed and keeps it as a voter, the safe side. The push/pulls share
// the update's timeout, with at least half of it for themselves.
func (n *Node) leaveGossip(timeout time.Duration) error {
	if n.gossip == nil {
		return nil
	}
	deadline := time.Now().Add(timeout)
	n.view.departures.leaving.Store(true)
	var errs []error
	if err := n.gossip.UpdateNode(timeout); err != nil {
		errs = append(errs, fmt.Errorf("announce leave in gossip: %w", err))
	}
	if err := n.pushToPeers(max(time.Until(deadline), timeout/2)); err != nil {
		errs = append(errs, fmt.Errorf("announce leave to peers: %w", err))
	}
	if err := n.gossip.Leave(timeout); err != nil {
		errs = append(errs, fmt.Errorf("leave gossip: %w", err))
	}
	return errors.Join(errs...)
}

// pushToPeers push/pulls with every live gwelb peer at once and waits for
// them up to timeout; one that does not answer by then is left to finish
// (or fail) on its own, bounded by memberlist's TCP timeout.
func (n *Node) pushToPeers(timeout time.Duration) error {
	var addrs []string
	for _, m := range n.members() {
		if m.Name != n.cfg.Name {
			addrs = append(addrs, m.Addr)
		}
	}
	done := make(chan error, len(addrs))
	for _, a := range addrs {
		go func() {
			_, err := n.gossip.Join([]string{a})
			done <- err
		}()
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var errs []error
	for range addrs {
		select {
		case err := <-done:
			if err != nil {
				errs = append(errs, err)
			}
		case <-timer.C:
			return errors.Join(append(errs, fmt.Errorf("not every peer answered within %v", timeout))...)
		}
	}
	return errors.Join(errs...)
}

func (n *Node) startGossip() error {
	var mc *memberlist.Config
	if n.cfg.Timing.GossipProfile == "local" {
		mc = memberlist.DefaultLocalConfig()
	} else {
		mc = memberlist.DefaultLANConfig()
	}
	host, portStr, _ := net.SplitHostPort(n.cfg.GossipAddr)
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return fmt.Errorf("gossip_addr %s: %w", n.cfg.GossipAddr, err)
	}
	mc.Name = n.cfg.Name
	mc.BindAddr, mc.BindPort = host, port
	mc.AdvertiseAddr, _, _ = net.SplitHostPort(n.cfg.advertised(n.cfg.GossipAddr))
	mc.AdvertisePort = port
	// The keyring in data_dir, seeded by gossip_key on a first start
	// (keyring.go); SecretKey stays nil, or memberlist would make it the
	// primary again over the keyring's own.
	keys, err := n.openKeyring(n.cfg.GossipKey)
	if err != nil {
		return err
	}
	if keys != nil {
		n.gossipKeys, mc.Keyring = keys, keys.ring
	}
	mc.Delegate = &gossipDelegate{n: n}
	mc.Events = &gossipEvents{n: n}
	mc.Logger = newStdLogger("memberlist", n.log)
	ml, err := memberlist.Create(mc)
	if err != nil {
		return fmt.Errorf("gossip_addr %s: %w", n.cfg.GossipAddr, err)
	}
	n.gossip = ml
	return nil
}

// joinLoop joins the retry_join addresses, retrying until this node knows
// a live peer. An answer alone is not enough: retry_join usually lists
// the node's own address too (one list for every node), and memberlist
// counts that push/pull with itself as a join, so a node whose seeds were
// down or too slow for memberlist's TCP timeout (1 s in the local
// profile) would stop retrying while alone, and its peers, which hold it
// as left or failed, never contact it: a node restarted under load stayed
// out of the cluster for good.
func (n *Node) joinLoop(ctx context.Context) {
	if len(n.cfg.RetryJoin) == 0 {
		return
	}
	backoff := 200 * time.Millisecond
	for {
		answered, peers, err := joinGossip(n.gossip, n.cfg.RetryJoin)
		if peers > 0 {
			n.log.Info("joined gossip", "answered", answered, "peers", peers)
			return
		}
		n.log.Debug("retry_join found no peer", "addrs", n.cfg.RetryJoin, "answered", answered, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// joinGossip push/pulls with addrs and reports how many answered and how
// many live peers this node then knows. Once it knows one, it push/pulls
// with addrs a second time: a node restarted under a name its peers hold
// as left or failed starts at a lower incarnation than the one they hold,
// so they ignore its state in the first exchange (memberlist's aliveNode
// drops an alive message whose incarnation is not newer, for the same
// address); what the first exchange does is tell the node that it left,
// and it refutes with a higher incarnation at once. memberlist spreads
// that refutation by UDP gossip only, a few packets; lost on a loaded
// machine, the peers would learn it at their next periodic push/pull (up
// to 15 s in the local profile, 30 s on a LAN) and the leader would not
// add the node back meanwhile. The second exchange hands it to the seeds
// over TCP. For a node that did not leave, it costs one more exchange.
func joinGossip(ml *memberlist.Memberlist, addrs []string) (answered, peers int, err error) {
	answered, err = ml.Join(addrs)
	if peers = ml.NumMembers() - 1; peers > 0 {
		if again, err2 := ml.Join(addrs); again > answered {
			answered, err = again, err2 // seeds slow the first time
		}
		peers = ml.NumMembers() - 1
	}
	return answered, peers, err
}

// Join gossip-joins the nodes at addrs (gwelbctl join).
func (n *Node) Join(addrs []string) (int, error) {
	joined, _, err := joinGossip(n.gossip, addrs)
	if joined == 0 && err != nil {
		return 0, fmt.Errorf("join %v: %w", addrs, err)
	}
	return joined, nil
}

// gossipMember is a peer as gossip sees it.
type gossipMember struct {
	Name   string
	Addr   string
	Status memberlist.NodeStateType
	Meta   nodeMeta
}

// gossipView is this node's copy of what gossip says, kept from
// memberlist's events, serf's way: memberlist.Members returns pointers into
// memberlist's node map, which it rewrites under its own lock whenever a
// node's meta changes (UpdateNode, a restarted peer), so reading them after
// Members returns is a data race. memberlist calls the events under that
// lock, so copying there is safe. The zero value is ready to use.
type gossipView struct {
	mu         sync.Mutex
	members    map[string]gossipMember // gwelb nodes gossip lists: alive or suspect, as memberlist.Members
	departures departures
}

// set records (or updates) m, called from a join or update event.
func (v *gossipView) set(m *memberlist.Node) {
	var meta nodeMeta
	if json.Unmarshal(m.Meta, &meta) != nil || meta.Raft == "" {
		return // not a gwelb node
	}
	// Status is always alive: memberlist has no event for suspect, and
	// it never sets the State field of the Node it passes.
	gm := gossipMember{Name: m.Name, Addr: m.Address(), Status: memberlist.StateAlive, Meta: meta}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.members == nil {
		v.members = map[string]gossipMember{}
	}
	v.members[m.Name] = gm
}

// drop forgets a member that left or failed.
func (v *gossipView) drop(name string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.members, name)
}

// members lists the gossip members with readable metadata, by name.
func (n *Node) members() []gossipMember {
	if n.gossip == nil {
		return nil
	}
	v := &n.view
	v.mu.Lock()
	out := make([]gossipMember, 0, len(v.members))
	for _, m := range v.members {
		out = append(out, m)
	}
	v.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// grpcAddrOf returns the admin API address of the named node, from gossip.
// Gossip may briefly list a live node as failed (after a partition heals,
// the cut-off node spreads "dead" claims about its peers until they refute
// them); Raft, which named the node, knows better, so the address it last
// advertised is used then.
func (n *Node) grpcAddrOf(name string) string {
	for _, m := range n.members() {
		if m.Name == name {
			n.grpcAddrs.Store(name, m.Meta.GRPC)
			return m.Meta.GRPC
		}
	}
	if a, ok := n.grpcAddrs.Load(name); ok {
		return a.(string)
	}
	return ""
}

// idleHoldOf returns how long the named node holds an idle AppendEntries
// as leader, by its gossip; 0 when gossip does not list it.
func (n *Node) idleHoldOf(name string) time.Duration {
	if n.noHold.Load() {
		return 0
	}
	v := &n.view
	v.mu.Lock()
	m, ok := v.members[name]
	v.mu.Unlock()
	if !ok {
		return 0
	}
	return time.Duration(m.Meta.IdleHold) * time.Millisecond
}

// gossipedHold is the hold this node gossips: its transport's (0 while a
// test makes it behave as a build before holds).
func (n *Node) gossipedHold() time.Duration {
	if n.noHold.Load() {
		return 0
	}
	return idleHold(n.cfg.Timing)
}

// countsHold reports whether the follower named id counts on the leader's
// hold of idle AppendEntries (transport.go): every node whose gossip
// carries a hold does, and so does one gossip does not list (a new node
// whose meta has not arrived, or one cut off from gossip: holding is the
// safe side, since one that does count on it must always be held); only a
// node that gossips without a hold, an older build, does not.
func (n *Node) countsHold(id raft.ServerID) bool {
	v := &n.view
	v.mu.Lock()
	m, ok := v.members[string(id)]
	v.mu.Unlock()
	return !ok || m.Meta.IdleHold > 0
}

// countsBeats reports whether the follower named id counts the commit
// index on heartbeats, by its gossip: one gossip does not list gets the
// hold, which every build that holds counts on.
func (n *Node) countsBeats(id raft.ServerID) bool {
	v := &n.view
	v.mu.Lock()
	m, ok := v.members[string(id)]
	v.mu.Unlock()
	return ok && m.Meta.Beats
}

// remember keeps the admin address a peer advertises (see grpcAddrOf).
func (n *Node) remember(m *memberlist.Node) {
	var meta nodeMeta
	if json.Unmarshal(m.Meta, &meta) == nil && meta.GRPC != "" {
		n.grpcAddrs.Store(m.Name, meta.GRPC)
	}
}

// kick wakes the reconcile and bootstrap loops.
func (n *Node) kick() {
	for _, c := range []chan struct{}{n.events, n.bootEvents} {
		select {
		case c <- struct{}{}:
		default:
		}
	}
}

type gossipDelegate struct{ n *Node }

func (d *gossipDelegate) NodeMeta(limit int) []byte {
	b, _ := json.Marshal(nodeMeta{Raft: d.n.cfg.advertised(d.n.cfg.RaftAddr), GRPC: d.n.GRPCAddr(), Leaving: d.n.view.departures.leaving.Load(), NonVoter: d.n.nonVoter.Load(), IdleHold: d.n.gossipedHold().Milliseconds(), Beats: !d.n.noBeats.Load()})
	if len(b) > limit {
		return nil
	}
	return b
}
func (d *gossipDelegate) NotifyMsg([]byte)                {}
func (d *gossipDelegate) GetBroadcasts(int, int) [][]byte { return nil }
func (d *gossipDelegate) LocalState(bool) []byte          { return nil }
func (d *gossipDelegate) MergeRemoteState([]byte, bool)   {}

type gossipEvents struct{ n *Node }

// NotifyJoin also forgets a graceful leave: a node that left and came back
// is a member again, and the leader adds it as a voter.
func (e *gossipEvents) NotifyJoin(m *memberlist.Node) {
	e.n.view.set(m)
	e.n.remember(m)
	e.n.view.departures.forget(m.Name)
	e.n.kick()
}

// NotifyLeave tells a graceful leave (the node's last meta says Leaving)
// from a failure; memberlist calls it alike for both. It runs under
// memberlist's node lock, so it only records and wakes the leader loop.
func (e *gossipEvents) NotifyLeave(m *memberlist.Node) {
	var meta nodeMeta
	if json.Unmarshal(m.Meta, &meta) == nil && meta.Raft != "" && m.Name != e.n.cfg.Name {
		if meta.Leaving {
			e.n.log.Info("peer left gossip", "peer", m.Name)
			e.n.view.departures.add(m.Name, time.Now())
		} else if meta.NonVoter {
			e.n.log.Info("peer failed; it stays a non-voter, expected back until non_voter_reap", "peer", m.Name)
		} else {
			e.n.log.Info("peer failed; it stays a voter, expected back", "peer", m.Name)
		}
	}
	// Dropped after the leave is recorded, so whoever sees the member
	// gone from members() sees the departure too.
	e.n.view.drop(m.Name)
	e.n.kick()
}

func (e *gossipEvents) NotifyUpdate(m *memberlist.Node) {
	e.n.view.set(m)
	e.n.remember(m)
	e.n.kick()
}

func statusName(s memberlist.NodeStateType) string {
	switch s {
	case memberlist.StateAlive:
		return "alive"
	case memberlist.StateSuspect:
		return "suspect"
	case memberlist.StateDead:
		return "failed"
	case memberlist.StateLeft:
		return "left"
	}
	return "unknown"
}
