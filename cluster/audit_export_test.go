package cluster

// CallerKey is the metadata key a node sets on a call it relays, naming
// the original caller for the leader's audit log.
const CallerKey = callerKey
