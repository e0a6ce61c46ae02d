package cluster

import "sync"

// watchers wakes Watch streams when the table changes. Each has a one-slot
// channel, so a slow stream skips intermediate tables rather than block Apply.
type watchers struct {
	mu   sync.Mutex
	next int
	subs map[int]chan struct{}
}

func newWatchers() *watchers { return &watchers{subs: map[int]chan struct{}{}} }

func (w *watchers) add() (<-chan struct{}, func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	id := w.next
	w.next++
	ch := make(chan struct{}, 1)
	w.subs[id] = ch
	return ch, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		delete(w.subs, id)
	}
}

func (w *watchers) notify() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, ch := range w.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}
