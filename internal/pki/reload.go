package pki

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// KeyPair is a certificate and its key read from PEM files, replaced
// without a restart (DESIGN.md §6.4): on SIGHUP (Reload) and when the
// files change (ReloadIfChanged, polled by the daemon). Handshakes already
// done keep the certificate they got; every new handshake gets the current
// one through GetCertificate or GetClientCertificate. A reload that fails
// (a missing file, a key that does not match, a check that refuses the
// certificate) changes nothing: the previous certificate stays in use.
type KeyPair struct {
	field             string // config path named in errors ("tls.cert_file", "listeners[0].tls.cert")
	certFile, keyFile string
	check             func(*x509.Certificate) error

	cert atomic.Pointer[tls.Certificate]

	mu    sync.Mutex // serialises reloads
	stamp [2]os.FileInfo
}

// LoadKeyPair reads certFile and keyFile. field names the config setting
// in errors; check, if not nil, judges the leaf certificate of every load
// (a node certificate must stay one of the CA, for this node's name).
func LoadKeyPair(field, certFile, keyFile string, check func(*x509.Certificate) error) (*KeyPair, error) {
	k := &KeyPair{field: field, certFile: certFile, keyFile: keyFile, check: check}
	if _, err := k.Reload(); err != nil {
		return nil, err
	}
	return k, nil
}

// Field is the config setting the key pair comes from.
func (k *KeyPair) Field() string { return k.field }

// Reload reads the files again, whatever their modification times say.
// It reports whether the certificate in use changed.
func (k *KeyPair) Reload() (changed bool, err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.reloadLocked()
}

// ReloadIfChanged reloads when either file's size, modification time or
// identity (a file renamed over it) differs from the last attempt; a
// failed attempt is not retried until the files change again, so a
// rotation caught half-written is read again once the second file lands,
// and a broken file is reported once, not at every poll.
func (k *KeyPair) ReloadIfChanged() (changed bool, err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := statPair(k.certFile, k.keyFile)
	if sameStamp(now[0], k.stamp[0]) && sameStamp(now[1], k.stamp[1]) {
		return false, nil
	}
	return k.reloadLocked()
}

func (k *KeyPair) reloadLocked() (bool, error) {
	k.stamp = statPair(k.certFile, k.keyFile)
	pair, err := tls.LoadX509KeyPair(k.certFile, k.keyFile)
	if err != nil {
		return false, fmt.Errorf("%s %s: %w", k.field, k.certFile, err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return false, fmt.Errorf("%s %s: %w", k.field, k.certFile, err)
	}
	pair.Leaf = leaf
	if k.check != nil {
		if err := k.check(leaf); err != nil {
			return false, fmt.Errorf("%s %s: %w", k.field, k.certFile, err)
		}
	}
	if old := k.cert.Load(); old != nil && sameChain(old.Certificate, pair.Certificate) {
		return false, nil
	}
	k.cert.Store(&pair)
	return true, nil
}

// Leaf is the certificate in use.
func (k *KeyPair) Leaf() *x509.Certificate { return k.cert.Load().Leaf }

// Describe names the certificate in use for a log line: subject, serial
// and expiry.
func (k *KeyPair) Describe() string {
	l := k.Leaf()
	return fmt.Sprintf("%q serial %s, valid until %s", l.Subject.CommonName, l.SerialNumber.Text(16), l.NotAfter.UTC().Format(time.RFC3339))
}

// GetCertificate is tls.Config.GetCertificate: the current certificate.
func (k *KeyPair) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return k.cert.Load(), nil
}

// GetClientCertificate is tls.Config.GetClientCertificate: the current
// certificate.
func (k *KeyPair) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return k.cert.Load(), nil
}

// Serve makes cfg present the key pair's current certificate, as a server
// and as a client, instead of a fixed one.
func (k *KeyPair) Serve(cfg *tls.Config) {
	cfg.Certificates = nil
	cfg.GetCertificate = k.GetCertificate
	cfg.GetClientCertificate = k.GetClientCertificate
}

func statPair(certFile, keyFile string) [2]os.FileInfo {
	var s [2]os.FileInfo
	s[0], _ = os.Stat(certFile)
	s[1], _ = os.Stat(keyFile)
	return s
}

// sameStamp compares what polling can see of a file: identity (device and
// inode: a file renamed over the old one is new), size and modification time.
func sameStamp(a, b os.FileInfo) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}

func sameChain(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// NodeCheck returns the check of a node's own certificate: it must chain
// to the CA in caFile and be the node certificate of name (a certificate
// of another node, or a client certificate, installed by mistake would cut
// this node off from its peers).
func NodeCheck(caFile, name string) (func(*x509.Certificate) error, error) {
	pool, err := LoadCAPool(caFile)
	if err != nil {
		return nil, err
	}
	return func(c *x509.Certificate) error {
		got, err := verifyNode(pool, []*x509.Certificate{c}, x509.ExtKeyUsageServerAuth)
		if err != nil {
			return err
		}
		if name != "" && !strings.EqualFold(got, name) {
			return fmt.Errorf("node certificate of %q, not of this node %q", got, name)
		}
		return nil
	}, nil
}
