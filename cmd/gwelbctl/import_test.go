package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gwelb/gwelb/cluster/clustertest"
	"github.com/gwelb/gwelb/internal/confimport"
	"github.com/gwelb/gwelb/internal/gwedemo"
)

// The guide's sample configurations (internal/confimport/testdata) are
// imported here and judged by the real gwelb: `gwelb validate -dev` and
// `gwelb agent -dev`, whose config loader is package main of cmd/gwelb, so
// the test builds that binary. The samples themselves are only parsed; the
// end-to-end test starts nothing until a sample is rewritten to loopback
// demo GWE servers and its import holds loopback addresses only.

const samplesDir = "../../internal/confimport/testdata"

var guideSamples = []struct {
	file, kind string
	summary    string // what gwelb validate says of the import
}{
	{"apache-frontend.conf", "apache", "1 pool(s), 2 member(s), 1 listener(s)"},
	{"apache-backend.conf", "apache", "1 pool(s), 2 member(s), 1 listener(s)"},
	{"apache-single.conf", "apache", "2 pool(s), 6 member(s), 3 listener(s)"},
	{"nginx-frontend.conf", "nginx", "1 pool(s), 3 member(s), 1 listener(s)"},
	{"nginx-backend.conf", "nginx", "1 pool(s), 3 member(s), 1 listener(s)"},
}

// buildGwelb builds the gwelb daemon into a temporary directory.
func buildGwelb(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command builds cmd/gwelb for this test: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "gwelb")
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, goBin, "build", "-o", bin, "github.com/gwelb/gwelb/cmd/gwelb").CombinedOutput(); err != nil {
		t.Fatalf("go build cmd/gwelb: %v\n%s", err, out)
	}
	return bin
}

var warningLine = regexp.MustCompile(`^gwelbctl: \S+\.conf:\d+: warning: \S`)

// importOK runs gwelbctl import and wants YAML on stdout and nothing but
// warnings on stderr.
func importOK(t *testing.T, kind, file string) []byte {
	t.Helper()
	r := cliEnv(t, nil, "import", kind, file)
	if r.code != 0 {
		t.Fatalf("gwelbctl import %s %s: exit %d\n%s", kind, file, r.code, r.stderr)
	}
	for l := range strings.SplitSeq(strings.TrimSuffix(r.stderr, "\n"), "\n") {
		if l != "" && !warningLine.MatchString(l) {
			t.Errorf("stderr line %q is not a warning naming its file and line", l)
		}
	}
	return []byte(r.stdout)
}

// TestImportGuideSamples: every sample configuration of the guide imports
// into a config the real `gwelb validate -dev` accepts. (The field-by-field
// checks of the import are confimport's TestImportGuideSamples.)
func TestImportGuideSamples(t *testing.T) {
	bin := buildGwelb(t)
	for _, s := range guideSamples {
		t.Run(s.file, func(t *testing.T) {
			out := importOK(t, s.kind, filepath.Join(samplesDir, s.file))
			path := filepath.Join(t.TempDir(), "gwelb.yaml")
			if err := os.WriteFile(path, out, 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := exec.Command(bin, "validate", "-dev", "-config", path).CombinedOutput()
			if want := path + ": valid: " + s.summary + "\n"; err != nil || string(got) != want {
				t.Fatalf("gwelb validate -dev: %v\n%s\nwant %q; config:\n%s", err, got, want, out)
			}
		})
	}
}

// TestImportCommand pins the command's arguments, exit codes and output
// streams.
func TestImportCommand(t *testing.T) {
	backend := filepath.Join(samplesDir, "nginx-backend.conf")
	t.Run("warnings on stderr, the config on stdout", func(t *testing.T) {
		r := cliEnv(t, nil, "import", "nginx", backend)
		if r.code != 0 || !strings.HasPrefix(r.stdout, "# gwelb config imported by `gwelbctl import nginx nginx-backend.conf`") {
			t.Fatalf("exit %d, stdout:\n%s", r.code, r.stdout)
		}
		if want := "gwelbctl: " + backend + ":4: warning: http { is not closed before the end of the file"; !strings.HasPrefix(r.stderr, want) || strings.Count(r.stderr, "\n") != 1 {
			t.Fatalf("stderr %q, want one line starting %q", r.stderr, want)
		}
	})
	t.Run("not a balancer config: exit 1 naming the line", func(t *testing.T) {
		wantFail(t, cliEnv(t, nil, "import", "apache", backend), exitError,
			`^gwelbctl: import apache: \S+nginx-backend.conf:1: "events \{" is nginx syntax, not Apache's`)
		wantFail(t, cliEnv(t, nil, "import", "nginx", filepath.Join(samplesDir, "apache-backend.conf")), exitError,
			`^gwelbctl: import nginx: \S+apache-backend.conf:3: "<Proxy" is Apache syntax`)
		wantFail(t, cliEnv(t, nil, "import", "apache", filepath.Join(samplesDir, "apache-frontend-template.conf")), exitError,
			`apache-frontend-template.conf:4: BalancerMember http://<Node1 IP address>:<listeningPort1> route=NodeName1: holds a placeholder`)
	})
	t.Run("an unreadable file: exit 1", func(t *testing.T) {
		wantFail(t, cliEnv(t, nil, "import", "nginx", filepath.Join(t.TempDir(), "missing.conf")), exitError, `^gwelbctl: import: open .*missing.conf: no such file`)
	})
	for _, tc := range []struct {
		args    []string
		pattern string
	}{
		{[]string{"import"}, "missing arguments FORMAT FILE"},
		{[]string{"import", "haproxy", backend}, `unknown format "haproxy": want apache or nginx`},
		{[]string{"-o", "json", "import", "nginx", backend}, "import prints YAML"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := cliEnv(t, nil, tc.args...)
			if r.code != exitUsage || !regexp.MustCompile(`^gwelbctl: `+tc.pattern).MatchString(r.stderr) || r.stdout != "" {
				t.Fatalf("exit %d, stderr %q, stdout %q; want exit 2 and %q", r.code, r.stderr, r.stdout, tc.pattern)
			}
		})
	}
}

// guideAddr is a member address of the guide's samples; listenPort a
// listener port (Listen, <VirtualHost *:PORT>, localhost:PORT, listen
// PORT;). Both are rewritten to loopback.
var sampleAddrs = regexp.MustCompile(`(\d+\.\d+\.\d+\.\d+:\d+)|(Listen\s+)(\d+)|(<VirtualHost\s+)\*:(\d+)|(localhost:)(\d+)|(listen\s+)(\d+);`)

// imported is a guide sample running: a gwelb agent -dev with its import,
// in front of one demo GWE server per member.
type imported struct {
	listeners map[string]string // the sample's listener port -> the loopback address it became
}

// startSample rewrites the sample to loopback, starts a demo GWE server per
// member (named by its route), imports the rewritten sample with gwelbctl
// and runs it with gwelb agent -dev until it is ready.
func startSample(t *testing.T, bin, kind, file string) *imported {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(samplesDir, file))
	if err != nil {
		t.Fatal(err)
	}
	orig, err := confimport.Import(confimport.Kind(kind), file, src)
	if err != nil {
		t.Fatal(err)
	}
	members := map[string]string{} // the guide's host:port -> a demo server's
	for _, p := range orig.Pools {
		for _, m := range p.Members {
			u, err := url.Parse(m.URL)
			if err != nil {
				t.Fatal(err)
			}
			ln, err := net.Listen("tcp", clustertest.FreeAddr(t))
			if err != nil {
				t.Fatal(err)
			}
			srv := &http.Server{Handler: gwedemo.New(m.Route, p.Prefix), ReadHeaderTimeout: 10 * time.Second}
			go srv.Serve(ln)
			t.Cleanup(func() { srv.Close() })
			members[u.Host] = ln.Addr().String()
		}
	}
	e := &imported{listeners: map[string]string{}}
	port := func(p string) string {
		if e.listeners[p] == "" {
			e.listeners[p] = clustertest.FreeAddr(t)
		}
		return e.listeners[p]
	}
	text := string(src)
	if kind == "apache" && !regexp.MustCompile(`(?m)^\s*(Listen|<VirtualHost)\s`).MatchString(text) {
		// The guide's Apache examples rely on httpd.conf's Listen 80.
		text = "Listen 80\n" + text
	}
	text = sampleAddrs.ReplaceAllStringFunc(text, func(m string) string {
		sm := sampleAddrs.FindStringSubmatch(m)
		switch {
		case sm[1] != "":
			addr, ok := members[sm[1]]
			if !ok {
				t.Fatalf("%s: %s is no member's address", file, sm[1])
			}
			return addr
		case sm[2] != "":
			return sm[2] + port(sm[3])
		case sm[4] != "":
			return sm[4] + port(sm[5])
		case sm[6] != "":
			return port(sm[7])
		default:
			return sm[8] + port(sm[9]) + ";"
		}
	})
	dir := t.TempDir()
	rewritten := filepath.Join(dir, file)
	if err := os.WriteFile(rewritten, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}

	out := importOK(t, kind, rewritten)
	// The network rule: nothing but loopback in a config that starts.
	cfg, err := confimport.Import(confimport.Kind(kind), rewritten, []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range cfg.Listeners {
		if host, _, _ := net.SplitHostPort(l.Addr); !isLoopbackIP(host) {
			t.Fatalf("rewritten %s listens on %s, not loopback:\n%s", file, l.Addr, text)
		}
	}
	for _, p := range cfg.Pools {
		for _, m := range p.Members {
			if u, err := url.Parse(m.URL); err != nil || !isLoopbackIP(u.Hostname()) {
				t.Fatalf("rewritten %s has member %s, not loopback:\n%s", file, m.URL, text)
			}
		}
	}

	ops := clustertest.FreeAddr(t)
	config := filepath.Join(dir, "gwelb.yaml")
	node := fmt.Sprintf("\n# the test's control plane\nraft_addr: %s\ngossip_addr: %s\ngrpc_addr: %s\ndata_dir: %s\nops: {addr: %s}\nraft: {gossip: local}\n",
		clustertest.FreeAddr(t), clustertest.FreeAddr(t), clustertest.FreeAddr(t), filepath.Join(dir, "data"), ops)
	if err := os.WriteFile(config, append(out, node...), 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "gwelb.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "agent", "-dev", "-config", config)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		logf.Close()
		close(exited)
	}()
	t.Cleanup(func() {
		// A lone -dev node with its data in dir: nothing to leave
		// gracefully, and SIGTERM's stop sequence would only add seconds.
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			c, _ := os.ReadFile(config)
			t.Logf("config:\n%s\nlog of gwelb agent:\n%s", c, b)
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	probe := &http.Client{Timeout: 2 * time.Second}
	for {
		select {
		case <-exited:
			b, _ := os.ReadFile(logPath)
			t.Fatalf("gwelb agent exited before it was ready:\n%s", b)
		default:
		}
		if resp, err := probe.Get("http://" + ops + "/readyz"); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return e
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("gwelb agent not ready within 60 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func isLoopbackIP(host string) bool {
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// answer is what a visitor sees of one request.
type answer struct {
	status    int
	server    string // the demo GWE server that answered
	setCookie string
}

// visit sends GET target to the listener of the sample's port, with a
// Cookie header when cookie is set.
func (e *imported) visit(t *testing.T, port, target, cookie string) answer {
	t.Helper()
	addr, ok := e.listeners[port]
	if !ok {
		t.Fatalf("the sample has no listener on port %s", port)
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+addr+target, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s on :%s: %v", target, port, err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return answer{status: resp.StatusCode, server: resp.Header.Get(gwedemo.HeaderServer), setCookie: strings.Join(resp.Header.Values("Set-Cookie"), "\n")}
}

// sticky wants the request routed to server, and no cookie set (a sticky
// hit sets none, DESIGN.md rule 7).
func (e *imported) sticky(t *testing.T, port, target, cookie, server string) {
	t.Helper()
	a := e.visit(t, port, target, cookie)
	if a.status != http.StatusOK || a.server != server || a.setCookie != "" {
		t.Errorf("GET %s (Cookie %q) on :%s: %d from %q, Set-Cookie %q; want 200 from %q, no Set-Cookie", target, cookie, port, a.status, a.server, a.setCookie, server)
	}
}

// inserted wants a new session (no sticky value) to get the cookie the
// guide's balancer inserts, naming the server that answered with the
// attributes given, and to stay there with it.
func (e *imported) inserted(t *testing.T, port, target, name, attrs string) {
	t.Helper()
	a := e.visit(t, port, target, "")
	want := name + "=." + a.server + "; " + attrs
	if a.status != http.StatusOK || a.server == "" || a.setCookie != want {
		t.Errorf("new session GET %s on :%s: %d from %q, Set-Cookie %q; want 200 and %q", target, port, a.status, a.server, a.setCookie, want)
		return
	}
	e.sticky(t, port, target, name+"=."+a.server, a.server)
}

// TestImportEndToEnd runs each guide sample, rewritten to loopback demo GWE
// servers, as gwelbctl import prints it, and routes the guide's aliases and
// cookies: alias=.NAME, FRONTEND_ROUTEID, ROUTEID inserted (with the nginx
// sample's Max-Age).
func TestImportEndToEnd(t *testing.T) {
	bin := buildGwelb(t)
	for _, tc := range []struct {
		file, kind string
		check      func(t *testing.T, e *imported)
	}{{
		"apache-frontend.conf", "apache", func(t *testing.T, e *imported) {
			for _, r := range []string{"GWE_Frontend_103", "GWE_Frontend_52"} {
				e.sticky(t, "80", "/frontend/x?alias=."+r, "", r)
			}
			// stickysession=alias reads a cookie of that name too, as Apache does.
			e.sticky(t, "80", "/frontend/x", "alias=.GWE_Frontend_52", "GWE_Frontend_52")
		},
	}, {
		"apache-backend.conf", "apache", func(t *testing.T, e *imported) {
			e.sticky(t, "80", "/backend/x", "ROUTEID=.2", "2")
			e.sticky(t, "80", "/backend/x", "ROUTEID=.1", "1")
			e.inserted(t, "80", "/backend/x", "ROUTEID", "Path=/")
		},
	}, {
		"apache-single.conf", "apache", func(t *testing.T, e *imported) {
			// <VirtualHost *:80> serves both clusters...
			e.sticky(t, "80", "/frontend/x", "FRONTEND_ROUTEID=.GPE_Frontend_3", "GPE_Frontend_3")
			e.sticky(t, "80", "/backend/x", "ROUTEID=.2", "2")
			e.inserted(t, "80", "/frontend/x", "FRONTEND_ROUTEID", "Path=/")
			// ...the other two one cluster each.
			e.sticky(t, "8081", "/frontend/x", "FRONTEND_ROUTEID=.GPE_Frontend_1", "GPE_Frontend_1")
			e.inserted(t, "8081", "/frontend/x", "FRONTEND_ROUTEID", "Path=/")
			e.sticky(t, "9081", "/backend/x", "ROUTEID=.3", "3")
			e.inserted(t, "9081", "/backend/x", "ROUTEID", "Path=/")
			for port, target := range map[string]string{"8081": "/backend/x", "9081": "/frontend/x"} {
				if a := e.visit(t, port, target, ""); a.status != http.StatusNotFound {
					t.Errorf("GET %s on :%s: %d, want 404 (the VirtualHost serves the other cluster)", target, port, a.status)
				}
			}
		},
	}, {
		"nginx-frontend.conf", "nginx", func(t *testing.T, e *imported) {
			for _, r := range []string{"GPE_F_n1_107", "GPE_F_n3_237", "GPE_F_n2_10"} {
				e.sticky(t, "8088", "/frontend/x?alias=."+r, "", r)
			}
		},
	}, {
		"nginx-backend.conf", "nginx", func(t *testing.T, e *imported) {
			for _, r := range []string{"1", "2", "3"} {
				e.sticky(t, "9088", "/backend/x", "ROUTEID=."+r, r)
			}
			e.inserted(t, "9088", "/backend/x", "ROUTEID", "Path=/; Max-Age=31536000")
		},
	}} {
		t.Run(tc.file, func(t *testing.T) {
			tc.check(t, startSample(t, bin, tc.kind, tc.file))
		})
	}
}
