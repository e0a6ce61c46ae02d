package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gwelb/gwelb/fsm"
)

const validConfig = `
listeners:
  - addr: 127.0.0.1:0
pools:
  - name: backend
    prefix: /backend
    sticky: {cookie: ROUTEID, insert: true}
    members:
      - {route: "1", url: "http://127.0.0.1:9091"}
`

func TestParseConfigValid(t *testing.T) {
	cfg, err := ParseConfig([]byte(validConfig))
	if err != nil {
		t.Fatal(err)
	}
	tab, err := cfg.Table()
	if err != nil {
		t.Fatal(err)
	}
	p := tab.Pool("backend")
	if p == nil || len(p.Members()) != 1 {
		t.Fatalf("pool backend = %+v", p)
	}
	if got := p.Spec().Quarantine(); got != fsm.DefaultFailTimeout {
		t.Errorf("default fail_timeout = %v, want %v", got, fsm.DefaultFailTimeout)
	}
	if got := p.Spec().Cookie.Path; got != "/" {
		t.Errorf("default cookie path = %q, want /", got)
	}
}

func TestExampleConfigsParse(t *testing.T) {
	files, _ := filepath.Glob("../../deploy/examples/*.yaml")
	if len(files) == 0 {
		t.Fatal("no example configs found")
	}
	for _, f := range files {
		if _, err := LoadConfig(f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// TestParseConfigErrors checks that every invalid config is refused with a
// message naming the field and the offending value.
func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		name, edit string
		old        string
		want       []string
	}{
		{"unknown top-level key", "listners: []\n", "", []string{"listners"}},
		{"unknown member key", `{route: "1", url: "http://127.0.0.1:9091", wieght: 2}`, `{route: "1", url: "http://127.0.0.1:9091"}`, []string{"wieght"}},
		{"bad member url", `{route: "1", url: "ftp://x"}`, `{route: "1", url: "http://127.0.0.1:9091"}`, []string{"pools[0]", `"ftp://x"`}},
		{"url with path", `{route: "1", url: "http://127.0.0.1:9091/backend"}`, `{route: "1", url: "http://127.0.0.1:9091"}`, []string{"pools[0]", "/backend", "no path"}},
		{"bad state", `{route: "1", url: "http://127.0.0.1:9091", state: sleepy}`, `{route: "1", url: "http://127.0.0.1:9091"}`, []string{"line 9: state", `"sleepy"`}},
		{"bad weight", `{route: "1", url: "http://127.0.0.1:9091", weight: -3}`, `{route: "1", url: "http://127.0.0.1:9091"}`, []string{"weight -3"}},
		{"bad listener addr", "addr: nowhere", "addr: 127.0.0.1:0", []string{"listeners[0].addr", `"nowhere"`}},
		{"bad prefix", "prefix: backend", "prefix: /backend", []string{"prefix", `"backend"`}},
		{"bad duration", "fail_timeout: soon\n    prefix: /backend", "prefix: /backend", []string{"soon"}},
		{"bad same_site", "sticky: {cookie: ROUTEID, insert: true}\n    cookie: {same_site: sometimes}", "sticky: {cookie: ROUTEID, insert: true}", []string{"same_site", `"sometimes"`}},
		{"no sticky source", "sticky: {}", "sticky: {cookie: ROUTEID, insert: true}", []string{"sticky"}},
		{"listener names unknown pool", "addr: 127.0.0.1:0\n    pools: [frontend]", "addr: 127.0.0.1:0", []string{"listeners[0].pools", `"frontend"`}},
		{"bad log level", "log_level: loud\n", "", []string{"log_level", `"loud"`}},
		{"negative timeout", "timeouts: {connect: -1s}\n", "", []string{"timeouts.connect", "-1s"}},
		// The pools the cluster used to reject after the node had started
		// (and then answered 404 to everything): refused before start.
		{"health path without slash", "health: {path: about}\n    prefix: /backend", "prefix: /backend", []string{`pools[0] "backend": health.path "about": must start with /`}},
		{"expect_status 999", "health: {expect_status: 999}\n    prefix: /backend", "prefix: /backend", []string{`pools[0] "backend": health.expect_status 999: want an HTTP status 100..599`}},
		{"negative interval", "health: {interval: -1s}\n    prefix: /backend", "prefix: /backend", []string{`pools[0] "backend": health.interval -1s`}},
		{"negative rise", "health: {rise: -1}\n    prefix: /backend", "prefix: /backend", []string{`pools[0] "backend": health.rise -1: want 1..100`}},
		{"flap_limit without window", "health: {flap_limit: 3}\n    prefix: /backend", "prefix: /backend", []string{`pools[0] "backend": health.flap_limit 3: needs health.flap_window and health.hold_down`}},
		{"same_site None without secure", "sticky: {cookie: ROUTEID, insert: true}\n    cookie: {same_site: None}", "sticky: {cookie: ROUTEID, insert: true}", []string{`pools[0] "backend": cookie.same_site "None": None needs cookie.secure: true`}},
		{"cookie path injection", "sticky: {cookie: ROUTEID, insert: true}\n    cookie: {path: \"/; Domain=attacker.example\"}", "sticky: {cookie: ROUTEID, insert: true}", []string{`pools[0] "backend": cookie.path "/; Domain=attacker.example"`}},
		{"cookie domain injection", "sticky: {cookie: ROUTEID, insert: true}\n    cookie: {domain: \"a.example\\r\\nX: y\"}", "sticky: {cookie: ROUTEID, insert: true}", []string{`cookie.domain "a.example\r\nX: y"`}},
		{"pool name with newline", "name: \"backend\\nforged\"", "name: backend", []string{`pools[0] "backend\nforged": name "backend\nforged": want 1 to 64 letters`}},
		{"prefix with dot segment", "prefix: /backend/../frontend", "prefix: /backend", []string{`prefix "/backend/../frontend": want no empty, '.' or '..' segments`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := validConfig
			if tt.old == "" {
				cfg = tt.edit + cfg
			} else {
				if !strings.Contains(cfg, tt.old) {
					t.Fatalf("test bug: %q not in config", tt.old)
				}
				cfg = strings.Replace(cfg, tt.old, tt.edit, 1)
			}
			_, err := ParseConfig([]byte(cfg))
			if err == nil {
				t.Fatalf("config accepted:\n%s", cfg)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// TestParseConfigReportsEveryProblem: an operator fixes a file in one pass.
func TestParseConfigReportsEveryProblem(t *testing.T) {
	cfg := strings.Replace(validConfig, "prefix: /backend", "prefix: backend\n    health: {path: about, rise: -1}", 1)
	_, err := ParseConfig([]byte("log_level: loud\n" + cfg))
	if err == nil {
		t.Fatal("config accepted")
	}
	lines := strings.Split(err.Error(), "\n")
	want := []string{
		`pools[0] "backend": prefix "backend": want / or a path starting with / and not ending with /`,
		`pools[0] "backend": health.path "about": must start with /`,
		`pools[0] "backend": health.rise -1: want 1..100`,
		`log_level: "loud": want debug, info, warn or error`,
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("problems:\n%s\nwant:\n%s", err, strings.Join(want, "\n"))
	}
}

func TestParseConfigDurations(t *testing.T) {
	cfg, err := ParseConfig([]byte("timeouts: {connect: 250ms, response_header: 2m}\n" + validConfig))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Timeouts.Connect != 250*time.Millisecond || cfg.Timeouts.ResponseHeader != 2*time.Minute {
		t.Errorf("timeouts = %+v", cfg.Timeouts)
	}
}

func TestAgentRefusesInvalidConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(path, []byte("pools: nope\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code := agentMain([]string{"-config", path}); code == 0 {
		t.Error("agent exited 0 on an invalid config")
	}
	if code := agentMain([]string{"-config", filepath.Join(t.TempDir(), "missing.yaml")}); code == 0 {
		t.Error("agent exited 0 on a missing config")
	}
	if code := agentMain(nil); code != 2 {
		t.Errorf("agent without -config exited %d, want 2", code)
	}
}
