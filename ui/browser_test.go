package ui

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/gwelb/gwelb/cluster/clustertest"
)

// chromium finds the browser for the browser tests. Without one the test
// is skipped at a desk, but fails in CI (CI set), where .ci/run installs
// Debian's chromium: a dashboard nobody ever loaded in a browser is not
// tested.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no chromium in PATH, and CI is set: .ci/run installs it (apt-get install chromium)")
	}
	t.Skip("SKIP: no chromium in PATH: the dashboard's browser tests need it (apt-get install chromium); CI fails without it")
	return ""
}

// js evaluates expr in the tab and decodes its value.
func js[T any](t *testing.T, tab context.Context, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, waitLimit)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return v
}

// waitLimit bounds each wait of the browser tests: generous, for a busy
// machine running them with -race next to other suites; waits end as soon
// as their condition holds.
const waitLimit = 30 * time.Second

// waitJS waits until expr is truthy in the tab: the page changed by
// itself (live updates), nothing reloads it. An evaluation that fails (the
// tab is between two pages after a form post) is tried again.
func waitJS(t *testing.T, tab context.Context, what, expr string) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	var last error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(tab, 5*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool]("!!("+expr+")"))
		cancel()
		if err == nil && ok {
			return
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(tab, 2*time.Second)
	defer cancel()
	page, perr := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href + "\n" + document.body.innerText.slice(0, 1500)`))
	t.Fatalf("waiting for %s (%s): not true after %v (last error: %v); the page (%v):\n%s", what, expr, waitLimit, last, perr, page)
}

func do(t *testing.T, tab context.Context, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, waitLimit)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		dctx, dcancel := context.WithTimeout(tab, 2*time.Second)
		defer dcancel()
		page, perr := chromedp.Run(dctx, chromedp.Evaluate[string](`location.href + "\n" + document.body.innerText.slice(0, 2000)`))
		t.Fatalf("%v; the page (%v):\n%s", err, perr, page)
	}
}

// newTab opens a tab. Its first action runs without a deadline: a tab
// lives as long as the context of its first action, so later actions can
// each have their own.
func newTab(t *testing.T, browser context.Context, opts ...chromedp.ContextOption) context.Context {
	t.Helper()
	tab, cancel := chromedp.NewContext(browser, opts...)
	t.Cleanup(cancel)
	if err := chromedp.Do(tab); err != nil {
		t.Fatalf("open a tab: %v", err)
	}
	return tab
}

// browserLogin logs the tab into a node's dashboard through the login
// form and waits for the first live update.
func browserLogin(t *testing.T, tab context.Context, u *uiNode, token string) {
	t.Helper()
	st := time.Now()
	do(t, tab, chromedp.Navigate(u.url+"/ui/login"))
	t1 := time.Since(st)
	do(t, tab,
		chromedp.SetValue(chromedp.CSS("#token"), token),
		chromedp.Submit(chromedp.CSS("#token")),
	)
	t2 := time.Since(st)
	waitJS(t, tab, "the first live update on "+u.name, `document.getElementById('live').dataset.updates >= 1`)
	t.Logf("log in on %s: form %v, posted %v, first live update %v", u.name, t1.Round(time.Millisecond), t2.Round(time.Millisecond), time.Since(st).Round(time.Millisecond))
}

// cellText is the text of the first element matching sel inside a member's
// overview row.
func cellText(pool, route, sel string) string {
	return fmt.Sprintf(`(document.querySelector('tr[data-member=%s] %s') || {}).textContent`, strconv.Quote(pool+"/"+route), sel)
}

// TestDashboardBrowser drives the dashboards of a real three-node cluster
// in headless Chromium: log in on every node, see the three nodes and both
// pools, drain a member on n1 and see it drained on every node's page
// without a reload, see a verdict change arrive live when a demo server
// fails its health check, and the refusals a page script meets (no CSRF
// token, read-only session, hostile values).
func TestDashboardBrowser(t *testing.T) {
	exe := chromium(t)
	start := time.Now()
	phase := func(what string) { t.Logf("%5.1fs %s", time.Since(start).Seconds(), what) }

	// The browser starts once the cluster has its leader: Chromium's start
	// is CPU-heavy, and on a busy 2-core machine starting both at once
	// starved the nodes' first election past the wait for a leader.
	d := newDash(t, time.Second)
	phase("cluster up")
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe), chromedp.NoSandbox, chromedp.WindowSize(1440, 1000))...)
	defer cancelAlloc()
	browser, cancelBrowser := chromedp.NewContext(alloc)
	defer cancelBrowser()
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(browser) }() // starts the browser with a first tab
	if err := <-started; err != nil {
		t.Fatalf("start %s: %v", exe, err)
	}
	phase("browser up")

	tabs := map[string]context.Context{}
	for _, name := range []string{"n1", "n2", "n3"} {
		tabs[name] = newTab(t, browser)
	}
	t.Run("log in on every node", func(t *testing.T) {
		for name, tab := range tabs {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				// The session cookie is Secure on plain-http loopback: a
				// browser that dropped it would land on the login form again.
				browserLogin(t, tab, d.ui[name], clustertest.Token)
			})
		}
	})
	if t.Failed() {
		t.FailNow()
	}
	phase("logged in on three nodes")
	t.Run("every node's page shows three nodes and both pools", func(t *testing.T) {
		for name, tab := range tabs {
			nodes := js[int](t, tab, `document.querySelectorAll('tr[data-node]').length`)
			pools := js[[]string](t, tab, `Array.from(document.querySelectorAll('section.pool')).map(s => s.dataset.pool)`)
			if nodes != 3 || len(pools) != 2 || pools[0] != "backend" || pools[1] != "frontend" {
				t.Errorf("%s's page: %d node rows, pools %v", name, nodes, pools)
			}
			for _, n := range []string{"n1", "n2", "n3"} {
				if got := js[string](t, tab, fmt.Sprintf(`document.querySelector('tr[data-node=%q] td').textContent`, n)); got == "" {
					t.Errorf("%s's page: no row for node %s", name, n)
				}
			}
		}
	})

	phase("drain on n1")
	t.Run("drain on n1, drained on every node's page", func(t *testing.T) {
		for _, tab := range tabs {
			js[int](t, tab, `window.__sameDocument = 1`)
		}
		do(t, tabs["n1"], chromedp.Click(chromedp.CSS(`tr[data-member="backend/2"] button[value=drain]`)))
		waitJS(t, tabs["n1"], "the outcome on n1", `(document.querySelector('.flash.ok') || {}).textContent?.includes('drain backend/2: done')`)
		for name, tab := range tabs {
			waitJS(t, tab, "backend/2 drained on "+name+"'s page", cellText("backend", "2", ".state")+` === 'drain'`)
			if name != "n1" && js[int](t, tab, `window.__sameDocument || 0`) != 1 {
				t.Errorf("%s's page was reloaded: the change should arrive over its live stream", name)
			}
		}
		d.waitAll(t, "backend/2 drained in every node's table", "backend", "2", func(m *memberT) bool { return m.GetState() == drain })
	})

	phase("verdict change arrives")
	t.Run("verdict change arrives live", func(t *testing.T) {
		tab := tabs["n3"]
		js[int](t, tab, `window.__sameDocument = 2`)
		resp, err := http.Post(d.gwe["3"].URL+"/_demo/health?state=down", "text/plain", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		t.Cleanup(func() { d.gwe["3"].Demo.SetHealthy(true) })
		waitJS(t, tab, "backend/3 down on n3's page", cellText("backend", "3", ".verdict")+` === 'down'`)
		waitJS(t, tab, "n3's observation of backend/3", cellText("backend", "3", `td[data-node=n3] .obs`)+` === 'down'`)
		if js[int](t, tab, `window.__sameDocument || 0`) != 2 {
			t.Errorf("n3's page was reloaded: the verdict should arrive over its live stream")
		}
		if got := js[string](t, tab, `document.getElementById('live-status').textContent`); got != "live" {
			t.Errorf("live status %q, want live", got)
		}
	})

	phase("local quarantine")
	t.Run("local quarantine shows on the node that has it", func(t *testing.T) {
		// GWE_F_1 dies; a visitor pinned to it reaches n2, which fails to
		// connect, quarantines it for the pool's fail_timeout (30 s) and
		// retries on the fallback (rule 8). Only n2 has it quarantined.
		d.gwe["GWE_F_1"].Stop()
		server, _, err := clustertest.Get(t, d.c.Nodes[1], "/frontend/x?alias=.GWE_F_1", "")
		if err != nil || server == "GWE_F_1" || server == "" {
			t.Fatalf("the retried request: served by %q, %v", server, err)
		}
		for name, tab := range tabs {
			waitJS(t, tab, "n2's quarantine of GWE_F_1 on "+name+"'s page", cellText("frontend", "GWE_F_1", `td[data-node=n2] .quarantine`)+`?.startsWith('quarantined for')`)
			if q := js[int](t, tab, `document.querySelectorAll('tr[data-member="frontend/GWE_F_1"] .quarantine').length`); q != 1 {
				t.Errorf("%s's page shows GWE_F_1 quarantined on %d nodes, want 1 (n2)", name, q)
			}
		}
		if os.Getenv("GWELB_SCREENSHOT") == "1" {
			// The leader's page: its audit log recorded the drain.
			tab := tabs[d.c.WaitLeader().Cfg.Name]
			waitJS(t, tab, "the verdict of GWE_F_1 on the leader's page", cellText("frontend", "GWE_F_1", ".verdict")+` === 'down'`)
			saveScreenshot(t, tab)
		}
	})

	phase("a page script without")
	t.Run("a page script without the CSRF token is refused", func(t *testing.T) {
		tab := tabs["n2"]
		code := js[int](t, tab, `fetch('/ui/action', {method: 'POST', body: new URLSearchParams({pool: 'backend', route: '1', op: 'disable'})}).then(r => r.status)`)
		if code != http.StatusForbidden {
			t.Errorf("POST without the CSRF token from the page: %d, want 403", code)
		}
		// The session cookie is invisible to scripts (HttpOnly).
		if c := js[string](t, tab, `document.cookie`); c != "" {
			t.Errorf("document.cookie = %q: the session cookie must be HttpOnly", c)
		}
		if m := d.member(t, "n2", "backend", "1"); m.GetState() != active {
			t.Errorf("backend/1 is %v after a refused action", m.GetState())
		}
	})

	phase("read-only session cannot")
	t.Run("read-only session cannot act", func(t *testing.T) {
		// n3's tab logs out and in again, read-only.
		ro := tabs["n3"]
		do(t, ro, chromedp.Click(chromedp.CSS("form.logout button")))
		waitJS(t, ro, "the login form after logging out", `location.pathname === '/ui/login' && document.getElementById('token') !== null`)
		browserLogin(t, ro, d.ui["n3"], readToken)
		if got := js[string](t, ro, `(document.querySelector('.badge.ro') || {}).textContent`); got != "read-only" {
			t.Errorf("the read-only page does not say so (%q)", got)
		}
		if n := js[int](t, ro, `document.querySelectorAll('button[name=op], input[name=weight]').length`); n != 0 {
			t.Errorf("read-only page shows %d action controls", n)
		}
		code := js[int](t, ro, `fetch('/ui/action', {method: 'POST', body: new URLSearchParams({csrf: document.querySelector('input[name=csrf]').value, pool: 'backend', route: '1', op: 'drain'})}).then(r => r.status)`)
		if code != http.StatusForbidden {
			t.Errorf("read-only POST with its CSRF token: %d, want 403", code)
		}
		if m := d.member(t, "n3", "backend", "1"); m.GetState() != active {
			t.Errorf("backend/1 is %v after a read-only action", m.GetState())
		}
	})

	phase("hostile values are shown")
	t.Run("hostile values are shown, never run", func(t *testing.T) {
		tab := tabs["n1"]
		hostile := `"><script>window.__xss=1</script><img src=x onerror="window.__xss=2">`
		do(t, tab, chromedp.Navigate(d.ui["n1"].url+"/ui/member?"+url.Values{"pool": {"backend"}, "route": {"1"}, "value": {hostile}}.Encode()))
		waitJS(t, tab, "the member page's first live update", `document.getElementById('live').dataset.updates >= 1`)
		if got := js[string](t, tab, `document.querySelector('#explain code.value').textContent`); got != hostile {
			t.Errorf("the explained value reads %q, want it verbatim", got)
		}
		if got := js[string](t, tab, `document.getElementById('value').value`); got != hostile {
			t.Errorf("the value field holds %q, want it verbatim", got)
		}
		if js[bool](t, tab, `window.__xss !== undefined || document.querySelector('#live img, #live script') !== null`) {
			t.Errorf("a hostile value ran or became an element")
		}
		if n := js[int](t, tab, `document.querySelectorAll('#explain tbody tr').length`); n != 3 {
			t.Errorf("route explain shows %d nodes, want 3", n)
		}
	})

	phase("done")
}

// saveScreenshot writes the tab's full page to docs/dashboard.png (for the
// README), only when GWELB_SCREENSHOT=1: make test leaves the tree alone.
func saveScreenshot(t *testing.T, tab context.Context) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, 15*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join("..", "docs", "dashboard.png")
	if err := os.WriteFile(out, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s (%d bytes)", out, len(png))
}
