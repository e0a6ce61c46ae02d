package ui

import (
	"strings"
	"sync"
	"time"
)

// Write is one admin write as the dashboard lists it under "recent admin
// writes".
type Write struct {
	Time      time.Time
	Who       string // "token", "read_token", "client:<name>", "node:<name>" (audit log), or the dashboard
	What      string // the RPC and its arguments, or the dashboard's action
	Outcome   string // "ok", "ok (index N)", or the error
	Node      string // the node that logged it ("" for the dashboard's own record)
	RequestID string // the write's request_id, when it has one
}

// OK reports whether the write succeeded.
func (w Write) OK() bool { return w.Outcome == "ok" || strings.HasPrefix(w.Outcome, "ok ") }

// History is a small in-memory ring of recent admin writes. The node's
// audit log records into it (AuditTee; Record is safe from any goroutine),
// and so does the dashboard, for its own writes that this node's audit log
// did not record (the leader logs the writes that go through Raft).
type History struct {
	mu    sync.Mutex
	ring  []Write
	next  int
	full  bool
	audit bool // fed by an audit log: the dashboard does not add its own writes
}

// NewHistory returns a ring keeping the last n writes.
func NewHistory(n int) *History {
	if n < 1 {
		n = 1
	}
	return &History{ring: make([]Write, n)}
}

// Record adds a write; the oldest falls out once the ring is full.
func (h *History) Record(w Write) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ring[h.next] = w
	h.next = (h.next + 1) % len(h.ring)
	if h.next == 0 {
		h.full = true
	}
}

// FedByAudit marks the ring as fed by this node's audit log.
func (h *History) FedByAudit() {
	h.mu.Lock()
	h.audit = true
	h.mu.Unlock()
}

func (h *History) fedByAudit() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.audit
}

// Has reports whether a write with this request_id is in the ring: the
// audit log of this node recorded it (this node was the leader).
func (h *History) Has(requestID string) bool {
	if requestID == "" {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, w := range h.ring {
		if w.RequestID == requestID {
			return true
		}
	}
	return false
}

// Recent returns the writes, newest first.
func (h *History) Recent() []Write {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := h.next
	if h.full {
		n = len(h.ring)
	}
	out := make([]Write, 0, n)
	for i := 1; i <= n; i++ {
		out = append(out, h.ring[(h.next-i+len(h.ring))%len(h.ring)])
	}
	return out
}
