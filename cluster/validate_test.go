package cluster_test

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/gwelb/gwelb/cluster/clustertest"
	"github.com/gwelb/gwelb/internal/snapstream"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// TestRetriedWriteAnswersFirstOutcome: a client whose RemoveMember was
// applied but whose answer was lost sends it again with the same request
// id; over real nodes, through a follower, it is told what the first
// attempt was told (applied, at the same index), not "not found"
// (DESIGN.md §5.3).
func TestRetriedWriteAnswersFirstOutcome(t *testing.T) {
	c := clustertest.New(t, 3)
	leader := c.WaitLeader()
	follower := c.Followers()[0]
	client, ctx := c.Admin(follower)

	req := &gwelbv1.RemoveMemberRequest{Pool: "backend", Route: "3", RequestId: "retry-test-1"}
	first, err := client.RemoveMember(ctx, req)
	if err != nil {
		t.Fatalf("first remove: %v", err)
	}
	// The retry may reach another node: the outcome is replicated.
	lclient, lctx := c.Admin(leader)
	again, err := lclient.RemoveMember(lctx, req)
	if err != nil {
		t.Fatalf("retried remove: %v (want the first outcome, not an error)", err)
	}
	if again.GetIndex() != first.GetIndex() {
		t.Errorf("retry answered index %d, first attempt %d", again.GetIndex(), first.GetIndex())
	}
	// A new request (another id) for the same member is a new question.
	req.RequestId = "retry-test-2"
	if _, err := client.RemoveMember(ctx, req); status.Code(err) != codes.NotFound {
		t.Errorf("new remove of a removed member: %v, want NotFound", err)
	}
}

// TestInvalidInputRefusedByCluster: what the validator rejects is refused
// at the admin API of any node, with the field named, and nothing is
// applied: PutMember and snapshot restore.
func TestInvalidInputRefusedByCluster(t *testing.T) {
	c := clustertest.New(t, 3)
	leader := c.WaitLeader()
	before := leader.Node.Table().Index()

	for _, tn := range []*clustertest.Node{leader, c.Followers()[0]} {
		client, ctx := c.Admin(tn)
		for _, tc := range []struct {
			m    *gwelbv1.Member
			want string
		}{
			{&gwelbv1.Member{Pool: "backend", Route: "9", Url: "ftp://127.0.0.1:1"}, `put member backend/9: url "ftp://127.0.0.1:1": want http://host:port or https://host:port`},
			{&gwelbv1.Member{Pool: "backend", Route: "9 9", Url: "http://127.0.0.1:1"}, `put member backend/9 9: route "9 9": want 1 to 256 visible ASCII characters`},
			{&gwelbv1.Member{Pool: "backend", Route: "9", Url: "http://127.0.0.1:1", Weight: 5000}, `put member backend/9: weight 5000: want 1..1000`},
			{&gwelbv1.Member{Pool: "backend", Route: "9", Url: "http://127.0.0.1:1", State: 7}, `put member backend/9: state 255: want active, drain or disabled`},
		} {
			_, err := client.PutMember(ctx, &gwelbv1.PutMemberRequest{Member: tc.m})
			if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), tc.want) {
				t.Errorf("%s: PutMember(%v) = %v, want InvalidArgument %q", tn.Cfg.Name, tc.m, err, tc.want)
			}
		}

		// A snapshot whose pool the cluster cannot route.
		bad := &gwelbv1.State{Seeded: true, Pools: []*gwelbv1.Pool{{Name: "x", Prefix: "/x", Cookie: "R", Health: &gwelbv1.HealthCheck{Path: "about"}}}}
		data, _ := proto.Marshal(bad)
		up, err := client.SnapshotRestore(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_ = snapstream.Send(data, up.Send)
		_, err = up.CloseAndRecv()
		want := `snapshot refused, nothing restored: state at index 0: pools[0] "x": health.path "about": must start with /`
		if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument || st.Message() != want {
			t.Errorf("%s: SnapshotRestore = %v, want InvalidArgument %q", tn.Cfg.Name, err, want)
		}
	}
	for _, tn := range c.Live() {
		if got := tn.Node.Table().Index(); got != before || tn.Node.Table().Pool("x") != nil {
			t.Errorf("%s: table moved from index %d to %d after refused input", tn.Cfg.Name, before, got)
		}
	}
}
