package fsm_test

import (
	"fmt"
	"testing"

	"github.com/hashicorp/raft"

	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// BenchmarkApplySetBalancersBounded: bounded probing (DESIGN.md §5.5) with
// k = 3 of 5 balancers; the leader records a voter dead, then back, so
// every command moves about 3/5 of the members to another prober and
// drops that prober's observations. It visits every member, as every
// SetBalancers does; an Observe still costs one member.
func BenchmarkApplySetBalancersBounded(b *testing.B) {
	five := []string{"n1", "n2", "n3", "n4", "n5"}
	four := []string{"n1", "n2", "n4", "n5"}
	for _, n := range bnSizes {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			f := bnFSM(b, n)
			put := func(i int, op *gwelbv1.Command) {
				if resp := f.Apply(&raft.Log{Index: uint64(101 + i), Term: 1, Type: raft.LogCommand, Data: fzCmd(b, op)}); resp != nil {
					b.Fatal(resp)
				}
			}
			pool := bnState(0).GetPools()[0]
			pool.Health.Probers = 3
			put(0, &gwelbv1.Command{UnixNanos: fzT0, Op: &gwelbv1.Command_PutPool{PutPool: &gwelbv1.PutPool{Pool: pool}}})
			cmds := [2][]byte{
				fzCmd(b, &gwelbv1.Command{UnixNanos: fzT0, Op: &gwelbv1.Command_SetBalancers{SetBalancers: &gwelbv1.SetBalancers{Nodes: four}}}),
				fzCmd(b, &gwelbv1.Command{UnixNanos: fzT0, Op: &gwelbv1.Command_SetBalancers{SetBalancers: &gwelbv1.SetBalancers{Nodes: five}}}),
			}
			bnLoop(b, func(i int) {
				if resp := f.Apply(&raft.Log{Index: uint64(102 + i), Term: 1, Type: raft.LogCommand, Data: cmds[i%2]}); resp != nil {
					b.Fatal(resp)
				}
			})
		})
	}
}
