package cluster

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/gwelb/gwelb/fsm"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
	"github.com/gwelb/gwelb/proxy"
)

// BenchmarkApplyToProxy is the time from Raft handing the FSM one change
// (an operator's SetMemberState) to the data plane routing on it, at 1,000
// and 10,000 members (issue 13: under 1 ms at 10,000): FSM.Apply, the
// table publisher (DESIGN.md §5.7, cache writes included, in the
// background as on a node) and proxy.Server.Update, as a node wires them.
// The rest of a node's publish hook (prober sync, verdict log, Watch
// streams) runs after the data plane has the table and is not counted.
func BenchmarkApplyToProxy(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			srv := proxy.New(proxy.Options{Logger: slog.New(slog.DiscardHandler)})
			defer srv.Close()
			var f *fsm.FSM
			tables := newTablePublisher(filepath.Join(b.TempDir(), "table.cache"), srv.Update,
				func() *gwelbv1.State { return f.State() }, slog.New(slog.DiscardHandler))
			defer tables.close()
			f = fsm.NewFSM(func(t *fsm.Table) {
				tables.publish(t)
				tables.save()
			})
			data, err := proto.Marshal(benchState(n))
			if err != nil {
				b.Fatal(err)
			}
			if err := f.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
				b.Fatal(err)
			}
			cmds := make([][]byte, b.N)
			for i := range cmds {
				state := gwelbv1.AdminState_ADMIN_STATE_DRAIN
				if (i/n)%2 == 1 {
					state = gwelbv1.AdminState_ADMIN_STATE_ACTIVE
				}
				cmds[i], err = fsm.EncodeCommand(&gwelbv1.Command{RequestId: fmt.Sprintf("req-%d", i), Op: &gwelbv1.Command_SetMemberState{
					SetMemberState: &gwelbv1.SetMemberState{Pool: "backend", Route: fmt.Sprintf("GWE_B_%05d", i%n), State: state}}})
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			cpu := cpuTime()
			for i := range b.N {
				index := uint64(101 + i)
				if resp := f.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: cmds[i]}); resp != nil {
					b.Fatal(resp)
				}
				// publish is synchronous: the data plane has the table now.
				if got := srv.Table().Index(); got != index {
					b.Fatalf("proxy routes on index %d after applying %d", got, index)
				}
			}
			// CPU time per change, the table cache's background writes
			// included: on a shared machine wall time measures the tenants.
			b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
		})
	}
}

// benchState is a state of n members in one pool (the worst case for a
// per-pool rebuild) and three in another, at index 100.
func benchState(n int) *gwelbv1.State {
	st := &gwelbv1.State{Seeded: true, Index: 100, Balancers: []string{"n1", "n2", "n3"}, Pools: []*gwelbv1.Pool{
		{Name: "backend", Prefix: "/backend", Cookie: "ROUTEID", InsertCookie: true},
		{Name: "frontend", Prefix: "/frontend", QueryParam: "alias", Cookie: "FRONTEND_ROUTEID"},
	}}
	for i := range n {
		st.Members = append(st.Members, &gwelbv1.Member{Pool: "backend", Route: fmt.Sprintf("GWE_B_%05d", i),
			Url: fmt.Sprintf("http://127.0.%d.%d:9080", i>>8, i&255), Weight: 1})
	}
	for i := range 3 {
		st.Members = append(st.Members, &gwelbv1.Member{Pool: "frontend", Route: fmt.Sprintf("GWE_F_%d", i), Url: "http://127.0.0.1:8091", Weight: 1})
	}
	return st
}

// cpuTime is the CPU time the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
