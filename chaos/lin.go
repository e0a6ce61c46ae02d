package main

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/anishathalye/porcupine"
)

// The linearizability model: every extra member is an independent register
// holding MemberVal (absent, or present with a weight and an admin state),
// so the history is checked per member key (porcupine's partitioning).
//
//   - put(weight, state) -> ok: the member becomes present with them.
//   - create(weight, state) -> ok if absent (as put), exists if present
//     (nothing changes): gwelbctl member add.
//   - remove -> ok if present (it becomes absent), notfound if absent.
//   - set(state) -> ok if present (the state changes, the weight stays),
//     notfound if absent.
//   - read -> the member as it is.
//
// Reads come from SnapshotSave, which the leader answers after a Raft
// barrier: it commits a log entry in the leader's term before reading, so
// a deposed leader cannot answer and the read sees every write
// acknowledged before it started. Status is answered from the local FSM
// and is not linearizable, so it is never used as a read here.
//
// A call whose outcome is unknown (timeout, connection lost, no leader
// after forwarding) may or may not have been applied: it returns at
// "never" with output unknown, so porcupine may place its effect anywhere
// after its invocation, including after every read (not applied). Calls
// that certainly never reached a node (dial refused) and failed reads are
// left out: they constrain nothing.

type linInput struct {
	Kind   string
	Weight int32
	State  string
}

type linOutput struct {
	Unknown bool
	Outcome string    // ok, notfound or exists
	Val     MemberVal // read
}

var memberModel = porcupine.Model{
	Init: func() any { return MemberVal{} },
	Step: func(state, input, output any) (bool, any) {
		s, in, out := state.(MemberVal), input.(linInput), output.(linOutput)
		switch in.Kind {
		case opPut:
			return out.Unknown || out.Outcome == outOK, MemberVal{Present: true, Weight: in.Weight, State: in.State}
		case opCreate:
			if s.Present {
				return out.Unknown || out.Outcome == outExists, s
			}
			return out.Unknown || out.Outcome == outOK, MemberVal{Present: true, Weight: in.Weight, State: in.State}
		case opRemove:
			if !s.Present {
				return out.Unknown || out.Outcome == outNotFound, s
			}
			return out.Unknown || out.Outcome == outOK, MemberVal{}
		case opSet:
			if !s.Present {
				return out.Unknown || out.Outcome == outNotFound, s
			}
			return out.Unknown || out.Outcome == outOK, MemberVal{Present: true, Weight: s.Weight, State: in.State}
		case opRead:
			return out.Val == s, s
		}
		return false, s
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(linInput), output.(linOutput)
		res := out.Outcome
		if out.Unknown {
			res = "?"
		}
		switch in.Kind {
		case opPut, opCreate:
			return fmt.Sprintf("%s(%s, w%d) -> %s", in.Kind, in.State, in.Weight, res)
		case opSet:
			return fmt.Sprintf("set(%s) -> %s", in.State, res)
		case opRead:
			return "read() -> " + describeVal(out.Val)
		}
		return in.Kind + "() -> " + res
	},
	DescribeState: func(state any) string { return describeVal(state.(MemberVal)) },
}

// linOperations turns the admin history into one porcupine history per
// extra member key.
func linOperations(h *History) map[string][]porcupine.Operation {
	out := map[string][]porcupine.Operation{}
	for i := range h.Admin {
		op := &h.Admin[i]
		switch {
		case op.Kind == opRead:
			if op.Outcome != outOK {
				continue
			}
			for _, k := range h.Extra {
				out[k] = append(out[k], porcupine.Operation{
					ClientId: op.Client, Input: linInput{Kind: opRead}, Output: linOutput{Val: op.Read[k]},
					Call: int64(op.Invoke), Return: int64(op.Return), Metadata: op.ID,
				})
			}
		case op.Outcome == outOK || op.Outcome == outNotFound || op.Outcome == outExists:
			out[op.Key] = append(out[op.Key], porcupine.Operation{
				ClientId: op.Client, Input: linInput{op.Kind, op.Weight, op.State}, Output: linOutput{Outcome: op.Outcome},
				Call: int64(op.Invoke), Return: int64(op.Return), Metadata: op.ID,
			})
		case op.Outcome == outIndeterminate:
			out[op.Key] = append(out[op.Key], porcupine.Operation{
				ClientId: op.Client, Input: linInput{op.Kind, op.Weight, op.State}, Output: linOutput{Unknown: true},
				Call: int64(op.Invoke), Return: int64(never), Metadata: op.ID,
			})
		}
	}
	return out
}

// LinStats tells what the linearizability check covered.
type LinStats struct {
	Keys          int      `json:"keys"`
	Operations    int      `json:"operations"`
	Indeterminate int      `json:"indeterminate"`
	Unknown       []string `json:"unknown,omitempty"` // keys the checker ran out of time on
	Visualization []string `json:"visualization,omitempty"`
}

// checkLinearizability checks invariant 5 with porcupine, member by member.
// When vizDir is set, an illegal history is drawn there as HTML.
func checkLinearizability(h *History, timeout time.Duration, vizDir string) ([]Violation, LinStats) {
	var out []Violation
	var st LinStats
	per := linOperations(h)
	for _, k := range slices.Sorted(maps.Keys(per)) {
		ops := per[k]
		st.Keys++
		st.Operations += len(ops)
		for _, o := range ops {
			if o.Output.(linOutput).Unknown {
				st.Indeterminate++
			}
		}
		res, info := porcupine.CheckOperationsVerbose(memberModel, ops, timeout)
		switch res {
		case porcupine.Unknown:
			st.Unknown = append(st.Unknown, k)
		case porcupine.Illegal:
			detail := fmt.Sprintf("the history of member %s (%d operations) is not linearizable", k, len(ops))
			if vizDir != "" {
				path := filepath.Join(vizDir, "linearizability-"+sanitize(k)+".html")
				if err := os.MkdirAll(vizDir, 0o755); err == nil {
					if err := porcupine.VisualizePath(memberModel, info, path); err == nil {
						st.Visualization = append(st.Visualization, path)
						detail += "; see " + path
					}
				}
			}
			out = append(out, Violation{invLinearizability, 0, detail})
		}
	}
	return out, st
}

// sanitize makes a member key usable in a file name.
func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			b[i] = '_'
		}
	}
	return string(b)
}
