package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

func (a *app) routeCmd() *cobra.Command {
	var allNodes bool
	cmd := &cobra.Command{
		Use:   "route POOL VALUE",
		Short: "Show which member a node picks for a sticky value",
		Long: `Show which member the addressed node's data plane would pick for a sticky
value, as a client would send it (".GWE_Frontend_103", "abc.2"; "" for
none), and why: sticky, fallback, round_robin or none. The answer is the
choice a request would get on that node, local quarantine included: a node
whose connection to a member just failed skips it for the pool's
fail_timeout (routing contract rule 8) while the others may still use it.
QUARANTINED lists the members the node skips so, with when it stops.

With --all-nodes, asks every alive gossip member that advertises a gRPC
address, concurrently, and prints one row per node. If the routes chosen
differ, prints a DISAGREEMENT line and exits with code 7. Nodes at different
table indexes may legitimately disagree until they catch up (compare the
INDEX column), and a node that quarantines a member locally sends its
sessions elsewhere until the quarantine ends (QUARANTINED). If no node
disagrees but some did not answer, exits with 1. With -o json, --all-nodes
prints a JSON array of the nodes' RouteResponse objects, each with two more
keys: addr and error ("" when the node answered).`,
		Example: `  gwelbctl route frontend .GWE_Frontend_103
  gwelbctl route backend .2 --all-nodes`,
		Args: args("POOL", "VALUE"),
		RunE: func(cmd *cobra.Command, argv []string) error {
			req := &gwelbv1.RouteRequest{Pool: argv[0], Value: argv[1]}
			if allNodes {
				return a.routeAllNodes(cmd, req)
			}
			resp, err := unary(a, cmd, "route", func(ctx context.Context, c gwelbv1.AdminClient) (*gwelbv1.RouteResponse, error) {
				return c.Route(ctx, req)
			})
			if err != nil {
				return err
			}
			if a.jsonOutput() {
				return a.printProto(resp)
			}
			t := newTable(a.stdout, "NODE", "INDEX", "ROUTE", "URL", "REASON", "QUARANTINED")
			t.row(resp.GetNode(), strconv.FormatUint(resp.GetTableIndex(), 10), resp.GetRoute(), resp.GetUrl(), resp.GetReason(),
				quarantines(resp.GetQuarantined(), false))
			return t.flush()
		},
	}
	cmd.Flags().BoolVar(&allNodes, "all-nodes", false, "ask every alive node and compare their answers")
	return cmd
}

// nodeRoute is one node's answer in route --all-nodes.
type nodeRoute struct {
	resp *gwelbv1.RouteResponse // what the node answered; only node set when it did not
	addr string
	err  string
}

// routeAllNodes asks every alive node for the route of req and compares.
func (a *app) routeAllNodes(cmd *cobra.Command, req *gwelbv1.RouteRequest) error {
	st, err := a.status(cmd)
	if err != nil {
		return err
	}
	var rows []*nodeRoute
	for _, m := range st.GetGossip() {
		if m.GetStatus() == "alive" && m.GetGrpcAddr() != "" {
			rows = append(rows, &nodeRoute{resp: &gwelbv1.RouteResponse{Node: m.GetName()}, addr: m.GetGrpcAddr()})
		}
	}
	if len(rows) == 0 {
		// A node without gossip peers (e.g. -dev) answers for itself.
		rows = append(rows, &nodeRoute{resp: &gwelbv1.RouteResponse{Node: st.GetNode()}, addr: a.addr})
	}

	ctx, cancel := a.callContext(cmd)
	defer cancel()
	var wg sync.WaitGroup
	for _, r := range rows {
		wg.Go(func() { a.routeOne(ctx, r, req) })
	}
	wg.Wait()
	sort.Slice(rows, func(i, j int) bool { return rows[i].resp.GetNode() < rows[j].resp.GetNode() })

	if a.jsonOutput() {
		items := make([]json.RawMessage, 0, len(rows))
		for _, r := range rows {
			raw, err := compactProto(r.resp, jsonField{"addr", r.addr}, jsonField{"error", r.err})
			if err != nil {
				return err
			}
			items = append(items, raw)
		}
		if err := a.printJSON(items); err != nil {
			return err
		}
	} else {
		t := newTable(a.stdout, "NODE", "ADDR", "INDEX", "ROUTE", "URL", "REASON", "QUARANTINED", "ERROR")
		for _, r := range rows {
			index := ""
			if r.err == "" {
				index = strconv.FormatUint(r.resp.GetTableIndex(), 10)
			}
			t.row(r.resp.GetNode(), r.addr, index, r.resp.GetRoute(), r.resp.GetUrl(), r.resp.GetReason(),
				quarantines(r.resp.GetQuarantined(), false), r.err)
		}
		if err := t.flush(); err != nil {
			return err
		}
	}

	var answered, failed []*nodeRoute
	for _, r := range rows {
		if r.err == "" {
			answered = append(answered, r)
		} else {
			failed = append(failed, r)
		}
	}
	if line := disagreement(answered); line != "" {
		if !a.jsonOutput() {
			fmt.Fprintln(a.stdout, line)
		}
		return &cliError{code: exitDisagreement, msg: fmt.Sprintf("nodes disagree on the route of %q in pool %s", req.GetValue(), req.GetPool())}
	}
	if len(failed) > 0 {
		return &cliError{code: exitError, msg: fmt.Sprintf("%d of %d nodes did not answer", len(failed), len(rows))}
	}
	return nil
}

// routeOne asks the node of r and fills r in.
func (a *app) routeOne(ctx context.Context, r *nodeRoute, req *gwelbv1.RouteRequest) {
	n, err := a.dial(r.addr)
	if err != nil {
		r.err = err.Error()
		return
	}
	defer n.close()
	resp, err := n.api.Route(ctx, req)
	if err != nil {
		r.err = n.fail("route", err).Error()
		return
	}
	if resp.GetNode() == "" {
		resp.Node = r.resp.GetNode()
	}
	r.resp = resp
}

// quarantines prints a node's local quarantines, e.g. "2 until
// 10:00:07Z (7s left)"; withNode names the node ("n1: 2 until ...").
func quarantines(qs []*gwelbv1.LocalQuarantine, withNode bool) string {
	parts := make([]string, 0, len(qs))
	for _, q := range qs {
		s := q.GetRoute()
		if withNode {
			s = q.GetNode()
		}
		s += " until " + time.Unix(0, q.GetUntilUnixNanos()).UTC().Format("15:04:05Z")
		s += " (" + fmtDuration(time.Duration(q.GetRemainingMs())*time.Millisecond) + " left)"
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}

// disagreement returns the DISAGREEMENT line when the nodes chose different
// routes, or "".
func disagreement(rows []*nodeRoute) string {
	if len(rows) < 2 {
		return ""
	}
	first := rows[0].resp
	same, sameIndex := true, true
	var quarantined []string
	for _, r := range rows {
		same = same && r.resp.GetRoute() == first.GetRoute()
		sameIndex = sameIndex && r.resp.GetTableIndex() == first.GetTableIndex()
		for _, q := range r.resp.GetQuarantined() {
			quarantined = append(quarantined, r.resp.GetNode()+" skips "+q.GetRoute())
		}
	}
	if same {
		return ""
	}
	parts := make([]string, 0, len(rows))
	for _, r := range rows {
		route := r.resp.GetRoute()
		if route == "" {
			route = "(none)"
		}
		parts = append(parts, fmt.Sprintf("%s -> %s at index %d", r.resp.GetNode(), route, r.resp.GetTableIndex()))
	}
	line := "DISAGREEMENT: " + strings.Join(parts, "; ")
	if !sameIndex {
		line += " (table indexes differ: nodes may still be catching up)"
	}
	if len(quarantined) > 0 {
		line += " (local quarantine after a connection failure: " + strings.Join(quarantined, ", ") + ")"
	}
	return line
}
