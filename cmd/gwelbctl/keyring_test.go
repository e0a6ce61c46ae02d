package main

import (
	"crypto/rand"
	"encoding/base64"
	"regexp"
	"strings"
	"testing"

	"github.com/gwelb/gwelb/cluster"
	"github.com/gwelb/gwelb/cluster/clustertest"
)

const testReadToken = "read-only-token"

// ctlAs runs gwelbctl against tn with token, verifying the node's
// certificate when it has one, as an operator would.
func ctlAs(t *testing.T, c *clustertest.Cluster, tn *clustertest.Node, token string, args ...string) result {
	t.Helper()
	global := []string{"--addr", tn.Node.GRPCAddr(), "--token", token}
	if tn.Cfg.TLS.Enabled() {
		global = append(global, "--ca-file", c.PKI().CAFile())
	}
	return cliEnv(t, nil, append(global, args...)...)
}

func gossipKey(t *testing.T) string {
	t.Helper()
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(k)
}

// gwelbctl keyring rotates the gossip key of a real three-node cluster,
// printing one line per node; the read-only token reads but every write,
// keyring commands included, exits 5 with a message that says why.
func TestCLIKeyringAndReadToken(t *testing.T) {
	c := clustertest.New(t, 3, func(_ int, cfg *cluster.Config) { cfg.ReadToken = testReadToken })
	oldKey := base64.StdEncoding.EncodeToString(c.GossipKey)
	newKey := gossipKey(t)
	f := c.Followers()[0]
	rw := func(args ...string) result { return ctlAs(t, c, f, clustertest.Token, args...) }
	ro := func(args ...string) result { return ctlAs(t, c, f, testReadToken, args...) }

	t.Run("keyring rotation", func(t *testing.T) {
		r := rw("keyring", "list")
		wantOK(t, r)
		for _, n := range []string{"n1", "n2", "n3"} {
			wantLine(t, r.stdout, `^`+n+`\s+`+regexp.QuoteMeta(oldKey)+`\s+`+regexp.QuoteMeta(oldKey)+`$`)
		}
		wantFail(t, rw("keyring", "use", newKey), exitError, `keyring use: refused, no node changed: n1 does not have the key`)
		for _, step := range [][]string{{"install", newKey}, {"use", newKey}, {"remove", oldKey}} {
			r := rw(append([]string{"keyring"}, step...)...)
			wantOK(t, r)
			for _, n := range []string{"n1", "n2", "n3"} {
				wantLine(t, r.stdout, `^`+n+`\s+ok\s+\d+$`)
			}
		}
		r = rw("-o", "json", "keyring", "list")
		wantOK(t, r)
		if strings.Count(r.stdout, `"primary": "`+newKey+`"`) != 3 || strings.Contains(r.stdout, oldKey) {
			t.Fatalf("keyring list after the rotation:\n%s", r.stdout)
		}
		wantFail(t, rw("keyring", "remove", newKey), exitError, `refused, no node changed: n1 uses it as its primary key`)
		if r := rw("keyring", "install", "not-a-key"); r.code != exitUsage || !strings.HasPrefix(r.stderr, "gwelbctl: invalid KEY: not base64") {
			t.Fatalf("keyring install not-a-key: exit %d, stderr %q", r.code, r.stderr)
		}
	})

	t.Run("read-only token", func(t *testing.T) {
		wantOK(t, ro("status"))
		wantOK(t, ro("member", "list"))
		wantOK(t, ro("raft", "peers"))
		wantOK(t, ro("route", "backend", ".1"))
		for _, args := range [][]string{
			{"member", "drain", "backend", "1"},
			{"member", "add", "backend", "9", c.GWE["1"].URL},
			{"member", "remove", "backend", "1"},
			{"raft", "transfer-leader"},
			{"leave", "--node", "n3"},
			{"keyring", "list"},
			{"keyring", "install", gossipKey(t)},
			{"snapshot", "save", t.TempDir() + "/snap"},
		} {
			wantFail(t, ro(args...), exitUnauthorised, `permission denied: \w+ needs the read-write token; the read-only token may call Status, Route and Watch\n$`)
		}
		wantFail(t, ctlAs(t, c, f, "wrong", "status"), exitUnauthorised, `^gwelbctl: unauthorised: check --token / GWELB_TOKEN\n$`)
	})
}
