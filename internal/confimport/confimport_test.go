package confimport

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/gwelb/gwelb/fsm"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.yaml from the importer's output")

// The samples in testdata are the guide's sample configurations as its PDF
// prints them (testdata/README.md): they are only parsed, never started or
// contacted, so their addresses stay the guide's.

// flatten maps every scalar of a YAML document to its path:
// "pools[0].members[1].route" -> "GWE_Frontend_52".
func flatten(t *testing.T, out []byte) map[string]string {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal(out, &doc); err != nil {
		t.Fatalf("output is not YAML: %v\n%s", err, out)
	}
	m := map[string]string{}
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				p := n.Content[i].Value
				if path != "" {
					p = path + "." + p
				}
				walk(n.Content[i+1], p)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				walk(c, fmt.Sprintf("%s[%d]", path, i))
			}
		case yaml.ScalarNode:
			m[path] = n.Value
		}
	}
	walk(&doc, "")
	return m
}

// imported imports a sample, renders it and checks that the printed YAML
// decodes strictly (unknown keys are errors, as in gwelb's config loader)
// into the very pools and listeners the import made: the comments change
// nothing and the keys are the schema's.
func imported(t *testing.T, kind Kind, name string, src []byte) (*Config, []byte) {
	t.Helper()
	cfg, err := Import(kind, name, src)
	if err != nil {
		t.Fatalf("Import: %v", err)
	}
	out, err := cfg.YAML()
	if err != nil {
		t.Fatalf("YAML: %v", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(out))
	dec.KnownFields(true)
	var back fileConfig
	if err := dec.Decode(&back); err != nil {
		t.Fatalf("output does not decode strictly: %v\n%s", err, out)
	}
	if !reflect.DeepEqual(back.Pools, cfg.Pools) || !reflect.DeepEqual(back.Listeners, cfg.Listeners) || back.Timeouts != cfg.Timeouts {
		t.Fatalf("output decodes to\n%+v\nwant\n%+v\n%s", back, cfg, out)
	}
	return cfg, out
}

// checkFields compares every scalar of the output with want, field by
// field: a missing, extra or different field is named.
func checkFields(t *testing.T, got, want map[string]string) {
	t.Helper()
	keys := make([]string, 0, len(got)+len(want))
	for k := range got {
		keys = append(keys, k)
	}
	for k := range want {
		if _, ok := got[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		g, gok := got[k]
		w, wok := want[k]
		switch {
		case !wok:
			t.Errorf("%s = %q, not expected", k, g)
		case !gok:
			t.Errorf("%s missing, want %q", k, w)
		case g != w:
			t.Errorf("%s = %q, want %q", k, g, w)
		}
	}
}

// checkWarnings wants exactly the warnings listed, as "LINE: substring".
func checkWarnings(t *testing.T, got []Warning, want []string) {
	t.Helper()
	var lines []string
	for _, w := range got {
		lines = append(lines, fmt.Sprintf("%d: %s", w.Line, w.Msg))
	}
	if len(got) != len(want) {
		t.Errorf("%d warnings, want %d:\n%s", len(got), len(want), strings.Join(lines, "\n"))
		return
	}
	for i, w := range want {
		lineStr, sub, _ := strings.Cut(w, ": ")
		line, _ := strconv.Atoi(lineStr)
		if got[i].Line != line || !strings.Contains(got[i].Msg, sub) {
			t.Errorf("warning %d = %q, want line %d containing %q", i, lines[i], line, sub)
		}
	}
}

// TestImportGuideSamples imports every sample configuration of the guide
// and checks the result field by field: the guide's route names, cookie
// names, alias parameter, Max-Age and fail timeouts.
func TestImportGuideSamples(t *testing.T) {
	for _, tc := range []struct {
		file     string
		kind     Kind
		want     map[string]string
		warnings []string
	}{{
		file: "apache-frontend.conf", kind: Apache,
		want: map[string]string{
			"node":                      "lb1",
			"listeners[0].addr":         ":80",
			"pools[0].name":             "frontend",
			"pools[0].prefix":           "/frontend",
			"pools[0].sticky.query":     "alias",
			"pools[0].sticky.cookie":    "alias",
			"pools[0].members[0].route": "GWE_Frontend_103",
			"pools[0].members[0].url":   "http://198.51.100.1:8083",
			"pools[0].members[1].route": "GWE_Frontend_52",
			"pools[0].members[1].url":   "http://198.51.100.2:8084",
		},
		warnings: []string{"7: no Listen or VirtualHost: the listener is :80"},
	}, {
		file: "apache-backend.conf", kind: Apache,
		want: map[string]string{
			"node":                      "lb1",
			"listeners[0].addr":         ":80",
			"pools[0].name":             "backend",
			"pools[0].prefix":           "/backend",
			"pools[0].sticky.query":     "ROUTEID",
			"pools[0].sticky.cookie":    "ROUTEID",
			"pools[0].sticky.insert":    "true",
			"pools[0].cookie.path":      "/",
			"pools[0].members[0].route": "1",
			"pools[0].members[0].url":   "http://198.51.100.1:9083",
			"pools[0].members[1].route": "2",
			"pools[0].members[1].url":   "http://198.51.100.2:9084",
		},
		warnings: []string{"8: no Listen or VirtualHost: the listener is :80"},
	}, {
		file: "apache-single.conf", kind: Apache,
		want: map[string]string{
			"node":                      "lb1",
			"listeners[0].addr":         ":80",
			"listeners[1].addr":         ":8081",
			"listeners[1].pools[0]":     "frontend",
			"listeners[2].addr":         ":9081",
			"listeners[2].pools[0]":     "backend",
			"pools[0].name":             "frontend",
			"pools[0].prefix":           "/frontend",
			"pools[0].sticky.query":     "FRONTEND_ROUTEID",
			"pools[0].sticky.cookie":    "FRONTEND_ROUTEID",
			"pools[0].sticky.insert":    "true",
			"pools[0].cookie.path":      "/",
			"pools[0].members[0].route": "GPE_Frontend_1",
			"pools[0].members[0].url":   "http://192.168.100.1:8081",
			"pools[0].members[1].route": "GPE_Frontend_2",
			"pools[0].members[1].url":   "http://192.168.100.2:8082",
			"pools[0].members[2].route": "GPE_Frontend_3",
			"pools[0].members[2].url":   "http://192.168.100.3:8082",
			"pools[1].name":             "backend",
			"pools[1].prefix":           "/backend",
			"pools[1].sticky.query":     "ROUTEID",
			"pools[1].sticky.cookie":    "ROUTEID",
			"pools[1].sticky.insert":    "true",
			"pools[1].cookie.path":      "/",
			"pools[1].members[0].route": "1",
			"pools[1].members[0].url":   "http://192.168.100.1:9081",
			"pools[1].members[1].route": "2",
			"pools[1].members[1].url":   "http://192.168.100.2:9082",
			"pools[1].members[2].route": "3",
			"pools[1].members[2].url":   "http://192.168.100.2:9083",
		},
		warnings: []string{
			"16: env=BALANCER_ROUTE_CHANGED on a line of its own",
			"39: ProxyPassReverse /backend/ balancer://bcluster/: gwelb does not rewrite",
		},
	}, {
		file: "nginx-frontend.conf", kind: Nginx,
		want: map[string]string{
			"node":                      "lb1",
			"log_level":                 "warn",
			"timeouts.connect":          "5s",
			"listeners[0].addr":         ":8088",
			"pools[0].name":             "frontend",
			"pools[0].prefix":           "/frontend",
			"pools[0].sticky.query":     "alias",
			"pools[0].fail_timeout":     "30s",
			"pools[0].members[0].route": "GPE_F_n1_107",
			"pools[0].members[0].url":   "http://135.17.36.107:8088",
			"pools[0].members[1].route": "GPE_F_n3_237",
			"pools[0].members[1].url":   "http://135.225.51.237:8088",
			"pools[0].members[2].route": "GPE_F_n2_10",
			"pools[0].members[2].url":   "http://135.17.36.10:8088",
		},
		warnings: []string{
			`72: return 500 Misconfiguration: outside http { }`,
			"73: '}' closes no block",
			"74: '}' closes no block",
			"75: '}' closes no block",
		},
	}, {
		file: "nginx-backend.conf", kind: Nginx,
		want: map[string]string{
			"node":                      "lb1",
			"log_level":                 "warn",
			"timeouts.connect":          "5s",
			"listeners[0].addr":         ":9088",
			"pools[0].name":             "backend",
			"pools[0].prefix":           "/backend",
			"pools[0].sticky.cookie":    "ROUTEID",
			"pools[0].sticky.insert":    "true",
			"pools[0].cookie.max_age":   "31536000",
			"pools[0].fail_timeout":     "5s",
			"pools[0].members[0].route": "1",
			"pools[0].members[0].url":   "http://135.17.36.107:9088",
			"pools[0].members[1].route": "2",
			"pools[0].members[1].url":   "http://135.225.51.237:9088",
			"pools[0].members[2].route": "3",
			"pools[0].members[2].url":   "http://135.17.36.10:9088",
		},
		warnings: []string{"4: http { is not closed before the end of the file"},
	}} {
		t.Run(tc.file, func(t *testing.T) {
			src, err := os.ReadFile(filepath.Join("testdata", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			cfg, out := imported(t, tc.kind, tc.file, src)
			checkFields(t, flatten(t, out), tc.want)
			checkWarnings(t, cfg.Warnings, tc.warnings)
			// Every warning is in the output too, so a config saved without
			// its stderr still says what was left out.
			for _, w := range cfg.Warnings {
				if !strings.Contains(string(out), fmt.Sprintf("#   line %d: ", w.Line)) {
					t.Errorf("warning of line %d is not a comment of the output", w.Line)
				}
			}
			if t.Failed() {
				t.Logf("output:\n%s", out)
			}
		})
	}
}

// TestImportGolden pins the whole output for the guide's nginx backend
// sample, comments included: the README shows it. go test -update rewrites
// it.
func TestImportGolden(t *testing.T) {
	src, err := os.ReadFile("testdata/nginx-backend.conf")
	if err != nil {
		t.Fatal(err)
	}
	_, out := imported(t, Nginx, "nginx-backend.conf", src)
	golden := "testdata/nginx-backend.golden.yaml"
	if *update {
		if err := os.WriteFile(golden, out, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, want) {
		t.Errorf("output differs from %s (go test -run TestImportGolden -update rewrites it):\n%s", golden, out)
	}
	// The README's worked import shows this output; keep it true.
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(readme, []byte("```yaml\n"+string(out)+"```\n")) {
		t.Errorf("README.md does not show the output of the worked import (section \"From the guide's Apache and nginx configs\"); it is:\n%s", out)
	}
}

// TestImportDirectives pins how single directives map, beyond the guide's
// samples: every field the test names, and exactly the warnings listed.
func TestImportDirectives(t *testing.T) {
	const apacheBackend = `<Proxy balancer://c>
BalancerMember http://10.0.0.1:9083/backend route=1
BalancerMember http://10.0.0.2:9084/backend route=2
ProxySet stickysession=ROUTEID
</Proxy>
ProxyPass /backend balancer://c
Listen 127.0.0.1:9000
`
	const nginxBackend = `http {
upstream u { server 10.0.0.1:9088; server 10.0.0.2:9088; }
map $cookie_ROUTEID $s { .1 10.0.0.1:9088; .2 10.0.0.2:9088; }
server { listen 9088; location /backend { proxy_pass http://u; } }
}
`
	for _, tc := range []struct {
		name     string
		kind     Kind
		src      string
		want     map[string]string
		warnings []string
	}{{
		name: "apache: the guide's [http:// http://] typo is read as http://",
		kind: Apache,
		src:  strings.Replace(apacheBackend, "http://10.0.0.1", "[http:// http://]10.0.0.1", 1),
		want: map[string]string{"pools[0].members[0].url": "http://10.0.0.1:9083", "pools[0].members[0].route": "1"},
	}, {
		name: "apache: stickysession=COOKIE|param names the cookie and the parameter apart",
		kind: Apache,
		src:  strings.Replace(apacheBackend, "stickysession=ROUTEID", "stickysession=JSESSIONID|jsessionid", 1),
		want: map[string]string{"pools[0].sticky.cookie": "JSESSIONID", "pools[0].sticky.query": "jsessionid"},
	}, {
		name: "apache: loadfactor, status, retry and connectiontimeout",
		kind: Apache,
		src: strings.NewReplacer("route=1", "route=1 loadfactor=3 retry=30 connectiontimeout=2",
			"route=2", "route=2 status=+D retry=30").Replace(apacheBackend),
		want: map[string]string{
			"pools[0].members[0].weight": "3", "pools[0].members[1].state": "disabled",
			"pools[0].fail_timeout": "30s", "timeouts.connect": "2s",
		},
	}, {
		name: "apache: status=+N drains; +H has no equivalent",
		kind: Apache,
		src:  strings.NewReplacer("route=1", "route=1 status=+N", "route=2", "route=2 status=+H").Replace(apacheBackend),
		want: map[string]string{"pools[0].members[0].state": "drain"},
		warnings: []string{
			"3: status flag H has no gwelb equivalent",
		},
	}, {
		name: "apache: stickysession on the ProxyPass line",
		kind: Apache,
		src:  strings.NewReplacer("ProxySet stickysession=ROUTEID\n", "", "ProxyPass /backend balancer://c", "ProxyPass /backend balancer://c stickysession=ROUTEID").Replace(apacheBackend),
		want: map[string]string{"pools[0].sticky.cookie": "ROUTEID", "pools[0].sticky.query": "ROUTEID"},
	}, {
		name: "apache: ProxyPass inside a Location",
		kind: Apache,
		src:  strings.Replace(apacheBackend, "ProxyPass /backend balancer://c", "<Location /backend>\nProxyPass balancer://c\n</Location>", 1),
		want: map[string]string{"pools[0].prefix": "/backend", "listeners[0].addr": "127.0.0.1:9000"},
	}, {
		name: "apache: Header Set-Cookie with its attributes, without env=",
		kind: Apache,
		src:  `Header add Set-Cookie "ROUTEID=.%{BALANCER_WORKER_ROUTE}e; path=/gwe; Max-Age=600; Secure; HttpOnly; SameSite=Lax"` + "\n" + apacheBackend,
		want: map[string]string{
			"pools[0].sticky.insert": "true", "pools[0].cookie.path": "/gwe", "pools[0].cookie.max_age": "600",
			"pools[0].cookie.secure": "true", "pools[0].cookie.http_only": "true", "pools[0].cookie.same_site": "Lax",
		},
	}, {
		name: "apache: a member path unlike the ProxyPass path is a warning",
		kind: Apache,
		src:  strings.Replace(apacheBackend, "http://10.0.0.1:9083/backend", "http://10.0.0.1:9083/gwe", 1),
		want: map[string]string{"pools[0].members[0].url": "http://10.0.0.1:9083"},
		warnings: []string{
			"2: BalancerMember http://10.0.0.1:9083/gwe: Apache sends /backend/x to http://10.0.0.1:9083/gwe/x",
		},
	}, {
		name: "apache: a member without route= is named by its address",
		kind: Apache,
		src:  strings.Replace(apacheBackend, " route=2", "", 1),
		want: map[string]string{"pools[0].members[1].route": "10.0.0.2:9084"},
		warnings: []string{
			"3: BalancerMember http://10.0.0.2:9084/backend: no route=; named 10.0.0.2:9084",
		},
	}, {
		name: "nginx: weight, down, max_fails=0, https upstream",
		kind: Nginx,
		src: strings.NewReplacer("server 10.0.0.1:9088;", "server 10.0.0.1:9088 weight=5 max_fails=0;",
			"server 10.0.0.2:9088;", "server 10.0.0.2:9088 down max_fails=0;", "http://u", "https://u").Replace(nginxBackend),
		want: map[string]string{
			"pools[0].members[0].weight": "5", "pools[0].members[1].state": "disabled",
			"pools[0].members[0].url": "https://10.0.0.1:9088", "pools[0].fail_timeout": "0s",
		},
	}, {
		name: "nginx: listen ssl with the server's certificate",
		kind: Nginx,
		src:  strings.Replace(nginxBackend, "listen 9088;", "listen 127.0.0.1:9443 ssl; ssl_certificate lb.pem; ssl_certificate_key lb-key.pem;", 1),
		want: map[string]string{"listeners[0].addr": "127.0.0.1:9443", "listeners[0].tls.cert": "lb.pem", "listeners[0].tls.key": "lb-key.pem"},
	}, {
		name: "nginx: keepalive_timeout, alias and cookie maps on one upstream",
		kind: Nginx,
		src:  strings.Replace(nginxBackend, "map $cookie_ROUTEID", "keepalive_timeout 65;\nmap $arg_alias $a { .1 10.0.0.1:9088; .2 10.0.0.2:9088; }\nmap $cookie_ROUTEID", 1),
		want: map[string]string{"timeouts.idle": "1m5s", "pools[0].sticky.query": "alias", "pools[0].sticky.cookie": "ROUTEID"},
	}, {
		name: "nginx: different fail timeouts keep the first",
		kind: Nginx,
		src:  strings.NewReplacer("server 10.0.0.1:9088;", "server 10.0.0.1:9088 fail_timeout=5s;", "server 10.0.0.2:9088;", "server 10.0.0.2:9088 fail_timeout=7s;").Replace(nginxBackend),
		want: map[string]string{"pools[0].fail_timeout": "5s"},
		warnings: []string{
			"2: server ... fail_timeout=7s: gwelb has one fail_timeout per pool; kept 5s from line 2",
		},
	}, {
		name: "nginx: a Set-Cookie whose value is not the upstream's address map",
		kind: Nginx,
		src:  strings.Replace(nginxBackend, "proxy_pass http://u;", `proxy_pass http://u; add_header Set-Cookie "ROUTEID=x; Path=/backend";`, 1),
		want: map[string]string{"pools[0].sticky.insert": "true", "pools[0].cookie.path": "/backend"},
		warnings: []string{
			`4: add_header Set-Cookie "ROUTEID=x; Path=/backend": the value "x" is no map $upstream_addr`,
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, out := imported(t, tc.kind, "test.conf", []byte(tc.src))
			got := flatten(t, out)
			for k, w := range tc.want {
				if g, ok := got[k]; !ok || g != w {
					t.Errorf("%s = %q, want %q", k, g, w)
				}
			}
			checkWarnings(t, cfg.Warnings, tc.warnings)
			if t.Failed() {
				t.Logf("output:\n%s", out)
			}
		})
	}
}

// TestImportUnknownWarns: a directive the importer does not know is a
// warning naming its line, in the output's comments too, and the rest is
// imported.
func TestImportUnknownWarns(t *testing.T) {
	for _, tc := range []struct {
		kind     Kind
		src      string
		warnings []string
	}{{
		kind: Apache,
		src: `ServerAdmin root@example.com
<Proxy balancer://c>
BalancerMember http://10.0.0.1:9083/backend route=1 smax=5 hcmethod=GET
ProxySet stickysession=ROUTEID nofailover=On
</Proxy>
ProxyPreserveHost On
<Directory /var/www>
Options None
</Directory>
ProxyPass /backend balancer://c
Header set X-Frame-Options DENY
Listen 9000
`,
		warnings: []string{
			"1: ServerAdmin root@example.com: not a directive of the guide's balancer configs",
			"3: BalancerMember http://10.0.0.1:9083/backend route=1 smax=5 hcmethod=GET: hcmethod=GET not imported",
			"4: nofailover=On: gwelb always moves the session",
			"6: ProxyPreserveHost On: not a directive",
			"7: <Directory /var/www> (lines 7-9): a section the guide's balancer configs do not use",
			"11: Header set X-Frame-Options DENY: gwelb does not change a member's response headers",
		},
	}, {
		kind: Nginx,
		src: `http {
gzip on;
upstream u { ip_hash; server 10.0.0.1:9088 max_fails=3; }
map $cookie_ROUTEID $s { .1 10.0.0.1:9088; }
map $remote_addr $x { default 1; }
server {
  listen 9088 reuseport;
  location /backend { proxy_pass http://u; proxy_set_header Host $host; proxy_read_timeout 30s; }
  location ~ \.php$ { fastcgi_pass 127.0.0.1:9000; }
}
}
`,
		warnings: []string{
			"2: gzip on: not a directive of the guide's balancer configs",
			"3: ip_hash: gwelb gives new sessions out by smooth weighted round-robin",
			"3: server 10.0.0.1:9088 max_fails=3: max_fails=3: gwelb leaves a member out after its first refused connection",
			"5: map $remote_addr $x { ... } (lines 5-5): not a stickiness map",
			"7: listen 9088 reuseport: reuseport not imported",
			"8: proxy_set_header Host $host: gwelb sends the member's host:port as Host",
			"8: proxy_read_timeout 30s: gwelb waits timeouts.response_header",
			`9: location ~ \.php$ { ... } (lines 9-9): a regular-expression or exact-match location`,
		},
	}} {
		t.Run(string(tc.kind), func(t *testing.T) {
			cfg, out := imported(t, tc.kind, "test.conf", []byte(tc.src))
			checkWarnings(t, cfg.Warnings, tc.warnings)
			if len(cfg.Pools) != 1 || len(cfg.Pools[0].Members) != 1 {
				t.Errorf("pools %+v, want the one pool with its member", cfg.Pools)
			}
			for _, w := range cfg.Warnings {
				if !strings.Contains(string(out), fmt.Sprintf("#   line %d: ", w.Line)) {
					t.Errorf("warning of line %d is not a comment of the output", w.Line)
				}
			}
			if t.Failed() {
				t.Logf("output:\n%s", out)
			}
		})
	}
}

// TestImportErrors: a file that is not a balancer config, or one gwelb
// cannot express, is an *Error naming the line.
func TestImportErrors(t *testing.T) {
	sample := func(name string) string {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for _, tc := range []struct {
		name string
		kind Kind
		src  string
		line int
		msg  string
	}{
		{"a gwelb config as Apache", Apache, "# gwelb\npools:\n  - name: x\n", 2, `"pools:" is not a directive of a balancer config, and there is no <Proxy balancer://...>`},
		{"an nginx config as Apache", Apache, sample("nginx-backend.conf"), 1, `"events {" is nginx syntax`},
		{"an Apache config as nginx", Nginx, sample("apache-single.conf"), 1, `"<VirtualHost" is Apache syntax`},
		{"an Apache config without a section as nginx", Nginx, sample("apache-backend.conf"), 3, `"<Proxy" is Apache syntax`},
		{"empty, Apache", Apache, "", 1, "not an Apache balancer config"},
		{"empty, nginx", Nginx, "# nothing\n", 1, "not an nginx balancer config"},
		{"an nginx web server", Nginx, "http {\n  server {\n    listen 80;\n    root /var/www;\n  }\n}\n", 4, `"root /var/www" is not a directive of a balancer config, and there is no upstream`},
		{"the guide's Apache template", Apache, sample("apache-frontend-template.conf"), 4, "placeholder of the guide's template"},
		{"an nginx directive without ';'", Nginx, "http {\n  upstream u { server 10.0.0.1:80 }\n}\n", 2, `"server 10.0.0.1:80" is not ended by ';'`},
		{"an unclosed Apache section", Apache, "<Proxy balancer://c>\nBalancerMember http://10.0.0.1:80 route=1\n", 1, "<Proxy> is never closed"},
		{"a misnested Apache section", Apache, "<VirtualHost *:80>\n<Proxy balancer://c>\n</VirtualHost>\n", 3, "</VirtualHost> closes <Proxy> of line 2"},
		{"no stickysession", Apache, "<Proxy balancer://c>\nBalancerMember http://10.0.0.1:80 route=1\n</Proxy>\nProxyPass /backend balancer://c\n", 1, "no stickysession"},
		{"a ProxyPass to an undefined balancer", Apache, "<Proxy balancer://c>\nBalancerMember http://10.0.0.1:80 route=1\nProxySet stickysession=ROUTEID\n</Proxy>\nProxyPass /backend balancer://d\n", 5, "no <Proxy balancer://d>"},
		{"an ajp member", Apache, "<Proxy balancer://c>\nBalancerMember ajp://10.0.0.1:8009 route=1\n</Proxy>\n", 2, `not "ajp"`},
		{"a balancer no ProxyPass uses", Apache, "<Proxy balancer://c>\nBalancerMember http://10.0.0.1:80 route=1\nProxySet stickysession=ROUTEID\n</Proxy>\n", 1, "no ProxyPass points at a balancer"},
		{"an upstream without a sticky map", Nginx, "http {\nupstream u { server 10.0.0.1:80; }\nserver { listen 80; location /backend { proxy_pass http://u; } }\n}\n", 3, "GWE needs sticky sessions"},
		{"a route gwelb refuses", Apache, "<Proxy balancer://c>\nBalancerMember http://10.0.0.1:80 route=a\"b\nProxySet stickysession=ROUTEID\n</Proxy>\nProxyPass /backend balancer://c\n", 2, `route "a\"b"`},
		{"a prefix gwelb refuses", Apache, "<Proxy balancer://c>\nBalancerMember http://10.0.0.1:80 route=1\nProxySet stickysession=ROUTEID\n</Proxy>\nProxyPass /a%20b balancer://c\n", 1, `prefix "/a%20b"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Import(tc.kind, "x.conf", []byte(tc.src))
			var ie *Error
			if !errors.As(err, &ie) {
				t.Fatalf("Import = %v, %v; want an *Error", cfg, err)
			}
			if ie.Line != tc.line || !strings.Contains(ie.Msg, tc.msg) || ie.File != "x.conf" {
				t.Errorf("error %q (line %d), want line %d containing %q", ie, ie.Line, tc.line, tc.msg)
			}
			if !strings.HasPrefix(ie.Error(), fmt.Sprintf("x.conf:%d: ", tc.line)) {
				t.Errorf("error %q does not start with the file and line", ie)
			}
		})
	}
}

// FuzzImport: no input panics the importer, and whatever it accepts
// renders to YAML that decodes strictly into pools fsm.ValidatePools
// accepts (imported checks both). The seeds are the guide's samples.
func FuzzImport(f *testing.F) {
	for _, name := range []string{"apache-frontend.conf", "apache-backend.conf", "apache-single.conf", "nginx-frontend.conf", "nginx-backend.conf", "apache-frontend-template.conf"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(strings.HasPrefix(name, "nginx"), b)
	}
	f.Fuzz(func(t *testing.T, nginx bool, src []byte) {
		kind := Apache
		if nginx {
			kind = Nginx
		}
		cfg, err := Import(kind, "fuzz.conf", src)
		if err != nil {
			var ie *Error
			if !errors.As(err, &ie) || ie.Line < 1 {
				t.Fatalf("error %v is not an *Error naming a line", err)
			}
			return
		}
		if err := fsm.ValidatePools(cfg.Pools); err != nil {
			t.Fatalf("imported pools do not validate: %v", err)
		}
		imported(t, kind, "fuzz.conf", src)
	})
}
