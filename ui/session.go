package ui

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
	"sync"
	"time"
)

// role is what a session may do.
type role int

const (
	roleRead  role = iota // read_token: looks, never acts
	roleWrite             // token (or a -dev node without one)
)

// maxSessions bounds the session table; the oldest session goes first.
// Only holders of a token can create one, so this is against mistakes
// (a script logging in in a loop), not attackers.
const maxSessions = 1024

// session is one logged-in browser. The operator's token stays on the
// server: the browser holds only the random session id (HttpOnly cookie).
type session struct {
	key     [32]byte // SHA-256 of the id: the table never holds a usable id
	token   string   // sent to the admin API on the operator's behalf
	role    role
	csrf    string // per session, in every form; compared in constant time
	created time.Time

	mu       sync.Mutex
	lastSeen time.Time
	flash    *flash // shown once, on the next page
}

// flash is the outcome of the last action, shown on the page it returns to.
type flash struct {
	OK  bool
	Msg string
}

func (s *session) ReadOnly() bool { return s.role == roleRead }

func (s *session) setFlash(ok bool, msg string) {
	s.mu.Lock()
	s.flash = &flash{OK: ok, Msg: msg}
	s.mu.Unlock()
}

func (s *session) takeFlash() *flash {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.flash
	s.flash = nil
	return f
}

// sessions is the in-memory session table of one node's dashboard. A
// restart logs everyone out, which is fine for a handful of operators.
type sessions struct {
	cookie    string // per node: nodes on one host (the demo) share cookies across ports
	idle, max time.Duration
	now       func() time.Time

	mu   sync.Mutex
	byID map[[32]byte]*session
}

func newSessions(node string, idle, max time.Duration) *sessions {
	return &sessions{cookie: cookieName(node), idle: idle, max: max, now: time.Now, byID: map[[32]byte]*session{}}
}

// cookieName is the session cookie of node: browsers do not separate
// cookies by port, so the three demo nodes on 127.0.0.1 need three names.
func cookieName(node string) string {
	var b strings.Builder
	b.WriteString("gwelb_ui_")
	for _, c := range node {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' {
			b.WriteRune(c)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

// create starts a session for a checked token and returns its id.
func (t *sessions) create(token string, r role) (string, *session) {
	id := randomHex(32)
	now := t.now()
	s := &session{key: sha256.Sum256([]byte(id)), token: token, role: r, csrf: randomHex(32), created: now, lastSeen: now}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expireLocked(now)
	for len(t.byID) >= maxSessions {
		var oldest *session
		for _, o := range t.byID {
			if oldest == nil || o.created.Before(oldest.created) {
				oldest = o
			}
		}
		delete(t.byID, oldest.key)
	}
	t.byID[s.key] = s
	return id, s
}

// get returns the live session of the request's cookie and refreshes its
// idle time, or nil.
func (t *sessions) get(r *http.Request) *session {
	c, err := r.Cookie(t.cookie)
	if err != nil || len(c.Value) != 64 {
		return nil
	}
	key := sha256.Sum256([]byte(c.Value))
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.byID[key]
	if s == nil {
		return nil
	}
	if t.expired(s, now) {
		delete(t.byID, key)
		return nil
	}
	s.mu.Lock()
	s.lastSeen = now
	s.mu.Unlock()
	return s
}

// alive reports whether s is still a session (not logged out, not expired),
// without counting as activity: a live stream alone does not keep a
// session beyond its idle time.
func (t *sessions) alive(s *session) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byID[s.key] == s && !t.expired(s, t.now())
}

func (t *sessions) expired(s *session, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return now.Sub(s.lastSeen) > t.idle || now.Sub(s.created) > t.max
}

func (t *sessions) expireLocked(now time.Time) {
	for k, s := range t.byID {
		if t.expired(s, now) {
			delete(t.byID, k)
		}
	}
}

func (t *sessions) remove(s *session) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.byID, s.key)
}

// setCookie hands the browser its session id: HttpOnly (no script reads
// it), Secure (browsers keep Secure cookies over plain HTTP only from
// loopback, which is where a plain ops listener belongs), SameSite=Strict
// (never sent on a request another site starts), scoped to the dashboard.
func (t *sessions) setCookie(w http.ResponseWriter, id string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: t.cookie, Value: id, Path: Prefix, MaxAge: maxAge,
		HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode,
	})
}

// tokenEqual compares a presented token with a configured one in constant
// time; an unset token matches nothing.
func tokenEqual(got, want string) bool {
	return want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// checkToken returns the role the token grants, if any.
func (s *Server) checkToken(tok string) (role, bool) {
	switch {
	case tokenEqual(tok, s.opts.Token):
		return roleWrite, true
	case tokenEqual(tok, s.opts.ReadToken):
		return roleRead, true
	case s.opts.Token == "" && s.opts.ReadToken == "" && tok == "":
		// A -dev node without a token: its admin API admits every call.
		return roleWrite, true
	}
	return 0, false
}

type sessionKey struct{}

// authed serves h to a logged-in session; a page request without one is
// sent to the login form, anything else gets 401.
func (s *Server) authed(h func(http.ResponseWriter, *http.Request, *session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sess := s.sessions.get(r)
		if sess == nil {
			if r.Method == http.MethodGet && r.URL.Path != Prefix+"events" {
				http.Redirect(w, r, Prefix+"login", http.StatusSeeOther)
				return
			}
			s.errorPage(w, r, http.StatusUnauthorized, "not logged in (or the session expired)")
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), sessionKey{}, sess)), sess)
	}
}

// checkPost guards every state change: the session's CSRF token from the
// form, compared in constant time, and a same-origin request. It writes
// 403 and returns false when either is missing or wrong.
func (s *Server) checkPost(w http.ResponseWriter, r *http.Request, sess *session) bool {
	if !sameOrigin(r) {
		s.errorPage(w, r, http.StatusForbidden, "refused: the request came from another origin")
		return false
	}
	got := r.PostFormValue("csrf")
	if subtle.ConstantTimeCompare([]byte(got), []byte(sess.csrf)) != 1 {
		s.errorPage(w, r, http.StatusForbidden, "refused: missing or wrong CSRF token (reload the page and try again)")
		return false
	}
	return true
}

func (s *Server) loginForm(w http.ResponseWriter, r *http.Request) {
	if s.sessions.get(r) != nil {
		http.Redirect(w, r, Prefix, http.StatusSeeOther)
		return
	}
	s.render(w, r, http.StatusOK, "login", s.loginData(r, ""))
}

type loginData struct {
	Node     string
	Err      string
	Dev      bool // no token configured
	PlainBad bool // plain HTTP from elsewhere: logging in is refused
}

func (s *Server) loginData(r *http.Request, msg string) loginData {
	return loginData{
		Node: s.opts.Node, Err: msg, Dev: s.opts.Token == "" && s.opts.ReadToken == "",
		PlainBad: r.TLS == nil && !loopback(r),
	}
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	if !sameOrigin(r) {
		s.errorPage(w, r, http.StatusForbidden, "refused: the request came from another origin")
		return
	}
	if r.TLS == nil && !loopback(r) {
		// The token would cross the network in the clear, and the browser
		// would drop the Secure cookie anyway.
		s.render(w, r, http.StatusForbidden, "login", s.loginData(r, "log in over HTTPS (ops.tls) or from this host (e.g. through ssh -L): this connection is plain HTTP"))
		return
	}
	tok := strings.TrimSpace(r.PostFormValue("token"))
	rl, ok := s.checkToken(tok)
	if !ok {
		s.log.Warn("dashboard login refused", "remote", r.RemoteAddr)
		s.render(w, r, http.StatusUnauthorized, "login", s.loginData(r, "wrong token"))
		return
	}
	id, _ := s.sessions.create(tok, rl)
	s.sessions.setCookie(w, id, int(s.opts.SessionMax.Seconds()))
	s.log.Info("dashboard login", "remote", r.RemoteAddr, "read_only", rl == roleRead)
	http.Redirect(w, r, Prefix, http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request, sess *session) {
	if !s.checkPost(w, r, sess) {
		return
	}
	s.sessions.remove(sess)
	s.sessions.setCookie(w, "", -1)
	http.Redirect(w, r, Prefix+"login", http.StatusSeeOther)
}
