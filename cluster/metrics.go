package cluster

import (
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gwelb/gwelb/fsm"
	"github.com/gwelb/gwelb/internal/metrics"
)

// The control plane's metrics (DESIGN.md §8.1). Verdicts, admin states,
// the leader flag, the table index and the last quorum contact are read
// from the node at scrape time, so they can never disagree with what
// gwelbctl status shows; probes record into series resolved when the
// probe starts; leader changes are counted as Raft observes them.

// initMetrics points the node at m (unregistered instruments when nil).
func (n *Node) initMetrics(m *metrics.Cluster) {
	if m == nil {
		m = metrics.NewCluster()
	}
	n.metrics = m
}

// exposeMetrics makes the registry read this node's state at scrape time
// and count its leader changes; called once Raft runs.
func (n *Node) exposeMetrics() {
	// The filter runs synchronously in Raft's observe for every
	// observation: counting there needs no channel, and none is dropped.
	n.raft.RegisterObserver(raft.NewObserver(nil, false, func(o *raft.Observation) bool {
		if _, ok := o.Data.(raft.LeaderObservation); ok {
			n.metrics.LeaderChanges.Inc()
		}
		return false
	}))
	n.metrics.SetState(n.metricsState)
}

// metricsState is the node's state for a scrape.
func (n *Node) metricsState() metrics.ClusterState {
	st := metrics.ClusterState{Leader: n.IsLeader(), LastQuorumContact: n.LastContact()}
	if st.LastQuorumContact == time.Duration(1<<63-1) {
		st.LastQuorumContact = -1 // never heard from a leader
	}
	if t := n.fsm.Table(); t != nil {
		st.TableIndex = t.Index()
		st.Members = func(yield func(metrics.ClusterMember) bool) {
			for _, p := range t.Pools() {
				for _, m := range p.Members() {
					if !yield(metrics.ClusterMember{Pool: p.Name(), Route: m.Route, Up: m.Verdict == fsm.Up, State: m.State.String()}) {
						return
					}
				}
			}
		}
	}
	return st
}

// probeMetrics are one probed member's series.
type probeMetrics struct {
	duration prometheus.Observer
	failures prometheus.Counter
}

// probeMetricsFor resolves the series of member route of pool.
func (n *Node) probeMetricsFor(pool, route string) probeMetrics {
	return probeMetrics{
		duration: n.metrics.ProbeDuration.WithLabelValues(pool, route),
		failures: n.metrics.ProbeFailures.WithLabelValues(pool, route),
	}
}

// deleteProbeMetrics drops the series of a member that left the table.
func (n *Node) deleteProbeMetrics(pool, route string) {
	n.metrics.ProbeDuration.DeleteLabelValues(pool, route)
	n.metrics.ProbeFailures.DeleteLabelValues(pool, route)
}
