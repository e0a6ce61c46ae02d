package ui

import (
	"bufio"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gwelb/gwelb/cluster/clustertest"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// TestDashboardHTTP drives the dashboard of a real three-node cluster
// over plain HTTP, as a script (or an attacker's page) would: what a
// browser does is in TestDashboardBrowser.
func TestDashboardHTTP(t *testing.T) {
	d := newDash(t, time.Minute) // a long refresh: live updates must come from Watch
	n1, n2 := d.ui["n1"], d.ui["n2"]

	t.Run("security headers", func(t *testing.T) {
		c := &client{t: t, base: n1.url}
		for _, path := range []string{"/ui/login", "/ui/static/app.js", "/ui/nope"} {
			resp, _ := c.do("GET", path, nil, nil)
			h := resp.Header
			csp := h.Get("Content-Security-Policy")
			for _, want := range []string{"script-src 'self'", "frame-ancestors 'none'", "default-src 'none'", "form-action 'self'"} {
				if !strings.Contains(csp, want) {
					t.Errorf("GET %s: Content-Security-Policy %q lacks %q", path, csp, want)
				}
			}
			if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
				t.Errorf("GET %s: Content-Security-Policy %q allows inline script", path, csp)
			}
			if h.Get("X-Frame-Options") != "DENY" || h.Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("GET %s: X-Frame-Options %q, X-Content-Type-Options %q", path, h.Get("X-Frame-Options"), h.Get("X-Content-Type-Options"))
			}
		}
	})

	t.Run("not logged in", func(t *testing.T) {
		c := &client{t: t, base: n1.url}
		for _, tc := range []struct {
			method, path string
			want         int
		}{
			{"GET", "/ui/", http.StatusSeeOther},
			{"GET", "/ui/member?pool=backend&route=1", http.StatusSeeOther},
			{"GET", "/ui/events?view=overview", http.StatusUnauthorized},
			{"POST", "/ui/action", http.StatusUnauthorized},
			{"POST", "/ui/logout", http.StatusUnauthorized},
		} {
			resp, _ := c.do(tc.method, tc.path, url.Values{"pool": {"backend"}, "route": {"1"}, "op": {"drain"}}, nil)
			if resp.StatusCode != tc.want {
				t.Errorf("%s %s without a session: %s, want %d", tc.method, tc.path, resp.Status, tc.want)
			}
			if tc.want == http.StatusSeeOther && resp.Header.Get("Location") != "/ui/login" {
				t.Errorf("%s %s: redirected to %q, want /ui/login", tc.method, tc.path, resp.Header.Get("Location"))
			}
		}
		if m := d.member(t, "n1", "backend", "1"); m.GetState() != gwelbv1.AdminState_ADMIN_STATE_ACTIVE {
			t.Fatalf("backend/1 is %v after refused actions", m.GetState())
		}
	})

	t.Run("login", func(t *testing.T) {
		c := &client{t: t, base: n1.url}
		for _, tok := range []string{"", "wrong", clustertest.Token + "x", readToken[:5]} {
			resp, body := c.do("POST", "/ui/login", url.Values{"token": {tok}}, nil)
			if resp.StatusCode != http.StatusUnauthorized || len(resp.Cookies()) != 0 || !strings.Contains(body, "wrong token") {
				t.Errorf("login with %q: %s, cookies %v", tok, resp.Status, resp.Cookies())
			}
		}
		resp, _ := c.do("POST", "/ui/login", url.Values{"token": {clustertest.Token}}, map[string]string{"Origin": "http://evil.example"})
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("login from another origin: %s, want 403", resp.Status)
		}
		resp, _ = c.do("POST", "/ui/login", url.Values{"token": {clustertest.Token}}, nil)
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("login: %s", resp.Status)
		}
		ck := resp.Cookies()
		if len(ck) != 1 {
			t.Fatalf("login set %d cookies: %v", len(ck), resp.Header["Set-Cookie"])
		}
		raw := resp.Header.Get("Set-Cookie")
		for _, want := range []string{"gwelb_ui_n1=", "Path=/ui/", "HttpOnly", "Secure", "SameSite=Strict"} {
			if !strings.Contains(raw, want) {
				t.Errorf("session cookie %q lacks %s", raw, want)
			}
		}
		if len(ck[0].Value) != 64 {
			t.Errorf("session id %q: want 32 random bytes in hex", ck[0].Value)
		}
		// Another login gets another id.
		resp2, _ := c.do("POST", "/ui/login", url.Values{"token": {clustertest.Token}}, nil)
		if ck2 := resp2.Cookies(); len(ck2) != 1 || ck2[0].Value == ck[0].Value {
			t.Errorf("two logins share a session id")
		}
		// A session of n1 means nothing to n2.
		other := &client{t: t, base: n2.url, cookie: &http.Cookie{Name: cookieName("n2"), Value: ck[0].Value}}
		if resp, _ := other.do("GET", "/ui/", nil, nil); resp.StatusCode != http.StatusSeeOther {
			t.Errorf("n1's session id on n2: %s, want a redirect to the login", resp.Status)
		}
	})

	t.Run("overview shows the cluster", func(t *testing.T) {
		c := login(t, n2, clustertest.Token)
		_, body := c.do("GET", "/ui/", nil, nil)
		if i := strings.Index(body, "admin API did not answer"); i >= 0 {
			t.Fatalf("n2's overview: %s", body[i:min(len(body), i+300)])
		}
		for _, want := range []string{`data-pool="frontend"`, `data-pool="backend"`, `data-member="backend/3"`, `data-member="frontend/GWE_F_2"`,
			`data-node="n1"`, `data-node="n2"`, `data-node="n3"`, `name="op" value="drain"`, "gossip members", "recent verdict changes"} {
			if !strings.Contains(body, want) {
				t.Errorf("n2's overview lacks %s", want)
			}
		}
	})

	t.Run("CSRF", func(t *testing.T) {
		c := login(t, n1, clustertest.Token)
		form := func(csrf string) url.Values {
			return url.Values{"csrf": {csrf}, "pool": {"backend"}, "route": {"1"}, "op": {"disable"}, "back": {"/ui/"}}
		}
		for _, tc := range []struct {
			name string
			form url.Values
			hdr  map[string]string
		}{
			{"no token", url.Values{"pool": {"backend"}, "route": {"1"}, "op": {"disable"}}, nil},
			{"empty token", form(""), nil},
			{"wrong token", form(strings.Repeat("0", 64)), nil},
			{"another session's token", form(login(t, n1, clustertest.Token).csrf), nil},
			{"right token from another origin", form(c.csrf), map[string]string{"Origin": "http://127.0.0.1:1"}},
			{"right token, cross-site fetch", form(c.csrf), map[string]string{"Sec-Fetch-Site": "same-site"}},
		} {
			resp, body := c.do("POST", "/ui/action", tc.form, tc.hdr)
			if resp.StatusCode != http.StatusForbidden {
				t.Errorf("%s: %s, want 403\n%s", tc.name, resp.Status, body)
			}
		}
		if resp, _ := c.do("GET", "/ui/action?"+form(c.csrf).Encode(), nil, nil); resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("GET /ui/action: %s, want 405", resp.Status)
		}
		if m := d.member(t, "n1", "backend", "1"); m.GetState() != gwelbv1.AdminState_ADMIN_STATE_ACTIVE {
			t.Fatalf("backend/1 is %v after refused actions", m.GetState())
		}
		// The same request with the token is carried out, on every node.
		resp, _ := c.do("POST", "/ui/action", form(c.csrf), map[string]string{"Origin": n1.url})
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/" {
			t.Fatalf("action with the CSRF token: %s to %q", resp.Status, resp.Header.Get("Location"))
		}
		d.waitAll(t, "backend/1 disabled on every node", "backend", "1", func(m *gwelbv1.Member) bool {
			return m.GetState() == gwelbv1.AdminState_ADMIN_STATE_DISABLED
		})
		_, body := c.do("GET", "/ui/", nil, nil)
		if !strings.Contains(body, "disable backend/1: done") {
			t.Errorf("the page after the action does not say it was done")
		}
		// Route explain says, for every node, why the value moves.
		_, body = c.do("GET", "/ui/member?pool=backend&route=1", nil, nil)
		if n := strings.Count(body, "backend/1 is not usable (its admin state is disabled)"); n != 3 {
			t.Errorf("route explain of .1 gives the reason on %d nodes, want 3", n)
		}
		_, body = c.do("GET", "/ui/member?pool=backend&route=1&value=abc.nosuch", nil, nil)
		if n := strings.Count(body, "no member &#34;nosuch&#34; in pool backend"); n != 3 {
			t.Errorf("route explain of abc.nosuch gives the reason on %d nodes, want 3", n)
		}
		c.do("POST", "/ui/action", url.Values{"csrf": {c.csrf}, "pool": {"backend"}, "route": {"1"}, "op": {"enable"}}, nil)
		d.waitAll(t, "backend/1 active again", "backend", "1", func(m *gwelbv1.Member) bool {
			return m.GetState() == gwelbv1.AdminState_ADMIN_STATE_ACTIVE
		})
	})

	t.Run("read-only session", func(t *testing.T) {
		c := login(t, n2, readToken)
		_, body := c.do("GET", "/ui/", nil, nil)
		if strings.Contains(body, `name="op"`) || !strings.Contains(body, "read-only") {
			t.Errorf("read-only overview offers actions or does not say it is read-only")
		}
		_, body = c.do("GET", "/ui/member?pool=backend&route=2", nil, nil)
		if strings.Contains(body, `name="op"`) || strings.Contains(body, `name="weight"`) {
			t.Errorf("read-only member page offers actions")
		}
		for _, op := range []string{"drain", "disable", "weight"} {
			resp, _ := c.do("POST", "/ui/action", url.Values{"csrf": {c.csrf}, "pool": {"backend"}, "route": {"2"}, "op": {op}, "weight": {"7"}}, nil)
			if resp.StatusCode != http.StatusForbidden {
				t.Errorf("read-only %s: %s, want 403", op, resp.Status)
			}
		}
		if m := d.member(t, "n2", "backend", "2"); m.GetState() != gwelbv1.AdminState_ADMIN_STATE_ACTIVE || m.GetWeight() > 1 {
			t.Fatalf("backend/2 changed by a read-only session: %v", m)
		}
	})

	t.Run("set weight", func(t *testing.T) {
		c := login(t, n1, clustertest.Token)
		for _, bad := range []string{"0", "1001", "-3", "x", "99999999999"} {
			c.do("POST", "/ui/action", url.Values{"csrf": {c.csrf}, "pool": {"backend"}, "route": {"3"}, "op": {"weight"}, "weight": {bad}, "back": {"/ui/member?pool=backend&route=3"}}, nil)
			_, body := c.do("GET", "/ui/member?pool=backend&route=3", nil, nil)
			if !strings.Contains(body, "set weight of backend/3 to") || !strings.Contains(body, "invalidArgument") {
				t.Errorf("weight %q: the page does not show the refusal", bad)
			}
		}
		resp, _ := c.do("POST", "/ui/action", url.Values{"csrf": {c.csrf}, "pool": {"backend"}, "route": {"3"}, "op": {"weight"}, "weight": {"7"}, "back": {"/ui/member?pool=backend&route=3"}}, nil)
		if loc := resp.Header.Get("Location"); loc != "/ui/member?pool=backend&route=3" {
			t.Errorf("set weight went back to %q", loc)
		}
		d.waitAll(t, "backend/3 weight 7 everywhere", "backend", "3", func(m *gwelbv1.Member) bool { return m.GetWeight() == 7 })
		for _, back := range []string{"//evil.example/", "https://evil.example/", "/healthz", "/ui/\\evil"} {
			resp, _ := c.do("POST", "/ui/action", url.Values{"csrf": {c.csrf}, "pool": {"backend"}, "route": {"3"}, "op": {"weight"}, "weight": {"1"}, "back": {back}}, nil)
			if loc := resp.Header.Get("Location"); loc != "/ui/" {
				t.Errorf("back %q: redirected to %q, want /ui/", back, loc)
			}
		}
	})

	t.Run("hostile values are escaped", func(t *testing.T) {
		// A route may hold '<', '>', '(' and '/' (rule 3 refuses only
		// spaces, quotes, ';', ',' and '\'): one that is a script element.
		const route = `<script>alert(1)</script>`
		admin, ctx := d.c.Admin(d.c.Nodes[0])
		if _, err := admin.PutMember(ctx, &gwelbv1.PutMemberRequest{Member: &gwelbv1.Member{Pool: "backend", Route: route, Url: d.gwe["1"].URL, Weight: 1}}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { admin.RemoveMember(ctx, &gwelbv1.RemoveMemberRequest{Pool: "backend", Route: route}) })
		d.waitAll(t, "the hostile member everywhere", "backend", route, func(*gwelbv1.Member) bool { return true })
		c := login(t, n3(d), clustertest.Token)
		hostileValue := `"><img src=x onerror=alert(2)>`
		for _, path := range []string{"/ui/", "/ui/member?" + url.Values{"pool": {"backend"}, "route": {route}, "value": {hostileValue}}.Encode()} {
			resp, body := c.do("GET", path, nil, nil)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET %s: %s", path, resp.Status)
			}
			if strings.Contains(body, route) || strings.Contains(body, "<img src=x") {
				t.Errorf("GET %s: a hostile value reached the page unescaped", path)
			}
			if !strings.Contains(body, "&lt;script&gt;alert(1)&lt;/script&gt;") {
				t.Errorf("GET %s: the hostile route is not shown escaped", path)
			}
		}
		// Unknown member and node: 404 pages, the name escaped.
		resp, body := c.do("GET", "/ui/node?name="+url.QueryEscape("<b>x</b>"), nil, nil)
		if resp.StatusCode != http.StatusNotFound || strings.Contains(body, "<b>x</b>") {
			t.Errorf("unknown node: %s", resp.Status)
		}
	})

	t.Run("live stream follows Watch", func(t *testing.T) {
		c := login(t, n2, clustertest.Token)
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", n2.url+"/ui/events?view=overview", nil)
		req.AddCookie(c.cookie)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "text/event-stream" {
			t.Fatalf("events: %s %s", resp.Status, ct)
		}
		events := make(chan string, 16)
		go func() {
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(make([]byte, 1<<20), 1<<20)
			for sc.Scan() {
				if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
					var ev struct{ HTML string }
					if json.Unmarshal([]byte(data), &ev) == nil && ev.HTML != "" {
						events <- ev.HTML
					}
				}
			}
			close(events)
		}()
		first := <-events
		if !strings.Contains(first, `data-member="frontend/GWE_F_1"`) {
			t.Fatalf("first event is not the overview fragment")
		}
		// A drain through n3's admin API: n2's stream shows it well before
		// its one-minute refresh.
		admin, actx := d.c.Admin(d.c.Nodes[2])
		if _, err := admin.SetMemberState(actx, &gwelbv1.SetMemberStateRequest{Pool: "frontend", Route: "GWE_F_1", State: gwelbv1.AdminState_ADMIN_STATE_DRAIN}); err != nil {
			t.Fatal(err)
		}
		defer admin.SetMemberState(actx, &gwelbv1.SetMemberStateRequest{Pool: "frontend", Route: "GWE_F_1", State: gwelbv1.AdminState_ADMIN_STATE_ACTIVE})
		for html := range events {
			i := strings.Index(html, `data-member="frontend/GWE_F_1"`)
			if i >= 0 && strings.Contains(html[i:i+600], `class="state badge drain"`) {
				return
			}
		}
		t.Fatalf("the stream ended without showing frontend/GWE_F_1 drained (%v)", ctx.Err())
	})

	t.Run("recent admin writes", func(t *testing.T) {
		leader := d.c.WaitLeader().Cfg.Name
		follower := d.c.Followers()[0].Cfg.Name
		c := login(t, d.ui[follower], clustertest.Token)
		c.do("POST", "/ui/action", url.Values{"csrf": {c.csrf}, "pool": {"frontend"}, "route": {"GWE_F_2"}, "op": {"drain"}}, nil)
		defer c.do("POST", "/ui/action", url.Values{"csrf": {c.csrf}, "pool": {"frontend"}, "route": {"GWE_F_2"}, "op": {"enable"}}, nil)
		// The leader's audit log recorded it, naming the operator and the
		// node that relayed it; the follower's dashboard shows its own.
		var rec Write
		clustertest.WaitFor(t, 10*time.Second, "the drain in the leader's audit log", func() bool {
			for _, w := range d.hist[leader].Recent() {
				if strings.Contains(w.What, "route=GWE_F_2") && strings.Contains(w.What, "state=drain") {
					rec = w
					return true
				}
			}
			return false
		})
		if rec.Who != "token via "+follower || !rec.OK() || rec.Node != leader || !strings.HasPrefix(rec.What, "SetMemberState ") {
			t.Errorf("the leader's audit record: %+v", rec)
		}
		_, body := c.do("GET", "/ui/", nil, nil)
		if !strings.Contains(body, "token on the dashboard of "+follower) || !strings.Contains(body, "drain frontend/GWE_F_2") {
			t.Errorf("the follower's dashboard does not list its own write")
		}
		lc := login(t, d.ui[leader], clustertest.Token)
		_, body = lc.do("GET", "/ui/", nil, nil)
		if !strings.Contains(body, "token via "+follower) || !strings.Contains(body, "SetMemberState pool=frontend route=GWE_F_2 state=drain") {
			t.Errorf("the leader's dashboard does not show the audit record")
		}
	})

	t.Run("logout", func(t *testing.T) {
		c := login(t, n1, clustertest.Token)
		if resp, _ := c.do("POST", "/ui/logout", url.Values{}, nil); resp.StatusCode != http.StatusForbidden {
			t.Errorf("logout without the CSRF token: %s, want 403", resp.Status)
		}
		resp, _ := c.do("POST", "/ui/logout", url.Values{"csrf": {c.csrf}}, nil)
		if resp.StatusCode != http.StatusSeeOther || !strings.Contains(resp.Header.Get("Set-Cookie"), "Max-Age=0") {
			t.Errorf("logout: %s, Set-Cookie %q", resp.Status, resp.Header.Get("Set-Cookie"))
		}
		if resp, _ := c.do("GET", "/ui/", nil, nil); resp.StatusCode != http.StatusSeeOther {
			t.Errorf("the session still works after logout: %s", resp.Status)
		}
	})
}

func n3(d *dash) *uiNode { return d.ui["n3"] }

// TestSessionExpiry: a session ends after its idle time and after its
// maximum age, whatever its activity.
func TestSessionExpiry(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	st := newSessions("n1", time.Hour, 3*time.Hour)
	st.now = func() time.Time { return now }
	req := func(id string) *http.Request {
		r := httptest.NewRequest("GET", "/ui/", nil)
		r.AddCookie(&http.Cookie{Name: cookieName("n1"), Value: id})
		return r
	}
	id, _ := st.create("tok", roleWrite)
	for i := range 5 { // active every 50 min: alive until the 3 h cap
		now = now.Add(50 * time.Minute)
		got := st.get(req(id))
		if want := i < 3; (got != nil) != want {
			t.Fatalf("after %v of activity: session alive %v, want %v", time.Duration(i+1)*50*time.Minute, got != nil, want)
		}
	}
	id, s := st.create("tok", roleWrite)
	now = now.Add(61 * time.Minute)
	if st.alive(s) || st.get(req(id)) != nil {
		t.Fatal("a session idle for 61 min is alive")
	}
	if st.get(req(strings.Repeat("a", 64))) != nil || st.get(req("short")) != nil {
		t.Fatal("an unknown id is a session")
	}
}

// TestLoginPlainHTTPFromAfar: over plain HTTP, only a loopback client may
// log in: the token would cross the network in the clear otherwise.
func TestLoginPlainHTTPFromAfar(t *testing.T) {
	srv, err := Handler(Options{Node: "n1", GRPCAddr: "127.0.0.1:1", Token: "tok", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	for _, tc := range []struct {
		remote string
		want   int
	}{{"192.0.2.7:5555", http.StatusForbidden}, {"127.0.0.1:5555", http.StatusSeeOther}, {"[::1]:5555", http.StatusSeeOther}} {
		r := httptest.NewRequest("POST", "/ui/login", strings.NewReader("token=tok"))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.RemoteAddr = tc.remote
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, r)
		if w.Code != tc.want {
			t.Errorf("login from %s: %d, want %d", tc.remote, w.Code, tc.want)
		}
	}
}
