package cluster

import (
	"bytes"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/gwelb/gwelb/fsm"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// maxSnapshotBytes bounds a restored snapshot; the state is a few KiB per
// hundred members.
const maxSnapshotBytes = 64 << 20

func (n *Node) startGRPC() error {
	var opts []grpc.ServerOption
	if t := n.cfg.TLS; t != nil {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return fmt.Errorf("tls: load key pair: %w", err)
		}
		tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		if t.CAFile != "" {
			pool, err := loadCA(t.CAFile)
			if err != nil {
				return err
			}
			tc.ClientCAs, tc.ClientAuth = pool, tls.RequireAndVerifyClientCert
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(tc)))
	}
	if n.cfg.Token != "" {
		opts = append(opts, grpc.ChainUnaryInterceptor(n.authUnary), grpc.ChainStreamInterceptor(n.authStream))
	}
	ln, err := net.Listen("tcp", n.cfg.GRPCAddr)
	if err != nil {
		return fmt.Errorf("grpc_addr %s: %w", n.cfg.GRPCAddr, err)
	}
	n.grpcLn = ln
	n.grpc = grpc.NewServer(opts...)
	gwelbv1.RegisterAdminServer(n.grpc, &adminServer{n: n})
	go n.grpc.Serve(ln)
	return nil
}

// authorize checks the bearer token in constant time.
func (n *Node) authorize(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		tok, ok := strings.CutPrefix(v, "Bearer ")
		if ok && subtle.ConstantTimeCompare([]byte(tok), []byte(n.cfg.Token)) == 1 {
			return nil
		}
	}
	return status.Error(codes.Unauthenticated, "missing or wrong token")
}

func (n *Node) authUnary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := n.authorize(ctx); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (n *Node) authStream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := n.authorize(ss.Context()); err != nil {
		return err
	}
	return h(srv, ss)
}

// leaderClient returns an admin client for the leader, for a call this
// follower relays on a client's behalf. A relayed call is never relayed
// again: a node that lost leadership answers "not leader".
func (n *Node) leaderClient(ctx context.Context) (gwelbv1.AdminClient, error) {
	if isForwarded(ctx) {
		return nil, status.Error(codes.Unavailable, "not leader")
	}
	addr := n.grpcAddrOf(n.Leader())
	if addr == "" {
		return nil, errNoLeader(0)
	}
	c, err := n.peers.client(addr)
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	return c, nil
}

func isForwarded(ctx context.Context) bool {
	md, _ := metadata.FromIncomingContext(ctx)
	return len(md.Get(forwardedKey)) > 0
}

// adminServer implements the gwelb.v1.Admin service on a Node.
type adminServer struct {
	gwelbv1.UnimplementedAdminServer
	n *Node
}

// Status answers this node's view; asked by a client (not relayed), it
// sums the requests in flight per member over every live node, so an
// operator sees when a drained member is empty cluster-wide.
func (s *adminServer) Status(ctx context.Context, _ *gwelbv1.StatusRequest) (*gwelbv1.StatusResponse, error) {
	resp := s.n.Status()
	if !isForwarded(ctx) {
		s.n.sumInFlight(ctx, resp)
	}
	return resp, nil
}

// sumInFlight adds the in-flight counts of every other alive node that
// answers within a second.
func (n *Node) sumInFlight(ctx context.Context, resp *gwelbv1.StatusResponse) {
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
					}
				}
			}
		}()
	}
	wg.Wait()
	resp.InFlightFrom = append(resp.InFlightFrom, n.cfg.Name)
	sort.Strings(resp.InFlightFrom)
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

// poolStatus lists pools and members with verdicts, observations and this
// node's requests in flight.
func (n *Node) poolStatus() []*gwelbv1.PoolStatus {
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

func (s *adminServer) Join(ctx context.Context, req *gwelbv1.JoinRequest) (*gwelbv1.JoinResponse, error) {
	if len(req.GetAddrs()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "join: no addresses")
	}
	joined, err := s.n.Join(req.GetAddrs())
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	return &gwelbv1.JoinResponse{Joined: int32(joined)}, nil
}

func (s *adminServer) Leave(ctx context.Context, req *gwelbv1.LeaveRequest) (*gwelbv1.LeaveResponse, error) {
	n := s.n
	if req.GetNode() == "" || (req.GetNode() == n.cfg.Name && !isForwarded(ctx)) {
		// This node leaves: answer first, then go, so the caller hears back.
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*n.cfg.WriteTimeout)
			defer cancel()
			if err := n.leave(ctx); err != nil {
				n.log.Warn("leave", "err", err)
			}
			n.leftOnce.Do(func() { close(n.left) })
		}()
		return &gwelbv1.LeaveResponse{}, nil
	}
	if _, known := n.raftServer(req.GetNode()); !known {
		return nil, status.Errorf(codes.NotFound, "no node %q in the raft configuration", req.GetNode())
	}
	if err := n.removePeer(ctx, req.GetNode()); err != nil {
		if _, ok := status.FromError(err); ok {
			return nil, err
		}
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	return &gwelbv1.LeaveResponse{}, nil
}

// raftServer looks a node up in the Raft configuration.
func (n *Node) raftServer(name string) (raft.Server, bool) {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return raft.Server{}, false
	}
	for _, s := range f.Configuration().Servers {
		if string(s.ID) == name {
			return s, true
		}
	}
	return raft.Server{}, false
}

func (s *adminServer) PutMember(ctx context.Context, req *gwelbv1.PutMemberRequest) (*gwelbv1.WriteResponse, error) {
	m := req.GetMember()
	if m.GetPool() == "" || m.GetRoute() == "" || m.GetUrl() == "" {
		return nil, status.Error(codes.InvalidArgument, "put member: pool, route and url are required")
	}
	return s.write(ctx, req.GetRequestId(), &gwelbv1.Command{Op: &gwelbv1.Command_PutMember{PutMember: &gwelbv1.PutMember{Member: m}}})
}

func (s *adminServer) RemoveMember(ctx context.Context, req *gwelbv1.RemoveMemberRequest) (*gwelbv1.WriteResponse, error) {
	return s.write(ctx, req.GetRequestId(), &gwelbv1.Command{Op: &gwelbv1.Command_RemoveMember{RemoveMember: &gwelbv1.RemoveMember{Pool: req.GetPool(), Route: req.GetRoute()}}})
}

func (s *adminServer) SetMemberState(ctx context.Context, req *gwelbv1.SetMemberStateRequest) (*gwelbv1.WriteResponse, error) {
	return s.write(ctx, req.GetRequestId(), &gwelbv1.Command{Op: &gwelbv1.Command_SetMemberState{SetMemberState: &gwelbv1.SetMemberState{Pool: req.GetPool(), Route: req.GetRoute(), State: req.GetState()}}})
}

func (s *adminServer) write(ctx context.Context, requestID string, cmd *gwelbv1.Command) (*gwelbv1.WriteResponse, error) {
	cmd.RequestId = requestID
	index, err := s.n.apply(ctx, cmd)
	if err != nil {
		return nil, err
	}
	return &gwelbv1.WriteResponse{Index: index}, nil
}

func (s *adminServer) Apply(ctx context.Context, req *gwelbv1.ApplyRequest) (*gwelbv1.WriteResponse, error) {
	index, err := s.n.applyBytes(ctx, req.GetCommand(), isForwarded(ctx))
	if err != nil {
		return nil, err
	}
	return &gwelbv1.WriteResponse{Index: index}, nil
}

func (s *adminServer) Route(ctx context.Context, req *gwelbv1.RouteRequest) (*gwelbv1.RouteResponse, error) {
	t := s.n.fsm.Table()
	p := t.Pool(req.GetPool())
	if p == nil {
		return nil, status.Errorf(codes.NotFound, "no pool %q", req.GetPool())
	}
	resp := &gwelbv1.RouteResponse{Node: s.n.cfg.Name, TableIndex: t.Index(), Reason: "none"}
	value := req.GetValue()
	if !fsm.ValidSticky(value) {
		value = ""
	}
	route := fsm.RouteOf(value)
	i := p.Pick(value, route, 0, nil)
	if i < 0 {
		return resp, nil
	}
	m := p.Member(i)
	resp.Route, resp.Url = m.Route, m.URL
	switch {
	case m.Route == route:
		resp.Reason = "sticky"
	case value != "":
		resp.Reason = "fallback"
	default:
		resp.Reason = "round_robin"
	}
	return resp, nil
}

func (s *adminServer) Watch(_ *gwelbv1.WatchRequest, stream grpc.ServerStreamingServer[gwelbv1.WatchEvent]) error {
	ch, cancel := s.n.watchers.add()
	defer cancel()
	for {
		ev := &gwelbv1.WatchEvent{TableIndex: s.n.fsm.Table().Index(), Pools: s.n.poolStatus()}
		if err := stream.Send(ev); err != nil {
			return err
		}
		select {
		case <-stream.Context().Done():
			return nil
		case <-s.n.ctx.Done():
			return status.Error(codes.Unavailable, "node shutting down")
		case <-ch:
		}
	}
}

func (s *adminServer) TransferLeadership(ctx context.Context, req *gwelbv1.TransferLeadershipRequest) (*gwelbv1.TransferLeadershipResponse, error) {
	n := s.n
	if !n.IsLeader() {
		c, err := n.leaderClient(ctx)
		if err != nil {
			return nil, err
		}
		return c.TransferLeadership(n.peers.outgoing(ctx), req)
	}
	var f raft.Future
	if req.GetNode() != "" {
		srv, ok := n.raftServer(req.GetNode())
		if !ok {
			return nil, status.Errorf(codes.NotFound, "no node %q in the raft configuration", req.GetNode())
		}
		f = n.raft.LeadershipTransferToServer(srv.ID, srv.Address)
	} else {
		f = n.raft.LeadershipTransfer()
	}
	if err := f.Error(); err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "transfer leadership: %v", err)
	}
	// The future resolves when this node steps down, before the new leader's
	// first heartbeat names it: wait for the name rather than answer "".
	leader := n.Leader()
	deadline := time.Now().Add(n.cfg.WriteTimeout)
	for (leader == "" || leader == n.cfg.Name) && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		case <-time.After(10 * time.Millisecond):
		}
		leader = n.Leader()
	}
	return &gwelbv1.TransferLeadershipResponse{Leader: leader}, nil
}

// SnapshotSave streams the leader's state (forwarded when asked on a
// follower), after a barrier, so the snapshot holds every acknowledged write.
func (s *adminServer) SnapshotSave(req *gwelbv1.SnapshotSaveRequest, stream grpc.ServerStreamingServer[gwelbv1.SnapshotChunk]) error {
	n := s.n
	ctx := stream.Context()
	if !n.IsLeader() {
		c, err := n.leaderClient(ctx)
		if err != nil {
			return err
		}
		up, err := c.SnapshotSave(n.peers.outgoing(ctx), req)
		if err != nil {
			return err
		}
		for {
			chunk, err := up.Recv()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			if err := stream.Send(chunk); err != nil {
				return err
			}
		}
	}
	if err := n.raft.Barrier(n.cfg.WriteTimeout).Error(); err != nil {
		return status.Errorf(codes.Unavailable, "barrier: %v", err)
	}
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(n.fsm.State())
	if err != nil {
		return status.Errorf(codes.Internal, "marshal state: %v", err)
	}
	for len(data) > 0 {
		k := min(len(data), 64<<10)
		if err := stream.Send(&gwelbv1.SnapshotChunk{Data: data[:k]}); err != nil {
			return err
		}
		data = data[k:]
	}
	return nil
}

// SnapshotRestore installs a saved state through raft.Restore on the leader,
// which makes every follower install it too.
func (s *adminServer) SnapshotRestore(stream grpc.ClientStreamingServer[gwelbv1.SnapshotChunk, gwelbv1.SnapshotRestoreResponse]) error {
	n := s.n
	ctx := stream.Context()
	var buf bytes.Buffer
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if buf.Len()+len(chunk.GetData()) > maxSnapshotBytes {
			return status.Errorf(codes.InvalidArgument, "snapshot larger than %d bytes", maxSnapshotBytes)
		}
		buf.Write(chunk.GetData())
	}
	var st gwelbv1.State
	if err := proto.Unmarshal(buf.Bytes(), &st); err != nil {
		return status.Errorf(codes.InvalidArgument, "not a gwelb snapshot: %v", err)
	}
	if _, err := fsm.TableFromState(&st); err != nil {
		return status.Errorf(codes.InvalidArgument, "snapshot holds an invalid table: %v", err)
	}
	if !n.IsLeader() {
		c, err := n.leaderClient(ctx)
		if err != nil {
			return err
		}
		up, err := c.SnapshotRestore(n.peers.outgoing(ctx))
		if err != nil {
			return err
		}
		if err := up.Send(&gwelbv1.SnapshotChunk{Data: buf.Bytes()}); err != nil {
			return err
		}
		resp, err := up.CloseAndRecv()
		if err != nil {
			return err
		}
		return stream.SendAndClose(resp)
	}
	// The saved state carries the index it was saved at, older than the
	// tables the nodes route on now, and a node's data plane only moves to
	// newer tables: stamp the state with the index Raft installs it at
	// (meta.Index+1), so every proxy switches to the restored table.
	st.Index = max(st.GetIndex(), n.raft.LastIndex()+1)
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(&st)
	if err != nil {
		return status.Errorf(codes.Internal, "marshal state: %v", err)
	}
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Index: st.Index - 1, Size: int64(len(data))}
	if err := n.raft.Restore(meta, bytes.NewReader(data), n.cfg.WriteTimeout); err != nil {
		return status.Errorf(codes.Unavailable, "restore: %v", err)
	}
	return stream.SendAndClose(&gwelbv1.SnapshotRestoreResponse{Index: n.raft.AppliedIndex()})
}
