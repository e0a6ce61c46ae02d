package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The suite's own network, when it can have one: every gwelb node runs in a
// network namespace of its own, attached by a veth pair to a bridge that
// lives in a hub namespace; the root namespace joins the bridge through one
// more veth pair and holds hostIP, where the GWE demo servers listen and
// from which visitors and the operator connect. The bridge sits in its own
// namespace so that the host's firewall (Docker's FORWARD policy DROP with
// br_netfilter) never sees traffic between nodes. Addresses come from
// 100.127.77.0/24, a slice of RFC 6598 shared space that the suite creates
// and deletes; names start with "gwchaos".
//
// A partition is iptables DROP rules inside a node's namespace for traffic
// to and from the other nodes' addresses: the node still reaches the GWE
// servers and still serves visitors, as a node cut off from its peers by a
// broken switch port would.
const (
	namePrefix = "gwchaos"
	hubNS      = "gwchaos-hub"
	hubBridge  = "gwchaos-br"
	rootLink   = "gwchaos-r"
	rootPeer   = "gwchaos-rp"
	subnet     = "100.127.77."
	netnsHost  = subnet + "1"
)

// network is the suite's network: namespaces, or plain loopback.
type network struct {
	log    *slog.Logger
	netns  bool
	reason string // why there are no namespaces (and so no partitions)
	host   string // the address GWE servers listen on and clients come from

	built bool // setup began: close has something to remove

	mu    sync.Mutex
	nodes map[string]string // node name -> its namespace
	ips   map[string]string // node name -> its address
}

// newNetwork sets up the namespaces when mode allows ("auto", "netns") and
// the machine does, else falls back to loopback ("loopback", or "auto"
// without root or tools).
func newNetwork(ctx context.Context, log *slog.Logger, mode string) (*network, error) {
	n := &network{log: log, host: "127.0.0.1", nodes: map[string]string{}, ips: map[string]string{}}
	if mode == "loopback" {
		n.reason = "-net loopback asked for"
		return n, nil
	}
	err := n.setup(ctx)
	if err == nil {
		n.netns, n.host = true, netnsHost
		return n, nil
	}
	if mode == "netns" {
		return nil, err
	}
	n.reason = err.Error()
	log.Warn("no network namespaces: falling back to loopback; partitions are skipped", "why", err)
	return n, nil
}

// setup checks the prerequisites, removes what a crashed run left, and
// builds the hub.
func (n *network) setup(ctx context.Context) error {
	if os.Geteuid() != 0 {
		return errors.New("not root: network namespaces need CAP_NET_ADMIN")
	}
	if err := ensureTools(ctx, n.log); err != nil {
		return err
	}
	cleanupLeftovers(n.log)
	n.built = true
	steps := [][]string{
		{"ip", "netns", "add", hubNS},
		{"ip", "-n", hubNS, "link", "set", "lo", "up"},
		{"ip", "-n", hubNS, "link", "add", hubBridge, "type", "bridge"},
		{"ip", "-n", hubNS, "link", "set", hubBridge, "up"},
		{"ip", "link", "add", rootLink, "type", "veth", "peer", "name", rootPeer, "netns", hubNS},
		{"ip", "-n", hubNS, "link", "set", rootPeer, "master", hubBridge, "up"},
		{"ip", "addr", "add", netnsHost + "/24", "dev", rootLink},
		{"ip", "link", "set", rootLink, "up"},
		{"ip", "netns", "exec", hubNS, "iptables", "-w", "-L", "-n"},
	}
	for _, s := range steps {
		if err := sh(ctx, s...); err != nil {
			n.close()
			return fmt.Errorf("set up the hub namespace: %w", err)
		}
	}
	return nil
}

// ensureTools installs iproute2 and iptables when they are missing (the
// suite runs as root here, so apt-get works).
func ensureTools(ctx context.Context, log *slog.Logger) error {
	_, errIP := exec.LookPath("ip")
	_, errIPT := exec.LookPath("iptables")
	if errIP == nil && errIPT == nil {
		return nil
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		return errors.New("ip or iptables missing and no apt-get to install them")
	}
	log.Info("installing iproute2 and iptables")
	ictx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	if err := sh(ictx, "apt-get", "update", "-qq"); err != nil {
		return fmt.Errorf("apt-get update: %w", err)
	}
	if err := sh(ictx, "apt-get", "install", "-y", "-qq", "iproute2", "iptables"); err != nil {
		return fmt.Errorf("install iproute2 iptables: %w", err)
	}
	return nil
}

// cleanupLeftovers removes the namespaces and links a crashed earlier run
// left behind, and ends the processes still running in those namespaces
// (they can only be that run's gwelb nodes).
func cleanupLeftovers(log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, "ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		if !strings.HasPrefix(name, namePrefix) {
			continue
		}
		pids, _ := exec.CommandContext(ctx, "ip", "netns", "pids", name).Output()
		for _, f := range strings.Fields(string(pids)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
				log.Warn("ending a process left by an earlier run", "netns", name, "pid", pid)
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		log.Info("removing a namespace left by an earlier run", "netns", name)
		_ = sh(ctx, "ip", "netns", "del", name)
	}
	links, _ := exec.CommandContext(ctx, "ip", "-o", "link", "show").Output()
	for _, line := range strings.Split(string(links), "\n") {
		// "12: gwchaos-r@if11: <BROADCAST,..."
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		if strings.HasPrefix(name, namePrefix) {
			log.Info("removing a link left by an earlier run", "link", name)
			_ = sh(ctx, "ip", "link", "del", name)
		}
	}
}

// addNode gives a node its address: in its own namespace when there are
// namespaces (index i gets 100.127.77.(10+i)), else loopback.
func (n *network) addNode(ctx context.Context, name string, i int) (string, error) {
	if !n.netns {
		return "127.0.0.1", nil
	}
	ns := namePrefix + "-" + name
	ip := subnet + strconv.Itoa(10+i)
	host, peer := namePrefix+"-"+name+"h", namePrefix+"-"+name+"c"
	steps := [][]string{
		{"ip", "netns", "add", ns},
		{"ip", "-n", ns, "link", "set", "lo", "up"},
		{"ip", "-n", hubNS, "link", "add", host, "type", "veth", "peer", "name", peer, "netns", ns},
		{"ip", "-n", hubNS, "link", "set", host, "master", hubBridge, "up"},
		{"ip", "-n", ns, "addr", "add", ip + "/24", "dev", peer},
		{"ip", "-n", ns, "link", "set", peer, "up"},
	}
	for _, s := range steps {
		if err := sh(ctx, s...); err != nil {
			return "", fmt.Errorf("namespace for %s: %w", name, err)
		}
	}
	n.mu.Lock()
	n.nodes[name], n.ips[name] = ns, ip
	n.mu.Unlock()
	return ip, nil
}

// wrap returns argv run inside the node's namespace.
func (n *network) wrap(node string, argv []string) []string {
	n.mu.Lock()
	ns, ok := n.nodes[node]
	n.mu.Unlock()
	if !ok {
		return argv
	}
	return append([]string{"ip", "netns", "exec", ns}, argv...)
}

// isolate cuts node off from the other nodes: it drops every packet to or
// from their addresses, in the node's namespace.
func (n *network) isolate(ctx context.Context, node string) error {
	if !n.netns {
		return errors.New("partitions need network namespaces")
	}
	n.mu.Lock()
	ns := n.nodes[node]
	var peers []string
	for name, ip := range n.ips {
		if name != node {
			peers = append(peers, ip)
		}
	}
	n.mu.Unlock()
	for _, ip := range peers {
		for _, rule := range [][]string{{"INPUT", "-s", ip}, {"OUTPUT", "-d", ip}} {
			args := append([]string{"ip", "netns", "exec", ns, "iptables", "-w", "-A"}, rule...)
			if err := sh(ctx, append(args, "-j", "DROP")...); err != nil {
				return fmt.Errorf("isolate %s: %w", node, err)
			}
		}
	}
	return nil
}

// heal removes the node's partition rules.
func (n *network) heal(ctx context.Context, node string) error {
	n.mu.Lock()
	ns := n.nodes[node]
	n.mu.Unlock()
	for _, chain := range []string{"INPUT", "OUTPUT"} {
		if err := sh(ctx, "ip", "netns", "exec", ns, "iptables", "-w", "-F", chain); err != nil {
			return fmt.Errorf("heal %s: %w", node, err)
		}
	}
	return nil
}

// close removes every namespace and link the suite made. Processes in the
// namespaces must be gone already.
func (n *network) close() {
	if n == nil || !n.built {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n.mu.Lock()
	var nss []string
	for _, ns := range n.nodes {
		nss = append(nss, ns)
	}
	n.nodes, n.ips = map[string]string{}, map[string]string{}
	n.mu.Unlock()
	for _, ns := range nss {
		if err := sh(ctx, "ip", "netns", "del", ns); err != nil {
			n.log.Warn("remove namespace", "netns", ns, "err", err)
		}
	}
	_ = sh(ctx, "ip", "link", "del", rootLink)
	_ = sh(ctx, "ip", "netns", "del", hubNS)
}

// sh runs a command, folding its output into the error.
func sh(ctx context.Context, argv ...string) error {
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
