package cluster

// Observers returns the live non-voters the FSM records (bounded probing).
func (n *Node) Observers() []string { return n.fsm.Observers() }
