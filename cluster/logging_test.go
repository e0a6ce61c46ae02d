package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
)

// logRecord is one record a recordingHandler received, attributes
// flattened (With's first) and rendered as text.
type logRecord struct {
	level slog.Level
	msg   string
	attrs map[string]string
	keys  []string // in order
}

// recordingHandler keeps every record; handlers derived with WithAttrs
// share the list.
type recordingHandler struct {
	mu    *sync.Mutex
	recs  *[]logRecord
	attrs []slog.Attr
	level slog.Level
}

func newRecorder(level slog.Level) *recordingHandler {
	return &recordingHandler{mu: new(sync.Mutex), recs: new([]logRecord), level: level}
}

func (h *recordingHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *recordingHandler) Handle(_ context.Context, r slog.Record) error {
	rec := logRecord{level: r.Level, msg: r.Message, attrs: map[string]string{}}
	add := func(a slog.Attr) {
		rec.attrs[a.Key] = a.Value.String()
		rec.keys = append(rec.keys, a.Key)
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(func(a slog.Attr) bool { add(a); return true })
	h.mu.Lock()
	defer h.mu.Unlock()
	*h.recs = append(*h.recs, rec)
	return nil
}

func (h *recordingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	h2 := *h
	h2.attrs = append(slices.Clone(h.attrs), as...)
	return &h2
}

func (h *recordingHandler) WithGroup(string) slog.Handler { return h }

func (h *recordingHandler) records() []logRecord {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(*h.recs)
}

// find returns the first record with message msg.
func (h *recordingHandler) find(msg string) (logRecord, bool) {
	for _, r := range h.records() {
		if r.msg == msg {
			return r, true
		}
	}
	return logRecord{}, false
}

type stringer struct{}

func (stringer) String() string { return "node n1 at 127.0.0.1:7001" }

// raft's hclog records reach slog with their fields as attributes, their
// level mapped, and With/Named kept.
func TestHCLogAdapter(t *testing.T) {
	tests := []struct {
		name      string
		setup     func(hclog.Logger) hclog.Logger // nil: the root
		log       func(hclog.Logger)
		wantLevel slog.Level
		wantMsg   string
		wantAttrs map[string]string // besides component
		component string
	}{
		{"info with fields", nil, func(l hclog.Logger) {
			l.Info("entering follower state", "leader-id", raft.ServerID("n2"), "term", uint64(7))
		},
			slog.LevelInfo, "entering follower state", map[string]string{"leader-id": "n2", "term": "7"}, "raft"},
		{"warn", nil, func(l hclog.Logger) {
			l.Warn("heartbeat timeout reached", "last-leader-addr", raft.ServerAddress("127.0.0.1:7000"))
		},
			slog.LevelWarn, "heartbeat timeout reached", map[string]string{"last-leader-addr": "127.0.0.1:7000"}, "raft"},
		{"error value", nil, func(l hclog.Logger) { l.Error("failed to appendEntries", "error", errors.New("connection refused")) },
			slog.LevelError, "failed to appendEntries", map[string]string{"error": "connection refused"}, "raft"},
		{"log at a level", nil, func(l hclog.Logger) { l.Log(hclog.Warn, "m", "k", "v") }, slog.LevelWarn, "m", map[string]string{"k": "v"}, "raft"},
		{"no level is info", nil, func(l hclog.Logger) { l.Log(hclog.NoLevel, "m") }, slog.LevelInfo, "m", map[string]string{}, "raft"},
		{"stringer", nil, func(l hclog.Logger) { l.Info("entering leader state", "leader", stringer{}) },
			slog.LevelInfo, "entering leader state", map[string]string{"leader": "node n1 at 127.0.0.1:7001"}, "raft"},
		{"with keeps fields", func(l hclog.Logger) hclog.Logger { return l.With("peer", "n3").With("id", 2) },
			func(l hclog.Logger) { l.Info("m", "k", "v") }, slog.LevelInfo, "m", map[string]string{"peer": "n3", "id": "2", "k": "v"}, "raft"},
		{"named keeps name and fields", func(l hclog.Logger) hclog.Logger { return l.With("peer", "n3").Named("snapshot") },
			func(l hclog.Logger) { l.Info("m") }, slog.LevelInfo, "m", map[string]string{"peer": "n3"}, "raft.snapshot"},
		{"reset named", func(l hclog.Logger) hclog.Logger { return l.Named("x").ResetNamed("raft-net") },
			func(l hclog.Logger) { l.Info("m") }, slog.LevelInfo, "m", map[string]string{}, "raft-net"},
		{"odd args", nil, func(l hclog.Logger) { l.Info("m", "k", "v", "lonely") }, slog.LevelInfo, "m", map[string]string{"k": "v", hclog.MissingKey: "lonely"}, "raft"},
		{"key not a string", nil, func(l hclog.Logger) { l.Info("m", 42, "v") }, slog.LevelInfo, "m", map[string]string{"42": "v"}, "raft"},
		{"hclog wrappers", nil, func(l hclog.Logger) {
			l.Info("m", "h", hclog.Hex(255), "q", hclog.Quote("a\nb"), "f", hclog.Fmt("%d-%s", 1, "x"))
		},
			slog.LevelInfo, "m", map[string]string{"h": "0xff", "q": `"a\nb"`, "f": "1-x"}, "raft"},
		{"format message", nil, func(l hclog.Logger) { l.Info("%d peers", hclog.Fmt("%d peers", 3)) }, slog.LevelInfo, "3 peers", map[string]string{}, "raft"},
		{"slice value as text", nil, func(l hclog.Logger) { l.Info("m", "servers", []raft.ServerID{"n1", "n2"}) },
			slog.LevelInfo, "m", map[string]string{"servers": "[n1 n2]"}, "raft"},
		{"debug after SetLevel", func(l hclog.Logger) hclog.Logger { l.SetLevel(hclog.Debug); return l.Named("sub") },
			func(l hclog.Logger) { l.Debug("m") }, slog.LevelDebug, "m", map[string]string{}, "raft.sub"},
		{"trace after SetLevel", func(l hclog.Logger) hclog.Logger { l.SetLevel(hclog.Trace); return l },
			func(l hclog.Logger) { l.Trace("m") }, slog.LevelDebug - 4, "m", map[string]string{}, "raft"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := newRecorder(slog.LevelDebug - 4)
			l := newHCLogger("raft", slog.New(rec))
			if tc.setup != nil {
				l = tc.setup(l)
			}
			tc.log(l)
			recs := rec.records()
			if len(recs) != 1 {
				t.Fatalf("%d records, want 1: %+v", len(recs), recs)
			}
			r := recs[0]
			if r.level != tc.wantLevel || r.msg != tc.wantMsg {
				t.Errorf("record %v %q, want %v %q", r.level, r.msg, tc.wantLevel, tc.wantMsg)
			}
			want := map[string]string{"component": tc.component}
			for k, v := range tc.wantAttrs {
				want[k] = v
			}
			if fmt.Sprint(r.attrs) != fmt.Sprint(want) {
				t.Errorf("attrs %v, want %v", r.attrs, want)
			}
			if r.keys[0] != "component" {
				t.Errorf("attribute order %v: component first", r.keys)
			}
		})
	}
}

// hclog's level gates below the handler's, shared by derived loggers;
// the handler's own level gates too.
func TestHCLogAdapterLevels(t *testing.T) {
	rec := newRecorder(slog.LevelInfo)
	root := newHCLogger("raft", slog.New(rec))
	sub := root.Named("snapshot").With("k", "v")
	if sub.IsDebug() || !sub.IsInfo() || !sub.IsError() {
		t.Errorf("default: IsDebug %v IsInfo %v IsError %v, want false true true", sub.IsDebug(), sub.IsInfo(), sub.IsError())
	}
	sub.Debug("dropped")
	root.SetLevel(hclog.Warn)
	if sub.GetLevel() != hclog.Warn || sub.IsInfo() {
		t.Errorf("SetLevel on the root: sub at %v, IsInfo %v", sub.GetLevel(), sub.IsInfo())
	}
	sub.Info("dropped")
	root.SetLevel(hclog.Trace)
	sub.Debug("dropped by the handler") // the handler is at Info
	root.SetLevel(hclog.Off)
	sub.Error("dropped")
	if recs := rec.records(); len(recs) != 0 {
		t.Errorf("records %+v, want none", recs)
	}
	if got := sub.ImpliedArgs(); !slices.Equal(got, []any{"k", "v"}) || sub.Name() != "raft.snapshot" {
		t.Errorf("ImpliedArgs %v Name %q", got, sub.Name())
	}
}

// memberlist's "[LEVEL] memberlist: message" lines, and those of
// StandardLogger, become records at their level.
func TestStdLogWriter(t *testing.T) {
	tests := []struct {
		line      string
		wantLevel slog.Level
		wantMsg   string
	}{
		{"[DEBUG] memberlist: Stream connection from=127.0.0.1:53012", slog.LevelDebug, "Stream connection from=127.0.0.1:53012"},
		{"[INFO] memberlist: Marking n2 as failed, suspect timeout reached (0 peer confirmations)", slog.LevelInfo, "Marking n2 as failed, suspect timeout reached (0 peer confirmations)"},
		{"[WARN] memberlist: Refuting a suspect message (from: n3)", slog.LevelWarn, "Refuting a suspect message (from: n3)"},
		{"[ERR] memberlist: Failed to send ping: write udp: connection refused", slog.LevelError, "Failed to send ping: write udp: connection refused"},
		{"[ERROR] memberlist: x", slog.LevelError, "x"},
		{"[TRACE] memberlist: x", slog.LevelDebug - 4, "x"},
		{"no tag at all", slog.LevelInfo, "no tag at all"},
		{"[BOGUS] memberlist: x", slog.LevelInfo, "[BOGUS] memberlist: x"},
		{"text [WARN] inside", slog.LevelInfo, "text [WARN] inside"},
	}
	for _, tc := range tests {
		rec := newRecorder(slog.LevelDebug - 4)
		newStdLogger("memberlist", slog.New(rec)).Print(tc.line)
		recs := rec.records()
		if len(recs) != 1 || recs[0].level != tc.wantLevel || recs[0].msg != tc.wantMsg || recs[0].attrs["component"] != "memberlist" {
			t.Errorf("%q: records %+v, want one %v %q component=memberlist", tc.line, recs, tc.wantLevel, tc.wantMsg)
		}
	}

	rec := newRecorder(slog.LevelDebug)
	l := newHCLogger("raft", slog.New(rec)).With("peer", "n2")
	l.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}).Print("[WARN] two\n[ERR] lines")
	l.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug}).Print("[WARN] forced")
	var got []string
	for _, r := range rec.records() {
		got = append(got, fmt.Sprintf("%v %s peer=%s", r.level, r.msg, r.attrs["peer"]))
	}
	if want := []string{"WARN two peer=n2", "ERROR lines peer=n2", "DEBUG [WARN] forced peer=n2"}; !slices.Equal(got, want) {
		t.Errorf("standard logger records %q, want %q", got, want)
	}
}

// A real raft: its records reach slog with their fields as attributes.
func TestRaftLogFieldsAsSlogAttrs(t *testing.T) {
	rec := newRecorder(slog.LevelInfo)
	store := raft.NewInmemStore()
	addr, trans := raft.NewInmemTransport("")
	rc := raft.DefaultConfig()
	rc.LocalID = "n1"
	rc.HeartbeatTimeout, rc.ElectionTimeout, rc.LeaderLeaseTimeout = 50*time.Millisecond, 50*time.Millisecond, 50*time.Millisecond
	rc.Logger = newHCLogger("raft", slog.New(rec))
	if err := raft.BootstrapCluster(rc, store, store, raft.NewInmemSnapshotStore(), trans, raft.Configuration{Servers: []raft.Server{{ID: "n1", Address: addr}}}); err != nil {
		t.Fatal(err)
	}
	r, err := raft.NewRaft(rc, &nopFSM{}, store, store, raft.NewInmemSnapshotStore(), trans)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { r.Shutdown().Error() }()
	deadline := time.Now().Add(10 * time.Second)
	var leader logRecord
	for {
		var ok bool
		if leader, ok = rec.find("entering leader state"); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no \"entering leader state\" record; got %+v", rec.records())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if leader.attrs["component"] != "raft" || !strings.Contains(leader.attrs["leader"], string(addr)) {
		t.Errorf("entering leader state: attrs %v, want component=raft and leader naming %s", leader.attrs, addr)
	}
	follower, ok := rec.find("entering follower state")
	if !ok {
		t.Fatalf("no \"entering follower state\" record")
	}
	for _, k := range []string{"follower", "leader-address", "leader-id"} {
		if _, ok := follower.attrs[k]; !ok {
			t.Errorf("entering follower state: no attribute %q in %v", k, follower.attrs)
		}
	}
	for _, r := range rec.records() {
		if strings.Contains(r.msg, "=") && strings.Contains(r.msg, "[INFO]") {
			t.Errorf("record %q carries hclog's text", r.msg)
		}
	}
}

type nopFSM struct{}

func (*nopFSM) Apply(*raft.Log) any                 { return nil }
func (*nopFSM) Snapshot() (raft.FSMSnapshot, error) { return nil, errors.New("no snapshots") }
func (*nopFSM) Restore(io.ReadCloser) error         { return nil }

// A real memberlist: its lines reach slog at their level, without the
// tag or the "memberlist: " prefix.
func TestMemberlistLogsThroughSlog(t *testing.T) {
	rec := newRecorder(slog.LevelDebug)
	var lists []*memberlist.Memberlist
	for _, name := range []string{"m1", "m2"} {
		mc := memberlist.DefaultLocalConfig()
		mc.Name, mc.BindAddr, mc.BindPort, mc.AdvertisePort = name, "127.0.0.1", 0, 0
		mc.Logger = newStdLogger("memberlist", slog.New(rec).With("node", name))
		ml, err := memberlist.Create(mc)
		if err != nil {
			t.Fatal(err)
		}
		defer ml.Shutdown()
		lists = append(lists, ml)
	}
	if _, err := lists[1].Join([]string{lists[0].LocalNode().FullAddress().Addr}); err != nil {
		t.Fatal(err)
	}
	var debug int
	for _, r := range rec.records() {
		if r.attrs["component"] != "memberlist" || strings.HasPrefix(r.msg, "[") || strings.HasPrefix(r.msg, "memberlist:") {
			t.Errorf("record %v %q attrs %v: want component=memberlist and a bare message", r.level, r.msg, r.attrs)
		}
		if r.level == slog.LevelDebug {
			debug++
		}
	}
	if debug == 0 {
		t.Errorf("a join logged no DEBUG record: %+v", rec.records())
	}
}
