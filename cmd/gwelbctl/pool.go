package main

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gwelb/gwelb/fsm"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

func (a *app) poolCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pool",
		Short: "List, show and change the pools' settings",
		RunE:  groupRunE,
	}
	cmd.AddCommand(a.poolListCmd(), a.poolShowCmd(), a.poolSetCmd())
	return cmd
}

func (a *app) poolListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the pools",
		Long: `List the replicated pools as the addressed node sees them: prefix, where the
sticky value is read, fail_timeout and the number of members. With -o json,
prints a JSON array of Pool objects (as stored: unset fields take their
defaults).`,
		Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := a.status(cmd)
			if err != nil {
				return err
			}
			if a.jsonOutput() {
				var pools []*gwelbv1.Pool
				for _, ps := range st.GetPools() {
					pools = append(pools, ps.GetPool())
				}
				return printProtoList(a, pools)
			}
			t := newTable(a.stdout, "NAME", "PREFIX", "STICKY", "FAIL-TIMEOUT", "MEMBERS")
			for _, ps := range st.GetPools() {
				p := fsm.PoolFromProto(ps.GetPool()).WithDefaults()
				t.row(p.Name, p.Prefix, stickyText(p.Sticky), p.FailTimeout.String(), strconv.Itoa(len(ps.GetMembers())))
			}
			return t.flush()
		},
	}
}

// stickyText is "query=alias cookie=ROUTEID insert".
func stickyText(s fsm.StickySpec) string {
	var parts []string
	if s.Query != "" {
		parts = append(parts, "query="+s.Query)
	}
	if s.Cookie != "" {
		parts = append(parts, "cookie="+s.Cookie)
	}
	if s.Insert {
		parts = append(parts, "insert")
	}
	return strings.Join(parts, " ")
}

func (a *app) poolShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "show POOL",
		Short: "Show a pool's settings and members",
		Long: `Show every setting of a pool, defaults filled in, named as in the config
file (pools[].health.interval is health.interval), and its members. An
unknown pool exits with code 6. With -o json, prints the PoolStatus object.`,
		Args: args("POOL"),
		RunE: func(cmd *cobra.Command, argv []string) error {
			ps, err := a.poolStatus(cmd, argv[0])
			if err != nil {
				return err
			}
			if a.jsonOutput() {
				return a.printProto(ps)
			}
			spec := fsm.PoolFromProto(ps.GetPool()).WithDefaults()
			kv := newTable(a.stdout)
			for _, f := range poolFields() {
				kv.row(f.path, f.show(reflect.ValueOf(spec).FieldByIndex(f.index)))
			}
			if err := kv.flush(); err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, "\nMembers:")
			now := a.env.now()
			t := newTable(a.stdout, "ROUTE", "URL", "WEIGHT", "STATE", "VERDICT")
			for _, ms := range ps.GetMembers() {
				m := ms.GetMember()
				t.row(m.GetRoute(), m.GetUrl(), strconv.Itoa(int(m.GetWeight())), stateName(m.GetState()), verdict(now, m))
			}
			return t.flush()
		},
	}
}

// poolStatus reads one pool, with its members, from the node at --addr;
// an unknown pool is exit code 6.
func (a *app) poolStatus(cmd *cobra.Command, name string) (*gwelbv1.PoolStatus, error) {
	st, err := a.status(cmd)
	if err != nil {
		return nil, err
	}
	for _, ps := range st.GetPools() {
		if ps.GetPool().GetName() == name {
			return ps, nil
		}
	}
	return nil, &cliError{code: exitNotFound, msg: fmt.Sprintf("pool %q not found", name)}
}

// poolSetAttempts bounds pool set's reads and compare-and-set writes when
// other writes keep changing the pool in between.
const poolSetAttempts = 5

func (a *app) poolSetCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "set POOL --SETTING VALUE...",
		Short: "Change settings of a pool",
		Long: `Change settings of a pool through Raft: every node's data plane and prober
use them once the change is applied. The pool is read from the addressed
node, only the settings given as flags change, and the result is judged by
the cluster's validator before it is sent (errors name the setting, as in
the config file). Members are not touched. An unknown pool exits with code 6.

The flags are the config file's pool settings, with "." and "_" written
"-": pools[].health.interval is --health-interval. Durations are Go
durations (500ms, 10s, 1m30s).`,
		Example: `  gwelbctl pool set backend --fail-timeout 5s
  gwelbctl pool set backend --cookie-secure --cookie-same-site None
  gwelbctl pool set frontend --health-interval 5s --health-fall 3`,
		Args: args("POOL"),
	}
	fields := poolFields()
	for _, f := range fields {
		f.register(cmd.Flags())
	}
	cmd.RunE = func(cmd *cobra.Command, argv []string) error {
		name := argv[0]
		flags := cmd.Flags()
		var given []poolField
		for _, f := range fields {
			if flags.Changed(f.flag) {
				given = append(given, f)
			}
		}
		if len(given) == 0 {
			return usagef("nothing to set: give at least one setting (see gwelbctl pool set --help)")
		}
		// A compare-and-set: the change applies only while the pool's
		// settings are the ones read here, so a pool set running at the
		// same time cannot be overwritten; on a conflict, read again.
		var plan fsm.Plan
		var resp *gwelbv1.WriteResponse
		for attempt := 1; ; attempt++ {
			ps, err := a.poolStatus(cmd, name)
			if err != nil {
				return err
			}
			old := fsm.PoolFromProto(ps.GetPool())
			next := old
			v := reflect.ValueOf(&next).Elem()
			for _, f := range given {
				if err := f.set(flags, v.FieldByIndex(f.index)); err != nil {
					return usagef("--%s: %v", f.flag, err)
				}
			}
			// The cluster's validator, before anything is sent: the
			// message names the setting as the config file does.
			if err := fsm.ValidatePool(next); err != nil {
				return &cliError{code: exitError, msg: strings.ReplaceAll(err.Error(), "\n", "; "), err: err}
			}
			plan = fsm.PlanChanges([]fsm.PoolSpec{old}, []fsm.PoolSpec{next})
			if plan.Empty() {
				if a.jsonOutput() {
					return a.printJSON(map[string]any{"pool": name, "changes": []string{}, "index": 0})
				}
				_, err := fmt.Fprintf(a.stdout, "pool %s: no change\n", name)
				return err
			}
			req := &gwelbv1.PutPoolRequest{Pool: fsm.PoolToProto(next), Expected: fsm.PoolToProto(old), RequestId: requestID()}
			resp, err = unary(a, cmd, "pool set", func(ctx context.Context, c gwelbv1.AdminClient) (*gwelbv1.WriteResponse, error) {
				return c.PutPool(ctx, req)
			})
			if err == nil {
				break
			}
			if status.Code(errors.Unwrap(err)) != codes.Aborted {
				return err
			}
			if attempt == poolSetAttempts {
				return &cliError{code: exitError, msg: fmt.Sprintf("pool set: pool %s changed under this command %d times; nothing was changed, try again", name, attempt), err: err}
			}
			// The addressed node may not have applied the write that
			// won yet: give it a moment before reading again.
			select {
			case <-cmd.Context().Done():
				return &cliError{code: exitError, msg: "pool set: interrupted", err: cmd.Context().Err()}
			case <-time.After(time.Duration(attempt) * 100 * time.Millisecond):
			}
		}
		lines := planLines(plan)
		if a.jsonOutput() {
			return a.printJSON(map[string]any{"pool": name, "changes": lines, "index": resp.GetIndex()})
		}
		for _, l := range lines {
			fmt.Fprintln(a.stdout, l)
		}
		_, err := fmt.Fprintf(a.stdout, "pool %s updated (index %d)\n", name, resp.GetIndex())
		return err
	}
	return cmd
}

// planLines is a plan's text, one change per element.
func planLines(p fsm.Plan) []string {
	s := strings.TrimSuffix(p.String(), "\n")
	if s == "" {
		return []string{}
	}
	return strings.Split(s, "\n")
}

// poolField is one setting of fsm.PoolSpec that pool set can change and
// pool show prints. The list is read from the struct and its yaml tags, so
// a setting added to the schema gets its flag without a second definition.
type poolField struct {
	path  string // yaml path: "health.interval"
	flag  string // "health-interval"
	index []int  // field index in fsm.PoolSpec
	typ   reflect.Type
}

// poolFieldHelp explains the flags; a field missing here gets a generic text.
var poolFieldHelp = map[string]string{
	"prefix":               "path prefix the pool serves (/ or /seg[/seg])",
	"sticky.query":         `query parameter the sticky value is read from ("" for none)`,
	"sticky.cookie":        `cookie the sticky value is read from ("" for none)`,
	"sticky.insert":        "set the sticky cookie when the route is assigned or changes",
	"cookie.path":          "Path of the inserted cookie",
	"cookie.domain":        `Domain of the inserted cookie ("" for none)`,
	"cookie.max_age":       "Max-Age of the inserted cookie in seconds (0: a session cookie)",
	"cookie.secure":        "Secure attribute of the inserted cookie",
	"cookie.http_only":     "HttpOnly attribute of the inserted cookie",
	"cookie.same_site":     `SameSite of the inserted cookie: Lax, Strict, None (needs --cookie-secure) or ""`,
	"fail_timeout":         "local quarantine of a member after a connection failure (0s: off)",
	"health.path":          "probe URL path",
	"health.interval":      "time between probes",
	"health.timeout":       "timeout of one probe",
	"health.rise":          "consecutive successes before a node sees a member up (1..100)",
	"health.fall":          "consecutive failures before a node sees a member down (1..100)",
	"health.expect_status": "HTTP status of a healthy answer",
	"health.flap_limit":    "verdict flips within --health-flap-window that hold a member down (0: off)",
	"health.flap_window":   "window in which verdict flips are counted",
	"health.hold_down":     "how long a flapping member is held down",
}

var durationType = reflect.TypeFor[time.Duration]()

// poolFields lists the settings of fsm.PoolSpec (not name and members), in
// struct order.
func poolFields() []poolField {
	var out []poolField
	var walk func(t reflect.Type, prefix string, index []int)
	walk = func(t reflect.Type, prefix string, index []int) {
		for i := range t.NumField() {
			sf := t.Field(i)
			tag, _, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
			if tag == "" || tag == "-" || (prefix == "" && (tag == "name" || tag == "members")) {
				continue
			}
			idx := append(append([]int(nil), index...), i)
			if sf.Type.Kind() == reflect.Struct {
				walk(sf.Type, prefix+tag+".", idx)
				continue
			}
			path := prefix + tag
			out = append(out, poolField{path: path, flag: strings.NewReplacer(".", "-", "_", "-").Replace(path), index: idx, typ: sf.Type})
		}
	}
	walk(reflect.TypeFor[fsm.PoolSpec](), "", nil)
	return out
}

// register adds the field's flag to fs.
func (f poolField) register(fs *pflag.FlagSet) {
	help := poolFieldHelp[f.path]
	if help == "" {
		help = "set " + f.path
	}
	switch {
	case f.typ == durationType || f.typ == reflect.PointerTo(durationType):
		fs.Duration(f.flag, 0, help)
	case f.typ.Kind() == reflect.String:
		fs.String(f.flag, "", help)
	case f.typ.Kind() == reflect.Bool:
		fs.Bool(f.flag, false, help)
	case f.typ.Kind() == reflect.Int:
		fs.Int(f.flag, 0, help)
	default:
		panic(fmt.Sprintf("gwelbctl: pool setting %s: type %s has no flag kind", f.path, f.typ))
	}
}

// set stores the flag's value in v, the field.
func (f poolField) set(fs *pflag.FlagSet, v reflect.Value) error {
	var err error
	switch {
	case f.typ == durationType || f.typ == reflect.PointerTo(durationType):
		var d time.Duration
		if d, err = fs.GetDuration(f.flag); err == nil {
			if v.Kind() == reflect.Pointer {
				v.Set(reflect.ValueOf(&d))
			} else {
				v.SetInt(int64(d))
			}
		}
	case f.typ.Kind() == reflect.String:
		var s string
		if s, err = fs.GetString(f.flag); err == nil {
			v.SetString(s)
		}
	case f.typ.Kind() == reflect.Bool:
		var b bool
		if b, err = fs.GetBool(f.flag); err == nil {
			v.SetBool(b)
		}
	case f.typ.Kind() == reflect.Int:
		var n int
		if n, err = fs.GetInt(f.flag); err == nil {
			v.SetInt(int64(n))
		}
	}
	return err
}

// show prints the field's value for pool show.
func (f poolField) show(v reflect.Value) string {
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return "default"
		}
		v = v.Elem()
	}
	switch {
	case v.Type() == durationType:
		return time.Duration(v.Int()).String()
	case v.Kind() == reflect.String:
		if v.String() == "" {
			return `""`
		}
		return v.String()
	}
	return fmt.Sprint(v.Interface())
}
