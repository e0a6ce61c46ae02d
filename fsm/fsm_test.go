package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// t0 is an arbitrary command time; tests never read the clock either.
const t0 = int64(1_700_000_000_000_000_000)

// fxHarness drives an FSM with real raft.Log entries at increasing indexes
// and records what it publishes.
type fxHarness struct {
	t         testing.TB
	f         *FSM
	index     uint64
	published []*Table
}

func fxNew(t testing.TB) *fxHarness {
	h := &fxHarness{t: t}
	h.f = NewFSM(func(tbl *Table) { h.published = append(h.published, tbl) })
	return h
}

// apply encodes cmd, applies it at the next index and returns the response.
func (h *fxHarness) apply(cmd *gwelbv1.Command) error {
	h.t.Helper()
	data, err := EncodeCommand(cmd)
	if err != nil {
		h.t.Fatalf("EncodeCommand: %v", err)
	}
	return h.applyData(data)
}

func (h *fxHarness) applyData(data []byte) error {
	h.t.Helper()
	h.index++
	resp := h.f.Apply(&raft.Log{Index: h.index, Term: 1, Type: raft.LogCommand, Data: data})
	if resp == nil {
		return nil
	}
	err, ok := resp.(error)
	if !ok {
		h.t.Fatalf("Apply returned %T %v, want nil or error", resp, resp)
	}
	if err == nil {
		h.t.Fatalf("Apply returned a typed nil error")
	}
	return err
}

func (h *fxHarness) must(cmds ...*gwelbv1.Command) {
	h.t.Helper()
	for _, c := range cmds {
		if err := h.apply(c); err != nil {
			h.t.Fatalf("apply %s: %v", describe(c), err)
		}
	}
}

func (h *fxHarness) member(pool, route string) *gwelbv1.Member {
	h.t.Helper()
	for _, m := range h.f.State().GetMembers() {
		if m.GetPool() == pool && m.GetRoute() == route {
			return m
		}
	}
	h.t.Fatalf("member %s/%s not in state", pool, route)
	return nil
}

// Command builders. Each takes the command time first.

func fxCmd(at int64, op any) *gwelbv1.Command {
	c := &gwelbv1.Command{UnixNanos: at}
	switch op := op.(type) {
	case *gwelbv1.Seed:
		c.Op = &gwelbv1.Command_Seed{Seed: op}
	case *gwelbv1.PutPool:
		c.Op = &gwelbv1.Command_PutPool{PutPool: op}
	case *gwelbv1.RemovePool:
		c.Op = &gwelbv1.Command_RemovePool{RemovePool: op}
	case *gwelbv1.PutMember:
		c.Op = &gwelbv1.Command_PutMember{PutMember: op}
	case *gwelbv1.RemoveMember:
		c.Op = &gwelbv1.Command_RemoveMember{RemoveMember: op}
	case *gwelbv1.SetMemberState:
		c.Op = &gwelbv1.Command_SetMemberState{SetMemberState: op}
	case *gwelbv1.SetBalancers:
		c.Op = &gwelbv1.Command_SetBalancers{SetBalancers: op}
	case *gwelbv1.Observe:
		c.Op = &gwelbv1.Command_Observe{Observe: op}
	case nil:
	default:
		panic(fmt.Sprintf("fxCmd: %T", op))
	}
	return c
}

func cmdPutPool(at int64, p *gwelbv1.Pool) *gwelbv1.Command {
	return fxCmd(at, &gwelbv1.PutPool{Pool: p})
}

func cmdRemovePool(at int64, name string) *gwelbv1.Command {
	return fxCmd(at, &gwelbv1.RemovePool{Name: name})
}

func cmdPutMember(at int64, pool, route, url string) *gwelbv1.Command {
	return fxCmd(at, &gwelbv1.PutMember{Member: &gwelbv1.Member{Pool: pool, Route: route, Url: url}})
}

func cmdRemoveMember(at int64, pool, route string) *gwelbv1.Command {
	return fxCmd(at, &gwelbv1.RemoveMember{Pool: pool, Route: route})
}

func cmdSetState(at int64, pool, route string, s gwelbv1.AdminState) *gwelbv1.Command {
	return fxCmd(at, &gwelbv1.SetMemberState{Pool: pool, Route: route, State: s})
}

func cmdBalancers(at int64, nodes ...string) *gwelbv1.Command {
	return fxCmd(at, &gwelbv1.SetBalancers{Nodes: nodes})
}

func cmdObserve(at int64, pool, route, node string, down bool, obsAt int64, cause string) *gwelbv1.Command {
	return fxCmd(at, &gwelbv1.Observe{Observation: &gwelbv1.Observation{
		Pool: pool, Route: route, Node: node, Down: down, UnixNanos: obsAt, Cause: cause,
	}})
}

func fxFrontend() *gwelbv1.Pool {
	return &gwelbv1.Pool{Name: "frontend", Prefix: "/frontend", QueryParam: "alias", Cookie: "FRONTEND_ROUTEID", FailTimeoutMs: new(int64(30000))}
}

func fxBackend() *gwelbv1.Pool {
	return &gwelbv1.Pool{Name: "backend", Prefix: "/backend", Cookie: "ROUTEID", InsertCookie: true, FailTimeoutMs: new(int64(5000))}
}

// fxBackendWith returns a backend pool with three members, as commands.
func fxBackendWith(at int64) []*gwelbv1.Command {
	return []*gwelbv1.Command{
		cmdPutPool(at, fxBackend()),
		cmdPutMember(at, "backend", "1", "http://10.0.0.1:9081"),
		cmdPutMember(at, "backend", "2", "http://10.0.0.2:9081"),
		cmdPutMember(at, "backend", "3", "http://10.0.0.3:9081"),
	}
}

func TestFSMNew(t *testing.T) {
	f := NewFSM(nil)
	if tbl := f.Table(); tbl == nil || tbl.Index() != 0 || len(tbl.Pools()) != 0 {
		t.Fatalf("Table() = %+v, want an empty table at index 0", tbl)
	}
	if st := f.State(); !proto.Equal(st, &gwelbv1.State{}) {
		t.Fatalf("State() = %v, want empty", st)
	}
	// A nil publish is allowed.
	data, _ := EncodeCommand(cmdPutPool(t0, fxBackend()))
	if resp := f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: data}); resp != nil {
		t.Fatalf("Apply = %v", resp)
	}
	if f.Table().Pool("backend") == nil || f.Table().Index() != 1 {
		t.Fatalf("table after put pool: index %d, pools %v", f.Table().Index(), f.Table().Pools())
	}
}

func TestFSMApplySequences(t *testing.T) {
	tests := []struct {
		name  string
		cmds  []*gwelbv1.Command
		check func(t *testing.T, h *fxHarness)
	}{
		{
			name: "pools and members build the table",
			cmds: append([]*gwelbv1.Command{cmdPutPool(t0, fxFrontend())}, append(fxBackendWith(t0),
				cmdPutMember(t0, "frontend", "GWE_F_2", "http://10.0.1.2:8081"),
				cmdPutMember(t0, "frontend", "GWE_F_1", "http://10.0.1.1:8081"))...),
			check: func(t *testing.T, h *fxHarness) {
				st := h.f.State()
				var pools, members []string
				for _, p := range st.GetPools() {
					pools = append(pools, p.GetName())
				}
				for _, m := range st.GetMembers() {
					members = append(members, m.GetPool()+"/"+m.GetRoute())
				}
				if got, want := strings.Join(pools, ","), "backend,frontend"; got != want {
					t.Errorf("state pools = %s, want %s", got, want)
				}
				if got, want := strings.Join(members, ","), "backend/1,backend/2,backend/3,frontend/GWE_F_1,frontend/GWE_F_2"; got != want {
					t.Errorf("state members = %s, want %s", got, want)
				}
				tbl := h.f.Table()
				if tbl.Index() != st.GetIndex() || tbl.Index() != 7 {
					t.Errorf("table index %d, state index %d, want 7", tbl.Index(), st.GetIndex())
				}
				fe := tbl.Pool("frontend")
				if fe == nil || len(fe.Members()) != 2 || fe.Members()[0].Route != "GWE_F_1" {
					t.Fatalf("frontend members not in route order: %+v", fe)
				}
				if got := fe.Spec().Quarantine(); got != 30*time.Second {
					t.Errorf("frontend fail timeout = %v", got)
				}
				if got := fe.Spec().Health.Path; got != "/frontend/about" {
					t.Errorf("frontend health path = %q, want the default", got)
				}
				if m := h.member("backend", "2"); m.GetWeight() != 1 || m.GetVerdict() != gwelbv1.Verdict_VERDICT_UP || m.GetVerdictSinceUnixNanos() != t0 {
					t.Errorf("new member = %v, want weight 1, UP since t0", m)
				}
			},
		},
		{
			name: "set member state",
			cmds: append(fxBackendWith(t0), cmdSetState(t0+1, "backend", "2", gwelbv1.AdminState_ADMIN_STATE_DRAIN)),
			check: func(t *testing.T, h *fxHarness) {
				p := h.f.Table().Pool("backend")
				i, _ := p.Lookup("2")
				if got := p.Member(i).State; got != Drain {
					t.Errorf("state = %v, want drain", got)
				}
			},
		},
		{
			name: "remove member drops it and its observations",
			cmds: append(fxBackendWith(t0),
				cmdObserve(t0+1, "backend", "2", "a", true, t0, "refused"),
				cmdRemoveMember(t0+2, "backend", "2")),
			check: func(t *testing.T, h *fxHarness) {
				st := h.f.State()
				if len(st.GetMembers()) != 2 || len(st.GetObservations()) != 0 {
					t.Errorf("state = %v", st)
				}
				if _, ok := h.f.Table().Pool("backend").Lookup("2"); ok {
					t.Error("removed member still in table")
				}
			},
		},
		{
			name: "remove pool drops its members and observations only",
			cmds: append(append(fxBackendWith(t0), cmdPutPool(t0, fxFrontend()),
				cmdPutMember(t0, "frontend", "F1", "http://10.0.1.1:8081"),
				cmdObserve(t0+1, "frontend", "F1", "a", true, t0, ""),
				cmdObserve(t0+1, "backend", "1", "a", true, t0, "")),
				cmdRemovePool(t0+2, "backend")),
			check: func(t *testing.T, h *fxHarness) {
				st := h.f.State()
				if len(st.GetPools()) != 1 || len(st.GetMembers()) != 1 || len(st.GetObservations()) != 1 ||
					st.GetObservations()[0].GetPool() != "frontend" {
					t.Errorf("state = %v", st)
				}
				if h.f.Table().Pool("backend") != nil {
					t.Error("removed pool still in table")
				}
			},
		},
		{
			name: "put pool replaces settings and keeps members",
			cmds: append(fxBackendWith(t0), cmdPutPool(t0+1, &gwelbv1.Pool{
				Name: "backend", Prefix: "/be", Cookie: "SRV", InsertCookie: true,
				CookieAttrs: &gwelbv1.CookieAttrs{Secure: true, SameSite: "None"},
				Health:      &gwelbv1.HealthCheck{IntervalMs: 500, Rise: 3},
			})),
			check: func(t *testing.T, h *fxHarness) {
				tbl := h.f.Table()
				p := tbl.Match("/be/x")
				if p == nil || len(p.Members()) != 3 {
					t.Fatalf("pool = %+v", p)
				}
				s := p.Spec()
				if s.Sticky.Cookie != "SRV" || !s.Cookie.Secure || s.Cookie.Path != "/" {
					t.Errorf("spec = %+v", s)
				}
				want := HealthSpec{Path: "/be/about", Interval: 500 * time.Millisecond, Timeout: time.Second, Rise: 3, Fall: 2, ExpectStatus: 200}
				if s.Health != want {
					t.Errorf("health = %+v, want %+v", s.Health, want)
				}
			},
		},
		{
			name: "balancers are sorted and deduplicated",
			cmds: []*gwelbv1.Command{cmdBalancers(t0, "c", "a", "b", "a")},
			check: func(t *testing.T, h *fxHarness) {
				if got := h.f.State().GetBalancers(); !reflect.DeepEqual(got, []string{"a", "b", "c"}) {
					t.Errorf("balancers = %v", got)
				}
			},
		},
		{
			name: "command version 0 is read as version 1",
			cmds: nil,
			check: func(t *testing.T, h *fxHarness) {
				data, err := proto.Marshal(cmdPutPool(t0, fxBackend())) // Version left 0
				if err != nil {
					t.Fatal(err)
				}
				if err := h.applyData(data); err != nil {
					t.Fatalf("apply version 0: %v", err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := fxNew(t)
			h.must(tt.cmds...)
			tt.check(t, h)
		})
	}
}

// TestPutPoolCompareAndSet: a PutPool with the settings its writer read
// applies while they are the pool's, and is refused (ErrConflict, nothing
// changed, the outcome remembered) once another write changed them: two
// gwelbctl pool set at once cannot lose one (DESIGN.md §5.2). It is written
// at the version that introduced it, which an older node refuses.
func TestPutPoolCompareAndSet(t *testing.T) {
	h := fxNew(t)
	h.must(fxBackendWith(t0)...)
	read := h.f.State().GetPools()[0] // what both writers read
	withTimeout := proto.Clone(read).(*gwelbv1.Pool)
	withTimeout.FailTimeoutMs = new(int64(9000))
	withCookie := proto.Clone(read).(*gwelbv1.Pool)
	withCookie.Cookie = "GWE_ROUTE"
	first := fxCmd(t0, &gwelbv1.PutPool{Pool: withTimeout, Expected: read})
	data, err := EncodeCommand(first)
	if err != nil {
		t.Fatal(err)
	}
	var written gwelbv1.Command
	if err := proto.Unmarshal(data, &written); err != nil || written.GetVersion() != poolCASVersion {
		t.Errorf("written at version %d (%v), want %d", written.GetVersion(), err, poolCASVersion)
	}
	if err := h.apply(first); err != nil {
		t.Fatalf("the first writer: %v", err)
	}
	before := h.f.State()
	second := fxCmd(t0, &gwelbv1.PutPool{Pool: withCookie, Expected: read})
	if err := h.apply(second); !errors.Is(err, ErrConflict) {
		t.Fatalf("the second writer, on settings that changed: err = %v, want %v", err, ErrConflict)
	}
	after := h.f.State()
	before.Index, before.Outcomes, after.Outcomes = after.Index, nil, nil
	if !proto.Equal(before, after) {
		t.Errorf("a refused compare-and-set changed the state:\nbefore %v\nafter  %v", before, after)
	}
	if got := after.GetPools()[0]; got.GetFailTimeoutMs() != 9000 || got.GetCookie() != "ROUTEID" {
		t.Errorf("pool after both writers: %v, want the first's change only", got)
	}
	// Read again, the second writer applies its change over the first's.
	again := proto.Clone(after.GetPools()[0]).(*gwelbv1.Pool)
	again.Cookie = "GWE_ROUTE"
	if err := h.apply(fxCmd(t0, &gwelbv1.PutPool{Pool: again, Expected: after.GetPools()[0]})); err != nil {
		t.Fatalf("the second writer after reading again: %v", err)
	}
	if got := h.f.State().GetPools()[0]; got.GetFailTimeoutMs() != 9000 || got.GetCookie() != "GWE_ROUTE" {
		t.Errorf("pool after the retry: %v, want both changes", got)
	}
}

func TestFSMApplyErrors(t *testing.T) {
	setup := append(fxBackendWith(t0), cmdPutPool(t0, fxFrontend()), cmdBalancers(t0, "a", "b", "c"))
	future := cmdPutPool(t0, fxBackend())
	future.Version = MaxCommandVersion + 1
	tests := []struct {
		name string
		data []byte           // raw log data, when cmd is nil
		cmd  *gwelbv1.Command // applied after setup
		want error
	}{
		{"garbage", []byte{0xff, 0xff, 0xff}, nil, ErrInvalid},
		{"newer version", nil, future, ErrVersion},
		{"no operation", nil, fxCmd(t0, nil), ErrInvalid},
		{"put pool nil", nil, fxCmd(t0, &gwelbv1.PutPool{}), ErrInvalid},
		{"put pool no name", nil, cmdPutPool(t0, &gwelbv1.Pool{Prefix: "/x", Cookie: "X"}), ErrInvalid},
		{"put pool bad prefix", nil, cmdPutPool(t0, &gwelbv1.Pool{Name: "x", Prefix: "x/", Cookie: "X"}), ErrInvalid},
		{"put pool prefix taken", nil, cmdPutPool(t0, &gwelbv1.Pool{Name: "x", Prefix: "/backend", Cookie: "X"}), ErrInvalid},
		{"put pool no sticky", nil, cmdPutPool(t0, &gwelbv1.Pool{Name: "x", Prefix: "/x"}), ErrInvalid},
		{"put pool bad same site", nil, cmdPutPool(t0, &gwelbv1.Pool{Name: "x", Prefix: "/x", Cookie: "X", CookieAttrs: &gwelbv1.CookieAttrs{SameSite: "lax"}}), ErrInvalid},
		{"put pool negative fail timeout", nil, cmdPutPool(t0, &gwelbv1.Pool{Name: "x", Prefix: "/x", Cookie: "X", FailTimeoutMs: new(int64(-1))}), ErrInvalid},
		{"put pool huge fail timeout", nil, cmdPutPool(t0, &gwelbv1.Pool{Name: "x", Prefix: "/x", Cookie: "X", FailTimeoutMs: new(int64(maxMs + 1))}), ErrInvalid},
		{"put pool negative interval", nil, cmdPutPool(t0, &gwelbv1.Pool{Name: "x", Prefix: "/x", Cookie: "X", Health: &gwelbv1.HealthCheck{IntervalMs: -1}}), ErrInvalid},
		{"put pool negative rise", nil, cmdPutPool(t0, &gwelbv1.Pool{Name: "x", Prefix: "/x", Cookie: "X", Health: &gwelbv1.HealthCheck{Rise: -2}}), ErrInvalid},
		{"put pool bad expect status", nil, cmdPutPool(t0, &gwelbv1.Pool{Name: "x", Prefix: "/x", Cookie: "X", Health: &gwelbv1.HealthCheck{ExpectStatus: 42}}), ErrInvalid},
		{"put pool relative health path", nil, cmdPutPool(t0, &gwelbv1.Pool{Name: "x", Prefix: "/x", Cookie: "X", Health: &gwelbv1.HealthCheck{Path: "about"}}), ErrInvalid},
		{"put pool flap limit without window", nil, cmdPutPool(t0, &gwelbv1.Pool{Name: "x", Prefix: "/x", Cookie: "X", Health: &gwelbv1.HealthCheck{FlapLimit: 3, HoldDownMs: 1000}}), ErrInvalid},
		{"put pool changed meanwhile", nil, fxCmd(t0, &gwelbv1.PutPool{Pool: fxBackend(), Expected: &gwelbv1.Pool{Name: "backend", Prefix: "/backend", Cookie: "OTHER"}}), ErrConflict},
		{"put pool expected absent", nil, fxCmd(t0, &gwelbv1.PutPool{Pool: &gwelbv1.Pool{Name: "x", Prefix: "/x", Cookie: "X"}, Expected: &gwelbv1.Pool{Name: "x", Prefix: "/x", Cookie: "X"}}), ErrNotFound},
		{"remove pool absent", nil, cmdRemovePool(t0, "nope"), ErrNotFound},
		{"put member nil", nil, fxCmd(t0, &gwelbv1.PutMember{}), ErrInvalid},
		{"put member unknown pool", nil, cmdPutMember(t0, "nope", "1", "http://h:1"), ErrNotFound},
		{"put member empty pool", nil, cmdPutMember(t0, "", "1", "http://h:1"), ErrNotFound},
		{"put member bad url", nil, cmdPutMember(t0, "backend", "9", "ftp://h:1"), ErrInvalid},
		{"put member url with path", nil, cmdPutMember(t0, "backend", "9", "http://h:1/gwe"), ErrInvalid},
		{"put member bad route", nil, cmdPutMember(t0, "backend", "a b", "http://h:1"), ErrInvalid},
		{"put member empty route", nil, cmdPutMember(t0, "backend", "", "http://h:1"), ErrInvalid},
		{"put member bad weight", nil, fxCmd(t0, &gwelbv1.PutMember{Member: &gwelbv1.Member{Pool: "backend", Route: "9", Url: "http://h:1", Weight: 5000}}), ErrInvalid},
		{"put member negative weight", nil, fxCmd(t0, &gwelbv1.PutMember{Member: &gwelbv1.Member{Pool: "backend", Route: "9", Url: "http://h:1", Weight: -1}}), ErrInvalid},
		{"put member bad state", nil, fxCmd(t0, &gwelbv1.PutMember{Member: &gwelbv1.Member{Pool: "backend", Route: "9", Url: "http://h:1", State: 7}}), ErrInvalid},
		{"replace member bad url", nil, cmdPutMember(t0, "backend", "1", "not a url"), ErrInvalid},
		{"remove member absent", nil, cmdRemoveMember(t0, "backend", "9"), ErrNotFound},
		{"remove member unknown pool", nil, cmdRemoveMember(t0, "nope", "1"), ErrNotFound},
		{"set state absent", nil, cmdSetState(t0, "backend", "9", gwelbv1.AdminState_ADMIN_STATE_DRAIN), ErrNotFound},
		{"set state bad enum", nil, cmdSetState(t0, "backend", "1", 9), ErrInvalid},
		{"set balancers empty name", nil, cmdBalancers(t0, "a", ""), ErrInvalid},
		{"observe nil", nil, fxCmd(t0, &gwelbv1.Observe{}), ErrInvalid},
		{"observe without node", nil, cmdObserve(t0, "backend", "1", "", true, t0, ""), ErrInvalid},
		{"observe unknown member", nil, cmdObserve(t0, "backend", "9", "a", true, t0, ""), ErrNotFound},
		{"observe unknown pool", nil, cmdObserve(t0, "nope", "1", "a", true, t0, ""), ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := fxNew(t)
			h.must(setup...)
			before := h.f.State()
			beforeTbl := h.f.Table()
			npub := len(h.published)
			var err error
			if tt.cmd != nil {
				err = h.apply(tt.cmd)
			} else {
				err = h.applyData(tt.data)
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			t.Logf("error: %v", err)
			after := h.f.State()
			if after.GetIndex() != h.index {
				t.Errorf("index = %d, want %d: the index advances on errors", after.GetIndex(), h.index)
			}
			before.Index = after.Index
			if !proto.Equal(before, after) {
				t.Errorf("state changed by a rejected command:\nbefore %v\nafter  %v", before, after)
			}
			if h.f.Table() != beforeTbl || len(h.published) != npub {
				t.Error("a rejected command published a table")
			}
		})
	}
}

func TestFSMErrorMessages(t *testing.T) {
	h := fxNew(t)
	h.must(fxBackendWith(t0)...)
	tests := []struct {
		cmd  *gwelbv1.Command
		want string
	}{
		{cmdPutMember(t0, "nope", "1", "http://h:1"), "put member nope/1: pool nope not found"},
		{cmdRemoveMember(t0, "backend", "9"), "remove member backend/9: member not found"},
		{cmdPutMember(t0, "backend", "9", "ftp://h:1"), `put member backend/9: url "ftp://h:1": want http://host:port or https://host:port`},
	}
	for _, tt := range tests {
		err := h.apply(tt.cmd)
		if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want prefix %q", describe(tt.cmd), err, tt.want)
		}
	}
}

func TestFSMSeedOnce(t *testing.T) {
	pools := []PoolSpec{
		{Name: "frontend", Prefix: "/frontend", Sticky: StickySpec{Query: "alias", Cookie: "FRONTEND_ROUTEID"}, FailTimeout: new(30 * time.Second),
			Members: []MemberSpec{{Route: "GWE_F_1", URL: "http://127.0.0.1:8081"}, {Route: "GWE_F_2", URL: "http://127.0.0.1:8082"}}},
		{Name: "backend", Prefix: "/backend", Sticky: StickySpec{Cookie: "ROUTEID", Insert: true}, FailTimeout: new(5 * time.Second),
			Health:  HealthSpec{FlapLimit: 3, FlapWindow: time.Minute, HoldDown: 30 * time.Second},
			Members: []MemberSpec{{Route: "1", URL: "http://127.0.0.1:9081", Weight: 2}, {Route: "2", URL: "http://127.0.0.1:9082", State: Drain}}},
	}
	h := fxNew(t)
	seed := SeedCommand(pools)
	seed.UnixNanos = t0
	h.must(seed)
	st := h.f.State()
	if !st.GetSeeded() || len(st.GetPools()) != 2 || len(st.GetMembers()) != 4 {
		t.Fatalf("after seed: %v", st)
	}
	if got := h.member("backend", "1").GetWeight(); got != 2 {
		t.Errorf("weight = %d", got)
	}
	if got := h.f.Table().Pool("backend").Spec().Health.FlapLimit; got != 3 {
		t.Errorf("flap limit = %d", got)
	}

	// The operator changes things; a second seed (a new leader, a restart)
	// must not undo them.
	h.must(cmdSetState(t0+1, "backend", "2", gwelbv1.AdminState_ADMIN_STATE_ACTIVE),
		cmdRemoveMember(t0+1, "frontend", "GWE_F_2"))
	want := h.f.State()
	npub := len(h.published)
	seed.UnixNanos = t0 + 2
	h.must(seed)
	got := h.f.State()
	want.Index = got.Index
	if !proto.Equal(got, want) {
		t.Errorf("second seed changed the state:\n got %v\nwant %v", got, want)
	}
	if len(h.published) != npub {
		t.Error("a no-op seed published a table")
	}
}

func TestFSMSeedEdges(t *testing.T) {
	t.Run("invalid seed leaves the cluster unseeded", func(t *testing.T) {
		h := fxNew(t)
		bad := SeedCommand([]PoolSpec{{Name: "x", Prefix: "x", Sticky: StickySpec{Cookie: "X"}}})
		if err := h.apply(bad); !errors.Is(err, ErrInvalid) {
			t.Fatalf("err = %v", err)
		}
		if h.f.State().GetSeeded() {
			t.Fatal("seeded after a rejected seed")
		}
		h.must(SeedCommand([]PoolSpec{{Name: "x", Prefix: "/x", Sticky: StickySpec{Cookie: "X"}}}))
		if !h.f.State().GetSeeded() {
			t.Fatal("not seeded")
		}
	})
	t.Run("empty seed marks seeded", func(t *testing.T) {
		h := fxNew(t)
		h.must(SeedCommand(nil))
		if !h.f.State().GetSeeded() || len(h.published) != 1 {
			t.Fatalf("seeded=%v published=%d", h.f.State().GetSeeded(), len(h.published))
		}
	})
	t.Run("operator writes before the seed win", func(t *testing.T) {
		h := fxNew(t)
		h.must(cmdPutPool(t0, &gwelbv1.Pool{Name: "backend", Prefix: "/api", Cookie: "ROUTEID"}),
			cmdPutMember(t0, "backend", "1", "http://op:1"))
		h.must(SeedCommand([]PoolSpec{{Name: "backend", Prefix: "/backend", Sticky: StickySpec{Cookie: "ROUTEID"},
			Members: []MemberSpec{{Route: "1", URL: "http://seed:1"}, {Route: "2", URL: "http://seed:2"}}}}))
		if p := h.f.Table().Pool("backend"); p.Spec().Prefix != "/api" || len(p.Members()) != 2 || p.Members()[0].URL != "http://op:1" {
			t.Fatalf("pool = %+v %+v", p.Spec(), p.Members())
		}
	})
	errCases := []struct {
		name string
		seed *gwelbv1.Seed
		want error
	}{
		{"pool twice", &gwelbv1.Seed{Pools: []*gwelbv1.Pool{fxBackend(), fxBackend()}}, ErrInvalid},
		{"member twice", &gwelbv1.Seed{Pools: []*gwelbv1.Pool{fxBackend()}, Members: []*gwelbv1.Member{
			{Pool: "backend", Route: "1", Url: "http://h:1"}, {Pool: "backend", Route: "1", Url: "http://h:2"}}}, ErrInvalid},
		{"member of unknown pool", &gwelbv1.Seed{Pools: []*gwelbv1.Pool{fxBackend()}, Members: []*gwelbv1.Member{
			{Pool: "frontend", Route: "1", Url: "http://h:1"}}}, ErrNotFound},
		{"bad member", &gwelbv1.Seed{Pools: []*gwelbv1.Pool{fxBackend()}, Members: []*gwelbv1.Member{
			{Pool: "backend", Route: "1", Url: "http://h:1", Weight: 1001}}}, ErrInvalid},
		{"nil pool", &gwelbv1.Seed{Pools: []*gwelbv1.Pool{nil}}, ErrInvalid},
	}
	for _, tt := range errCases {
		t.Run(tt.name, func(t *testing.T) {
			h := fxNew(t)
			if err := h.apply(fxCmd(t0, tt.seed)); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if st := h.f.State(); st.GetSeeded() || len(st.GetPools()) != 0 {
				t.Fatalf("state after rejected seed: %v", st)
			}
		})
	}
}

func TestFSMPutMemberIdempotent(t *testing.T) {
	h := fxNew(t)
	h.must(cmdBalancers(t0, "a"))
	h.must(fxBackendWith(t0)...)
	put := fxCmd(t0+1, &gwelbv1.PutMember{Member: &gwelbv1.Member{Pool: "backend", Route: "2", Url: "http://10.0.0.2:9081", Weight: 3,
		// Derived fields in a PutMember are the operator's guess, not the cluster's.
		Verdict: gwelbv1.Verdict_VERDICT_DOWN, VerdictCause: "operator says so", FlipsUnixNanos: []int64{1, 2}}})
	h.must(put)
	first := h.f.State()
	npub := len(h.published)
	for i := range 3 {
		put.UnixNanos = t0 + 10 + int64(i)
		h.must(put)
	}
	again := h.f.State()
	first.Index = again.Index
	if !proto.Equal(first, again) {
		t.Errorf("repeated PutMember changed the state:\n%v\n%v", first, again)
	}
	if len(h.published) != npub {
		t.Errorf("repeated PutMember published %d tables", len(h.published)-npub)
	}
	m := h.member("backend", "2")
	if m.GetVerdict() != gwelbv1.Verdict_VERDICT_UP || m.GetVerdictCause() != "" || len(m.GetFlipsUnixNanos()) != 0 || m.GetWeight() != 3 {
		t.Errorf("member = %v", m)
	}

	// The verdict survives a replace with the same URL ...
	h.must(cmdObserve(t0+20, "backend", "2", "a", true, t0+20, "connection refused"))
	if m := h.member("backend", "2"); m.GetVerdict() != gwelbv1.Verdict_VERDICT_DOWN {
		t.Fatalf("member = %v, want DOWN", m)
	}
	h.must(cmdSetState(t0+21, "backend", "2", gwelbv1.AdminState_ADMIN_STATE_DRAIN),
		cmdPutMember(t0+22, "backend", "2", "http://10.0.0.2:9081"))
	m = h.member("backend", "2")
	if m.GetVerdict() != gwelbv1.Verdict_VERDICT_DOWN || m.GetVerdictSinceUnixNanos() != t0+20 || m.GetWeight() != 1 ||
		m.GetState() != gwelbv1.AdminState_ADMIN_STATE_ACTIVE {
		t.Errorf("after replace with same URL: %v", m)
	}
	// ... and is reset, with its observations, by a new URL.
	h.must(cmdPutMember(t0+30, "backend", "2", "http://10.0.0.22:9081"))
	m = h.member("backend", "2")
	if m.GetVerdict() != gwelbv1.Verdict_VERDICT_UP || m.GetVerdictSinceUnixNanos() != t0+30 || m.GetVerdictCause() != "url changed" {
		t.Errorf("after URL change: %v", m)
	}
	if obs := h.f.State().GetObservations(); len(obs) != 0 {
		t.Errorf("observations of the old URL kept: %v", obs)
	}
}

func TestFSMPublish(t *testing.T) {
	h := fxNew(t)
	cmds := []struct {
		cmd     *gwelbv1.Command
		publish bool
	}{
		{cmdPutPool(t0, fxBackend()), true},
		{cmdPutPool(t0, fxBackend()), false}, // same pool again
		{cmdPutMember(t0, "backend", "1", "http://h:1"), true},
		{cmdPutMember(t0, "nope", "1", "http://h:1"), false}, // error
		{cmdBalancers(t0, "a", "b", "c"), true},
		{cmdBalancers(t0, "c", "b", "a"), false},                      // same set
		{cmdObserve(t0, "backend", "1", "a", true, t0, ""), true},     // observation, verdict unchanged
		{cmdObserve(t0, "backend", "1", "z", true, t0, ""), false},    // not a balancer
		{cmdObserve(t0, "backend", "1", "a", false, t0-1, ""), false}, // stale
		{cmdObserve(t0, "backend", "1", "b", true, t0, ""), true},     // verdict change
		{cmdSetState(t0, "backend", "1", gwelbv1.AdminState_ADMIN_STATE_ACTIVE), false},
		{cmdSetState(t0, "backend", "1", gwelbv1.AdminState_ADMIN_STATE_DISABLED), true},
		{SeedCommand(nil), true},
		{SeedCommand(nil), false},
		{cmdRemoveMember(t0, "backend", "1"), true},
		{cmdRemoveMember(t0, "backend", "1"), false}, // not found
	}
	var last uint64
	for i, c := range cmds {
		n := len(h.published)
		_ = h.apply(c.cmd)
		published := len(h.published) > n
		if published != c.publish {
			t.Errorf("command %d (%s): published = %v, want %v", i, describe(c.cmd), published, c.publish)
		}
		if published {
			tbl := h.published[len(h.published)-1]
			if tbl.Index() != h.index || tbl.Index() <= last || h.f.Table() != tbl {
				t.Errorf("command %d: published index %d (last %d, log %d)", i, tbl.Index(), last, h.index)
			}
			last = tbl.Index()
		}
	}
	if got := h.f.Table().Pool("backend"); got == nil || len(got.Members()) != 0 {
		t.Errorf("final table: %+v", got)
	}
}

func TestFSMApplyIgnoresOtherLogTypes(t *testing.T) {
	h := fxNew(t)
	if resp := h.f.Apply(&raft.Log{Index: 5, Type: raft.LogNoop}); resp != nil {
		t.Fatalf("Apply(noop) = %v", resp)
	}
	if h.f.State().GetIndex() != 0 || len(h.published) != 0 {
		t.Fatal("a no-op log entry changed the FSM")
	}
}

func TestFSMPublishMayReadState(t *testing.T) {
	var f *FSM
	var seen []uint64
	f = NewFSM(func(tbl *Table) {
		// Would deadlock if publish ran under the FSM's lock.
		seen = append(seen, f.State().GetIndex(), f.Table().Index())
	})
	data, _ := EncodeCommand(cmdPutPool(t0, fxBackend()))
	f.Apply(&raft.Log{Index: 3, Type: raft.LogCommand, Data: data})
	if !reflect.DeepEqual(seen, []uint64{3, 3}) {
		t.Fatalf("publish saw %v", seen)
	}
}

func TestEncodeCommand(t *testing.T) {
	c := cmdPutPool(t0, fxBackend())
	data, err := EncodeCommand(c)
	if err != nil {
		t.Fatal(err)
	}
	if c.GetVersion() != 0 {
		t.Error("EncodeCommand modified its argument")
	}
	var back gwelbv1.Command
	if err := proto.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if back.GetVersion() != CommandVersion {
		t.Errorf("version = %d", back.GetVersion())
	}
	again, _ := EncodeCommand(c)
	if !bytes.Equal(data, again) {
		t.Error("encoding is not deterministic")
	}
	c.Version = 7
	data, _ = EncodeCommand(c)
	_ = proto.Unmarshal(data, &back)
	if back.GetVersion() != 7 {
		t.Errorf("explicit version overwritten: %d", back.GetVersion())
	}
	if _, err := EncodeCommand(nil); err == nil {
		t.Error("EncodeCommand(nil) succeeded")
	}
}

// fxSink is an in-memory raft.SnapshotSink that can fail its writes.
type fxSink struct {
	bytes.Buffer
	failWrite         bool
	closed, cancelled bool
}

func (s *fxSink) Write(p []byte) (int, error) {
	if s.failWrite {
		return 0, errors.New("disk full")
	}
	return s.Buffer.Write(p)
}
func (s *fxSink) ID() string    { return "fx-1" }
func (s *fxSink) Close() error  { s.closed = true; return nil }
func (s *fxSink) Cancel() error { s.cancelled = true; return nil }

// fxSnapshot persists f's snapshot and returns its bytes.
func fxSnapshot(t testing.TB, f *FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	defer snap.Release()
	sink := &fxSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatalf("Persist: %v", err)
	}
	if !sink.closed || sink.cancelled {
		t.Fatalf("sink closed=%v cancelled=%v", sink.closed, sink.cancelled)
	}
	return sink.Bytes()
}

func fxRestore(t testing.TB, data []byte, publish func(*Table)) *FSM {
	t.Helper()
	f := NewFSM(publish)
	if err := f.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	return f
}

func TestFSMSnapshotPersistCancelsOnError(t *testing.T) {
	h := fxNew(t)
	h.must(fxBackendWith(t0)...)
	snap, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &fxSink{failWrite: true}
	if err := snap.Persist(sink); err == nil || !sink.cancelled || sink.closed {
		t.Fatalf("Persist = %v, cancelled=%v closed=%v", err, sink.cancelled, sink.closed)
	}
	snap.Release()
}

func TestFSMSnapshotIsImmutable(t *testing.T) {
	h := fxNew(t)
	h.must(fxBackendWith(t0)...)
	want := fxSnapshot(t, h.f)
	snap, _ := h.f.Snapshot()
	h.must(cmdRemovePool(t0+1, "backend")) // raft applies while Persist runs
	sink := &fxSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sink.Bytes(), want) {
		t.Error("snapshot changed after a later Apply")
	}
}

func TestFSMRestore(t *testing.T) {
	h := fxNew(t)
	h.must(cmdBalancers(t0, "a", "b", "c"))
	h.must(fxBackendWith(t0)...)
	h.must(cmdObserve(t0+1, "backend", "1", "a", true, t0, "refused"),
		cmdObserve(t0+1, "backend", "1", "b", true, t0, "reset"))
	data := fxSnapshot(t, h.f)

	var pub []*Table
	r := fxRestore(t, data, func(tbl *Table) { pub = append(pub, tbl) })
	if len(pub) != 1 || pub[0].Index() != h.index || r.Table() != pub[0] {
		t.Fatalf("restore published %d tables", len(pub))
	}
	if !proto.Equal(r.State(), h.f.State()) {
		t.Fatal("restored state differs")
	}
	p := r.Table().Pool("backend")
	i, _ := p.Lookup("1")
	if p.Member(i).Verdict != Down {
		t.Error("restored verdict lost")
	}

	t.Run("restore replaces existing state", func(t *testing.T) {
		g := fxNew(t)
		g.must(cmdPutPool(t0, fxFrontend()))
		if err := g.f.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(g.f.State(), h.f.State()) || g.f.Table().Pool("frontend") != nil {
			t.Fatal("old state survived Restore")
		}
	})
	t.Run("garbage is rejected and changes nothing", func(t *testing.T) {
		g := fxNew(t)
		g.must(cmdPutPool(t0, fxFrontend()))
		before := g.f.State()
		if err := g.f.Restore(io.NopCloser(strings.NewReader("\xff\xff\xff"))); err == nil {
			t.Fatal("Restore(garbage) succeeded")
		}
		if !proto.Equal(g.f.State(), before) {
			t.Fatal("state changed")
		}
	})
	t.Run("duplicate keys are rejected", func(t *testing.T) {
		st := &gwelbv1.State{Pools: []*gwelbv1.Pool{fxBackend(), fxBackend()}}
		data, _ := proto.Marshal(st)
		if err := NewFSM(nil).Restore(io.NopCloser(bytes.NewReader(data))); !errors.Is(err, ErrInvalid) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("unsorted state is sorted", func(t *testing.T) {
		st := &gwelbv1.State{
			Pools:     []*gwelbv1.Pool{fxFrontend(), fxBackend()},
			Members:   []*gwelbv1.Member{{Pool: "frontend", Route: "b", Url: "http://h:2"}, {Pool: "backend", Route: "a", Url: "http://h:1"}},
			Balancers: []string{"b", "a", "b"},
			Index:     9,
		}
		data, _ := proto.Marshal(st)
		f := fxRestore(t, data, nil)
		got := f.State()
		if got.GetPools()[0].GetName() != "backend" || got.GetMembers()[0].GetPool() != "backend" ||
			!reflect.DeepEqual(got.GetBalancers(), []string{"a", "b"}) || f.Table().Index() != 9 {
			t.Fatalf("state = %v", got)
		}
	})
	t.Run("invalid state is refused and changes nothing", func(t *testing.T) {
		g := fxNew(t)
		g.must(cmdPutPool(t0, fxFrontend()))
		last, before := g.f.Table(), g.f.State()
		npub := len(g.published)
		st := &gwelbv1.State{Pools: []*gwelbv1.Pool{{Name: "x", Prefix: "no-slash", Cookie: "X"}}, Index: 40}
		data, _ := proto.Marshal(st)
		err := g.f.Restore(io.NopCloser(bytes.NewReader(data)))
		if want := `pools[0] "x": prefix "no-slash": want / or a path`; err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("Restore = %v, want an error containing %q", err, want)
		}
		if g.f.Table() != last || len(g.published) != npub || !proto.Equal(g.f.State(), before) {
			t.Fatal("a refused snapshot changed the table or the state")
		}
	})
}

func TestConvertRoundTrip(t *testing.T) {
	pools := []*gwelbv1.Pool{
		fxBackend(),
		{Name: "f", Prefix: "/f", QueryParam: "alias", Cookie: "C", InsertCookie: true, FailTimeoutMs: new(int64(1500)),
			CookieAttrs: &gwelbv1.CookieAttrs{Path: "/f", Domain: "example.com", MaxAge: 3600, Secure: true, HttpOnly: true, SameSite: "None"},
			Health: &gwelbv1.HealthCheck{Path: "/f/health", IntervalMs: 100, TimeoutMs: 50, Rise: 1, Fall: 3, ExpectStatus: 204,
				FlapLimit: 4, FlapWindowMs: 60000, HoldDownMs: 120000}},
	}
	for _, p := range pools {
		if got := PoolToProto(PoolFromProto(p)); !proto.Equal(got, p) {
			t.Errorf("round trip:\n got %v\nwant %v", got, p)
		}
	}
	spec := MemberSpec{Route: "GWE_F_1", URL: "http://h:1", Weight: 5, State: Drain, Verdict: Down}
	if got := MemberFromProto(MemberToProto("f", spec)); got != spec {
		t.Errorf("member round trip: %+v", got)
	}
	if got := MemberFromProto(&gwelbv1.Member{State: 42}); got.State <= Disabled {
		t.Errorf("unknown admin state became %v", got.State)
	}

	seed := SeedCommand([]PoolSpec{{Name: "b", Prefix: "/b", Sticky: StickySpec{Cookie: "R"}, Members: []MemberSpec{{Route: "1", URL: "http://h:1"}, {Route: "2", URL: "http://h:2"}}}})
	s := seed.GetSeed()
	if seed.GetVersion() != CommandVersion || len(s.GetPools()) != 1 || len(s.GetMembers()) != 2 || s.GetMembers()[1].GetPool() != "b" {
		t.Errorf("seed = %v", seed)
	}

	if _, err := TableFromState(&gwelbv1.State{Members: []*gwelbv1.Member{{Pool: "ghost", Route: "1", Url: "http://h:1"}}}); !errors.Is(err, ErrNotFound) {
		t.Errorf("TableFromState(member without pool) err = %v", err)
	}
	tbl, err := TableFromState(&gwelbv1.State{Index: 12, Pools: []*gwelbv1.Pool{fxBackend()}, Members: []*gwelbv1.Member{
		{Pool: "backend", Route: "b", Url: "http://h:2", Verdict: gwelbv1.Verdict_VERDICT_DOWN},
		{Pool: "backend", Route: "a", Url: "http://h:1"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	ms := tbl.Pool("backend").Members()
	if tbl.Index() != 12 || ms[0].Route != "a" || ms[1].Verdict != Down || ms[0].Weight != 1 {
		t.Errorf("table = %d %+v", tbl.Index(), ms)
	}
}

// fxGen draws random command sequences over a small universe, so that
// commands collide often: valid and invalid, fresh and stale.
type fxGen struct {
	r   *rand.Rand
	now int64
}

var (
	fxPoolNames  = []string{"backend", "frontend", "extra"}
	fxRoutes     = []string{"1", "2", "3", "GWE_F_1"}
	fxNodes      = []string{"a", "b", "c", "d"}
	fxURLs       = []string{"http://10.0.0.1:1", "http://10.0.0.2:2", "https://gwe.example.com:443", "http://[::1]:9", "ftp://bad:1"}
	fxCauses     = []string{"", "connection refused", "timeout", "status 500"}
	fxPrefixes   = []string{"/backend", "/frontend", "/x", "/", "bad"}
	fxAdminState = []gwelbv1.AdminState{0, 1, 2, 5}
)

func (g *fxGen) pick(xs []string) string { return xs[g.r.IntN(len(xs))] }

func (g *fxGen) pool() *gwelbv1.Pool {
	name := g.pick(fxPoolNames)
	p := &gwelbv1.Pool{Name: name, Prefix: "/" + name, Cookie: "ROUTEID", InsertCookie: g.r.IntN(2) == 0}
	if g.r.IntN(5) == 0 {
		p.Prefix = g.pick(fxPrefixes) // collisions and invalid prefixes
	}
	if g.r.IntN(3) == 0 {
		p.QueryParam, p.Cookie, p.InsertCookie = "alias", "", false
	}
	if g.r.IntN(2) == 0 {
		p.Health = &gwelbv1.HealthCheck{FlapLimit: int32(g.r.IntN(4)), FlapWindowMs: 1 + g.r.Int64N(2000), HoldDownMs: 1 + g.r.Int64N(300)}
	}
	return p
}

func (g *fxGen) command() *gwelbv1.Command {
	// Time mostly moves on in milliseconds, sometimes jumps back (another
	// proposer's clock).
	g.now += g.r.Int64N(40*int64(time.Millisecond)) - 5*int64(time.Millisecond)
	at := g.now
	switch k := g.r.IntN(20); {
	case k == 0:
		pools := []*gwelbv1.Pool{g.pool()}
		var members []*gwelbv1.Member
		for range g.r.IntN(3) {
			members = append(members, &gwelbv1.Member{Pool: pools[0].GetName(), Route: g.pick(fxRoutes), Url: g.pick(fxURLs)})
		}
		return fxCmd(at, &gwelbv1.Seed{Pools: pools, Members: members})
	case k <= 2:
		return cmdPutPool(at, g.pool())
	case k == 3:
		return cmdRemovePool(at, g.pick(fxPoolNames))
	case k <= 6:
		return fxCmd(at, &gwelbv1.PutMember{Member: &gwelbv1.Member{
			Pool: g.pick(fxPoolNames), Route: g.pick(fxRoutes), Url: g.pick(fxURLs),
			Weight: int32(g.r.IntN(4)), State: fxAdminState[g.r.IntN(len(fxAdminState))],
		}})
	case k == 7:
		return cmdRemoveMember(at, g.pick(fxPoolNames), g.pick(fxRoutes))
	case k == 8:
		return cmdSetState(at, g.pick(fxPoolNames), g.pick(fxRoutes), fxAdminState[g.r.IntN(len(fxAdminState))])
	case k == 9:
		var nodes []string
		for _, n := range fxNodes {
			if g.r.IntN(3) > 0 {
				nodes = append(nodes, n)
			}
		}
		return cmdBalancers(at, nodes...)
	default:
		// Mostly about two members, so that verdicts flip and flap.
		pool, route := "backend", fxRoutes[g.r.IntN(2)]
		if g.r.IntN(4) == 0 {
			pool, route = g.pick(fxPoolNames), g.pick(fxRoutes)
		}
		return cmdObserve(at, pool, route, g.pick(fxNodes), g.r.IntN(2) == 0,
			at-g.r.Int64N(60*int64(time.Millisecond)), g.pick(fxCauses))
	}
}

// fxSequence returns n commands: a seed of two pools and the balancer set,
// then random ones.
func fxSequence(seed uint64, n int) []*gwelbv1.Command {
	g := &fxGen{r: rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)), now: t0}
	flappy := fxFlappyBackend()
	flappy.Health.FlapWindowMs, flappy.Health.HoldDownMs = 2000, 200
	var members []*gwelbv1.Member
	for _, pool := range fxPoolNames[:2] {
		for _, r := range fxRoutes {
			members = append(members, &gwelbv1.Member{Pool: pool, Route: r, Url: g.pick(fxURLs[:4])})
		}
	}
	cmds := []*gwelbv1.Command{
		fxCmd(t0, &gwelbv1.Seed{Pools: []*gwelbv1.Pool{flappy, fxFrontend()}, Members: members}),
		cmdBalancers(t0, fxNodes[:3]...),
	}
	for len(cmds) < n {
		cmds = append(cmds, g.command())
	}
	return cmds
}

// fxSamePicks checks that two tables route every sticky value the same way.
// Their indexes may differ: a restored table is built at the snapshot's
// index, the original at the last command that changed something.
func fxSamePicks(t testing.TB, a, b *Table) {
	t.Helper()
	if len(a.Pools()) != len(b.Pools()) {
		t.Fatalf("tables differ: %d vs %d pools", len(a.Pools()), len(b.Pools()))
	}
	for i, pa := range a.Pools() {
		pb := b.Pools()[i]
		if !reflect.DeepEqual(pa.Spec(), pb.Spec()) || !reflect.DeepEqual(pa.Members(), pb.Members()) {
			t.Fatalf("pool %s differs:\n%+v %+v\n%+v %+v", pa.Name(), pa.Spec(), pa.Members(), pb.Spec(), pb.Members())
		}
		for v := range 40 {
			value := fmt.Sprintf("session-%d.%s", v, fxRoutes[v%len(fxRoutes)])
			route := fxRoutes[v%len(fxRoutes)]
			for _, val := range []string{value, ""} {
				if x, y := pa.Pick(val, route, uint64(v), nil), pb.Pick(val, route, uint64(v), nil); x != y {
					t.Fatalf("pool %s: Pick(%q, %q) = %d vs %d", pa.Name(), val, route, x, y)
				}
			}
		}
	}
}

func TestFSMSnapshotRestoreProperty(t *testing.T) {
	const sequences, length = 200, 50
	var applied, rejected, downs, held int
	for seq := range uint64(sequences) {
		cmds := fxSequence(seq, length)
		split := int(seq % length)

		a := fxNew(t)
		for _, c := range cmds[:split] {
			if a.apply(c) != nil {
				rejected++
			} else {
				applied++
			}
		}
		// Snapshot mid-way, restore into a fresh FSM: same state, same bytes,
		// same routing ...
		data := fxSnapshot(t, a.f)
		b := &fxHarness{t: t, index: a.index}
		b.f = fxRestore(t, data, func(tbl *Table) { b.published = append(b.published, tbl) })
		if !proto.Equal(a.f.State(), b.f.State()) {
			t.Fatalf("seq %d: restored state differs:\n%v\n%v", seq, a.f.State(), b.f.State())
		}
		if again := fxSnapshot(t, b.f); !bytes.Equal(data, again) {
			t.Fatalf("seq %d: snapshot of the restored FSM differs", seq)
		}
		fxSamePicks(t, a.f.Table(), b.f.Table())

		// ... and the same future: both apply the rest with the same results.
		for i, c := range cmds[split:] {
			ea, eb := a.apply(c), b.apply(c)
			if fmt.Sprint(ea) != fmt.Sprint(eb) {
				t.Fatalf("seq %d cmd %d (%s): %v vs %v", seq, split+i, describe(c), ea, eb)
			}
			if ea == nil {
				applied++
			} else {
				rejected++
			}
			for _, m := range a.f.State().GetMembers() {
				if m.GetHoldDownUntilUnixNanos() != 0 {
					held++
				}
			}
		}
		if !bytes.Equal(fxSnapshot(t, a.f), fxSnapshot(t, b.f)) {
			t.Fatalf("seq %d: snapshots diverged after the split", seq)
		}
		fxSamePicks(t, a.f.Table(), b.f.Table())
		fxCheckInvariants(t, a.f.State())
		for _, m := range a.f.State().GetMembers() {
			if m.GetVerdict() == gwelbv1.Verdict_VERDICT_DOWN {
				downs++
			}
		}
	}
	// The generator must exercise both paths, or the test proves little.
	if applied < sequences*length/2 || rejected == 0 || downs < sequences/10 || held == 0 {
		t.Fatalf("weak generator: %d applied, %d rejected, %d down verdicts, %d held", applied, rejected, downs, held)
	}
	t.Logf("%d commands applied, %d rejected, %d DOWN verdicts at the end, %d member-commands held down", applied, rejected, downs, held)
}

// fxCheckInvariants checks what every reachable state satisfies.
func fxCheckInvariants(t testing.TB, st *gwelbv1.State) {
	t.Helper()
	check := normalize(proto.Clone(st).(*gwelbv1.State))
	if check != nil {
		t.Fatalf("state not normal: %v", check)
	}
	sorted := proto.Clone(st).(*gwelbv1.State)
	_ = normalize(sorted)
	if !proto.Equal(sorted, st) {
		t.Fatalf("state not sorted: %v", st)
	}
	for _, o := range st.GetObservations() {
		if _, ok := findMember(st, o.GetPool(), o.GetRoute()); !ok {
			t.Fatalf("observation of unknown member: %v", o)
		}
		if len(st.GetBalancers()) > 0 {
			if _, ok := findBalancer(st, o.GetNode()); !ok {
				t.Fatalf("observation by non-balancer %s kept", o.GetNode())
			}
		}
	}
	for _, m := range st.GetMembers() {
		if _, ok := findPool(st, m.GetPool()); !ok {
			t.Fatalf("member of unknown pool: %v", m)
		}
	}
	if _, err := TableFromState(st); err != nil {
		t.Fatalf("state does not build a table: %v", err)
	}
}

func findBalancer(st *gwelbv1.State, node string) (int, bool) {
	for i, b := range st.GetBalancers() {
		if b == node {
			return i, true
		}
	}
	return 0, false
}

func TestFSMDeterminism(t *testing.T) {
	for seq := range uint64(50) {
		cmds := fxSequence(1000+seq, 80)
		a, b := fxNew(t), fxNew(t)
		for _, c := range cmds {
			ea, eb := a.apply(c), b.apply(c)
			if fmt.Sprint(ea) != fmt.Sprint(eb) {
				t.Fatalf("seq %d: responses differ: %v vs %v", seq, ea, eb)
			}
		}
		if !bytes.Equal(fxSnapshot(t, a.f), fxSnapshot(t, b.f)) {
			t.Fatalf("seq %d: snapshots differ", seq)
		}
		fxSamePicks(t, a.f.Table(), b.f.Table())
		for i := 1; i < len(a.published); i++ {
			if a.published[i].Index() <= a.published[i-1].Index() {
				t.Fatalf("seq %d: publish index %d after %d", seq, a.published[i].Index(), a.published[i-1].Index())
			}
		}
	}
}

func TestFSMConcurrentReaders(t *testing.T) {
	h := fxNew(t)
	h.must(cmdBalancers(t0, "a", "b", "c"))
	h.must(fxBackendWith(t0)...)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				st := h.f.State()
				_, _ = proto.Marshal(st)
				if tbl := h.f.Table(); tbl.Pool("backend") != nil {
					tbl.Pool("backend").Pick("x.1", "1", 0, nil)
				}
			}
		})
	}
	var snaps []raft.FSMSnapshot
	for i := range 300 {
		down := i%3 != 0
		node := fxNodes[i%3]
		_ = h.apply(cmdObserve(t0+int64(i), "backend", fxRoutes[i%3], node, down, t0+int64(i), "x"))
		if i%50 == 0 {
			snap, err := h.f.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			snaps = append(snaps, snap)
			wg.Go(func() { _ = snap.Persist(&fxSink{}) })
		}
	}
	close(stop)
	wg.Wait()
	for _, s := range snaps {
		s.Release()
	}
}

func cmdPassive(at int64, pool, route, node string, down bool, obsAt int64, cause string) *gwelbv1.Command {
	c := cmdObserve(at, pool, route, node, down, obsAt, cause)
	c.GetObserve().GetObservation().Passive = true
	return c
}

func withProbers(p *gwelbv1.Pool, k int32) *gwelbv1.Pool {
	if p.Health == nil {
		p.Health = &gwelbv1.HealthCheck{}
	}
	p.Health.Probers = k
	return p
}
