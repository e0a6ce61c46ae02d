package cluster_test

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/gwelb/gwelb/cluster"
	"github.com/gwelb/gwelb/cluster/clustertest"
	"github.com/gwelb/gwelb/internal/rpcerr"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// TestLeaderStatusesOverTheWire: the statuses about the leader reach a
// client over real gRPC with their reason, so gwelbctl need not read the
// message; and a follower relaying to the leader returns the leader's
// status as is.
func TestLeaderStatusesOverTheWire(t *testing.T) {
	c := clustertest.New(t, 3)
	f := c.Followers()[0]
	cl, ctx := c.Admin(f)

	// A call relayed to a node that is not the leader (leadership moved
	// on the way) is answered "not leader", with the reason.
	relayed := metadata.AppendToOutgoingContext(ctx, cluster.ForwardedKey, "1")
	_, err := cl.TransferLeadership(relayed, &gwelbv1.TransferLeadershipRequest{})
	if !rpcerr.IsNoLeader(err) {
		t.Errorf("relayed call to a follower: %v, want Unavailable with the reason NO_LEADER", err)
	}

	// The follower relays this to the leader, which refuses it.
	_, err = cl.TransferLeadership(ctx, &gwelbv1.TransferLeadershipRequest{Node: "no-such-node"})
	if status.Code(err) != codes.NotFound || rpcerr.IsNoLeader(err) {
		t.Errorf("transfer to an unknown node through a follower: %v, want the leader's NotFound", err)
	}
}
