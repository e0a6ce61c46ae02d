package cluster

import (
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/gwelb/gwelb/fsm"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// tablePublisher hands routing tables to the data plane in index order and
// keeps the latest on disk, so that a restarted node that cannot catch up
// with the cluster in time (no quorum yet) routes on the last table it had
// rather than on none (invariant 4).
type tablePublisher struct {
	path    string
	onTable func(*fsm.Table)
	state   func() *gwelbv1.State // the state to cache, read when writing
	log     *slog.Logger

	mu      sync.Mutex
	catchUp uint64 // index of the cached table until the FSM has caught up with it; then 0
	dirty   chan struct{}
	done    chan struct{}

	last atomic.Pointer[fsm.Table] // the table the data plane routes on, nil before the first
}

// cacheInterval spaces cache writes: under a burst of changes the cache is
// rewritten at most this often, with the latest state.
const cacheInterval = 100 * time.Millisecond

func newTablePublisher(path string, onTable func(*fsm.Table), state func() *gwelbv1.State, log *slog.Logger) *tablePublisher {
	p := &tablePublisher{path: path, onTable: onTable, state: state, log: log, dirty: make(chan struct{}, 1), done: make(chan struct{})}
	go p.writeLoop()
	return p
}

// publish hands t to the data plane. After a restart the FSM replays from
// its last snapshot, which may be older than the cached table the proxy is
// already routing on, so tables older than the cache are held back until
// the FSM has caught up. Later tables always pass: a snapshot an operator
// restores carries an old index and must still take effect.
func (p *tablePublisher) publish(t *fsm.Table) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if t.Index() < p.catchUp {
		return
	}
	p.catchUp = 0
	p.onTable(t)
	p.last.Store(t) // after the data plane has it: catching up waits on this
}

// current is the table handed to the data plane last, or nil.
func (p *tablePublisher) current() *fsm.Table { return p.last.Load() }

// save marks the cache stale; the writer rewrites it soon.
func (p *tablePublisher) save() {
	select {
	case p.dirty <- struct{}{}:
	default: // a write is pending already and will take the latest state
	}
}

func (p *tablePublisher) writeLoop() {
	defer close(p.done)
	for range p.dirty {
		p.write()
		// Rate limit, not synchronisation: changes during the pause are
		// written together by the next round.
		time.Sleep(cacheInterval)
	}
}

// write replaces the cache with the FSM's state, unless the FSM is still
// replaying toward the cached table: an older state must not replace it.
func (p *tablePublisher) write() {
	st := p.state()
	p.mu.Lock()
	behind := st.GetIndex() < p.catchUp
	p.mu.Unlock()
	if behind {
		return
	}
	{
		data, err := proto.MarshalOptions{Deterministic: true}.Marshal(st)
		if err == nil {
			tmp := p.path + ".tmp"
			if err = os.WriteFile(tmp, data, 0o640); err == nil {
				err = os.Rename(tmp, p.path)
			}
		}
		if err != nil {
			p.log.Warn("write table cache", "err", err)
		}
	}
}

// loadCache publishes the cached table, if any.
func (p *tablePublisher) loadCache() {
	data, err := os.ReadFile(p.path)
	if err != nil {
		return
	}
	t, _, err := decodeTableCache(data)
	if err != nil {
		p.log.Warn("ignoring table cache", "path", p.path, "err", err)
		return
	}
	p.log.Info("loaded the cached table: routed on if catching up with the cluster takes too long", "index", t.Index())
	p.mu.Lock()
	defer p.mu.Unlock()
	p.catchUp = t.Index()
	p.onTable(t)
	p.last.Store(t)
}

// decodeTableCache decodes the bytes of a table cache file: the cached
// state and the routing table built from it. The file is read before Raft
// has said anything, so whatever it holds (truncated, corrupted, written by
// another version) must come out as an error, never as a panic or a table
// the data plane cannot use; keeping this pure lets FuzzDecodeTableCache
// check that without a node.
func decodeTableCache(data []byte) (*fsm.Table, *gwelbv1.State, error) {
	// The same decoding and validator as a raft snapshot (DESIGN.md §5.1):
	// a cache the cluster would refuse is never routed from.
	st, t, err := fsm.DecodeState(data)
	if err != nil {
		return nil, nil, err
	}
	return t, st, nil
}

func (p *tablePublisher) close() {
	close(p.dirty)
	<-p.done
}
