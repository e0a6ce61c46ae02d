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

// fakeFreshness stands in for a node's control plane: fresh or not, and
// what "catching up" does when a request waits (apply the newer table, or
// nothing: the bound passed while cut off).
type fakeFreshness struct {
	fresh   atomic.Bool
	waits   atomic.Int64
	mu      sync.Mutex
	catchUp func()
}

func (f *fakeFreshness) Fresh(int64) bool { return f.fresh.Load() }

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

// TestStaleTableStillServesAfterTheBound: a node cut off from its peers
// cannot catch up; once the wait is over the request is served from the
// table it has, never failed.
func TestStaleTableStillServesAfterTheBound(t *testing.T) {
	back := startMembers(t, "/backend", "1", "2")
	h := startProxy(t, mustTable(t, backendPool(back)), Options{}, ListenerConfig{})
	f := &fakeFreshness{} // not fresh, and catching up changes nothing
	h.srv.SetFreshness(f)
	r := h.get(t, "/backend/x", "ROUTEID=.elsewhere")
	if r.status != http.StatusOK || len(r.setCookies()) != 1 || !strings.HasPrefix(r.setCookies()[0], "ROUTEID=.") {
		t.Fatalf("after the wait: %v, want served with a new cookie", r)
	}
	if n := f.waits.Load(); n != 1 {
		t.Fatalf("%d waits, want 1 (decided again once, not waiting twice)", n)
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
