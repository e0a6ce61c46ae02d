package cluster

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gwelb/gwelb/internal/pki"
)

func TestAdvertised(t *testing.T) {
	tests := []struct {
		advertise, addr, want string
	}{
		{"", "127.0.0.1:7101", "127.0.0.1:7101"},
		{"", "0.0.0.0:7001", "127.0.0.1:7001"},
		{"", ":7001", "127.0.0.1:7001"},
		{"127.0.0.5", "0.0.0.0:7101", "127.0.0.5:7101"},
		{"127.0.0.5", "127.0.0.1:7101", "127.0.0.5:7101"},
	}
	for _, tt := range tests {
		c := Config{AdvertiseAddr: tt.advertise}
		if got := c.advertised(tt.addr); got != tt.want {
			t.Errorf("advertise %q, addr %q: got %q, want %q", tt.advertise, tt.addr, got, tt.want)
		}
	}
}

func TestValidateNamesTheField(t *testing.T) {
	base := func() Config {
		return Config{Name: "n1", DataDir: "/tmp/x", RaftAddr: "127.0.0.1:7101", GossipAddr: "127.0.0.1:7201", GRPCAddr: "127.0.0.1:7001", Token: "t", Insecure: true}
	}
	tests := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no name", func(c *Config) { c.Name = "" }, "node"},
		{"no data dir", func(c *Config) { c.DataDir = "" }, "data_dir"},
		{"unspecified raft without advertise", func(c *Config) { c.RaftAddr = "0.0.0.0:7101" }, "raft_addr"},
		{"bad advertise", func(c *Config) { c.AdvertiseAddr = "somewhere" }, "advertise_addr"},
		{"no token", func(c *Config) { c.Token = "" }, "token"},
		{"bad gossip key", func(c *Config) { c.GossipKey = []byte("short") }, "gossip_key"},
		{"negative bootstrap", func(c *Config) { c.BootstrapExpect = -1 }, "bootstrap_expect"},
		// DESIGN.md §4: outside -dev, TLS and a gossip key unless insecure.
		{"no tls outside -dev", func(c *Config) { c.Insecure = false }, "tls: required outside -dev (or set insecure: true)"},
		{"missing cert files", func(c *Config) { c.TLS = pki.Bundle{CAFile: "/nonexistent/ca.pem"} }, "tls.cert_file"},
	}
	for _, tt := range tests {
		c := base()
		tt.edit(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want it to name %q", tt.name, err, tt.want)
		}
	}
	ok := base()
	ok.RaftAddr, ok.GossipAddr, ok.AdvertiseAddr = "0.0.0.0:7101", "0.0.0.0:7201", "127.0.0.1"
	if err := ok.Validate(); err != nil {
		t.Errorf("0.0.0.0 with advertise_addr: %v", err)
	}
}

// TestValidateSecurity pins DESIGN.md §4's start-up rules with real
// certificate files: outside -dev a node needs tls and gossip_key (or
// insecure: true), and its certificate must be a node certificate of the
// CA for its own name.
func TestValidateSecurity(t *testing.T) {
	dir := t.TempDir()
	caDir := filepath.Join(dir, "ca")
	ca, _, err := pki.CreateCA(caDir, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := pki.CreateNodeCert(caDir, dir, "n1", nil, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ccert, ckey, err := pki.CreateClientCert(caDir, dir, "op", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	gossipKey := make([]byte, 32)
	base := func() Config {
		return Config{Name: "n1", DataDir: "/tmp/x", RaftAddr: "127.0.0.1:7101", GossipAddr: "127.0.0.1:7201", GRPCAddr: "127.0.0.1:7001",
			TLS: pki.Bundle{CAFile: ca, CertFile: cert, KeyFile: key}, GossipKey: gossipKey}
	}
	ok := base()
	if err := ok.Validate(); err != nil {
		t.Fatalf("tls and gossip key, no token (operators may use client certificates): %v", err)
	}
	tests := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no tls", func(c *Config) { c.TLS = pki.Bundle{} }, "tls: required outside -dev (or set insecure: true)"},
		{"no gossip key", func(c *Config) { c.GossipKey = nil }, "gossip_key: required outside -dev"},
		{"another node's certificate", func(c *Config) { c.Name = "n2" }, `a certificate for node "n1", but this node is "n2"`},
		{"a client certificate", func(c *Config) { c.TLS.CertFile, c.TLS.KeyFile = ccert, ckey }, "tls.cert_file"},
		{"server_names without this node", func(c *Config) { c.ServerNames = []string{"n2"} }, "server_names"},
		{"insecure without token", func(c *Config) { c.TLS, c.Insecure = pki.Bundle{}, true }, "token"},
	}
	for _, tt := range tests {
		c := base()
		tt.edit(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want it to contain %q", tt.name, err, tt.want)
		}
	}
	for name, edit := range map[string]func(*Config){
		"insecure":            func(c *Config) { c.TLS, c.GossipKey, c.Insecure, c.Token = pki.Bundle{}, nil, true, "t" },
		"-dev without either": func(c *Config) { c.TLS, c.GossipKey, c.Dev = pki.Bundle{}, nil, true },
	} {
		c := base()
		edit(&c)
		if err := c.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}
