package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
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
//
// The node/ cases run a node's whole publish hook (Node.onTable: the
// prober's sync, the verdict log and Watch streams after the data plane)
// with a probe running for every member, as on a node: what one change
// costs end to end, and what bounds how many changes a second a node
// applies.
func BenchmarkApplyToProxy(b *testing.B) {
	for _, hook := range []string{"", "node/"} {
		for _, n := range []int{1000, 10000} {
			b.Run(fmt.Sprintf("%smembers=%d", hook, n), func(b *testing.B) {
				benchApplyToProxy(b, n, hook != "")
			})
		}
	}
}

func benchApplyToProxy(b *testing.B, n int, wholeHook bool) {
	srv := proxy.New(proxy.Options{Logger: slog.New(slog.DiscardHandler)})
	defer srv.Close()
	var f *fsm.FSM
	tables := newTablePublisher(filepath.Join(b.TempDir(), "table.cache"), srv.Update,
		func() *gwelbv1.State { return f.State() }, slog.New(slog.DiscardHandler))
	defer tables.close()
	publish := func(t *fsm.Table) {
		tables.publish(t)
		tables.save()
	}
	st := benchState(n)
	if wholeHook {
		node := benchNode(b, tables)
		f = fsm.NewFSM(node.onTable)
		node.fsm = f
		// Probes that stay quiet for the benchmark: the first of
		// each fires at an offset spread over an hour, and a
		// failure alone changes nothing (fall 10).
		for _, p := range st.GetPools() {
			p.Health = &gwelbv1.HealthCheck{IntervalMs: time.Hour.Milliseconds(), Fall: 10}
		}
	} else {
		f = fsm.NewFSM(publish)
	}
	data, err := proto.Marshal(st)
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
}

// benchNode is the part of a Node its publish hook uses, with a prober
// whose dials fail at once (nothing listens, nothing is dialled).
func benchNode(b testing.TB, tables *tablePublisher) *Node {
	ctx, cancel := context.WithCancel(context.Background())
	n := &Node{
		cfg: Config{Name: "n1", ProbeDialer: func(context.Context, string, string) (net.Conn, error) {
			return nil, errors.New("benchmark: no dialling")
		}},
		log:      slog.New(slog.DiscardHandler),
		tables:   tables,
		watchers: newWatchers(),
		ctx:      ctx,
	}
	n.initMetrics(nil)
	n.prober = newProber(n)
	b.Cleanup(func() {
		cancel()
		n.prober.stop()
	})
	return n
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
