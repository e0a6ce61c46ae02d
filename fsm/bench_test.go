package fsm_test

// What one change costs the FSM at scale (issue 13 item 3, DESIGN.md §5.2):
// an operator's SetMemberState and a balancer's Observe applied to a state
// of 1,000 and 10,000 members, and the snapshot and restore of 10,000.
// Every state is built through Restore (fast whatever Apply costs), with
// all members in one pool, the worst case for a per-pool rebuild, next to a
// small second pool, and three balancers. Only the package's entry points
// are used, so the figures compare across changes of the model behind them.
//
//	go test -run '^$' -bench . -benchmem ./fsm/
//
// Besides wall time per op they report cpu-ns/op, the process's CPU time
// (user and system, garbage collection included) per op: on a shared
// machine the wall time of a short op mostly measures the other tenants.

import (
	"bytes"
	"fmt"
	"io"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/gwelb/gwelb/fsm"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

var bnNodes = []string{"n1", "n2", "n3"}

// bnRoute names the i-th member of the big pool.
func bnRoute(i int) string { return fmt.Sprintf("GWE_B_%05d", i) }

// bnState is a replicated state with n members in pool "backend" (one
// down, every tenth with an observation from each balancer, as probers
// leave behind) and three in pool "frontend", at index 100.
func bnState(n int) *gwelbv1.State {
	st := &gwelbv1.State{
		Seeded:    true,
		Index:     100,
		Balancers: bnNodes,
		Pools: []*gwelbv1.Pool{
			{Name: "backend", Prefix: "/backend", Cookie: "ROUTEID", InsertCookie: true, FailTimeoutMs: proto.Int64(5000),
				Health: &gwelbv1.HealthCheck{Path: "/backend/about", IntervalMs: 2000, Rise: 2, Fall: 2, FlapLimit: 3, FlapWindowMs: 60000, HoldDownMs: 30000}},
			{Name: "frontend", Prefix: "/frontend", QueryParam: "alias", Cookie: "FRONTEND_ROUTEID"},
		},
	}
	for i := range n {
		m := &gwelbv1.Member{
			Pool: "backend", Route: bnRoute(i), Url: fmt.Sprintf("http://10.%d.%d.%d:9080", i>>16, (i>>8)&255, i&255),
			Weight: 1, Verdict: gwelbv1.Verdict_VERDICT_UP, VerdictSinceUnixNanos: fzT0,
		}
		st.Members = append(st.Members, m)
		if i%10 == 0 {
			for _, node := range bnNodes {
				st.Observations = append(st.Observations, &gwelbv1.Observation{Pool: "backend", Route: m.Route, Node: node, UnixNanos: fzT0, Down: i == 0, Cause: "refused"})
			}
		}
		if i == 0 {
			m.Verdict, m.VerdictCause = gwelbv1.Verdict_VERDICT_DOWN, "3/3 nodes observe down: refused"
		}
	}
	for i := range 3 {
		st.Members = append(st.Members, &gwelbv1.Member{Pool: "frontend", Route: fmt.Sprintf("GWE_F_%d", i), Url: "http://127.0.0.1:8091", Weight: 1, Verdict: gwelbv1.Verdict_VERDICT_UP})
	}
	return st
}

// bnFSM returns an FSM restored to bnState(n).
func bnFSM(b *testing.B, n int) *fsm.FSM {
	b.Helper()
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(bnState(n))
	if err != nil {
		b.Fatal(err)
	}
	f := fsm.NewFSM(nil)
	if err := f.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		b.Fatalf("Restore: %v", err)
	}
	return f
}

// bnCPU is the CPU time the process has used.
func bnCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// bnLoop runs op b.N times, reporting allocations and CPU time per op.
func bnLoop(b *testing.B, op func(i int)) {
	b.Helper()
	b.ReportAllocs()
	b.ResetTimer()
	cpu := bnCPU()
	for i := range b.N {
		op(i)
	}
	b.ReportMetric(float64(bnCPU()-cpu)/float64(b.N), "cpu-ns/op")
}

// bnApply applies pre-encoded commands from index 101 on, timing only Apply.
func bnApply(b *testing.B, f *fsm.FSM, cmds [][]byte) {
	b.Helper()
	bnLoop(b, func(i int) {
		resp := f.Apply(&raft.Log{Index: uint64(101 + i), Term: 1, Type: raft.LogCommand, Data: cmds[i]})
		if resp != nil {
			b.Fatalf("command %d: %v", i, resp)
		}
	})
	b.StopTimer()
	if got := f.Table().Index(); got != uint64(100+b.N) {
		b.Fatalf("table at index %d after %d changes, want %d", got, b.N, 100+b.N)
	}
}

var bnSizes = []int{1000, 10000}

// BenchmarkApplySetMemberState: an operator drains and re-enables members
// one after the other, each command with its request id (exact retries),
// each a change that is published.
func BenchmarkApplySetMemberState(b *testing.B) {
	for _, n := range bnSizes {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			f := bnFSM(b, n)
			cmds := make([][]byte, b.N)
			for i := range cmds {
				state := gwelbv1.AdminState_ADMIN_STATE_DRAIN
				if (i/n)%2 == 1 {
					state = gwelbv1.AdminState_ADMIN_STATE_ACTIVE
				}
				cmds[i] = fzCmd(b, &gwelbv1.Command{UnixNanos: fzT0 + int64(i), RequestId: fmt.Sprintf("req-%d", i),
					Op: &gwelbv1.Command_SetMemberState{SetMemberState: &gwelbv1.SetMemberState{Pool: "backend", Route: bnRoute(i % n), State: state}}})
			}
			bnApply(b, f, cmds)
		})
	}
}

// BenchmarkApplyObservation: the balancers report flips member after
// member: n1 sees each down (recorded, verdict unchanged), then n2 (the
// majority: DOWN), n3, then each up again in the same order (UP at n2's).
func BenchmarkApplyObservation(b *testing.B) {
	for _, n := range bnSizes {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			f := bnFSM(b, n)
			cmds := make([][]byte, b.N)
			for i := range cmds {
				round := i / n
				at := fzT0 + 1 + int64(i)
				cmds[i] = fzCmd(b, fzObserve(at, "backend", bnRoute(1+i%(n-1)), bnNodes[round%3], (round/3)%2 == 0, "refused"))
			}
			bnApply(b, f, cmds)
		})
	}
}

// BenchmarkApplyPutMember: an operator adds a member to the big pool and
// removes it again: members added or removed lay their pool out again
// (routes, schedule), so this costs the pool's size, not one member's.
func BenchmarkApplyPutMember(b *testing.B) {
	for _, n := range bnSizes {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			f := bnFSM(b, n)
			cmds := make([][]byte, b.N)
			for i := range cmds {
				c := &gwelbv1.Command{UnixNanos: fzT0 + int64(i), RequestId: fmt.Sprintf("req-%d", i),
					Op: &gwelbv1.Command_PutMember{PutMember: &gwelbv1.PutMember{Member: &gwelbv1.Member{Pool: "backend", Route: "GWE_B_new", Url: "http://127.0.0.1:9089"}}}}
				if i%2 == 1 {
					c.Op = &gwelbv1.Command_RemoveMember{RemoveMember: &gwelbv1.RemoveMember{Pool: "backend", Route: "GWE_B_new"}}
				}
				cmds[i] = fzCmd(b, c)
			}
			bnApply(b, f, cmds)
		})
	}
}

// BenchmarkApplySetBalancers: the leader proposes the balancer set again
// at a hold-down's end so the member is judged afresh. Every member's
// verdict is looked at: it is the one command that visits them all.
func BenchmarkApplySetBalancers(b *testing.B) {
	for _, n := range bnSizes {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			f := bnFSM(b, n)
			data := fzCmd(b, &gwelbv1.Command{UnixNanos: fzT0, Op: &gwelbv1.Command_SetBalancers{SetBalancers: &gwelbv1.SetBalancers{Nodes: bnNodes}}})
			bnLoop(b, func(i int) {
				if resp := f.Apply(&raft.Log{Index: uint64(101 + i), Term: 1, Type: raft.LogCommand, Data: data}); resp != nil {
					b.Fatal(resp)
				}
			})
		})
	}
}

// BenchmarkSnapshot encodes the state of 10,000 members (Snapshot and
// Persist, what raft does every 1,024 entries).
func BenchmarkSnapshot(b *testing.B) {
	f := bnFSM(b, 10000)
	bnLoop(b, func(int) {
		if len(fzSnapshot(b, f)) == 0 {
			b.Fatal("empty snapshot")
		}
	})
}

// BenchmarkState copies the whole state of 10,000 members (FSM.State):
// what a caller pays that wants one field of it, where Member, Seeded,
// Balancers and NextHoldDownEnd cost what they return.
func BenchmarkState(b *testing.B) {
	f := bnFSM(b, 10000)
	bnLoop(b, func(int) {
		if len(f.State().GetMembers()) != 10003 {
			b.Fatal("members missing")
		}
	})
}

// BenchmarkRestore decodes, validates and installs a snapshot of 10,000
// members and builds its table (a follower installing the leader's
// snapshot, or a node starting from its table cache).
func BenchmarkRestore(b *testing.B) {
	data := fzSnapshot(b, bnFSM(b, 10000))
	bnLoop(b, func(int) {
		f := fsm.NewFSM(nil)
		if err := f.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
			b.Fatal(err)
		}
	})
}
