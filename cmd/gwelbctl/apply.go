package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"gopkg.in/yaml.v3"

	"github.com/gwelb/gwelb/fsm"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

func (a *app) applyCmd() *cobra.Command {
	var (
		file   string
		dryRun bool
		force  bool
	)
	cmd := &cobra.Command{
		Use:   "apply -f FILE [--dry-run] [--force]",
		Short: "Make the replicated pools and members match a config file's",
		Long: `Make the cluster's pools and members match the pools: of a gwelb config file
(a node's config, or a file with only pools:). This is the one explicit way
an edit of the YAML reaches a running cluster: after the first bootstrap
the file seeds nothing (README "Seed").

The file is judged by the cluster's validator first. Then the plan is
printed, like kubectl diff: "+" added, "~" changed (old -> new), "-"
removed. Pools are compared setting by setting with defaults filled in, so
a setting left out equals its default. Members are compared by URL and
weight: a member's admin state is operational (drain, disable, enable) and
is kept; a new member takes the file's state.

A plan that removes every member of a pool (or a pool with members) is
refused unless --force: it is what a truncated or wrong file looks like.
Then, unless --dry-run, the changes are applied through the addressed node:
pools first, then members, removals last. Each applied change is printed
with its Raft index. A change that fails stops the run (the exit code says
why); what was applied stays, and running apply again continues. A pool
changed by another writer after the plan was read is not overwritten: the
change is a compare-and-set on the settings the plan shows as old, so apply
stops there, and running it again plans from the new settings.`,
		Example: `  gwelbctl apply -f deploy/local/n1.yaml --dry-run
  gwelbctl apply -f n1.yaml`,
		Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return usagef("missing -f FILE (a gwelb config file with pools:)")
			}
			want, err := loadPools(file)
			if err != nil {
				return err
			}
			st, err := a.status(cmd)
			if err != nil {
				return err
			}
			plan := fsm.PlanChanges(statusPools(st), want)
			if a.env.planned != nil {
				a.env.planned()
			}
			return a.runPlan(cmd, plan, dryRun, force)
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "gwelb config file whose pools: the cluster should have")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print the plan and change nothing")
	cmd.Flags().BoolVar(&force, "force", false, "apply a plan that removes every member of a pool")
	return cmd
}

// loadPools reads the pools: of a config file, decoded into fsm.PoolSpec
// as the agent decodes them (the yaml tags of fsm.PoolSpec are the schema;
// an unknown key inside a pool is an error, the rest of a node's config is
// ignored), and judged by fsm.ValidatePools.
func loadPools(path string) ([]fsm.PoolSpec, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &cliError{code: exitError, msg: fmt.Sprintf("read %s: %v", path, err), err: err}
	}
	var doc struct {
		Pools []fsm.PoolSpec `yaml:"pools"`
		// The rest of a node's config: not ours to judge (gwelb validate does).
		Rest map[string]yaml.Node `yaml:",inline"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return nil, &cliError{code: exitError, msg: fmt.Sprintf("%s: %v", path, oneLine(err.Error())), err: err}
	}
	if len(doc.Pools) == 0 {
		return nil, &cliError{code: exitError, msg: fmt.Sprintf("%s: no pools: apply wants the pools the cluster should have (to remove a pool, leave it out of a file that lists the others)", path)}
	}
	if err := fsm.ValidatePools(doc.Pools); err != nil {
		return nil, &cliError{code: exitError, msg: fmt.Sprintf("%s: %s; nothing was applied", path, strings.ReplaceAll(err.Error(), "\n", "; ")), err: err}
	}
	return doc.Pools, nil
}

// statusPools is the replicated pools with their members, as a Status
// answer shows them.
func statusPools(st *gwelbv1.StatusResponse) []fsm.PoolSpec {
	var out []fsm.PoolSpec
	for _, ps := range st.GetPools() {
		p := fsm.PoolFromProto(ps.GetPool())
		for _, ms := range ps.GetMembers() {
			p.Members = append(p.Members, fsm.MemberFromProto(ms.GetMember()))
		}
		out = append(out, p)
	}
	return out
}

// applyStep is one admin RPC of a plan: the plan lines it carries out.
type applyStep struct {
	RPC   string   `json:"rpc"`
	Lines []string `json:"changes"`
	Index uint64   `json:"index"` // 0 until applied: every field is always present (-o json)
	call  func(context.Context, gwelbv1.AdminClient) (*gwelbv1.WriteResponse, error)
}

// planSteps orders a plan as apply runs it: pools added and changed, then
// members added and changed, then members removed, then pools removed; a
// new pool exists before its members and a pool is emptied of what the
// file removes before it goes.
func planSteps(plan fsm.Plan) []applyStep {
	var puts, members, removals, poolRemovals []applyStep
	for _, pc := range plan.Pools {
		one := fsm.Plan{Pools: []fsm.PoolChange{pc}}
		lines := planLines(one)
		switch pc.Op {
		case fsm.OpRemove:
			req := &gwelbv1.RemovePoolRequest{Name: pc.Pool.Name, RequestId: requestID()}
			poolRemovals = append(poolRemovals, applyStep{RPC: "RemovePool", Lines: lines, call: func(ctx context.Context, c gwelbv1.AdminClient) (*gwelbv1.WriteResponse, error) {
				return c.RemovePool(ctx, req)
			}})
		default:
			req := &gwelbv1.PutPoolRequest{Pool: fsm.PoolToProto(pc.Pool), RequestId: requestID()}
			if pc.Op == fsm.OpChange {
				// Compare-and-set: the settings the printed plan read.
				req.Expected = fsm.PoolToProto(pc.Was)
			}
			puts = append(puts, applyStep{RPC: "PutPool", Lines: lines, call: func(ctx context.Context, c gwelbv1.AdminClient) (*gwelbv1.WriteResponse, error) {
				return c.PutPool(ctx, req)
			}})
		}
	}
	for _, mc := range plan.Members {
		lines := planLines(fsm.Plan{Members: []fsm.MemberChange{mc}})
		m := mc.Member
		switch mc.Op {
		case fsm.OpRemove:
			req := &gwelbv1.RemoveMemberRequest{Pool: mc.Pool, Route: m.Route, RequestId: requestID()}
			removals = append(removals, applyStep{RPC: "RemoveMember", Lines: lines, call: func(ctx context.Context, c gwelbv1.AdminClient) (*gwelbv1.WriteResponse, error) {
				return c.RemoveMember(ctx, req)
			}})
		case fsm.OpAdd:
			// CREATE: should someone add the route meanwhile, it is refused
			// rather than overwritten (and its admin state reset).
			req := &gwelbv1.PutMemberRequest{Member: fsm.MemberToProto(mc.Pool, m), RequestId: requestID(), Mode: gwelbv1.PutMemberMode_PUT_MEMBER_MODE_CREATE}
			members = append(members, applyStep{RPC: "PutMember", Lines: lines, call: func(ctx context.Context, c gwelbv1.AdminClient) (*gwelbv1.WriteResponse, error) {
				return c.PutMember(ctx, req)
			}})
		case fsm.OpChange:
			// UPDATE: URL and weight; the admin state is the member's own.
			req := &gwelbv1.PutMemberRequest{
				Member:    &gwelbv1.Member{Pool: mc.Pool, Route: m.Route, Url: m.URL, Weight: int32(m.Weight)},
				RequestId: requestID(),
				Mode:      gwelbv1.PutMemberMode_PUT_MEMBER_MODE_UPDATE,
			}
			members = append(members, applyStep{RPC: "PutMember", Lines: lines, call: func(ctx context.Context, c gwelbv1.AdminClient) (*gwelbv1.WriteResponse, error) {
				return c.PutMember(ctx, req)
			}})
		}
	}
	// A pool that takes the prefix of a pool the plan removes (a rename)
	// can only exist once the other is gone: that removal goes first.
	taken := map[string]bool{}
	for _, pc := range plan.Pools {
		if pc.Op != fsm.OpRemove {
			taken[pc.Pool.Prefix] = true
		}
	}
	var first, last []applyStep
	for i, pc := range poolChanges(plan, fsm.OpRemove) {
		if taken[pc.Pool.Prefix] {
			first = append(first, poolRemovals[i])
		} else {
			last = append(last, poolRemovals[i])
		}
	}
	return append(append(append(append(first, puts...), members...), removals...), last...)
}

// poolChanges returns the pool changes of plan with the given op, in order.
func poolChanges(plan fsm.Plan, op fsm.ChangeOp) []fsm.PoolChange {
	var out []fsm.PoolChange
	for _, pc := range plan.Pools {
		if pc.Op == op {
			out = append(out, pc)
		}
	}
	return out
}

// runPlan prints plan and, unless dryRun, applies it.
func (a *app) runPlan(cmd *cobra.Command, plan fsm.Plan, dryRun, force bool) error {
	steps := planSteps(plan)
	if !a.jsonOutput() {
		if plan.Empty() {
			_, err := fmt.Fprintln(a.stdout, "no changes: the cluster's pools and members match the file")
			return err
		}
		fmt.Fprint(a.stdout, plan.String())
	}
	if len(plan.Emptied) > 0 && !force {
		return &cliError{code: exitError, msg: fmt.Sprintf(
			"refused: the plan removes every member of pool %s (its visitors would get 503 or 404); check the file, or apply it with --force; nothing was applied",
			strings.Join(plan.Emptied, ", "))}
	}
	if dryRun || plan.Empty() {
		if a.jsonOutput() {
			return a.printJSON(map[string]any{"dry_run": dryRun, "steps": nonNil(steps), "applied": 0})
		}
		_, err := fmt.Fprintf(a.stdout, "dry run: %d change(s) planned, nothing applied\n", len(steps))
		return err
	}
	n, err := a.connect()
	if err != nil {
		return err
	}
	defer n.close()
	applied := 0
	for i := range steps {
		s := &steps[i]
		ctx, cancel := a.callContext(cmd)
		resp, err := s.call(ctx, n.api)
		cancel()
		if err != nil {
			conflict := status.Code(err) == codes.Aborted
			err = n.fail("apply: "+strings.Join(s.Lines, "; "), err)
			var ce *cliError
			if errors.As(err, &ce) {
				if conflict {
					ce.msg += "; another writer changed the pool after this plan was read, and its change stays"
				}
				ce.msg += fmt.Sprintf(" (%d of %d changes applied; run apply again to continue)", applied, len(steps))
			}
			if a.jsonOutput() {
				_ = a.printJSON(map[string]any{"dry_run": false, "steps": steps[:applied], "applied": applied})
			}
			return err
		}
		s.Index = resp.GetIndex()
		applied++
		if !a.jsonOutput() {
			fmt.Fprintf(a.stdout, "applied: %s (index %d)\n", strings.Join(s.Lines, "; "), s.Index)
		}
	}
	if a.jsonOutput() {
		return a.printJSON(map[string]any{"dry_run": false, "steps": steps, "applied": applied})
	}
	_, err = fmt.Fprintf(a.stdout, "%d change(s) applied\n", applied)
	return err
}

// nonNil makes a nil slice print as [] in JSON.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
