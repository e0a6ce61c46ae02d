package cluster

import (
	"strings"
	"testing"
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
		return Config{Name: "n1", DataDir: "/tmp/x", RaftAddr: "127.0.0.1:7101", GossipAddr: "127.0.0.1:7201", GRPCAddr: "127.0.0.1:7001", Token: "t"}
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
