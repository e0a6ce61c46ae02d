package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

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
	)
	cmd := &cobra.Command{
		Use:   "add POOL ROUTE URL",
		Short: "Add a member to a pool, or replace it",
		Long: `Add a member to a pool, or replace the member of that route. ROUTE is the
name a sticky value carries after its first "." (e.g. GWE_Frontend_103 for
".GWE_Frontend_103"); URL is the GWE server's base URL (http or https).`,
		Example: "  gwelbctl member add frontend GWE_Frontend_103 http://GWE_HOST:9081 --weight 2",
		Args:    args("POOL", "ROUTE", "URL"),
		RunE: func(cmd *cobra.Command, argv []string) error {
			pool, route, rawURL := argv[0], argv[1], argv[2]
			st, err := fsm.ParseAdminState(state)
			if err != nil {
				return usagef("invalid --state %q: want active, drain or disabled", state)
			}
			// The cluster's own validator, so a bad member fails here, before
			// anything is sent, with the message the cluster would give.
			spec := fsm.MemberSpec{Route: route, URL: rawURL, Weight: int(weight), State: st}.WithDefaults()
			if err := fsm.ValidateMember(spec); err != nil {
				msg := fmt.Sprintf("put member %s/%s: %s", pool, route, strings.ReplaceAll(err.Error(), "\n", "; "))
				return &cliError{code: exitError, msg: msg, err: err}
			}
			req := &gwelbv1.PutMemberRequest{
				Member:    &gwelbv1.Member{Pool: pool, Route: route, Url: rawURL, Weight: int32(spec.Weight), State: st.Proto()},
				RequestId: requestID(),
			}
			resp, err := unary(a, cmd, "member add", func(ctx context.Context, c gwelbv1.AdminClient) (*gwelbv1.WriteResponse, error) {
				return c.PutMember(ctx, req)
			})
			if err != nil {
				return err
			}
			return a.printWrite(resp, "member %s added (%s, weight %d, %s)", memberName(pool, route), rawURL, spec.Weight, st)
		},
	}
	cmd.Flags().Int32Var(&weight, "weight", 1, "relative share of new sessions")
	cmd.Flags().StringVar(&state, "state", "active", "admin state: active, drain or disabled")
	return cmd
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
