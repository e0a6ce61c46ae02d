package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/gwelb/gwelb/internal/childproc"
)

// server is one GWE demo server (bin/gwe-demo): a frontend GWE_F_n or a
// backend n, named like its route in the seed table.
type server struct {
	name, pool, prefix string
	addr, url          string
	logPath            string

	mu   sync.Mutex
	proc *childproc.Proc
}

// Demo server ports on the host address.
const (
	portFrontend = 29091
	portBackend  = 29191
)

// newServers lays out count frontend and count backend servers.
func (d *driver) newServers(count int) []*server {
	var out []*server
	for i := 1; i <= count; i++ {
		for _, s := range []struct {
			pool, name string
			port       int
		}{{"frontend", fmt.Sprintf("GWE_F_%d", i), portFrontend + i - 1}, {"backend", strconv.Itoa(i), portBackend + i - 1}} {
			addr := net.JoinHostPort(d.net.host, strconv.Itoa(s.port))
			out = append(out, &server{
				name: s.name, pool: s.pool, prefix: "/" + s.pool, addr: addr, url: "http://" + addr,
				logPath: filepath.Join(d.work, "gwe-"+s.name+".log"),
			})
		}
	}
	return out
}

// serversOf returns the servers of a pool.
func (d *driver) serversOf(pool string) []*server {
	var out []*server
	for _, s := range d.servers {
		if s.pool == pool {
			out = append(out, s)
		}
	}
	return out
}

// start starts the server on its address and waits until it answers.
func (d *driver) startServer(ctx context.Context, s *server) error {
	p, err := childproc.Start("gwe-"+s.name, []string{filepath.Join(d.bin, "gwe-demo"), "-addr", s.addr, "-name", s.name, "-prefix", s.prefix}, nil, s.logPath)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if code, err := d.get(ctx, s.url+s.prefix+"/about"); err == nil && code == http.StatusOK {
			return nil
		}
		if p.Exited() {
			return fmt.Errorf("gwe-demo %s exited at start (log %s)", s.name, s.logPath)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("gwe-demo %s did not answer within 10s", s.name)
		}
		if err := childproc.Sleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

// kill ends the server with SIGKILL.
func (s *server) kill() error {
	s.mu.Lock()
	p := s.proc
	s.mu.Unlock()
	return p.Kill()
}

// setHealth flips the server's health check (POST /_demo/health).
func (d *driver) setHealth(ctx context.Context, s *server, up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url+"/_demo/health?state="+state, nil)
	if err != nil {
		return err
	}
	resp, err := d.ctlHTTP.Do(req)
	if err != nil {
		return fmt.Errorf("health %s of %s: %w", state, s.name, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("health %s of %s: status %d", state, s.name, resp.StatusCode)
	}
	return nil
}

// get makes one GET with the driver's control client.
func (d *driver) get(ctx context.Context, url string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := d.ctlHTTP.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}
