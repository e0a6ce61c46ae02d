package cluster

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
)

// Non-voting balancer nodes (DESIGN.md §1.3 step 7, §5.5; issue 13). A
// large estate runs many balancer nodes but keeps 3 or 5 voters: the others
// join as Raft non-voters, which replicate the log and route from the same
// table, forward writes to the leader like any follower, and neither vote,
// bootstrap, probe members nor count in verdicts. A node asks for its
// suffrage in its gossip meta; the leader admits it (a node certificate for
// its name, nodetls.go) and adds it with AddNonvoter, and removes it once it
// has been failed in gossip for longer than non_voter_reap: a non-voter
// holds no quorum, so reaping one can never cost the cluster its majority.

// DefaultNonVoterReap is how long a non-voter may stay failed before the
// leader removes it: Consul's reconnect_timeout default, after which its
// servers reap a failed agent.
const DefaultNonVoterReap = 72 * time.Hour

// nonVoterFile in data_dir records that `gwelbctl join --non-voter` made this
// node a non-voter, so that a restart without voter: false keeps asking.
const nonVoterFile = "non-voter"

// loadSuffrage sets the suffrage this node asks for: a non-voter by its
// config, or because an operator joined it as one before a restart.
func (n *Node) loadSuffrage() error {
	if n.cfg.NonVoter {
		n.nonVoter.Store(true)
		return nil
	}
	_, err := os.Stat(filepath.Join(n.cfg.DataDir, nonVoterFile))
	switch {
	case err == nil:
		n.nonVoter.Store(true)
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("data_dir: %w", err)
	}
	return nil
}

// becomeNonVoter makes this node ask to be a non-voter from now on
// (`gwelbctl join --non-voter`), recorded in data_dir, before it joins. A
// node that is a voter already stays one: the leader never demotes a voter
// by itself (leave, then join again as a non-voter).
func (n *Node) becomeNonVoter() error {
	if n.cfg.Dev {
		return errors.New("a -dev node bootstraps alone and cannot be a non-voter")
	}
	if err := os.WriteFile(filepath.Join(n.cfg.DataDir, nonVoterFile), []byte("joined with gwelbctl join --non-voter\n"), 0o640); err != nil {
		return fmt.Errorf("record non-voter in data_dir: %w", err)
	}
	if !n.nonVoter.Swap(true) && n.gossip != nil {
		if err := n.gossip.UpdateNode(2 * time.Second); err != nil {
			return fmt.Errorf("gossip the non-voter suffrage: %w", err)
		}
	}
	n.prober.stop()
	return nil
}

// NonVoter reports whether this node asks to be a Raft non-voter.
func (n *Node) NonVoter() bool { return n.nonVoter.Load() }

// suffrageAsked reports whether a server's suffrage satisfies what its
// gossip meta asks for. A voter asking to be a non-voter stays a voter:
// demoting one would shrink the quorum behind the operator's back.
func suffrageAsked(s raft.ServerSuffrage, meta nodeMeta) bool {
	if meta.NonVoter {
		return s == raft.Nonvoter || s == raft.Voter
	}
	return s == raft.Voter
}

// admitParallel bounds the admission proofs a reconcile pass runs at once:
// a rack of balancer nodes starting together is proven in a few rounds,
// and the leader never dials more than this many peers at a time.
const admitParallel = 16

// candidate is a gossip member the leader would add to (or change in) the
// Raft configuration once admitted; voter: it is a voter already.
type candidate struct {
	m     gossipMember
	voter bool
}

// admitAndAdd admits the candidates (DESIGN.md §4: each proves a node
// certificate for its name, nodetls.go) and adds every admitted one to the
// Raft configuration with the suffrage it asks for.
//
// Raft commits one configuration change at a time: it takes the next
// AddVoter or AddNonvoter only once the one before committed. Nothing else
// here may be serial. A pass that proved each member (two TLS handshakes
// with a node that may still be starting: milliseconds to a second on a
// busy host, 5 s for one that does not answer) only after the previous
// member's change committed took some 1.5 s per node, so a rack of 45
// non-voters starting together took a minute to join. So the proofs run
// concurrently, at most admitParallel at once, and the changes are queued
// one ahead: the next admitted member's change waits in Raft's queue while
// the one before commits, and Raft takes it the moment that one commits.
// A member failing its proof is skipped and tried on the next pass, as
// before; a change that fails is logged and tried on the next pass. It
// returns once every proof ended and every change was answered, so
// nothing outlives the pass.
func (n *Node) admitAndAdd(ctx context.Context, joining []candidate) {
	n.admitAndAddWith(ctx, joining, n.admit)
}

// admitAndAddWith is admitAndAdd with the proof given (tests stub it).
func (n *Node) admitAndAddWith(ctx context.Context, joining []candidate, admit func(context.Context, gossipMember) error) {
	if len(joining) == 0 {
		return
	}
	admitted := make(chan candidate, len(joining))
	slots := make(chan struct{}, admitParallel)
	var wg sync.WaitGroup
	for _, c := range joining {
		wg.Go(func() {
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-slots }()
			if admit(ctx, c.m) == nil {
				admitted <- c
			}
		})
	}
	go func() {
		wg.Wait()
		close(admitted)
	}()
	var pending *pendingAdd
	for c := range admitted {
		if ctx.Err() != nil {
			continue // leadership ended: the next leader adds it
		}
		next := n.startAdd(c)
		pending.finish(ctx, n) // committed, or failed: Raft took next after it
		pending = next
	}
	pending.finish(ctx, n)
}

// pendingAdd is a configuration change handed to Raft, not yet answered.
type pendingAdd struct {
	c    candidate
	kind string // "voter" or "non-voter"
	f    raft.IndexFuture
}

// startAdd hands Raft the change that gives an admitted member the
// suffrage it asks for (a voter already stays one) and returns at once if
// no change is waiting, else once Raft took this one (the one before it
// committed) or WriteTimeout passed.
func (n *Node) startAdd(c candidate) *pendingAdd {
	id, addr := raft.ServerID(c.m.Name), raft.ServerAddress(c.m.Meta.Raft)
	p := &pendingAdd{c: c, kind: "voter"}
	if c.m.Meta.NonVoter && !c.voter {
		p.kind = "non-voter"
		n.log.Info("adding non-voter", "peer", c.m.Name, "raft", c.m.Meta.Raft)
		p.f = n.raft.AddNonvoter(id, addr, 0, n.cfg.WriteTimeout)
		return p
	}
	n.log.Info("adding voter", "peer", c.m.Name, "raft", c.m.Meta.Raft)
	p.f = n.raft.AddVoter(id, addr, 0, n.cfg.WriteTimeout)
	return p
}

// finish waits for the change's answer and logs a failure; nil is a no-op.
func (p *pendingAdd) finish(ctx context.Context, n *Node) {
	if p == nil {
		return
	}
	if err := awaitRaft(ctx, p.f); err != nil {
		n.log.Warn("add "+p.kind, "peer", p.c.m.Name, "err", err)
	}
}

// nonVoterReaper remembers when the leader first saw each non-voter failed.
// Its own lock: the leader loop and a test's Reconcile may both reconcile.
type nonVoterReaper struct {
	mu     sync.Mutex
	failed map[string]time.Time
}

func (r *nonVoterReaper) reset() {
	r.mu.Lock()
	r.failed = map[string]time.Time{}
	r.mu.Unlock()
}

// reapNonVoters removes the non-voters that gossip has seen failed (or not
// at all) for longer than non_voter_reap, timed from when this leader first
// saw them failed. Voters are never reaped (DESIGN.md §1.3 step 7).
func (n *Node) reapNonVoters(ctx context.Context, servers []raft.Server) {
	alive := map[string]bool{}
	for _, m := range n.members() {
		if m.Status == memberlist.StateAlive {
			alive[m.Name] = true
		}
	}
	r := &n.reaper
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failed == nil {
		r.failed = map[string]time.Time{}
	}
	now := time.Now()
	nonVoters := map[string]bool{}
	for _, s := range servers {
		name := string(s.ID)
		if s.Suffrage != raft.Nonvoter || name == n.cfg.Name {
			continue
		}
		nonVoters[name] = true
		if alive[name] {
			delete(r.failed, name)
			continue
		}
		since, ok := r.failed[name]
		if !ok {
			r.failed[name] = now
			continue
		}
		if now.Sub(since) < n.cfg.NonVoterReap {
			continue
		}
		n.log.Info("removing non-voter failed longer than non_voter_reap", "peer", name, "failed_for", now.Sub(since).Round(time.Second), "non_voter_reap", n.cfg.NonVoterReap)
		if err := awaitRaft(ctx, n.raft.RemoveServer(s.ID, 0, n.cfg.WriteTimeout)); err != nil {
			n.log.Warn("remove non-voter", "peer", name, "err", err)
			continue
		}
		delete(r.failed, name)
	}
	for name := range r.failed {
		if !nonVoters[name] {
			delete(r.failed, name)
		}
	}
}
