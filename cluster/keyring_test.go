package cluster_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"log"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gwelb/gwelb/cluster"
	"github.com/gwelb/gwelb/cluster/clustertest"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

func newGossipKey(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

// keyring runs one keyring operation through tn, wants every node to
// apply it, and returns the per-node results.
func keyring(t *testing.T, c *clustertest.Cluster, tn *clustertest.Node, op gwelbv1.KeyringOp, key []byte) []*gwelbv1.KeyringNodeResult {
	t.Helper()
	cl, ctx := c.Admin(tn)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req := &gwelbv1.KeyringRequest{Op: op}
	if key != nil {
		req.Key = base64.StdEncoding.EncodeToString(key)
	}
	resp, err := cl.Keyring(ctx, req)
	if err != nil {
		t.Fatalf("keyring %v via %s: %v", op, tn.Cfg.Name, err)
	}
	var names []string
	for _, r := range resp.GetNodes() {
		names = append(names, r.GetNode())
		if r.GetError() != "" {
			t.Fatalf("keyring %v via %s: node %s: %s", op, tn.Cfg.Name, r.GetNode(), r.GetError())
		}
	}
	if want := []string{"n1", "n2", "n3"}; !slices.Equal(names, want) {
		t.Fatalf("keyring %v via %s answered for %v, want %v", op, tn.Cfg.Name, names, want)
	}
	return resp.GetNodes()
}

// wantKeys checks that every node has exactly keys, the first primary.
func wantKeys(t *testing.T, results []*gwelbv1.KeyringNodeResult, keys ...[]byte) {
	t.Helper()
	var want []string
	for _, k := range keys {
		want = append(want, base64.StdEncoding.EncodeToString(k))
	}
	for _, r := range results {
		if !slices.Equal(r.GetKeys(), want) || r.GetPrimary() != want[0] {
			t.Fatalf("%s has keys %v (primary %s), want %v", r.GetNode(), r.GetKeys(), r.GetPrimary(), want)
		}
	}
}

// joinGossip starts a bare memberlist node on loopback with only key and
// tries to join addr: what an outsider who knows that key can do.
func joinGossip(t *testing.T, name string, key []byte, addr string) error {
	t.Helper()
	mc := memberlist.DefaultLocalConfig()
	mc.Name, mc.BindAddr, mc.BindPort = name, "127.0.0.1", 0
	mc.SecretKey = key
	mc.Logger = log.New(io.Discard, "", 0)
	ml, err := memberlist.Create(mc)
	if err != nil {
		t.Fatal(err)
	}
	defer ml.Shutdown()
	_, err = ml.Join([]string{addr})
	if err == nil {
		_ = ml.Leave(time.Second)
	}
	return err
}

// A key rotation over a real three-node cluster with gossip encryption
// (DESIGN.md §4): install a new key, use it, remove the old one. The
// cluster stays whole, writes replicate, a node restarted with the old
// gossip_key in its config comes back with the rotated keyring from its
// data_dir, and a gossip node that knows only the old key cannot join.
func TestKeyringRotation(t *testing.T) {
	oldKey, newKey := newGossipKey(t), newGossipKey(t)
	c := clustertest.New(t, 3, func(_ int, cfg *cluster.Config) { cfg.GossipKey = oldKey })
	f := c.Followers()[0]

	wantKeys(t, keyring(t, c, f, gwelbv1.KeyringOp_KEYRING_OP_LIST, nil), oldKey)

	// use before install, and removing the primary, change nothing.
	cl, ctx := c.Admin(f)
	for _, req := range []*gwelbv1.KeyringRequest{
		{Op: gwelbv1.KeyringOp_KEYRING_OP_USE, Key: base64.StdEncoding.EncodeToString(newKey)},
		{Op: gwelbv1.KeyringOp_KEYRING_OP_REMOVE, Key: base64.StdEncoding.EncodeToString(oldKey)},
	} {
		if _, err := cl.Keyring(ctx, req); status.Code(err) != codes.FailedPrecondition {
			t.Fatalf("keyring %v too early: %v, want FailedPrecondition", req.GetOp(), err)
		}
	}
	wantKeys(t, keyring(t, c, f, gwelbv1.KeyringOp_KEYRING_OP_LIST, nil), oldKey)

	wantKeys(t, keyring(t, c, f, gwelbv1.KeyringOp_KEYRING_OP_INSTALL, newKey), oldKey, newKey)
	wantKeys(t, keyring(t, c, c.WaitLeader(), gwelbv1.KeyringOp_KEYRING_OP_USE, newKey), newKey, oldKey)
	wantKeys(t, keyring(t, c, f, gwelbv1.KeyringOp_KEYRING_OP_REMOVE, oldKey), newKey)

	// Each node's keyring file says the same, owner-only.
	for _, tn := range c.Live() {
		path := filepath.Join(tn.Cfg.DataDir, "keyring")
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", path, fi.Mode().Perm())
		}
		data, _ := os.ReadFile(path)
		var keys []string
		if err := json.Unmarshal(data, &keys); err != nil || !slices.Equal(keys, []string{base64.StdEncoding.EncodeToString(newKey)}) {
			t.Errorf("%s holds %q (%v), want the new key alone", path, data, err)
		}
	}

	// An outsider with only the old key, or with no key at all, is
	// refused; one with the new key
	// (the control: the same join works) gets in.
	addr := c.Nodes[0].Cfg.GossipAddr
	if err := joinGossip(t, "outsider-old", oldKey, addr); err == nil {
		t.Fatal("a gossip node with only the old key joined after the rotation")
	}
	if err := joinGossip(t, "outsider-keyless", nil, addr); err == nil {
		t.Fatal("a gossip node without any key joined")
	}
	if err := joinGossip(t, "outsider-new", newKey, addr); err != nil {
		t.Fatalf("a gossip node with the new key could not join: %v", err)
	}

	// A write still replicates to every proxy.
	putMember(t, c, f, "4", c.GWE["1"].URL)
	c.WaitAll("member 4 in every proxy's table", func(tn *clustertest.Node) bool {
		_, ok := tn.Proxy.Table().Pool("backend").Lookup("4")
		return ok
	})

	// A node restarted with the old gossip_key still in its config
	// loads the rotated keyring from data_dir and is alive in every
	// node's gossip again, which needs gossip encrypted with the new key.
	n3 := c.Nodes[2]
	c.Kill(n3)
	n3 = c.Start(n3.Cfg)
	// The restarted node knows its peers only from gossip it could decrypt.
	clustertest.WaitFor(t, 20*time.Second, "the restarted n3 to see all three nodes alive in gossip", func() bool {
		return gossipAlive(n3) == "n1,n2,n3"
	})
	c.WaitAll("all three nodes alive in every node's gossip", func(tn *clustertest.Node) bool {
		return aliveInGossip(tn) == 3
	})
	wantKeys(t, keyring(t, c, f, gwelbv1.KeyringOp_KEYRING_OP_LIST, nil), newKey)
	putMember(t, c, n3, "5", c.GWE["2"].URL)
	c.WaitAll("member 5 in every proxy's table", func(tn *clustertest.Node) bool {
		_, ok := tn.Proxy.Table().Pool("backend").Lookup("5")
		return ok
	})
}

// gossipAlive lists the names tn's gossip calls alive.
func gossipAlive(tn *clustertest.Node) string {
	var names []string
	for _, m := range tn.Node.Status().GetGossip() {
		if m.GetStatus() == "alive" {
			names = append(names, m.GetName())
		}
	}
	return strings.Join(names, ",")
}

// Without gossip encryption there is no keyring to rotate: the call says
// so instead of pretending.
func TestKeyringWithoutGossipKey(t *testing.T) {
	c := clustertest.New(t, 1, clustertest.Insecure)
	cl, ctx := c.Admin(c.Nodes[0])
	_, err := cl.Keyring(ctx, &gwelbv1.KeyringRequest{Op: gwelbv1.KeyringOp_KEYRING_OP_LIST})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("keyring list without a gossip key: %v, want FailedPrecondition", err)
	}
}
