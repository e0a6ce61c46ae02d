package main

import (
	"strings"
	"testing"
	"time"
)

// The data plane's resource limits: judged with the rest of the file, and
// handed to the proxy as written.
func TestLimitsConfig(t *testing.T) {
	tests := []struct {
		name  string
		yaml  string
		probs []string // substrings of the problems expected; none: valid
	}{
		{name: "defaults", yaml: ""},
		{name: "all set", yaml: "limits: {max_conns: 20000, retry_buffer_total: 134217728, retry_body_bytes: 2097152, body_min_rate: 1000}\ntimeouts: {body_read: 30s}\n"},
		{name: "negative max_conns", yaml: "limits: {max_conns: -1}\n", probs: []string{"limits.max_conns -1: must not be negative"}},
		{name: "negative retry_buffer_total", yaml: "limits: {retry_buffer_total: -5}\n", probs: []string{"limits.retry_buffer_total -5: must not be negative"}},
		{name: "negative body_min_rate", yaml: "limits: {body_min_rate: -500}\n", probs: []string{"limits.body_min_rate -500: must not be negative"}},
		{name: "negative body_read", yaml: "timeouts: {body_read: -1s}\n", probs: []string{"timeouts.body_read -1s: must not be negative"}},
		{name: "budget below one body", yaml: "limits: {retry_buffer_total: 1000, retry_body_bytes: 2000}\n",
			probs: []string{"limits.retry_buffer_total 1000: must be at least limits.retry_body_bytes (2000)"}},
		{name: "budget below the default body", yaml: "limits: {retry_buffer_total: 1000}\n",
			probs: []string{"limits.retry_buffer_total 1000: must be at least limits.retry_body_bytes (1048576)"}},
		{name: "body above the default budget", yaml: "limits: {retry_body_bytes: 134217728}\n",
			probs: []string{"limits.retry_buffer_total 67108864: must be at least limits.retry_body_bytes (134217728)"}},
		{name: "everything wrong at once", yaml: "limits: {max_conns: -1, body_min_rate: -1}\ntimeouts: {body_read: -1s}\n",
			probs: []string{"limits.max_conns", "limits.body_min_rate", "timeouts.body_read"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ParseConfig([]byte(validConfig + tt.yaml))
			if len(tt.probs) == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted %+v", cfg)
			}
			for _, p := range tt.probs {
				if !strings.Contains(err.Error(), p) {
					t.Errorf("problems %q lack %q", err, p)
				}
			}
			if n := strings.Count(err.Error(), "\n") + 1; n != len(tt.probs) {
				t.Errorf("%d problems, want %d: %q", n, len(tt.probs), err)
			}
		})
	}

	cfg, err := ParseConfig([]byte(validConfig + "limits: {max_conns: 20000, retry_buffer_total: 134217728, body_min_rate: 1000}\ntimeouts: {body_read: 30s}\n"))
	if err != nil {
		t.Fatal(err)
	}
	opts, err := cfg.ProxyOptions()
	if err != nil {
		t.Fatal(err)
	}
	if opts.RetryBufferTotal != 128<<20 || opts.BodyMinRate != 1000 || opts.BodyReadTimeout != 30*time.Second {
		t.Errorf("proxy options %+v do not carry the limits", opts)
	}
	for _, lc := range cfg.ListenerConfigs() {
		if lc.MaxConns != 20000 {
			t.Errorf("listener %s: MaxConns %d, want 20000", lc.Addr, lc.MaxConns)
		}
	}
}
