package cluster_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gwelb/gwelb/cluster"
	"github.com/gwelb/gwelb/cluster/clustertest"
	"github.com/gwelb/gwelb/fsm"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

const readToken = "read-only-token"

// The read-only token (read_token) may look at a real cluster but change
// nothing (DESIGN.md §4): every write, node-to-node and keyring RPC is
// refused with PermissionDenied on a follower and on the leader, and the
// state is the same afterwards.
func TestReadTokenReadsButCannotWrite(t *testing.T) {
	c := clustertest.New(t, 3, func(_ int, cfg *cluster.Config) { cfg.ReadToken = readToken })
	leader := c.WaitLeader()

	for _, tn := range []*clustertest.Node{c.Followers()[0], leader} {
		ro, ctx := c.AdminWithToken(tn, readToken)
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()

		// Allowed: Status (also member list and raft peers), Route, Watch.
		st, err := ro.Status(ctx, &gwelbv1.StatusRequest{})
		if err != nil || len(st.GetPeers()) != 3 {
			t.Fatalf("%s: status with the read-only token: %v (%d peers)", tn.Cfg.Name, err, len(st.GetPeers()))
		}
		if _, err := ro.Route(ctx, &gwelbv1.RouteRequest{Pool: "backend", Value: ".1"}); err != nil {
			t.Fatalf("%s: route with the read-only token: %v", tn.Cfg.Name, err)
		}
		w, err := ro.Watch(ctx, &gwelbv1.WatchRequest{})
		if err == nil {
			_, err = w.Recv()
		}
		if err != nil {
			t.Fatalf("%s: watch with the read-only token: %v", tn.Cfg.Name, err)
		}

		// Refused: everything else.
		member := &gwelbv1.Member{Pool: "backend", Route: "9", Url: c.GWE["1"].URL, Weight: 1}
		key := "AAAAAAAAAAAAAAAAAAAAAA=="
		denied := map[string]func() error{
			"PutMember": func() error {
				_, err := ro.PutMember(ctx, &gwelbv1.PutMemberRequest{Member: member})
				return err
			},
			"RemoveMember": func() error {
				_, err := ro.RemoveMember(ctx, &gwelbv1.RemoveMemberRequest{Pool: "backend", Route: "1"})
				return err
			},
			"SetMemberState (drain)": func() error {
				_, err := ro.SetMemberState(ctx, &gwelbv1.SetMemberStateRequest{Pool: "backend", Route: "1", State: gwelbv1.AdminState_ADMIN_STATE_DRAIN})
				return err
			},
			"TransferLeadership": func() error {
				_, err := ro.TransferLeadership(ctx, &gwelbv1.TransferLeadershipRequest{})
				return err
			},
			"Join": func() error {
				_, err := ro.Join(ctx, &gwelbv1.JoinRequest{Addrs: []string{c.Nodes[2].Cfg.GossipAddr}})
				return err
			},
			"Leave (itself)": func() error {
				_, err := ro.Leave(ctx, &gwelbv1.LeaveRequest{})
				return err
			},
			"Leave (another node)": func() error {
				_, err := ro.Leave(ctx, &gwelbv1.LeaveRequest{Node: "n3"})
				return err
			},
			"SnapshotSave": func() error {
				s, err := ro.SnapshotSave(ctx, &gwelbv1.SnapshotSaveRequest{})
				if err == nil {
					_, err = s.Recv()
				}
				return err
			},
			"SnapshotRestore": func() error {
				s, err := ro.SnapshotRestore(ctx)
				if err == nil {
					_ = s.Send(&gwelbv1.SnapshotChunk{Data: []byte("x")})
					_, err = s.CloseAndRecv()
				}
				return err
			},
			"Apply": func() error {
				_, err := ro.Apply(ctx, &gwelbv1.ApplyRequest{Command: []byte{1}})
				return err
			},
			"CatchUp": func() error {
				_, err := ro.CatchUp(ctx, &gwelbv1.CatchUpRequest{Node: "x"})
				return err
			},
			"Keyring list": func() error {
				_, err := ro.Keyring(ctx, &gwelbv1.KeyringRequest{Op: gwelbv1.KeyringOp_KEYRING_OP_LIST})
				return err
			},
			"Keyring install": func() error {
				_, err := ro.Keyring(ctx, &gwelbv1.KeyringRequest{Op: gwelbv1.KeyringOp_KEYRING_OP_INSTALL, Key: key})
				return err
			},
			"Keyring use": func() error {
				_, err := ro.Keyring(ctx, &gwelbv1.KeyringRequest{Op: gwelbv1.KeyringOp_KEYRING_OP_USE, Key: key})
				return err
			},
			"Keyring remove": func() error {
				_, err := ro.Keyring(ctx, &gwelbv1.KeyringRequest{Op: gwelbv1.KeyringOp_KEYRING_OP_REMOVE, Key: key})
				return err
			},
		}
		for name, call := range denied {
			if err := call(); status.Code(err) != codes.PermissionDenied {
				t.Errorf("%s: %s with the read-only token: %v, want PermissionDenied", tn.Cfg.Name, name, err)
			}
		}

		// A wrong token is not a read-only one.
		bad, bctx := c.AdminWithToken(tn, readToken+"x")
		if _, err := bad.Status(bctx, &gwelbv1.StatusRequest{}); status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s: status with a wrong token: %v, want Unauthenticated", tn.Cfg.Name, err)
		}
	}

	// Nothing changed: no node left, no leader moved, no write landed
	// (the table index itself may move: health observations are writes).
	if l := c.WaitLeader(); l != leader {
		t.Errorf("leader moved from %s to %s", leader.Cfg.Name, l.Cfg.Name)
	}
	for _, tn := range c.Live() {
		p := tn.Node.Table().Pool("backend")
		if _, ok := p.Lookup("9"); ok {
			t.Errorf("%s: member 9 was added", tn.Cfg.Name)
		}
		if i, ok := p.Lookup("1"); !ok || p.Member(i).State != fsm.Active {
			t.Errorf("%s: member 1 removed or drained", tn.Cfg.Name)
		}
		if n := len(tn.Node.Status().GetPeers()); n != 3 {
			t.Errorf("%s: %d Raft peers, want 3", tn.Cfg.Name, n)
		}
		if n := aliveInGossip(tn); n != 3 {
			t.Errorf("%s: %d nodes alive in gossip, want 3", tn.Cfg.Name, n)
		}
	}
	// The read-write token still writes.
	putMember(t, c, c.Followers()[0], "9", c.GWE["1"].URL)
}

// aliveInGossip counts the nodes tn's gossip lists alive, itself included.
func aliveInGossip(tn *clustertest.Node) int {
	n := 0
	for _, m := range tn.Node.Status().GetGossip() {
		if m.GetStatus() == "alive" {
			n++
		}
	}
	return n
}
