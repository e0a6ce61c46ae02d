package cluster

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/gwelb/gwelb/fsm"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

func (n *Node) startGRPC() error {
	var opts []grpc.ServerOption
	if n.tls != nil {
		// The node certificate serves operators and peers alike; a client
		// certificate is verified if given (peers, operators with one),
		// and authorize decides what the verified identity may do.
		opts = append(opts, grpc.Creds(credentials.NewTLS(n.tls.admin)))
	}
	if n.cfg.Token != "" || n.cfg.ReadToken != "" || n.tls != nil {
		opts = append(opts, grpc.ChainUnaryInterceptor(n.authUnary), grpc.ChainStreamInterceptor(n.authStream))
	}
	// After authorization: the audit log of the writes no leader decides
	// (audit.go).
	opts = append(opts, grpc.ChainUnaryInterceptor(n.auditUnary))
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

// readOnlyMethods are the admin RPCs the read-only operator token
// (read_token) may call: they show the cluster and its routing and change
// nothing (DESIGN.md §4). `gwelbctl member list` and `raft peers` are
// Status. It is an allowlist, so an RPC added later is read-write until
// someone decides otherwise. Left out on purpose: SnapshotSave (the whole
// state in restorable form, a bulk export that is half of a restore),
// KeyringList (it shows the gossip keys), CatchUp and Apply (node to node).
var readOnlyMethods = map[string]bool{
	gwelbv1.Admin_Status_FullMethodName: true,
	gwelbv1.Admin_Route_FullMethodName:  true,
	gwelbv1.Admin_Watch_FullMethodName:  true,
}

// authorize decides whether the caller of method may call it (DESIGN.md §4):
//
//   - a node: the TLS peer proved a node certificate of the cluster CA
//     (pki.PeerNodeName; in server_names if set): every method. Nodes never
//     send the operator token; relayed calls are authorised this way.
//   - an operator with a client certificate of the CA (pki.ClientDomain):
//     read-write, every method but the node-only ones.
//   - a bearer token, compared in constant time: the read-write token
//     every method but the node-only ones (with node TLS on; without TLS
//     nodes forward with the token, so it may call them too), the
//     read-only token readOnlyMethods (PermissionDenied otherwise);
//   - anything else: Unauthenticated.
//
// It runs only when a token or TLS is configured; a -dev node without
// either admits every call.
func (n *Node) authorize(ctx context.Context, method string) error {
	who, name := n.caller(ctx)
	if who == callerNode {
		if err := n.tls.allow(name); err != nil {
			return status.Errorf(codes.PermissionDenied, "%v", err)
		}
		return nil
	}
	if n.tls != nil && nodeOnlyMethods[method] {
		return status.Errorf(codes.PermissionDenied, "%s is for nodes, which call it with their node certificate", strings.TrimPrefix(method, "/gwelb.v1.Admin/"))
	}
	if who == callerOperatorCert {
		return nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		tok, ok := strings.CutPrefix(v, "Bearer ")
		if !ok {
			continue
		}
		if tokenEqual(tok, n.cfg.Token) {
			return nil
		}
		if tokenEqual(tok, n.cfg.ReadToken) {
			if readOnlyMethods[method] {
				return nil
			}
			return status.Errorf(codes.PermissionDenied, "%s needs the read-write token; the read-only token may call Status, Route and Watch", strings.TrimPrefix(method, "/gwelb.v1.Admin/"))
		}
	}
	return status.Error(codes.Unauthenticated, "missing or wrong token")
}

// tokenEqual compares a presented token with a configured one in constant
// time; an unset token matches nothing.
func tokenEqual(got, want string) bool {
	return want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

func (n *Node) authUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := n.authorize(ctx, info.FullMethod); err != nil {
		n.auditRefused(ctx, info.FullMethod, err)
		return nil, err
	}
	return h(ctx, req)
}

func (n *Node) authStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := n.authorize(ss.Context(), info.FullMethod); err != nil {
		n.auditRefused(ss.Context(), info.FullMethod, err)
		return err
	}
	return h(srv, ss)
}

// leaderClient returns an admin client for the leader, for a call this
// follower relays on a client's behalf. A relayed call is never relayed
// again: a node that lost leadership answers "not leader".
func (n *Node) leaderClient(ctx context.Context) (gwelbv1.AdminClient, error) {
	if isForwarded(ctx) {
		return nil, errNotLeader()
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

func (s *adminServer) Join(ctx context.Context, req *gwelbv1.JoinRequest) (*gwelbv1.JoinResponse, error) {
	if len(req.GetAddrs()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "join: no addresses")
	}
	if req.GetNonVoter() {
		if err := s.n.becomeNonVoter(); err != nil {
			return nil, status.Error(codes.FailedPrecondition, "join --non-voter: "+err.Error())
		}
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
		err := status.Errorf(codes.NotFound, "no node %q in the raft configuration", req.GetNode())
		n.audit(ctx, "Leave", []any{"peer", req.GetNode(), "action", "remove raft peer"}, 0, err)
		return nil, err
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
	cmd := &gwelbv1.Command{Op: &gwelbv1.Command_PutMember{PutMember: &gwelbv1.PutMember{Member: m, Mode: req.GetMode()}}}
	if err := checkMember(m, req.GetMode()); err != nil {
		return nil, s.refuse(ctx, req.GetRequestId(), cmd, err)
	}
	return s.write(ctx, req.GetRequestId(), cmd)
}

func (s *adminServer) RemoveMember(ctx context.Context, req *gwelbv1.RemoveMemberRequest) (*gwelbv1.WriteResponse, error) {
	return s.write(ctx, req.GetRequestId(), &gwelbv1.Command{Op: &gwelbv1.Command_RemoveMember{RemoveMember: &gwelbv1.RemoveMember{Pool: req.GetPool(), Route: req.GetRoute()}}})
}

func (s *adminServer) SetMemberState(ctx context.Context, req *gwelbv1.SetMemberStateRequest) (*gwelbv1.WriteResponse, error) {
	cmd := &gwelbv1.Command{Op: &gwelbv1.Command_SetMemberState{SetMemberState: &gwelbv1.SetMemberState{Pool: req.GetPool(), Route: req.GetRoute(), State: req.GetState()}}}
	if st := req.GetState(); fsm.AdminStateFromProto(st).Proto() != st {
		return nil, s.refuse(ctx, req.GetRequestId(), cmd, status.Errorf(codes.InvalidArgument, "set member state %s/%s: state %d: want active, drain or disabled", req.GetPool(), req.GetRoute(), st))
	}
	return s.write(ctx, req.GetRequestId(), cmd)
}

// checkMember judges a member before it is proposed, with the validator
// the FSM and gwelbctl use, so a bad member costs no Raft entry and reads
// the same wherever it is caught. An update may leave the URL out (the
// member keeps its own, which the FSM fills in and judges again).
func checkMember(m *gwelbv1.Member, mode gwelbv1.PutMemberMode) error {
	if m.GetPool() == "" {
		return status.Error(codes.InvalidArgument, "put member: pool is required")
	}
	if _, known := gwelbv1.PutMemberMode_name[int32(mode)]; !known {
		return status.Errorf(codes.InvalidArgument, "put member %s/%s: mode %d: want upsert, create or update", m.GetPool(), m.GetRoute(), mode)
	}
	err := fsm.ValidateMember(fsm.MemberFromProto(m))
	var probs fsm.Problems
	if mode == gwelbv1.PutMemberMode_PUT_MEMBER_MODE_UPDATE && m.GetUrl() == "" && errors.As(err, &probs) {
		probs = slices.DeleteFunc(probs, func(p *fsm.FieldError) bool { return p.Path == "url" })
		err = probs.Err()
	}
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "put member %s/%s: %s", m.GetPool(), m.GetRoute(), strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	return nil
}

// refuse answers err for a write this node refuses before proposing it,
// and logs it: no leader sees it (DESIGN.md §4.3).
func (s *adminServer) refuse(ctx context.Context, requestID string, cmd *gwelbv1.Command, err error) error {
	cmd.RequestId = requestID
	if rpc, args, ok := commandAudit(cmd); ok {
		s.n.audit(ctx, rpc, args, 0, err)
	}
	return err
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
	// The choice the data plane would make here, local quarantine included.
	skip, quarantined := s.n.localQuarantine(p)
	resp := &gwelbv1.RouteResponse{Node: s.n.cfg.Name, TableIndex: t.Index(), Reason: "none", Quarantined: quarantined}
	value := req.GetValue()
	if !fsm.ValidSticky(value) {
		value = ""
	}
	route := fsm.RouteOf(value)
	i := p.Pick(value, route, 0, skip)
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
			n.audit(ctx, "TransferLeadership", []any{"to", req.GetNode()}, 0, err)
			return nil, err
		}
		return c.TransferLeadership(n.relayContext(ctx), req)
	}
	resp, err := s.transferLeadership(ctx, req)
	// The leader decided: it logs the transfer (DESIGN.md §4.3).
	n.audit(ctx, "TransferLeadership", []any{"to", req.GetNode(), "new_leader", resp.GetLeader()}, 0, err)
	return resp, err
}

// transferLeadership hands leadership over, on the leader.
func (s *adminServer) transferLeadership(ctx context.Context, req *gwelbv1.TransferLeadershipRequest) (*gwelbv1.TransferLeadershipResponse, error) {
	n := s.n
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
	if err := awaitRaft(ctx, f); err != nil {
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
