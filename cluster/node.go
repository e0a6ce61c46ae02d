package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
	"google.golang.org/grpc"

	"github.com/gwelb/gwelb/fsm"
	"github.com/gwelb/gwelb/internal/metrics"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// Node is one gwelb balancer node's control plane.
type Node struct {
	cfg Config
	log *slog.Logger

	fsm       *fsm.FSM
	raft      *raft.Raft
	logStore  *raftboltdb.BoltStore
	transport *raft.NetworkTransport
	inbox     *raftInbox     // between transport and raft: notes the leader's AppendEntries (catchup.go)
	raftTrans *raftTransport // what raft runs on: the inbox, heartbeats to non-voters answered, idle AppendEntries held (transport.go)
	snaps     raft.SnapshotStore
	suffrage  *suffrageTracker // a node asking to be a non-voter: whether it is a voter all the same (logstore.go)

	gossip     *memberlist.Memberlist
	grpcAddrs  sync.Map      // node name -> admin address it last advertised in gossip
	notifyCh   <-chan bool   // Raft leadership transitions (never dropped, unlike LeaderCh)
	events     chan struct{} // gossip changed: the leader reconciles
	bootEvents chan struct{} // gossip changed: bootstrap looks again
	commits    chan struct{} // the FSM applied a command: the leader tells the followers (commitnotify.go)
	grpc       *grpc.Server
	grpcLn     net.Listener
	peers      *peerClients
	tls        *nodeTLS // node certificate configurations (nodetls.go); nil without TLS
	watchers   *watchers
	prober     *prober
	tables     *tablePublisher
	lastTable  *fsm.Table     // the table onTable saw last; only onTable touches it
	nonVoter   atomic.Bool    // this node asks to be a non-voter (suffrage.go)
	reaper     nonVoterReaper // failed non-voters by when the leader saw them fail (suffrage.go)
	view       gossipView     // gossip membership and graceful leaves, kept from gossip events (gossip.go)
	fresh      freshness      // whether the table may be behind the cluster's (catchup.go)
	// noHold, tests only: gossip no hold of idle AppendEntries and count
	// on none, as a build before them (transport.go).
	noHold atomic.Bool
	// noBeats, tests only: gossip no count of stamped heartbeats, as a
	// build before them (inbox.ignoreBeats goes with it).
	noBeats atomic.Bool
	startup *catchUp // the catch-up a starting node makes before it routes
	// replayTo is the last index of this node's raft log when it started.
	// Those entries were decided before this process ran; a leader that
	// applies them again (a whole cluster restarted, a lone node) logs
	// their verdict changes at debug, not as news (logVerdictChanges).
	replayTo uint64

	// gossipKeys holds the gossip encryption keys, data_dir/keyring
	// (keyring.go); nil for plain gossip.
	gossipKeys *gossipKeyring

	metrics *metrics.Cluster // the control plane's series (metrics.go)

	ctx      context.Context // ends when the node stops
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	left     chan struct{} // closed when the node left the cluster on request
	leftOnce sync.Once
	once     sync.Once // Kill runs once
}

// Start opens the node's stores, starts Raft, gossip and the admin API, and
// joins or bootstraps the cluster in the background.
func Start(cfg Config) (*Node, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ntls, err := newNodeTLS(cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &Node{
		cfg:        cfg,
		tls:        ntls,
		log:        cfg.Logger.With("node", cfg.Name),
		events:     make(chan struct{}, 1),
		bootEvents: make(chan struct{}, 1),
		commits:    make(chan struct{}, 1),
		watchers:   newWatchers(),
		ctx:        ctx,
		cancel:     cancel,
		left:       make(chan struct{}),
	}
	n.initMetrics(cfg.Metrics)
	n.tables = newTablePublisher(filepath.Join(cfg.DataDir, "table.cache"), cfg.OnTable, func() *gwelbv1.State { return n.fsm.State() }, n.log)
	n.prober = newProber(n)
	n.fsm = fsm.NewFSM(n.onTable)
	if err := n.start(); err != nil {
		n.Kill()
		return nil, err
	}
	return n, nil
}

func (n *Node) start() error {
	if err := os.MkdirAll(n.cfg.DataDir, 0o750); err != nil {
		return fmt.Errorf("data_dir: %w", err)
	}
	// Hand the data plane the last table this node knew: it routes on it
	// if catching up with the cluster takes longer than the startup bound
	// (a whole restarted cluster without a quorum yet, say).
	n.tables.loadCache()

	if err := n.loadSuffrage(); err != nil {
		return err
	}
	existing, err := n.startRaft()
	if err != nil {
		return err
	}
	n.beginStartup(existing)
	noteContact := n.noteContact // after the start round: it decides when this node is first fresh
	n.inbox.onContact.Store(&noteContact)
	peers, err := newPeerClients(n.cfg, n.tls)
	if err != nil {
		return err
	}
	n.peers = peers
	if err := n.startGRPC(); err != nil {
		return err
	}
	if err := n.startGossip(); err != nil {
		return err
	}
	n.goRun(n.monitorLeadership)
	n.goRun(n.joinLoop)
	n.goRun(n.bootstrapLoop)
	n.goRun(func(ctx context.Context) { n.runCatchUp(ctx, n.startup) })
	n.goRun(n.watchFreshness)
	n.goRun(n.tellFollowers)
	n.exposeMetrics()
	n.log.Info("node started; catching up with the cluster before routing", "raft", n.cfg.RaftAddr, "gossip", n.cfg.GossipAddr, "grpc", n.GRPCAddr(), "existing_state", existing)
	return nil
}

// raftLogCache is how many of the newest Raft entries are kept decoded in
// memory (Consul keeps 512).
const raftLogCache = 512

// startRaft opens the stores and starts Raft; existing reports whether the
// data_dir held Raft state (a restart, not a first start).
func (n *Node) startRaft() (existing bool, err error) {
	logStore, err := raftboltdb.New(raftboltdb.Options{
		Path: filepath.Join(n.cfg.DataDir, "raft.db"),
		// A second process on the same data_dir must fail, not hang.
		BoltOptions: &bbolt.Options{Timeout: time.Second},
		// A non-voter's log need not survive a power cut (logstore.go).
		NoSync: n.nonVoter.Load(),
	})
	if err != nil {
		return false, fmt.Errorf("open raft store %s: %w", n.cfg.DataDir, err)
	}
	n.logStore = logStore
	hlog := newHCLogger("raft", n.log)
	snaps, err := raft.NewFileSnapshotStoreWithLogger(n.cfg.DataDir, 2, hlog)
	if err != nil {
		return false, fmt.Errorf("open snapshot store: %w", err)
	}
	n.snaps = snaps
	var logs raft.LogStore = logStore
	var stable raft.StableStore = logStore
	var snapStore raft.SnapshotStore = snaps
	if n.nonVoter.Load() {
		// Synced until raft names the configuration (logstore.go).
		n.suffrage = &suffrageTracker{id: raft.ServerID(n.cfg.Name)}
		n.suffrage.voter.Store(true)
		nv := nonVoterLogs{BoltStore: logStore, self: n.suffrage}
		logs, stable = nv, nv
		snapStore = suffrageSnapshots{SnapshotStore: snaps, self: n.suffrage}
	}
	addr, err := net.ResolveTCPAddr("tcp", n.cfg.advertised(n.cfg.RaftAddr))
	if err != nil {
		return false, fmt.Errorf("raft_addr %s: %w", n.cfg.RaftAddr, err)
	}
	existing, err = raft.HasExistingState(logStore, logStore, snaps)
	if err != nil {
		return false, fmt.Errorf("read raft state in %s: %w", n.cfg.DataDir, err)
	}
	stream, err := newRaftStream(n.ctx, n.cfg.RaftAddr, addr, n.cfg.Timing.HeartbeatTimeout/5)
	if err != nil {
		return false, fmt.Errorf("raft_addr %s: %w", n.cfg.RaftAddr, err)
	}
	// MaxRPCsInFlight 1 turns pipelined replication off: in raft v1.7.3 a
	// rejected or stale-term append makes pipelineDecode quit while
	// pipelineReplicate is parked sending into the pipeline, a deadlock
	// that stops replication to that follower and makes raft.Shutdown (and
	// so SIGTERM) hang forever (seen by the chaos suite after a partitioned
	// leader rejoined). gwelb writes little; synchronous appends cost nothing.
	// The stream layer waits out refused dials (transport.go).
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: n.raftLayer(stream), MaxPool: 3, Timeout: 10 * time.Second, Logger: hlog, MaxRPCsInFlight: 1,
	})
	n.transport = trans

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(n.cfg.Name)
	rc.HeartbeatTimeout = n.cfg.Timing.HeartbeatTimeout
	rc.ElectionTimeout = n.cfg.Timing.ElectionTimeout
	rc.LeaderLeaseTimeout = n.cfg.Timing.LeaderLeaseTimeout
	rc.CommitTimeout = n.cfg.Timing.CommitTimeout
	rc.Logger = hlog
	// Raft's per-peer series (raft_replication_appendEntries_rpc_n2, ...)
	// repeat its labelled ones, at a sample per RPC (DESIGN.md §8.1).
	rc.NoLegacyTelemetry = true
	notify := make(chan bool, 16)
	rc.NotifyCh = notify
	// The state is a few kilobytes: snapshot often so restarts replay little.
	rc.SnapshotThreshold = 1024
	rc.TrailingLogs = 2048
	// Raft reads its RPCs through the inbox, which tells the freshness
	// monitor when the leader's log last reached this node (catchup.go).
	n.inbox = newRaftInbox(n.ctx, trans)
	n.inbox.holdOf = n.idleHoldOf
	n.goRun(n.inbox.run)
	// The newest entries are read again for every AppendEntries (the
	// previous entry's term): a cache in front of BoltDB spares decoding
	// them each time, as Consul does (DESIGN.md §8).
	cached, err := raft.NewLogCache(raftLogCache, logs)
	if err != nil {
		return false, fmt.Errorf("raft log cache: %w", err)
	}
	n.raftTrans = newRaftTransport(n.inbox, n.cfg.Timing)
	n.raftTrans.countsHold = n.countsHold
	n.raftTrans.countsBeats = n.countsBeats
	if n.replayTo, err = cached.LastIndex(); err != nil {
		return false, fmt.Errorf("raft log: %w", err)
	}
	// The transport holds idle AppendEntries until the log grows (transport.go).
	r, err := raft.NewRaft(rc, commitFSM{n.fsm, n.notifyCommit}, heldLogStore{LogCache: cached, trans: n.raftTrans}, stable, snapStore, n.raftTrans)
	if err != nil {
		return false, fmt.Errorf("start raft: %w", err)
	}
	isNonVoter := func(id raft.ServerID) bool {
		f := r.GetConfiguration()
		if f.Error() != nil {
			return false
		}
		for _, srv := range f.Configuration().Servers {
			if srv.ID == id {
				return srv.Suffrage == raft.Nonvoter
			}
		}
		return false
	}
	n.raftTrans.nonVoter.Store(&isNonVoter)
	commitIndex := r.CommitIndex
	n.raftTrans.commitIndex.Store(&commitIndex)
	if n.suffrage != nil {
		f := r.GetConfiguration()
		if err := f.Error(); err != nil {
			return false, fmt.Errorf("read raft configuration: %w", err)
		}
		n.suffrage.observe(f.Configuration())
	}
	n.raft = r
	if n.suffrage != nil && !n.suffrage.voter.Load() {
		n.paceHeartbeats(false) // a non-voter's heartbeat timeout (leader.go)
	}
	n.notifyCh = notify
	role := r.State
	stream.role.Store(&role)
	return existing, nil
}

// onTable is the FSM's publish hook: the data plane gets the table first,
// then the prober, the verdict log and Watch streams. It runs on the FSM's
// goroutine, one table at a time, so lastTable needs no lock.
func (n *Node) onTable(t *fsm.Table) {
	n.tables.publish(t)
	n.tables.save()
	n.prober.sync(n.ctx, n.lastTable, t)
	n.logVerdictChanges(n.lastTable, t)
	n.lastTable = t
	n.watchers.notify()
}

// logVerdictChanges logs each verdict change once, on the leader, with the
// cause the FSM recorded; one this node's log held when it started is a
// replay, logged at debug: after a restart it would read as a member
// failing now, with the time of the restart (DESIGN.md §1.3 step 4). It
// costs what the change touched (DESIGN.md §5.2): a pool the FSM did not
// touch is the same pointer, one whose layout is the same is compared by
// the member blocks it does not share (Pool.Changed), and only a pool
// whose members came, went or moved is walked whole. Only changed
// members' causes are read (FSM.Member), and none when the level is off.
func (n *Node) logVerdictChanges(prev, t *fsm.Table) {
	if prev == nil || !n.IsLeader() {
		return
	}
	replayed := t.Index() <= n.replayTo
	for _, p := range t.Pools() {
		old := prev.Pool(p.Name())
		if old == p || old == nil {
			continue // untouched, or new: no earlier verdict to change from
		}
		if changed, ok := p.Changed(old); ok {
			for _, i := range changed {
				if m, o := p.Member(i), old.Member(i); m.Verdict != o.Verdict {
					n.logVerdict(p.Name(), m.Route, m.Verdict, replayed)
				}
			}
			continue
		}
		for _, m := range p.All() {
			if j, ok := old.Lookup(m.Route); ok && old.Member(j).Verdict != m.Verdict {
				n.logVerdict(p.Name(), m.Route, m.Verdict, replayed)
			}
		}
	}
}

func (n *Node) logVerdict(pool, route string, v fsm.Verdict, replayed bool) {
	msg, level := "verdict changed", slog.LevelInfo
	if replayed {
		msg, level = "verdict replayed", slog.LevelDebug
	}
	if !n.log.Enabled(n.ctx, level) {
		return
	}
	cause := ""
	if m, _, ok := n.fsm.Member(pool, route); ok {
		cause = m.GetVerdictCause()
	}
	n.log.Log(n.ctx, level, msg, "pool", pool, "route", route, "verdict", v.String(), "cause", cause)
}

// goRun runs f in a goroutine tied to the node's lifetime.
func (n *Node) goRun(f func(ctx context.Context)) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f(n.ctx)
	}()
}

// Name is the node's name.
func (n *Node) Name() string { return n.cfg.Name }

// GRPCAddr is the admin API address peers and gwelbctl dial.
func (n *Node) GRPCAddr() string {
	if n.grpcLn == nil {
		return n.cfg.advertised(n.cfg.GRPCAddr)
	}
	return n.cfg.advertised(n.grpcLn.Addr().String())
}

// Table returns the routing table this node's FSM has applied.
func (n *Node) Table() *fsm.Table { return n.fsm.Table() }

// IsLeader reports whether this node is the Raft leader.
func (n *Node) IsLeader() bool { return n.raft != nil && n.raft.State() == raft.Leader }

// Leader returns the leader's node name, or "" when none is known.
func (n *Node) Leader() string {
	_, id := n.raft.LeaderWithID()
	return string(id)
}

// LastContact is how long ago this node heard from the leader (0 on the leader).
func (n *Node) LastContact() time.Duration {
	if n.IsLeader() {
		return 0
	}
	lc := n.raft.LastContact()
	if lc.IsZero() {
		return time.Duration(1<<63 - 1)
	}
	return time.Since(lc)
}

// Left is closed when the node left the cluster because an operator asked
// (gwelbctl leave); the daemon then exits.
func (n *Node) Left() <-chan struct{} { return n.left }

// Shutdown leaves the cluster gracefully, as on SIGTERM: it hands over
// leadership if it holds it, leaves gossip so the leader removes it from
// the Raft configuration, and closes its stores.
func (n *Node) Shutdown(ctx context.Context) error {
	err := n.leave(ctx)
	n.Kill()
	return err
}

// Stop stops the node without leaving the cluster (leave_on_terminate:
// false, Consul's default for servers): it hands over leadership if it holds
// it, so the cluster does not wait an election, and stays a voter that is
// expected back, e.g. for a restart under an orchestrator.
func (n *Node) Stop() error {
	err := n.handOver(context.Background()) // raft bounds each try by an election timeout
	n.Kill()
	return err
}

// transferTries is how many times handOver asks raft to transfer
// leadership, as Consul's leave does: raft gives a transfer one election
// timeout (500 ms) for the follower to win its election, which a busy
// machine can exceed, and a second try usually succeeds.
const transferTries = 3

// handOver transfers leadership if this node holds it and has a voter to
// hand it to.
func (n *Node) handOver(ctx context.Context) error {
	var err error
	for try := 1; try <= transferTries; try++ {
		if !n.IsLeader() || n.voters() <= 1 {
			return nil // no longer leader: a try that timed out may still have succeeded
		}
		if err = awaitRaft(ctx, n.raft.LeadershipTransfer()); err == nil || ctx.Err() != nil {
			break
		}
		n.log.Warn("leadership transfer failed", "try", try, "of", transferTries, "err", err)
	}
	if err != nil {
		return fmt.Errorf("transfer leadership: %w", err)
	}
	return nil
}

// Kill stops the node without a goodbye, as a crash would (but releasing
// its ports and files): peers see it fail and keep it as a voter.
func (n *Node) Kill() {
	n.once.Do(func() {
		// Under the lock that starts catch-up rounds, so none starts a
		// goroutine once the wait below may have begun.
		n.fresh.mu.Lock()
		n.cancel()
		n.fresh.mu.Unlock()
		if n.grpc != nil {
			n.grpc.Stop()
		}
		if n.gossip != nil {
			n.gossip.Shutdown()
		}
		if n.raft != nil {
			if err := n.raft.Shutdown().Error(); err != nil {
				n.log.Warn("raft shutdown", "err", err)
			}
		}
		if n.transport != nil {
			n.transport.Close()
		}
		if n.logStore != nil {
			n.logStore.Close()
		}
		if n.peers != nil {
			n.peers.close()
		}
		n.wg.Wait()
		n.prober.stop()
		n.tables.close()
	})
}

// leave hands over leadership, asks the leader to remove this node, and
// leaves gossip.
func (n *Node) leave(ctx context.Context) error {
	var errs []error
	if err := n.handOver(ctx); err != nil {
		errs = append(errs, err)
	}
	// Leave gossip before Raft: a node gossiping as alive would be added
	// straight back as a voter after removePeer; one that announced its
	// leave is not, and the leader removes it itself should removePeer
	// below fail (gossip.go, leader.go reconcile).
	if err := n.leaveGossip(2 * time.Second); err != nil {
		errs = append(errs, err)
	}
	if n.voters() > 1 {
		if err := n.removePeer(ctx, n.cfg.Name); err != nil {
			errs = append(errs, fmt.Errorf("leave raft: %w", err))
		}
	}
	n.log.Info("left the cluster")
	return errors.Join(errs...)
}

// voters counts the voters of the current Raft configuration.
func (n *Node) voters() int {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return 0
	}
	c := 0
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			c++
		}
	}
	return c
}
