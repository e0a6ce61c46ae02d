package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

func (a *app) watchCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "watch",
		Short: "Stream the pools and members after every change",
		Long: `Stream the pools and members after every change until Ctrl-C: one line per
event, or with -o json one compact WatchEvent object per line. --timeout does
not apply. Ctrl-C, or the node ending the stream, exits with 0.

Each line reads: time, table index, then per pool each member as
route=verdict, with its admin state when not active, e.g.
  2026-11-24T10:00:00Z index 42  frontend: 1=up 2=down,drain  backend: 1=up`,
		Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			n, err := a.connect()
			if err != nil {
				return err
			}
			defer n.close()
			ctx := cmd.Context()
			stream, err := n.api.Watch(ctx, &gwelbv1.WatchRequest{})
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return n.fail("watch", err)
			}
			for {
				ev, err := stream.Recv()
				if errors.Is(err, io.EOF) || (err != nil && ctx.Err() != nil) {
					return nil
				}
				if err != nil {
					return n.fail("watch", err)
				}
				if err := a.printWatchEvent(ev); err != nil {
					return err
				}
			}
		},
	}
}

// printWatchEvent prints one event as one line.
func (a *app) printWatchEvent(ev *gwelbv1.WatchEvent) error {
	var line []byte
	if a.jsonOutput() {
		raw, err := compactProto(ev)
		if err != nil {
			return err
		}
		line = append(raw, '\n')
	} else {
		line = []byte(watchLine(a.env.now(), ev) + "\n")
	}
	if _, err := a.stdout.Write(line); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

// watchLine is the table form of a watch event.
func watchLine(now time.Time, ev *gwelbv1.WatchEvent) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s index %d", now.UTC().Format(time.RFC3339), ev.GetTableIndex())
	for _, p := range ev.GetPools() {
		fmt.Fprintf(&b, "  %s:", p.GetPool().GetName())
		if len(p.GetMembers()) == 0 {
			b.WriteString(" (no members)")
		}
		for _, ms := range p.GetMembers() {
			m := ms.GetMember()
			fmt.Fprintf(&b, " %s=%s", m.GetRoute(), verdictName(m.GetVerdict()))
			if m.GetState() != gwelbv1.AdminState_ADMIN_STATE_ACTIVE {
				b.WriteString("," + stateName(m.GetState()))
			}
		}
	}
	return b.String()
}
