package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

func (a *app) raftCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "raft",
		Short: "Inspect and steer the Raft group of the balancer nodes",
		RunE:  groupRunE,
	}
	cmd.AddCommand(a.raftPeersCmd(), a.raftTransferCmd())
	return cmd
}

func (a *app) raftPeersCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "peers",
		Short: "List the Raft peers",
		Long:  "List the Raft peers as the addressed node sees them. With -o json, prints a JSON array of RaftPeer objects.",
		Args:  args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := a.status(cmd)
			if err != nil {
				return err
			}
			if a.jsonOutput() {
				return printProtoList(a, st.GetPeers())
			}
			return a.printPeers(st.GetPeers())
		},
	}
}

func (a *app) raftTransferCmd() *cobra.Command {
	var node string
	cmd := &cobra.Command{
		Use:   "transfer-leader",
		Short: "Hand Raft leadership to another voter",
		Long: `Hand Raft leadership to another voter: to --node, or to one Raft chooses.
An unknown --node exits with code 6.`,
		Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := unary(a, cmd, "raft transfer-leader", func(ctx context.Context, c gwelbv1.AdminClient) (*gwelbv1.TransferLeadershipResponse, error) {
				return c.TransferLeadership(ctx, &gwelbv1.TransferLeadershipRequest{Node: node})
			})
			if err != nil {
				return err
			}
			if a.jsonOutput() {
				return a.printProto(resp)
			}
			_, err = fmt.Fprintf(a.stdout, "leadership transferred to %s\n", resp.GetLeader())
			return err
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "node to hand leadership to (default: Raft chooses)")
	return cmd
}
