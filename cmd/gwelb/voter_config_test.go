package main

import (
	"testing"
	"time"
)

// TestVoterConfig checks voter and non_voter_reap reach the control plane:
// voter defaults to true, and voter: false makes a non-voter.
func TestVoterConfig(t *testing.T) {
	for _, tc := range []struct {
		name     string
		extra    string
		nonVoter bool
		reap     time.Duration
	}{
		{"default", "", false, 0},
		{"voter", "voter: true\n", false, 0},
		{"non-voter", "voter: false\nnon_voter_reap: 8h\n", true, 8 * time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			node := "node: nv1\ndata_dir: " + t.TempDir() + "\nraft_addr: 127.0.0.1:7300\ngossip_addr: 127.0.0.1:7301\ngrpc_addr: 127.0.0.1:7302\ninsecure: true\ntoken: t\nretry_join: [127.0.0.1:7201]\n"
			cfg, err := ParseConfig([]byte(node + tc.extra + validConfig))
			if err != nil {
				t.Fatal(err)
			}
			cc, err := cfg.ClusterConfig(false)
			if err != nil {
				t.Fatal(err)
			}
			if cc.NonVoter != tc.nonVoter || cc.NonVoterReap != tc.reap {
				t.Fatalf("non-voter %v, reap %v; want %v, %v", cc.NonVoter, cc.NonVoterReap, tc.nonVoter, tc.reap)
			}
		})
	}
}
