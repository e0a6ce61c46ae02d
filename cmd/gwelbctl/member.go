package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gwelb/gwelb/fsm"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

func (a *app) memberCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "member",
		Short: "List and change the members (GWE servers) of the pools",
		RunE:  groupRunE,
	}
	cmd.AddCommand(
		a.memberListCmd(),
		a.memberAddCmd(),
		a.memberSetWeightCmd(),
		a.memberRemoveCmd(),
		a.memberStateCmd("drain", gwelbv1.AdminState_ADMIN_STATE_DRAIN,
			"Drain a member: it keeps its sticky sessions but gets no new ones"),
		a.memberStateCmd("disable", gwelbv1.AdminState_ADMIN_STATE_DISABLED,
			"Disable a member: it gets nothing and its sessions fail over"),
		a.memberStateCmd("enable", gwelbv1.AdminState_ADMIN_STATE_ACTIVE,
			"Enable a member: it gets sticky and new sessions again"),
	)
	return cmd
}

func (a *app) memberListCmd() *cobra.Command {
	var pool string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the members of every pool, or of one",
		Long: `List the members of every pool, or of one (--pool), as the addressed node
sees them. An unknown --pool exits with code 6. With -o json, prints a JSON
array of MemberStatus objects.`,
		Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := a.status(cmd)
			if err != nil {
				return err
			}
			var pools []*gwelbv1.PoolStatus
			for _, p := range st.GetPools() {
				if pool == "" || p.GetPool().GetName() == pool {
					pools = append(pools, p)
				}
			}
			if pool != "" && len(pools) == 0 {
				return &cliError{code: exitNotFound, msg: fmt.Sprintf("pool %q not found", pool)}
			}
			if a.jsonOutput() {
				var members []*gwelbv1.MemberStatus
				for _, p := range pools {
					members = append(members, p.GetMembers()...)
				}
				return printProtoList(a, members)
			}
			now := a.env.now()
			t := newTable(a.stdout, "POOL", "ROUTE", "URL", "WEIGHT", "STATE", "VERDICT", "IN-FLIGHT")
			for _, p := range pools {
				for _, ms := range p.GetMembers() {
					m := ms.GetMember()
					t.row(p.GetPool().GetName(), m.GetRoute(), m.GetUrl(), strconv.Itoa(int(m.GetWeight())),
						stateName(m.GetState()), verdict(now, m), strconv.FormatInt(ms.GetInFlight(), 10))
				}
			}
			return t.flush()
		},
	}
	cmd.Flags().StringVar(&pool, "pool", "", "list only this pool's members")
	return cmd
}

func (a *app) memberAddCmd() *cobra.Command {
	var (
		weight int32
		state  string
		update bool
	)
	cmd := &cobra.Command{
		Use:   "add POOL ROUTE URL",
		Short: "Add a member to a pool (--update: change its URL or weight)",
		Long: `Add a member to a pool. ROUTE is the name a sticky value carries after its
first "." (e.g. GWE_Frontend_103 for ".GWE_Frontend_103"); URL is the GWE
server's base URL (http or https).

A route the pool already has is refused, and the member is left as it is:
with --update, add changes the URL and weight of that member instead. The
admin state of an existing member is never changed by add: drain, disable
and enable do that. --state sets the admin state of a new member.`,
		Example: `  gwelbctl member add frontend GWE_Frontend_103 http://GWE_HOST:9081 --weight 2
  gwelbctl member add frontend GWE_Frontend_103 http://GWE_HOST2:9081 --update`,
		Args: args("POOL", "ROUTE", "URL"),
		RunE: func(cmd *cobra.Command, argv []string) error {
			pool, route, rawURL := argv[0], argv[1], argv[2]
			f := cmd.Flags()
			st, err := fsm.ParseAdminState(state)
			if err != nil {
				return usagef("invalid --state %q: want active, drain or disabled", state)
			}
			if update && f.Changed("state") {
				return usagef("--state with --update: add never changes the admin state of a member; use member drain, disable or enable")
			}
			mode := gwelbv1.PutMemberMode_PUT_MEMBER_MODE_CREATE
			if update {
				mode = gwelbv1.PutMemberMode_PUT_MEMBER_MODE_UPDATE
				if !f.Changed("weight") {
					weight = 0 // the member keeps its weight
				}
			}
			// The cluster's own validator, so a bad member fails here, before
			// anything is sent, with the message the cluster would give.
			spec := fsm.MemberSpec{Route: route, URL: rawURL, Weight: int(weight), State: st}
			if err := checkMemberSpec(pool, spec, !update); err != nil {
				return err
			}
			req := &gwelbv1.PutMemberRequest{
				Member:    &gwelbv1.Member{Pool: pool, Route: route, Url: rawURL, Weight: weight, State: st.Proto()},
				RequestId: requestID(),
				Mode:      mode,
			}
			resp, err := unary(a, cmd, "member add", func(ctx context.Context, c gwelbv1.AdminClient) (*gwelbv1.WriteResponse, error) {
				return c.PutMember(ctx, req)
			})
			if status.Code(errors.Unwrap(err)) == codes.AlreadyExists {
				return &cliError{code: exitError, err: err, msg: fmt.Sprintf(
					"member %s already exists; it was not changed: use --update to change its URL or weight (drain, disable and enable change its admin state)", memberName(pool, route))}
			}
			if err != nil {
				return err
			}
			if update {
				if weight == 0 {
					return a.printWrite(resp, "member %s updated (%s; weight and admin state kept)", memberName(pool, route), rawURL)
				}
				return a.printWrite(resp, "member %s updated (%s, weight %d; admin state kept)", memberName(pool, route), rawURL, weight)
			}
			return a.printWrite(resp, "member %s added (%s, weight %d, %s)", memberName(pool, route), rawURL, weight, st)
		},
	}
	cmd.Flags().Int32Var(&weight, "weight", 1, "relative share of new sessions, 1..1000 (with --update: kept unless given)")
	cmd.Flags().StringVar(&state, "state", "active", "admin state of the new member: active, drain or disabled")
	cmd.Flags().BoolVar(&update, "update", false, "change the URL and weight of an existing member (its admin state is kept)")
	return cmd
}

func (a *app) memberSetWeightCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "set-weight POOL ROUTE WEIGHT",
		Short: "Change a member's weight (its share of new sessions)",
		Long: `Change a member's weight, 1..1000: its share of new sessions (sticky sessions
stay where they are). URL and admin state are kept. To give a member no new
sessions, drain it. An unknown member exits with code 6.`,
		Example: "  gwelbctl member set-weight backend 2 3",
		Args:    args("POOL", "ROUTE", "WEIGHT"),
		RunE: func(cmd *cobra.Command, argv []string) error {
			pool, route := argv[0], argv[1]
			w, err := strconv.ParseInt(argv[2], 10, 32)
			if err != nil {
				return usagef("invalid WEIGHT %q: want a whole number 1..1000", argv[2])
			}
			if err := checkMemberSpec(pool, fsm.MemberSpec{Route: route, Weight: int(w)}, true); err != nil {
				return err
			}
			req := &gwelbv1.PutMemberRequest{
				Member:    &gwelbv1.Member{Pool: pool, Route: route, Weight: int32(w)},
				RequestId: requestID(),
				Mode:      gwelbv1.PutMemberMode_PUT_MEMBER_MODE_UPDATE,
			}
			resp, err := unary(a, cmd, "member set-weight", func(ctx context.Context, c gwelbv1.AdminClient) (*gwelbv1.WriteResponse, error) {
				return c.PutMember(ctx, req)
			})
			if err != nil {
				return err
			}
			return a.printWrite(resp, "member %s weight is now %d", memberName(pool, route), w)
		},
	}
}

// checkMemberSpec judges a member with the cluster's validator before
// anything is sent, in the cluster's words (exit 1). A weight of 0 is
// refused where it is given (wantWeight): the API would read it as unset,
// and store 1. A spec without URL (set-weight) is judged without one: the
// member keeps its own.
func checkMemberSpec(pool string, m fsm.MemberSpec, wantWeight bool) error {
	var msgs []string
	if wantWeight && m.Weight == 0 {
		msgs = append(msgs, fmt.Sprintf("weight 0: want 1..%d (to give a member no new sessions, drain it: gwelbctl member drain)", fsm.MaxWeight))
	}
	var probs fsm.Problems
	if err := fsm.ValidateMember(m); errors.As(err, &probs) {
		for _, p := range probs {
			if p.Path != "url" || m.URL != "" {
				msgs = append(msgs, p.Error())
			}
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	return &cliError{code: exitError, msg: fmt.Sprintf("put member %s/%s: %s", pool, m.Route, strings.Join(msgs, "; "))}
}

func (a *app) memberRemoveCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "remove POOL ROUTE",
		Short: "Remove a member from a pool",
		Long:  "Remove a member from a pool; its sessions fail over. An unknown member exits with code 6.",
		Args:  args("POOL", "ROUTE"),
		RunE: func(cmd *cobra.Command, argv []string) error {
			req := &gwelbv1.RemoveMemberRequest{Pool: argv[0], Route: argv[1], RequestId: requestID()}
			resp, err := unary(a, cmd, "member remove", func(ctx context.Context, c gwelbv1.AdminClient) (*gwelbv1.WriteResponse, error) {
				return c.RemoveMember(ctx, req)
			})
			if err != nil {
				return err
			}
			return a.printWrite(resp, "member %s removed", memberName(argv[0], argv[1]))
		},
	}
}

// memberStateCmd builds drain, disable and enable.
func (a *app) memberStateCmd(verb string, state gwelbv1.AdminState, short string) *cobra.Command {
	return &cobra.Command{
		Use:   verb + " POOL ROUTE",
		Short: short,
		Long:  short + ". An unknown member exits with code 6.",
		Args:  args("POOL", "ROUTE"),
		RunE: func(cmd *cobra.Command, argv []string) error {
			req := &gwelbv1.SetMemberStateRequest{Pool: argv[0], Route: argv[1], State: state, RequestId: requestID()}
			resp, err := unary(a, cmd, "member "+verb, func(ctx context.Context, c gwelbv1.AdminClient) (*gwelbv1.WriteResponse, error) {
				return c.SetMemberState(ctx, req)
			})
			if err != nil {
				return err
			}
			return a.printWrite(resp, "member %s is now %s", memberName(argv[0], argv[1]), stateName(state))
		},
	}
}

// printWrite prints the answer to a write: the message and the Raft index
// in table mode, the WriteResponse with -o json.
func (a *app) printWrite(resp *gwelbv1.WriteResponse, format string, args ...any) error {
	if a.jsonOutput() {
		return a.printProto(resp)
	}
	_, err := fmt.Fprintf(a.stdout, format+" (index %d)\n", append(args, resp.GetIndex())...)
	return err
}

// requestID returns a fresh idempotency key for a write: 8 random bytes in
// hex. The key stays the same if the server retries internally.
func requestID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}
