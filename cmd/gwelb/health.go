package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// defaultOpsAddr is where `gwelb health` looks without -addr: the ops
// listener of the image's example configs (deploy/compose), on loopback.
const defaultOpsAddr = "127.0.0.1:8081"

const healthUsage = `usage: gwelb health [-addr HOST:PORT] [-max-stale DURATION] [-timeout DURATION]

GET /readyz on the node's ops listener (ops.addr); exit 0 when the node is
ready, 1 otherwise (not ready, shutting down, unreachable). For a Docker
HEALTHCHECK in the FROM scratch image, which has no curl.
`

// healthMain runs `gwelb health`: 0 ready, 1 not, 2 usage.
func healthMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("health", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	addr := fs.String("addr", defaultOpsAddr, "the node's ops listener, host:port (ops.addr)")
	maxStale := fs.Duration("max-stale", 0, "also not ready after this long without contact with a Raft quorum (/readyz?max_stale=)")
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 || *timeout <= 0 || *maxStale < 0 {
		if err != nil {
			fmt.Fprintln(stderr, "gwelb health:", err)
		}
		fmt.Fprint(stderr, healthUsage)
		return 2
	}
	target := "http://" + *addr + "/readyz"
	if *maxStale > 0 {
		target += "?max_stale=" + url.QueryEscape(maxStale.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		fmt.Fprintf(stderr, "gwelb health: -addr %q: %v\n", *addr, err)
		return 2
	}
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		fmt.Fprintln(stdout, "not ready:", err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	msg := strings.TrimSpace(string(body))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stdout, "%d %s\n", resp.StatusCode, msg)
		return 1
	}
	fmt.Fprintln(stdout, msg)
	return 0
}
