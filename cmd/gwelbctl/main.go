// Command gwelbctl is the operator CLI of a gwelb cluster. It talks to the
// gRPC admin API (proto/gwelb/v1) of any balancer node, in the style of
// consul and nomad:
//
//	gwelbctl status
//	gwelbctl member drain frontend GWE_Frontend_103
//	gwelbctl route frontend .GWE_Frontend_103 --all-nodes
//
// Exit codes, which scripts may rely on:
//
//	0  ok
//	1  other error
//	2  usage error: bad arguments, unknown command or flag, bad flag value
//	3  node unreachable: the node at --addr could not be connected to, or
//	   the connection broke under the command (a watch whose node died)
//	4  no leader: the cluster has no Raft leader right now; retry later
//	5  unauthorised: the node refused the token (--token / GWELB_TOKEN) or
//	   the client certificate, or the token is read-only and the command
//	   writes
//	6  not found: no such pool, member or node
//	7  route disagreement: route --all-nodes saw nodes choose different routes
//
// Every error is one line on stderr, "gwelbctl: <message>"; usage errors are
// followed by the command's usage.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gwelb/gwelb/internal/rpcerr"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// Exit codes; see the package comment and exitCodesHelp.
const (
	exitOK           = 0
	exitError        = 1
	exitUsage        = 2
	exitUnreachable  = 3
	exitNoLeader     = 4
	exitUnauthorised = 5
	exitNotFound     = 6
	exitDisagreement = 7
)

// exitCodesHelp ends the long help of every command.
const exitCodesHelp = `
Exit codes:
  0  ok
  1  other error
  2  usage error (bad arguments, unknown command or flag, bad flag value)
  3  node unreachable (cannot connect to --addr, or the connection broke)
  4  no leader (the cluster has no Raft leader right now; retry later)
  5  unauthorised (check --token / GWELB_TOKEN, or the client certificate;
     a read-only token may only read)
  6  not found (no such pool, member or node)
  7  route disagreement (route --all-nodes: nodes chose different routes)`

// unauthorisedMsg is the message of exit code 5.
const unauthorisedMsg = "unauthorised: check --token / GWELB_TOKEN"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// env is what gwelbctl reads from its surroundings besides flags, so tests
// can supply their own.
type env struct {
	getenv func(string) string
	now    func() time.Time
	// planned, tests only: runs after apply read the cluster's pools and
	// made its plan, before it writes (a concurrent writer goes there).
	planned func()
}

// run runs gwelbctl with args (without the program name) and returns the
// exit code. Ctrl-C or SIGTERM cancels the command in flight.
func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runWith(ctx, env{getenv: os.Getenv, now: time.Now}, args, stdout, stderr)
}

// runWith is run with a given context and environment.
func runWith(ctx context.Context, e env, args []string, stdout, stderr io.Writer) (code int) {
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(stderr, "gwelbctl: internal error: %s\n", oneLine(fmt.Sprint(r)))
			code = exitError
		}
	}()
	a := &app{env: e, stdout: stdout, stderr: stderr}
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	var ue *usageError
	if !a.started || errors.As(err, &ue) {
		// Cobra found the error before any command ran (unknown command or
		// flag, wrong number of arguments) or the command rejected a flag.
		if cmd == nil {
			cmd = root
		}
		fmt.Fprintf(stderr, "gwelbctl: %s\n\n%s", strings.TrimRight(err.Error(), "\n"), cmd.UsageString())
		return exitUsage
	}
	fmt.Fprintf(stderr, "gwelbctl: %s\n", oneLine(err.Error()))
	var ce *cliError
	if errors.As(err, &ce) {
		return ce.code
	}
	return exitError
}

// oneLine folds a message onto one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// cliError is an error that carries its exit code.
type cliError struct {
	code int
	msg  string
	err  error
}

func (e *cliError) Error() string { return e.msg }
func (e *cliError) Unwrap() error { return e.err }

// usageError is a bad argument or flag found by a command; the command's
// usage is printed after it.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// usagef returns a usageError.
func usagef(format string, args ...any) error {
	return &usageError{err: fmt.Errorf(format, args...)}
}

// rpcError turns the failure of RPC op against the node at addr into the
// error the user sees, with its exit code. The exit code comes from the
// status code and the reason the node attached (package rpcerr), never from
// the message, which is for people. reached tells whether the node answered
// (its status arrived) or, for a deadline, whether the connection to it
// was up: an Unavailable from a node that answered is the node's own
// status, not a connection failure.
//
//	Unauthenticated, PermissionDenied        5 unauthorised
//	NotFound                                 6 not found
//	Unavailable with reason NO_LEADER        4 no leader
//	Unavailable, not reached                 3 unreachable
//	DeadlineExceeded, not reached            3 unreachable
//	anything else                            1 error
func rpcError(op, addr string, reached bool, timeout time.Duration, err error) error {
	st, ok := status.FromError(err)
	if !ok {
		st = status.FromContextError(err)
	}
	msg := st.Message()
	switch st.Code() {
	case codes.Unauthenticated:
		return &cliError{code: exitUnauthorised, msg: unauthorisedMsg, err: err}
	case codes.PermissionDenied:
		// The token was accepted but may not do this: a read-only token
		// (read_token) calling a write.
		return &cliError{code: exitUnauthorised, msg: fmt.Sprintf("%s: permission denied: %s", op, msg), err: err}
	case codes.NotFound:
		return &cliError{code: exitNotFound, msg: msg, err: err}
	case codes.Unavailable:
		if rpcerr.Reason(st) == rpcerr.ReasonNoLeader {
			return &cliError{code: exitNoLeader, msg: msg, err: err}
		}
		if !reached {
			return &cliError{code: exitUnreachable, msg: fmt.Sprintf("cannot reach gwelb node at %s: %s", addr, shortCause(msg)), err: err}
		}
		return &cliError{code: exitError, msg: fmt.Sprintf("%s: node at %s is unavailable: %s", op, addr, msg), err: err}
	case codes.DeadlineExceeded:
		if !reached {
			return &cliError{code: exitUnreachable, msg: fmt.Sprintf("cannot reach gwelb node at %s: no connection within %s (--timeout)", addr, timeout), err: err}
		}
		return &cliError{code: exitError, msg: fmt.Sprintf("%s: no answer from %s within %s (raise --timeout)", op, addr, timeout), err: err}
	case codes.Canceled:
		return &cliError{code: exitError, msg: op + ": interrupted", err: err}
	}
	return &cliError{code: exitError, msg: fmt.Sprintf("%s: %s", op, msg), err: err}
}

// sockOpPrefix is the "write tcp A->B: " that starts a socket error.
var sockOpPrefix = regexp.MustCompile(`^(read|write) (tcp[46]?|unix) \S+: `)

// shortCause extracts the interesting end of a gRPC connection error, e.g.
// "connection refused" from `connection error: desc = "transport: Error
// while dialing: dial tcp 127.0.0.1:1: connect: connection refused"`.
func shortCause(msg string) string {
	s := msg
	if i := strings.Index(s, "desc = "); i >= 0 {
		s = s[i+len("desc = "):]
		if u, err := strconv.Unquote(s); err == nil {
			s = u
		}
	}
	for _, p := range []string{"transport: Error while dialing: ", "transport: Error while dialing ", "transport: "} {
		if strings.HasPrefix(s, p) {
			s = s[len(p):]
			break
		}
	}
	if strings.HasPrefix(s, "dial ") {
		// dial tcp 127.0.0.1:1: connect: connection refused
		if f := strings.SplitN(s, ": ", 2); len(f) == 2 {
			s = f[1]
		}
	}
	s = strings.TrimPrefix(s, "connect: ")
	// write tcp 127.0.0.1:5->127.0.0.1:6: write: broken pipe
	if m := sockOpPrefix.FindStringIndex(s); m != nil {
		s = s[m[1]:]
	}
	if s == "" {
		return msg
	}
	return s
}

// app holds the global flags and the state of one run.
type app struct {
	env    env
	stdout io.Writer
	stderr io.Writer

	addr       string
	token      string
	output     string
	timeout    time.Duration
	caFile     string
	certFile   string
	keyFile    string
	serverName string

	// started is set when a command's own code begins to run: errors
	// returned before are cobra's usage errors.
	started bool
}

// rootCmd builds the command tree.
func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "gwelbctl",
		Short: "Operate a gwelb cluster",
		Long: `gwelbctl operates a gwelb cluster through the gRPC admin API of any of its
balancer nodes (--addr). Writes sent to a follower are forwarded to the leader.

Environment:
  GWELB_ADDR         default for --addr
  GWELB_TOKEN        default for --token
  GWELB_CACERT       default for --ca-file
  GWELB_CLIENT_CERT  default for --cert-file
  GWELB_CLIENT_KEY   default for --key-file`,
		SilenceUsage:      true,
		SilenceErrors:     true,
		PersistentPreRunE: a.prerun,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err: err} })
	f := root.PersistentFlags()
	f.StringVar(&a.addr, "addr", "127.0.0.1:7001", "gRPC admin address of any gwelb node (env GWELB_ADDR)")
	f.StringVar(&a.token, "token", "", "cluster token, sent as \"authorization: Bearer <token>\" (env GWELB_TOKEN)")
	f.StringVarP(&a.output, "output", "o", "table", "output format: table or json")
	f.DurationVar(&a.timeout, "timeout", 10*time.Second, "deadline of each command; 0 for none (watch has none)")
	f.StringVar(&a.caFile, "ca-file", "", "PEM CA bundle to verify the node's certificate; enables TLS (env GWELB_CACERT)")
	f.StringVar(&a.certFile, "cert-file", "", "PEM client certificate for mTLS (env GWELB_CLIENT_CERT)")
	f.StringVar(&a.keyFile, "key-file", "", "PEM client key for mTLS (env GWELB_CLIENT_KEY)")
	f.StringVar(&a.serverName, "tls-server-name", "", "server name to verify in the node's certificate")

	root.AddCommand(
		a.statusCmd(),
		a.joinCmd(),
		a.leaveCmd(),
		a.memberCmd(),
		a.poolCmd(),
		a.applyCmd(),
		a.routeCmd(),
		a.raftCmd(),
		a.snapshotCmd(),
		a.watchCmd(),
		a.keyringCmd(),
		a.importCmd(),
		a.versionCmd(),
	)
	addExitCodes(root)
	return root
}

// addExitCodes appends the exit codes to the long help of cmd and of every
// command below it that is not a group.
func addExitCodes(cmd *cobra.Command) {
	if !cmd.HasSubCommands() || !cmd.HasParent() {
		long := cmd.Long
		if long == "" {
			long = cmd.Short + "."
		}
		cmd.Long = long + "\n" + exitCodesHelp
	}
	for _, c := range cmd.Commands() {
		addExitCodes(c)
	}
}

// prerun reads the environment for flags not given and checks the flags.
func (a *app) prerun(cmd *cobra.Command, _ []string) error {
	a.started = true
	f := cmd.Flags()
	for _, d := range []struct {
		flag string
		dst  *string
		env  string
	}{
		{"addr", &a.addr, "GWELB_ADDR"},
		{"token", &a.token, "GWELB_TOKEN"},
		{"ca-file", &a.caFile, "GWELB_CACERT"},
		{"cert-file", &a.certFile, "GWELB_CLIENT_CERT"},
		{"key-file", &a.keyFile, "GWELB_CLIENT_KEY"},
	} {
		if !f.Changed(d.flag) {
			if v := a.env.getenv(d.env); v != "" {
				*d.dst = v
			}
		}
	}
	switch {
	case a.output != "table" && a.output != "json":
		return usagef("invalid --output %q: want table or json", a.output)
	case a.addr == "":
		return usagef("--addr is empty")
	case a.timeout < 0:
		return usagef("invalid --timeout %s: must not be negative", a.timeout)
	}
	return nil
}

// callContext returns the context of one command: cmd's, with the --timeout
// deadline.
func (a *app) callContext(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	ctx := cmd.Context()
	if a.timeout > 0 {
		return context.WithTimeout(ctx, a.timeout)
	}
	return context.WithCancel(ctx)
}

// jsonOutput tells whether -o json was asked for.
func (a *app) jsonOutput() bool { return a.output == "json" }

// args returns a validator that wants exactly the named positional
// arguments.
func args(names ...string) cobra.PositionalArgs {
	return func(_ *cobra.Command, got []string) error {
		if len(got) < len(names) {
			missing := names[len(got):]
			if len(missing) > 1 {
				return usagef("missing arguments %s", strings.Join(missing, " "))
			}
			return usagef("missing argument %s", missing[0])
		}
		if len(got) > len(names) {
			return usagef("unexpected argument %q", got[len(names)])
		}
		return nil
	}
}

// groupRunE makes a command group reject unknown subcommands (cobra would
// print the help and succeed) and print its help when called alone.
func groupRunE(cmd *cobra.Command, rest []string) error {
	if len(rest) > 0 {
		return usagef("unknown command %q for %q", rest[0], cmd.CommandPath())
	}
	return cmd.Help()
}

func (a *app) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of gwelbctl",
		Args:  args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if a.jsonOutput() {
				return a.printJSON(map[string]string{"version": version, "go": runtime.Version()})
			}
			_, err := fmt.Fprintf(a.stdout, "gwelbctl %s (%s)\n", version, runtime.Version())
			return err
		},
	}
}
