package main

import (
	"strings"
	"testing"

	"github.com/gwelb/gwelb/proxy"
)

// access_log_format picks the access log's line format; the node's name
// goes on every line; a bad value is refused naming the field.
func TestAccessLogFormatConfig(t *testing.T) {
	for _, tc := range []struct {
		line    string
		want    proxy.AccessLogFormat
		wantErr string
	}{
		{"", proxy.AccessLogCombined, ""},
		{"access_log_format: combined\n", proxy.AccessLogCombined, ""},
		{"access_log_format: json\n", proxy.AccessLogJSON, ""},
		{"access_log_format: xml\n", 0, `access_log_format: "xml": want combined or json`},
	} {
		cfg, err := ParseConfig([]byte("node: n7\n" + tc.line + validConfig))
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: error %v, want %q", tc.line, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", tc.line, err)
		}
		opts, err := cfg.ProxyOptions()
		if err != nil {
			t.Fatal(err)
		}
		if opts.AccessLogFormat != tc.want || opts.NodeName != "n7" {
			t.Errorf("%q: format %v node %q, want %v n7", tc.line, opts.AccessLogFormat, opts.NodeName, tc.want)
		}
	}
}
