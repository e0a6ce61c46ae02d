package main

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"

	"github.com/gwelb/gwelb/internal/pki"
)

// The chaos nodes run the secure posture of DESIGN.md §4, as a production
// cluster must: a CA in the work directory, a node certificate per node
// (SAN <name>.node.gwelb plus the node's IP, so gwelbctl can verify the
// address it dials) and one gossip key.

var pkiMu sync.Mutex

func (d *driver) pkiDir() string { return filepath.Join(d.work, "pki") }

// caFile is the chaos cluster's CA certificate, created on first use.
func (d *driver) caFile() (string, error) {
	pkiMu.Lock()
	defer pkiMu.Unlock()
	caDir := filepath.Join(d.pkiDir(), "ca")
	ca := filepath.Join(caDir, pki.CACertFile)
	if _, err := os.Stat(ca); err == nil {
		return ca, nil
	}
	if _, _, err := pki.CreateCA(caDir, 24*time.Hour); err != nil {
		return "", fmt.Errorf("chaos CA: %w", err)
	}
	return ca, nil
}

// nodeBundle returns node n's certificate files, issuing them once.
func (d *driver) nodeBundle(n *gnode) (pki.Bundle, error) {
	ca, err := d.caFile()
	if err != nil {
		return pki.Bundle{}, err
	}
	pkiMu.Lock()
	defer pkiMu.Unlock()
	out := filepath.Join(d.pkiDir(), "certs")
	b := pki.Bundle{CAFile: ca, CertFile: filepath.Join(out, n.name+".pem"), KeyFile: filepath.Join(out, n.name+"-key.pem")}
	if _, err := os.Stat(b.CertFile); err == nil {
		return b, nil
	}
	var ips []net.IP
	if ip := net.ParseIP(n.ip); ip != nil {
		ips = append(ips, ip)
	}
	if _, _, err := pki.CreateNodeCert(filepath.Join(d.pkiDir(), "ca"), out, n.name, ips, nil, 24*time.Hour); err != nil {
		return pki.Bundle{}, fmt.Errorf("certificate of %s: %w", n.name, err)
	}
	return b, nil
}

// gossipKey is the chaos cluster's gossip key (base64), made on first use.
func (d *driver) gossipKey() (string, error) {
	pkiMu.Lock()
	defer pkiMu.Unlock()
	path := filepath.Join(d.pkiDir(), "gossip.key")
	if b, err := os.ReadFile(path); err == nil {
		return string(b), nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("gossip key: %w", err)
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return "", fmt.Errorf("gossip key: %w", err)
	}
	enc := base64.StdEncoding.EncodeToString(key)
	if err := os.MkdirAll(d.pkiDir(), 0o700); err != nil {
		return "", fmt.Errorf("gossip key: %w", err)
	}
	if err := os.WriteFile(path, []byte(enc), 0o600); err != nil {
		return "", fmt.Errorf("gossip key: %w", err)
	}
	return enc, nil
}

// adminCreds verifies that an admin API is a node of the chaos CA; the
// token authenticates the driver, as gwelbctl --ca-file does.
func (d *driver) adminCreds() (credentials.TransportCredentials, error) {
	ca, err := d.caFile()
	if err != nil {
		return nil, err
	}
	tc, err := pki.OperatorClientConfig(ca, "", "", "")
	if err != nil {
		return nil, fmt.Errorf("admin TLS: %w", err)
	}
	return credentials.NewTLS(tc), nil
}
