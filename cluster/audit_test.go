package cluster_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/gwelb/gwelb/cluster"
	"github.com/gwelb/gwelb/cluster/clustertest"
	"github.com/gwelb/gwelb/fsm"
	"github.com/gwelb/gwelb/internal/pki"
	"github.com/gwelb/gwelb/internal/snapstream"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// auditRecorder keeps the "audit" records of every node of a cluster, each
// as its attributes (node included), every record's text, to look for
// secrets, and every record's level, message and attributes (all).
type auditRecorder struct {
	mu      sync.Mutex
	records []map[string]string
	text    strings.Builder
	all     []loggedRecord
}

// loggedRecord is one record an auditRecorder received.
type loggedRecord struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

type auditHandler struct {
	r     *auditRecorder
	attrs []slog.Attr
}

func (h auditHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h auditHandler) Handle(_ context.Context, rec slog.Record) error {
	m := map[string]string{}
	for _, a := range h.attrs {
		m[a.Key] = a.Value.String()
	}
	rec.Attrs(func(a slog.Attr) bool {
		m[a.Key] = a.Value.String()
		return true
	})
	h.r.mu.Lock()
	defer h.r.mu.Unlock()
	fmt.Fprintf(&h.r.text, "%s %v\n", rec.Message, m)
	h.r.all = append(h.r.all, loggedRecord{level: rec.Level, msg: rec.Message, attrs: m})
	if rec.Message == "audit" {
		h.r.records = append(h.r.records, m)
	}
	return nil
}

func (h auditHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return auditHandler{r: h.r, attrs: append(append([]slog.Attr(nil), h.attrs...), as...)}
}

func (h auditHandler) WithGroup(string) slog.Handler { return h }

// option makes every node log to the recorder.
func (r *auditRecorder) option(_ int, cfg *cluster.Config) {
	cfg.Logger = slog.New(auditHandler{r: r})
}

// logged returns the records with message msg whose attributes include
// every pair of kv.
func (r *auditRecorder) logged(msg string, kv ...string) []loggedRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []loggedRecord
next:
	for _, rec := range r.all {
		if rec.msg != msg {
			continue
		}
		for i := 0; i+1 < len(kv); i += 2 {
			if rec.attrs[kv[i]] != kv[i+1] {
				continue next
			}
		}
		out = append(out, rec)
	}
	return out
}

// find returns the audit records whose attributes include every pair of kv.
func (r *auditRecorder) find(kv ...string) []map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []map[string]string
next:
	for _, m := range r.records {
		for i := 0; i+1 < len(kv); i += 2 {
			if m[kv[i]] != kv[i+1] {
				continue next
			}
		}
		out = append(out, m)
	}
	return out
}

// one wants exactly one audit record with kv and returns it.
func (r *auditRecorder) one(t *testing.T, what string, kv ...string) map[string]string {
	t.Helper()
	got := r.find(kv...)
	if len(got) != 1 {
		t.Fatalf("%s: %d audit records with %q, want 1: %v", what, len(got), kv, got)
	}
	return got[0]
}

// want checks the listed attributes of a record.
func want(t *testing.T, what string, rec map[string]string, kv ...string) {
	t.Helper()
	for i := 0; i+1 < len(kv); i += 2 {
		if rec[kv[i]] != kv[i+1] {
			t.Errorf("%s: audit %s = %q, want %q (record %v)", what, kv[i], rec[kv[i]], kv[i+1], rec)
		}
	}
}

// TestAuditLog: every admin write is logged once, on the node that decided
// it (the leader for what goes through Raft), naming the original caller —
// token, read-only token, or client certificate — and the follower that
// relayed it, with its arguments and outcome (DESIGN.md §4.3).
func TestAuditLog(t *testing.T) {
	rec := &auditRecorder{}
	c := clustertest.New(t, 3, rec.option, func(_ int, cfg *cluster.Config) { cfg.ReadToken = readToken })
	leader := c.WaitLeader()
	f := c.Followers()[0]
	url := c.GWE["1"].URL

	tokCl, tokCtx := c.Admin(f)
	ca := c.PKI().CAFile()
	cert, key := c.PKI().Client("alice")
	op, err := pki.OperatorClientConfig(ca, cert, key, "")
	if err != nil {
		t.Fatal(err)
	}
	alice, aliceCtx := adminClient(t, f, op, "")

	t.Run("write through a follower, token", func(t *testing.T) {
		resp, err := tokCl.PutMember(tokCtx, &gwelbv1.PutMemberRequest{Member: &gwelbv1.Member{Pool: "backend", Route: "a1", Url: url, Weight: 2}, RequestId: "req-a1"})
		if err != nil {
			t.Fatal(err)
		}
		r := rec.one(t, "PutMember", "rpc", "PutMember", "route", "a1")
		want(t, "PutMember", r, "node", leader.Cfg.Name, "who", "token", "via", f.Cfg.Name, "pool", "backend",
			"url", url, "weight", "2", "state", "active", "request_id", "req-a1", "outcome", "ok", "index", fmt.Sprint(resp.GetIndex()))
	})

	t.Run("write through a follower, client certificate", func(t *testing.T) {
		if _, err := alice.SetMemberState(aliceCtx, &gwelbv1.SetMemberStateRequest{Pool: "backend", Route: "a1", State: gwelbv1.AdminState_ADMIN_STATE_DRAIN}); err != nil {
			t.Fatal(err)
		}
		r := rec.one(t, "SetMemberState", "rpc", "SetMemberState", "route", "a1")
		want(t, "SetMemberState", r, "node", leader.Cfg.Name, "who", "client:alice", "via", f.Cfg.Name, "state", "drain", "outcome", "ok")
	})

	t.Run("refused by the FSM", func(t *testing.T) {
		_, err := tokCl.RemoveMember(tokCtx, &gwelbv1.RemoveMemberRequest{Pool: "backend", Route: "nope"})
		if status.Code(err) != codes.NotFound {
			t.Fatalf("remove unknown member: %v", err)
		}
		r := rec.one(t, "RemoveMember", "rpc", "RemoveMember", "route", "nope")
		want(t, "RemoveMember", r, "node", leader.Cfg.Name, "who", "token", "via", f.Cfg.Name, "outcome", "error", "code", "NotFound")
	})

	t.Run("refused before proposing", func(t *testing.T) {
		_, err := tokCl.PutMember(tokCtx, &gwelbv1.PutMemberRequest{Member: &gwelbv1.Member{Pool: "backend", Route: "bad", Url: "ftp://x", Weight: 1}})
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("put bad member: %v", err)
		}
		r := rec.one(t, "bad PutMember", "rpc", "PutMember", "route", "bad")
		want(t, "bad PutMember", r, "node", f.Cfg.Name, "who", "token", "outcome", "error", "code", "InvalidArgument")
	})

	t.Run("read-only token", func(t *testing.T) {
		ro, ctx := c.AdminWithToken(f, readToken)
		if _, err := ro.RemoveMember(ctx, &gwelbv1.RemoveMemberRequest{Pool: "backend", Route: "a1"}); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("remove with the read-only token: %v", err)
		}
		r := rec.one(t, "denied RemoveMember", "rpc", "RemoveMember", "who", "read_token")
		want(t, "denied RemoveMember", r, "node", f.Cfg.Name, "outcome", "error", "code", "PermissionDenied")
		if _, err := ro.Status(ctx, &gwelbv1.StatusRequest{}); err != nil {
			t.Fatal(err)
		}
		if got := rec.find("rpc", "Status"); len(got) != 0 {
			t.Errorf("reads are not audited: %v", got)
		}
	})

	t.Run("pool", func(t *testing.T) {
		spec := leader.Node.PoolSpecs()[0]
		spec.FailTimeout = new(fsm.DefaultFailTimeout * 2)
		if _, err := tokCl.PutPool(tokCtx, &gwelbv1.PutPoolRequest{Pool: fsm.PoolToProto(spec)}); err != nil {
			t.Fatal(err)
		}
		r := rec.one(t, "PutPool", "rpc", "PutPool")
		want(t, "PutPool", r, "node", leader.Cfg.Name, "who", "token", "via", f.Cfg.Name, "pool", "backend", "outcome", "ok")
		if !strings.Contains(r["settings"], `"fail_timeout_ms":"20000"`) {
			t.Errorf("PutPool settings %q do not show fail_timeout", r["settings"])
		}
	})

	t.Run("keyring, on the node that fans out, without the key", func(t *testing.T) {
		k := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
		if _, err := tokCl.Keyring(tokCtx, &gwelbv1.KeyringRequest{Op: gwelbv1.KeyringOp_KEYRING_OP_INSTALL, Key: k}); err != nil {
			t.Fatal(err)
		}
		r := rec.one(t, "Keyring", "rpc", "Keyring")
		want(t, "Keyring", r, "node", f.Cfg.Name, "who", "token", "op", "install", "outcome", "ok", "failed_on", "")
		if len(r["key_sha256"]) != 16 {
			t.Errorf("key fingerprint %q", r["key_sha256"])
		}
		rec.mu.Lock()
		leaked := strings.Contains(rec.text.String(), k)
		rec.mu.Unlock()
		if leaked {
			t.Error("a gossip key is in the log")
		}
	})

	t.Run("snapshot restore through a follower", func(t *testing.T) {
		save, err := alice.SnapshotSave(aliceCtx, &gwelbv1.SnapshotSaveRequest{})
		if err != nil {
			t.Fatal(err)
		}
		data, err := snapstream.Receive(save.Recv, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		up, err := alice.SnapshotRestore(aliceCtx)
		if err != nil {
			t.Fatal(err)
		}
		_ = snapstream.Send(data, up.Send)
		resp, err := up.CloseAndRecv()
		if err != nil {
			t.Fatal(err)
		}
		r := rec.one(t, "SnapshotRestore", "rpc", "SnapshotRestore")
		want(t, "SnapshotRestore", r, "node", c.WaitLeader().Cfg.Name, "who", "client:alice", "via", f.Cfg.Name, "outcome", "ok", "index", fmt.Sprint(resp.GetIndex()))
	})

	t.Run("transfer leadership through a follower", func(t *testing.T) {
		old := c.WaitLeader()
		fs := c.Followers()
		cl, ctx := c.Admin(fs[0])
		if _, err := cl.TransferLeadership(ctx, &gwelbv1.TransferLeadershipRequest{}); err != nil {
			t.Fatal(err)
		}
		r := rec.one(t, "TransferLeadership", "rpc", "TransferLeadership")
		want(t, "TransferLeadership", r, "node", old.Cfg.Name, "who", "token", "via", fs[0].Cfg.Name, "outcome", "ok")
	})

	t.Run("force-remove a failed node through a follower", func(t *testing.T) {
		leader := c.WaitLeader()
		fs := c.Followers()
		victim, via := fs[1], fs[0]
		c.Kill(victim)
		cl, ctx := c.Admin(via)
		if _, err := cl.Leave(ctx, &gwelbv1.LeaveRequest{Node: victim.Cfg.Name}); err != nil {
			t.Fatal(err)
		}
		r := rec.one(t, "Leave", "rpc", "Leave", "peer", victim.Cfg.Name)
		want(t, "Leave", r, "node", leader.Cfg.Name, "who", "token", "via", via.Cfg.Name, "action", "remove raft peer", "outcome", "ok")
	})
}

// TestAuditIdentityCannotBeForged attacks the relayed identity over real
// sockets: operators (token, client certificate) who set the metadata a
// node uses to name the caller it relays for (x-gwelb-caller) are logged
// as themselves, on a follower (which relays) and on the leader; calling
// the node-only Apply with it is refused and logged as the real caller.
func TestAuditIdentityCannotBeForged(t *testing.T) {
	rec := &auditRecorder{}
	c := clustertest.New(t, 3, rec.option)
	leader := c.WaitLeader()
	url := c.GWE["1"].URL
	cert, key := c.PKI().Client("mallory")
	op, err := pki.OperatorClientConfig(c.PKI().CAFile(), cert, key, "")
	if err != nil {
		t.Fatal(err)
	}
	const forged = "client:alice"
	for i, tn := range []*clustertest.Node{c.Followers()[0], leader} {
		route := fmt.Sprintf("forged-%d", i)
		// Mallory's certificate.
		cl, ctx := adminClient(t, tn, op, "")
		ctx = metadata.AppendToOutgoingContext(ctx, cluster.CallerKey, forged)
		if _, err := cl.PutMember(ctx, &gwelbv1.PutMemberRequest{Member: &gwelbv1.Member{Pool: "backend", Route: route + "c", Url: url, Weight: 1}}); err != nil {
			t.Fatalf("%s: PutMember: %v", tn.Cfg.Name, err)
		}
		// The token.
		tcl, tctx := c.Admin(tn)
		tctx = metadata.AppendToOutgoingContext(tctx, cluster.CallerKey, forged)
		if _, err := tcl.PutMember(tctx, &gwelbv1.PutMemberRequest{Member: &gwelbv1.Member{Pool: "backend", Route: route + "t", Url: url, Weight: 1}}); err != nil {
			t.Fatalf("%s: PutMember with the token: %v", tn.Cfg.Name, err)
		}
		// The raw node-to-node Apply.
		cmd, err := fsm.EncodeCommand(&gwelbv1.Command{Op: &gwelbv1.Command_RemoveMember{RemoveMember: &gwelbv1.RemoveMember{Pool: "backend", Route: "1"}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cl.Apply(ctx, &gwelbv1.ApplyRequest{Command: cmd}); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("%s: Apply with a client certificate: %v, want PermissionDenied", tn.Cfg.Name, err)
		}
		r := rec.one(t, "Apply", "rpc", "Apply", "node", tn.Cfg.Name)
		want(t, "Apply", r, "who", "client:mallory", "code", "PermissionDenied")
	}
	if got := rec.find("who", forged); len(got) != 0 {
		t.Errorf("the forged identity reached the audit log: %v", got)
	}
	for i := range 2 {
		for suffix, who := range map[string]string{"t": "token", "c": "client:mallory"} {
			route := fmt.Sprintf("forged-%d%s", i, suffix)
			r := rec.one(t, route, "rpc", "PutMember", "route", route)
			want(t, route, r, "who", who, "node", leader.Cfg.Name, "outcome", "ok")
		}
	}
}

// TestAuditWithoutNodeTLS: nodes without TLS (insecure: true) relay writes
// with the operator token, so the leader cannot tell a relaying node from
// an operator: it believes no relayed identity and logs the token, once.
func TestAuditWithoutNodeTLS(t *testing.T) {
	rec := &auditRecorder{}
	c := clustertest.New(t, 3, rec.option, clustertest.Insecure)
	leader := c.WaitLeader()
	f := c.Followers()[0]
	cl, ctx := c.Admin(f)
	ctx = metadata.AppendToOutgoingContext(ctx, cluster.CallerKey, "client:alice")
	if _, err := cl.PutMember(ctx, &gwelbv1.PutMemberRequest{Member: &gwelbv1.Member{Pool: "backend", Route: "plain", Url: c.GWE["1"].URL, Weight: 1}}); err != nil {
		t.Fatal(err)
	}
	r := rec.one(t, "PutMember", "rpc", "PutMember", "route", "plain")
	want(t, "PutMember", r, "node", leader.Cfg.Name, "who", "token", "via", "", "outcome", "ok")
}
