package main

import (
	"strings"
	"testing"
)

// TestOpsConfig: the ops: block (addr, pprof) parses, and its mistakes —
// including the ops_addr key it replaced — are refused naming the field.
func TestOpsConfig(t *testing.T) {
	cfg, err := ParseConfig([]byte("ops: {addr: 127.0.0.1:8081, pprof: true}\n" + validConfig))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Ops.Addr != "127.0.0.1:8081" || !cfg.Ops.Pprof {
		t.Errorf("ops = %+v", cfg.Ops)
	}
	for _, tt := range []struct {
		name, head string
		want       string
	}{
		{"old ops_addr", "ops_addr: 127.0.0.1:8081\n", `ops_addr: replaced by ops.addr (ops: {addr: "127.0.0.1:8081"})`},
		{"bad addr", "ops: {addr: nowhere}\n", `ops.addr "nowhere": want host:port`},
		{"pprof without addr", "ops: {pprof: true}\n", "ops.pprof: needs ops.addr"},
		{"unknown ops key", "ops: {adr: 127.0.0.1:8081}\n", "adr"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tt.head + validConfig))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want it to mention %q", err, tt.want)
			}
		})
	}
}
