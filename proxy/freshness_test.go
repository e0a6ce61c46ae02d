package proxy

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/gwelb/gwelb/fsm"
)

// fakeFreshness stands in for a node's control plane: fresh or not,
// whether a node still behind may move sessions it cannot place (it has
// been behind past its bound), and what "catching up" does when a request
// waits (apply the newer table, or nothing: the node is cut off).
type fakeFreshness struct {
	fresh   atomic.Bool
	mayMove atomic.Bool
	waits   atomic.Int64
	mu      sync.Mutex
	catchUp func()
}

func (f *fakeFreshness) Fresh(int64) bool { return f.fresh.Load() }

func (f *fakeFreshness) MayMove(int64) bool { return f.fresh.Load() || f.mayMove.Load() }

func (f *fakeFreshness) AwaitFresh(context.Context) {
	f.waits.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.catchUp != nil {
		f.catchUp()
	}
}

// TestStaleTableHoldsOnlyMoves: while the table may be stale, a request
// the table would move (its route unknown or unusable here) waits for the
// catch-up and is routed on the table current then; requests the table
// honours, and new sessions, never wait; a healthy node never asks.
func TestStaleTableHoldsOnlyMoves(t *testing.T) {
	back := startMembers(t, "/backend", "1", "2", "3")
	old := backendPool(back[:2]) // member 3 was added while this node was behind
	h := startProxy(t, mustTable(t, old), Options{}, ListenerConfig{})
	f := &fakeFreshness{}
	h.srv.SetFreshness(f)
	f.catchUp = func() { h.srv.Update(mustTable(t, backendPool(back))) }

	wantServer(t, h.get(t, "/backend/x", "ROUTEID=.1"), "1")
	if r := h.get(t, "/backend/x"); r.status != http.StatusOK {
		t.Fatalf("new session: %v", r)
	}
	if n := f.waits.Load(); n != 0 {
		t.Fatalf("%d waits for requests the stale table honours", n)
	}

	r := h.get(t, "/backend/x", "ROUTEID=.3")
	wantServer(t, r, "3")
	wantCookie(t, r, "")
	if n := f.waits.Load(); n != 1 {
		t.Fatalf("%d waits for the request the stale table would move, want 1", n)
	}

	// Fresh: a move is a move (route gone for good), and nobody waits.
	f.fresh.Store(true)
	r = h.get(t, "/backend/x", "ROUTEID=.gone")
	if r.status != http.StatusOK || len(r.setCookies()) != 1 {
		t.Fatalf("unknown route on a fresh table: %v, want a new cookie", r)
	}
	if n := f.waits.Load(); n != 1 {
		t.Fatalf("a fresh table waited (%d waits)", n)
	}
}

// TestStaleTableRefusesUnplaceableMoves: a node that waited and is still
// behind (cut off, or the leader unreachable) does not move a session
// whose member it does not know or knows only as disabled — the operator
// may have added or enabled it meanwhile: 503 with Retry-After, no new
// cookie, no member contacted. A member DOWN on its table still fails
// over (news about the member, not the table), and once the node has been
// behind past its bound it routes on what it has. Sessions it can place
// and new sessions are served without waiting (invariants 1 and 4).
func TestStaleTableRefusesUnplaceableMoves(t *testing.T) {
	back := startMembers(t, "/backend", "1", "2", "3")
	pool := editMember(editMember(backendPool(back), "2", func(m *fsm.MemberSpec) { m.State = fsm.Disabled }),
		"3", func(m *fsm.MemberSpec) { m.Verdict = fsm.Down })
	tbl := mustTable(t, pool)
	for _, tc := range []struct {
		name      string
		cookie    string
		pastBound bool
		want      int    // status
		server    string // member that must answer; "" for any but the carried route's
		newRoute  bool   // a Set-Cookie naming another route
		waits     int64
	}{
		{name: "unknown route", cookie: "ROUTEID=.added", want: http.StatusServiceUnavailable, waits: 1},
		{name: "disabled member", cookie: "ROUTEID=.2", want: http.StatusServiceUnavailable, waits: 1},
		{name: "member down", cookie: "ROUTEID=.3", want: http.StatusOK, newRoute: true, waits: 1},
		{name: "unknown route past the bound", cookie: "ROUTEID=.added", pastBound: true, want: http.StatusOK, newRoute: true, waits: 1},
		{name: "disabled member past the bound", cookie: "ROUTEID=.2", pastBound: true, want: http.StatusOK, newRoute: true, waits: 1},
		{name: "sticky hit", cookie: "ROUTEID=.1", want: http.StatusOK, server: "1"},
		{name: "new session", want: http.StatusOK, newRoute: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := startProxy(t, tbl, Options{}, ListenerConfig{})
			f := &fakeFreshness{} // not fresh, and catching up changes nothing
			f.mayMove.Store(tc.pastBound)
			h.srv.SetFreshness(f)
			var r result
			if tc.cookie == "" {
				r = h.get(t, "/backend/x")
			} else {
				r = h.get(t, "/backend/x", tc.cookie)
			}
			if r.status != tc.want {
				t.Fatalf("got %v, want status %d", r, tc.want)
			}
			if n := f.waits.Load(); n != tc.waits {
				t.Errorf("%d waits for the catch-up, want %d", n, tc.waits)
			}
			if tc.want != http.StatusOK {
				if r.server() != "" || len(r.setCookies()) != 0 || r.header.Get("Retry-After") == "" || !strings.Contains(r.body, "behind the cluster") {
					t.Errorf("refusal %v (Retry-After %q): want no member, no cookie, a Retry-After and the reason", r, r.header.Get("Retry-After"))
				}
				return
			}
			if tc.server != "" {
				wantServer(t, r, tc.server)
			}
			if got := len(r.setCookies()) == 1 && !strings.HasSuffix(r.setCookies()[0], "."+strings.TrimPrefix(tc.cookie, "ROUTEID=.")+"; Path=/"); got != tc.newRoute {
				t.Errorf("Set-Cookie %q: new route %v, want %v", r.setCookies(), got, tc.newRoute)
			}
		})
	}
}

// TestReadyzNeedsPools: a table without pools is no table to route from.
func TestReadyzNeedsPools(t *testing.T) {
	srv := New(Options{Logger: discardLogger()})
	empty, err := fsm.NewTable(1, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv.Update(empty)
	if err := srv.Ready(); err == nil || !strings.Contains(err.Error(), "no pools") {
		t.Errorf("Ready with an empty table = %v, want no pools", err)
	}
}
