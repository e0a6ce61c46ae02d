package main

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gwelb/gwelb/internal/pki"
)

// TestTLSCommands runs gwelb tls and gwelb keygen as an operator would
// and checks their exit codes (0 done, 1 failed, 2 usage), one-line errors,
// and that a node config using their output starts-validates while one
// without tls or gossip_key is refused with the missing key named.
func TestTLSCommands(t *testing.T) {
	dir := t.TempDir()
	ca, certs := filepath.Join(dir, "ca"), filepath.Join(dir, "certs")
	run := func(args ...string) (int, string, string) {
		var stdout, stderr bytes.Buffer
		var code int
		if args[0] == "keygen" {
			code = keygenMain(args[1:], &stdout, &stderr)
		} else {
			code = tlsMain(args, &stdout, &stderr)
		}
		return code, stdout.String(), stderr.String()
	}
	steps := []struct {
		args   []string
		code   int
		stderr string // a substring of the first line
	}{
		{[]string{"ca", "create", "-dir", ca, "-days", "30"}, 0, ""},
		{[]string{"ca", "create", "-dir", ca}, 1, "refusing to overwrite"},
		{[]string{"cert", "create", "-ca-dir", ca, "-node", "n1", "-ip", "127.0.0.1", "-dns", "lb1.example", "-out", certs}, 0, ""},
		{[]string{"cert", "create", "-ca-dir", ca, "-node", "n1", "-out", certs}, 1, "refusing to overwrite"},
		{[]string{"cert", "create", "-ca-dir", ca, "-client", "alice", "-out", certs}, 0, ""},
		{[]string{"cert", "create", "-ca-dir", filepath.Join(dir, "none"), "-node", "n2", "-out", certs}, 1, "load CA"},
		{[]string{"cert", "create", "-ca-dir", ca, "-node", "bad name", "-out", certs}, 1, "DNS label"},
		{[]string{"cert", "create", "-ca-dir", ca, "-node", "n2", "-ip", "nope", "-out", certs}, 2, `-ip "nope": not an IP address`},
		{[]string{"cert", "create", "-ca-dir", ca, "-node", "n2", "-client", "x", "-out", certs}, 2, "exactly one of -node and -client"},
		{[]string{"cert", "create", "-ca-dir", ca, "-client", "x", "-ip", "127.0.0.1", "-out", certs}, 2, "-ip and -dns are for node certificates"},
		{[]string{"cert", "create", "-node", "n2"}, 2, "-ca-dir and -out are required"},
		{[]string{"ca", "create", "-dir", ca, "-days", "0"}, 2, "-days 0: must be positive"},
		{[]string{"ca"}, 2, "usage:"},
		{[]string{"keygen", "extra"}, 2, "usage: gwelb keygen"},
	}
	for _, s := range steps {
		code, _, stderr := run(s.args...)
		if code != s.code {
			t.Fatalf("gwelb tls %s: exit %d, want %d; stderr %q", strings.Join(s.args, " "), code, s.code, stderr)
		}
		first, _, _ := strings.Cut(stderr, "\n")
		if !strings.Contains(first, s.stderr) {
			t.Errorf("gwelb tls %s: stderr %q, want a first line containing %q", strings.Join(s.args, " "), stderr, s.stderr)
		}
	}
	for _, key := range []string{filepath.Join(ca, "ca-key.pem"), filepath.Join(certs, "n1-key.pem"), filepath.Join(certs, "alice-key.pem")} {
		if st, err := os.Stat(key); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v; want 0600", key, err, st.Mode().Perm())
		}
	}

	code, out, _ := run("keygen")
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(out))
	if code != 0 || err != nil || len(raw) != 32 {
		t.Fatalf("gwelb keygen: exit %d, %q (%v): want 32 bytes in base64", code, out, err)
	}

	bundle := pki.Bundle{CAFile: filepath.Join(ca, "ca.pem"), CertFile: filepath.Join(certs, "n1.pem"), KeyFile: filepath.Join(certs, "n1-key.pem")}
	if name, err := bundle.Check(); err != nil || name != "n1" {
		t.Fatalf("the node certificate made by gwelb tls: %q, %v", name, err)
	}
	node := "node: n1\ndata_dir: " + filepath.Join(dir, "data") + "\nraft_addr: 127.0.0.1:7101\ngossip_addr: 127.0.0.1:7201\ngrpc_addr: 127.0.0.1:7001\n"
	tlsLine := "tls: {ca_file: " + bundle.CAFile + ", cert_file: " + bundle.CertFile + ", key_file: " + bundle.KeyFile + "}\n"
	keyLine := "gossip_key: " + strings.TrimSpace(out) + "\n"
	for _, tt := range []struct{ name, config, want string }{
		{"secure", node + tlsLine + keyLine, ""},
		{"no tls", node + keyLine, "tls: required outside -dev (or set insecure: true)"},
		{"no gossip key", node + tlsLine, "gossip_key: required outside -dev (or set insecure: true)"},
		{"insecure", node + "insecure: true\ntoken: t\n", ""},
	} {
		cfg, err := ParseConfig([]byte(tt.config + validConfig))
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		_, err = cfg.ClusterConfig(false)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.want) || strings.Contains(err.Error(), "\n")):
			t.Errorf("%s: error %v, want one line starting %q", tt.name, err, tt.want)
		}
	}
}
