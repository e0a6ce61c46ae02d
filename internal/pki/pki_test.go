package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const day = 24 * time.Hour

// fixture is a CA with a node certificate for "n1" and a client
// certificate for "alice", in a temp dir.
type fixture struct {
	caDir, dir string
	node       Bundle // n1
	client     Bundle // alice (CertFile/KeyFile); CAFile is the CA
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	dir := t.TempDir()
	caDir := filepath.Join(dir, "ca")
	ca, _, err := CreateCA(caDir, day)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := CreateNodeCert(caDir, filepath.Join(dir, "certs"), "n1", []net.IP{net.IPv4(127, 0, 0, 1)}, []string{"localhost"}, day)
	if err != nil {
		t.Fatal(err)
	}
	ccert, ckey, err := CreateClientCert(caDir, filepath.Join(dir, "certs"), "alice", day)
	if err != nil {
		t.Fatal(err)
	}
	return fixture{caDir: caDir, dir: dir, node: Bundle{ca, cert, key}, client: Bundle{ca, ccert, ckey}}
}

func parse(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(path, strings.TrimSuffix(path, ".pem")+"-key.pem")
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// signRaw signs a certificate with the fixture's CA from a template the
// test controls (expired, no SAN), for the refusal tests.
func signRaw(t *testing.T, caDir, outDir, base string, tmpl *x509.Certificate) Bundle {
	t.Helper()
	caCert, caKey, err := loadCA(caDir)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber, _ = newSerial()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(outDir, 0o700); err != nil {
		t.Fatal(err)
	}
	cp, kp := filepath.Join(outDir, base+".pem"), filepath.Join(outDir, base+"-key.pem")
	if err := writePair(cp, kp, der, key); err != nil {
		t.Fatal(err)
	}
	return Bundle{filepath.Join(caDir, CACertFile), cp, kp}
}

func TestCreateFiles(t *testing.T) {
	f := newFixture(t)
	for _, p := range []string{f.node.KeyFile, f.client.KeyFile, filepath.Join(f.caDir, CAKeyFile)} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", p, st.Mode().Perm())
		}
	}
	if _, _, err := CreateCA(f.caDir, day); err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Errorf("CreateCA over an existing CA: %v, want a refusal", err)
	}
	if _, _, err := CreateNodeCert(f.caDir, filepath.Dir(f.node.CertFile), "n1", nil, nil, day); err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Errorf("CreateNodeCert over an existing cert: %v, want a refusal", err)
	}
	if _, _, err := CreateNodeCert(f.caDir, f.dir, "n2", nil, []string{"evil.node.gwelb"}, day); err == nil {
		t.Error("a node certificate with an extra node SAN was issued")
	}
	if _, _, err := CreateNodeCert(f.caDir, f.dir, "bad name", nil, nil, day); err == nil {
		t.Error("a node certificate for an invalid name was issued")
	}
	if _, _, err := CreateNodeCert(filepath.Join(f.dir, "nope"), f.dir, "n3", nil, nil, day); err == nil {
		t.Error("a node certificate without a CA was issued")
	}

	node, client := parse(t, f.node.CertFile), parse(t, f.client.CertFile)
	if name, ok := NodeName(node); !ok || name != "n1" {
		t.Errorf("NodeName(node cert) = %q, %v; want n1", name, ok)
	}
	if _, ok := ClientName(node); ok {
		t.Error("ClientName accepted a node certificate")
	}
	if name, ok := ClientName(client); !ok || name != "alice" {
		t.Errorf("ClientName(client cert) = %q, %v; want alice", name, ok)
	}
	if _, ok := NodeName(client); ok {
		t.Error("NodeName accepted a client certificate")
	}
	if name, err := f.node.Check(); err != nil || name != "n1" {
		t.Errorf("Check = %q, %v", name, err)
	}
	if _, err := f.client.Check(); err == nil {
		t.Error("Check accepted a client certificate as a node's")
	}
}

// handshake runs one TLS handshake over real loopback TCP and returns the
// server's and the client's errors.
func handshake(t *testing.T, server, client *tls.Config) (serverErr, clientErr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		tc := tls.Server(c, server)
		err = tc.Handshake()
		if err == nil {
			// TLS 1.3: the client's certificate is judged after the
			// client's handshake returns; read to learn the verdict.
			_, err = io.ReadFull(tc, make([]byte, 1))
			if err == nil {
				_, err = tc.Write([]byte{1})
			}
		}
		done <- err
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tc := tls.Client(c, client)
	clientErr = tc.Handshake()
	if clientErr == nil {
		if _, clientErr = tc.Write([]byte{1}); clientErr == nil {
			_, clientErr = io.ReadFull(tc, make([]byte, 1))
		}
	}
	if clientErr != nil {
		c.Close()
	}
	return <-done, clientErr
}

func TestNodeHandshakes(t *testing.T) {
	f := newFixture(t)
	n2c, n2k, err := CreateNodeCert(f.caDir, f.dir, "n2", nil, nil, day)
	if err != nil {
		t.Fatal(err)
	}
	n2 := Bundle{f.node.CAFile, n2c, n2k}

	// Another CA with a node certificate for the same name.
	otherCA, _, err := CreateCA(filepath.Join(f.dir, "other"), day)
	if err != nil {
		t.Fatal(err)
	}
	oc, ok, err := CreateNodeCert(filepath.Join(f.dir, "other"), filepath.Join(f.dir, "other-certs"), "n1", nil, nil, day)
	if err != nil {
		t.Fatal(err)
	}
	foreign := Bundle{otherCA, oc, ok}
	// From the foreign node's view, it trusts our CA but presents its own
	// CA's cert (the attacker knows our CA certificate, which is public).
	foreignTrustsUs := Bundle{f.node.CAFile, oc, ok}

	expired := signRaw(t, f.caDir, filepath.Join(f.dir, "expired"), "n3", &x509.Certificate{
		Subject: pkix.Name{CommonName: "n3"}, NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames: []string{"n3." + NodeDomain},
	})
	noSAN := signRaw(t, f.caDir, filepath.Join(f.dir, "nosan"), "n4", &x509.Certificate{
		Subject: pkix.Name{CommonName: "n4.node.gwelb"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames: []string{"n4.example"},
	})
	clientAsNode := Bundle{f.node.CAFile, f.client.CertFile, f.client.KeyFile}

	must := func(c *tls.Config, err error) *tls.Config {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	server := must(f.node.NodeServerConfig())

	// A genuine peer is accepted both ways.
	if se, ce := handshake(t, server, must(n2.NodeClientConfig())); se != nil || ce != nil {
		t.Fatalf("n2 -> n1: server %v, client %v", se, ce)
	}
	if se, ce := handshake(t, server, must(n2.NodeClientConfigFor("n1"))); se != nil || ce != nil {
		t.Fatalf("n2 -> n1 (named): server %v, client %v", se, ce)
	}
	// Named dial to the wrong node fails.
	if _, ce := handshake(t, server, must(n2.NodeClientConfigFor("n9"))); ce == nil {
		t.Error("NodeClientConfigFor(n9) accepted n1")
	}

	// Clients the node server must refuse.
	plain := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13} //nolint:gosec // the attacker
	for name, cfg := range map[string]*tls.Config{
		"no certificate":        plain,
		"another CA":            must(foreignTrustsUs.NodeClientConfig()),
		"expired":               must(expired.NodeClientConfig()),
		"client cert as node":   must(clientAsNode.nodeClientConfig("")),
		"node cert without SAN": must(noSAN.NodeClientConfig()),
	} {
		se, ce := handshake(t, server, cfg)
		if se == nil && ce == nil {
			t.Errorf("node server accepted a client with %s", name)
		}
	}

	// Servers a node client must refuse.
	client := must(f.node.NodeClientConfig())
	for name, b := range map[string]Bundle{
		"another CA":            foreign,
		"expired":               expired,
		"client cert as node":   clientAsNode,
		"node cert without SAN": noSAN,
	} {
		srv := must(b.ServerConfig(tls.NoClientCert))
		if _, ce := handshake(t, srv, client); ce == nil {
			t.Errorf("node client accepted a server with %s", name)
		}
		op := must(OperatorClientConfig(f.node.CAFile, "", "", ""))
		if _, ce := handshake(t, srv, op); ce == nil {
			t.Errorf("operator client accepted a server with %s", name)
		}
	}
}

func TestOperatorAndPeerNames(t *testing.T) {
	f := newFixture(t)
	srv, err := f.node.ServerConfig(tls.VerifyClientCertIfGiven)
	if err != nil {
		t.Fatal(err)
	}
	var got tls.ConnectionState
	srv.VerifyConnection = func(cs tls.ConnectionState) error { got = cs; return nil }

	op, err := OperatorClientConfig(f.node.CAFile, f.client.CertFile, f.client.KeyFile, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if se, ce := handshake(t, srv, op); se != nil || ce != nil {
		t.Fatalf("operator -> n1: server %v, client %v", se, ce)
	}
	if name, ok := PeerClientName(got); !ok || name != "alice" {
		t.Errorf("PeerClientName = %q, %v; want alice", name, ok)
	}
	if _, err := PeerNodeName(got); !errors.Is(err, ErrNotNode) {
		t.Errorf("PeerNodeName(operator) = %v, want ErrNotNode", err)
	}
	wrong, err := OperatorClientConfig(f.node.CAFile, "", "", "n2")
	if err != nil {
		t.Fatal(err)
	}
	if _, ce := handshake(t, srv, wrong); ce == nil {
		t.Error("operator client with server name n2 accepted n1")
	}
	if _, err := PeerNodeName(tls.ConnectionState{}); err == nil {
		t.Error("PeerNodeName of an unverified connection succeeded")
	}
}
