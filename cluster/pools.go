package cluster

import (
	"github.com/gwelb/gwelb/fsm"
)

// PoolSpecs returns the replicated pools with their members as this node's
// FSM holds them (stored form: what was written, defaults as the writer
// applied them), pools by name and members by route. Compare them with a
// config file's pools with fsm.PlanChanges, which applies defaults to both.
func (n *Node) PoolSpecs() []fsm.PoolSpec {
	return fsm.PoolsFromState(n.fsm.State())
}
