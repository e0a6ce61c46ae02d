package cluster

// Balancers is the FSM's balancer set: the nodes whose majority decides
// verdicts (DESIGN.md §5.5).
func (n *Node) Balancers() []string { return n.fsm.Balancers() }

// Probes counts the members this node probes.
func (n *Node) Probes() int {
	n.prober.mu.Lock()
	defer n.prober.mu.Unlock()
	c := 0
	for _, byRoute := range n.prober.probes {
		c += len(byRoute)
	}
	return c
}
