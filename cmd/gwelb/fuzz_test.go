package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
	"gopkg.in/yaml.v3"

	"github.com/gwelb/gwelb/fsm"
)

// fuzzConfigSeeds are small configs that reach the corners the example
// files do not: every pool knob, TLS, timing, limits and odd YAML.
var fuzzConfigSeeds = []string{
	`
listeners: [{addr: "127.0.0.1:0"}]
pools:
  - name: backend
    prefix: /backend
    sticky: {cookie: ROUTEID, insert: true}
    members: [{route: "1", url: "http://127.0.0.1:9091"}]
`,
	`
node: n1
data_dir: /var/lib/gwelb
raft_addr: 127.0.0.1:7101
gossip_addr: 127.0.0.1:7201
grpc_addr: 127.0.0.1:7001
advertise_addr: 127.0.0.1
bootstrap_expect: 3
retry_join: [127.0.0.2:7201, 127.0.0.3:7201]
token: t
gossip_key: p7cwKLCrVPV+FK4L0hwqrjiEOwHBYR6d7QjvT1zrLYI=
tls: {ca_file: ca.pem, cert_file: c.pem, key_file: k.pem}
raft: {heartbeat_timeout: 1s, election_timeout: 1s, leader_lease_timeout: 500ms, gossip: lan}
leave_on_terminate: false
listeners:
  - {addr: ":8443", pools: [frontend], tls: {cert: c.pem, key: k.pem}}
  - {addr: "[::1]:8080"}
ops: {addr: 127.0.0.1:8081, pprof: true}
access_log: stdout
log_level: debug
timeouts: {connect: 2s, read_header: 5s, response_header: 30s, idle: 1m}
limits: {max_header_bytes: 16384, retry_body_bytes: 0}
upstream_tls: {insecure_skip_verify: true}
pools:
  - name: frontend
    prefix: /frontend
    sticky: {query: alias, cookie: FRONTEND_ROUTEID}
    cookie: {path: /frontend, domain: example.com, max_age: 3600, secure: true, http_only: true, same_site: None}
    fail_timeout: 0s
    health: {path: /frontend/about, interval: 1s, timeout: 500ms, rise: 1, fall: 5, expect_status: 204, flap_limit: 4, flap_window: 1m, hold_down: 30s}
    members:
      - {route: GWE_F_1, url: "https://gwe-1.example:8443", weight: 1000, state: drain}
      - {route: GWE_F_2, url: "http://[fe80::1]:80/", state: disabled}
  - name: root
    prefix: /
    sticky: {query: s}
    members: []
`,
	"pools: &p [{name: a}]\nlisteners: *p\n",
	"listeners:\n- addr: 127.0.0.1:1\npools:\n- name: x\n  prefix: /x\n  sticky: {cookie: \"a b\"}\n  members: [{route: \"\", url: \"\"}]\n",
	"{listeners: [{addr: 'a:1'}], pools: [{name: p, prefix: /p, sticky: {query: q}, members: [{route: r, url: 'http://h:1', weight: 0x10}]}]}",
}

// FuzzParseConfig feeds arbitrary YAML to ParseConfig, which every node runs
// on its config file at start. It must never panic, and a config it accepts
// must be usable as it stands: its routing table builds, every listener
// names pools that exist, and the seed the leader proposes from it is
// accepted by the FSM and routes exactly as the file does (a seed the FSM
// refused would leave a fresh cluster routing nothing, with only a
// warning in the leader's log). The accepted config also survives being
// written back as YAML (what an operator does with a config they fix up).
func FuzzParseConfig(f *testing.F) {
	var files []string
	for _, pattern := range []string{"../../deploy/*/*.yaml", "../../deploy/*/*/*.yaml", "../../deploy/*/*.yaml.tmpl", "testdata/*.yaml"} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			f.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) == 0 {
		f.Fatal("no example configs found under deploy/")
	}
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range fuzzConfigSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig(data)
		if err != nil {
			if cfg != nil {
				t.Fatalf("ParseConfig returned a config with error %v", err)
			}
			return
		}
		tbl := checkUsable(t, cfg)

		// Written back and read again, it is the same config.
		out, err := yaml.Marshal(cfg)
		if err != nil {
			t.Fatalf("accepted config does not marshal: %v", err)
		}
		again, err := ParseConfig(out)
		if err != nil {
			t.Fatalf("accepted config, written back, is refused: %v\n%s", err, out)
		}
		if got, want := tableSig(t, checkUsable(t, again)), tableSig(t, tbl); got != want {
			t.Fatalf("accepted config, written back, routes differently:\n%s\nwant\n%s", got, want)
		}
	})
}

// checkUsable asserts that an accepted config can run: its table builds,
// its listeners serve existing pools, its seed is accepted by a fresh FSM
// and yields the same routing table. It returns the table.
func checkUsable(t *testing.T, cfg *Config) *fsm.Table {
	t.Helper()
	tbl, err := cfg.Table()
	if err != nil {
		t.Fatalf("accepted config has no routing table: %v", err)
	}
	for _, p := range tbl.Pools() {
		if got := tbl.Match(p.Spec().Prefix); got != p {
			t.Fatalf("pool %s is not found by its own prefix %q", p.Name(), p.Spec().Prefix)
		}
	}
	lcs := cfg.ListenerConfigs()
	if len(lcs) != len(cfg.Listeners) || len(lcs) == 0 {
		t.Fatalf("%d listener configs for %d listeners", len(lcs), len(cfg.Listeners))
	}
	for _, lc := range lcs {
		for _, name := range lc.Pools {
			if tbl.Pool(name) == nil {
				t.Fatalf("listener %s serves pool %q, which the table does not have", lc.Addr, name)
			}
		}
	}

	// The seed exactly as the leader proposes it. ClusterConfig's own
	// checks (node name, addresses, token) are not this test's concern:
	// the seed is the file's pools whatever they say.
	cc, _ := cfg.ClusterConfig(true)
	data, err := fsm.EncodeCommand(fsm.SeedCommand(cc.Seed))
	if err != nil {
		t.Fatalf("seed of an accepted config does not encode: %v", err)
	}
	node := fsm.NewFSM(nil)
	if resp := node.Apply(&raft.Log{Index: 1, Term: 1, Type: raft.LogCommand, Data: data}); resp != nil {
		t.Fatalf("the FSM refuses the seed of an accepted config: %v", resp)
	}
	seeded, err := fsm.TableFromState(node.State())
	if err != nil {
		t.Fatalf("the seeded state of an accepted config has no table: %v", err)
	}
	if got, want := tableSig(t, seeded), tableSig(t, tbl); got != want {
		t.Fatalf("the seeded cluster routes differently from the file:\n%s\nwant\n%s", got, want)
	}
	return tbl
}

// tableSig describes a table by the replicated form of its pools and
// members, in name and route order and without its index: the file's
// table keeps the file's order at index 0, the seeded state sorts and is
// at index 1, and both route alike.
func tableSig(t *testing.T, tbl *fsm.Table) string {
	t.Helper()
	marshal := func(m proto.Message) string {
		data, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
		if err != nil {
			t.Fatalf("marshal %v: %v", m, err)
		}
		return fmt.Sprintf("%x", data)
	}
	var pools []string
	for _, p := range tbl.Pools() {
		var members []string
		for _, m := range p.Members() {
			members = append(members, "  member "+marshal(fsm.MemberToProto(p.Name(), m.MemberSpec)))
		}
		slices.Sort(members)
		pools = append(pools, "pool "+marshal(fsm.PoolToProto(p.Spec()))+"\n"+strings.Join(members, "\n"))
	}
	slices.Sort(pools)
	return strings.Join(pools, "\n")
}
