package main

import (
	"crypto/rand"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/gwelb/gwelb/internal/pki"
)

// The commands that make a cluster's secrets (DESIGN.md §4): a CA, node and
// operator certificates (internal/pki) and a gossip key.

const tlsUsage = `usage:
  gwelb tls ca create -dir DIR [-days N]
  gwelb tls cert create -ca-dir DIR -node NAME [-ip IP]... [-dns NAME]... -out DIR [-days N]
  gwelb tls cert create -ca-dir DIR -client NAME -out DIR [-days N]
`

// listFlag collects a repeated flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// tlsMain runs `gwelb tls ...` and returns the exit code: 0 done, 1 failed,
// 2 usage.
func tlsMain(args []string, stdout, stderr io.Writer) int {
	switch {
	case len(args) >= 2 && args[0] == "ca" && args[1] == "create":
		return tlsCACreate(args[2:], stdout, stderr)
	case len(args) >= 2 && args[0] == "cert" && args[1] == "create":
		return tlsCertCreate(args[2:], stdout, stderr)
	}
	fmt.Fprint(stderr, tlsUsage)
	return 2
}

func usageError(stderr io.Writer, format string, args ...any) int {
	fmt.Fprintf(stderr, "gwelb tls: "+format+"\n", args...)
	fmt.Fprint(stderr, tlsUsage)
	return 2
}

func days(n int) (time.Duration, error) {
	if n <= 0 {
		return 0, fmt.Errorf("-days %d: must be positive", n)
	}
	return time.Duration(n) * 24 * time.Hour, nil
}

func tlsCACreate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tls ca create", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	dir := fs.String("dir", "", "directory for ca.pem and ca-key.pem (created 0700)")
	n := fs.Int("days", 3650, "validity in days")
	if err := fs.Parse(args); err != nil {
		return usageError(stderr, "%v", err)
	}
	if *dir == "" || fs.NArg() > 0 {
		return usageError(stderr, "ca create: -dir is required, and no arguments")
	}
	validity, err := days(*n)
	if err != nil {
		return usageError(stderr, "%v", err)
	}
	cert, key, err := pki.CreateCA(*dir, validity)
	if err != nil {
		fmt.Fprintln(stderr, "gwelb tls:", err)
		return 1
	}
	fmt.Fprintf(stdout, "created CA %s (key %s, keep it offline: it can mint nodes)\n", cert, key)
	return 0
}

func tlsCertCreate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tls cert create", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	caDir := fs.String("ca-dir", "", "the CA's directory (gwelb tls ca create -dir)")
	node := fs.String("node", "", "a node certificate for this node name (the config's node:)")
	client := fs.String("client", "", "an operator client certificate for this name")
	out := fs.String("out", "", "directory for <name>.pem and <name>-key.pem")
	n := fs.Int("days", 365, "validity in days")
	var ips, dns listFlag
	fs.Var(&ips, "ip", "an IP SAN of a node certificate (repeatable)")
	fs.Var(&dns, "dns", "a DNS SAN of a node certificate (repeatable)")
	if err := fs.Parse(args); err != nil {
		return usageError(stderr, "%v", err)
	}
	switch {
	case fs.NArg() > 0:
		return usageError(stderr, "cert create: unexpected argument %q", fs.Arg(0))
	case *caDir == "" || *out == "":
		return usageError(stderr, "cert create: -ca-dir and -out are required")
	case (*node == "") == (*client == ""):
		return usageError(stderr, "cert create: give exactly one of -node and -client")
	case *client != "" && (len(ips) > 0 || len(dns) > 0):
		return usageError(stderr, "cert create: -ip and -dns are for node certificates")
	}
	validity, err := days(*n)
	if err != nil {
		return usageError(stderr, "%v", err)
	}
	var parsed []net.IP
	for _, s := range ips {
		ip := net.ParseIP(s)
		if ip == nil {
			return usageError(stderr, "-ip %q: not an IP address", s)
		}
		parsed = append(parsed, ip)
	}
	var cert, key string
	if *node != "" {
		cert, key, err = pki.CreateNodeCert(*caDir, *out, *node, parsed, dns, validity)
	} else {
		cert, key, err = pki.CreateClientCert(*caDir, *out, *client, validity)
	}
	if err != nil {
		fmt.Fprintln(stderr, "gwelb tls:", err)
		return 1
	}
	fmt.Fprintf(stdout, "created %s (key %s)\n", cert, key)
	return 0
}

// keygenMain prints a new 32-byte gossip key, base64, for gossip_key.
func keygenMain(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		fmt.Fprintln(stderr, "gwelb keygen: usage: gwelb keygen (prints a gossip_key)")
		return 2
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		fmt.Fprintln(stderr, "gwelb keygen:", err)
		return 1
	}
	fmt.Fprintln(stdout, base64.StdEncoding.EncodeToString(key))
	return 0
}
