package cluster

// A non-voter's Raft log without fsync (DESIGN.md §1.3 step 3).
//
// BoltDB fsyncs every append, and a follower answers an AppendEntries only
// once its entries are on disk: each change costs every follower an fsync
// before it is applied, two with the commit notifier's barrier
// (commitnotify.go). At 50 balancer nodes on one disk those fsyncs queue
// behind each other and a member change took 169 ms (p99) to show on every
// node. A non-voter's log counts toward no commit and no election, so it
// need not survive a power cut: a non-voter that lost its newest entries
// answers the leader's next AppendEntries with the index it has, and the
// leader sends it the rest (or a snapshot), as for any follower that fell
// behind. A process crash loses nothing either way (the writes are in the
// page cache).
//
// A node that asks to be a non-voter may still be a voter: the leader never
// demotes one (suffrage.go), so voter: false on a former voter leaves it a
// voter, and a voter's log must be durable before it answers. So the
// store fsyncs each write explicitly while the newest configuration this
// node knows names it a voter: the one raft holds when the node starts, then
// every configuration entry it stores and every snapshot it takes or
// installs. Until raft has told it, it syncs.

import (
	"sync/atomic"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// suffrageTracker follows whether the newest configuration this node
// stored names it a voter.
type suffrageTracker struct {
	id    raft.ServerID
	voter atomic.Bool
}

// observe records the suffrage configuration c gives this node.
func (s *suffrageTracker) observe(c raft.Configuration) {
	voter := false
	for _, srv := range c.Servers {
		if srv.ID == s.id && srv.Suffrage == raft.Voter {
			voter = true
		}
	}
	s.voter.Store(voter)
}

// nonVoterLogs is the Raft log and stable store of a node that asks to be
// a non-voter: BoltDB opened with NoSync, synced explicitly while the node
// is a voter all the same (its term and vote too).
type nonVoterLogs struct {
	*raftboltdb.BoltStore
	self *suffrageTracker
}

// StoreLog stores one entry (raft stores a batch through StoreLogs).
func (s nonVoterLogs) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

// StoreLogs stores the entries, then fsyncs if the node is a voter once
// they are stored (a batch that makes it one is synced too).
func (s nonVoterLogs) StoreLogs(logs []*raft.Log) error {
	if err := s.BoltStore.StoreLogs(logs); err != nil {
		return err
	}
	for _, l := range logs {
		if l.Type == raft.LogConfiguration {
			s.self.observe(raft.DecodeConfiguration(l.Data))
		}
	}
	return s.syncVoter()
}

// Set stores a stable value (the vote), synced while the node is a voter.
func (s nonVoterLogs) Set(k, v []byte) error {
	if err := s.BoltStore.Set(k, v); err != nil {
		return err
	}
	return s.syncVoter()
}

// SetUint64 stores a stable number (the term), synced while the node is a
// voter.
func (s nonVoterLogs) SetUint64(k []byte, v uint64) error {
	if err := s.BoltStore.SetUint64(k, v); err != nil {
		return err
	}
	return s.syncVoter()
}

func (s nonVoterLogs) syncVoter() error {
	if s.self.voter.Load() {
		return s.BoltStore.Sync()
	}
	return nil
}

// suffrageSnapshots tells the tracker the configuration of every snapshot
// raft takes or installs: an installed snapshot replaces the log, and with
// it the configuration entries the store saw.
type suffrageSnapshots struct {
	raft.SnapshotStore
	self *suffrageTracker
}

// Create observes the snapshot's configuration, then creates it.
func (s suffrageSnapshots) Create(version raft.SnapshotVersion, index, term uint64, c raft.Configuration, cIndex uint64, trans raft.Transport) (raft.SnapshotSink, error) {
	s.self.observe(c)
	return s.SnapshotStore.Create(version, index, term, c, cIndex, trans)
}
