package proxy

import (
	"net/http"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/gwelb/gwelb/fsm"
	"github.com/gwelb/gwelb/internal/testnet"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// fsmLog applies commands to an FSM at increasing indexes, as Raft does.
type fsmLog struct {
	t     *testing.T
	f     *fsm.FSM
	index uint64
}

func (l *fsmLog) apply(c *gwelbv1.Command) *fsm.Table {
	l.t.Helper()
	data, err := fsm.EncodeCommand(c)
	if err != nil {
		l.t.Fatal(err)
	}
	l.index++
	if resp := l.f.Apply(&raft.Log{Index: l.index, Type: raft.LogCommand, Data: data}); resp != nil {
		l.t.Fatalf("apply: %v", resp)
	}
	return l.f.Table()
}

// TestUpdateCarriesOverSameLayout: tables from the FSM share the pools a
// command did not reshape (fsm.Pool.SameLayout), and Update keeps this
// node's state of their members by index instead of rebuilding it (DESIGN.md
// §5.2): a drain applies at once, a quarantined member stays quarantined
// (rule 8) and no request sees a half-built view; a member added later
// takes the full rebuild, which keeps the quarantine too.
func TestUpdateCarriesOverSameLayout(t *testing.T) {
	back := startMembers(t, "/backend", "1", "2", "3")
	spec := editMember(backendPool(back), "2", func(m *fsm.MemberSpec) { m.URL = "http://" + testnet.ClosedAddr(t) })
	log := &fsmLog{t: t, f: fsm.NewFSM(nil)}
	h := startProxy(t, log.apply(fsm.SeedCommand([]fsm.PoolSpec{spec})), Options{}, ListenerConfig{})

	if r := h.get(t, "/backend/x", "ROUTEID=.2"); r.status != http.StatusOK {
		t.Fatalf("got %v", r)
	}
	if got := h.obs.routes(); len(got) != 1 {
		t.Fatalf("observations %v, want member 2's refused connection", got)
	}
	before := h.srv.view.Load().pools[0]

	tbl := log.apply(&gwelbv1.Command{Op: &gwelbv1.Command_SetMemberState{SetMemberState: &gwelbv1.SetMemberState{
		Pool: "backend", Route: "3", State: gwelbv1.AdminState_ADMIN_STATE_DRAIN}}})
	h.srv.Update(tbl)
	after := h.srv.view.Load().pools[0]
	if after.pool != tbl.Pool("backend") || after == before || &after.members[0] != &before.members[0] {
		t.Fatalf("view of the drained pool: pool %p (table's %p), members carried over: %v", after.pool, tbl.Pool("backend"), &after.members[0] == &before.members[0])
	}
	for i := range 6 {
		r := h.get(t, "/backend/new-session")
		if r.status != http.StatusOK || r.server() == "3" {
			t.Fatalf("new session %d went to %q (%v): member 3 is draining", i, r.server(), r)
		}
	}
	wantServer(t, h.get(t, "/backend/x", "ROUTEID=.3"), "3") // a draining member keeps its sessions
	if r := h.get(t, "/backend/x", "ROUTEID=.2"); r.status != http.StatusOK {
		t.Fatalf("got %v", r)
	}
	if got := h.obs.routes(); len(got) != 1 {
		t.Errorf("observations %v: member 2's quarantine was lost when member 3 drained", got)
	}

	// A member added reshapes the pool: the view is built afresh.
	extra := startMembers(t, "/backend", "4")
	h.srv.Update(log.apply(&gwelbv1.Command{Op: &gwelbv1.Command_PutMember{PutMember: &gwelbv1.PutMember{
		Member: &gwelbv1.Member{Pool: "backend", Route: "4", Url: extra[0].ts.URL}}}}))
	wantServer(t, h.get(t, "/backend/x", "ROUTEID=.4"), "4")
	if r := h.get(t, "/backend/x", "ROUTEID=.2"); r.status != http.StatusOK {
		t.Fatalf("got %v", r)
	}
	if got := h.obs.routes(); len(got) != 1 {
		t.Errorf("observations %v: member 2's quarantine was lost when member 4 came", got)
	}
}
