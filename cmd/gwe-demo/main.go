// Command gwe-demo runs a stand-in Genesys Web Engagement server for demos and tests.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/gwelb/gwelb/internal/gwedemo"
)

// config holds the parsed command line.
type config struct {
	addr      string
	name      string
	prefix    string
	tlsCert   string
	tlsKey    string
	unhealthy bool
	noEcho    bool
}

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "gwe-demo: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, slog.New(slog.NewTextHandler(os.Stderr, nil))); err != nil {
		fmt.Fprintf(os.Stderr, "gwe-demo: %v\n", err)
		os.Exit(1)
	}
}

// parseFlags parses and checks args, reporting usage to out.
func parseFlags(args []string, out io.Writer) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("gwe-demo", flag.ContinueOnError)
	// Parse errors are reported once, by main, as a single line.
	fs.SetOutput(io.Discard)
	fs.StringVar(&cfg.addr, "addr", "127.0.0.1:9091", "listen address host:port")
	fs.StringVar(&cfg.name, "name", "1", "route name this server answers with")
	fs.StringVar(&cfg.prefix, "prefix", "", "path prefix of the health check, e.g. /frontend or /backend")
	fs.StringVar(&cfg.tlsCert, "tls-cert", "", "TLS certificate file (PEM); enables HTTPS with -tls-key")
	fs.StringVar(&cfg.tlsKey, "tls-key", "", "TLS private key file (PEM)")
	fs.BoolVar(&cfg.unhealthy, "unhealthy", false, "start with a failing health check")
	fs.BoolVar(&cfg.noEcho, "no-echo", false, "do not report the forwarded headers in X-GWE-Got-* (benchmarks: the answer stays the same size whatever a balancer forwards)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(out)
			fs.Usage()
		}
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if cfg.name == "" {
		return config{}, errors.New("-name must not be empty")
	}
	if _, _, err := net.SplitHostPort(cfg.addr); err != nil {
		return config{}, fmt.Errorf("-addr %q: %w", cfg.addr, err)
	}
	if (cfg.tlsCert == "") != (cfg.tlsKey == "") {
		return config{}, errors.New("-tls-cert and -tls-key must be given together")
	}
	return cfg, nil
}

// run serves until ctx is cancelled, then drains in-flight requests.
func run(ctx context.Context, cfg config, log *slog.Logger) error {
	s := gwedemo.New(cfg.name, cfg.prefix)
	s.SetHealthy(!cfg.unhealthy)
	s.SetEcho(!cfg.noEcho)

	// Listen first so an address in use fails before we claim to be listening.
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.addr, err)
	}
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
	}
	log.Info("gwe-demo listening", "addr", ln.Addr().String(), "name", cfg.name, "prefix", cfg.prefix,
		"tls", cfg.tlsCert != "", "healthy", s.Healthy())

	errc := make(chan error, 1)
	go func() {
		if cfg.tlsCert != "" {
			errc <- srv.ServeTLS(ln, cfg.tlsCert, cfg.tlsKey)
		} else {
			errc <- srv.Serve(ln)
		}
	}()

	select {
	case err := <-errc:
		return fmt.Errorf("serve on %s: %w", cfg.addr, err)
	case <-ctx.Done():
	}
	log.Info("gwe-demo shutting down", "name", cfg.name)
	// Shutdown must not inherit the cancelled ctx, or it would stop at once.
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve on %s: %w", cfg.addr, err)
	}
	return nil
}
