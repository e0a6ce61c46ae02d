package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

func (a *app) joinCmd() *cobra.Command {
	var nonVoter bool
	cmd := &cobra.Command{
		Use:   "join ADDR...",
		Short: "Make the node gossip-join other nodes",
		Long: `Make the addressed node join the cluster through the nodes at the given
gossip addresses (host:port of their gossip listener, not their gRPC address).

With --non-voter the node joins as a Raft non-voter (recorded in its
data_dir, as voter: false in its config would): it routes from the replicated
table and forwards writes, but neither votes nor probes, and the leader
removes it once it has been failed longer than non_voter_reap. A node that is
a voter already stays one.`,
		Example: "  gwelbctl --addr NEW_NODE_IP:7001 join NODE1_IP:7201 NODE2_IP:7201\n  gwelbctl --addr SITE_NODE_IP:7001 join --non-voter NODE1_IP:7201",
		Args: func(_ *cobra.Command, argv []string) error {
			if len(argv) == 0 {
				return usagef("missing argument ADDR")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, argv []string) error {
			resp, err := unary(a, cmd, "join", func(ctx context.Context, c gwelbv1.AdminClient) (*gwelbv1.JoinResponse, error) {
				return c.Join(ctx, &gwelbv1.JoinRequest{Addrs: argv, NonVoter: nonVoter})
			})
			if err != nil {
				return err
			}
			if a.jsonOutput() {
				return a.printProto(resp)
			}
			suffrage := ""
			if nonVoter {
				suffrage = " as a non-voter"
			}
			_, err = fmt.Fprintf(a.stdout, "joined %d of %d node(s)%s\n", resp.GetJoined(), len(argv), suffrage)
			return err
		},
	}
	cmd.Flags().BoolVar(&nonVoter, "non-voter", false, "join as a Raft non-voter (routes and forwards writes; no vote, no probes)")
	return cmd
}

func (a *app) leaveCmd() *cobra.Command {
	var node string
	cmd := &cobra.Command{
		Use:   "leave",
		Short: "Make the node leave the cluster, or remove a failed node",
		Long: `Without --node, the addressed node leaves the cluster gracefully (it is
removed from the Raft configuration and stops gossiping).

With --node NAME, the addressed node has the failed node NAME removed from the
Raft configuration; use it for a node that died and will not come back. An
unknown NAME exits with code 6.`,
		Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := unary(a, cmd, "leave", func(ctx context.Context, c gwelbv1.AdminClient) (*gwelbv1.LeaveResponse, error) {
				return c.Leave(ctx, &gwelbv1.LeaveRequest{Node: node})
			})
			if err != nil {
				return err
			}
			if a.jsonOutput() {
				return a.printProto(resp)
			}
			if node == "" {
				_, err = fmt.Fprintf(a.stdout, "node at %s left the cluster\n", a.addr)
			} else {
				_, err = fmt.Fprintf(a.stdout, "node %s removed from the cluster\n", node)
			}
			return err
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "force-remove this (failed) node instead of leaving")
	return cmd
}
