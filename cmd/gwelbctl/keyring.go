package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// keyringCmd is `gwelbctl keyring`, like `consul keyring`: the node at
// --addr applies each operation on every node alive in gossip and answers
// per node (docs/DESIGN.md §4).
func (a *app) keyringCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keyring",
		Short: "List and rotate the gossip encryption keys of every node",
		Long: `List and rotate the gossip encryption keys. The addressed node applies each
operation on every node alive in gossip and prints one line per node; a node
that did not apply it makes the command exit 1. Every node keeps its keys in
data_dir/keyring, which survives restarts (gossip_key only seeds it).

Rotation:
  gwelbctl keyring install NEWKEY   # every node accepts NEWKEY
  gwelbctl keyring use NEWKEY       # every node sends with NEWKEY
  gwelbctl keyring remove OLDKEY    # nobody accepts OLDKEY any more

Make a key with "gwelb keygen". use is refused unless every node has the key,
remove while any node sends with it; neither changes a node then. The keyring
commands need the read-write token.`,
		RunE: groupRunE,
	}
	cmd.AddCommand(
		a.keyringOpCmd("list", "", gwelbv1.KeyringOp_KEYRING_OP_LIST, "List the gossip keys of every node, the primary first"),
		a.keyringOpCmd("install", "KEY", gwelbv1.KeyringOp_KEYRING_OP_INSTALL, "Add a gossip key on every node; they accept it but keep sending with the primary"),
		a.keyringOpCmd("use", "KEY", gwelbv1.KeyringOp_KEYRING_OP_USE, "Make an installed gossip key the primary, the one every node sends with"),
		a.keyringOpCmd("remove", "KEY", gwelbv1.KeyringOp_KEYRING_OP_REMOVE, "Remove a gossip key from every node (never the primary)"),
	)
	return cmd
}

func (a *app) keyringOpCmd(name, arg string, op gwelbv1.KeyringOp, short string) *cobra.Command {
	use, want := name, []string{}
	if arg != "" {
		use, want = name+" "+arg, []string{arg}
	}
	return &cobra.Command{
		Use:   use,
		Short: short,
		Long:  short + ". With -o json, prints a JSON array of KeyringNodeResult objects, by node.",
		Args:  args(want...),
		RunE: func(cmd *cobra.Command, argv []string) error {
			req := &gwelbv1.KeyringRequest{Op: op}
			if arg != "" {
				k, err := base64.StdEncoding.DecodeString(argv[0])
				if err != nil {
					return usagef("invalid KEY: not base64 (make one with gwelb keygen)")
				}
				if l := len(k); l != 16 && l != 24 && l != 32 {
					return usagef("invalid KEY: %d bytes, want 16, 24 or 32 (make one with gwelb keygen)", l)
				}
				req.Key = argv[0]
			}
			resp, err := unary(a, cmd, "keyring "+name, func(ctx context.Context, c gwelbv1.AdminClient) (*gwelbv1.KeyringResponse, error) {
				return c.Keyring(ctx, req)
			})
			if err != nil {
				return err
			}
			nodes := resp.GetNodes()
			if a.jsonOutput() {
				err = printProtoList(a, nodes)
			} else {
				err = a.printKeyring(op, nodes)
			}
			if err != nil {
				return err
			}
			var failed []string
			for _, r := range nodes {
				if r.GetError() != "" {
					failed = append(failed, r.GetNode())
				}
			}
			if len(failed) > 0 {
				return &cliError{code: exitError, msg: fmt.Sprintf("keyring %s: %d of %d node(s) did not apply it: %s", name, len(failed), len(nodes), strings.Join(failed, ", "))}
			}
			return nil
		},
	}
}

// printKeyring prints one line per node: its keys for list, its outcome
// otherwise.
func (a *app) printKeyring(op gwelbv1.KeyringOp, nodes []*gwelbv1.KeyringNodeResult) error {
	if op == gwelbv1.KeyringOp_KEYRING_OP_LIST {
		t := newTable(a.stdout, "NODE", "PRIMARY", "KEYS")
		for _, r := range nodes {
			if r.GetError() != "" {
				t.row(r.GetNode(), "-", "error: "+r.GetError())
				continue
			}
			t.row(r.GetNode(), r.GetPrimary(), strings.Join(r.GetKeys(), ","))
		}
		return t.flush()
	}
	t := newTable(a.stdout, "NODE", "RESULT", "KEYS")
	for _, r := range nodes {
		result := "ok"
		if r.GetError() != "" {
			result = "error: " + r.GetError()
		}
		t.row(r.GetNode(), result, fmt.Sprint(len(r.GetKeys())))
	}
	return t.flush()
}
