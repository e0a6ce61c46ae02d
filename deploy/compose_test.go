// Package deploy holds gwelb's deployment files; its only Go code is this
// end-to-end test of the docker-compose cluster.
package deploy

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// testBudget bounds the whole compose test, image build included.
const testBudget = 3 * time.Minute

// composeNode is one gwelb service of docker-compose.yml with its host ports.
type composeNode struct {
	service  string // compose service, also the gwelb node name
	httpPort int    // data plane, published on 127.0.0.1
	grpcPort int    // admin API, published on 127.0.0.1
}

// composeNodes must match the ports of docker-compose.yml.
var composeNodes = []composeNode{
	{"gwelb-1", 18080, 17001},
	{"gwelb-2", 18081, 17002},
	{"gwelb-3", 18082, 17003},
}

// TestCompose builds the image, starts deploy/docker-compose.yml (three
// gwelb nodes, three frontend and three backend demo GWE servers), checks
// stickiness through every node, kills the Raft leader with SIGKILL, and
// checks that the two survivors elect a new leader, keep every session on
// its server and still take admin writes. Everything it creates is removed
// in Cleanup, also on failure.
func TestCompose(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testBudget)
	defer cancel()
	compose, skip := composePrerequisites(ctx)
	if skip != "" {
		t.Skip(skip)
	}
	for _, n := range composeNodes {
		for _, port := range []int{n.httpPort, n.grpcPort} {
			if err := portFree(port); err != nil {
				t.Fatalf("host port 127.0.0.1:%d, which docker-compose.yml publishes, is taken (a compose cluster left running? see `docker ps`): %v", port, err)
			}
		}
	}
	start := time.Now()

	id := randomHex(t, 4)
	project := "gwelbtest" + id
	image := "gwelb:compose-test-" + id
	token := randomHex(t, 16)
	composeFile, err := filepath.Abs("docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	// Cleanups run last first: the image goes after the containers.
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer ccancel()
		if out, err := runCmd(cctx, nil, "docker", "rmi", "-f", image); err != nil {
			t.Logf("docker rmi %s: %v\n%s", image, err, out)
		}
	})
	binDir := buildImage(ctx, t, image)
	t.Logf("image %s built in %s", image, time.Since(start).Round(100*time.Millisecond))

	env := append(os.Environ(), "GWELB_IMAGE="+image, "GWELB_TOKEN="+token)
	dc := func(ctx context.Context, args ...string) (string, error) {
		argv := append(slices.Clone(compose[1:]), "-p", project, "-f", composeFile)
		return runCmd(ctx, env, compose[0], append(argv, args...)...)
	}
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer ccancel()
		if t.Failed() {
			out, _ := dc(cctx, "logs", "--no-color", "--tail=60", "gwelb-1", "gwelb-2", "gwelb-3")
			t.Logf("compose logs (last lines per node):\n%s", out)
		}
		// SIGKILL first: a graceful leave of every node at once only costs time.
		if out, err := dc(cctx, "kill"); err != nil {
			t.Logf("compose kill: %v\n%s", err, out)
		}
		if out, err := dc(cctx, "down", "-v", "--remove-orphans", "-t", "5"); err != nil {
			t.Errorf("compose down: %v\n%s", err, out)
		}
	})

	if out, err := dc(ctx, "up", "-d"); err != nil {
		t.Fatalf("compose up: %v\n%s", err, out)
	}
	ctl := &gwelbctl{bin: filepath.Join(binDir, "gwelbctl"), token: token}

	// 1. A leader, three voters, every GWE server up.
	var st status
	err = poll(ctx, 60*time.Second, func() error {
		var err error
		st, err = ctl.status(ctx, composeNodes[0].grpcPort)
		if err != nil {
			return err
		}
		if st.Leader == "" {
			return errors.New("no leader yet")
		}
		if v := st.voters(); len(v) != 3 {
			return fmt.Errorf("voters %v, want 3", v)
		}
		if down := st.downMembers(); len(down) > 0 || len(st.Pools) != 2 {
			return fmt.Errorf("pools %d, members not up: %v", len(st.Pools), down)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("the cluster did not form: %v", err)
	}
	t.Logf("cluster formed %s after start: leader %s, voters %v", time.Since(start).Round(100*time.Millisecond), st.Leader, st.voters())

	// 2. Stickiness through every node: wait until every data plane has the
	// table, then it must hold on every request.
	client := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	if err := poll(ctx, 30*time.Second, func() error { return checkSticky(ctx, client, composeNodes) }); err != nil {
		t.Fatalf("stickiness through all nodes: %v", err)
	}
	assertSticky(ctx, t, client, composeNodes, "all three nodes")
	t.Logf("sticky through all three nodes %s after start", time.Since(start).Round(100*time.Millisecond))

	// 3. Kill the leader without a goodbye: the node that says it leads now.
	var leader string
	err = poll(ctx, 10*time.Second, func() error {
		st, err := ctl.status(ctx, composeNodes[0].grpcPort)
		if err != nil {
			return err
		}
		for _, n := range composeNodes {
			if n.service == st.Leader {
				if lst, err := ctl.status(ctx, n.grpcPort); err != nil || lst.RaftState != "Leader" {
					return fmt.Errorf("%s is named leader but says %q (%v)", n.service, lst.RaftState, err)
				}
				leader = n.service
				return nil
			}
		}
		return fmt.Errorf("leader %q is not a compose service", st.Leader)
	})
	if err != nil {
		t.Fatalf("find the leader: %v", err)
	}
	var survivors []composeNode
	for _, n := range composeNodes {
		if n.service != leader {
			survivors = append(survivors, n)
		}
	}
	cid, err := dc(ctx, "ps", "-q", leader)
	if cid = strings.TrimSpace(cid); err != nil || cid == "" {
		t.Fatalf("container of %s: %v %q", leader, err, cid)
	}
	// From before the kill until a new leader is known, sessions are checked
	// through the survivors without pause: with no leader, they keep routing
	// on the table they have.
	watchCtx, stopWatch := context.WithCancel(ctx)
	watchDone := make(chan struct{})
	var watchRounds int
	var watchErr error
	go func() {
		defer close(watchDone)
		for watchCtx.Err() == nil {
			if err := checkSticky(watchCtx, client, survivors); err != nil {
				if watchCtx.Err() == nil {
					watchErr = err
				}
				return
			}
			watchRounds++
		}
	}()
	stopWatching := func() {
		stopWatch()
		<-watchDone
	}
	defer stopWatching()

	killed := time.Now()
	if out, err := runCmd(ctx, nil, "docker", "kill", cid); err != nil {
		t.Fatalf("docker kill %s: %v\n%s", leader, err, out)
	}
	t.Logf("killed the leader %s (container %.12s; docker kill took %s)", leader, cid, time.Since(killed).Round(10*time.Millisecond))

	// 4. A new leader among the survivors, seen by both.
	var newLeader string
	err = poll(ctx, 30*time.Second, func() error {
		newLeader = ""
		for _, n := range survivors {
			st, err := ctl.status(ctx, n.grpcPort)
			if err != nil {
				return err
			}
			if st.Leader == "" || st.Leader == leader {
				return fmt.Errorf("%s sees leader %q", n.service, st.Leader)
			}
			if newLeader != "" && st.Leader != newLeader {
				return fmt.Errorf("survivors disagree on the leader: %s and %s", newLeader, st.Leader)
			}
			newLeader = st.Leader
		}
		return nil
	})
	if err != nil {
		t.Fatalf("no new leader after killing %s: %v", leader, err)
	}
	t.Logf("new leader %s, %s after the kill", newLeader, time.Since(killed).Round(10*time.Millisecond))
	stopWatching()
	if watchErr != nil {
		t.Fatalf("stickiness through the survivors during the fail-over (after %d good rounds): %v", watchRounds, watchErr)
	}
	t.Logf("%d rounds of sticky requests through the survivors during the fail-over, all on their servers", watchRounds)
	assertSticky(ctx, t, client, survivors, "the survivors under the new leader")

	// 5. Admin writes still succeed through a follower (forwarded to the new
	// leader at its advertised gRPC address on the compose network).
	follower := survivors[0]
	if follower.service == newLeader {
		follower = survivors[1]
	}
	for _, state := range []string{"drain", "enable"} {
		if out, err := ctl.run(ctx, follower.grpcPort, "member", state, "frontend", "GWE_F_1"); err != nil {
			t.Fatalf("member %s through %s: %v\n%s", state, follower.service, err, out)
		}
	}
	assertSticky(ctx, t, client, survivors, "the survivors after admin writes")
	t.Logf("compose test done in %s", time.Since(start).Round(100*time.Millisecond))
}

// composePrerequisites returns the argv prefix of a working compose tool
// (the docker compose plugin, else docker-compose), or why the test must
// skip.
func composePrerequisites(ctx context.Context) (compose []string, skip string) {
	switch {
	case os.Getenv("GWELB_SKIP_DOCKER") == "1":
		return nil, "GWELB_SKIP_DOCKER=1: skipping the docker-compose cluster test"
	case testing.Short():
		return nil, "-short: skipping the docker-compose cluster test (builds an image, starts nine containers)"
	}
	if out, err := runCmd(ctx, nil, "docker", "info", "--format", "{{.ServerVersion}}"); err != nil {
		return nil, fmt.Sprintf("docker not available: docker info: %v: %s", err, firstLine([]byte(out)))
	}
	for _, c := range [][]string{{"docker", "compose"}, {"docker-compose"}} {
		if _, err := runCmd(ctx, nil, c[0], append(slices.Clone(c[1:]), "version")...); err == nil {
			return c, ""
		}
	}
	return nil, "docker compose not available: neither `docker compose version` nor `docker-compose version` works"
}

// buildImage builds the static binaries into a fresh build context laid out
// like the repository (bin/, deploy/rootfs/), builds deploy/Dockerfile from
// it as image, and returns the bin directory (its gwelbctl drives the
// cluster from the host).
func buildImage(ctx context.Context, t *testing.T, image string) string {
	t.Helper()
	buildCtx := t.TempDir()
	bin := filepath.Join(buildCtx, "bin")
	env := append(os.Environ(), "CGO_ENABLED=0")
	if out, err := runCmdIn(ctx, "..", env, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin+string(filepath.Separator),
		"./cmd/gwelb", "./cmd/gwelbctl", "./cmd/gwe-demo"); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	if err := os.CopyFS(filepath.Join(buildCtx, "deploy", "rootfs"), os.DirFS("rootfs")); err != nil {
		t.Fatalf("copy deploy/rootfs into the build context: %v", err)
	}
	dockerfile, err := filepath.Abs("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := runCmd(ctx, nil, "docker", "build", "-q", "-f", dockerfile, "-t", image, buildCtx); err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
	return bin
}

// status is the part of `gwelbctl status -o json` the test reads.
type status struct {
	Node      string `json:"node"`
	RaftState string `json:"raft_state"`
	Leader    string `json:"leader"`
	Peers     []struct {
		ID       string `json:"id"`
		Suffrage string `json:"suffrage"`
	} `json:"peers"`
	Pools []struct {
		Members []struct {
			Member struct {
				Pool    string `json:"pool"`
				Route   string `json:"route"`
				Verdict string `json:"verdict"`
			} `json:"member"`
		} `json:"members"`
	} `json:"pools"`
}

func (s status) voters() []string {
	var v []string
	for _, p := range s.Peers {
		if p.Suffrage == "Voter" {
			v = append(v, p.ID)
		}
	}
	return v
}

func (s status) downMembers() []string {
	var down []string
	for _, p := range s.Pools {
		for _, m := range p.Members {
			if v := m.Member.Verdict; v != "" && v != "VERDICT_UP" {
				down = append(down, m.Member.Pool+"/"+m.Member.Route+"="+v)
			}
		}
	}
	return down
}

// gwelbctl runs the operator CLI against a published admin port.
type gwelbctl struct {
	bin, token string
}

func (g *gwelbctl) run(ctx context.Context, port int, args ...string) (string, error) {
	argv := append([]string{"--addr", fmt.Sprintf("127.0.0.1:%d", port), "--timeout", "3s"}, args...)
	return runCmd(ctx, append(os.Environ(), "GWELB_TOKEN="+g.token), g.bin, argv...)
}

func (g *gwelbctl) status(ctx context.Context, port int) (status, error) {
	var st status
	out, err := g.run(ctx, port, "status", "-o", "json")
	if err != nil {
		return st, fmt.Errorf("status via :%d: %v: %s", port, err, firstLine([]byte(out)))
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return st, fmt.Errorf("status via :%d: %v", port, err)
	}
	return st, nil
}

// stickyCase is one sticky request and the GWE server that must answer it.
type stickyCase struct {
	path, cookie, want string
}

var stickyCases = []stickyCase{
	{"/backend/x", "ROUTEID=.2", "2"},
	{"/frontend/x?alias=.GWE_F_3", "", "GWE_F_3"},
}

// checkSticky sends every sticky case through every node once.
func checkSticky(ctx context.Context, client *http.Client, nodes []composeNode) error {
	for _, n := range nodes {
		for _, c := range stickyCases {
			url := fmt.Sprintf("http://127.0.0.1:%d%s", n.httpPort, c.path)
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return err
			}
			if c.cookie != "" {
				req.Header.Set("Cookie", c.cookie)
			}
			resp, err := client.Do(req)
			if err != nil {
				return fmt.Errorf("%s: GET %s: %w", n.service, c.path, err)
			}
			resp.Body.Close()
			if got := resp.Header.Get("X-GWE-Server"); resp.StatusCode != http.StatusOK || got != c.want {
				return fmt.Errorf("%s: GET %s (cookie %q): status %d, server %q, want 200 from %q",
					n.service, c.path, c.cookie, resp.StatusCode, got, c.want)
			}
		}
	}
	return nil
}

// assertSticky requires stickiness on every one of several rounds.
func assertSticky(ctx context.Context, t *testing.T, client *http.Client, nodes []composeNode, through string) {
	t.Helper()
	const rounds = 10
	for i := range rounds {
		if err := checkSticky(ctx, client, nodes); err != nil {
			t.Fatalf("stickiness through %s, round %d of %d: %v", through, i+1, rounds, err)
		}
	}
}

// poll calls f until it returns nil, ctx ends or within passes; it returns
// f's last error on timeout.
func poll(ctx context.Context, within time.Duration, f func() error) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("after %s: %w", within, err)
		case <-tick.C:
		}
	}
}

func runCmd(ctx context.Context, env []string, name string, args ...string) (string, error) {
	return runCmdIn(ctx, "", env, name, args...)
}

// runCmdIn runs a command in dir (the test's directory when empty) with env
// (the test's environment when nil) and returns its combined output.
func runCmdIn(ctx context.Context, dir string, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir, cmd.Env = dir, env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func portFree(port int) error {
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return err
	}
	return ln.Close()
}

func randomHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return s
}
