package cluster

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/gwelb/gwelb/fsm"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
	"github.com/gwelb/gwelb/proxy"
)

// FuzzDecodeTableCache feeds arbitrary bytes to the table cache decoder,
// which a node runs on data_dir/table.cache at start, before Raft: the file
// may be truncated by a crash, damaged on disk or left by another version.
// It must never panic; what it accepts is a table the data plane can take
// (the proxy swallows it, every pool is found by its prefix, every pick is
// a member) at the state's index, that routes exactly as restoring the same
// bytes as a snapshot would, and that reads back the same once the node
// writes its state to the cache again.
func FuzzDecodeTableCache(f *testing.F) {
	for _, st := range fuzzCacheStates(f) {
		data, err := proto.MarshalOptions{Deterministic: true}.Marshal(st) // as tablePublisher.write does
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
		f.Add(data[:len(data)/2]) // a crash mid-write without the rename
	}
	f.Add([]byte{})
	f.Add([]byte("not a table cache"))
	srv := proxy.New(proxy.Options{Logger: slog.New(slog.DiscardHandler)})
	f.Fuzz(func(t *testing.T, data []byte) {
		tbl, st, err := decodeTableCache(data)
		if err != nil {
			if tbl != nil || st != nil {
				t.Fatalf("error %v with a table or a state", err)
			}
			return
		}
		if tbl == nil || st == nil {
			t.Fatal("no error, but no table or no state")
		}
		if tbl.Index() != st.GetIndex() {
			t.Fatalf("table index %d, state index %d", tbl.Index(), st.GetIndex())
		}
		srv.Update(tbl)
		for _, p := range tbl.Pools() {
			if got := tbl.Match(p.Spec().Prefix); got != p {
				t.Fatalf("pool %s is not found by its own prefix %q", p.Name(), p.Spec().Prefix)
			}
			for i := range uint64(3) {
				for _, value := range []string{"", ".1", "x.GWE_F_2"} {
					if m := p.Pick(value, fsm.RouteOf(value), i, nil); m < -1 || m >= len(p.Members()) {
						t.Fatalf("pool %s: Pick(%q) = %d with %d members", p.Name(), value, m, len(p.Members()))
					}
				}
			}
		}
		if _, restored, err := fsm.DecodeState(data); err == nil {
			if got, want := cacheTableSig(t, tbl), cacheTableSig(t, restored); got != want {
				t.Fatalf("the cache routes on\n%s\nbut a restore of the same bytes on\n%s", got, want)
			}
		}
		again, err := proto.MarshalOptions{Deterministic: true}.Marshal(st)
		if err != nil {
			t.Fatalf("an accepted cached state does not encode: %v", err)
		}
		tbl2, _, err := decodeTableCache(again)
		if err != nil {
			t.Fatalf("an accepted cached state, written again, is refused: %v", err)
		}
		if got, want := cacheTableSig(t, tbl2), cacheTableSig(t, tbl); got != want {
			t.Fatalf("an accepted cached state, written again, routes on\n%s\nnot\n%s", got, want)
		}
	})
}

// fuzzCacheStates are states a node really caches: what an FSM holds after
// a seed, operator changes and health observations.
func fuzzCacheStates(t testing.TB) []*gwelbv1.State {
	t.Helper()
	const t0 = int64(1_700_000_000_000_000_000)
	var members []*gwelbv1.Member
	for _, r := range []string{"GWE_F_1", "GWE_F_2", "GWE_F_3"} {
		members = append(members, &gwelbv1.Member{Pool: "frontend", Route: r, Url: "http://127.0.0.1:8091"})
	}
	for i, r := range []string{"1", "2", "3"} {
		members = append(members, &gwelbv1.Member{Pool: "backend", Route: r, Url: fmt.Sprintf("http://10.0.0.%d:9090", i+1), Weight: int32(i + 1)})
	}
	cmds := []*gwelbv1.Command{
		{UnixNanos: t0, Op: &gwelbv1.Command_Seed{Seed: &gwelbv1.Seed{
			Pools: []*gwelbv1.Pool{
				{Name: "frontend", Prefix: "/frontend", QueryParam: "alias", Cookie: "FRONTEND_ROUTEID"},
				{Name: "backend", Prefix: "/backend", Cookie: "ROUTEID", InsertCookie: true, FailTimeoutMs: proto.Int64(5000),
					CookieAttrs: &gwelbv1.CookieAttrs{Path: "/", Secure: true, SameSite: "Strict"},
					Health:      &gwelbv1.HealthCheck{Path: "/backend/about", FlapLimit: 3, FlapWindowMs: 60000, HoldDownMs: 30000}},
			},
			Members: members,
		}}},
		{UnixNanos: t0 + 1, Op: &gwelbv1.Command_SetBalancers{SetBalancers: &gwelbv1.SetBalancers{Nodes: []string{"n1", "n2", "n3"}}}},
		{UnixNanos: t0 + 2, Op: &gwelbv1.Command_Observe{Observe: &gwelbv1.Observe{Observation: &gwelbv1.Observation{Pool: "backend", Route: "2", Node: "n1", Down: true, UnixNanos: t0 + 2, Cause: "connection refused"}}}},
		{UnixNanos: t0 + 3, Op: &gwelbv1.Command_Observe{Observe: &gwelbv1.Observe{Observation: &gwelbv1.Observation{Pool: "backend", Route: "2", Node: "n2", Down: true, UnixNanos: t0 + 3, Cause: "timeout"}}}},
		{UnixNanos: t0 + 4, RequestId: "req-1", Op: &gwelbv1.Command_SetMemberState{SetMemberState: &gwelbv1.SetMemberState{Pool: "frontend", Route: "GWE_F_2", State: gwelbv1.AdminState_ADMIN_STATE_DRAIN}}},
	}
	f := fsm.NewFSM(nil)
	states := []*gwelbv1.State{f.State()}
	for i, c := range cmds {
		data, err := fsm.EncodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		if resp := f.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: data}); resp != nil {
			t.Fatalf("seed command %d: %v", i, resp)
		}
		states = append(states, f.State())
	}
	return states
}

// cacheTableSig describes a table by the replicated form of its pools and
// members in name and route order, index included.
func cacheTableSig(t *testing.T, tbl *fsm.Table) string {
	t.Helper()
	marshal := func(m proto.Message) string {
		data, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
		if err != nil {
			t.Fatalf("marshal %v: %v", m, err)
		}
		return fmt.Sprintf("%x", data)
	}
	var pools []string
	for _, p := range tbl.Pools() {
		var members []string
		for _, m := range p.Members() {
			members = append(members, "  member "+marshal(fsm.MemberToProto(p.Name(), m.MemberSpec)))
		}
		slices.Sort(members)
		pools = append(pools, "pool "+marshal(fsm.PoolToProto(p.Spec()))+"\n"+strings.Join(members, "\n"))
	}
	slices.Sort(pools)
	return fmt.Sprintf("index %d\n%s", tbl.Index(), strings.Join(pools, "\n"))
}
