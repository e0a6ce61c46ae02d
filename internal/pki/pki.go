// Package pki is gwelb's small certificate authority and the TLS
// configurations built on it (DESIGN.md §4): one cluster CA signs node
// certificates (DNS SAN "<name>.node.gwelb", serverAuth and clientAuth) and
// operator client certificates (DNS SAN "<name>.client.gwelb", clientAuth
// only). A peer is a gwelb node iff its certificate chains to the cluster
// CA and carries exactly one node SAN; the node name is read from that SAN,
// never from the address dialed or the gossip it sent.
//
// Keys are ECDSA P-256; key files are written 0600 and no file is ever
// overwritten.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// NodeDomain is the DNS SAN suffix of node certificates: "<name>.node.gwelb".
const NodeDomain = "node.gwelb"

// ClientDomain is the DNS SAN suffix of operator client certificates:
// "<name>.client.gwelb".
const ClientDomain = "client.gwelb"

// File names inside a CA directory.
const (
	CACertFile = "ca.pem"
	CAKeyFile  = "ca-key.pem"
)

// ErrNotNode is returned when a verified certificate is not a node
// certificate (a client certificate, or one without a node SAN).
var ErrNotNode = errors.New("not a gwelb node certificate")

// ValidName reports whether name can be a node or client name: one DNS
// label of 1-63 letters, digits, '-' or '_', not starting or ending with
// '-'. The name becomes the first label of the certificate's SAN.
func ValidName(name string) error {
	if name == "" || len(name) > 63 {
		return fmt.Errorf("name %q: want 1-63 characters", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_':
		case c == '-' && i != 0 && i != len(name)-1:
		default:
			return fmt.Errorf("name %q: only letters, digits, '-' and '_' (a DNS label)", name)
		}
	}
	return nil
}

// CreateCA creates a self-signed ECDSA P-256 CA in dir (created 0700 if
// missing): dir/ca.pem and dir/ca-key.pem (0600). It refuses to overwrite
// either file.
func CreateCA(dir string, validity time.Duration) (certPath, keyPath string, err error) {
	if validity <= 0 {
		return "", "", fmt.Errorf("create CA: validity %v: must be positive", validity)
	}
	certPath, keyPath = filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	if err := refuseExisting(certPath, keyPath); err != nil {
		return "", "", fmt.Errorf("create CA: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("create CA: key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return "", "", fmt.Errorf("create CA: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "gwelb CA " + serial.Text(16)[:8], Organization: []string{"gwelb"}},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(validity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", fmt.Errorf("create CA: sign: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("create CA: %w", err)
	}
	if err := writePair(certPath, keyPath, der, key); err != nil {
		return "", "", fmt.Errorf("create CA: %w", err)
	}
	return certPath, keyPath, nil
}

// CreateNodeCert signs a node certificate with the CA in caDir: DNS SAN
// "<node>.node.gwelb" plus the given IP and DNS SANs, usable as server and
// client (serverAuth, clientAuth). It writes outDir/<node>.pem and
// outDir/<node>-key.pem (0600) and refuses to overwrite them.
func CreateNodeCert(caDir, outDir, node string, ips []net.IP, dns []string, validity time.Duration) (certPath, keyPath string, err error) {
	if err := ValidName(node); err != nil {
		return "", "", fmt.Errorf("create node certificate: node %w", err)
	}
	for _, d := range dns {
		if d == "" || hasIdentitySuffix(d) {
			return "", "", fmt.Errorf("create node certificate: dns %q: want a host name outside %s and %s", d, NodeDomain, ClientDomain)
		}
	}
	sans := append([]string{node + "." + NodeDomain}, dns...)
	return issue(caDir, outDir, node, "gwelb node "+node, sans, ips,
		[]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, validity)
}

// CreateClientCert signs an operator client certificate with the CA in
// caDir: DNS SAN "<name>.client.gwelb", clientAuth only, so it can never
// serve as a node. It writes outDir/<name>.pem and outDir/<name>-key.pem
// (0600) and refuses to overwrite them.
func CreateClientCert(caDir, outDir, name string, validity time.Duration) (certPath, keyPath string, err error) {
	if err := ValidName(name); err != nil {
		return "", "", fmt.Errorf("create client certificate: client %w", err)
	}
	return issue(caDir, outDir, name, "gwelb client "+name, []string{name + "." + ClientDomain}, nil,
		[]x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, validity)
}

func issue(caDir, outDir, base, cn string, dns []string, ips []net.IP, usage []x509.ExtKeyUsage, validity time.Duration) (string, string, error) {
	what := "create certificate " + base
	if validity <= 0 {
		return "", "", fmt.Errorf("%s: validity %v: must be positive", what, validity)
	}
	caCert, caKey, err := loadCA(caDir)
	if err != nil {
		return "", "", fmt.Errorf("%s: %w", what, err)
	}
	certPath, keyPath := filepath.Join(outDir, base+".pem"), filepath.Join(outDir, base+"-key.pem")
	if err := refuseExisting(certPath, keyPath); err != nil {
		return "", "", fmt.Errorf("%s: %w", what, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("%s: key: %w", what, err)
	}
	serial, err := newSerial()
	if err != nil {
		return "", "", fmt.Errorf("%s: %w", what, err)
	}
	now := time.Now()
	notAfter := now.Add(validity)
	if notAfter.After(caCert.NotAfter) {
		notAfter = caCert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"gwelb"}},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           usage,
		BasicConstraintsValid: true,
		DNSNames:              dns,
		IPAddresses:           ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return "", "", fmt.Errorf("%s: sign: %w", what, err)
	}
	if err := os.MkdirAll(outDir, 0o700); err != nil {
		return "", "", fmt.Errorf("%s: %w", what, err)
	}
	if err := writePair(certPath, keyPath, der, key); err != nil {
		return "", "", fmt.Errorf("%s: %w", what, err)
	}
	return certPath, keyPath, nil
}

func loadCA(dir string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, nil, fmt.Errorf("load CA from %s: %w", dir, err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, nil, fmt.Errorf("load CA from %s: %w", dir, err)
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok || !cert.IsCA {
		return nil, nil, fmt.Errorf("load CA from %s: not a gwelb CA (want an ECDSA CA certificate)", dir)
	}
	return cert, key, nil
}

func newSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial: %w", err)
	}
	return serial, nil
}

func refuseExisting(paths ...string) error {
	for _, p := range paths {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("%s already exists; refusing to overwrite it", p)
		} else if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("check %s: %w", p, err)
		}
	}
	return nil
}

func writePair(certPath, keyPath string, der []byte, key *ecdsa.PrivateKey) error {
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encode key: %w", err)
	}
	if err := writeNew(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	if err := writeNew(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		_ = os.Remove(keyPath)
		return err
	}
	return nil
}

// writeNew creates path exclusively (O_EXCL), so a file that appeared
// since the check is not overwritten either.
func writeNew(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		_ = os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func hasIdentitySuffix(dns string) bool {
	d := strings.ToLower(strings.TrimSuffix(dns, "."))
	return strings.HasSuffix(d, "."+NodeDomain) || d == NodeDomain ||
		strings.HasSuffix(d, "."+ClientDomain) || d == ClientDomain
}

// identity returns the single name under domain in cert's DNS SANs. A
// certificate naming itself under both domains, or twice under one, has no
// identity.
func identity(cert *x509.Certificate, domain string) (string, bool) {
	var name string
	n := 0
	for _, d := range cert.DNSNames {
		if !hasIdentitySuffix(d) {
			continue
		}
		n++
		d = strings.ToLower(d)
		if label, ok := strings.CutSuffix(d, "."+domain); ok && ValidName(label) == nil {
			name = label
		}
	}
	if n != 1 || name == "" {
		return "", false
	}
	return name, true
}

// NodeName returns the node name of a node certificate: the label before
// ".node.gwelb" in its only identity SAN, lower-cased. A client
// certificate, a CA, or a certificate without (or with several) identity
// SANs has none. It does not verify the chain: use it on verified
// certificates only.
func NodeName(cert *x509.Certificate) (string, bool) {
	if cert == nil || cert.IsCA || !hasUsage(cert, x509.ExtKeyUsageServerAuth) || !hasUsage(cert, x509.ExtKeyUsageClientAuth) {
		return "", false
	}
	return identity(cert, NodeDomain)
}

// ClientName returns the operator name of a client certificate: the label
// before ".client.gwelb", lower-cased. It does not verify the chain.
func ClientName(cert *x509.Certificate) (string, bool) {
	if cert == nil || cert.IsCA || !hasUsage(cert, x509.ExtKeyUsageClientAuth) {
		return "", false
	}
	return identity(cert, ClientDomain)
}

func hasUsage(cert *x509.Certificate, u x509.ExtKeyUsage) bool {
	for _, have := range cert.ExtKeyUsage {
		if have == u {
			return true
		}
	}
	return false
}

// Bundle names a node's PEM files: the cluster CA, the node certificate
// and its key.
type Bundle struct{ CAFile, CertFile, KeyFile string }

// Enabled reports whether the bundle names any file.
func (b Bundle) Enabled() bool { return b.CAFile != "" || b.CertFile != "" || b.KeyFile != "" }

// Check loads the bundle and verifies that the certificate is a node
// certificate chaining to the CA; it returns the certificate's node name.
func (b Bundle) Check() (string, error) {
	pool, pair, err := b.load()
	if err != nil {
		return "", err
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return "", fmt.Errorf("tls.cert_file %s: %w", b.CertFile, err)
	}
	name, err := verifyNode(pool, []*x509.Certificate{cert}, x509.ExtKeyUsageServerAuth)
	if err != nil {
		return "", fmt.Errorf("tls.cert_file %s: %w", b.CertFile, err)
	}
	return name, nil
}

func (b Bundle) load() (*x509.CertPool, tls.Certificate, error) {
	for _, f := range []struct{ key, path string }{{"ca_file", b.CAFile}, {"cert_file", b.CertFile}, {"key_file", b.KeyFile}} {
		if f.path == "" {
			return nil, tls.Certificate{}, fmt.Errorf("tls.%s: is required", f.key)
		}
	}
	pool, err := LoadCAPool(b.CAFile)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	pair, err := tls.LoadX509KeyPair(b.CertFile, b.KeyFile)
	if err != nil {
		return nil, tls.Certificate{}, fmt.Errorf("tls.cert_file/key_file: %w", err)
	}
	return pool, pair, nil
}

// LoadCAPool reads a PEM file of CA certificates.
func LoadCAPool(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tls.ca_file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("tls.ca_file %s: no PEM certificate", path)
	}
	return pool, nil
}

// ServerConfig presents the node certificate and verifies client
// certificates against the CA as clientAuth asks
// (tls.RequireAndVerifyClientCert for node-only ports,
// tls.VerifyClientCertIfGiven where operators may come with a token). It
// does not decide who the client is: use PeerNodeName / ClientName on the
// verified chain, or NodeServerConfig.
func (b Bundle) ServerConfig(clientAuth tls.ClientAuthType) (*tls.Config, error) {
	pool, pair, err := b.load()
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{pair},
		ClientCAs:    pool,
		ClientAuth:   clientAuth,
	}, nil
}

// NodeServerConfig is ServerConfig(tls.RequireAndVerifyClientCert) that
// also refuses, during the handshake, a client whose certificate is not a
// node certificate (a client certificate of ClientDomain included): the
// configuration for ports only nodes may use (Raft).
func (b Bundle) NodeServerConfig() (*tls.Config, error) {
	cfg, err := b.ServerConfig(tls.RequireAndVerifyClientCert)
	if err != nil {
		return nil, err
	}
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		_, err := PeerNodeName(cs)
		return err
	}
	return cfg, nil
}

// NodeClientConfig presents the node certificate and accepts only a server
// whose certificate chains to the CA and is a node certificate, of any
// node name; the host name dialed is not checked (peers are dialed at
// gossiped addresses). Use NodeClientConfigFor to require one name.
func (b Bundle) NodeClientConfig() (*tls.Config, error) {
	return b.nodeClientConfig("")
}

// NodeClientConfigFor is NodeClientConfig that also requires the server's
// node name to be node. The chain is verified by crypto/tls against the
// SAN "<node>.node.gwelb", so PeerNodeName works on the connection state.
func (b Bundle) NodeClientConfigFor(node string) (*tls.Config, error) {
	if err := ValidName(node); err != nil {
		return nil, fmt.Errorf("node %w", err)
	}
	return b.nodeClientConfig(node)
}

func (b Bundle) nodeClientConfig(node string) (*tls.Config, error) {
	pool, pair, err := b.load()
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{pair}}
	setServerCheck(cfg, pool, node)
	return cfg, nil
}

// OperatorClientConfig is the configuration for gwelbctl: it verifies
// that the server is a node certificate chaining to caFile; with
// serverName set, the node name must equal it. certFile and keyFile (both
// or neither) present an operator client certificate.
func OperatorClientConfig(caFile, certFile, keyFile, serverName string) (*tls.Config, error) {
	if caFile == "" {
		return nil, errors.New("tls: a CA file is required to verify the node")
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("tls: a client certificate needs both its certificate and key files")
	}
	if serverName != "" {
		if err := ValidName(serverName); err != nil {
			return nil, fmt.Errorf("tls server name: %w", err)
		}
	}
	pool, err := LoadCAPool(caFile)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS13}
	if certFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("tls client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	setServerCheck(cfg, pool, serverName)
	return cfg, nil
}

// setServerCheck makes cfg accept only a node certificate chaining to
// pool. With a node name, crypto/tls verifies the chain and the SAN
// "<node>.node.gwelb" itself (filling VerifiedChains); without one, the
// host name is not checked, so the chain is verified in VerifyConnection.
func setServerCheck(cfg *tls.Config, pool *x509.CertPool, node string) {
	if node != "" {
		cfg.RootCAs = pool
		cfg.ServerName = strings.ToLower(node) + "." + NodeDomain
		want := strings.ToLower(node)
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			got, err := PeerNodeName(cs)
			if err != nil {
				return err
			}
			if got != want {
				return fmt.Errorf("server is node %q, want %q", got, want)
			}
			return nil
		}
		return
	}
	// The chain is verified below, in VerifyConnection, which runs on
	// every handshake including resumed ones (crypto/tls documents this
	// pattern for skipping only the host-name check).
	cfg.InsecureSkipVerify = true
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		_, err := verifyNode(pool, cs.PeerCertificates, x509.ExtKeyUsageServerAuth)
		return err
	}
}

// verifyNode verifies that certs[0] chains to pool through certs[1:] for
// usage and is a node certificate, and returns its node name.
func verifyNode(pool *x509.CertPool, certs []*x509.Certificate, usage x509.ExtKeyUsage) (string, error) {
	if len(certs) == 0 {
		return "", errors.New("no certificate presented")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return "", fmt.Errorf("verify certificate: %w", err)
	}
	name, ok := NodeName(certs[0])
	if !ok {
		return "", fmt.Errorf("certificate %q: %w", certs[0].Subject.CommonName, ErrNotNode)
	}
	return name, nil
}

// PeerNodeName returns the node name of the peer of a TLS connection whose
// certificate chain crypto/tls verified (a server with client auth
// RequireAndVerifyClientCert or VerifyClientCertIfGiven, or a client from
// NodeClientConfigFor / OperatorClientConfig with a server name). A peer
// without a verified chain, or whose certificate is not a node
// certificate, is an error.
func PeerNodeName(cs tls.ConnectionState) (string, error) {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return "", errors.New("peer presented no verified certificate")
	}
	name, ok := NodeName(cs.VerifiedChains[0][0])
	if !ok {
		return "", fmt.Errorf("peer certificate %q: %w", cs.VerifiedChains[0][0].Subject.CommonName, ErrNotNode)
	}
	return name, nil
}

// PeerClientName returns the operator name of the peer of a TLS connection
// whose client certificate crypto/tls verified, if it is a client
// certificate of ClientDomain.
func PeerClientName(cs tls.ConnectionState) (string, bool) {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return "", false
	}
	return ClientName(cs.VerifiedChains[0][0])
}
