package main

import (
	"sync"
	"time"
)

// Kinds of excuse windows (see Windows).
const (
	winNodeDown      = "node_down"
	winNodeStale     = "node_stale"
	winNodeIsolated  = "node_isolated"
	winServerDown    = "server_down"
	winServerKilled  = "server_killed"
	winLeaderTrouble = "leader_trouble"
)

// recorder collects the history of a run from every goroutine.
type recorder struct {
	start time.Time

	mu      sync.Mutex
	h       History
	nextReq int64
	nextOp  int
	open    map[int]*openWindow
	nextWin int
}

type openWindow struct {
	kind, key string
	w         Window
}

func newRecorder(start time.Time) *recorder {
	return &recorder{start: start, h: History{Windows: newWindows()}, open: map[int]*openWindow{}}
}

// now is the current point of the run.
func (r *recorder) now() T { return time.Since(r.start) }

func (r *recorder) addRequest(q Request) {
	r.mu.Lock()
	r.nextReq++
	q.ID = r.nextReq
	r.h.Requests = append(r.h.Requests, q)
	r.mu.Unlock()
}

func (r *recorder) addWSBreak(b WSBreak) {
	r.mu.Lock()
	r.h.WSBreaks = append(r.h.WSBreaks, b)
	r.mu.Unlock()
}

func (r *recorder) addAdmin(op AdminOp) {
	r.mu.Lock()
	r.nextOp++
	op.ID = r.nextOp
	r.h.Admin = append(r.h.Admin, op)
	r.mu.Unlock()
}

func (r *recorder) addProbe(p AgreementProbe) {
	r.mu.Lock()
	r.h.Agreement = append(r.h.Agreement, p)
	r.mu.Unlock()
}

// violation records what the driver itself saw break.
func (r *recorder) violation(inv, detail string) {
	r.mu.Lock()
	r.h.Driver = append(r.h.Driver, Violation{Invariant: inv, At: r.now(), Detail: detail})
	r.mu.Unlock()
}

// openWin opens a window of kind for key (a node or server name; "" for
// leader trouble) at from; closeWin closes it.
func (r *recorder) openWin(kind, key string, from T, why string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.nextWin++
	r.open[r.nextWin] = &openWindow{kind: kind, key: key, w: Window{From: from, Why: why}}
	return r.nextWin
}

// closeWin closes an open window at to; closing twice is a no-op.
func (r *recorder) closeWin(id int, to T) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ow := r.open[id]
	if ow == nil {
		return
	}
	delete(r.open, id)
	ow.w.To = max(to, ow.w.From)
	r.store(ow)
}

func (r *recorder) store(ow *openWindow) {
	ws := &r.h.Windows
	switch ow.kind {
	case winNodeDown:
		ws.NodeDown[ow.key] = append(ws.NodeDown[ow.key], ow.w)
	case winNodeStale:
		ws.NodeStale[ow.key] = append(ws.NodeStale[ow.key], ow.w)
	case winNodeIsolated:
		ws.NodeIsolated[ow.key] = append(ws.NodeIsolated[ow.key], ow.w)
	case winServerDown:
		ws.ServerDown[ow.key] = append(ws.ServerDown[ow.key], ow.w)
	case winServerKilled:
		ws.ServerKilled[ow.key] = append(ws.ServerKilled[ow.key], ow.w)
	case winLeaderTrouble:
		ws.LeaderTrouble = append(ws.LeaderTrouble, ow.w)
	}
}

// finish closes every open window at the end of the run and hands the
// history over.
func (r *recorder) finish() *History {
	r.mu.Lock()
	defer r.mu.Unlock()
	end := r.now()
	for id, ow := range r.open {
		ow.w.To = never
		r.store(ow)
		delete(r.open, id)
	}
	r.h.End = end
	h := r.h
	return &h
}
