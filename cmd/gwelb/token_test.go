package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// token_file and read_token_file (DESIGN.md §4): contents trimmed, one
// source per token, an unreadable file a one-line problem naming its field
// before anything starts, and a read-only token that is not the read-write one.
func TestTokenFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	rw, ro := write("token", "  s3cret\n"), write("read-token", "look-only\n")
	empty := write("empty", " \n")
	missing := filepath.Join(dir, "missing")

	gk := write("gossip.key", "AAECAwQFBgcICQoLDA0ODw==\n")
	cfg, err := decodeConfig([]byte("token_file: " + rw + "\nread_token_file: " + ro + "\ngossip_key_file: " + gk + "\n" + validConfig))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.applyDev(); err != nil {
		t.Fatal(err)
	}
	cc, err := cfg.ClusterConfig(true)
	if err != nil {
		t.Fatal(err)
	}
	if cc.Token != "s3cret" || cc.ReadToken != "look-only" {
		t.Fatalf("tokens %q and %q, want the files' contents trimmed", cc.Token, cc.ReadToken)
	}
	if len(cc.GossipKey) != 16 || cc.GossipKey[15] != 15 {
		t.Fatalf("gossip key %v, want the file's 16 bytes", cc.GossipKey)
	}

	for _, tt := range []struct {
		name, head, want string
	}{
		{"token and token_file", "token: a\ntoken_file: " + rw + "\n", "token, token_file: set one, not both"},
		{"read_token and read_token_file", "read_token: a\nread_token_file: " + ro + "\n", "read_token, read_token_file: set one, not both"},
		{"unreadable token_file", "token_file: " + missing + "\n", "token_file: open " + missing + ": no such file or directory"},
		{"unreadable read_token_file", "read_token_file: " + missing + "\n", "read_token_file: open " + missing + ": no such file or directory"},
		{"empty token_file", "token_file: " + empty + "\n", "token_file " + empty + ": empty"},
		{"a directory", "token_file: " + dir + "\n", "token_file " + dir + ": not a regular file"},
		{"gossip_key and gossip_key_file", "gossip_key: AAECAwQFBgcICQoLDA0ODw==\ngossip_key_file: " + gk + "\n", "gossip_key, gossip_key_file: set one, not both"},
		{"unreadable gossip_key_file", "gossip_key_file: " + missing + "\n", "gossip_key_file: open " + missing + ": no such file or directory"},
		{"gossip_key_file not a key", "gossip_key_file: " + rw + "\n", "gossip_key_file " + rw + ": not base64: illegal base64 data at input byte 4"},
		{"read_token equal to token", "token: same\nread_token_file: " + write("same", "same\n") + "\n", "read_token: must differ from token, or the read-only role would grant writes"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := validateConfig([]byte(tt.head+validConfig), true)
			if !slices.Contains(got, tt.want) {
				t.Fatalf("problems %q, want %q", got, tt.want)
			}
			for _, p := range got {
				if strings.Contains(p, "\n") {
					t.Errorf("problem spans lines: %q", p)
				}
			}
		})
	}
}
