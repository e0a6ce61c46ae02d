package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// validateMain is `gwelb validate -config FILE [-dev]`, like `consul
// validate`, `nginx -t` and `haproxy -c`: it judges the file with the same
// code the agent and the cluster use, starts nothing and touches neither
// the network nor the disk beyond reading FILE and the files it names
// (token_file, read_token_file, gossip_key_file, tls), as the agent would
// at start. Exit 0 prints a one-line summary; exit 1 prints every problem,
// one per line.
func validateMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "path to the YAML config file")
	dev := fs.Bool("dev", false, "judge it as `gwelb agent -dev` would (node name, addresses and token may be left out)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *configPath == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "gwelb validate: usage: gwelb validate -config FILE [-dev]")
		return 2
	}
	data, err := os.ReadFile(*configPath)
	if err != nil {
		fmt.Fprintf(stderr, "gwelb validate: %v\n", err)
		return 1
	}
	problems := validateConfig(data, *dev)
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintf(stderr, "%s: %s\n", *configPath, p)
		}
		fmt.Fprintf(stderr, "%s: %d problem(s); nothing was started\n", *configPath, len(problems))
		return 1
	}
	cfg, _ := decodeConfig(data)
	members := 0
	for _, p := range cfg.Pools {
		members += len(p.Members)
	}
	fmt.Fprintf(stdout, "%s: valid: %d pool(s), %d member(s), %d listener(s)\n", *configPath, len(cfg.Pools), members, len(cfg.Listeners))
	return 0
}

// validateConfig returns every problem of a config file, one line each:
// what `gwelb agent` would refuse to start with.
func validateConfig(data []byte, dev bool) []string {
	cfg, err := decodeConfig(data)
	if err != nil {
		return splitLines(err)
	}
	problems := splitLines(cfg.validate())
	if dev {
		if cfg.DataDir == "" {
			// agent -dev makes a temporary directory; validate creates nothing.
			cfg.DataDir = os.TempDir()
		}
		if err := cfg.applyDev(); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if len(problems) == 0 {
		// The control plane's settings (node, addresses, token) are judged by
		// cluster.Config.Validate, as at start.
		if _, err := cfg.ClusterConfig(dev); err != nil {
			problems = append(problems, splitLines(err)...)
		}
	}
	return problems
}

func splitLines(err error) []string {
	if err == nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(err.Error(), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, line)
		}
	}
	return out
}
