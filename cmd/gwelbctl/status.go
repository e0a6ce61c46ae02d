package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

func (a *app) statusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the node's view of the cluster",
		Long: `Show the addressed node's view of the cluster: its Raft state, the leader,
the Raft indexes, the Raft peers, the gossip members, and per pool the
members with their admin state, cluster verdict, every balancer node's
observation of them with its age, and what only each node's data plane
knows, gathered from every live node that answers within a second (listed
as "In flight from"): the requests in flight, summed over those nodes, and
each node's local quarantine of the member after a connection failure
(routing contract rule 8: that node skips the member until then, whatever
the verdict).`,
		Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := a.status(cmd)
			if err != nil {
				return err
			}
			if a.jsonOutput() {
				return a.printProto(st)
			}
			return a.printStatus(st)
		},
	}
}

// status calls Status on the node at --addr.
func (a *app) status(cmd *cobra.Command) (*gwelbv1.StatusResponse, error) {
	return unary(a, cmd, "status", func(ctx context.Context, c gwelbv1.AdminClient) (*gwelbv1.StatusResponse, error) {
		return c.Status(ctx, &gwelbv1.StatusRequest{})
	})
}

// printStatus prints st as tables.
func (a *app) printStatus(st *gwelbv1.StatusResponse) error {
	w := a.stdout
	leader := st.GetLeader()
	if leader == "" {
		leader = "(none)"
	} else if st.GetLeaderGrpcAddr() != "" {
		leader += " (" + st.GetLeaderGrpcAddr() + ")"
	}
	kv := newTable(w)
	kv.row("Node:", st.GetNode())
	if st.GetInsecure() {
		// DESIGN.md §4: the node runs without node TLS or a gossip key.
		kv.row("Security:", "INSECURE (insecure: true; no node TLS or no gossip key)")
	}
	kv.row("Raft state:", st.GetRaftState())
	kv.row("Leader:", leader)
	if st.GetRaftState() != "Leader" {
		kv.row("Last contact:", lastContact(time.Duration(st.GetLastContactMs())*time.Millisecond))
	}
	kv.row("Applied index:", strconv.FormatUint(st.GetAppliedIndex(), 10))
	kv.row("Last log index:", strconv.FormatUint(st.GetLastLogIndex(), 10))
	kv.row("Table index:", strconv.FormatUint(st.GetTableIndex(), 10))
	if from := st.GetInFlightFrom(); len(from) > 0 {
		kv.row("In flight from:", strings.Join(from, ", "))
	}
	if err := kv.flush(); err != nil {
		return err
	}

	fmt.Fprintln(w, "\nRaft peers:")
	if err := a.printPeers(st.GetPeers()); err != nil {
		return err
	}

	fmt.Fprintln(w, "\nGossip members:")
	if len(st.GetGossip()) == 0 {
		fmt.Fprintln(w, "(none)")
	} else {
		t := newTable(w, "NAME", "ADDRESS", "STATUS", "GRPC ADDRESS", "RAFT ADDRESS")
		for _, m := range st.GetGossip() {
			t.row(m.GetName(), m.GetAddress(), m.GetStatus(), m.GetGrpcAddr(), m.GetRaftAddr())
		}
		if err := t.flush(); err != nil {
			return err
		}
	}

	for _, p := range st.GetPools() {
		pool := p.GetPool()
		fmt.Fprintf(w, "\nPool %s (prefix %s):\n", pool.GetName(), pool.GetPrefix())
		if err := a.printPoolMembers(w, p.GetMembers()); err != nil {
			return err
		}
	}
	return nil
}

// printPeers prints the Raft peers table.
func (a *app) printPeers(peers []*gwelbv1.RaftPeer) error {
	if len(peers) == 0 {
		_, err := fmt.Fprintln(a.stdout, "(none)")
		return err
	}
	t := newTable(a.stdout, "ID", "ADDRESS", "SUFFRAGE", "LEADER")
	for _, p := range peers {
		mark := ""
		if p.GetLeader() {
			mark = "*"
		}
		t.row(p.GetId(), p.GetAddress(), p.GetSuffrage(), mark)
	}
	return t.flush()
}

// printPoolMembers prints the member table of one pool.
func (a *app) printPoolMembers(w io.Writer, members []*gwelbv1.MemberStatus) error {
	if len(members) == 0 {
		_, err := fmt.Fprintln(w, "(no members)")
		return err
	}
	now := a.env.now()
	t := newTable(w, "ROUTE", "URL", "WEIGHT", "STATE", "VERDICT", "SINCE", "CAUSE", "IN-FLIGHT", "QUARANTINED", "OBSERVATIONS")
	for _, ms := range members {
		m := ms.GetMember()
		t.row(m.GetRoute(), m.GetUrl(), strconv.Itoa(int(m.GetWeight())), stateName(m.GetState()),
			verdict(now, m), age(now, m.GetVerdictSinceUnixNanos()), m.GetVerdictCause(),
			strconv.FormatInt(ms.GetInFlight(), 10), quarantines(ms.GetQuarantined(), true), observations(now, ms.GetObservations()))
	}
	return t.flush()
}

// verdict is the member's verdict, marked when it is held down after
// flapping.
func verdict(now time.Time, m *gwelbv1.Member) string {
	v := verdictName(m.GetVerdict())
	if u := m.GetHoldDownUntilUnixNanos(); u > now.UnixNano() {
		v += " (held " + fmtDuration(time.Duration(u-now.UnixNano())) + ")"
	}
	return v
}

// observations prints each node's view of a member with its age, e.g.
// "n1=up 3m12s, n2=down 12s (connection refused)".
func observations(now time.Time, obs []*gwelbv1.Observation) string {
	parts := make([]string, 0, len(obs))
	for _, o := range obs {
		s := o.GetNode() + "=up"
		if o.GetDown() {
			s = o.GetNode() + "=down"
		}
		if ag := age(now, o.GetUnixNanos()); ag != "" {
			s += " " + ag
		}
		if o.GetCause() != "" {
			s += " (" + o.GetCause() + ")"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}

// lastContact prints how long ago a follower heard from the leader: with
// millisecond precision below a minute, where it matters.
func lastContact(d time.Duration) string {
	if d < time.Minute {
		return d.Round(time.Millisecond).String()
	}
	return fmtDuration(d)
}
