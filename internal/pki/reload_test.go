package pki

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestKeyPairReload: a key pair serves its files' certificate, polls see a
// rotation by rename, a broken rotation is refused with the field named and
// the previous certificate kept, and a node's check refuses another
// node's certificate.
func TestKeyPairReload(t *testing.T) {
	f := newFixture(t)
	check, err := NodeCheck(f.node.CAFile, "n1")
	if err != nil {
		t.Fatal(err)
	}
	kp, err := LoadKeyPair("tls.cert_file", f.node.CertFile, f.node.KeyFile, check)
	if err != nil {
		t.Fatal(err)
	}
	first := kp.Leaf().SerialNumber
	if c, _ := kp.GetCertificate(nil); c.Leaf.SerialNumber.Cmp(first) != 0 {
		t.Fatal("GetCertificate does not serve the loaded certificate")
	}
	if changed, err := kp.ReloadIfChanged(); changed || err != nil {
		t.Fatalf("poll without a change: changed %v, %v", changed, err)
	}
	if changed, err := kp.Reload(); changed || err != nil {
		t.Fatalf("reload of the same files: changed %v, %v; want no change", changed, err)
	}

	// Rotation: a new certificate of the same node renamed over the files.
	newCert := func(node string) (string, string) {
		t.Helper()
		out, err := os.MkdirTemp(f.dir, "new-")
		if err != nil {
			t.Fatal(err)
		}
		c, k, err := CreateNodeCert(f.caDir, out, node, []net.IP{net.IPv4(127, 0, 0, 1)}, nil, day)
		if err != nil {
			t.Fatal(err)
		}
		return c, k
	}
	c, k := newCert("n1")
	if err := os.Rename(k, f.node.KeyFile); err != nil {
		t.Fatal(err)
	}
	// Half a rotation: the key does not match the certificate yet.
	if changed, err := kp.ReloadIfChanged(); changed || err == nil || !strings.Contains(err.Error(), "tls.cert_file") {
		t.Fatalf("poll after half a rotation: changed %v, err %v; want an error naming tls.cert_file", changed, err)
	}
	if kp.Leaf().SerialNumber.Cmp(first) != 0 {
		t.Fatal("a refused reload replaced the certificate")
	}
	if changed, err := kp.ReloadIfChanged(); changed || err != nil {
		t.Fatalf("poll with the same broken files: changed %v, %v; want nothing (reported once)", changed, err)
	}
	if err := os.Rename(c, f.node.CertFile); err != nil {
		t.Fatal(err)
	}
	if changed, err := kp.ReloadIfChanged(); !changed || err != nil {
		t.Fatalf("poll after the whole rotation: changed %v, %v", changed, err)
	}
	if c, _ := kp.GetClientCertificate(nil); c.Leaf.SerialNumber.Cmp(first) == 0 {
		t.Fatal("GetClientCertificate still serves the old certificate")
	}

	// Another node's certificate is refused by the check.
	c, k = newCert("n2")
	os.Rename(k, f.node.KeyFile)
	os.Rename(c, f.node.CertFile)
	if _, err := kp.Reload(); err == nil || !strings.Contains(err.Error(), `"n2"`) {
		t.Fatalf("reload of n2's certificate for n1: %v; want a refusal naming n2", err)
	}
	// A missing file, too.
	missing, err := LoadKeyPair("listeners[0].tls.cert", filepath.Join(f.dir, "nope.pem"), f.node.KeyFile, nil)
	if err == nil || missing != nil || !strings.Contains(err.Error(), "listeners[0].tls.cert") {
		t.Fatalf("missing file: %v", err)
	}
}
