package fsm

import (
	"errors"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

func cmdPutMode(at int64, mode gwelbv1.PutMemberMode, m *gwelbv1.Member) *gwelbv1.Command {
	return fxCmd(at, &gwelbv1.PutMember{Member: m, Mode: mode})
}

// TestPutMemberModes: what each mode of PutMember does to an existing
// member (backend/2, drained, weight 3) and to a missing one, decided in
// Apply (DESIGN.md §5.2): create never touches an existing route, update
// never changes the admin state, upsert replaces everything as before.
func TestPutMemberModes(t *testing.T) {
	const (
		upsert = gwelbv1.PutMemberMode_PUT_MEMBER_MODE_UPSERT
		create = gwelbv1.PutMemberMode_PUT_MEMBER_MODE_CREATE
		update = gwelbv1.PutMemberMode_PUT_MEMBER_MODE_UPDATE
	)
	drain, active, disabled := gwelbv1.AdminState_ADMIN_STATE_DRAIN, gwelbv1.AdminState_ADMIN_STATE_ACTIVE, gwelbv1.AdminState_ADMIN_STATE_DISABLED
	oldURL, newURL := "http://10.0.0.2:9081", "http://10.0.0.9:9081"
	tests := []struct {
		name    string
		mode    gwelbv1.PutMemberMode
		m       *gwelbv1.Member
		wantErr error
		want    *gwelbv1.Member // backend/<route> afterwards: url, weight, state
	}{
		{"create new", create, &gwelbv1.Member{Pool: "backend", Route: "9", Url: newURL, Weight: 2, State: disabled}, nil,
			&gwelbv1.Member{Route: "9", Url: newURL, Weight: 2, State: disabled}},
		{"create existing is refused, member kept", create, &gwelbv1.Member{Pool: "backend", Route: "2", Url: newURL, Weight: 2}, ErrExists,
			&gwelbv1.Member{Route: "2", Url: oldURL, Weight: 3, State: drain}},
		{"update keeps the admin state", update, &gwelbv1.Member{Pool: "backend", Route: "2", Url: newURL, Weight: 5, State: active}, nil,
			&gwelbv1.Member{Route: "2", Url: newURL, Weight: 5, State: drain}},
		{"update weight only keeps the url", update, &gwelbv1.Member{Pool: "backend", Route: "2", Weight: 7}, nil,
			&gwelbv1.Member{Route: "2", Url: oldURL, Weight: 7, State: drain}},
		{"update url only keeps the weight", update, &gwelbv1.Member{Pool: "backend", Route: "2", Url: newURL}, nil,
			&gwelbv1.Member{Route: "2", Url: newURL, Weight: 3, State: drain}},
		{"update missing", update, &gwelbv1.Member{Pool: "backend", Route: "9", Url: newURL, Weight: 1}, ErrNotFound, nil},
		{"update bad weight", update, &gwelbv1.Member{Pool: "backend", Route: "2", Weight: 5000}, ErrInvalid,
			&gwelbv1.Member{Route: "2", Url: oldURL, Weight: 3, State: drain}},
		{"upsert replaces the state", upsert, &gwelbv1.Member{Pool: "backend", Route: "2", Url: oldURL, Weight: 1, State: active}, nil,
			&gwelbv1.Member{Route: "2", Url: oldURL, Weight: 1, State: active}},
		{"unknown mode", 7, &gwelbv1.Member{Pool: "backend", Route: "2", Url: newURL, Weight: 1}, ErrInvalid,
			&gwelbv1.Member{Route: "2", Url: oldURL, Weight: 3, State: drain}},
		{"create in a missing pool", create, &gwelbv1.Member{Pool: "nope", Route: "1", Url: newURL, Weight: 1}, ErrNotFound, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := fxNew(t)
			h.must(fxBackendWith(t0)...)
			h.must(fxCmd(t0, &gwelbv1.PutMember{Member: &gwelbv1.Member{Pool: "backend", Route: "2", Url: oldURL, Weight: 3}}), cmdSetState(t0, "backend", "2", drain))
			cmd := cmdPutMode(t0+1, tt.mode, tt.m)
			cmd.RequestId = "req"
			err := h.apply(cmd)
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("apply: %v, want %v", err, tt.wantErr)
			}
			if tt.want != nil {
				got := h.member("backend", tt.want.GetRoute())
				if got.GetUrl() != tt.want.GetUrl() || got.GetWeight() != tt.want.GetWeight() || got.GetState() != tt.want.GetState() {
					t.Errorf("member %s: url %s weight %d %s, want %s %d %s", got.GetRoute(), got.GetUrl(), got.GetWeight(), got.GetState(),
						tt.want.GetUrl(), tt.want.GetWeight(), tt.want.GetState())
				}
			}
			// A retry answers what the first application answered (§5.3),
			// also for the new outcome EXISTS.
			data, encErr := EncodeCommand(cmd)
			if encErr != nil {
				t.Fatal(encErr)
			}
			h.index++
			again := h.f.Apply(&raft.Log{Index: h.index, Term: 1, Type: raft.LogCommand, Data: data})
			switch a := again.(type) {
			case AppliedEarlier:
				if err != nil {
					t.Errorf("retry: applied earlier at %d, first %v", a, err)
				}
			case error:
				if err == nil || !errors.Is(a, tt.wantErr) || a.Error() != err.Error() {
					t.Errorf("retry: %v, first %v", a, err)
				}
			default:
				t.Errorf("retry: %T %v, first %v", again, again, err)
			}
		})
	}
}

// TestPutMemberModeVersion: a PutMember with a mode is written at version 2,
// which a version 1 node refuses rather than applying it as an upsert that
// resets the admin state; every other command stays at version 1, so such
// a node applies it during a rolling upgrade.
func TestPutMemberModeVersion(t *testing.T) {
	for _, tc := range []struct {
		cmd  *gwelbv1.Command
		want uint32
	}{
		{cmdPutMember(t0, "backend", "1", "http://h:1"), 1},
		{cmdPutMode(t0, gwelbv1.PutMemberMode_PUT_MEMBER_MODE_CREATE, &gwelbv1.Member{Pool: "backend", Route: "1", Url: "http://h:1"}), 2},
		{cmdPutMode(t0, gwelbv1.PutMemberMode_PUT_MEMBER_MODE_UPDATE, &gwelbv1.Member{Pool: "backend", Route: "1", Weight: 2}), 2},
		{cmdSetState(t0, "backend", "1", gwelbv1.AdminState_ADMIN_STATE_DRAIN), 1},
		{cmdPutPool(t0, fxBackend()), 1},
		{cmdPutPool(t0, withProbers(fxBackend(), 3)), 3},
		{fxCmd(t0, &gwelbv1.Seed{Pools: []*gwelbv1.Pool{fxFrontend(), withProbers(fxBackend(), 2)}}), 3},
		{cmdBalancers(t0, "a", "b"), 1},
		{fxCmd(t0, &gwelbv1.SetBalancers{Nodes: []string{"a"}, Observers: []string{"nv"}}), 1},
		{cmdObserve(t0, "backend", "1", "a", true, t0, ""), 1},
		{cmdPassive(t0, "backend", "1", "nv", true, t0, ""), 3},
		{fxCmd(t0, &gwelbv1.PutPool{Pool: fxBackend(), Expected: fxBackend()}), 4},
	} {
		data, err := EncodeCommand(tc.cmd)
		if err != nil {
			t.Fatal(err)
		}
		var back gwelbv1.Command
		if err := proto.Unmarshal(data, &back); err != nil {
			t.Fatal(err)
		}
		if back.GetVersion() != tc.want {
			t.Errorf("%s mode %v: version %d, want %d", describe(tc.cmd), tc.cmd.GetPutMember().GetMode(), back.GetVersion(), tc.want)
		}
	}
	if MaxCommandVersion != 4 || CommandVersion != 1 {
		t.Errorf("versions: writes %d, applies up to %d", CommandVersion, MaxCommandVersion)
	}
}
