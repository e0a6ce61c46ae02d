// Command gwelb is the gwelb daemon: a sticky-session load balancer node for
// Genesys Web Engagement clusters.
//
//	gwelb agent -config FILE
//	gwelb validate -config FILE
//	gwelb health [-addr OPS_ADDR]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/gwelb/gwelb/cluster"
	"github.com/gwelb/gwelb/internal/metrics"
	"github.com/gwelb/gwelb/internal/pki"
	"github.com/gwelb/gwelb/proxy"
	"github.com/gwelb/gwelb/ui"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `usage: gwelb <command> [flags]

commands:
  agent -config FILE [-dev]     run a balancer node (-dev: a lone node, data in a temp dir)
  validate -config FILE [-dev]  check a config file without starting anything; every problem, one per line
  health [-addr HOST:PORT]      exit 0 if the node's /readyz (ops.addr, default 127.0.0.1:8081) answers 200, else 1
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
	case "health":
		os.Exit(healthMain(os.Args[2:], os.Stdout, os.Stderr))
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
	// From now on SIGHUP reloads and SIGTERM stops gracefully, even while
	// the node starts (SIGHUP's default action would kill it).
	lc := newLifecycle()
	defer lc.close()
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
	if err := runAgent(lc, *configPath, *dev, cfg, cc); err != nil {
		fmt.Fprintln(os.Stderr, "gwelb:", err)
		return 1
	}
	return 0
}

// runAgent runs the control plane, the data plane and the ops endpoints
// until a SIGTERM or SIGINT (the stop sequence of DESIGN.md §6.3, then
// leave the cluster as leave_on_terminate says) or until an operator makes
// the node leave; SIGHUP reloads (reload.go).
func runAgent(lc *lifecycle, configPath string, dev bool, cfg *Config, cc cluster.Config) error {
	level := new(slog.LevelVar) // log_level, changed by SIGHUP
	l, _ := parseLevel(cfg.LogLevel)
	level.Set(l)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(log)

	opts, err := cfg.ProxyOptions()
	if err != nil {
		return err
	}
	opts.Logger = log
	accessLog, err := openAccessLog(cfg.AccessLog)
	if err != nil {
		return err
	}
	if accessLog != nil {
		defer accessLog.Close()
		opts.AccessLog = accessLog
	}

	// One registry for the node: what the ops listener serves at /metrics.
	reg := metrics.New()
	opts.Metrics = reg.Proxy
	srv := proxy.New(opts)
	defer srv.Close()
	// The node's audit records also feed the dashboard's recent writes.
	writes := ui.NewHistory(100)
	cc.Logger = slog.New(ui.AuditTee(log.Handler(), writes))
	cc.OnTable = srv.Update
	cc.InFlight = srv.InFlight
	cc.Quarantine = srv.QuarantinedUntil
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
	var opsKeyPair *pki.KeyPair // ops.tls, reloaded like the listeners'
	if cfg.Ops.Addr != "" {
		ln, kp, err := listenOps(cfg.Ops)
		if err != nil {
			return err
		}
		ready := func() error {
			if lc.stopping.Load() {
				return errShuttingDown // traffic must move away at once (DESIGN.md §6.2)
			}
			if err := node.Ready(); err != nil {
				return err
			}
			if err := srv.Ready(); err != nil {
				return err
			}
			return lc.ready()
		}
		opsOpts := []proxy.OpsOption{proxy.WithMetrics(reg.Handler(log))}
		if cfg.Ops.Pprof {
			opsOpts = append(opsOpts, proxy.WithPprof())
		}
		opsHandler, closeUI, err := withDashboard(cfg, cc, node, reg.Gatherer(), writes, log, proxy.OpsHandler(ready, node.LastContact, opsOpts...))
		if err != nil {
			ln.Close()
			return err
		}
		opsKeyPair = kp
		ops = &http.Server{Handler: opsHandler, ReadHeaderTimeout: 5 * time.Second}
		ops.RegisterOnShutdown(closeUI) // live dashboard streams must not hold the stop
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
	waitCtx, cancelWait := context.WithCancel(context.Background())
	defer cancelWait()
	caught := make(chan error, 1)
	go func() { caught <- node.WaitCaughtUp(waitCtx) }()
	rl := &reloader{path: configPath, dev: dev, log: log, level: level, access: accessLog, node: node, ops: opsKeyPair, cfg: cfg}
	poll := time.NewTicker(certPollInterval)
	defer poll.Stop()
	var runErr error
	leave := true
run:
	for {
		select {
		case err := <-caught:
			caught = nil
			switch {
			case err == nil:
				// Caught up: the table is the cluster's. Say once if the
				// file no longer matches it (DESIGN.md §5.4).
				go rl.warnPoolDiffAtStart(cfg.Pools, lc.stop, 30*time.Second)
			case errors.Is(err, cluster.ErrNotCaughtUp):
				log.Warn("opening the listeners on the table this node has: it could not catch up with the cluster in time; sessions of members changed meanwhile may move until it does",
					"startup_catchup_timeout", cc.StartupCatchupTimeout, "err", err)
			default:
				continue // shutting down: the next round says why
			}
			for _, lcfg := range listenerConfigs {
				l, err := srv.Listen(lcfg)
				if err != nil {
					runErr = err
					break run
				}
				rl.listeners = append(rl.listeners, l)
				log.Info("listening", "addr", l.Addr().String())
				go func() { errc <- l.Serve() }()
			}
			lc.listening.Store(true)
		case <-lc.hup:
			rl.reload()
		case <-poll.C:
			rl.pollCerts()
		case <-lc.stop:
			break run
		case <-node.Left():
			log.Info("left the cluster on request; shutting down")
			leave = false
			lc.beginStop()
			break run
		case runErr = <-errc:
			break run
		}
	}
	cancelWait()
	if runErr == nil {
		// /readyz fails from now on; the data plane drains before the node
		// leaves, so requests in flight are routed on the cluster's table.
		drain(log, srv, rl.listeners, rl.cfg.Shutdown)
	}
	leaveCtx, cancel := context.WithTimeout(context.Background(), leaveTimeout)
	defer cancel()
	switch {
	case !leave || runErr != nil:
	case cfg.LeaveOnTerminate == nil || *cfg.LeaveOnTerminate:
		if err := node.Shutdown(leaveCtx); err != nil {
			log.Warn("leave", "err", err)
		}
	default:
		log.Info("stopping without leaving the cluster (leave_on_terminate: false)")
		if err := node.Stop(); err != nil {
			log.Warn("stop", "err", err)
		}
	}
	for _, l := range rl.listeners {
		l.Shutdown(leaveCtx) // after an error: drain did not run
	}
	if ops != nil {
		ops.Shutdown(leaveCtx)
	}
	log.Info("stopped")
	return runErr
}

// leaveTimeout bounds leaving the cluster (or handing leadership over)
// once the data plane has drained.
const leaveTimeout = 10 * time.Second

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
