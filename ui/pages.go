package ui

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gwelb/gwelb/fsm"
)

// render executes a whole page.
func (s *Server) render(w http.ResponseWriter, r *http.Request, code int, name string, data any) {
	var buf bytes.Buffer
	if err := s.tmpl.ExecuteTemplate(&buf, name, data); err != nil {
		s.log.Error("dashboard template", "template", name, "err", err)
		http.Error(w, "dashboard template error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write(buf.Bytes())
}

func (s *Server) errorPage(w http.ResponseWriter, r *http.Request, code int, msg string) {
	s.render(w, r, code, "error", struct {
		Node, Msg string
		Code      int
		Status    string
	}{s.opts.Node, msg, code, http.StatusText(code)})
}

// basePage fills what every page shows.
func (s *Server) basePage(r *http.Request, sess *session, view string) *pageData {
	back := r.URL.Path
	if r.URL.RawQuery != "" {
		back += "?" + r.URL.RawQuery
	}
	events := Prefix + "events?view=" + view
	if r.URL.RawQuery != "" {
		events += "&" + r.URL.RawQuery
	}
	return &pageData{
		Node: s.opts.Node, ReadOnly: sess.ReadOnly(), CSRF: sess.csrf, View: view,
		EventsURL: events, Back: safeBack(back), Now: time.Now(),
	}
}

// fill loads the data of the view the request names into p. It reports
// false when the session's token no longer works (the session ends).
func (s *Server) fill(ctx context.Context, r *http.Request, sess *session, p *pageData) bool {
	sn, err := s.snapshot(ctx, sess)
	if err != nil {
		if c := status.Code(err); c == codes.Unauthenticated || c == codes.PermissionDenied {
			s.sessions.remove(sess)
			return false
		}
		p.Err = "this node's admin API did not answer: " + errText(err)
		return true
	}
	rv := s.rates.read(sn.At)
	q := r.URL.Query()
	switch p.View {
	case "overview":
		p.Title = "cluster"
		p.Overview = buildOverview(sn, rv, s.history)
	case "member":
		p.Member = s.buildMember(ctx, sess, sn, rv, q.Get("pool"), q.Get("route"), q.Get("value"), q.Has("value"))
		p.Title = q.Get("pool") + "/" + q.Get("route")
	case "node":
		p.NodeView = buildNode(sn, q.Get("name"))
		p.Title = "node " + q.Get("name")
	}
	return true
}

func (s *Server) page(w http.ResponseWriter, r *http.Request, sess *session, view string) {
	p := s.basePage(r, sess, view)
	p.Flash = sess.takeFlash()
	if !s.fill(r.Context(), r, sess, p) {
		http.Redirect(w, r, Prefix+"login", http.StatusSeeOther)
		return
	}
	code := http.StatusOK
	if (p.Member != nil && !p.Member.Found) || (p.NodeView != nil && !p.NodeView.Found) {
		code = http.StatusNotFound
	}
	s.render(w, r, code, "page", p)
}

func (s *Server) overviewPage(w http.ResponseWriter, r *http.Request, sess *session) {
	s.page(w, r, sess, "overview")
}

func (s *Server) memberPage(w http.ResponseWriter, r *http.Request, sess *session) {
	s.page(w, r, sess, "member")
}

func (s *Server) nodePage(w http.ResponseWriter, r *http.Request, sess *session) {
	s.page(w, r, sess, "node")
}

// buildMember is a member's page: everything the overview shows of it, and
// "which node sends this value where, and why" from every node's Route.
func (s *Server) buildMember(ctx context.Context, sess *session, sn *snapshot, rv *rateView, pool, route, value string, valueSet bool) *memberView {
	mv := &memberView{}
	var members []memberRow // the whole pool's
	for _, p := range poolRows(sn, rv) {
		if p.Name != pool {
			continue
		}
		members = p.Members
		for _, m := range p.Members {
			if m.Route == route {
				mv.Found, mv.Row = true, m
				p.Members = nil
				mv.Pool = p
			}
		}
	}
	if !mv.Found {
		return mv
	}
	if !valueSet {
		value = "." + route
	}
	mv.Value = value
	named := ""
	if value != "" && !fsm.ValidSticky(value) {
		mv.Note = "not a valid sticky value (rule 3): the nodes read it as no value"
	} else {
		named = fsm.RouteOf(value)
	}
	for _, a := range s.explain(ctx, sess, sn, pool, value) {
		mv.Answers = append(mv.Answers, answerRow{*a, whyOn(a, pool, named, members)})
	}
	first := ""
	for _, a := range mv.Answers {
		if a.Err != "" {
			continue
		}
		if first == "" {
			first = "\x00" + a.Route
		} else if first != "\x00"+a.Route {
			mv.Disagree = true
		}
	}
	for _, ps := range sn.Self.GetPools() {
		for _, ms := range ps.GetMembers() {
			if m := ms.GetMember(); m.GetPool() == pool && m.GetRoute() == route {
				for _, f := range m.GetFlipsUnixNanos() {
					mv.Flips = append(mv.Flips, abs(f))
				}
			}
		}
	}
	return mv
}

// whyOn explains one node's Route answer: for a fallback, why the member
// the value names is not usable on that node (unknown, disabled, verdict
// down, quarantined there), as this node's table and that node's Status
// show it.
func whyOn(a *routeAnswer, pool, named string, members []memberRow) string {
	if a.Err != "" || (a.Reason != "fallback" && a.Reason != "none") || named == "" {
		return why(a.Reason)
	}
	var m *memberRow
	for i := range members {
		if members[i].Route == named {
			m = &members[i]
		}
	}
	var because []string
	switch {
	case m == nil:
		because = append(because, fmt.Sprintf("no member %q in pool %s", named, pool))
	default:
		if m.State == "disabled" {
			because = append(because, "its admin state is disabled")
		}
		if m.Verdict == "down" {
			because = append(because, "the cluster verdict is down")
		}
		for _, c := range m.Cells {
			if c.Node == a.Node && c.Quarantine != "" {
				because = append(because, a.Node+" quarantined it "+c.Quarantine)
			}
		}
	}
	if len(because) == 0 {
		return why(a.Reason) // the tables differ, or it changed meanwhile
	}
	if a.Reason == "none" {
		return fmt.Sprintf("%s/%s is not usable (%s) and no other member is: 503", pool, named, strings.Join(because, ", "))
	}
	return fmt.Sprintf("%s/%s is not usable (%s): the rendezvous replacement every node picks for this value (rule 6)", pool, named, strings.Join(because, ", "))
}

// buildNode is one node's page: its own answer to Status.
func buildNode(sn *snapshot, name string) *nodeView {
	n := sn.node(name)
	if n == nil {
		return &nodeView{}
	}
	raftAddr := ""
	for _, p := range sn.Self.GetPeers() {
		if p.GetId() == name {
			raftAddr = p.GetAddress()
		}
	}
	nv := &nodeView{Found: true, Row: nodeRowOf(sn, n, raftAddr), Err: n.Err}
	if n.Status == nil {
		return nv
	}
	for _, g := range n.Status.GetGossip() {
		nv.Gossip = append(nv.Gossip, gossipRow{g.GetName(), g.GetAddress(), g.GetStatus(), g.GetGrpcAddr(), g.GetRaftAddr()})
	}
	for _, ps := range n.Status.GetPools() {
		for _, ms := range ps.GetMembers() {
			m := ms.GetMember()
			row := nodeMemberRow{Pool: m.GetPool(), Route: m.GetRoute(), State: stateName(m.GetState()), Verdict: verdictName(m.GetVerdict()),
				Quarantine: quarantineOf(ms, name), InFlight: ms.GetInFlight()}
			for _, o := range ms.GetObservations() {
				if o.GetNode() == name {
					row.Obs, row.ObsAge, row.ObsCause = "up", ago(sn.At, o.GetUnixNanos()), o.GetCause()
					if o.GetDown() {
						row.Obs = "down"
					}
				}
			}
			nv.Members = append(nv.Members, row)
		}
	}
	return nv
}
