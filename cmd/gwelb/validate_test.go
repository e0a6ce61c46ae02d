package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestValidateCommand(t *testing.T) {
	// A port already held by someone else: validate must not try to bind it.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	good := strings.Replace(validConfig, "127.0.0.1:0", busy.Addr().String(), 1)
	cluster := "node: n1\ndata_dir: /nonexistent/gwelb\nraft_addr: 127.0.0.1:7101\ngossip_addr: 127.0.0.1:7201\ngrpc_addr: 127.0.0.1:7001\ntoken: s3cret\n"
	bad := strings.Replace(validConfig, "prefix: /backend", "prefix: /backend\n    health: {path: about, expect_status: 999}", 1)

	tests := []struct {
		name   string
		config string // "" for a missing file
		args   []string
		code   int
		stdout string   // exact, with FILE for the path
		stderr []string // lines, with FILE for the path
	}{
		{name: "dev config", config: good, args: []string{"-dev"}, code: 0,
			stdout: "FILE: valid: 1 pool(s), 1 member(s), 1 listener(s)\n"},
		{name: "cluster config", config: cluster + "insecure: true\n" + good, code: 0,
			stdout: "FILE: valid: 1 pool(s), 1 member(s), 1 listener(s)\n"},
		{name: "cluster config without tls", config: cluster + good, code: 1,
			stderr: []string{"FILE: tls: required outside -dev (or set insecure: true): ca_file, cert_file and key_file from gwelb tls", "FILE: 1 problem(s); nothing was started"}},
		{name: "cluster config without node name", config: good, code: 1,
			stderr: []string{"FILE: node: name is required", "FILE: 1 problem(s); nothing was started"}},
		{name: "every pool problem", config: bad, args: []string{"-dev"}, code: 1, stderr: []string{
			`FILE: pools[0] "backend": health.path "about": must start with /`,
			`FILE: pools[0] "backend": health.expect_status 999: want an HTTP status 100..599`,
			"FILE: 2 problem(s); nothing was started",
		}},
		{name: "yaml error", config: "pools: nope\n", args: []string{"-dev"}, code: 1, stderr: []string{
			"FILE: yaml: unmarshal errors:",
			"FILE: line 1: cannot unmarshal !!str `nope` into []fsm.PoolSpec",
			"FILE: 2 problem(s); nothing was started",
		}},
		{name: "missing file", args: []string{"-dev"}, code: 1},
		{name: "usage", config: good, args: []string{"extra"}, code: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "gwelb.yaml")
			if tt.config != "" {
				if err := os.WriteFile(path, []byte(tt.config), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			var stdout, stderr bytes.Buffer
			args := append([]string{"-config", path}, tt.args...)
			if code := validateMain(args, &stdout, &stderr); code != tt.code {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, tt.code, stderr.String())
			}
			if want := strings.ReplaceAll(tt.stdout, "FILE", path); stdout.String() != want {
				t.Errorf("stdout = %q, want %q", stdout.String(), want)
			}
			if tt.stderr != nil {
				want := strings.ReplaceAll(strings.Join(tt.stderr, "\n")+"\n", "FILE", path)
				if stderr.String() != want {
					t.Errorf("stderr:\n%s\nwant:\n%s", stderr.String(), want)
				}
			}
		})
	}
}
