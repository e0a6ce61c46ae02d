package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gwelb/gwelb/internal/pki"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// rotate makes a new certificate for node name with the CA in dir/ca and
// renames it over certPath and keyPath, as a rotation tool would; it
// returns the new certificate's serial.
func rotate(t *testing.T, dir, name, certPath, keyPath string) string {
	t.Helper()
	out, err := os.MkdirTemp(dir, "rotate-")
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := pki.CreateNodeCert(filepath.Join(dir, "ca"), out, name, []net.IP{net.IPv4(127, 0, 0, 1)}, nil, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// The key first: a poll between the two renames sees a key that does
	// not match the certificate, refuses it, and reloads once both landed.
	if err := os.Rename(key, keyPath); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(cert, certPath); err != nil {
		t.Fatal(err)
	}
	return serialOf(t, certPath)
}

func serialOf(t *testing.T, certPath string) string {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(certPath, strings.TrimSuffix(certPath, ".pem")+"-key.pem")
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return c.SerialNumber.Text(16)
}

// handshakeSerial completes a new TLS handshake with addr and returns the
// serial of the certificate the server presented.
func handshakeSerial(addr string, nextProto string) (string, error) {
	cfg := &tls.Config{InsecureSkipVerify: true}
	if nextProto != "" {
		cfg.NextProtos = []string{nextProto}
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.Text(16), nil
}

// logHas reports whether a's log holds s after offset.
func logHas(a *agent, offset int, s string) bool {
	b, _ := os.ReadFile(a.log)
	return len(b) > offset && strings.Contains(string(b[offset:]), s)
}

func logSize(a *agent) int {
	b, _ := os.ReadFile(a.log)
	return len(b)
}

// editConfig replaces old by new in a's config file.
func editConfig(t *testing.T, a *agent, old, new string) {
	t.Helper()
	b, err := os.ReadFile(a.config)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), old) {
		t.Fatalf("config of %s has no %q", a.name, old)
	}
	if err := os.WriteFile(a.config, []byte(strings.Replace(string(b), old, new, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestAgentReload runs one gwelb process (DESIGN.md §6.4) with an HTTPS
// listener and an access log file, and sends it SIGHUP after each change:
// rotated certificates reach new handshakes on the listener and on the
// node's admin port while an open keep-alive connection keeps working; a
// certificate change is also picked up without a signal; a broken
// certificate is refused with an ERROR and the old one kept; the access log
// follows logrotate's rename; log_level changes; a config that does not
// load is an ERROR naming the field and changes nothing; a config whose
// pools differ from the table is one WARN with the plan, never applied.
func TestAgentReload(t *testing.T) {
	skipInShortMode(t)
	dir := t.TempDir()
	accessLog := filepath.Join(dir, "access.log")
	listenerCert, listenerKey := filepath.Join(dir, "listener", "l.pem"), filepath.Join(dir, "listener", "l-key.pem")
	as := startAgentsWith(t, 1, map[string]string{"1": startGWE(t, "1")}, agentOptions{
		dir: dir,
		listenerTLS: func(a *agent) (string, string) {
			if _, _, err := pki.CreateNodeCert(filepath.Join(dir, "ca"), filepath.Join(dir, "listener"), "l", []net.IP{net.IPv4(127, 0, 0, 1)}, nil, 24*time.Hour); err != nil {
				t.Fatal(err)
			}
			return listenerCert, listenerKey
		},
		extra: func(*agent) string { return "access_log: " + accessLog + "\n" },
	})
	a := as[0]
	nodeCert, nodeKey := filepath.Join(dir, "certs", a.name+".pem"), filepath.Join(dir, "certs", a.name+"-key.pem")
	hup := func() int {
		t.Helper()
		off := logSize(a)
		if err := a.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, 10*time.Second, "the SIGHUP to be handled", func() bool { return logHas(a, off, "SIGHUP: reloading") })
		return off
	}

	// A keep-alive HTTPS connection opened before any rotation.
	pool := x509.NewCertPool()
	caPEM, _ := os.ReadFile(filepath.Join(dir, "ca", pki.CACertFile))
	pool.AppendCertsFromPEM(caPEM)
	kc, err := tls.Dial("tcp", a.data, &tls.Config{RootCAs: pool, ServerName: "l.node.gwelb"})
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	kr := bufio.NewReader(kc)
	keepAlive := func(what string) {
		t.Helper()
		kc.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(kc, "GET /backend/x HTTP/1.1\r\nHost: gwelb\r\nCookie: ROUTEID=.1\r\n\r\n")
		resp, err := http.ReadResponse(kr, nil)
		if err != nil {
			t.Fatalf("keep-alive connection %s: %v", what, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("keep-alive connection %s: %d", what, resp.StatusCode)
		}
	}
	keepAlive("before the rotation")
	oldListener := kc.ConnectionState().PeerCertificates[0].SerialNumber.Text(16)
	oldNode, err := handshakeSerial(a.grpc, "h2")
	if err != nil {
		t.Fatal(err)
	}

	t.Run("rotated certificates", func(t *testing.T) {
		newListener := rotate(t, dir, "l", listenerCert, listenerKey)
		newNode := rotate(t, dir, a.name, nodeCert, nodeKey)
		off := hup()
		waitUntil(t, 10*time.Second, "the reload to be logged", func() bool { return logHas(a, off, "TLS certificate reloaded") })
		if got, err := handshakeSerial(a.data, ""); err != nil || got != newListener {
			t.Errorf("new handshake on the listener after SIGHUP: serial %s (%v), want the new %s (old %s)", got, err, newListener, oldListener)
		}
		if got, err := handshakeSerial(a.grpc, "h2"); err != nil || got != newNode {
			t.Errorf("new handshake on the admin port after SIGHUP: serial %s (%v), want the new %s (old %s)", got, err, newNode, oldNode)
		}
		keepAlive("after the rotation")
		if got := kc.ConnectionState().PeerCertificates[0].SerialNumber.Text(16); got != oldListener {
			t.Errorf("the open connection's certificate changed to %s", got)
		}
		// The admin API still answers on the connection opened at start,
		// and a new one verifies the node's new certificate by name.
		ctx, cancel := context.WithTimeout(adminCtx(context.Background()), 5*time.Second)
		defer cancel()
		if _, err := a.admin.Status(ctx, &gwelbv1.StatusRequest{}); err != nil {
			t.Errorf("admin Status after the rotation: %v", err)
		}
	})

	t.Run("certificate files changed without a signal", func(t *testing.T) {
		newListener := rotate(t, dir, "l", listenerCert, listenerKey)
		waitUntil(t, 3*certPollInterval, "the listener to present the certificate written without a signal", func() bool {
			got, err := handshakeSerial(a.data, "")
			return err == nil && got == newListener
		})
		keepAlive("after the second rotation")
	})

	t.Run("broken certificate is refused", func(t *testing.T) {
		current, err := handshakeSerial(a.data, "")
		if err != nil {
			t.Fatal(err)
		}
		// A key that does not match the certificate.
		other, err := os.MkdirTemp(dir, "other-")
		if err != nil {
			t.Fatal(err)
		}
		_, key, err := pki.CreateNodeCert(filepath.Join(dir, "ca"), other, "x", nil, nil, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(key, listenerKey); err != nil {
			t.Fatal(err)
		}
		off := hup()
		waitUntil(t, 10*time.Second, "an ERROR naming the field", func() bool {
			return logHas(a, off, "level=ERROR") && logHas(a, off, "listeners[0].tls.cert")
		})
		if got, err := handshakeSerial(a.data, ""); err != nil || got != current {
			t.Errorf("after a broken certificate: serial %s (%v), want the previous %s still served", got, err, current)
		}
		rotate(t, dir, "l", listenerCert, listenerKey) // repair, for what follows
		hup()
	})

	t.Run("access log reopened after rename", func(t *testing.T) {
		get := func(path string) {
			t.Helper()
			keepAlive(path)
		}
		get("before the rename")
		waitUntil(t, 5*time.Second, "a line in the access log", func() bool {
			b, _ := os.ReadFile(accessLog)
			return strings.Contains(string(b), "/backend/x")
		})
		rotated := accessLog + ".1"
		if err := os.Rename(accessLog, rotated); err != nil {
			t.Fatal(err)
		}
		before, _ := os.ReadFile(rotated)
		hup()
		waitUntil(t, 5*time.Second, "the access log to be recreated", func() bool {
			_, err := os.Stat(accessLog)
			return err == nil
		})
		kc.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(kc, "GET /backend/after-rotation HTTP/1.1\r\nHost: gwelb\r\nCookie: ROUTEID=.1\r\n\r\n")
		if resp, err := http.ReadResponse(kr, nil); err != nil {
			t.Fatal(err)
		} else {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		waitUntil(t, 5*time.Second, "the new line in the new file", func() bool {
			b, _ := os.ReadFile(accessLog)
			return strings.Contains(string(b), "/backend/after-rotation")
		})
		after, _ := os.ReadFile(rotated)
		if string(after) != string(before) {
			t.Errorf("the rotated file was written to after SIGHUP:\n%s", after[len(before):])
		}
	})

	t.Run("log_level", func(t *testing.T) {
		editConfig(t, a, "log_level: debug", "log_level: warn")
		off := hup()
		waitUntil(t, 10*time.Second, "the level change to be logged", func() bool { return logHas(a, off, "log_level changed") })
		// INFO lines (like the next SIGHUP's) are now filtered out.
		editConfig(t, a, "log_level: warn", "log_level: info")
		off = logSize(a)
		a.cmd.Process.Signal(syscall.SIGHUP)
		waitUntil(t, 10*time.Second, "the level back at info", func() bool { return logHas(a, off, "log_level changed") })
		if logHas(a, off, "SIGHUP: reloading") {
			t.Errorf("an INFO line was logged at log_level warn")
		}
	})

	t.Run("bad config keeps the settings", func(t *testing.T) {
		editConfig(t, a, "log_level: info", "log_level: loud")
		off := hup()
		waitUntil(t, 10*time.Second, "an ERROR naming the field", func() bool {
			return logHas(a, off, "level=ERROR") && logHas(a, off, "log_level") && logHas(a, off, "keeps the settings")
		})
		editConfig(t, a, "log_level: loud", "log_level: info")
		keepAlive("after a bad config")
	})

	t.Run("pools differ from the table", func(t *testing.T) {
		editConfig(t, a, "      - {route: \"1\"", "      - {route: \"extra\", url: \"http://127.0.0.1:9\"}\n      - {route: \"1\"")
		editConfig(t, a, "node: ", "retry_join_note: x\nnode: ") // an unknown key: the file does not load
		off := hup()
		waitUntil(t, 10*time.Second, "the unknown key's ERROR", func() bool { return logHas(a, off, "retry_join_note") })
		editConfig(t, a, "retry_join_note: x\n", "")
		off = hup()
		waitUntil(t, 10*time.Second, "the WARN with the plan", func() bool { return logHas(a, off, "differ from the replicated table") })
		b, _ := os.ReadFile(a.log)
		line := ""
		for l := range strings.SplitSeq(string(b[off:]), "\n") {
			if strings.Contains(l, "differ from the replicated table") {
				line = l
			}
		}
		if !strings.Contains(line, "level=WARN") || !strings.Contains(line, "extra") || !strings.Contains(line, "gwelbctl apply") {
			t.Errorf("WARN line does not show the added member and gwelbctl apply: %s", line)
		}
		if n := strings.Count(string(b[off:]), "differ from the replicated table"); n != 1 {
			t.Errorf("%d WARN lines for one SIGHUP, want 1", n)
		}
		// Never applied: the table still has one member.
		ctx, cancel := context.WithTimeout(adminCtx(context.Background()), 5*time.Second)
		defer cancel()
		st, err := a.admin.Status(ctx, &gwelbv1.StatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, p := range st.GetPools() {
			n += len(p.GetMembers())
		}
		if n != 1 {
			t.Errorf("the table has %d members after SIGHUP, want 1 (the file is never applied)", n)
		}
		keepAlive("after the pools WARN")
	})

	t.Run("pools differ at start", func(t *testing.T) {
		a.stop(t, syscall.SIGKILL)
		off := logSize(a)
		a.start(t)
		waitUntil(t, 30*time.Second, "the WARN with the plan at start", func() bool {
			return logHas(a, off, "differ from the replicated table") && logHas(a, off, "when=start")
		})
	})
}
