package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/gwelb/gwelb/internal/childproc"
)

// siteHost is the one host name visitors use for every node, as behind DNS
// round robin; each node's transport dials that node whatever the host.
const siteHost = "gwe.chaos.test"

// Request timeouts of visitors: a stopped node answers nothing, so a
// visitor gives up after this and tries another node next time.
const (
	visitTimeout = 4 * time.Second
	echoTimeout  = 3 * time.Second
)

// visitor is one simulated web visitor: a browser with its own cookie jar
// that talks to one pool, over plain HTTP or a WebSocket.
type visitor struct {
	d    *driver
	id   int
	pool string // frontend or backend
	ws   bool
	rng  *rand.Rand

	session int
	jar     http.CookieJar
	alias   string // frontend: the alias query value of the session
}

// newSession forgets the old session: a fresh cookie jar and, on the
// frontend, a new alias. Some backend visitors come back with a ROUTEID
// from an earlier visit.
func (v *visitor) newSession() {
	v.session++
	jar, _ := cookiejar.New(nil) // cannot fail without options
	v.jar = jar
	base := v.d.serversOf(v.pool)
	srv := pick(v.rng, base)
	switch {
	case v.pool == "frontend" && v.rng.IntN(2) == 0:
		v.alias = "." + srv.name
	case v.pool == "frontend":
		v.alias = fmt.Sprintf("v%ds%d.%s", v.id, v.session, srv.name)
	case v.rng.IntN(4) == 0:
		u := &url.URL{Scheme: "http", Host: siteHost, Path: "/"}
		jar.SetCookies(u, []*http.Cookie{{Name: "ROUTEID", Value: "." + srv.name, Path: "/"}})
	}
}

func (v *visitor) sessionName() string { return fmt.Sprintf("v%d/%d", v.id, v.session) }

// sent is the sticky value the next request carries, and the URL.
func (v *visitor) target(scheme, path string) (*url.URL, string) {
	u := &url.URL{Scheme: scheme, Host: siteHost, Path: fmt.Sprintf("/%s/v%d/%s", v.pool, v.id, path)}
	if v.pool == "frontend" {
		u.RawQuery = "alias=" + url.QueryEscape(v.alias)
		return u, v.alias
	}
	for _, c := range v.jar.Cookies(&url.URL{Scheme: "http", Host: siteHost, Path: "/"}) {
		if c.Name == "ROUTEID" {
			return u, c.Value
		}
	}
	return u, ""
}

// cookieName is the pool's sticky cookie.
func cookieName(pool string) string {
	if pool == "frontend" {
		return "FRONTEND_ROUTEID"
	}
	return "ROUTEID"
}

// stickyCookie returns the value of the pool's cookie in Set-Cookie.
func stickyCookie(pool string, h http.Header) string {
	resp := http.Response{Header: h}
	for _, c := range resp.Cookies() {
		if c.Name == cookieName(pool) {
			return c.Value
		}
	}
	return ""
}

// run makes requests until ctx ends.
func (v *visitor) run(ctx context.Context) {
	v.newSession()
	if v.ws {
		v.runWS(ctx)
		return
	}
	left := 20 + v.rng.IntN(40)
	for n := 0; ctx.Err() == nil; n++ {
		if childproc.Sleep(ctx, between(v.rng, 100*time.Millisecond, 400*time.Millisecond)) != nil {
			return
		}
		if left--; left == 0 {
			v.newSession()
			left = 20 + v.rng.IntN(40)
		}
		v.request(ctx, pick(v.rng, v.d.dnsNodes()), n)
	}
}

// request makes one GET through node n and records it.
func (v *visitor) request(ctx context.Context, n *gnode, seq int) {
	u, sent := v.target("http", "page"+strconv.Itoa(seq))
	q := Request{Visitor: v.id, Session: v.sessionName(), Kind: "http", Pool: v.pool, Node: n.name, Sent: sent, Start: v.d.now()}
	rctx, cancel := context.WithTimeout(ctx, visitTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, u.String(), nil)
	if err != nil {
		panic(err) // the URL is ours
	}
	c := &http.Client{Transport: v.d.transport(n), Jar: v.jar}
	resp, err := c.Do(req)
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		q.Status = resp.StatusCode
		q.Server = resp.Header.Get("X-GWE-Server")
		q.SetCookie = stickyCookie(v.pool, resp.Header)
	}
	q.End = v.d.now()
	if err != nil {
		if ctx.Err() != nil {
			return // the run is over; this one does not count
		}
		q.Err = shortErr(err)
	}
	v.d.rec.addRequest(q)
}

// runWS keeps a WebSocket open through one node, echoing a message every
// few hundred milliseconds; when it breaks it reconnects through another
// node, with the same session.
func (v *visitor) runWS(ctx context.Context) {
	var prev string
	for ctx.Err() == nil {
		nodes := v.d.dnsNodes()
		n := pick(v.rng, nodes)
		for i := 0; n.name == prev && len(nodes) > 1 && i < 8; i++ {
			n = pick(v.rng, nodes)
		}
		broke := v.wsSession(ctx, n)
		prev = ""
		if broke {
			prev = n.name
		}
		if childproc.Sleep(ctx, between(v.rng, 100*time.Millisecond, 300*time.Millisecond)) != nil {
			return
		}
		if !broke && v.rng.IntN(3) == 0 {
			v.newSession()
		}
	}
}

// wsSession dials through n and echoes until the session's message budget
// is spent (false) or the connection breaks (true).
func (v *visitor) wsSession(ctx context.Context, n *gnode) bool {
	u, sent := v.target("ws", "ws")
	q := Request{Visitor: v.id, Session: v.sessionName(), Kind: "ws", Pool: v.pool, Node: n.name, Sent: sent, Start: v.d.now()}
	dctx, cancel := context.WithTimeout(ctx, visitTimeout)
	c, resp, err := websocket.Dial(dctx, u.String(), &websocket.DialOptions{
		HTTPClient: &http.Client{Transport: v.d.transport(n), Jar: v.jar},
	})
	if resp != nil {
		q.Status = resp.StatusCode
		q.SetCookie = stickyCookie(v.pool, resp.Header)
	}
	if err == nil {
		var first []byte
		_, first, err = c.Read(dctx)
		q.Server = string(first)
	}
	cancel()
	q.End = v.d.now()
	if err != nil {
		if ctx.Err() != nil {
			return false
		}
		q.Err = shortErr(err)
		v.d.rec.addRequest(q)
		if c != nil {
			c.CloseNow()
		}
		return true
	}
	v.d.rec.addRequest(q)
	defer c.CloseNow()
	lastOK := v.d.now()
	for i := range 20 + v.rng.IntN(40) {
		if childproc.Sleep(ctx, between(v.rng, 200*time.Millisecond, 500*time.Millisecond)) != nil {
			c.Close(websocket.StatusNormalClosure, "run over")
			return false
		}
		msg := fmt.Sprintf("%s m%d", v.sessionName(), i)
		ectx, cancel := context.WithTimeout(ctx, echoTimeout)
		err := c.Write(ectx, websocket.MessageText, []byte(msg))
		var got []byte
		if err == nil {
			_, got, err = c.Read(ectx)
		}
		cancel()
		if err == nil && string(got) != msg {
			err = fmt.Errorf("echo %q came back as %q", msg, got)
		}
		if err != nil {
			if ctx.Err() != nil {
				return false
			}
			v.d.rec.addWSBreak(WSBreak{Visitor: v.id, Session: v.sessionName(), Pool: v.pool, Node: n.name, Server: q.Server,
				LastOK: lastOK, At: v.d.now(), Err: shortErr(err)})
			return true
		}
		lastOK = v.d.now()
	}
	c.Close(websocket.StatusNormalClosure, "done")
	return false
}

// shortErr keeps an error's message short and free of the visitor's URL.
func shortErr(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	s := err.Error()
	if len(s) > 200 {
		s = s[:200]
	}
	return strings.ReplaceAll(s, "\n", " ")
}
