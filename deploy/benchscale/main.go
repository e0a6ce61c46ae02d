// Command benchscale measures gwelb at the scale of issue 13: 5 voters and
// 45 non-voters as real processes on loopback, in the secure posture of
// DESIGN.md §4, in front of stand-in GWE servers served by this process.
// It starts them, waits until every node routes, then measures
//
//   - a member change (SetMemberState through the leader) until every
//     node's Watch stream shows it: p50/p99 over -changes changes;
//   - idle CPU of every node over -idle (from /proc/<pid>/stat), the probe
//     rate each GWE server gets, RSS of every node (/proc/<pid>/status);
//   - the leader SIGKILLed: time to a new leader, to every node naming it,
//     to the next acknowledged write, and sticky requests through every
//     other node all along (each must reach the GWE server its cookie names);
//
// then, with those nodes gone, one node holding -big members (10,000): its
// RSS, CPU and probe rate, and SnapshotSave and SnapshotRestore over the
// admin API. It prints a table of figures against issue 13's goals.
//
//	make bench-scale                     # builds bin/, then runs this
//	go run ./deploy/benchscale -h        # flags
//
// Exit status: 0 when it ran (goals missed are in the table, marked MISS),
// 1 when it could not run, 2 on bad flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// options are the command line.
type options struct {
	bin              string
	voters, nonVoter int
	changes          int
	idle             time.Duration
	portBase         int
	big              int
	keep             bool
	skipScale        bool
	bigRuns          []bigRun
	// The child process mode: a farm of GWE servers for the big phase.
	farmFirst, farmCount, farmPort int
}

func main() {
	var o options
	fs := flag.NewFlagSet("benchscale", flag.ContinueOnError)
	fs.StringVar(&o.bin, "bin", "bin", "directory of the built gwelb binary")
	fs.IntVar(&o.voters, "voters", 5, "voting nodes")
	fs.IntVar(&o.nonVoter, "non-voters", 45, "non-voting nodes")
	fs.IntVar(&o.changes, "changes", 200, "member changes timed until every node shows them (p99 needs 100 or more: of 50 it is the worst)")
	fs.DurationVar(&o.idle, "idle", 10*time.Second, "idle window for CPU and probe rates")
	fs.IntVar(&o.portBase, "port-base", 61000, "first port; the run uses port-base .. port-base+599 on 127.0.0.1")
	fs.IntVar(&o.big, "big", 10000, "members of the single-node phase (0 skips it)")
	bigRuns := fs.String("big-runs", "restore:60s", "comma-separated runs of the -big phase, each BUILD:INTERVAL: BUILD restore (one SnapshotRestore) or seed (the config's pools), INTERVAL a probe interval or default (2 s)")
	fs.BoolVar(&o.keep, "keep", false, "keep the work directory (configs, logs, data)")
	fs.BoolVar(&o.skipScale, "skip-scale", false, "skip the multi-node phase")
	fs.IntVar(&o.farmFirst, "farm-first", 0, "internal: first member a GWE server farm serves")
	fs.IntVar(&o.farmCount, "farm-count", 0, "internal: serve this many GWE servers (the child process mode)")
	fs.IntVar(&o.farmPort, "farm-port", 0, "internal: the farm's port")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(2)
	}
	for spec := range strings.SplitSeq(*bigRuns, ",") {
		build, iv, _ := strings.Cut(spec, ":")
		if iv == "default" || iv == "" {
			iv = ""
		} else if _, err := time.ParseDuration(iv); err != nil {
			fmt.Fprintf(os.Stderr, "benchscale: -big-runs %s: %v\n", spec, err)
			os.Exit(2)
		}
		if build != "seed" && build != "restore" {
			fmt.Fprintf(os.Stderr, "benchscale: -big-runs %s: build is seed or restore\n", spec)
			os.Exit(2)
		}
		o.bigRuns = append(o.bigRuns, bigRun{seed: build == "seed", interval: iv})
	}
	if o.voters < 1 || o.nonVoter < 0 || o.voters+o.nonVoter > maxNodes || o.changes < 1 || o.portBase < 1024 || o.portBase+600 > 65535 {
		fmt.Fprintf(os.Stderr, "benchscale: -voters 1..%d in all with -non-voters, -changes >= 1, -port-base 1024..64935\n", maxNodes)
		os.Exit(2)
	}
	if o.farmCount > 0 {
		if err := serveFarm(o.farmFirst, o.farmCount, o.farmPort); err != nil {
			fmt.Fprintf(os.Stderr, "benchscale farm: %v\n", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintf(os.Stderr, "benchscale: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	bin, err := filepath.Abs(o.bin)
	if err != nil {
		return fmt.Errorf("bin: %w", err)
	}
	if _, err := os.Stat(filepath.Join(bin, "gwelb")); err != nil {
		return fmt.Errorf("no gwelb binary (make build first): %w", err)
	}
	o.bin = bin
	work, err := os.MkdirTemp("", "gwelb-benchscale-")
	if err != nil {
		return fmt.Errorf("work dir: %w", err)
	}
	if o.keep {
		fmt.Printf("work directory (kept): %s\n", work)
	} else {
		defer os.RemoveAll(work)
	}
	sec, err := newSecrets(filepath.Join(work, "pki"))
	if err != nil {
		return err
	}
	// Four GWE servers: routes 1-3 carry the sticky traffic, x is the
	// member the timed changes drain and re-activate.
	var servers []*gwe
	for i, name := range []string{"1", "2", "3", "x"} {
		g, err := startGWE(name, "/backend", fmt.Sprintf("127.0.0.1:%d", o.portBase+offGWE+i))
		if err != nil {
			return err
		}
		defer g.stop()
		servers = append(servers, g)
	}
	r := &report{}
	start := time.Now()
	if !o.skipScale {
		if err := scalePhase(ctx, o, work, sec, servers, r); err != nil {
			r.print(os.Stdout)
			return err
		}
	}
	if o.big > 0 {
		for i, run := range o.bigRuns {
			if err := bigPhase(ctx, o, work, sec, r, strconv.Itoa(i+1), run); err != nil {
				r.print(os.Stdout)
				return err
			}
		}
	}
	r.note("whole run %.0f s", time.Since(start).Seconds())
	r.print(os.Stdout)
	return nil
}
