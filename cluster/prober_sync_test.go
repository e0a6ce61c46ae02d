package cluster

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/gwelb/gwelb/fsm"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// TestProberSyncFollowsTheTable checks that the prober, which re-syncs only
// the pools whose layout changed (DESIGN.md §5.2), still probes exactly the
// members of each table: an admin change keeps every probe, a URL change
// restarts that member's, a removed member or pool stops its probes.
func TestProberSyncFollowsTheTable(t *testing.T) {
	node, f := probeTestNode(t)
	st := benchState(100)
	for _, p := range st.GetPools() {
		p.Health = &gwelbv1.HealthCheck{IntervalMs: 3_600_000, Fall: 10}
	}
	apply := restoreState(t, f, st)
	probes := func() map[string]*probe {
		node.prober.mu.Lock()
		defer node.prober.mu.Unlock()
		all := map[string]*probe{}
		for pool, byRoute := range node.prober.probes {
			for route, pr := range byRoute {
				if pr.pool != pool || pr.route != route {
					t.Errorf("probe %s/%s kept as %s/%s", pr.pool, pr.route, pool, route)
				}
				all[pool+"/"+route] = pr
			}
		}
		return all
	}
	want := func(label string, n int) map[string]*probe {
		t.Helper()
		got := probes()
		tab := f.Table()
		count := 0
		for _, p := range tab.Pools() {
			for _, m := range p.All() {
				count++
				pr := got[p.Name()+"/"+m.Route]
				if pr == nil || pr.url != m.URL {
					t.Fatalf("%s: member %s/%s (%s) probed as %+v", label, p.Name(), m.Route, m.URL, pr)
				}
			}
		}
		if len(got) != count || count != n {
			t.Fatalf("%s: %d probes for %d members, want %d", label, len(got), count, n)
		}
		return got
	}
	before := want("restored", 103)

	apply(&gwelbv1.Command{RequestId: "drain", Op: &gwelbv1.Command_SetMemberState{SetMemberState: &gwelbv1.SetMemberState{
		Pool: "backend", Route: "GWE_B_00007", State: gwelbv1.AdminState_ADMIN_STATE_DRAIN}}})
	after := want("admin change", 103)
	for k, pr := range before {
		if after[k] != pr {
			t.Fatalf("admin change restarted the probe of %s", k)
		}
	}

	apply(&gwelbv1.Command{RequestId: "move", Op: &gwelbv1.Command_PutMember{PutMember: &gwelbv1.PutMember{Member: &gwelbv1.Member{
		Pool: "backend", Route: "GWE_B_00042", Url: "http://127.0.9.9:9080", Weight: 1}}}})
	after = want("URL change", 103)
	for k, pr := range before {
		if moved := k == "backend/GWE_B_00042"; (after[k] != pr) != moved {
			t.Fatalf("URL change of GWE_B_00042: probe of %s restarted %v", k, !moved)
		}
	}

	apply(&gwelbv1.Command{RequestId: "rm", Op: &gwelbv1.Command_RemoveMember{RemoveMember: &gwelbv1.RemoveMember{Pool: "backend", Route: "GWE_B_00003"}}})
	want("member removed", 102)
	apply(&gwelbv1.Command{RequestId: "rmpool", Op: &gwelbv1.Command_RemovePool{RemovePool: &gwelbv1.RemovePool{Name: "frontend"}}})
	want("pool removed", 99)
	if _, ok := node.prober.probes["frontend"]; ok {
		t.Fatal("a removed pool keeps its probe map")
	}
	for i := range 3 {
		if pr := before[fmt.Sprintf("frontend/GWE_F_%d", i)]; pr == nil {
			t.Fatal("frontend was not probed before")
		}
	}
}

// probeTestNode is a node with an FSM, its table publisher and prober, and
// no Raft: restoring a state into f makes the prober sync to its table.
// restoreState restores st into f, as a snapshot would, and returns a
// func that applies one command at the next Raft index.
func restoreState(t *testing.T, f *fsm.FSM, st *gwelbv1.State) (apply func(*gwelbv1.Command)) {
	t.Helper()
	data, err := proto.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatal(err)
	}
	index := uint64(100)
	return func(cmd *gwelbv1.Command) {
		t.Helper()
		index++
		b, err := fsm.EncodeCommand(cmd)
		if err != nil {
			t.Fatal(err)
		}
		if resp := f.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: b}); resp != nil {
			t.Fatal(resp)
		}
	}
}

func probeTestNode(t *testing.T) (*Node, *fsm.FSM) {
	t.Helper()
	var f *fsm.FSM
	tables := newTablePublisher(filepath.Join(t.TempDir(), "table.cache"), func(*fsm.Table) {},
		func() *gwelbv1.State { return f.State() }, slog.New(slog.DiscardHandler))
	t.Cleanup(tables.close)
	node := benchNode(t, tables)
	f = fsm.NewFSM(node.onTable)
	node.fsm = f
	return node, f
}
