package main

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/spf13/cobra"

	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

func (a *app) routeCmd() *cobra.Command {
	var allNodes bool
	cmd := &cobra.Command{
		Use:   "route POOL VALUE",
		Short: "Show which member a node picks for a sticky value",
		Long: `Show which member the addressed node would pick for a sticky value, as a
client would send it (".GWE_Frontend_103", "abc.2"; "" for none), and why:
sticky, fallback, round_robin or none.

With --all-nodes, asks every alive gossip member that advertises a gRPC
address, concurrently, and prints one row per node. If the routes chosen
differ, prints a DISAGREEMENT line and exits with code 7. Nodes at different
table indexes may legitimately disagree until they catch up: compare the
INDEX column. If no node disagrees but some did not answer, exits with 1.
With -o json, --all-nodes prints a JSON array of
{node, addr, table_index, route, url, reason, error}.`,
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
			t := newTable(a.stdout, "NODE", "INDEX", "ROUTE", "URL", "REASON")
			t.row(resp.GetNode(), strconv.FormatUint(resp.GetTableIndex(), 10), resp.GetRoute(), resp.GetUrl(), resp.GetReason())
			return t.flush()
		},
	}
	cmd.Flags().BoolVar(&allNodes, "all-nodes", false, "ask every alive node and compare their answers")
	return cmd
}

// nodeRoute is one node's answer in route --all-nodes.
type nodeRoute struct {
	Node       string `json:"node"`
	Addr       string `json:"addr"`
	TableIndex uint64 `json:"table_index"`
	Route      string `json:"route"`
	URL        string `json:"url"`
	Reason     string `json:"reason"`
	Error      string `json:"error,omitempty"`
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
			rows = append(rows, &nodeRoute{Node: m.GetName(), Addr: m.GetGrpcAddr()})
		}
	}
	if len(rows) == 0 {
		// A node without gossip peers (e.g. -dev) answers for itself.
		rows = append(rows, &nodeRoute{Node: st.GetNode(), Addr: a.addr})
	}

	ctx, cancel := a.callContext(cmd)
	defer cancel()
	var wg sync.WaitGroup
	for _, r := range rows {
		wg.Go(func() { a.routeOne(ctx, r, req) })
	}
	wg.Wait()
	sort.Slice(rows, func(i, j int) bool { return rows[i].Node < rows[j].Node })

	if a.jsonOutput() {
		if err := a.printJSON(rows); err != nil {
			return err
		}
	} else {
		t := newTable(a.stdout, "NODE", "ADDR", "INDEX", "ROUTE", "URL", "REASON", "ERROR")
		for _, r := range rows {
			index := ""
			if r.Error == "" {
				index = strconv.FormatUint(r.TableIndex, 10)
			}
			t.row(r.Node, r.Addr, index, r.Route, r.URL, r.Reason, r.Error)
		}
		if err := t.flush(); err != nil {
			return err
		}
	}

	var answered, failed []*nodeRoute
	for _, r := range rows {
		if r.Error == "" {
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
	n, err := a.dial(r.Addr)
	if err != nil {
		r.Error = err.Error()
		return
	}
	defer n.close()
	resp, err := n.api.Route(ctx, req)
	if err != nil {
		r.Error = n.fail("route", err).Error()
		return
	}
	if resp.GetNode() != "" {
		r.Node = resp.GetNode()
	}
	r.TableIndex = resp.GetTableIndex()
	r.Route = resp.GetRoute()
	r.URL = resp.GetUrl()
	r.Reason = resp.GetReason()
}

// disagreement returns the DISAGREEMENT line when the nodes chose different
// routes, or "".
func disagreement(rows []*nodeRoute) string {
	if len(rows) < 2 {
		return ""
	}
	same, sameIndex := true, true
	for _, r := range rows[1:] {
		same = same && r.Route == rows[0].Route
		sameIndex = sameIndex && r.TableIndex == rows[0].TableIndex
	}
	if same {
		return ""
	}
	parts := make([]string, 0, len(rows))
	for _, r := range rows {
		route := r.Route
		if route == "" {
			route = "(none)"
		}
		parts = append(parts, fmt.Sprintf("%s -> %s at index %d", r.Node, route, r.TableIndex))
	}
	line := "DISAGREEMENT: " + strings.Join(parts, "; ")
	if !sameIndex {
		line += " (table indexes differ: nodes may still be catching up)"
	}
	return line
}
