package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/gwelb/gwelb/fsm"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// The audit log (DESIGN.md §4.3): every admin write is logged once, as a
// slog record with the fixed message "audit", by the node that decides its
// outcome: the leader for what goes through Raft (member and pool writes,
// snapshot restore, raft peer removal, leadership transfer), the node
// addressed for what only concerns that node or the nodes it fans out to
// (join, its own leave, keyring changes), and the node addressed for a
// write it refuses before any leader sees it (bad request, no leader,
// permission). Fields:
//
//	who     the original caller: "token", "read_token", "client:<name>"
//	        (operator client certificate), "node:<name>" (a node acting on
//	        its own), "anonymous" (-dev without a token), "unauthenticated"
//	via     the node that relayed the call to the leader, if any
//	rpc     the admin RPC (PutMember, RemovePool, SnapshotRestore, ...)
//	...     its arguments (pool, route, url, ...; peer for Leave, to for
//	        TransferLeadership); never a key or a token
//	node    the node that logs (every record of a node has it)
//	outcome "ok" with index (the Raft index, where there is one), or
//	        "error" with code (the gRPC code) and error

// callerKey is the metadata a node puts on a call it relays on a client's
// behalf: the identity of that client, as the relaying node verified it.
// Only a caller with a verified node certificate is believed (identity), so
// an operator cannot claim to be someone else by setting it.
const callerKey = "x-gwelb-caller"

// maxCallerLen bounds a relayed identity in the log.
const maxCallerLen = 256

// identity tells who is calling, for the audit log: the verified identity
// of the caller, or, for a call a node relays with node TLS, the original
// caller that node names (via is then the relaying node). Without node TLS
// nodes relay with the operator token and cannot be told from an operator,
// so nothing they claim is believed: the caller is "token".
func (n *Node) identity(ctx context.Context) (who, via string) {
	if _, ok := peer.FromContext(ctx); !ok {
		return "node:" + n.cfg.Name, "" // not a call: this node acts on its own
	}
	kind, name := n.caller(ctx)
	md, _ := metadata.FromIncomingContext(ctx)
	switch kind {
	case callerNode:
		if v := md.Get(callerKey); len(v) > 0 && v[0] != "" {
			return clipIdentity(v[0]), name
		}
		return "node:" + name, ""
	case callerOperatorCert:
		return "client:" + name, ""
	}
	for _, v := range md.Get("authorization") {
		tok, ok := strings.CutPrefix(v, "Bearer ")
		if !ok {
			continue
		}
		if tokenEqual(tok, n.cfg.Token) {
			return "token", ""
		}
		if tokenEqual(tok, n.cfg.ReadToken) {
			return "read_token", ""
		}
	}
	if n.cfg.Token == "" && n.cfg.ReadToken == "" && n.tls == nil {
		return "anonymous", "" // -dev: the admin API has no authentication
	}
	return "unauthenticated", ""
}

func clipIdentity(s string) string {
	if len(s) > maxCallerLen {
		s = s[:maxCallerLen]
	}
	return s
}

// relayContext is the outgoing context of a call this node relays to the
// leader on a client's behalf: the forwarded mark (and the token without
// TLS, peerClients.outgoing) plus the client's identity, so the leader's
// audit line names the client and not this node.
func (n *Node) relayContext(ctx context.Context) context.Context {
	out := n.peers.outgoing(ctx)
	if _, ok := peer.FromContext(ctx); !ok {
		return out // this node's own call: the leader sees its certificate
	}
	who, _ := n.identity(ctx)
	return metadata.AppendToOutgoingContext(out, callerKey, who)
}

// audit writes one audit record for rpc with its arguments and outcome
// (index, or err).
func (n *Node) audit(ctx context.Context, rpc string, args []any, index uint64, err error) {
	who, via := n.identity(ctx)
	attrs := make([]any, 0, 6+len(args)+6)
	attrs = append(attrs, "who", who)
	if via != "" {
		attrs = append(attrs, "via", via)
	}
	attrs = append(attrs, "rpc", rpc)
	attrs = append(attrs, args...)
	if err != nil {
		st := status.Convert(err)
		attrs = append(attrs, "outcome", "error", "code", st.Code().String(), "error", st.Message())
	} else {
		attrs = append(attrs, "outcome", "ok")
		if index != 0 {
			attrs = append(attrs, "index", index)
		}
	}
	n.log.Info("audit", attrs...)
}

// auditCommand writes the audit record of an encoded command this node
// decided (applied as the leader, or refused); commands the nodes propose
// themselves (observations, balancers, the seed) are not admin writes and
// are not logged.
func (n *Node) auditCommand(ctx context.Context, data []byte, index uint64, err error) {
	var cmd gwelbv1.Command
	if proto.Unmarshal(data, &cmd) != nil {
		return
	}
	if rpc, args, ok := commandAudit(&cmd); ok {
		n.audit(ctx, rpc, args, index, err)
	}
}

// commandAudit names the admin RPC of a command and its arguments.
func commandAudit(cmd *gwelbv1.Command) (rpc string, args []any, ok bool) {
	rid := func(args ...any) []any {
		if id := cmd.GetRequestId(); id != "" {
			args = append(args, "request_id", id)
		}
		return args
	}
	switch op := cmd.GetOp().(type) {
	case *gwelbv1.Command_PutMember:
		m := op.PutMember.GetMember()
		return "PutMember", rid("pool", m.GetPool(), "route", m.GetRoute(), "url", m.GetUrl(), "weight", m.GetWeight(),
			"state", fsm.AdminStateFromProto(m.GetState()).String(), "mode", putModeName(op.PutMember.GetMode())), true
	case *gwelbv1.Command_RemoveMember:
		return "RemoveMember", rid("pool", op.RemoveMember.GetPool(), "route", op.RemoveMember.GetRoute()), true
	case *gwelbv1.Command_SetMemberState:
		s := op.SetMemberState
		return "SetMemberState", rid("pool", s.GetPool(), "route", s.GetRoute(), "state", fsm.AdminStateFromProto(s.GetState()).String()), true
	case *gwelbv1.Command_PutPool:
		p := op.PutPool.GetPool()
		return "PutPool", rid("pool", p.GetName(), "settings", compactJSON(p)), true
	case *gwelbv1.Command_RemovePool:
		return "RemovePool", rid("pool", op.RemovePool.GetName()), true
	}
	return "", nil, false
}

// putModeName is "upsert", "create" or "update".
func putModeName(m gwelbv1.PutMemberMode) string {
	return strings.ToLower(strings.TrimPrefix(m.String(), "PUT_MEMBER_MODE_"))
}

// compactJSON is m as one line of JSON (proto field names) for a log field.
func compactJSON(m proto.Message) string {
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(string(b)), " ")
}

// keyFingerprint names a gossip key in the log without revealing it: the
// first 8 bytes of its SHA-256, in hex.
func keyFingerprint(b64 string) string {
	if b64 == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(b64))
	return hex.EncodeToString(sum[:8])
}

// auditUnary logs the admin writes that only concern the node addressed
// (or the nodes it fans out to), which no leader decides: Join, a node's
// own Leave and Keyring changes. It runs after authorization, on every
// node, -dev included.
func (n *Node) auditUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	resp, err := h(ctx, req)
	switch r := req.(type) {
	case *gwelbv1.JoinRequest:
		var joined int32
		if jr, ok := resp.(*gwelbv1.JoinResponse); ok {
			joined = jr.GetJoined()
		}
		n.audit(ctx, "Join", []any{"addrs", strings.Join(r.GetAddrs(), ","), "joined", joined}, 0, err)
	case *gwelbv1.LeaveRequest:
		if r.GetNode() == "" || (r.GetNode() == n.cfg.Name && !isForwarded(ctx)) {
			n.audit(ctx, "Leave", []any{"peer", n.cfg.Name}, 0, err)
		}
	case *gwelbv1.KeyringRequest:
		if r.GetLocalOnly() || r.GetOp() == gwelbv1.KeyringOp_KEYRING_OP_LIST {
			break
		}
		args := []any{"op", strings.ToLower(strings.TrimPrefix(r.GetOp().String(), "KEYRING_OP_")), "key_sha256", keyFingerprint(r.GetKey())}
		if kr, ok := resp.(*gwelbv1.KeyringResponse); ok {
			var applied, failed []string
			for _, nr := range kr.GetNodes() {
				if nr.GetError() != "" {
					failed = append(failed, nr.GetNode())
				} else {
					applied = append(applied, nr.GetNode())
				}
			}
			args = append(args, "applied_on", strings.Join(applied, ","), "failed_on", strings.Join(failed, ","))
		}
		n.audit(ctx, "Keyring", args, 0, err)
	}
	return resp, err
}

// readMethods are the admin RPCs that change nothing: refusing them is
// not an audit event. Every other RPC is a write (an RPC added later is
// audited when refused until someone lists it here).
var readMethods = map[string]bool{
	gwelbv1.Admin_Status_FullMethodName:       true,
	gwelbv1.Admin_Route_FullMethodName:        true,
	gwelbv1.Admin_Watch_FullMethodName:        true,
	gwelbv1.Admin_SnapshotSave_FullMethodName: true,
	gwelbv1.Admin_CatchUp_FullMethodName:      true,
}

// auditRefused logs a call authorize refused, when it was a write: who
// tried what.
func (n *Node) auditRefused(ctx context.Context, method string, err error) {
	if readMethods[method] {
		return
	}
	n.audit(ctx, strings.TrimPrefix(method, "/gwelb.v1.Admin/"), nil, 0, err)
}

// auditRestore logs a SnapshotRestore: the snapshot's size, and its pools,
// members and state index when it decoded.
func (n *Node) auditRestore(ctx context.Context, raw []byte, st *gwelbv1.State, index uint64, err error) {
	args := []any{"bytes", len(raw)}
	if st != nil {
		args = append(args, "pools", len(st.GetPools()), "members", len(st.GetMembers()), "state_index", st.GetIndex())
	}
	n.audit(ctx, "SnapshotRestore", args, index, err)
}
