package ui

import (
	"sync"
	"time"
)

// Write is one admin write as the dashboard lists it under "recent admin
// writes".
type Write struct {
	Time    time.Time
	Who     string // token name, client certificate name, "dashboard (...)"
	What    string // e.g. "drain backend/2"
	Outcome string // "ok", or the error
}

// History is a small in-memory ring of recent admin writes. The audit log
// records into it (Record is safe from any goroutine), and the dashboard's
// own writes are recorded there when no audit log feeds it.
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

// FedByAudit marks the ring as fed by an audit log, which sees every write
// (the dashboard's included), so the dashboard stops recording its own.
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
