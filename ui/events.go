package ui

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// maxStreams bounds the live streams of one session (tabs left open).
const maxStreams = 8

// events is a page's live stream (Server-Sent Events): the page's live
// fragment, rendered for this session, at once, after every table change
// the admin API's Watch stream reports (what `gwelbctl watch` reads: admin
// writes, verdict changes, observations), and every Refresh for what the
// table does not hold. Each event is
//
//	event: update
//	data: {"html": "<the fragment>"}
//
// JSON keeps every byte of the fragment on one data line. The stream ends
// with an "expired" event when the session does.
func (s *Server) events(w http.ResponseWriter, r *http.Request, sess *session) {
	view := r.URL.Query().Get("view")
	switch view {
	case "overview", "member", "node":
	default:
		s.errorPage(w, r, http.StatusBadRequest, "view: want overview, member or node")
		return
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		s.errorPage(w, r, http.StatusInternalServerError, "streaming unsupported")
		return
	}
	id := string(sess.key[:])
	s.streamMu.Lock()
	if s.streams[id] >= maxStreams {
		s.streamMu.Unlock()
		s.errorPage(w, r, http.StatusTooManyRequests, "too many live pages open in this session")
		return
	}
	s.streams[id]++
	s.streamMu.Unlock()
	defer func() {
		s.streamMu.Lock()
		if s.streams[id]--; s.streams[id] <= 0 {
			delete(s.streams, id)
		}
		s.streamMu.Unlock()
	}()

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel) // Close ends the stream
	defer stop()

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, "retry: 2000\n\n")
	fl.Flush()

	changed := make(chan struct{}, 1)
	go s.watch(ctx, sess, changed)

	// The page this stream serves, as the browser asked for it (its forms
	// send the operator back there).
	q := r.URL.Query()
	q.Del("view")
	page := r.Clone(ctx)
	page.URL.Path = map[string]string{"overview": Prefix, "member": Prefix + "member", "node": Prefix + "node"}[view]
	page.URL.RawQuery = q.Encode()
	tick := time.NewTicker(s.opts.Refresh)
	defer tick.Stop()
	for {
		if !s.sessions.alive(sess) {
			fmt.Fprint(w, "event: expired\ndata: {}\n\n")
			fl.Flush()
			return
		}
		p := s.basePage(page, sess, view)
		if !s.fill(ctx, page, sess, p) {
			continue // the session was just removed: the check above ends the stream
		}
		if ctx.Err() != nil {
			return
		}
		var buf bytes.Buffer
		if err := s.tmpl.ExecuteTemplate(&buf, view+"-live", p); err != nil {
			s.log.Error("dashboard template", "template", view+"-live", "err", err)
			return
		}
		data, _ := json.Marshal(map[string]string{"html": buf.String()})
		if _, err := fmt.Fprintf(w, "event: update\ndata: %s\n\n", data); err != nil {
			return
		}
		fl.Flush()
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-tick.C:
		}
	}
}

// watch follows this node's Watch stream with the session's token and
// signals changed after every event; it reconnects after an error (the
// periodic refresh covers the gap) until ctx ends.
func (s *Server) watch(ctx context.Context, sess *session, changed chan<- struct{}) {
	for ctx.Err() == nil {
		c, err := s.self()
		if err != nil {
			return
		}
		stream, err := c.Watch(outgoing(ctx, sess.token, false), &gwelbv1.WatchRequest{})
		if err == nil {
			first := true
			for {
				if _, err = stream.Recv(); err != nil {
					break
				}
				if first { // the state when the stream opened: already shown
					first = false
					continue
				}
				select {
				case changed <- struct{}{}:
				default:
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}
