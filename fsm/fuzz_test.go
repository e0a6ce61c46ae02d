package fsm_test

// Fuzz targets for the two ways bytes from outside become replicated state:
// a Raft log entry (FSM.Apply) and a snapshot (FSM.Restore). Both run on
// every node with whatever a leader, a disk or an operator hands them, so
// they must never panic, and what they accept must be something the data
// plane can route on and every node rebuilds identically. They use only
// the package's entry points and the protobuf messages, not its helpers,
// so they keep working while the model behind them changes.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/gwelb/gwelb/fsm"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// fzT0 is the command time of the seeds; the FSM never reads a clock.
const fzT0 = int64(1_700_000_000_000_000_000)

func fzCmd(t testing.TB, c *gwelbv1.Command) []byte {
	t.Helper()
	data, err := fsm.EncodeCommand(c)
	if err != nil {
		t.Fatalf("EncodeCommand: %v", err)
	}
	return data
}

// fzSeed is the guide's two pools with three members each, as the leader
// proposes it from a config file.
func fzSeed() *gwelbv1.Command {
	var members []*gwelbv1.Member
	for _, r := range []string{"GWE_F_1", "GWE_F_2", "GWE_F_3"} {
		members = append(members, &gwelbv1.Member{Pool: "frontend", Route: r, Url: "http://127.0.0.1:8091"})
	}
	for i, r := range []string{"1", "2", "3"} {
		members = append(members, &gwelbv1.Member{Pool: "backend", Route: r, Url: fmt.Sprintf("http://10.0.0.%d:9090", i+1), Weight: int32(i + 1)})
	}
	return &gwelbv1.Command{UnixNanos: fzT0, Op: &gwelbv1.Command_Seed{Seed: &gwelbv1.Seed{
		Pools: []*gwelbv1.Pool{
			{Name: "frontend", Prefix: "/frontend", QueryParam: "alias", Cookie: "FRONTEND_ROUTEID"},
			{Name: "backend", Prefix: "/backend", Cookie: "ROUTEID", InsertCookie: true, FailTimeoutMs: proto.Int64(5000),
				CookieAttrs: &gwelbv1.CookieAttrs{Path: "/", HttpOnly: true, SameSite: "Lax"},
				Health:      &gwelbv1.HealthCheck{Path: "/backend/about", IntervalMs: 2000, Rise: 2, Fall: 3, FlapLimit: 3, FlapWindowMs: 60000, HoldDownMs: 30000}},
		},
		Members: members,
	}}}
}

func fzPutMember(at int64, id, pool, route, url string, weight int32, state gwelbv1.AdminState) *gwelbv1.Command {
	return &gwelbv1.Command{UnixNanos: at, RequestId: id, Op: &gwelbv1.Command_PutMember{PutMember: &gwelbv1.PutMember{
		Member: &gwelbv1.Member{Pool: pool, Route: route, Url: url, Weight: weight, State: state}}}}
}

func fzObserve(at int64, pool, route, node string, down bool, cause string) *gwelbv1.Command {
	return &gwelbv1.Command{UnixNanos: at, Op: &gwelbv1.Command_Observe{Observe: &gwelbv1.Observe{
		Observation: &gwelbv1.Observation{Pool: pool, Route: route, Node: node, Down: down, UnixNanos: at, Cause: cause}}}}
}

// fzSequences are three-command log fragments the operators and balancers
// really write, plus a few that must be refused.
func fzSequences(t testing.TB) [][3][]byte {
	enc := func(c *gwelbv1.Command) []byte { return fzCmd(t, c) }
	seed := enc(fzSeed())
	balancers := enc(&gwelbv1.Command{UnixNanos: fzT0 + 1, Op: &gwelbv1.Command_SetBalancers{SetBalancers: &gwelbv1.SetBalancers{Nodes: []string{"n1", "n2", "n3"}}}})
	putPool := enc(&gwelbv1.Command{UnixNanos: fzT0, Op: &gwelbv1.Command_PutPool{PutPool: &gwelbv1.PutPool{Pool: &gwelbv1.Pool{
		Name: "chat", Prefix: "/chat", Cookie: "CHATID", InsertCookie: true, FailTimeoutMs: proto.Int64(0)}}}})
	put := enc(fzPutMember(fzT0+2, "req-1", "backend", "4", "https://gwe-4.example:8443", 3, gwelbv1.AdminState_ADMIN_STATE_DRAIN))
	future := enc(&gwelbv1.Command{Version: fsm.MaxCommandVersion + 1, UnixNanos: fzT0, Op: &gwelbv1.Command_RemovePool{RemovePool: &gwelbv1.RemovePool{Name: "backend"}}})
	return [][3][]byte{
		{seed, enc(fzPutMember(fzT0+1, "", "frontend", "GWE_F_4", "http://127.0.0.1:8094", 0, 0)), enc(fzObserve(fzT0+2, "backend", "2", "n1", true, "connection refused"))},
		{seed, balancers, enc(fzObserve(fzT0+3, "backend", "1", "n2", true, "timeout"))},
		{putPool, enc(fzPutMember(fzT0+1, "", "chat", "a", "http://[::1]:7000", 1000, 0)),
			enc(&gwelbv1.Command{UnixNanos: fzT0 + 2, Op: &gwelbv1.Command_SetMemberState{SetMemberState: &gwelbv1.SetMemberState{Pool: "chat", Route: "a", State: gwelbv1.AdminState_ADMIN_STATE_DISABLED}}})},
		{seed, enc(&gwelbv1.Command{UnixNanos: fzT0 + 1, Op: &gwelbv1.Command_RemoveMember{RemoveMember: &gwelbv1.RemoveMember{Pool: "backend", Route: "2"}}}),
			enc(&gwelbv1.Command{UnixNanos: fzT0 + 2, Op: &gwelbv1.Command_RemovePool{RemovePool: &gwelbv1.RemovePool{Name: "frontend"}}})},
		// A retried request: the second answers what the first did.
		{seed, put, put},
		// Refused: a newer version, no operation, not a command at all.
		{seed, future, enc(&gwelbv1.Command{RequestId: "req-2"})},
		{[]byte("\xff\xff\xff"), nil, []byte("PUT /backend/4 HTTP/1.1")},
	}
}

// fzSnapshot returns the bytes f's snapshot persists.
func fzSnapshot(t testing.TB, f *fsm.FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	sink := &fzSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatalf("Persist: %v", err)
	}
	snap.Release()
	return sink.Bytes()
}

// fzSink is a raft.SnapshotSink in memory.
type fzSink struct{ bytes.Buffer }

func (*fzSink) ID() string    { return "fuzz" }
func (*fzSink) Close() error  { return nil }
func (*fzSink) Cancel() error { return nil }

// fzTableSig describes a Table by the replicated form of its pools and
// members (stable across changes of the Go model), so that two tables can
// be compared for what the data plane would do with them.
func fzTableSig(t testing.TB, tbl *fsm.Table) string {
	t.Helper()
	var b bytes.Buffer
	fmt.Fprintf(&b, "index %d\n", tbl.Index())
	for _, p := range tbl.Pools() {
		data, err := proto.MarshalOptions{Deterministic: true}.Marshal(fsm.PoolToProto(p.Spec()))
		if err != nil {
			t.Fatalf("marshal pool %s: %v", p.Name(), err)
		}
		fmt.Fprintf(&b, "pool %x\n", data)
		for _, m := range p.Members() {
			data, err := proto.MarshalOptions{Deterministic: true}.Marshal(fsm.MemberToProto(p.Name(), m.MemberSpec))
			if err != nil {
				t.Fatalf("marshal member %s/%s: %v", p.Name(), m.Route, err)
			}
			fmt.Fprintf(&b, "  member %x\n", data)
		}
	}
	return b.String()
}

// fzCheckRoutable asserts what the data plane relies on: every pool is
// found by its own prefix and every pick names a member of the pool.
func fzCheckRoutable(t testing.TB, tbl *fsm.Table) {
	t.Helper()
	for _, p := range tbl.Pools() {
		if got := tbl.Match(p.Spec().Prefix); got != p {
			t.Fatalf("Match(%q) = %v, want pool %s", p.Spec().Prefix, got, p.Name())
		}
		n := len(p.Members())
		for i := range uint64(3) {
			for _, value := range []string{"", ".1", "x.GWE_F_2"} {
				if m := p.Pick(value, fsm.RouteOf(value), i, nil); m < -1 || m >= n {
					t.Fatalf("pool %s: Pick(%q) = %d with %d members", p.Name(), value, m, n)
				}
			}
		}
	}
}

// withoutBookkeeping is st without what every applied entry changes,
// whatever its fate: the applied index and the window of request outcomes.
func withoutBookkeeping(st *gwelbv1.State) *gwelbv1.State {
	c := proto.Clone(st).(*gwelbv1.State)
	c.Index = 0
	c.Outcomes = nil
	return c
}

// FuzzApply applies three arbitrary log entries to a fresh FSM and to a
// replica. Apply must not panic; it answers nil, AppliedEarlier or an
// error of the documented kinds; a refused entry changes nothing but the
// bookkeeping; an accepted one leaves a state whose table builds, is the
// table the FSM publishes, and survives Snapshot and Restore byte for
// byte; and the replica ends up byte-identical (determinism is what makes
// every node route a sticky value to the same member).
func FuzzApply(f *testing.F) {
	for _, seq := range fzSequences(f) {
		f.Add(seq[0], seq[1], seq[2])
	}
	f.Fuzz(func(t *testing.T, a, b, c []byte) {
		node, replica := fsm.NewFSM(nil), fsm.NewFSM(nil)
		for i, data := range [][]byte{a, b, c} {
			index := uint64(i + 1)
			log := &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: data}
			before, beforeTable := node.State(), node.Table()
			resp := node.Apply(log)
			replicaResp := replica.Apply(&raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: bytes.Clone(data)})
			after := node.State()

			if after.GetIndex() != index || node.AppliedIndex() != index {
				t.Fatalf("entry %d: applied index %d / %d, want %d", index, after.GetIndex(), node.AppliedIndex(), index)
			}
			if got, want := fmt.Sprint(replicaResp), fmt.Sprint(resp); got != want {
				t.Fatalf("entry %d: replica answered %q, node %q", index, got, want)
			}
			if snap, replicaSnap := fzSnapshot(t, node), fzSnapshot(t, replica); !bytes.Equal(snap, replicaSnap) {
				t.Fatalf("entry %d: replica state differs from the node's", index)
			}
			changed := !proto.Equal(withoutBookkeeping(before), withoutBookkeeping(after))
			switch r := resp.(type) {
			case nil:
				tbl, err := fsm.TableFromState(after)
				if err != nil {
					t.Fatalf("entry %d accepted, but its state has no table: %v", index, err)
				}
				fzCheckRoutable(t, tbl)
				if changed {
					if got, want := fzTableSig(t, node.Table()), fzTableSig(t, tbl); got != want {
						t.Fatalf("entry %d: the FSM publishes\n%s\nbut its state builds\n%s", index, got, want)
					}
				} else if node.Table() != beforeTable {
					t.Fatalf("entry %d changed nothing but published a new table", index)
				}
			case fsm.AppliedEarlier:
				if changed || uint64(r) >= index {
					t.Fatalf("entry %d: AppliedEarlier(%d), state changed: %v", index, r, changed)
				}
			case error:
				if !errors.Is(r, fsm.ErrInvalid) && !errors.Is(r, fsm.ErrNotFound) && !errors.Is(r, fsm.ErrVersion) {
					t.Fatalf("entry %d: error of no documented kind: %v", index, r)
				}
				if changed || node.Table() != beforeTable {
					t.Fatalf("entry %d refused (%v) but changed the state or the table", index, r)
				}
			default:
				t.Fatalf("entry %d: Apply returned %T %v", index, resp, resp)
			}
			// Whatever the log made of the state, a follower restoring the
			// leader's snapshot gets it back exactly.
			snap := fzSnapshot(t, node)
			restored := fsm.NewFSM(nil)
			if err := restored.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
				t.Fatalf("entry %d: the state Apply reached does not restore: %v", index, err)
			}
			if !bytes.Equal(fzSnapshot(t, restored), snap) {
				t.Fatalf("entry %d: Snapshot, Restore, Snapshot is not byte-identical", index)
			}
		}
	})
}

// FuzzRestore restores arbitrary snapshot bytes into a fresh FSM. Restore
// must not panic; a refused snapshot changes nothing; an accepted one
// publishes the table its state builds, and Snapshot, Restore, Snapshot is
// byte-identical from then on (a follower installing a leader's snapshot
// ends up with exactly the leader's state).
func FuzzRestore(f *testing.F) {
	for _, seq := range fzSequences(f) {
		g := fsm.NewFSM(nil)
		for i, data := range seq {
			g.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: data})
			f.Add(fzSnapshot(f, g))
		}
	}
	f.Add([]byte{})
	f.Add([]byte("\x12\x00\x12\x00")) // two pools without names
	f.Fuzz(func(t *testing.T, data []byte) {
		var published []*fsm.Table
		node := fsm.NewFSM(func(tbl *fsm.Table) { published = append(published, tbl) })
		before, beforeTable := fzSnapshot(t, node), node.Table()
		if err := node.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
			if !bytes.Equal(fzSnapshot(t, node), before) || node.Table() != beforeTable || len(published) > 0 {
				t.Fatalf("refused snapshot (%v) changed the FSM", err)
			}
			return
		}
		st := node.State()
		tbl, err := fsm.TableFromState(st)
		if err != nil {
			t.Fatalf("restored a state whose table does not build: %v", err)
		}
		fzCheckRoutable(t, tbl)
		if len(published) != 1 || published[0] != node.Table() {
			t.Fatalf("published %d tables, want the restored one", len(published))
		}
		if got, want := fzTableSig(t, node.Table()), fzTableSig(t, tbl); got != want {
			t.Fatalf("the FSM routes on\n%s\nbut its state builds\n%s", got, want)
		}
		if node.AppliedIndex() != st.GetIndex() || node.Table().Index() != st.GetIndex() {
			t.Fatalf("applied index %d, table index %d, state index %d", node.AppliedIndex(), node.Table().Index(), st.GetIndex())
		}
		snap := fzSnapshot(t, node)
		again := fsm.NewFSM(nil)
		if err := again.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
			t.Fatalf("a restored state's own snapshot does not restore: %v", err)
		}
		if !bytes.Equal(fzSnapshot(t, again), snap) {
			t.Fatal("Snapshot, Restore, Snapshot is not byte-identical")
		}
	})
}
