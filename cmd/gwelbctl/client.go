package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

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
	// The node answered if its status arrived (answerSeen); a deadline
	// with no answer yet reached it if the connection is up. The
	// connection state alone is not enough either way: grpc-go hands a new
	// connection to RPCs a moment before it reports it Ready, so a fast
	// answer can fail before the state says Ready, and a connection that
	// broke under a stream still says Ready for a moment after.
	reached := errors.As(err, new(answeredError)) ||
		status.Code(err) == codes.DeadlineExceeded && n.cc.GetState() == connectivity.Ready
	err = rpcError(op, n.addr, reached, n.timeout, err)
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
		grpc.WithStatsHandler(answerSeen{}),
		grpc.WithUnaryInterceptor(markUnaryAnswer),
		grpc.WithStreamInterceptor(markStreamAnswer),
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

// answeredError is the failure of an RPC whose status came from the node
// (in its trailers), not from a connection that failed or broke. It keeps
// the status (status.FromError and status.Code see through it) and the
// message.
type answeredError struct{ error }

// GRPCStatus returns the status of the wrapped error.
func (e answeredError) GRPCStatus() *status.Status { return status.Convert(e.error) }

// Unwrap returns the wrapped error.
func (e answeredError) Unwrap() error { return e.error }

// answerKey is the context key of an RPC's *atomic.Bool that answerSeen
// sets when the node's status arrives.
type answerKey struct{}

// answerSeen is a client stats handler that notes, per RPC, that the node's
// status arrived: grpc-go reports InTrailer only for the frame that ends a
// stream the server ended (a trailers-only answer too), never for a
// connection that failed or broke. Headers alone do not count: a watch
// whose node died has had them since it began.
type answerSeen struct{}

// TagRPC returns ctx.
func (answerSeen) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }

// HandleRPC sets the RPC's flag on the node's trailers.
func (answerSeen) HandleRPC(ctx context.Context, s stats.RPCStats) {
	if _, ok := s.(*stats.InTrailer); ok {
		if seen, ok := ctx.Value(answerKey{}).(*atomic.Bool); ok {
			seen.Store(true)
		}
	}
}

// TagConn returns ctx.
func (answerSeen) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

// HandleConn does nothing.
func (answerSeen) HandleConn(context.Context, stats.ConnStats) {}

// markAnswer wraps err in answeredError if the node answered.
func markAnswer(seen *atomic.Bool, err error) error {
	if err == nil || errors.Is(err, io.EOF) || !seen.Load() {
		return err
	}
	return answeredError{err}
}

// markUnaryAnswer marks the failure of a unary RPC the node answered.
func markUnaryAnswer(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoke grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	seen := new(atomic.Bool)
	return markAnswer(seen, invoke(context.WithValue(ctx, answerKey{}, seen), method, req, reply, cc, opts...))
}

// markStreamAnswer marks the failures of a stream the node answered.
func markStreamAnswer(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, stream grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	seen := new(atomic.Bool)
	cs, err := stream(context.WithValue(ctx, answerKey{}, seen), desc, cc, method, opts...)
	if err != nil {
		return nil, markAnswer(seen, err)
	}
	return answerStream{ClientStream: cs, seen: seen}, nil
}

// answerStream marks the failures RecvMsg returns; SendMsg's io.EOF only
// says the stream ended, and its status comes from RecvMsg.
type answerStream struct {
	grpc.ClientStream
	seen *atomic.Bool
}

// RecvMsg receives a message and marks a failure the node answered.
func (s answerStream) RecvMsg(m any) error { return markAnswer(s.seen, s.ClientStream.RecvMsg(m)) }
