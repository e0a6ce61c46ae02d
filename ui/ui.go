// Package ui is gwelb's dashboard: a balancer manager for the whole
// cluster, served by every node on its ops listener at /ui/ (DESIGN.md §4).
//
// Pages are rendered on the server with html/template (every value is
// escaped by its context) from embedded templates; a little plain
// JavaScript (static/app.js, no inline script anywhere) replaces the live
// part of a page with fragments the server pushes over Server-Sent Events,
// fed by the admin API's Watch stream (what `gwelbctl watch` reads) and a
// periodic refresh for what is not in the table (requests in flight, Raft
// contact, local quarantine, metrics).
//
// The dashboard holds no authority of its own: an operator logs in with an
// operator token, and every read and every write is a call to the node's
// admin gRPC API with that token, so writes go through Raft, the API's
// authorization (the read-only token is refused there too) and its audit
// log. The session cookie is HttpOnly, Secure and SameSite=Strict; every
// state change is a POST carrying the session's CSRF token and a
// same-origin Origin; the Content-Security-Policy allows no inline script
// and no framing.
package ui

import (
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

//go:embed templates/*.html static/*
var assets embed.FS

// Prefix is the path the dashboard is served under.
const Prefix = "/ui/"

// Options configure a dashboard.
type Options struct {
	// Node is this node's name; its admin API certificate must name it.
	Node string
	// GRPCAddr is this node's admin API address. Every call the dashboard
	// makes goes there (or, for per-node views, to the peers' admin APIs
	// gossip advertises) with the logged-in operator's token.
	GRPCAddr string
	// CAFile is the cluster CA (tls.ca_file). When set, admin APIs are
	// dialed over TLS and must present the node certificate of the node
	// the dashboard means to call; "" dials plain TCP (-dev, insecure).
	CAFile string
	// Token and ReadToken are the operator tokens the login form accepts
	// (compared in constant time): read-write and read-only. With neither
	// (a -dev node), an empty token logs in read-write, as the node's
	// admin API then admits every call.
	Token, ReadToken string
	// Metrics, if set, is the registry the dashboard reads this node's
	// request, 5xx, retry and re-pin counters from (gwelb_requests_total,
	// gwelb_retries_total, gwelb_repins_total); nil hides those columns.
	Metrics prometheus.Gatherer
	// History, if set, is where recent admin writes come from (the audit
	// log feeds it); nil shows the dashboard's own writes only.
	History *History
	// Refresh is how often a live page is re-rendered when the table did
	// not change (default 2 s).
	Refresh time.Duration
	// SessionIdle and SessionMax bound a session: it ends after SessionIdle
	// without a request (default 1 h) and SessionMax after login (12 h).
	SessionIdle, SessionMax time.Duration
	Logger                  *slog.Logger
}

// Server is the dashboard; it is an http.Handler for Prefix.
type Server struct {
	opts     Options
	log      *slog.Logger
	tmpl     *template.Template
	static   http.Handler
	sessions *sessions
	dial     *dialer
	rates    *rateTracker
	history  *History
	mux      *http.ServeMux

	ctx    context.Context // ends at Close: live streams stop
	cancel context.CancelFunc

	streamMu sync.Mutex
	streams  map[string]int // live streams per session id hash
}

// Handler returns the dashboard for Prefix, or an error when its options
// are unusable. Close it when the listener stops (http.Server's
// RegisterOnShutdown), or live streams keep the server's Shutdown waiting.
func Handler(opts Options) (*Server, error) {
	if opts.Node == "" || opts.GRPCAddr == "" {
		return nil, errors.New("ui: the node name and its admin API address are required")
	}
	if opts.Refresh <= 0 {
		opts.Refresh = 2 * time.Second
	}
	if opts.SessionIdle <= 0 {
		opts.SessionIdle = time.Hour
	}
	if opts.SessionMax <= 0 {
		opts.SessionMax = 12 * time.Hour
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.History == nil {
		opts.History = NewHistory(50)
	}
	tmpl, err := template.New("").Funcs(funcs).ParseFS(assets, "templates/*.html")
	if err != nil {
		return nil, fmt.Errorf("ui: templates: %w", err)
	}
	static, err := fs.Sub(assets, "static")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		opts:     opts,
		log:      opts.Logger.With("component", "ui"),
		tmpl:     tmpl,
		static:   http.StripPrefix(Prefix+"static/", http.FileServerFS(static)),
		sessions: newSessions(opts.Node, opts.SessionIdle, opts.SessionMax),
		dial:     newDialer(opts.CAFile),
		rates:    newRateTracker(opts.Metrics),
		history:  opts.History,
		ctx:      ctx,
		cancel:   cancel,
		streams:  map[string]int{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+Prefix+"static/", s.serveStatic)
	mux.HandleFunc("GET "+Prefix+"login", s.loginForm)
	mux.HandleFunc("POST "+Prefix+"login", s.login)
	mux.HandleFunc("POST "+Prefix+"logout", s.authed(s.logout))
	mux.HandleFunc("GET "+Prefix+"{$}", s.authed(s.overviewPage))
	mux.HandleFunc("GET "+Prefix+"member", s.authed(s.memberPage))
	mux.HandleFunc("GET "+Prefix+"node", s.authed(s.nodePage))
	mux.HandleFunc("GET "+Prefix+"events", s.authed(s.events))
	mux.HandleFunc("POST "+Prefix+"action", s.authed(s.action))
	for _, post := range []string{"action", "logout"} {
		mux.HandleFunc(Prefix+post, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", http.MethodPost)
			s.errorPage(w, r, http.StatusMethodNotAllowed, "state changes are POST only")
		})
	}
	mux.HandleFunc(Prefix, func(w http.ResponseWriter, r *http.Request) {
		s.errorPage(w, r, http.StatusNotFound, "no such page")
	})
	s.mux = mux
	return s, nil
}

// Close ends every live stream and closes the admin API connections.
func (s *Server) Close() {
	s.cancel()
	s.dial.close()
}

// csp allows the page's own script and style files and nothing else: no
// inline script or style, no framing, forms only to this origin.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// ServeHTTP serves the dashboard with its security headers.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin") // not no-referrer: Chromium then sends "Origin: null" on form posts
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	if r.TLS != nil {
		h.Set("Strict-Transport-Security", "max-age=31536000")
	}
	s.mux.ServeHTTP(w, r)
}

func (s *Server) serveStatic(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-cache")
	s.static.ServeHTTP(w, r)
}

// sameOrigin refuses a state change a browser sent from another origin
// (another port of the same host counts: SameSite does not separate
// ports). Requests without Origin or Sec-Fetch-Site (curl, old browsers)
// are judged by the CSRF token alone.
func sameOrigin(r *http.Request) bool {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return false
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	scheme := "http://"
	if r.TLS != nil {
		scheme = "https://"
	}
	return origin == scheme+r.Host
}

// loopback reports whether the request came from this host.
func loopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux; a session must not be guessable
	}
	return hex.EncodeToString(b)
}

// safeBack returns where to go after an action: a dashboard page, never
// another site ("//evil", "/\evil") nor another path of the ops listener.
func safeBack(v string) string {
	if !strings.HasPrefix(v, Prefix) || strings.ContainsAny(v, "\\\r\n") || strings.Contains(v, "//") {
		return Prefix
	}
	return v
}
