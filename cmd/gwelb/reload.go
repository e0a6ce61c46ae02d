package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/gwelb/gwelb/cluster"
	"github.com/gwelb/gwelb/fsm"
	"github.com/gwelb/gwelb/internal/pki"
	"github.com/gwelb/gwelb/proxy"
)

// What SIGHUP changes without a restart and without dropping a connection
// (DESIGN.md §6.4): the listeners' and the node's TLS certificates (also
// picked up when their files change, polled every certPollInterval),
// log_level, the access log (reopened, for logrotate's rename + SIGHUP),
// shutdown.*; and the config file's pools and members are compared with
// the replicated table, a difference logged once as a WARN pointing to
// gwelbctl apply, never applied. A config file that does not load is an
// ERROR naming the field; the node keeps the settings it runs with.

// certPollInterval is how often the certificate files are looked at
// (size, modification time, identity) for a change.
const certPollInterval = 5 * time.Second

// reloadable are the config keys SIGHUP applies; a change to any other is
// reported as needing a restart.
var reloadable = map[string]bool{"log_level": true, "access_log": true, "shutdown": true, "pools": true}

// reloader holds the settings a running node may reload. It is used from
// the daemon's run loop only.
type reloader struct {
	path      string
	dev       bool
	log       *slog.Logger
	level     *slog.LevelVar
	access    *accessLogFile // nil when access_log is off
	node      *cluster.Node
	listeners []*proxy.Listener
	ops       *pki.KeyPair // ops.tls; nil without it
	cfg       *Config      // the settings in effect
}

// keyPairs are the certificates the node presents: its listeners', the ops
// listener's and its own (Raft, admin API, node-to-node).
func (r *reloader) keyPairs() []*pki.KeyPair {
	var out []*pki.KeyPair
	if r.ops != nil {
		out = append(out, r.ops)
	}
	for _, l := range r.listeners {
		if kp := l.KeyPair(); kp != nil {
			out = append(out, kp)
		}
	}
	if kp := r.node.TLSKeyPair(); kp != nil {
		out = append(out, kp)
	}
	return out
}

// pollCerts reloads the certificates whose files changed.
func (r *reloader) pollCerts() {
	for _, kp := range r.keyPairs() {
		changed, err := kp.ReloadIfChanged()
		r.logCert(kp, changed, err, "files changed")
	}
}

func (r *reloader) logCert(kp *pki.KeyPair, changed bool, err error, why string) {
	switch {
	case err != nil:
		r.log.Error("TLS certificate not reloaded: still presenting the previous one", "field", kp.Field(), "err", err)
	case changed:
		r.log.Info("TLS certificate reloaded: new handshakes present it, open connections keep theirs", "field", kp.Field(), "certificate", kp.Describe(), "why", why)
	}
}

// reload is SIGHUP.
func (r *reloader) reload() {
	r.log.Info("SIGHUP: reloading", "config", r.path)
	file, err := LoadConfig(r.path)
	dest := r.cfg.AccessLog
	if err != nil {
		r.log.Error("config not reloaded: the node keeps the settings it runs with", "config", r.path, "err", err)
	} else {
		dest = r.apply(file)
	}
	if r.access != nil {
		if err := r.access.Reopen(dest); err != nil {
			r.log.Error("access log not reopened: still writing to the previous file", "access_log", dest, "err", err)
		} else {
			r.cfg.AccessLog = dest
		}
	}
	for _, kp := range r.keyPairs() {
		changed, err := kp.Reload()
		r.logCert(kp, changed, err, "SIGHUP")
	}
}

// apply takes what the file may change while the node runs, logs what it
// may not, and returns where the access log should go.
func (r *reloader) apply(file *Config) (accessLog string) {
	if r.dev {
		fillDev(file, r.cfg)
	}
	if lvl, err := parseLevel(file.LogLevel); err == nil && lvl != r.level.Level() {
		// Logged at whichever of the two levels shows it.
		from := r.level.Level()
		if lvl < from {
			r.level.Set(lvl)
		}
		r.log.Info("log_level changed", "from", from.String(), "to", lvl.String())
		r.level.Set(lvl)
	}
	accessLog = r.cfg.AccessLog
	var restart []string
	if isOff(file.AccessLog) != isOff(r.cfg.AccessLog) {
		restart = append(restart, "access_log (turned on or off)")
	} else {
		accessLog = file.AccessLog
	}
	restart = append(restart, restartOnly(r.cfg, file)...)
	if len(restart) > 0 {
		r.log.Warn("settings changed in the config file that take effect only after a restart", "config", r.path, "settings", strings.Join(restart, ", "))
	}
	r.cfg.LogLevel = file.LogLevel
	r.cfg.Shutdown = file.Shutdown
	r.cfg.Pools = file.Pools
	r.warnPoolDiff(file.Pools, "SIGHUP")
	return accessLog
}

// warnPoolDiff logs one WARN when the config file's pools and members
// differ from the replicated table: the table is what every node routes
// by, and a file edit reaches it only through gwelbctl apply (DESIGN.md
// §5.4), never silently.
func (r *reloader) warnPoolDiff(pools []fsm.PoolSpec, when string) {
	plan := fsm.PlanChanges(r.node.PoolSpecs(), pools)
	if plan.Empty() {
		return
	}
	r.log.Warn("the config file's pools and members differ from the replicated table, which every node routes by: the file changes nothing until it is applied with gwelbctl apply",
		"config", r.path, "when", when, "plan", strings.TrimRight(plan.String(), "\n"),
		"review", "gwelbctl apply -f "+r.path+" --dry-run", "apply", "gwelbctl apply -f "+r.path)
}

// warnPoolDiffAtStart compares the file's pools with the table once the
// node has caught up and the table has its pools (the seed of a new
// cluster is applied shortly after its election), waiting at most wait.
// It runs beside the run loop: it is given the pools, and reads nothing a
// reload changes.
func (r *reloader) warnPoolDiffAtStart(pools []fsm.PoolSpec, stop <-chan struct{}, wait time.Duration) {
	deadline := time.Now().Add(wait)
	for len(r.node.PoolSpecs()) == 0 {
		if time.Now().After(deadline) {
			return
		}
		select {
		case <-stop:
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	r.warnPoolDiff(pools, "start")
}

// restartOnly names the top-level settings that differ between the
// settings in effect and the file, other than the reloadable ones.
func restartOnly(running, file *Config) []string {
	a, b := reflect.ValueOf(*running), reflect.ValueOf(*file)
	var out []string
	for i := range a.NumField() {
		name, _, _ := strings.Cut(a.Type().Field(i).Tag.Get("yaml"), ",")
		if name == "" || name == "-" || reloadable[name] {
			continue
		}
		if !reflect.DeepEqual(a.Field(i).Interface(), b.Field(i).Interface()) {
			out = append(out, name)
		}
	}
	return out
}

// fillDev gives a -dev file the values agent -dev filled in at start (a
// name, loopback addresses, the temporary data_dir), so that they do not
// read as changes.
func fillDev(file, running *Config) {
	for _, f := range []struct {
		dst *string
		src string
	}{
		{&file.Node, running.Node}, {&file.RaftAddr, running.RaftAddr}, {&file.GossipAddr, running.GossipAddr},
		{&file.GRPCAddr, running.GRPCAddr}, {&file.DataDir, running.DataDir},
	} {
		if *f.dst == "" {
			*f.dst = f.src
		}
	}
}

func isOff(dest string) bool { return dest == "" || dest == "off" }

// accessLogFile is the access log's destination: a file that SIGHUP
// reopens (logrotate renames it, then signals), or stdout or stderr.
type accessLogFile struct {
	mu sync.RWMutex // writes share it; Reopen takes it alone to swap files
	w  io.Writer
	f  *os.File // nil for stdout and stderr
}

// openAccessLog maps the access_log setting onto a writer; nil when off.
func openAccessLog(dest string) (*accessLogFile, error) {
	if isOff(dest) {
		return nil, nil
	}
	a := &accessLogFile{}
	if err := a.Reopen(dest); err != nil {
		return nil, err
	}
	return a, nil
}

// Write writes one line (the proxy writes whole lines).
func (a *accessLogFile) Write(p []byte) (int, error) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.w.Write(p)
}

// Reopen opens dest (creating the file) and writes there from now on; the
// previous file is closed once no write uses it. On error nothing changes.
func (a *accessLogFile) Reopen(dest string) error {
	var w io.Writer
	var f *os.File
	switch dest {
	case "stdout":
		w = os.Stdout
	case "stderr":
		w = os.Stderr
	default:
		var err error
		if f, err = os.OpenFile(dest, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640); err != nil {
			return fmt.Errorf("access_log: %w", err)
		}
		w = f
	}
	a.mu.Lock()
	old := a.f
	a.w, a.f = w, f
	a.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

// Close closes the file, if any.
func (a *accessLogFile) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.f != nil {
		return a.f.Close()
	}
	return nil
}
