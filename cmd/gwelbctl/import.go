package main

import (
	"fmt"
	"os"
	"slices"

	"github.com/spf13/cobra"

	"github.com/gwelb/gwelb/internal/confimport"
)

// importCmd is `gwelbctl import apache|nginx FILE`: the gwelb config of a
// balancer config of the GWE deployment guide, on stdout. It reads a file
// and talks to no node.
func (a *app) importCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "import apache|nginx FILE",
		Short: "Print the gwelb config of an Apache or nginx balancer config of the GWE guide",
		Long: `Import reads an Apache (mod_proxy_balancer) or nginx balancer configuration
as the GWE deployment guide writes them and prints a gwelb node config (YAML,
with comments saying where each value came from and why what has no gwelb key
is not needed). It talks to no node:

  gwelbctl import nginx /etc/nginx/nginx.conf > gwelb.yaml
  gwelb validate -dev -config gwelb.yaml

Apache: <Proxy balancer://NAME> with BalancerMember URL route=NAME and
ProxySet stickysession=NAME, the ProxyPass that points at it (the pool's
prefix), Header add Set-Cookie "NAME=.%{BALANCER_WORKER_ROUTE}e; path=/"
(gwelb inserts the cookie), VirtualHost and Listen (the listeners).
nginx: upstream servers (fail_timeout, weight, down), map $arg_NAME and map
$cookie_NAME (the route of each server is its key without the leading '.'),
map $upstream_addr with add_header Set-Cookie (gwelb inserts the cookie, with
its Max-Age), proxy_connect_timeout, listen and the location that proxies to
the upstream (the pool's prefix).

Member URLs lose their path (gwelb forwards the request target byte for
byte). Whatever the importer does not carry over is a warning on stderr,
"FILE:LINE: warning: ...", and a comment of the output; the command still
succeeds. A file that is not a balancer config, or one gwelb cannot express
(no stickiness, a placeholder of the guide's templates), is an error naming
its line, exit 1.`,
		Args: args("FORMAT", "FILE"),
		RunE: func(_ *cobra.Command, argv []string) error {
			kind := confimport.Kind(argv[0])
			if !slices.Contains(confimport.Kinds, kind) {
				return usagef("unknown format %q: want apache or nginx", argv[0])
			}
			if a.jsonOutput() {
				return usagef("import prints YAML; -o json does not apply")
			}
			src, err := os.ReadFile(argv[1])
			if err != nil {
				return &cliError{code: exitError, msg: fmt.Sprintf("import: %v", err), err: err}
			}
			cfg, err := confimport.Import(kind, argv[1], src)
			if err != nil {
				return &cliError{code: exitError, msg: fmt.Sprintf("import %s: %v", kind, err), err: err}
			}
			out, err := cfg.YAML()
			if err != nil {
				return &cliError{code: exitError, msg: fmt.Sprintf("import %s: %v", kind, err), err: err}
			}
			for _, w := range cfg.Warnings {
				fmt.Fprintf(a.stderr, "gwelbctl: %s\n", w)
			}
			_, err = a.stdout.Write(out)
			return err
		},
	}
}
