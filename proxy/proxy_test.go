package proxy

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/gwelb/gwelb/fsm"
	"github.com/gwelb/gwelb/internal/gwedemo"
	"github.com/gwelb/gwelb/internal/testnet"
)

// seed is the guide's single load balancer: frontend members GWE_F_1..3
// and backend members 1..3 behind one listener.
type seed struct {
	*harness
	front, back []*member
	tbl         *fsm.Table
}

func startSeed(t *testing.T, opts Options, lc ListenerConfig) *seed {
	t.Helper()
	s := &seed{
		front: startMembers(t, "/frontend", "GWE_F_1", "GWE_F_2", "GWE_F_3"),
		back:  startMembers(t, "/backend", "1", "2", "3"),
	}
	s.tbl = mustTable(t, frontendPool(s.front), backendPool(s.back))
	s.harness = startProxy(t, s.tbl, opts, lc)
	return s
}

// Rule 1: pools by path prefix; one listener may serve both or one.
func TestPoolsByPrefix(t *testing.T) {
	s := startSeed(t, Options{}, ListenerConfig{})
	onlyBackend := startProxy(t, s.tbl, Options{}, ListenerConfig{Pools: []string{"backend"}})
	tests := []struct {
		target    string
		pool      string // "frontend", "backend" or "" for 404
		backendLn bool   // the backend-only listener serves it
	}{
		{"/frontend", "frontend", false},
		{"/frontend/", "frontend", false},
		{"/frontend/resources/js/track.js", "frontend", false},
		{"/frontend/about", "frontend", false},
		{"/backend", "backend", true},
		{"/backend/cometd/handshake", "backend", true},
		{"/backend/about", "backend", true},
		{"/frontendX", "", false},
		{"/frontendX/y", "", false},
		{"/backendfoo", "", false},
		{"/Backend/x", "", false},
		{"/", "", false},
		{"/unknown/x", "", false},
		{"/favicon.ico", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			for _, ln := range []struct {
				name   string
				h      *harness
				serves bool
			}{
				{"both pools", s.harness, tt.pool != ""},
				{"backend only", onlyBackend, tt.backendLn},
			} {
				r := ln.h.get(t, tt.target)
				if !ln.serves {
					if r.status != http.StatusNotFound || r.server() != "" {
						t.Errorf("%s listener: got %v, want 404 from the balancer", ln.name, r)
					}
					if len(r.body) > 100 {
						t.Errorf("%s listener: 404 body is %d bytes, want a short message", ln.name, len(r.body))
					}
					continue
				}
				if r.status != http.StatusOK {
					t.Errorf("%s listener: got %v, want 200", ln.name, r)
					continue
				}
				members := map[string]string{"frontend": "GWE_F_1 GWE_F_2 GWE_F_3", "backend": "1 2 3"}[tt.pool]
				if srv := r.server(); !slices.Contains(strings.Fields(members), srv) {
					t.Errorf("%s listener: served by %q, want a %s member", ln.name, srv, tt.pool)
				}
			}
		})
	}
}

// Rule 3 and 5: the guide's sticky forms reach the named member; a sticky
// hit sets no cookie.
func TestStickyForms(t *testing.T) {
	s := startSeed(t, Options{}, ListenerConfig{})
	tests := []struct {
		name    string
		target  string
		cookies []string // one Cookie header line each
		want    string   // the member that must answer
	}{
		{"alias query", "/frontend/x?alias=.GWE_F_2", nil, "GWE_F_2"},
		{"alias query only parameter of many", "/frontend/x?a=1&alias=.GWE_F_3&b=2", nil, "GWE_F_3"},
		{"frontend cookie", "/frontend/x", []string{"FRONTEND_ROUTEID=.GWE_F_2"}, "GWE_F_2"},
		{"backend cookie", "/backend/x", []string{"ROUTEID=.2"}, "2"},
		{"backend cookie among others", "/backend/x", []string{"JSESSIONID=abc; ROUTEID=.3; _ga=GA1.2.3"}, "3"},
		{"alias beats cookie", "/frontend/x?alias=.GWE_F_3", []string{"FRONTEND_ROUTEID=.GWE_F_1"}, "GWE_F_3"},
		{"route after first dot", "/backend/x", []string{"ROUTEID=abc.2"}, "2"},
		{"alias with prefix before dot", "/frontend/x?alias=visitor42.GWE_F_1", nil, "GWE_F_1"},
		{"url-encoded alias", "/frontend/x?alias=%2EGWE_F_2", nil, "GWE_F_2"},
		{"url-encoded alias lower-case escape", "/frontend/x?alias=%2eGWE%5fF%5f3", nil, "GWE_F_3"},
		{"duplicated alias: first wins", "/frontend/x?alias=.GWE_F_2&alias=.GWE_F_3", nil, "GWE_F_2"},
		{"duplicated cookie: first wins", "/backend/x", []string{"ROUTEID=.2; ROUTEID=.3"}, "2"},
		{"two Cookie lines", "/backend/x", []string{"a=b", "ROUTEID=.3"}, "3"},
		{"two Cookie lines both named: first wins", "/backend/x", []string{"ROUTEID=.1", "ROUTEID=.3"}, "1"},
		{"quoted cookie value", "/backend/x", []string{`ROUTEID=".2"`}, "2"},
		{"cookie with odd spacing", "/backend/x", []string{"a=1;   ROUTEID=.2  ;b=2"}, "2"},
		{"lower-case name is another cookie", "/backend/x", []string{"routeid=.1; ROUTEID=.3"}, "3"},
		{"frontend ignores backend cookie", "/frontend/x?alias=.GWE_F_1", []string{"ROUTEID=.2"}, "GWE_F_1"},
		{"backend ignores alias", "/backend/x?alias=.1", []string{"ROUTEID=.3"}, "3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 3 { // sticky means every time
				r := s.get(t, tt.target, tt.cookies...)
				wantServer(t, r, tt.want)
				wantCookie(t, r, "")
			}
		})
	}
}

// Rule 3, 6, 7 and 10: values that carry no usable route are new sessions:
// never a 500, and the response pins the member it chose.
func TestStickyNoRoute(t *testing.T) {
	s := startSeed(t, Options{}, ListenerConfig{})
	huge := strings.Repeat("a", 10<<10) + ".2"
	tests := []struct {
		name   string
		pool   string
		target string
		lines  []string // raw header lines
		// value is the sticky value the proxy should hash for the
		// fallback; "" means none (round robin).
		value string
	}{
		{"no value", "backend", "/backend/x", nil, ""},
		{"value without dot", "backend", "/backend/x", []string{"Cookie: ROUTEID=visitor-7"}, "visitor-7"},
		{"unknown route", "backend", "/backend/x", []string{"Cookie: ROUTEID=.9"}, ".9"},
		{"empty route after dot", "backend", "/backend/x", []string{"Cookie: ROUTEID=abc."}, "abc."},
		{"cookie value taken verbatim, not decoded", "backend", "/backend/x", []string{"Cookie: ROUTEID=.%32"}, ".%32"},
		{"name is case-sensitive", "backend", "/backend/x", []string{"Cookie: routeid=.2"}, ""},
		{"name must match whole", "backend", "/backend/x", []string{"Cookie: XROUTEID=.2; ROUTEID2=.2"}, ""},
		{"route is case-sensitive", "frontend", "/frontend/x?alias=.gwe_f_2", nil, ".gwe_f_2"},
		{"alias name is case-sensitive", "frontend", "/frontend/x?Alias=.GWE_F_2", nil, ""},
		{"empty cookie", "backend", "/backend/x", []string{"Cookie: ROUTEID="}, ""},
		{"empty alias", "frontend", "/frontend/x?alias=", nil, ""},
		{"alias without =", "frontend", "/frontend/x?alias", nil, ""},
		{"malformed escape", "frontend", "/frontend/x?alias=%zz.GWE_F_2", nil, ""},
		{"escaped control char", "frontend", "/frontend/x?alias=.GWE_F_2%00", nil, ""},
		{"escaped newline", "frontend", "/frontend/x?alias=.GWE_F_2%0D%0AX-Evil:%201", nil, ""},
		{"plus decodes to space", "frontend", "/frontend/x?alias=a+.GWE_F_2", nil, ""},
		{"escaped non-ASCII", "frontend", "/frontend/x?alias=.GWE_F_%C3%A9", nil, ""},
		{"raw non-ASCII cookie", "backend", "/backend/x", []string{"Cookie: ROUTEID=.2\xc3\xa9"}, ""},
		{"comma in cookie", "backend", "/backend/x", []string{"Cookie: ROUTEID=.2,3"}, ""},
		{"backslash in cookie", "backend", "/backend/x", []string{`Cookie: ROUTEID=.\2`}, ""},
		{"unbalanced quote", "backend", "/backend/x", []string{`Cookie: ROUTEID=".2`}, ""},
		{"quote inside", "backend", "/backend/x", []string{`Cookie: ROUTEID=""".2"""`}, ""},
		{"10 KB cookie", "backend", "/backend/x", []string{"Cookie: ROUTEID=" + huge}, ""},
		{"10 KB alias", "frontend", "/frontend/x?alias=" + huge, nil, ""},
		{"longest honoured value", "backend", "/backend/x", []string{"Cookie: ROUTEID=" + strings.Repeat("v", fsm.MaxStickyLen-2) + ".9"}, strings.Repeat("v", fsm.MaxStickyLen-2) + ".9"},
		{"one byte too long", "backend", "/backend/x", []string{"Cookie: ROUTEID=" + strings.Repeat("v", fsm.MaxStickyLen-1) + ".2"}, ""},
		{"first duplicate malformed", "backend", "/backend/x", []string{"Cookie: ROUTEID=,; ROUTEID=.2"}, ""},
		{"cookie without value", "backend", "/backend/x", []string{"Cookie: ROUTEID; other=.2"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cookieName := map[string]string{"frontend": "FRONTEND_ROUTEID", "backend": "ROUTEID"}[tt.pool]
			first := ""
			for i := range 3 {
				r := s.rawGet(t, tt.target, tt.lines...)
				if r.status != http.StatusOK || r.server() == "" {
					t.Fatalf("got %v, want 200 from a member", r)
				}
				// A new or moved session: the answer pins the member.
				wantCookie(t, r, cookieName+"=."+r.server()+"; Path=/")
				if tt.value == "" {
					continue // round robin: any member
				}
				// A value is hashed: the same member every time, the
				// rendezvous winner, on every node.
				if want := rendezvousRoute(t, s.tbl, tt.pool, tt.value); r.server() != want {
					t.Fatalf("request %d: served by %s, want rendezvous member %s", i, r.server(), want)
				}
				if first == "" {
					first = r.server()
				} else if r.server() != first {
					t.Fatalf("same value went to %s then %s", first, r.server())
				}
			}
		})
	}
}

// Rule 10: header bytes the HTTP layer rejects never become a 500.
func TestStickyControlCharsNever500(t *testing.T) {
	s := startSeed(t, Options{}, ListenerConfig{})
	for _, line := range []string{
		"Cookie: ROUTEID=.2\x01",
		"Cookie: ROUTEID=.\x7f2",
		"Cookie: ROUTEID=\x00.2",
	} {
		r := s.rawGet(t, "/backend/x", line)
		if r.status >= 500 || (r.status != http.StatusOK && r.status != http.StatusBadRequest) {
			t.Errorf("%q: got %v, want 400 (rejected) or 200 (no route)", line, r)
		}
		if r.status == http.StatusOK && r.header.Get("Set-Cookie") == "" {
			t.Errorf("%q: served without pinning a member: %v", line, r)
		}
	}
}

// Rule 6: a value without a route is hashed, so it always reaches the same
// member, and different values spread over the pool.
func TestNoRouteValueRendezvous(t *testing.T) {
	s := startSeed(t, Options{}, ListenerConfig{})
	seen := map[string]int{}
	for i := range 60 {
		v := fmt.Sprintf("visitor%d", i)
		want := rendezvousRoute(t, s.tbl, "backend", v)
		for range 2 {
			r := s.get(t, "/backend/x", "ROUTEID="+v)
			wantServer(t, r, want)
			wantCookie(t, r, "ROUTEID=."+want+"; Path=/")
		}
		seen[want]++
	}
	if len(seen) != 3 {
		t.Errorf("60 values reached %v, want all 3 members", seen)
	}
}

// Rule 6 and 7: an unknown route falls back and the answer re-pins; the
// new cookie is then a plain sticky hit.
func TestUnknownRouteFallbackRepins(t *testing.T) {
	s := startSeed(t, Options{}, ListenerConfig{})
	for _, tt := range []struct{ pool, target, cookie string }{
		{"backend", "/backend/x", "ROUTEID"},
		{"frontend", "/frontend/x", "FRONTEND_ROUTEID"},
	} {
		want := rendezvousRoute(t, s.tbl, tt.pool, ".GWE_F_9")
		r := s.get(t, tt.target, tt.cookie+"=.GWE_F_9")
		wantServer(t, r, want)
		wantCookie(t, r, tt.cookie+"=."+want+"; Path=/")
		r = s.get(t, tt.target, tt.cookie+"=."+want)
		wantServer(t, r, want)
		wantCookie(t, r, "")
	}
	// An unknown alias re-pins with the cookie; the alias keeps winning
	// while the client sends it.
	want := rendezvousRoute(t, s.tbl, "frontend", ".GWE_F_9")
	r := s.get(t, "/frontend/x?alias=.GWE_F_9", "FRONTEND_ROUTEID=.GWE_F_1")
	wantServer(t, r, want)
	if want != "GWE_F_1" {
		wantCookie(t, r, "FRONTEND_ROUTEID=."+want+"; Path=/")
	}
}

// Rule 2, 4, 5, 6: drain keeps sessions and takes no new ones; disabled and
// down members lose their sessions to one deterministic replacement.
func TestAdminStatesAndVerdicts(t *testing.T) {
	back := startMembers(t, "/backend", "1", "2", "3")
	base := backendPool(back)
	tests := []struct {
		name      string
		edit      func(*fsm.MemberSpec)
		keepsHits bool
	}{
		{"drain", func(m *fsm.MemberSpec) { m.State = fsm.Drain }, true},
		{"disabled", func(m *fsm.MemberSpec) { m.State = fsm.Disabled }, false},
		{"verdict down", func(m *fsm.MemberSpec) { m.Verdict = fsm.Down }, false},
		{"drain and down", func(m *fsm.MemberSpec) { m.State = fsm.Drain; m.Verdict = fsm.Down }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tbl := mustTable(t, editMember(base, "2", tt.edit))
			h := startProxy(t, tbl, Options{}, ListenerConfig{})
			// Sessions pinned to 2.
			for _, v := range []string{".2", "a.2", "visitor-9.2"} {
				var first string
				for range 5 {
					r := h.get(t, "/backend/x", "ROUTEID="+v)
					if tt.keepsHits {
						wantServer(t, r, "2")
						wantCookie(t, r, "")
						continue
					}
					if r.status != http.StatusOK || r.server() == "2" || r.server() == "" {
						t.Fatalf("ROUTEID=%s: got %v, want a replacement for 2", v, r)
					}
					if want := rendezvousRoute(t, tbl, "backend", v); r.server() != want {
						t.Fatalf("ROUTEID=%s: replacement %s, want rendezvous %s", v, r.server(), want)
					}
					if first != "" && r.server() != first {
						t.Fatalf("ROUTEID=%s: replacement changed from %s to %s", v, first, r.server())
					}
					first = r.server()
					wantCookie(t, r, "ROUTEID=."+first+"; Path=/")
				}
			}
			// New sessions, with and without a value, never reach 2.
			for i := range 40 {
				r := h.get(t, "/backend/x")
				if r.status != http.StatusOK || r.server() == "2" {
					t.Fatalf("new session %d: got %v, want a member other than 2", i, r)
				}
				r = h.get(t, "/backend/x", fmt.Sprintf("ROUTEID=v%d", i))
				if r.status != http.StatusOK || r.server() == "2" {
					t.Fatalf("new hashed session %d: got %v, want a member other than 2", i, r)
				}
			}
		})
	}
}

// Rule 7: a re-pinned session stays on its new member when the old one
// comes back.
func TestRepinnedSessionStaysAfterRecovery(t *testing.T) {
	back := startMembers(t, "/backend", "1", "2", "3")
	up := mustTable(t, backendPool(back))
	down := mustTable(t, editMember(backendPool(back), "2", func(m *fsm.MemberSpec) { m.Verdict = fsm.Down }))
	h := startProxy(t, down, Options{}, ListenerConfig{})
	r := h.get(t, "/backend/x", "ROUTEID=.2")
	moved := r.server()
	if r.status != http.StatusOK || moved == "2" {
		t.Fatalf("with 2 down: %v", r)
	}
	cookie := strings.TrimSuffix(r.setCookies()[0], "; Path=/")
	h.srv.Update(up)
	r = h.get(t, "/backend/x", cookie)
	wantServer(t, r, moved)
	wantCookie(t, r, "")
}

// Rule 7: Set-Cookie exactly as the guide's Apache config writes it, only
// when the route is assigned or changed.
func TestSetCookieOnlyWhenAssigned(t *testing.T) {
	s := startSeed(t, Options{}, ListenerConfig{})
	r := s.get(t, "/backend/x")
	if r.status != http.StatusOK || r.server() == "" {
		t.Fatalf("new session: %v", r)
	}
	route := r.server()
	wantCookie(t, r, "ROUTEID=."+route+"; Path=/")
	// The browser sends it back: a hit, no cookie.
	r = s.get(t, "/backend/x", "ROUTEID=."+route)
	wantServer(t, r, route)
	wantCookie(t, r, "")
	// A member's own cookies pass untouched beside ours.
	own := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: "JSESSIONID", Value: "xyz", Path: "/backend"})
		io.WriteString(w, "own\n")
	}))
	t.Cleanup(own.Close)
	h := startProxy(t, mustTable(t, fsm.PoolSpec{Name: "backend", Prefix: "/backend", Sticky: fsm.StickySpec{Cookie: "ROUTEID", Insert: true},
		Members: []fsm.MemberSpec{{Route: "own", URL: own.URL}}}), Options{}, ListenerConfig{})
	r = h.get(t, "/backend/x")
	if got := r.setCookies(); len(got) != 2 || got[0] != "JSESSIONID=xyz; Path=/backend" || got[1] != "ROUTEID=.own; Path=/" {
		t.Errorf("Set-Cookie = %q, want the member's cookie then ROUTEID=.own; Path=/", got)
	}
	r = h.get(t, "/backend/x", "ROUTEID=.own")
	if got := r.setCookies(); len(got) != 1 || got[0] != "JSESSIONID=xyz; Path=/backend" {
		t.Errorf("sticky hit: Set-Cookie = %q, want only the member's own", got)
	}
	// Without insert_cookie (the guide's alias-only frontend) nothing is set.
	noInsert := frontendPool(startMembers(t, "/frontend", "GWE_F_1"))
	noInsert.Sticky.Insert = false
	h = startProxy(t, mustTable(t, noInsert), Options{}, ListenerConfig{})
	r = h.get(t, "/frontend/x")
	wantServer(t, r, "GWE_F_1")
	wantCookie(t, r, "")
}

func TestCookieAttributes(t *testing.T) {
	back := startMembers(t, "/backend", "1")
	tests := []struct {
		name  string
		attrs fsm.CookieSpec
		want  string
	}{
		{"defaults", fsm.CookieSpec{}, "ROUTEID=.1; Path=/"},
		{"all", fsm.CookieSpec{Path: "/backend", Domain: "gwe.example.com", MaxAge: 3600, Secure: true, HTTPOnly: true, SameSite: "None"},
			"ROUTEID=.1; Path=/backend; Domain=gwe.example.com; Max-Age=3600; Secure; HttpOnly; SameSite=None"},
		{"lax", fsm.CookieSpec{SameSite: "Lax"}, "ROUTEID=.1; Path=/; SameSite=Lax"},
		{"strict httponly", fsm.CookieSpec{HTTPOnly: true, SameSite: "Strict"}, "ROUTEID=.1; Path=/; HttpOnly; SameSite=Strict"},
		{"max-age only", fsm.CookieSpec{MaxAge: 60}, "ROUTEID=.1; Path=/; Max-Age=60"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := backendPool(back)
			spec.Cookie = tt.attrs
			h := startProxy(t, mustTable(t, spec), Options{}, ListenerConfig{})
			r := h.get(t, "/backend/x")
			wantServer(t, r, "1")
			wantCookie(t, r, tt.want)
			// And a browser reads it as meant.
			c, err := http.ParseSetCookie(r.setCookies()[0])
			if err != nil {
				t.Fatalf("ParseSetCookie: %v", err)
			}
			wantPath := tt.attrs.Path
			if wantPath == "" {
				wantPath = "/"
			}
			if c.Name != "ROUTEID" || c.Value != ".1" || c.Path != wantPath || c.Domain != tt.attrs.Domain ||
				c.MaxAge != tt.attrs.MaxAge || c.Secure != tt.attrs.Secure || c.HttpOnly != tt.attrs.HTTPOnly {
				t.Errorf("parsed cookie %+v does not match %+v", c, tt.attrs)
			}
		})
	}
}

// Rule 6: new sessions follow the weights.
func TestWeightedRoundRobin(t *testing.T) {
	back := startMembers(t, "/backend", "1", "2")
	spec := backendPool(back)
	spec.Members[0].Weight = 1
	spec.Members[1].Weight = 3
	h := startProxy(t, mustTable(t, spec), Options{}, ListenerConfig{})
	counts := map[string]int{}
	run, maxRun, last := 0, 0, ""
	for range 400 {
		r := h.get(t, "/backend/x")
		if r.status != http.StatusOK {
			t.Fatalf("new session: %v", r)
		}
		counts[r.server()]++
		if r.server() == last {
			run++
		} else {
			run, last = 1, r.server()
		}
		maxRun = max(maxRun, run)
	}
	if counts["1"] != 100 || counts["2"] != 300 {
		t.Errorf("400 new sessions with weights 1:3 went %v, want 1:100 2:300", counts)
	}
	// Smooth: member 1 is never starved for more than its period.
	if maxRun > 3 {
		t.Errorf("member 2 got %d new sessions in a row, want at most 3", maxRun)
	}
	// Concurrent new sessions keep the proportion (within a tolerance).
	var mu sync.Mutex
	conc := map[string]int{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				resp, err := h.client.Get(h.base + "/backend/x")
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				mu.Lock()
				conc[resp.Header.Get(gwedemo.HeaderServer)]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if conc["1"] < 90 || conc["1"] > 110 || conc["1"]+conc["2"] != 400 {
		t.Errorf("400 concurrent new sessions went %v, want about 1:100 2:300", conc)
	}
}

// Rule 10: no usable member answers 503 with a short body.
func TestNoUsableMember503(t *testing.T) {
	back := startMembers(t, "/backend", "1", "2")
	allOff := editMember(editMember(backendPool(back), "1", func(m *fsm.MemberSpec) { m.State = fsm.Disabled }),
		"2", func(m *fsm.MemberSpec) { m.Verdict = fsm.Down })
	onlyDrain := editMember(editMember(backendPool(back), "1", func(m *fsm.MemberSpec) { m.State = fsm.Drain }),
		"2", func(m *fsm.MemberSpec) { m.State = fsm.Disabled })
	empty := fsm.PoolSpec{Name: "backend", Prefix: "/backend", Sticky: fsm.StickySpec{Cookie: "ROUTEID", Insert: true}}
	tests := []struct {
		name    string
		spec    fsm.PoolSpec
		cookies []string
	}{
		{"all unusable, new session", allOff, nil},
		{"all unusable, sticky", allOff, []string{"ROUTEID=.1"}},
		{"all unusable, hashed", allOff, []string{"ROUTEID=abc"}},
		{"only drain, new session", onlyDrain, nil},
		{"no members", empty, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := startProxy(t, mustTable(t, tt.spec), Options{}, ListenerConfig{})
			r := h.get(t, "/backend/x", tt.cookies...)
			if r.status != http.StatusServiceUnavailable || r.server() != "" {
				t.Fatalf("got %v, want 503 from the balancer", r)
			}
			if len(r.body) == 0 || len(r.body) > 100 {
				t.Errorf("503 body %q, want a short message", r.body)
			}
			wantCookie(t, r, "")
		})
	}
	// The drain member still serves its own sessions.
	h := startProxy(t, mustTable(t, onlyDrain), Options{}, ListenerConfig{})
	wantServer(t, h.get(t, "/backend/x", "ROUTEID=.1"), "1")
}

// Rule 10: header limits answer 431.
func TestHeaderLimit431(t *testing.T) {
	s := startSeed(t, Options{}, ListenerConfig{MaxHeaderBytes: 1024})
	// net/http allows some slack above MaxHeaderBytes; 16 KiB is well past it.
	r := s.rawGet(t, "/backend/x", "Cookie: ROUTEID=.2; big="+strings.Repeat("x", 16<<10))
	if r.status != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("got %v, want 431", r)
	}
	// A normal request on the same listener still works.
	wantServer(t, s.get(t, "/backend/x", "ROUTEID=.2"), "2")
}

// Rule 9: the request target reaches GWE byte for byte. (Paths with
// dot-segments or encoded slashes are refused instead: TestPathAttacks.)
func TestRequestTargetVerbatim(t *testing.T) {
	s := startSeed(t, Options{}, ListenerConfig{})
	targets := []string{
		"/backend/a%20b/%3B?x=%2F&y=a;b&z=../%2e%2e%5c",
		"/backend/a%20b/c;jsessionid=1",
		"/backend/x?",
		"/backend/x?a=1&&b=%zz&c",
		"/backend/caf%C3%A9/%7Euser?q=%E2%82%AC+1",
		"/backend/x.y/.z/..a/a..",
		"/backend//double//slash",
		"/backend/x?redirect=http://example.com/?a=b#c",
		"/backend/%2d%2D/x",
		"/backend/{id}|a^b`c\"d'e!$&()*+,;=:@[]",
		"/backend/%7bid%7d?q={x}|\"",
		"/frontend/cometd/handshake?alias=.GWE_F_2&jsonp=cb%28%29",
	}
	for _, target := range targets {
		t.Run(target, func(t *testing.T) {
			r := s.rawGet(t, target)
			if r.status != http.StatusOK {
				t.Fatalf("got %v, want 200", r)
			}
			if got := r.header.Get(gwedemo.HeaderURI); got != target {
				t.Errorf("member got target %q, want %q", got, target)
			}
		})
	}
	// The same through Go's client with URL.Opaque, the other way a
	// program sends an exact target.
	req, err := http.NewRequest(http.MethodGet, s.base, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.URL.Opaque = "/backend/a%20b/%3B"
	req.URL.RawQuery = "x=%2F&y=a;b"
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got, want := resp.Header.Get(gwedemo.HeaderURI), "/backend/a%20b/%3B?x=%2F&y=a;b"; got != want {
		t.Errorf("URL.Opaque request: member got %q, want %q", got, want)
	}
}

func TestForwardedHeaders(t *testing.T) {
	s := startSeed(t, Options{}, ListenerConfig{})
	tests := []struct {
		name      string
		hdr       http.Header
		wantFor   string
		wantHost  string
		wantProto string
	}{
		{"fresh", nil, "127.0.0.1", s.addr, "http"},
		{"appended to client's", http.Header{"X-Forwarded-For": {"203.0.113.7"}}, "203.0.113.7, 127.0.0.1", s.addr, "http"},
		{"appended to two lines", http.Header{"X-Forwarded-For": {"203.0.113.7", "198.51.100.1, 10.0.0.1"}}, "203.0.113.7, 198.51.100.1, 10.0.0.1, 127.0.0.1", s.addr, "http"},
		{"client cannot forge proto or host", http.Header{"X-Forwarded-Proto": {"https"}, "X-Forwarded-Host": {"evil.example.com"}, "Host": {"gwe.example.com"}}, "127.0.0.1", "gwe.example.com", "http"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hdr := tt.hdr.Clone()
			if hdr == nil {
				hdr = http.Header{}
			}
			hdr["Cookie"] = []string{"JSESSIONID=abc; ROUTEID=.2"}
			r := s.do(t, http.MethodGet, "/backend/x", hdr, nil)
			wantServer(t, r, "2")
			for k, want := range map[string]string{
				gwedemo.HeaderGotForwardedFor:   tt.wantFor,
				gwedemo.HeaderGotForwardedHost:  tt.wantHost,
				gwedemo.HeaderGotForwardedProto: tt.wantProto,
				gwedemo.HeaderGotCookie:         "JSESSIONID=abc; ROUTEID=.2",
			} {
				if got := r.header.Get(k); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
		})
	}
}

// Hop-by-hop headers stop at the balancer, both ways.
func TestHopByHopHeaders(t *testing.T) {
	got := make(chan http.Header, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Clone()
		w.Header().Set("Connection", "X-Resp-Hop")
		w.Header().Set("X-Resp-Hop", "1")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("X-Resp-End", "1")
		io.WriteString(w, "ok\n")
	}))
	t.Cleanup(up.Close)
	h := startProxy(t, mustTable(t, fsm.PoolSpec{Name: "backend", Prefix: "/backend", Sticky: fsm.StickySpec{Cookie: "ROUTEID"},
		Members: []fsm.MemberSpec{{Route: "1", URL: up.URL}}}), Options{}, ListenerConfig{})
	r := h.rawGet(t, "/backend/x",
		"Connection: X-Foo, keep-alive",
		"X-Foo: 1",
		"Keep-Alive: timeout=5",
		"Proxy-Connection: keep-alive",
		"Proxy-Authorization: Basic Zm9vOmJhcg==",
		"Te: gzip",
		"X-End-To-End: 1",
	)
	if r.status != http.StatusOK {
		t.Fatalf("got %v", r)
	}
	hdr := <-got
	for _, k := range []string{"X-Foo", "Keep-Alive", "Proxy-Connection", "Proxy-Authorization", "Te"} {
		if v, ok := hdr[k]; ok {
			t.Errorf("member got hop-by-hop %s: %q", k, v)
		}
	}
	if hdr.Get("X-End-To-End") != "1" {
		t.Errorf("member did not get X-End-To-End: %v", hdr)
	}
	for _, k := range []string{"X-Resp-Hop", "Keep-Alive"} {
		if v, ok := r.header[k]; ok {
			t.Errorf("client got hop-by-hop %s: %q", k, v)
		}
	}
	if r.header.Get("X-Resp-End") != "1" {
		t.Errorf("client did not get X-Resp-End: %v", r.header)
	}
}

func TestAccessLog(t *testing.T) {
	s := startSeed(t, Options{}, ListenerConfig{})
	r := s.get(t, "/frontend/x?alias=.GWE_F_2&marker=one", "FRONTEND_ROUTEID=.GWE_F_1")
	wantServer(t, r, "GWE_F_2")
	line := s.logLine(t, "marker=one")
	upstream := strings.TrimPrefix(s.front[1].ts.URL, "http://")
	for _, want := range []string{
		`127.0.0.1 - - [`,
		`"GET /frontend/x?alias=.GWE_F_2&marker=one HTTP/1.1" 200 8 `,
		` pool=frontend`,
		` alias=".GWE_F_2"`,
		` cookie=".GWE_F_1"`,
		` route=GWE_F_2`,
		` upstream=` + upstream + ` `,
		` upstream_time=`,
	} {
		if !strings.Contains(line, want) {
			t.Errorf("access log line %q lacks %q", line, want)
		}
	}
	// A new session logs the member chosen; absent keys log "-".
	r = s.get(t, "/backend/x?marker=two")
	line = s.logLine(t, "marker=two")
	for _, want := range []string{" 200 ", ` pool=backend`, ` alias="-"`, ` cookie="-"`, " route=" + r.server() + " "} {
		if !strings.Contains(line, want) {
			t.Errorf("access log line %q lacks %q", line, want)
		}
	}
	// Balancer answers are logged too.
	s.get(t, "/nowhere?marker=three")
	line = s.logLine(t, "marker=three")
	for _, want := range []string{`"GET /nowhere?marker=three HTTP/1.1" 404 `, " route=- retried_from=- upstream=- "} {
		if !strings.Contains(line, want) {
			t.Errorf("access log line %q lacks %q", line, want)
		}
	}
	// Client input is quoted: it cannot forge fields or lines.
	before := len(s.log.lines())
	s.rawGet(t, "/backend/x?marker=four", `User-Agent: a" route=9 "`, "Referer: \xff\xfe")
	line = s.logLine(t, "marker=four")
	for _, want := range []string{`"a\" route=9 \""`, `"\xff\xfe"`} {
		if !strings.Contains(line, want) {
			t.Errorf("access log line %q lacks %q", line, want)
		}
	}
	if n := len(s.log.lines()); n != before+1 {
		t.Errorf("one request wrote %d lines", n-before)
	}
}

// Contract invariant 2: two balancer nodes fed the same table pick the
// same member for every sticky value, before and after the pinned member
// becomes unusable.
func TestTwoServersAgree(t *testing.T) {
	back := startMembers(t, "/backend", "1", "2", "3", "4")
	base := backendPool(back)
	tables := []struct {
		name string
		tbl  *fsm.Table
	}{
		{"all up", mustTable(t, base)},
		{"2 disabled", mustTable(t, editMember(base, "2", func(m *fsm.MemberSpec) { m.State = fsm.Disabled }))},
		{"2 down", mustTable(t, editMember(base, "2", func(m *fsm.MemberSpec) { m.Verdict = fsm.Down }))},
	}
	a := startProxy(t, tables[0].tbl, Options{}, ListenerConfig{})
	b := startProxy(t, tables[0].tbl, Options{}, ListenerConfig{})
	var vals []string
	for i := range 60 {
		vals = append(vals, fmt.Sprintf("v%d.2", i), fmt.Sprintf("visitor-%d", i), fmt.Sprintf(".%d", i%6))
	}
	for _, tt := range tables {
		t.Run(tt.name, func(t *testing.T) {
			a.srv.Update(tt.tbl)
			b.srv.Update(tt.tbl)
			spread := map[string]int{}
			for _, v := range vals {
				// Warm the round-robin counters differently: it must not matter.
				a.get(t, "/backend/x")
				ra := a.get(t, "/backend/x", "ROUTEID="+v)
				rb := b.get(t, "/backend/x", "ROUTEID="+v)
				if ra.status != http.StatusOK || rb.status != http.StatusOK {
					t.Fatalf("ROUTEID=%s: %v / %v", v, ra, rb)
				}
				if ra.server() != rb.server() {
					t.Fatalf("ROUTEID=%s: node A chose %s, node B %s", v, ra.server(), rb.server())
				}
				if ca, cb := strings.Join(ra.setCookies(), "|"), strings.Join(rb.setCookies(), "|"); ca != cb {
					t.Fatalf("ROUTEID=%s: cookies differ: %q vs %q", v, ra.setCookies(), rb.setCookies())
				}
				if tt.name != "all up" && ra.server() == "2" {
					t.Fatalf("ROUTEID=%s went to unusable member 2", v)
				}
				if strings.HasPrefix(v, "v") && strings.HasSuffix(v, ".2") {
					spread[ra.server()]++
				}
			}
			if tt.name == "all up" {
				if len(spread) != 1 || spread["2"] != 60 {
					t.Errorf("sessions pinned to 2 went %v, want all on 2", spread)
				}
			} else if len(spread) != 3 {
				// The replacement is per session, not one neighbour taking all.
				t.Errorf("sessions of 2 moved to %v, want spread over 1, 3 and 4", spread)
			}
		})
	}
}

// Rule 9: WebSockets keep stickiness and carry big messages.
func TestWebSocketSticky(t *testing.T) {
	s := startSeed(t, Options{}, ListenerConfig{})
	wsBase := "ws://" + s.addr
	dial := func(t *testing.T, target string, hdr http.Header) (*websocket.Conn, *http.Response) {
		t.Helper()
		ctx := t.Context()
		c, resp, err := websocket.Dial(ctx, wsBase+target, &websocket.DialOptions{HTTPHeader: hdr, HTTPClient: s.client})
		if err != nil {
			t.Fatalf("dial %s: %v", target, err)
		}
		t.Cleanup(func() { c.CloseNow() })
		c.SetReadLimit(4 << 20)
		return c, resp
	}
	greet := func(t *testing.T, c *websocket.Conn) string {
		t.Helper()
		typ, msg, err := c.Read(t.Context())
		if err != nil || typ != websocket.MessageText {
			t.Fatalf("read greeting: %v %v", typ, err)
		}
		return string(msg)
	}

	t.Run("cookie hit and 1 MiB echo", func(t *testing.T) {
		c, resp := dial(t, "/backend/ws", http.Header{"Cookie": {"ROUTEID=.3"}})
		if got := greet(t, c); got != "3" {
			t.Fatalf("greeting from %q, want 3", got)
		}
		if sc := resp.Header.Values("Set-Cookie"); len(sc) != 0 {
			t.Errorf("sticky upgrade set cookie %q", sc)
		}
		waitFor(t, 5*time.Second, "one connection in flight to 3", func() bool { return s.srv.InFlight("backend", "3") == 1 })
		msg := make([]byte, 1<<20)
		rand.Read(msg)
		for range 2 {
			if err := c.Write(t.Context(), websocket.MessageBinary, msg); err != nil {
				t.Fatalf("write: %v", err)
			}
			typ, echo, err := c.Read(t.Context())
			if err != nil || typ != websocket.MessageBinary || !bytes.Equal(echo, msg) {
				t.Fatalf("echo: type %v, %d bytes, err %v; want the 1 MiB message back", typ, len(echo), err)
			}
		}
		c.Close(websocket.StatusNormalClosure, "")
		waitFor(t, 5*time.Second, "no connection in flight to 3", func() bool { return s.srv.InFlight("backend", "3") == 0 })
	})
	t.Run("alias hit", func(t *testing.T) {
		c, _ := dial(t, "/frontend/ws?alias=.GWE_F_2", nil)
		if got := greet(t, c); got != "GWE_F_2" {
			t.Fatalf("greeting from %q, want GWE_F_2", got)
		}
	})
	t.Run("new session is pinned on the upgrade", func(t *testing.T) {
		c, resp := dial(t, "/backend/ws", nil)
		name := greet(t, c)
		if sc := resp.Header.Values("Set-Cookie"); len(sc) != 1 || sc[0] != "ROUTEID=."+name+"; Path=/" {
			t.Errorf("upgrade Set-Cookie %q, want ROUTEID=.%s; Path=/", sc, name)
		}
	})
	t.Run("disabled member fails over", func(t *testing.T) {
		tbl := mustTable(t, frontendPool(s.front), editMember(backendPool(s.back), "3", func(m *fsm.MemberSpec) { m.State = fsm.Disabled }))
		s.srv.Update(tbl)
		t.Cleanup(func() { s.srv.Update(s.tbl) })
		c, _ := dial(t, "/backend/ws", http.Header{"Cookie": {"ROUTEID=.3"}})
		if got, want := greet(t, c), rendezvousRoute(t, tbl, "backend", ".3"); got != want {
			t.Fatalf("greeting from %q, want replacement %s", got, want)
		}
	})
}

// Rule 9: 16 MiB bodies stream both ways, untouched.
func TestBigBodies(t *testing.T) {
	s := startSeed(t, Options{}, ListenerConfig{})
	const size = 16 << 20
	t.Run("request", func(t *testing.T) {
		body := make([]byte, size)
		rand.Read(body)
		r := s.do(t, http.MethodPost, "/backend/echo", http.Header{"Cookie": {"ROUTEID=.2"}}, bytes.NewReader(body))
		if r.status != http.StatusOK || r.server() != "2" {
			t.Fatalf("got %v", r)
		}
		if len(r.body) != size || sha256.Sum256([]byte(r.body)) != sha256.Sum256(body) {
			t.Fatalf("echo of %d bytes came back as %d bytes with another hash", size, len(r.body))
		}
	})
	t.Run("request chunked", func(t *testing.T) {
		body := make([]byte, size)
		rand.Read(body)
		// An io.Reader of unknown length is sent chunked.
		r := s.do(t, http.MethodPost, "/backend/echo", http.Header{"Cookie": {"ROUTEID=.1"}}, io.MultiReader(bytes.NewReader(body)))
		if r.status != http.StatusOK || len(r.body) != size || sha256.Sum256([]byte(r.body)) != sha256.Sum256(body) {
			t.Fatalf("chunked echo: status %d, %d bytes", r.status, len(r.body))
		}
	})
	t.Run("response", func(t *testing.T) {
		r := s.get(t, fmt.Sprintf("/backend/blob?size=%d", size), "ROUTEID=.3")
		if r.status != http.StatusOK || r.server() != "3" {
			t.Fatalf("got %v", r)
		}
		want := make([]byte, size)
		for i := range want {
			want[i] = byte(i % 251)
		}
		if len(r.body) != size || sha256.Sum256([]byte(r.body)) != sha256.Sum256(want) {
			t.Fatalf("blob of %d bytes came back as %d bytes with another hash", size, len(r.body))
		}
	})
}

// Rule 8: a refused connection is retried once on the fallback, the
// failure is observed and the member quarantined for fail_timeout.
func TestRetryOnRefused(t *testing.T) {
	back := startMembers(t, "/backend", "1", "2", "3")
	back[1].ts.Close() // member 2's listener is gone: connection refused
	spec := backendPool(back)
	tbl := mustTable(t, spec)
	fallback := rendezvousRoute(t, mustTable(t, editMember(spec, "2", func(m *fsm.MemberSpec) { m.State = fsm.Disabled })), "backend", ".2")

	t.Run("sticky GET", func(t *testing.T) {
		h := startProxy(t, tbl, Options{}, ListenerConfig{})
		r := h.get(t, "/backend/x?marker=retry", "ROUTEID=.2")
		wantServer(t, r, fallback)
		wantCookie(t, r, "ROUTEID=."+fallback+"; Path=/")
		obs := h.obs.calls()
		if len(obs) != 1 || obs[0].pool != "backend" || obs[0].route != "2" || !errors.Is(obs[0].err, syscall.ECONNREFUSED) {
			t.Fatalf("observations %+v, want one backend/2 connection refused", obs)
		}
		if line := h.logLine(t, "marker=retry"); !strings.Contains(line, " route="+fallback+" ") {
			t.Errorf("access log %q does not name the fallback", line)
		}
		// Quarantined: new sessions avoid 2 without trying it, and its
		// sessions go straight to the fallback.
		for i := range 30 {
			r := h.get(t, "/backend/x")
			if r.status != http.StatusOK || r.server() == "2" {
				t.Fatalf("new session %d: %v", i, r)
			}
		}
		wantServer(t, h.get(t, "/backend/x", "ROUTEID=.2"), fallback)
		if got := h.obs.routes(); len(got) != 1 {
			t.Errorf("quarantined member was tried again: observations %v", got)
		}
		if n := h.srv.InFlight("backend", "2") + h.srv.InFlight("backend", fallback); n != 0 {
			t.Errorf("%d requests still counted in flight", n)
		}
	})
	t.Run("new sessions", func(t *testing.T) {
		// Without a sticky value the retry takes the next member of the
		// schedule; no request fails.
		h := startProxy(t, tbl, Options{}, ListenerConfig{})
		for i := range 9 {
			if r := h.get(t, "/backend/x"); r.status != http.StatusOK || r.server() == "2" {
				t.Fatalf("request %d: %v", i, r)
			}
		}
		if got := h.obs.routes(); len(got) != 1 || got[0] != "backend/2" {
			t.Errorf("observations %v, want exactly one backend/2", got)
		}
	})
	t.Run("POST body retried intact", func(t *testing.T) {
		h := startProxy(t, tbl, Options{}, ListenerConfig{})
		body := bytes.Repeat([]byte("dom-mutation;"), 5000)
		r := h.do(t, http.MethodPost, "/backend/echo", http.Header{"Cookie": {"ROUTEID=.2"}}, bytes.NewReader(body))
		if r.status != http.StatusOK || r.server() != fallback || r.body != string(body) {
			t.Fatalf("got status %d from %q with %d bytes, want the %d-byte echo from %s", r.status, r.server(), len(r.body), len(body), fallback)
		}
	})
	t.Run("quarantine ends after fail_timeout", func(t *testing.T) {
		short := spec
		short.FailTimeout = new(300 * time.Millisecond)
		h := startProxy(t, mustTable(t, short), Options{}, ListenerConfig{})
		start := time.Now()
		wantServer(t, h.get(t, "/backend/x", "ROUTEID=.2"), fallback)
		// Keep asking for 2: while quarantined it is not tried; once the
		// quarantine ends it is tried (and fails) again.
		waitFor(t, 10*time.Second, "a second attempt on member 2", func() bool {
			wantServer(t, h.get(t, "/backend/x", "ROUTEID=.2"), fallback)
			return len(h.obs.calls()) >= 2
		})
		if d := time.Since(start); d < short.Quarantine() {
			t.Errorf("member 2 tried again after %v, before fail_timeout %v", d, short.Quarantine())
		}
	})
	t.Run("zero fail_timeout still retries", func(t *testing.T) {
		none := spec
		none.FailTimeout = new(time.Duration(0))
		h := startProxy(t, mustTable(t, none), Options{}, ListenerConfig{})
		for range 3 {
			wantServer(t, h.get(t, "/backend/x", "ROUTEID=.2"), fallback)
		}
		if got := len(h.obs.calls()); got != 3 {
			t.Errorf("%d observations, want 3 (no quarantine)", got)
		}
	})
	t.Run("fallback refused too", func(t *testing.T) {
		// Both the member and its fallback are gone: one retry only, then
		// 502; both failures are observed and both members quarantined.
		dead := editMember(spec, fallback, func(m *fsm.MemberSpec) { m.URL = "http://" + testnet.ClosedAddr(t) })
		h := startProxy(t, mustTable(t, dead), Options{}, ListenerConfig{})
		r := h.get(t, "/backend/x", "ROUTEID=.2")
		if r.status != http.StatusBadGateway || r.server() != "" {
			t.Fatalf("got %v, want 502", r)
		}
		if got := strings.Join(h.obs.routes(), " "); got != "backend/2 backend/"+fallback {
			t.Fatalf("observations %q, want backend/2 then backend/%s", got, fallback)
		}
		var third string
		for _, m := range back {
			if m.route != "2" && m.route != fallback {
				third = m.route
			}
		}
		for range 5 {
			wantServer(t, h.get(t, "/backend/x", "ROUTEID=."+fallback), third)
			wantServer(t, h.get(t, "/backend/x"), third)
		}
		if got := len(h.obs.calls()); got != 2 {
			t.Errorf("%d observations, want the 2 from the first request (both quarantined)", got)
		}
	})
}

// eatAndHangUp is a member that reads a whole request, body included,
// then closes the connection without answering: a failure before any
// response byte after the body was sent.
func eatAndHangUp(t *testing.T) (url string, requests func() int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	n := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			req, err := http.ReadRequest(bufio.NewReader(c))
			if err == nil {
				io.Copy(io.Discard, req.Body)
				mu.Lock()
				n++
				mu.Unlock()
			}
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return "http://" + ln.Addr().String(), func() int { mu.Lock(); defer mu.Unlock(); return n }
}

func TestRetryBodyLimit(t *testing.T) {
	back := startMembers(t, "/backend", "1", "2")
	hangURL, hangRequests := eatAndHangUp(t)
	spec := editMember(backendPool(back), "2", func(m *fsm.MemberSpec) { m.URL = hangURL })
	tbl := mustTable(t, spec)
	post := func(t *testing.T, h *harness, size int) (result, []byte) {
		body := make([]byte, size)
		rand.Read(body)
		return h.do(t, http.MethodPost, "/backend/echo", http.Header{"Cookie": {"ROUTEID=.2"}}, bytes.NewReader(body)), body
	}
	t.Run("body within limit is replayed", func(t *testing.T) {
		h := startProxy(t, tbl, Options{RetryBodyBytes: 64 << 10}, ListenerConfig{})
		before := back[0].demo.Requests()
		r, body := post(t, h, 32<<10)
		if r.status != http.StatusOK || r.server() != "1" || r.body != string(body) {
			t.Fatalf("got status %d from %q, %d bytes; want the echo from 1", r.status, r.server(), len(r.body))
		}
		if back[0].demo.Requests() != before+1 {
			t.Errorf("fallback served %d requests, want 1", back[0].demo.Requests()-before)
		}
		if got := h.obs.routes(); len(got) != 1 || got[0] != "backend/2" {
			t.Errorf("observations %v", got)
		}
	})
	t.Run("body over limit is not retried", func(t *testing.T) {
		h := startProxy(t, tbl, Options{RetryBodyBytes: 64 << 10}, ListenerConfig{})
		before, hungBefore := back[0].demo.Requests(), hangRequests()
		r, _ := post(t, h, 256<<10)
		if r.status != http.StatusBadGateway || r.server() != "" {
			t.Fatalf("got %v, want 502 from the balancer", r)
		}
		if hangRequests() != hungBefore+1 {
			t.Errorf("member 2 read %d requests, want 1", hangRequests()-hungBefore)
		}
		if back[0].demo.Requests() != before {
			t.Errorf("fallback got %d requests, want none: the body was gone", back[0].demo.Requests()-before)
		}
		if got := h.obs.routes(); len(got) != 1 || got[0] != "backend/2" {
			t.Errorf("observations %v, want one backend/2", got)
		}
	})
	t.Run("body retries disabled", func(t *testing.T) {
		h := startProxy(t, tbl, Options{RetryBodyBytes: -1}, ListenerConfig{})
		r, _ := post(t, h, 1024)
		if r.status != http.StatusBadGateway {
			t.Fatalf("got %v, want 502", r)
		}
		// Requests without a body are still retried.
		wantServer(t, h.get(t, "/backend/x", "ROUTEID=.2"), "1")
	})
	t.Run("over limit but never sent is retried", func(t *testing.T) {
		// Connection refused: no byte of the body left the balancer, so
		// the whole body is still there to send to the fallback.
		refused := mustTable(t, editMember(backendPool(back), "2", func(m *fsm.MemberSpec) { m.URL = "http://" + testnet.ClosedAddr(t) }))
		h := startProxy(t, refused, Options{RetryBodyBytes: 64 << 10}, ListenerConfig{})
		r, body := post(t, h, 1<<20)
		if r.status != http.StatusOK || r.server() != "1" || r.body != string(body) {
			t.Fatalf("got status %d from %q with %d bytes, want the 1 MiB echo from 1", r.status, r.server(), len(r.body))
		}
	})
}

// writeSelfSigned writes a self-signed certificate for 127.0.0.1 and its
// key to dir and returns their paths and a pool trusting it.
func writeSelfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "gwelb test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func TestTLS(t *testing.T) {
	certFile, keyFile, clientRoots := writeSelfSigned(t, t.TempDir())
	plainMember := startMembers(t, "/backend", "1")[0]
	tlsMember := httptest.NewUnstartedServer(gwedemo.New("2", "/backend"))
	tlsMember.Config.ErrorLog = log.New(io.Discard, "", 0) // the untrusting proxy below fails its handshake
	tlsMember.StartTLS()
	t.Cleanup(tlsMember.Close)
	upstreamRoots := x509.NewCertPool()
	upstreamRoots.AddCert(tlsMember.Certificate())
	tbl := mustTable(t, fsm.PoolSpec{Name: "backend", Prefix: "/backend", Sticky: fsm.StickySpec{Cookie: "ROUTEID", Insert: true},
		Members: []fsm.MemberSpec{plainMember.spec(), {Route: "2", URL: tlsMember.URL}}})

	h := startProxy(t, tbl, Options{UpstreamTLS: &tls.Config{RootCAs: upstreamRoots}}, ListenerConfig{CertFile: certFile, KeyFile: keyFile})
	h.client.Transport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: clientRoots}
	for _, route := range []string{"1", "2"} {
		r := h.get(t, "/backend/x", "ROUTEID=."+route)
		wantServer(t, r, route)
		if got := r.header.Get(gwedemo.HeaderGotForwardedProto); got != "https" {
			t.Errorf("member %s got X-Forwarded-Proto %q, want https", route, got)
		}
	}
	// A client that does not trust the listener's certificate gets nowhere.
	if _, err := (&http.Client{Transport: &http.Transport{}}).Get(h.base + "/backend/x"); err == nil {
		t.Error("untrusted certificate accepted")
	}
	// Big bodies and WebSockets work over TLS on both sides.
	body := make([]byte, 4<<20)
	rand.Read(body)
	r := h.do(t, http.MethodPost, "/backend/echo", http.Header{"Cookie": {"ROUTEID=.2"}}, bytes.NewReader(body))
	if r.status != http.StatusOK || r.body != string(body) {
		t.Errorf("4 MiB echo over TLS: status %d, %d bytes", r.status, len(r.body))
	}
	c, _, err := websocket.Dial(t.Context(), "wss://"+h.addr+"/backend/ws", &websocket.DialOptions{
		HTTPClient: h.client, HTTPHeader: http.Header{"Cookie": {"ROUTEID=.2"}},
	})
	if err != nil {
		t.Fatalf("wss dial: %v", err)
	}
	defer c.CloseNow()
	if _, msg, err := c.Read(t.Context()); err != nil || string(msg) != "2" {
		t.Errorf("wss greeting %q, %v; want 2", msg, err)
	}
	c.Close(websocket.StatusNormalClosure, "")

	// Without the upstream's CA the https member is refused: 502, not 500.
	noCA := startProxy(t, tbl, Options{}, ListenerConfig{})
	if r := noCA.get(t, "/backend/x", "ROUTEID=.2"); r.status != http.StatusBadGateway && (r.status != http.StatusOK || r.server() != "1") {
		t.Errorf("untrusted upstream: got %v, want 502 or the fallback 1", r)
	}
}

func TestTLSListenerConfigErrors(t *testing.T) {
	certFile, keyFile, _ := writeSelfSigned(t, t.TempDir())
	s := New(Options{Logger: discardLogger()})
	for _, lc := range []ListenerConfig{
		{Addr: "127.0.0.1:0", CertFile: certFile},
		{Addr: "127.0.0.1:0", KeyFile: keyFile},
		{Addr: "127.0.0.1:0", CertFile: keyFile, KeyFile: certFile},
		{Addr: "127.0.0.1:0", CertFile: filepath.Join(t.TempDir(), "missing.pem"), KeyFile: keyFile},
	} {
		if l, err := s.Listen(lc); err == nil {
			l.ln.Close()
			t.Errorf("Listen(%+v) succeeded", lc)
		}
	}
}

// A member slow to send its response headers answers 504.
func TestResponseHeaderTimeout(t *testing.T) {
	s := startSeed(t, Options{ResponseHeaderTimeout: 100 * time.Millisecond}, ListenerConfig{})
	start := time.Now()
	r := s.get(t, "/backend/slow?ms=5000", "ROUTEID=.2")
	if r.status != http.StatusGatewayTimeout || r.server() != "" {
		t.Fatalf("got %v, want 504 from the balancer", r)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("504 took %v, want about the 100ms timeout", d)
	}
	// A timeout is not a connection failure: the member is not quarantined
	// and the session stays.
	wantServer(t, s.get(t, "/backend/slow?ms=1", "ROUTEID=.2"), "2")
	wantServer(t, s.get(t, "/backend/x", "ROUTEID=.2"), "2")
}

func TestReadyz(t *testing.T) {
	srv := New(Options{Logger: discardLogger()})
	var stale atomic.Int64 // how long ago the node heard from a quorum
	ops := httptest.NewServer(OpsHandler(srv.Ready, func() time.Duration { return time.Duration(stale.Load()) }))
	t.Cleanup(ops.Close)
	get := func(path string) (int, string) {
		resp, err := http.Get(ops.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "no routing table") {
		t.Errorf("/readyz before Update = %d %q, want 503", code, body)
	}
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz before Update = %d, want 200", code)
	}
	// The data plane agrees: 503 until a table arrives.
	h := startProxy(t, nil, Options{}, ListenerConfig{})
	if r := h.get(t, "/backend/x"); r.status != http.StatusServiceUnavailable {
		t.Errorf("proxy before Update: %v, want 503", r)
	}
	back := startMembers(t, "/backend", "1")
	srv.Update(mustTable(t, backendPool(back)))
	h.srv.Update(mustTable(t, backendPool(back)))
	if code, _ := get("/readyz"); code != http.StatusOK {
		t.Errorf("/readyz after Update = %d, want 200", code)
	}
	wantServer(t, h.get(t, "/backend/x"), "1")
	if code, _ := get("/nope"); code != http.StatusNotFound {
		t.Errorf("/nope = %d, want 404", code)
	}
	// The keepalived mode: fail while out of touch with the quorum too long.
	stale.Store(int64(3 * time.Second))
	if code, _ := get("/readyz?max_stale=10s"); code != http.StatusOK {
		t.Errorf("/readyz?max_stale=10s with 3s staleness = %d, want 200", code)
	}
	stale.Store(int64(11 * time.Second))
	if code, body := get("/readyz?max_stale=10s"); code != http.StatusServiceUnavailable || !strings.Contains(body, "quorum") {
		t.Errorf("/readyz?max_stale=10s with 11s staleness = %d %q, want 503", code, body)
	}
	if code, _ := get("/readyz"); code != http.StatusOK {
		t.Errorf("plain /readyz ignores staleness: got %d, want 200", code)
	}
	if code, _ := get("/readyz?max_stale=soon"); code != http.StatusBadRequest {
		t.Errorf("/readyz?max_stale=soon = %d, want 400", code)
	}
}

// Local state (quarantine) survives table updates that keep the member.
func TestQuarantineSurvivesUpdate(t *testing.T) {
	back := startMembers(t, "/backend", "1", "2", "3")
	spec := editMember(backendPool(back), "2", func(m *fsm.MemberSpec) { m.URL = "http://" + testnet.ClosedAddr(t) })
	h := startProxy(t, mustTable(t, spec), Options{}, ListenerConfig{})
	if r := h.get(t, "/backend/x", "ROUTEID=.2"); r.status != http.StatusOK {
		t.Fatalf("got %v", r)
	}
	spec.Members[0].Weight = 5 // an unrelated change
	h.srv.Update(mustTable(t, spec))
	if r := h.get(t, "/backend/x", "ROUTEID=.2"); r.status != http.StatusOK {
		t.Fatalf("got %v", r)
	}
	if got := h.obs.routes(); len(got) != 1 {
		t.Errorf("observations %v: quarantine was lost on Update", got)
	}
}
