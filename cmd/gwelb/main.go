// Command gwelb is the gwelb daemon: a sticky-session load balancer node for
// Genesys Web Engagement clusters.
//
//	gwelb agent -config FILE
//	gwelb validate -config FILE
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
	"strings"
	"syscall"
	"time"

	"github.com/gwelb/gwelb/cluster"
	"github.com/gwelb/gwelb/internal/metrics"
	"github.com/gwelb/gwelb/proxy"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `usage: gwelb <command> [flags]

commands:
  agent -config FILE [-dev]     run a balancer node (-dev: a lone node, data in a temp dir)
  validate -config FILE [-dev]  check a config file without starting anything; every problem, one per line
  tls ca create -dir DIR        make the cluster CA (DESIGN.md §4)
  tls cert create -ca-dir DIR (-node NAME [-ip IP]... [-dns NAME]... | -client NAME) -out DIR
                                a node or operator certificate of the CA
  keygen                        print a new gossip_key
  version                       print the version
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	switch os.Args[1] {
	case "agent":
		os.Exit(agentMain(os.Args[2:]))
	case "validate":
		os.Exit(validateMain(os.Args[2:], os.Stdout, os.Stderr))
	case "tls":
		os.Exit(tlsMain(os.Args[2:], os.Stdout, os.Stderr))
	case "keygen":
		os.Exit(keygenMain(os.Args[2:], os.Stdout, os.Stderr))
	case "version", "-version", "--version":
		fmt.Println("gwelb", version)
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "gwelb: unknown command %q\n%s", os.Args[1], usage)
		os.Exit(2)
	}
}

func agentMain(args []string) int {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	configPath := fs.String("config", "", "path to the YAML config file")
	dev := fs.Bool("dev", false, "run a lone node that bootstraps itself, data in a temp dir, no token needed")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *configPath == "" || fs.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "gwelb agent: usage: gwelb agent -config FILE [-dev]")
		return 2
	}
	cfg, err := LoadConfig(*configPath)
	if err == nil && *dev {
		err = cfg.applyDev()
	}
	var cc cluster.Config
	if err == nil {
		cc, err = cfg.ClusterConfig(*dev)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gwelb:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := runAgent(ctx, cfg, cc); err != nil {
		fmt.Fprintln(os.Stderr, "gwelb:", err)
		return 1
	}
	return 0
}

// runAgent runs the control plane, the data plane and the ops endpoints
// until ctx ends (SIGTERM: leave the cluster gracefully) or an operator
// makes the node leave.
func runAgent(ctx context.Context, cfg *Config, cc cluster.Config) error {
	level, _ := parseLevel(cfg.LogLevel)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(log)

	opts, err := cfg.ProxyOptions()
	if err != nil {
		return err
	}
	opts.Logger = log
	accessLog, closeLog, err := openAccessLog(cfg.AccessLog)
	if err != nil {
		return err
	}
	defer closeLog()
	opts.AccessLog = accessLog

	// One registry for the node: what the ops listener serves at /metrics.
	reg := metrics.New()
	opts.Metrics = reg.Proxy
	srv := proxy.New(opts)
	defer srv.Close()
	cc.Logger = log
	cc.OnTable = srv.Update
	cc.InFlight = srv.InFlight
	cc.Metrics = reg.Cluster
	node, err := cluster.Start(cc)
	if err != nil {
		return err
	}
	defer node.Kill()
	srv.SetObserver(node)
	srv.SetFreshness(node)

	// Listeners bind only once the node has caught up (below); the ops
	// endpoints answer at once, /readyz saying what the node waits for.
	listenerConfigs := cfg.ListenerConfigs()
	errc := make(chan error, len(listenerConfigs)+1)
	var ops *http.Server
	if cfg.Ops.Addr != "" {
		ln, err := net.Listen("tcp", cfg.Ops.Addr)
		if err != nil {
			return fmt.Errorf("ops.addr %s: %w", cfg.Ops.Addr, err)
		}
		ready := func() error {
			if err := node.Ready(); err != nil {
				return err
			}
			return srv.Ready()
		}
		opsOpts := []proxy.OpsOption{proxy.WithMetrics(reg.Handler(log))}
		if cfg.Ops.Pprof {
			opsOpts = append(opsOpts, proxy.WithPprof())
		}
		ops = &http.Server{Handler: proxy.OpsHandler(ready, node.LastContact, opsOpts...), ReadHeaderTimeout: 5 * time.Second}
		log.Info("ops listening", "addr", ln.Addr().String())
		go func() {
			if err := ops.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("ops %s: %w", cfg.Ops.Addr, err)
			}
		}()
	}
	log.Info("gwelb started", "version", version, "node", cc.Name, "dev", cc.Dev)

	// A node that routed before catching up would move the sessions of
	// members added or enabled while it was down: open the data plane only
	// once it has applied what the cluster had when it rejoined, or once
	// startup_catchup_timeout has passed (then it serves the table it has).
	caught := make(chan error, 1)
	go func() { caught <- node.WaitCaughtUp(ctx) }()
	var listeners []*proxy.Listener
	var runErr error
	leave := true
run:
	for {
		select {
		case err := <-caught:
			caught = nil
			switch {
			case err == nil:
			case errors.Is(err, cluster.ErrNotCaughtUp):
				log.Warn("opening the listeners on the table this node has: it could not catch up with the cluster in time; sessions of members changed meanwhile may move until it does",
					"startup_catchup_timeout", cc.StartupCatchupTimeout, "err", err)
			default:
				continue // shutting down: the next round says why
			}
			for _, lc := range listenerConfigs {
				l, err := srv.Listen(lc)
				if err != nil {
					runErr = err
					break run
				}
				listeners = append(listeners, l)
				log.Info("listening", "addr", l.Addr().String())
				go func() { errc <- l.Serve() }()
			}
		case <-ctx.Done():
			log.Info("shutting down")
			break run
		case <-node.Left():
			log.Info("left the cluster on request; shutting down")
			leave = false
			break run
		case runErr = <-errc:
			break run
		}
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	switch {
	case !leave || runErr != nil:
	case cfg.LeaveOnTerminate == nil || *cfg.LeaveOnTerminate:
		if err := node.Shutdown(shutdownCtx); err != nil {
			log.Warn("leave", "err", err)
		}
	default:
		log.Info("stopping without leaving the cluster (leave_on_terminate: false)")
		if err := node.Stop(); err != nil {
			log.Warn("stop", "err", err)
		}
	}
	for _, l := range listeners {
		if err := l.Shutdown(shutdownCtx); err != nil {
			log.Warn("listener shutdown", "err", err)
		}
	}
	if ops != nil {
		ops.Shutdown(shutdownCtx)
	}
	return runErr
}

// openAccessLog maps the access_log setting onto a writer.
func openAccessLog(dest string) (io.Writer, func(), error) {
	switch dest {
	case "", "off":
		return nil, func() {}, nil
	case "stdout":
		return os.Stdout, func() {}, nil
	case "stderr":
		return os.Stderr, func() {}, nil
	}
	f, err := os.OpenFile(dest, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, nil, fmt.Errorf("access_log: %w", err)
	}
	return f, func() { f.Close() }, nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if s == "" {
		return slog.LevelInfo, nil
	}
	if err := l.UnmarshalText([]byte(strings.ToUpper(s))); err != nil {
		return 0, fmt.Errorf("%q: want debug, info, warn or error", s)
	}
	return l, nil
}
