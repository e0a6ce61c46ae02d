package cluster

import (
	"strings"
	"testing"
	"time"
)

// TestNonVoterConfig checks the non-voter settings' validation: a
// non-voter never bootstraps, and the reap timeout is not negative.
func TestNonVoterConfig(t *testing.T) {
	base := func() Config {
		return Config{Name: "nv1", DataDir: t.TempDir(), RaftAddr: "127.0.0.1:1", GossipAddr: "127.0.0.1:2", GRPCAddr: "127.0.0.1:3", Insecure: true, Token: "t", NonVoter: true}
	}
	for _, tc := range []struct {
		name    string
		edit    func(*Config)
		wantErr string
	}{
		{"non-voter joining", func(*Config) {}, ""},
		{"non-voter bootstrapping", func(c *Config) { c.BootstrapExpect = 3 }, "voter: false"},
		{"non-voter -dev", func(c *Config) { c.Dev = true }, "voter: false"},
		{"negative reap", func(c *Config) { c.NonVoterReap = -time.Second }, "non_voter_reap"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.edit(&c)
			c.setDefaults()
			err := c.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if c.NonVoterReap != DefaultNonVoterReap {
					t.Fatalf("non_voter_reap default %v, want %v", c.NonVoterReap, DefaultNonVoterReap)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("got %v, want an error naming %q", err, tc.wantErr)
			}
		})
	}
}
