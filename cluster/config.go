// Package cluster is gwelb's control plane: a Raft group (raft-boltdb/v2
// stores) that replicates the member table, memberlist gossip that finds
// peers and tells the leader who is alive, the leader's reconcile loop,
// write forwarding and the gRPC admin service.
package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/gwelb/gwelb/fsm"
	"github.com/gwelb/gwelb/internal/metrics"
	"github.com/gwelb/gwelb/internal/pki"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// Config configures a Node.
type Config struct {
	Name            string   // unique node name: Raft server ID and gossip name
	DataDir         string   // Raft log, stable store and snapshots
	RaftAddr        string   // host:port of the Raft TCP transport
	GossipAddr      string   // host:port of memberlist (TCP and UDP)
	GRPCAddr        string   // host:port of the admin API
	AdvertiseAddr   string   // IP peers reach this node at; "" advertises the hosts of the addresses above
	BootstrapExpect int      // wait for this many nodes, then one bootstraps them all
	RetryJoin       []string // gossip addresses to join, retried until one answers
	Token           string   // admin API token; required unless Dev
	ReadToken       string   // read-only admin API token: Status, Route, Watch (DESIGN.md §4); "" for none
	GossipKey       []byte   // 16, 24 or 32 bytes: encrypt gossip; nil for plain
	Dev             bool     // a lone node that bootstraps itself

	// NonVoter makes the node a Raft non-voter (config voter: false): it
	// replicates the table and routes like a voter, forwards writes, never
	// bootstraps, votes, probes or counts in verdicts (DESIGN.md §1.3, §5.5;
	// suffrage.go).
	NonVoter bool
	// NonVoterReap is how long a non-voter may stay failed in gossip before
	// the leader removes it from Raft; default 72 h, Consul's
	// reconnect_timeout.
	NonVoterReap time.Duration

	// TLS is the node's certificate bundle (internal/pki): Raft, the admin
	// API and every node-to-node call run over mutual TLS with it, and a
	// peer is a node only if it proves a node certificate of this CA
	// (DESIGN.md §4). Required outside Dev unless Insecure.
	TLS pki.Bundle
	// Insecure runs a non-Dev node without TLS or without a gossip key,
	// as gwelb did before §4's rules: anyone who reaches raft_addr can
	// rewrite the table. Logged at every start and shown in Status.
	Insecure bool
	// ServerNames, when set, is the allow-list of node names (certificate
	// identities) this node accepts as peers and admits as voters.
	ServerNames []string

	Timing       Timing        // Raft and gossip timing; zero fields take LAN defaults
	WriteTimeout time.Duration // how long a write waits for a leader; default 5 s

	// StartupCatchupTimeout bounds how long a restarted node waits to catch
	// up with the cluster before it routes on the table it has (default
	// 5 s), and for how long after the node lost touch with the leader
	// requests that would move a session wait (each 2 s at most) for the
	// catch-up (catchup.go).
	StartupCatchupTimeout time.Duration

	// ProbeDialer, when set, dials health probes (tests use it to cut one
	// node off from one member); ProbeTLS verifies https members.
	ProbeDialer func(ctx context.Context, network, addr string) (net.Conn, error)
	ProbeTLS    *tls.Config

	Seed     []fsm.PoolSpec                 // applied once, when the cluster is first bootstrapped
	OnTable  func(*fsm.Table)               // receives every new routing table, in index order
	InFlight func(pool, route string) int64 // requests in flight per member, for Status; may be nil
	Logger   *slog.Logger

	// Quarantine tells until when this node's data plane skips member
	// route of pool after a connection failure (routing contract rule 8;
	// zero or past: it does not), for Route and Status; may be nil.
	Quarantine func(pool, route string) time.Time

	// Counters reads this node's cumulative data-plane counts of member
	// route of pool (requests, 5xx answers, retries) for Status, which
	// sums them over the nodes like InFlight so the dashboard shows
	// cluster-wide rates; may be nil (no counts reported).
	Counters func(pool, route string) (requests, errors5xx, retries uint64)
	// RecentWrites returns the admin writes this node's audit log recorded,
	// newest first, for Status (StatusRequest.recent_writes): the
	// dashboard merges every node's, so each page lists the writes the
	// leader logged. May be nil.
	RecentWrites func() []*gwelbv1.AdminWrite

	// Metrics receives the control plane's series
	// (metrics.Registry.Cluster); nil records into instruments no
	// registry serves.
	Metrics *metrics.Cluster
}

// Timing holds the timeouts that decide how fast failures are noticed.
//
// The defaults suit a LAN or one host: Raft's own defaults (1 s heartbeat
// and election timeouts) leave a cluster without a leader for 2-4 s after
// the leader dies; a tenth of a second of round trip is plenty on a LAN, so
// gwelb waits half a second, which elects a new leader in about 0.5-1.5 s,
// and stays clear of false elections when a 2-core host is busy.
type Timing struct {
	// HeartbeatTimeout: default 500 ms. A voting follower starts an
	// election after this long without the leader; the leader and the
	// non-voters run at three times it (leader.go paceHeartbeats).
	HeartbeatTimeout time.Duration
	ElectionTimeout  time.Duration // default 500 ms
	// LeaderLeaseTimeout: a leader that has not heard from a majority for
	// this long steps down. Default: HeartbeatTimeout (500 ms), the most
	// raft allows. The leader heartbeats each voter every 150-300 ms
	// (leader.go paceHeartbeats), so a shorter lease made a leader whose
	// process stalled for 50 ms on a busy host step down; reads never rely
	// on the lease (catch-up and leader duties go through a barrier,
	// catchup.go).
	LeaderLeaseTimeout time.Duration
	// CommitTimeout: an idle leader sends each follower an AppendEntries
	// every four of these (default three tenths of HeartbeatTimeout,
	// 150 ms: one every 600 ms, transport.go), the follower's proof that
	// it has the leader's log (catchup.go: news at most about 600 ms old,
	// 400 ms inside the staleness bound). Commits do not wait for it: the
	// leader tells followers of each at once (commitnotify.go).
	CommitTimeout time.Duration
	GossipProfile string // "lan" (default) or "local": memberlist's LAN or loopback profile
}

func (c *Config) setDefaults() {
	t := &c.Timing
	if t.HeartbeatTimeout == 0 {
		t.HeartbeatTimeout = 500 * time.Millisecond
	}
	if t.ElectionTimeout == 0 {
		t.ElectionTimeout = 500 * time.Millisecond
	}
	if t.LeaderLeaseTimeout == 0 {
		t.LeaderLeaseTimeout = t.HeartbeatTimeout
	}
	if t.CommitTimeout == 0 {
		t.CommitTimeout = t.HeartbeatTimeout * 3 / 10
	}
	if t.GossipProfile == "" {
		t.GossipProfile = "lan"
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 5 * time.Second
	}
	if c.StartupCatchupTimeout == 0 {
		c.StartupCatchupTimeout = 5 * time.Second
	}
	if c.NonVoterReap == 0 {
		c.NonVoterReap = DefaultNonVoterReap
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.OnTable == nil {
		c.OnTable = func(*fsm.Table) {}
	}
}

// Validate reports the first invalid field.
func (c *Config) Validate() error {
	if c.Name == "" {
		return errors.New("node: name is required")
	}
	if c.DataDir == "" {
		return errors.New("data_dir: is required")
	}
	for _, a := range []struct{ field, addr string }{{"raft_addr", c.RaftAddr}, {"gossip_addr", c.GossipAddr}, {"grpc_addr", c.GRPCAddr}} {
		host, _, err := net.SplitHostPort(a.addr)
		if err != nil {
			return fmt.Errorf("%s %q: want host:port", a.field, a.addr)
		}
		if ip := net.ParseIP(host); c.AdvertiseAddr == "" && a.field != "grpc_addr" && (ip == nil || ip.IsUnspecified()) {
			return fmt.Errorf("%s %q: want an IP address other peers can reach, or set advertise_addr", a.field, a.addr)
		}
	}
	if c.AdvertiseAddr != "" {
		if ip := net.ParseIP(c.AdvertiseAddr); ip == nil || ip.IsUnspecified() {
			return fmt.Errorf("advertise_addr %q: want the IP address peers reach this node at", c.AdvertiseAddr)
		}
	}
	if c.BootstrapExpect < 0 {
		return fmt.Errorf("bootstrap_expect %d: must not be negative", c.BootstrapExpect)
	}
	if c.Dev && c.BootstrapExpect > 1 {
		return fmt.Errorf("bootstrap_expect %d: a -dev node bootstraps alone", c.BootstrapExpect)
	}
	if c.NonVoter && (c.Dev || c.BootstrapExpect > 0) {
		return errors.New("voter: false: a non-voter never bootstraps; drop bootstrap_expect (and -dev) and join voters with retry_join")
	}
	if c.NonVoterReap < 0 {
		return fmt.Errorf("non_voter_reap %v: must not be negative", c.NonVoterReap)
	}
	if err := c.validateSecurity(); err != nil {
		return err
	}
	if c.ReadToken != "" && c.ReadToken == c.Token {
		return errors.New("read_token: must differ from token, or the read-only role would grant writes")
	}
	switch len(c.GossipKey) {
	case 0, 16, 24, 32:
	default:
		return fmt.Errorf("gossip_key: %d bytes, want 16, 24 or 32", len(c.GossipKey))
	}
	switch c.Timing.GossipProfile {
	case "", "lan", "local":
	default:
		return fmt.Errorf("gossip profile %q: want lan or local", c.Timing.GossipProfile)
	}
	if c.StartupCatchupTimeout < 0 {
		return fmt.Errorf("startup_catchup_timeout %v: must not be negative", c.StartupCatchupTimeout)
	}
	if c.Timing.LeaderLeaseTimeout > c.Timing.HeartbeatTimeout && c.Timing.HeartbeatTimeout > 0 {
		return errors.New("raft timing: leader_lease_timeout must not exceed heartbeat_timeout")
	}
	return nil
}

// advertised is addr as peers should dial it: the advertise address with
// addr's port when one is set, and for an unspecified or empty host.
func (c *Config) advertised(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if c.AdvertiseAddr != "" {
		return net.JoinHostPort(c.AdvertiseAddr, port)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		return net.JoinHostPort("127.0.0.1", port)
	}
	return addr
}

// validateSecurity applies DESIGN.md §4's rules for starting a node: outside
// -dev a node needs its certificate bundle (tls) and a gossip key, unless
// insecure is set; the certificate must be a node certificate of the CA for
// this node's name; operators need a token unless they can come with a
// client certificate (TLS on) or the node is -dev.
func (c *Config) validateSecurity() error {
	if !c.Dev && !c.Insecure {
		if !c.TLS.Enabled() {
			return errors.New("tls: required outside -dev (or set insecure: true): ca_file, cert_file and key_file from gwelb tls")
		}
		if len(c.GossipKey) == 0 {
			return errors.New("gossip_key: required outside -dev (or set insecure: true): generate one with gwelb keygen")
		}
	}
	if c.TLS.Enabled() {
		name, err := c.TLS.Check()
		if err != nil {
			return err
		}
		if !strings.EqualFold(name, c.Name) {
			return fmt.Errorf("tls.cert_file %s: a certificate for node %q, but this node is %q", c.TLS.CertFile, name, c.Name)
		}
	}
	for _, s := range c.ServerNames {
		if err := pki.ValidName(s); err != nil {
			return fmt.Errorf("server_names: %w", err)
		}
	}
	if len(c.ServerNames) > 0 && !slices.ContainsFunc(c.ServerNames, func(s string) bool { return strings.EqualFold(s, c.Name) }) {
		return fmt.Errorf("server_names: does not list this node, %q", c.Name)
	}
	if !c.Dev && c.Token == "" && !c.TLS.Enabled() {
		return errors.New("token: the admin API needs a token unless -dev (or operators with client certificates over tls)")
	}
	return nil
}
