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
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gwelb/gwelb/cluster/clustertest"
)

// Budgets of the compose test. The build has its own: with a cold build
// cache, compiling the three binaries on a busy 2-core machine takes four
// minutes or more, and it used to eat the cluster's time and fail the test.
const (
	testBudget     = 3 * time.Minute // from compose up to the last check
	cleanupReserve = 2 * time.Minute // logs, kill, down, rmi: never cut off by go test's -timeout
	buildBudget    = 5 * time.Minute // docker checks, go build, docker build, when go test sets no -timeout
)

// composeNode is one gwelb service of docker-compose.yml with the host
// ports this run published it on.
type composeNode struct {
	service  string // compose service, also the gwelb node name
	httpPort int    // data plane, published on 127.0.0.1
	grpcPort int    // admin API, published on 127.0.0.1
}

// composeServices are the gwelb services the test starts: gwelb-N has the
// config compose/nN.yaml and the host ports GWELB_N<N>_HTTP and _GRPC.
var composeServices = []string{"gwelb-1", "gwelb-2", "gwelb-3"}

// TestCompose builds the image, starts deploy/docker-compose.yml (three
// gwelb nodes, three frontend and three backend demo GWE servers), checks
// stickiness through every node, kills the Raft leader with SIGKILL, and
// checks that the two survivors elect a new leader, keep every session on
// its server and still take admin writes. Everything it creates is removed
// in Cleanup, also on failure.
//
// Nothing it uses is fixed: the host ports are free ones picked now, the
// compose project and image are named per run, and the network's subnet is
// one no other docker network or host interface uses. So a run coexists
// with a demo started from the same file, with another run, and with
// anything else holding the file's default ports.
func TestCompose(t *testing.T) {
	// The build may take what go test's -timeout leaves after the cluster's
	// budget and the cleanup (5 minutes of the default 10).
	buildDeadline := time.Now().Add(buildBudget)
	if d, ok := t.Deadline(); ok {
		buildDeadline = d.Add(-testBudget - cleanupReserve)
	}
	bctx, bcancel := context.WithDeadline(context.Background(), buildDeadline)
	defer bcancel()
	compose, skip := composePrerequisites(bctx)
	if skip != "" {
		t.Skip(skip)
	}
	start := time.Now()

	id := randomHex(t, 4)
	project := "gwelbtest" + id
	image := "gwelb:compose-test-" + id
	demoImage := "gwelb-demo:compose-test-" + id // the demo GWE servers: not in the production image
	composeFile, err := filepath.Abs("docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	// Cleanups run last first: the image goes after the containers.
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer ccancel()
		if out, err := runCmd(cctx, nil, "docker", "rmi", "-f", image, demoImage); err != nil {
			t.Logf("docker rmi %s %s: %v\n%s", image, demoImage, err, out)
		}
	})
	binDir := buildImage(bctx, t, image, demoImage)
	t.Logf("image %s built in %s", image, time.Since(start).Round(100*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), testBudget)
	defer cancel()
	secretsDir := makeSecrets(ctx, t, binDir)

	configDir := t.TempDir()
	// env is the environment of the current attempt at up: an attempt that
	// clashes is retried with other ports and another subnet, and every
	// later compose command must name the same.
	var env []string
	dc := func(ctx context.Context, args ...string) (string, error) {
		argv := append(slices.Clone(compose[1:]), "-p", project, "-f", composeFile)
		return runCmd(ctx, env, compose[0], append(argv, args...)...)
	}
	teardown := func(ctx context.Context) error {
		// SIGKILL first: a graceful leave of every node at once only costs time.
		if out, err := dc(ctx, "kill"); err != nil {
			t.Logf("compose kill: %v\n%s", err, out)
		}
		if out, err := dc(ctx, "down", "-v", "--remove-orphans", "-t", "5"); err != nil {
			return fmt.Errorf("compose down: %v\n%s", err, out)
		}
		return nil
	}
	t.Cleanup(func() {
		if env == nil {
			return // compose never ran
		}
		cctx, ccancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer ccancel()
		if t.Failed() {
			out, _ := dc(cctx, append([]string{"logs", "--no-color", "--tail=60"}, composeServices...)...)
			t.Logf("compose logs (last lines per node):\n%s", out)
		}
		if err := teardown(cctx); err != nil {
			t.Error(err)
		}
	})

	// A port picked free can be taken again before docker binds it, and a
	// concurrent run can pick the same subnet: docker then refuses, and up
	// is tried again with fresh choices.
	var composeNodes []composeNode
	const attempts = 4
	for attempt := 1; ; attempt++ {
		subnet, err := pickSubnet(ctx)
		if err != nil {
			t.Fatalf("pick a subnet for the compose network: %v", err)
		}
		if err := writeNodeConfigs(configDir, subnet); err != nil {
			t.Fatal(err)
		}
		env = append(os.Environ(), "GWELB_IMAGE="+image, "GWELB_DEMO_IMAGE="+demoImage, "GWELB_SECRETS_DIR="+secretsDir, "GWELB_NET="+subnet, "GWELB_CONFIG_DIR="+configDir)
		composeNodes = composeNodes[:0]
		ports := freePorts(t, 2*len(composeServices))
		for i, svc := range composeServices {
			n := composeNode{service: svc, httpPort: ports[2*i], grpcPort: ports[2*i+1]}
			env = append(env, fmt.Sprintf("GWELB_N%d_HTTP=%d", i+1, n.httpPort), fmt.Sprintf("GWELB_N%d_GRPC=%d", i+1, n.grpcPort))
			composeNodes = append(composeNodes, n)
		}
		upStart := time.Now()
		out, err := dc(ctx, "up", "-d")
		if err == nil {
			t.Logf("compose project %s up on %s.0/24 in %s, host ports %+v", project, subnet, time.Since(upStart).Round(100*time.Millisecond), composeNodes)
			break
		}
		if attempt == attempts || !clash(out) {
			t.Fatalf("compose up (attempt %d): %v\n%s", attempt, err, out)
		}
		t.Logf("compose up (attempt %d) clashed with something else on this host; trying other ports and another subnet: %s", attempt, lastLine(out))
		if err := teardown(ctx); err != nil {
			t.Fatal(err)
		}
	}
	token, err := os.ReadFile(filepath.Join(secretsDir, "token"))
	if err != nil {
		t.Fatal(err)
	}
	ctl := &gwelbctl{bin: filepath.Join(binDir, "gwelbctl"), token: strings.TrimSpace(string(token)), caFile: filepath.Join(secretsDir, "ca.pem")}

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
	// The secure posture (docs/DESIGN.md §4): no node runs insecure, the
	// admin API speaks only TLS, and it wants the token.
	if st.Insecure {
		t.Fatalf("%s runs insecure", st.Node)
	}
	plain := &gwelbctl{bin: ctl.bin, token: ctl.token}
	if out, err := plain.run(ctx, composeNodes[0].grpcPort, "status"); err == nil {
		t.Fatalf("the admin API answered plaintext gRPC:\n%s", out)
	}
	anonymous := &gwelbctl{bin: ctl.bin, caFile: ctl.caFile}
	if out, err := anonymous.run(ctx, composeNodes[0].grpcPort, "status"); err == nil {
		t.Fatalf("the admin API answered without a token:\n%s", out)
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
func buildImage(ctx context.Context, t *testing.T, image, demoImage string) string {
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
	if out, err := runCmd(ctx, nil, "docker", "build", "-q", "-f", dockerfile, "--target", "demo", "-t", demoImage, buildCtx); err != nil {
		t.Fatalf("docker build --target demo: %v\n%s", err, out)
	}
	checkProductionImage(ctx, t, image)
	return bin
}

// checkProductionImage checks what the production image promises: its
// OCI labels, a health check running gwelb health, and no gwe-demo.
func checkProductionImage(ctx context.Context, t *testing.T, image string) {
	t.Helper()
	out, err := runCmd(ctx, nil, "docker", "image", "inspect", "-f",
		`{{index .Config.Labels "org.opencontainers.image.title"}} {{json .Config.Healthcheck.Test}}`, image)
	if err != nil {
		t.Fatalf("docker image inspect %s: %v\n%s", image, err, out)
	}
	if want := `gwelb ["CMD","/gwelb","health","-timeout","3s"]`; strings.TrimSpace(out) != want {
		t.Errorf("image %s: label title and health check %q, want %q", image, strings.TrimSpace(out), want)
	}
	name := "gwelb-imagecheck-" + randomHex(t, 4)
	if out, err := runCmd(ctx, nil, "docker", "create", "--name", name, image); err != nil {
		t.Fatalf("docker create %s: %v\n%s", image, err, out)
	}
	defer runCmd(context.Background(), nil, "docker", "rm", "-f", name)
	if _, err := runCmd(ctx, nil, "docker", "cp", name+":/gwelbctl", t.TempDir()); err != nil {
		t.Errorf("the production image has no /gwelbctl: %v", err)
	}
	if _, err := runCmd(ctx, nil, "docker", "cp", name+":/gwe-demo", t.TempDir()); err == nil {
		t.Errorf("the production image ships /gwe-demo")
	}
}

// status is the part of `gwelbctl status -o json` the test reads.
type status struct {
	Node      string `json:"node"`
	RaftState string `json:"raft_state"`
	Leader    string `json:"leader"`
	Insecure  bool   `json:"insecure"`
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

// gwelbctl runs the operator CLI against a published admin port, over TLS
// verified with caFile when it is set.
type gwelbctl struct {
	bin, token, caFile string
}

func (g *gwelbctl) run(ctx context.Context, port int, args ...string) (string, error) {
	argv := []string{"--addr", fmt.Sprintf("127.0.0.1:%d", port), "--timeout", "3s"}
	if g.caFile != "" {
		argv = append(argv, "--ca-file", g.caFile)
	}
	env := os.Environ()
	for _, v := range []string{"GWELB_TOKEN", "GWELB_CACERT", "GWELB_CLIENT_CERT", "GWELB_CLIENT_KEY", "GWELB_ADDR"} {
		env = slices.DeleteFunc(env, func(e string) bool { return strings.HasPrefix(e, v+"=") })
	}
	return runCmd(ctx, append(env, "GWELB_TOKEN="+g.token), g.bin, append(argv, args...)...)
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

// freePorts returns n distinct free loopback ports for compose to publish,
// chosen like every test's (clustertest.FreeAddr): outside the ephemeral
// range, so no other socket is handed them before docker binds them.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		_, p, _ := net.SplitHostPort(clustertest.FreeAddr(t))
		ports[i], _ = strconv.Atoi(p)
	}
	return ports
}

// makeSecrets makes what docker-compose.yml mounts at /etc/gwelb/secrets,
// as an operator would, with the gwelb binary of this build: a cluster CA
// (kept outside the mounted directory), a node certificate per compose
// service (IP SAN 127.0.0.1, so the host's gwelbctl verifies a node through
// its published port), the operator client certificate of the health
// checks, a gossip key and the admin token.
func makeSecrets(ctx context.Context, t *testing.T, binDir string) string {
	t.Helper()
	gwelb := filepath.Join(binDir, "gwelb")
	caDir, dir := filepath.Join(t.TempDir(), "ca"), t.TempDir()
	run := func(args ...string) string {
		out, err := runCmd(ctx, nil, gwelb, args...)
		if err != nil {
			t.Fatalf("gwelb %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	run("tls", "ca", "create", "-dir", caDir)
	for i := 1; i <= 4; i++ {
		run("tls", "cert", "create", "-ca-dir", caDir, "-node", fmt.Sprintf("gwelb-%d", i), "-ip", "127.0.0.1", "-out", dir)
	}
	run("tls", "cert", "create", "-ca-dir", caDir, "-client", "operator", "-out", dir)
	files := map[string]string{"gossip.key": run("keygen"), "token": randomHex(t, 16) + "\n"}
	ca, err := os.ReadFile(filepath.Join(caDir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	files["ca.pem"] = string(ca)
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// The nodes run as uid 65532 in their containers and read the files
	// through a bind mount: a throwaway test directory is opened to them.
	// Real deployments keep keys 0600, owned by the service's user.
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := os.Chmod(filepath.Join(dir, e.Name()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// defaultNet is the first three octets of the compose network's subnet as
// docker-compose.yml (GWELB_NET's default) and compose/nN.yaml have it.
const defaultNet = "172.28.0"

// pickSubnet returns the first three octets of a /24 in 172.28.0.0/16 that
// no docker network and no host interface uses. The file's own default,
// 172.28.0.0/24, is left to a cluster started by hand.
func pickSubnet(ctx context.Context) (string, error) {
	var used []*net.IPNet
	out, err := runCmd(ctx, nil, "docker", "network", "ls", "-q")
	if err != nil {
		return "", fmt.Errorf("docker network ls: %v: %s", err, firstLine([]byte(out)))
	}
	if ids := strings.Fields(out); len(ids) > 0 {
		out, err := runCmd(ctx, nil, "docker", append([]string{"network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}} {{end}}"}, ids...)...)
		if err != nil {
			return "", fmt.Errorf("docker network inspect: %v: %s", err, firstLine([]byte(out)))
		}
		for _, cidr := range strings.Fields(out) {
			if _, n, err := net.ParseCIDR(cidr); err == nil {
				used = append(used, n)
			}
		}
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", err
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			used = append(used, n)
		}
	}
	b := make([]byte, 1)
	for range 64 {
		if _, err := rand.Read(b); err != nil {
			return "", err
		}
		if b[0] == 0 || b[0] == 255 {
			continue
		}
		prefix := fmt.Sprintf("172.28.%d", b[0])
		_, cand, _ := net.ParseCIDR(prefix + ".0/24")
		if !slices.ContainsFunc(used, func(n *net.IPNet) bool { return n.Contains(cand.IP) || cand.Contains(n.IP) }) {
			return prefix, nil
		}
	}
	return "", errors.New("no free /24 found in 172.28.0.0/16")
}

// writeNodeConfigs writes compose/nN.yaml into dir with the node addresses
// moved from the file's default subnet to prefix.0/24.
func writeNodeConfigs(dir, prefix string) error {
	for i := 1; i <= 4; i++ {
		name := fmt.Sprintf("n%d.yaml", i)
		data, err := os.ReadFile(filepath.Join("compose", name))
		if err != nil {
			return err
		}
		if !bytes.Contains(data, []byte(defaultNet+".")) {
			return fmt.Errorf("compose/%s: no address in %s.0/24 to move", name, defaultNet)
		}
		data = bytes.ReplaceAll(data, []byte(defaultNet+"."), []byte(prefix+"."))
		// World-readable: the nodes run as uid 65532 in their containers.
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// clash reports whether compose up failed on something another user of the
// host holds: a published port, or an overlapping subnet.
func clash(out string) bool {
	for _, s := range []string{"already allocated", "address already in use", "Address already in use", "overlaps"} {
		if strings.Contains(out, s) {
			return true
		}
	}
	return false
}

func randomHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndexByte(s, '\n')+1:]
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return s
}
