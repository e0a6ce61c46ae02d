package cluster

import (
	"log/slog"
	"os"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/gwelb/gwelb/fsm"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// tablePublisher hands routing tables to the data plane in index order and
// keeps the latest on disk, so that after a restart the proxy routes on the
// last table it had before Raft has caught up (invariant 4).
type tablePublisher struct {
	path    string
	onTable func(*fsm.Table)
	log     *slog.Logger

	mu      sync.Mutex
	catchUp uint64 // index of the cached table until the FSM has caught up with it; then 0
	dirty   chan *gwelbv1.State
	done    chan struct{}
}

func newTablePublisher(path string, onTable func(*fsm.Table), log *slog.Logger) *tablePublisher {
	p := &tablePublisher{path: path, onTable: onTable, log: log, dirty: make(chan *gwelbv1.State, 1), done: make(chan struct{})}
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
}

// save queues st to be written as the cache; only the latest is kept.
func (p *tablePublisher) save(st *gwelbv1.State) {
	select {
	case <-p.dirty:
	default:
	}
	select {
	case p.dirty <- st:
	default:
	}
}

func (p *tablePublisher) writeLoop() {
	defer close(p.done)
	for st := range p.dirty {
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
	var st gwelbv1.State
	if err := proto.Unmarshal(data, &st); err != nil {
		p.log.Warn("ignoring unreadable table cache", "path", p.path, "err", err)
		return
	}
	t, err := fsm.TableFromState(&st)
	if err != nil {
		p.log.Warn("ignoring invalid table cache", "path", p.path, "err", err)
		return
	}
	p.log.Info("routing on cached table until raft catches up", "index", t.Index())
	p.mu.Lock()
	defer p.mu.Unlock()
	p.catchUp = t.Index()
	p.onTable(t)
}

func (p *tablePublisher) close() {
	close(p.dirty)
	<-p.done
}
