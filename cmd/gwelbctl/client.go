package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// nodeConn is a connection to the admin API of one gwelb node.
type nodeConn struct {
	addr       string
	timeout    time.Duration
	tls        bool // TLS is on
	clientCert bool // a client certificate is configured
	cc         *grpc.ClientConn
	api        gwelbv1.AdminClient
}

// close closes the connection.
func (n *nodeConn) close() { _ = n.cc.Close() }

// fail turns the failure of RPC op into the error the user sees. A
// connection failure that looks like a TLS setup mismatch gets a hint.
func (n *nodeConn) fail(op string, err error) error {
	err = rpcError(op, n.addr, n.cc.GetState() == connectivity.Ready, n.timeout, err)
	var ce *cliError
	if !errors.As(err, &ce) || ce.code != exitUnreachable {
		return err
	}
	switch {
	case !n.tls && strings.Contains(ce.msg, "server preface"):
		ce.msg += " (does the node use TLS? set --ca-file)"
	case n.tls && !n.clientCert && tlsRefusal.MatchString(ce.msg):
		ce.msg += " (does the node require a client certificate? set --cert-file and --key-file)"
	}
	return err
}

// tlsRefusal matches what a client sees when a TLS 1.3 server rejects its
// (missing) certificate after the handshake.
var tlsRefusal = regexp.MustCompile(`certificate required|bad certificate|broken pipe|connection reset|EOF`)

// connect connects to the node at --addr.
func (a *app) connect() (*nodeConn, error) {
	return a.dial(a.addr)
}

// dial connects to the node at addr with the global TLS and token
// settings. grpc.NewClient connects lazily: an unreachable node shows on the
// first RPC, which fails fast with codes.Unavailable (or hits the command's
// deadline when packets are dropped); nodeConn.fail maps both to exit 3.
func (a *app) dial(addr string) (*nodeConn, error) {
	tc, err := a.tlsConfig()
	if err != nil {
		return nil, err
	}
	creds := insecure.NewCredentials()
	if tc != nil {
		creds = credentials.NewTLS(tc)
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithUserAgent("gwelbctl/" + version),
	}
	if a.token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearerToken(a.token)))
	}
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("invalid node address %q: %w", addr, err)
	}
	return &nodeConn{
		addr:       addr,
		timeout:    a.timeout,
		tls:        tc != nil,
		clientCert: tc != nil && len(tc.Certificates) > 0,
		cc:         cc,
		api:        gwelbv1.NewAdminClient(cc),
	}, nil
}

// tlsConfig returns the client TLS configuration of the TLS flags, or nil
// for plaintext (no --ca-file).
func (a *app) tlsConfig() (*tls.Config, error) {
	if a.caFile == "" {
		if a.certFile != "" || a.keyFile != "" || a.serverName != "" {
			return nil, &cliError{code: exitUsage, msg: "--cert-file, --key-file and --tls-server-name need --ca-file (GWELB_CACERT)"}
		}
		return nil, nil
	}
	if (a.certFile == "") != (a.keyFile == "") {
		return nil, &cliError{code: exitUsage, msg: "--cert-file and --key-file go together"}
	}
	pem, err := os.ReadFile(a.caFile)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("read CA file %s: no PEM certificate found", a.caFile)
	}
	tc := &tls.Config{RootCAs: pool, ServerName: a.serverName, MinVersion: tls.VersionTLS12}
	if a.certFile != "" {
		cert, err := tls.LoadX509KeyPair(a.certFile, a.keyFile)
		if err != nil {
			return nil, fmt.Errorf("load client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// bearerToken sends the cluster token with every RPC.
type bearerToken string

// GetRequestMetadata returns the authorization header.
func (t bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}

// RequireTransportSecurity is false: nodes on loopback or a private network
// may run the admin API without TLS.
func (bearerToken) RequireTransportSecurity() bool { return false }

// unary runs one unary RPC against the node at --addr under the command's
// deadline, and maps its failure.
func unary[Resp any](a *app, cmd *cobra.Command, op string, call func(context.Context, gwelbv1.AdminClient) (Resp, error)) (Resp, error) {
	var zero Resp
	n, err := a.connect()
	if err != nil {
		return zero, err
	}
	defer n.close()
	ctx, cancel := a.callContext(cmd)
	defer cancel()
	resp, err := call(ctx, n.api)
	if err != nil {
		return zero, n.fail(op, err)
	}
	return resp, nil
}
