package cluster

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	"github.com/gwelb/gwelb/fsm"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// probeFarmEnv makes the test binary a GWE server farm (TestProbeFarmProcess).
const probeFarmEnv = "GWELB_PROBE_FARM"

// TestProbeFarmProcess is not a test: run by BenchmarkProbeMemory in a
// child process (the test binary again, with GWELB_PROBE_FARM=<servers>),
// it serves the probes from loopback servers whose connections, buffers
// and goroutines stay out of the measured process. It prints the servers'
// addresses on one line and serves until its stdin closes; GET /count on
// any server answers how many probes all of them answered.
func TestProbeFarmProcess(t *testing.T) {
	count, err := strconv.Atoi(os.Getenv(probeFarmEnv))
	if err != nil {
		t.Skip("runs as BenchmarkProbeMemory's GWE server farm only")
	}
	var probes atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/count" {
			fmt.Fprintln(w, probes.Load())
			return
		}
		probes.Add(1)
		io.WriteString(w, "ok")
	})
	var addrs []string
	for range count {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go (&http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}).Serve(ln)
		addrs = append(addrs, ln.Addr().String())
	}
	fmt.Println(strings.Join(addrs, " "))
	io.Copy(io.Discard, os.Stdin)
}

// probeFarm starts TestProbeFarmProcess with servers servers and returns
// their addresses; the farm ends with the benchmark.
func probeFarm(b *testing.B, servers int) []string {
	cmd := exec.Command(os.Args[0], "-test.run=^TestProbeFarmProcess$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d", probeFarmEnv, servers))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		b.Fatalf("probe farm: %v", err)
	}
	return strings.Fields(line)
}

// BenchmarkProbeMemory measures what probing costs a voter per probed
// member (issue 13: RSS per node with 10,000 members < 128 MB): a node
// holding 10,000 (or fewer) members starts probing them all, each member its own
// address (http://127.1.x.y:9080, the probe dialler sends it to one of a
// few loopback GWE servers in a child process, so every member keeps its
// own connection as against an estate), and after every member was probed
// twice the growth of the heap and the goroutine stacks is reported per
// member (B/member), with the process's heap in use and RSS. At a 10 s
// interval no connection is kept (probeKeepAliveMax); every 2 s, 400
// members all keep theirs and 2,000 more than probeKeptConns. The CPU per
// probe is the measured process's only (the farm's is not counted), and
// as noisy as the machine. Run with -benchtime=1x.
func BenchmarkProbeMemory(b *testing.B) {
	for _, c := range []struct {
		members  int
		interval time.Duration
	}{{10000, 10 * time.Second}, {2000, 2 * time.Second}, {400, 2 * time.Second}} {
		b.Run(fmt.Sprintf("members=%d/interval=%s", c.members, c.interval), func(b *testing.B) {
			benchProbeMemory(b, c.members, c.interval)
		})
	}
}

func benchProbeMemory(b *testing.B, n int, interval time.Duration) {
	farm := probeFarm(b, 4)
	ctrl := &http.Client{Transport: &http.Transport{}}
	answered := func() int64 {
		resp, err := ctrl.Get("http://" + farm[0] + "/count")
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		v, err := strconv.ParseInt(strings.TrimSpace(string(body)), 10, 64)
		if err != nil {
			b.Fatal(err)
		}
		return v
	}
	var f *fsm.FSM
	tables := newTablePublisher(filepath.Join(b.TempDir(), "table.cache"), func(*fsm.Table) {},
		func() *gwelbv1.State { return f.State() }, slog.New(slog.DiscardHandler))
	defer tables.close()
	node := benchNode(b, tables)
	d := &net.Dialer{}
	node.cfg.ProbeDialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, _ := net.SplitHostPort(addr)
		ip := net.ParseIP(host).To4()
		return d.DialContext(ctx, network, farm[int(ip[3])%len(farm)])
	}
	node.prober = newProber(node)
	node.nonVoter.Store(true) // no probes while the table is built
	f = fsm.NewFSM(node.onTable)
	node.fsm = f
	st := &gwelbv1.State{Seeded: true, Index: 100, Balancers: []string{"n1"}, Pools: []*gwelbv1.Pool{{
		Name: "backend", Prefix: "/backend", Cookie: "ROUTEID", InsertCookie: true,
		// A slow probe on a busy machine changes nothing (fall 100): the
		// node has no Raft to report to.
		Health: &gwelbv1.HealthCheck{IntervalMs: interval.Milliseconds(), Fall: 100},
	}}}
	for i := range n {
		st.Members = append(st.Members, &gwelbv1.Member{Pool: "backend", Route: fmt.Sprintf("GWE_B_%05d", i),
			Url: fmt.Sprintf("http://127.1.%d.%d:9080", i>>8, i&255), Weight: 1, Verdict: gwelbv1.Verdict_VERDICT_UP})
		// On record as up from this node: a steady state, nothing to report.
		st.Observations = append(st.Observations, &gwelbv1.Observation{Pool: "backend", Route: fmt.Sprintf("GWE_B_%05d", i), Node: "n1", UnixNanos: 1})
	}
	data, err := proto.Marshal(st)
	if err != nil {
		b.Fatal(err)
	}
	if err := f.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		b.Fatal(err)
	}
	st, data = nil, nil
	before := memInUse()
	b.ResetTimer()
	for range b.N {
		start := answered()
		cpu := cpuTime()
		t0 := time.Now()
		node.nonVoter.Store(false)
		node.prober.sync(node.ctx, nil, f.Table())
		deadline := time.Now().Add(4*interval + 30*time.Second)
		for answered()-start < int64(2*n) {
			if time.Now().After(deadline) {
				b.Fatalf("%d of %d probes answered in %s", answered()-start, 2*n, 4*interval+30*time.Second)
			}
			time.Sleep(100 * time.Millisecond) // polling the farm's count
		}
		elapsed := time.Since(t0)
		used := cpuTime() - cpu
		after := memInUse()
		if path := os.Getenv("GWELB_PROBE_HEAP"); path != "" {
			if f, err := os.Create(path); err == nil {
				pprof.WriteHeapProfile(f)
				f.Close()
			}
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		b.ReportMetric(float64(after-before)/float64(n), "B/member")
		b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-inuse-MiB")
		b.ReportMetric(float64(ms.StackInuse)/(1<<20), "stack-MiB")
		b.ReportMetric(float64(rss())/(1<<20), "rss-MiB")
		b.ReportMetric(float64(runtime.NumGoroutine()), "goroutines")
		b.ReportMetric(float64(used)/float64(answered()-start), "cpu-ns/probe")
		_ = elapsed
		// Stopping the probes closes their kept connections: the next
		// case measures from a process without these.
		node.prober.stop()
		node.nonVoter.Store(true)
	}
}

// memInUse is the heap and the goroutine stacks in use after a collection.
func memInUse() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse + ms.StackInuse)
}

// rss is the process's resident set (VmRSS), 0 when unknown.
func rss() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// TestProbesHoldNoGoroutineWhileWaiting checks that a probed member holds
// no goroutine between its events: 1,000 members whose first probe is
// hours away leave the goroutine count where it was, and a failure the
// proxy reports runs one that counts it as a failed probe and ends.
func TestProbesHoldNoGoroutineWhileWaiting(t *testing.T) {
	node, f := probeTestNode(t)
	st := benchState(1000)
	for _, p := range st.GetPools() {
		p.Health = &gwelbv1.HealthCheck{IntervalMs: time.Hour.Milliseconds(), Fall: 10}
	}
	data, err := proto.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	before := runtime.NumGoroutine()
	if err := f.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatal(err)
	}
	if got := node.Probes(); got != 1003 {
		t.Fatalf("%d members probed, want 1003", got)
	}
	if grew := runtime.NumGoroutine() - before; grew > 20 {
		t.Fatalf("1003 waiting probes added %d goroutines", grew)
	}
	node.ObserveFailure("backend", "GWE_B_00007", errors.New("connection refused"))
	failures := func() float64 {
		var m dto.Metric
		if err := node.metrics.ProbeFailures.WithLabelValues("backend", "GWE_B_00007").Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetCounter().GetValue()
	}
	deadline := time.Now().Add(10 * time.Second)
	for failures() < 1 || runtime.NumGoroutine()-before > 20 {
		if time.Now().After(deadline) {
			t.Fatalf("failure counted %v times, %d goroutines more than before", failures(), runtime.NumGoroutine()-before)
		}
		runtime.Gosched()
	}
}

// TestProbeKeepAliveSet checks that probes often enough to keep their
// connection get one up to probeKeptConns members, a fixed set, and that
// stopped probes free their places.
func TestProbeKeepAliveSet(t *testing.T) {
	for _, c := range []struct {
		interval time.Duration
		members  int
		kept     int
	}{
		{2 * time.Second, 1500, probeKeptConns},
		{2 * time.Second, 100, 103},
		{probeKeepAliveMax + time.Millisecond, 100, 0},
	} {
		t.Run(fmt.Sprintf("%s/%d", c.interval, c.members), func(t *testing.T) {
			node, f := probeTestNode(t)
			st := benchState(c.members)
			for _, p := range st.GetPools() {
				// The dials fail at once; nothing is reported (fall 100).
				p.Health = &gwelbv1.HealthCheck{IntervalMs: c.interval.Milliseconds(), Fall: 100}
			}
			data, err := proto.Marshal(st)
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
				t.Fatal(err)
			}
			p := node.prober
			p.mu.Lock()
			kept := 0
			for _, byRoute := range p.probes {
				for _, pr := range byRoute {
					if pr.keep {
						kept++
					}
				}
			}
			if kept != c.kept || p.kept != c.kept {
				t.Errorf("%d probes keep their connection, counted %d, want %d", kept, p.kept, c.kept)
			}
			p.mu.Unlock()
			p.stop()
			p.mu.Lock()
			defer p.mu.Unlock()
			if p.kept != 0 {
				t.Errorf("%d kept-alive places taken after every probe stopped", p.kept)
			}
		})
	}
}
