package cluster

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/memberlist"

	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

func testKey(b byte) []byte { return bytes.Repeat([]byte{b}, 16) }

// The keyring file round-trips, order kept; a damaged file is refused
// with its path named, never replaced by the seed (DESIGN.md §4.2).
func TestKeyringFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), keyringFile)
	keys := [][]byte{testKey(1), testKey(2), testKey(3)}
	if err := writeKeyring(path, keys); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("keyring file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	got, err := readKeyring(path)
	if err != nil || len(got) != 3 || !bytes.Equal(got[0], keys[0]) || !bytes.Equal(got[2], keys[2]) {
		t.Fatalf("read back %v, %v; want %v", got, err, keys)
	}
	for name, content := range map[string]string{
		"not json":  "nope",
		"no keys":   "[]",
		"bad key":   `["AAAA"]`,
		"no base64": `["!!"]`,
	} {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		n := &Node{cfg: Config{DataDir: filepath.Dir(path)}}
		if _, err := n.openKeyring(testKey(9)); err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: open: %v, want an error naming %s", name, err, path)
		}
	}
}

// Removing a key that is not the last keeps the others and their order,
// and leaves the primary alone; the primary itself is refused.
func TestKeyringRemoveMiddle(t *testing.T) {
	ring, err := memberlist.NewKeyring([][]byte{testKey(2), testKey(3), testKey(4)}, testKey(1))
	if err != nil {
		t.Fatal(err)
	}
	g := &gossipKeyring{path: filepath.Join(t.TempDir(), keyringFile), ring: ring}
	before := ring.GetKeys() // what a decrypting goroutine may hold
	if err := g.apply(gwelbv1.KeyringOp_KEYRING_OP_REMOVE, testKey(2)); err != nil {
		t.Fatal(err)
	}
	want := [][]byte{testKey(1), testKey(3), testKey(4)}
	if got := g.keys(); len(got) != 3 || !bytes.Equal(got[0], want[0]) || !bytes.Equal(got[1], want[1]) || !bytes.Equal(got[2], want[2]) {
		t.Fatalf("keys after remove: %v, want %v", got, want)
	}
	if !bytes.Equal(before[1], testKey(2)) || !bytes.Equal(before[2], testKey(3)) {
		t.Fatalf("the slice handed out before the remove was changed in place: %v", before)
	}
	if err := g.apply(gwelbv1.KeyringOp_KEYRING_OP_REMOVE, testKey(1)); err == nil {
		t.Fatal("removed the primary key")
	}
	onDisk, err := readKeyring(g.path)
	if err != nil || len(onDisk) != 3 || !bytes.Equal(onDisk[1], testKey(3)) {
		t.Fatalf("file after remove: %v, %v", onDisk, err)
	}
}
