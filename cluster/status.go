package cluster

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/gwelb/gwelb/fsm"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// Status answers this node's view; asked by a client (not relayed), it
// gathers what only each node's data plane knows from every live node: the
// requests in flight per member are summed, so an operator sees when a
// drained member is empty cluster-wide, and every node's local quarantine
// of a member (routing contract rule 8) is listed with the member.
//
// With recent_writes it also returns this node's own recent admin writes
// (its audit log's, never gathered): the dashboard asks every node and
// merges them, as the leader logs every write that goes through Raft.
func (s *adminServer) Status(ctx context.Context, req *gwelbv1.StatusRequest) (*gwelbv1.StatusResponse, error) {
	resp := s.n.Status()
	if req.GetRecentWrites() && s.n.cfg.RecentWrites != nil {
		resp.RecentWrites = s.n.cfg.RecentWrites()
	}
	if !isForwarded(ctx) {
		s.n.gatherDataPlanes(ctx, resp)
	}
	return resp, nil
}

// gatherDataPlanes adds the in-flight counts and the local quarantines of
// every other alive node that answers within a second; in_flight_from
// names the nodes counted.
func (n *Node) gatherDataPlanes(ctx context.Context, resp *gwelbv1.StatusResponse) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	byMember := map[string]*gwelbv1.MemberStatus{}
	for _, ps := range resp.GetPools() {
		for _, ms := range ps.GetMembers() {
			byMember[ms.GetMember().GetPool()+"\x00"+ms.GetMember().GetRoute()] = ms
		}
	}
	for _, m := range n.members() {
		if m.Name == n.cfg.Name || m.Status != memberlist.StateAlive {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := n.peers.status(ctx, m.Meta.GRPC)
			if err != nil {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			resp.InFlightFrom = append(resp.InFlightFrom, m.Name)
			for _, ps := range st.GetPools() {
				for _, ms := range ps.GetMembers() {
					if mine := byMember[ms.GetMember().GetPool()+"\x00"+ms.GetMember().GetRoute()]; mine != nil {
						mine.InFlight += ms.GetInFlight()
						mine.Quarantined = append(mine.Quarantined, ms.GetQuarantined()...)
						mine.Counters = addCounters(mine.Counters, ms.GetCounters())
					}
				}
			}
		}()
	}
	wg.Wait()
	resp.InFlightFrom = append(resp.InFlightFrom, n.cfg.Name)
	sort.Strings(resp.InFlightFrom)
	for _, ms := range byMember {
		sort.Slice(ms.Quarantined, func(i, j int) bool { return ms.Quarantined[i].GetNode() < ms.Quarantined[j].GetNode() })
	}
}

// addCounters sums two nodes' counts of a member; nil when neither counts.
func addCounters(a, b *gwelbv1.MemberCounters) *gwelbv1.MemberCounters {
	if b == nil {
		return a
	}
	if a == nil {
		a = &gwelbv1.MemberCounters{}
	}
	a.Requests += b.GetRequests()
	a.ServerErrors += b.GetServerErrors()
	a.Retries += b.GetRetries()
	return a
}

// localQuarantine reads this node's data-plane quarantine of pool p's
// members (routing contract rule 8): skip tells Pick which member indexes a
// request here would skip now, and list names them with the quarantine's
// end, by route. Route answers with them, so it shows the choice the data
// plane would really make.
func (n *Node) localQuarantine(p *fsm.Pool) (skip func(int) bool, list []*gwelbv1.LocalQuarantine) {
	if n.cfg.Quarantine == nil {
		return nil, nil
	}
	now := time.Now()
	skipped := map[int]bool{}
	for i := range p.Members() {
		if q := n.quarantineOf(p.Name(), p.Member(i).Route, now); q != nil {
			skipped[i] = true
			list = append(list, q)
		}
	}
	sort.Slice(list, func(i, j int) bool { return list[i].GetRoute() < list[j].GetRoute() })
	return func(i int) bool { return skipped[i] }, list
}

// quarantineOf is this node's quarantine of member route of pool, or nil
// when its data plane does not skip it at now.
func (n *Node) quarantineOf(pool, route string, now time.Time) *gwelbv1.LocalQuarantine {
	if n.cfg.Quarantine == nil {
		return nil
	}
	until := n.cfg.Quarantine(pool, route)
	if !until.After(now) {
		return nil
	}
	return &gwelbv1.LocalQuarantine{Node: n.cfg.Name, Route: route, UntilUnixNanos: until.UnixNano(), RemainingMs: until.Sub(now).Milliseconds()}
}

// Status describes this node's view of the cluster.
func (n *Node) Status() *gwelbv1.StatusResponse {
	resp := &gwelbv1.StatusResponse{
		Node:         n.cfg.Name,
		RaftState:    n.raft.State().String(),
		Leader:       n.Leader(),
		AppliedIndex: n.raft.AppliedIndex(),
		LastLogIndex: n.raft.LastIndex(),
		TableIndex:   n.fsm.Table().Index(),
		Insecure:     n.cfg.Insecure && !n.cfg.Dev, // DESIGN.md §4
	}
	if resp.Leader != "" {
		resp.LeaderGrpcAddr = n.grpcAddrOf(resp.Leader)
		if resp.Leader == n.cfg.Name {
			resp.LeaderGrpcAddr = n.GRPCAddr()
		}
	}
	if !n.IsLeader() {
		if lc := n.raft.LastContact(); !lc.IsZero() {
			resp.LastContactMs = time.Since(lc).Milliseconds()
		} else {
			resp.LastContactMs = -1
		}
	}
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		for _, srv := range f.Configuration().Servers {
			resp.Peers = append(resp.Peers, &gwelbv1.RaftPeer{
				Id: string(srv.ID), Address: string(srv.Address), Suffrage: srv.Suffrage.String(),
				Leader: string(srv.ID) == resp.Leader,
			})
		}
	}
	for _, m := range n.members() {
		resp.Gossip = append(resp.Gossip, &gwelbv1.GossipMember{
			Name: m.Name, Address: m.Addr, Status: statusName(m.Status), GrpcAddr: m.Meta.GRPC, RaftAddr: m.Meta.Raft,
		})
	}
	sort.Slice(resp.Gossip, func(i, j int) bool { return resp.Gossip[i].Name < resp.Gossip[j].Name })
	resp.Pools = n.poolStatus()
	return resp
}

// poolStatus lists pools and members with verdicts, observations, this
// node's requests in flight and its local quarantine.
func (n *Node) poolStatus() []*gwelbv1.PoolStatus {
	now := time.Now()
	st := n.fsm.State()
	var out []*gwelbv1.PoolStatus
	byPool := map[string]*gwelbv1.PoolStatus{}
	for _, p := range st.GetPools() {
		ps := &gwelbv1.PoolStatus{Pool: p}
		byPool[p.GetName()] = ps
		out = append(out, ps)
	}
	byMember := map[string]*gwelbv1.MemberStatus{}
	for _, m := range st.GetMembers() {
		ps := byPool[m.GetPool()]
		if ps == nil {
			continue
		}
		ms := &gwelbv1.MemberStatus{Member: m}
		if n.cfg.InFlight != nil {
			ms.InFlight = n.cfg.InFlight(m.GetPool(), m.GetRoute())
		}
		if n.cfg.Counters != nil {
			req, errs, retries := n.cfg.Counters(m.GetPool(), m.GetRoute())
			ms.Counters = &gwelbv1.MemberCounters{Requests: req, ServerErrors: errs, Retries: retries}
		}
		if q := n.quarantineOf(m.GetPool(), m.GetRoute(), now); q != nil {
			ms.Quarantined = []*gwelbv1.LocalQuarantine{q}
		}
		byMember[m.GetPool()+"\x00"+m.GetRoute()] = ms
		ps.Members = append(ps.Members, ms)
	}
	for _, o := range st.GetObservations() {
		if ms := byMember[o.GetPool()+"\x00"+o.GetRoute()]; ms != nil {
			ms.Observations = append(ms.Observations, o)
		}
	}
	return out
}
