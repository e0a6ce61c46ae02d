package main

import (
	"bytes"
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/gwelb/gwelb/cluster"
	"github.com/gwelb/gwelb/fsm"
	"github.com/gwelb/gwelb/internal/pki"
	"github.com/gwelb/gwelb/proxy"
)

// Config is gwelb's configuration file. Unknown keys are errors.
type Config struct {
	Node            string   `yaml:"node"`
	DataDir         string   `yaml:"data_dir"`
	RaftAddr        string   `yaml:"raft_addr"`
	GossipAddr      string   `yaml:"gossip_addr"`
	GRPCAddr        string   `yaml:"grpc_addr"`
	AdvertiseAddr   string   `yaml:"advertise_addr"`
	BootstrapExpect int      `yaml:"bootstrap_expect"`
	RetryJoin       []string `yaml:"retry_join"`
	Token           string   `yaml:"token"`
	GossipKey       string   `yaml:"gossip_key"`
	// TLS is the node's certificate bundle from `gwelb tls`: Raft, the
	// admin API and node-to-node calls run over mutual TLS with it
	// (DESIGN.md §4). Required outside -dev unless Insecure.
	TLS *ClusterTLS `yaml:"tls"`
	// Insecure lets a node run outside -dev without tls or gossip_key;
	// logged at every start and shown by gwelbctl status.
	Insecure bool `yaml:"insecure"`
	// ServerNames, when set, lists the node names (certificate
	// identities) admitted as peers and voters.
	ServerNames []string   `yaml:"server_names"`
	Raft        RaftTiming `yaml:"raft"`
	// LeaveOnTerminate (default true) makes SIGTERM leave the cluster; false
	// keeps the node a voter that is expected back (rolling restarts).
	LeaveOnTerminate *bool `yaml:"leave_on_terminate"`
	// StartupCatchupTimeout (default 5s) bounds how long a restarted node
	// catches up with the cluster before it opens its listeners anyway and
	// routes on the table it has; also how long after a node lost touch
	// with the leader requests that would move a session wait (each 2 s at
	// most) for it to catch up.
	StartupCatchupTimeout time.Duration `yaml:"startup_catchup_timeout"`

	// TokenFile holds the read-write operator token instead of token
	// (contents trimmed; set one, not both). ReadToken is the read-only
	// operator token, for Status, Route and Watch only; ReadTokenFile holds
	// it instead (DESIGN.md §4). GossipKeyFile holds gossip_key instead
	// (the output of gwelb keygen); like gossip_key it only seeds
	// data_dir/keyring on a node's first start.
	TokenFile     string `yaml:"token_file"`
	GossipKeyFile string `yaml:"gossip_key_file"`
	ReadToken     string `yaml:"read_token"`
	ReadTokenFile string `yaml:"read_token_file"`

	// Ops is the ops listener: health, readiness, metrics and (opt-in)
	// pprof, for monitoring and keepalived; off without ops.addr.
	Ops Ops `yaml:"ops"`
	// LegacyOpsAddr is the key ops.addr replaced; it is refused with a
	// message saying so.
	LegacyOpsAddr string `yaml:"ops_addr"`

	// Shutdown times the stop sequence of SIGTERM and SIGINT (DESIGN.md §6.3).
	Shutdown Shutdown `yaml:"shutdown"`

	// AccessLogFormat is the access log's line format: combined (the
	// default: Apache's combined plus routing fields) or json (one object
	// per line); README.md documents both.
	AccessLogFormat string `yaml:"access_log_format"`

	Listeners   []ListenerConfig `yaml:"listeners"`
	AccessLog   string           `yaml:"access_log"`
	LogLevel    string           `yaml:"log_level"`
	Timeouts    Timeouts         `yaml:"timeouts"`
	Limits      Limits           `yaml:"limits"`
	UpstreamTLS UpstreamTLS      `yaml:"upstream_tls"`
	Pools       []fsm.PoolSpec   `yaml:"pools"` // the replicated model itself (DESIGN.md §5.1)
}

// Ops configures the ops listener (DESIGN.md §4: no authentication, so
// bind it to loopback or a monitoring network).
type Ops struct {
	// Addr is host:port of /healthz, /readyz and /metrics; "" turns the
	// ops listener off.
	Addr string `yaml:"addr"`
	// Pprof serves Go's /debug/pprof/ profiles on the ops listener too.
	Pprof bool `yaml:"pprof"`
	// UI serves the dashboard at /ui/ (package ui): default true; false
	// answers 404 there.
	UI *bool `yaml:"ui"`
	// TLS serves the ops listener over HTTPS (the dashboard's token and
	// session then never cross the network in the clear); the files are
	// read again when they change.
	TLS *TLSConfig `yaml:"tls"`
}

// UIEnabled reports whether the dashboard is served (ops.ui, default true).
func (o Ops) UIEnabled() bool { return o.UI == nil || *o.UI }

// Shutdown times a graceful stop (DESIGN.md §6.3): /readyz fails at once,
// the listeners keep serving for Delay so that whatever balances in front
// of the node (keepalived, DNS health checks, a cloud load balancer) moves
// traffic away, then they stop accepting and requests in flight get up to
// Timeout to finish.
type Shutdown struct {
	// Delay (default 5s; 0s: none) is how long the node keeps serving
	// after /readyz started failing.
	Delay *time.Duration `yaml:"delay"`
	// Timeout (default 30s) bounds the wait for requests in flight and for
	// the closing handshakes of WebSockets.
	Timeout time.Duration `yaml:"timeout"`
}

// Shutdown defaults and bounds.
const (
	DefaultShutdownDelay   = 5 * time.Second
	DefaultShutdownTimeout = 30 * time.Second
	maxShutdownDelay       = 10 * time.Minute
	maxShutdownTimeout     = time.Hour
)

// DelayOrDefault is shutdown.delay with its default applied.
func (s Shutdown) DelayOrDefault() time.Duration {
	if s.Delay == nil {
		return DefaultShutdownDelay
	}
	return *s.Delay
}

// TimeoutOrDefault is shutdown.timeout with its default applied.
func (s Shutdown) TimeoutOrDefault() time.Duration { return cmp.Or(s.Timeout, DefaultShutdownTimeout) }

// ClusterTLS names the node's PEM files: the cluster CA, this node's
// certificate (from gwelb tls cert create -node) and its key.
type ClusterTLS struct {
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// RaftTiming overrides the control plane's failure-detection timing.
type RaftTiming struct {
	HeartbeatTimeout   time.Duration `yaml:"heartbeat_timeout"`
	ElectionTimeout    time.Duration `yaml:"election_timeout"`
	LeaderLeaseTimeout time.Duration `yaml:"leader_lease_timeout"`
	Gossip             string        `yaml:"gossip"`
}

// ListenerConfig is one data-plane listener.
type ListenerConfig struct {
	Addr  string     `yaml:"addr"`
	Pools []string   `yaml:"pools"`
	TLS   *TLSConfig `yaml:"tls"`
}

// TLSConfig names a listener's certificate and key files (PEM).
type TLSConfig struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// Timeouts bound each phase of a request; zero picks the default.
type Timeouts struct {
	Connect        time.Duration `yaml:"connect"`
	ReadHeader     time.Duration `yaml:"read_header"`
	ResponseHeader time.Duration `yaml:"response_header"`
	Idle           time.Duration `yaml:"idle"`
	// BodyRead (default 20s) is how long a request body may keep the
	// proxy waiting, extended by one second per limits.body_min_rate
	// bytes received; then the client gets 408 and the upstream
	// connection is closed (Apache's RequestReadTimeout body=20,MinRate=500).
	BodyRead time.Duration `yaml:"body_read"`
}

// Limits bound what one request, and all of them together, may cost; zero
// picks the default.
type Limits struct {
	MaxHeaderBytes int   `yaml:"max_header_bytes"`
	RetryBodyBytes int64 `yaml:"retry_body_bytes"`
	// MaxConns (default 10000) bounds each listener's open connections;
	// beyond it new connections wait in the kernel's accept queue.
	MaxConns int `yaml:"max_conns"`
	// RetryBufferTotal (default 64 MiB) bounds the body bytes all
	// requests together keep for a retry; beyond it a request is
	// forwarded without a retry copy.
	RetryBufferTotal int64 `yaml:"retry_buffer_total"`
	// BodyMinRate (default 500) is the request body rate, in bytes per
	// second, that keeps extending timeouts.body_read.
	BodyMinRate int64 `yaml:"body_min_rate"`
}

// UpstreamTLS configures connections to https members.
type UpstreamTLS struct {
	CAFile             string `yaml:"ca_file"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// LoadConfig reads and validates a config file.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	cfg, err := ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// ParseConfig decodes YAML strictly and validates the result; the error
// lists every problem found, one per line.
func ParseConfig(data []byte) (*Config, error) {
	cfg, err := decodeConfig(data)
	if err != nil {
		return nil, err
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// decodeConfig decodes YAML strictly (unknown keys are errors) without
// judging the values.
func decodeConfig(data []byte) (*Config, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var cfg Config
	if err := dec.Decode(&cfg); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("config is empty")
		}
		return nil, err
	}
	return &cfg, nil
}

// validate judges the whole file and returns every problem, one per line:
// pools and members through fsm.ValidatePools (the one validator the
// cluster also uses), the rest here.
func (c *Config) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(c.Listeners) == 0 {
		bad("listeners: at least one listener is required")
	}
	if len(c.Pools) == 0 {
		bad("pools: at least one pool is required")
	}
	if err := fsm.ValidatePools(c.Pools); err != nil {
		var probs fsm.Problems
		if errors.As(err, &probs) {
			for _, p := range probs {
				errs = append(errs, p)
			}
		} else {
			errs = append(errs, err)
		}
	}
	pools := map[string]bool{}
	for _, p := range c.Pools {
		pools[p.Name] = true
	}
	for i, l := range c.Listeners {
		if err := checkAddr(l.Addr); err != nil {
			bad("listeners[%d].addr %q: %w", i, l.Addr, err)
		}
		for _, name := range l.Pools {
			if !pools[name] {
				bad("listeners[%d].pools: no pool named %q", i, name)
			}
		}
		if l.TLS != nil && (l.TLS.Cert == "" || l.TLS.Key == "") {
			bad("listeners[%d].tls: both cert and key are required", i)
		}
	}
	if c.LegacyOpsAddr != "" {
		bad("ops_addr: replaced by ops.addr (ops: {addr: %q})", c.LegacyOpsAddr)
	}
	if c.Ops.Addr != "" {
		if err := checkAddr(c.Ops.Addr); err != nil {
			bad("ops.addr %q: %w", c.Ops.Addr, err)
		}
	} else if c.Ops.Pprof {
		bad("ops.pprof: needs ops.addr (pprof is served on the ops listener)")
	}
	if c.Ops.Addr == "" && c.Ops.TLS != nil {
		bad("ops.tls: needs ops.addr (it is the ops listener's certificate)")
	}
	if t := c.Ops.TLS; t != nil && (t.Cert == "" || t.Key == "") {
		bad("ops.tls: both cert and key are required")
	}
	if _, err := c.gossipKey(); err != nil {
		errs = append(errs, err)
	}
	if c.Token != "" && c.TokenFile != "" {
		bad("token, token_file: set one, not both")
	}
	if c.ReadToken != "" && c.ReadTokenFile != "" {
		bad("read_token, read_token_file: set one, not both")
	}
	if c.GossipKey != "" && c.GossipKeyFile != "" {
		bad("gossip_key, gossip_key_file: set one, not both")
	}
	if t := c.TLS; t != nil && (t.CAFile == "" || t.CertFile == "" || t.KeyFile == "") {
		bad("tls: ca_file, cert_file and key_file are all required")
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		bad("log_level: %w", err)
	}
	if _, err := proxy.ParseAccessLogFormat(c.AccessLogFormat); err != nil {
		bad("access_log_format: %w", err)
	}
	for _, t := range []struct {
		name string
		d    time.Duration
	}{{"connect", c.Timeouts.Connect}, {"read_header", c.Timeouts.ReadHeader}, {"response_header", c.Timeouts.ResponseHeader}, {"idle", c.Timeouts.Idle}, {"body_read", c.Timeouts.BodyRead}} {
		if t.d < 0 {
			bad("timeouts.%s %v: must not be negative", t.name, t.d)
		}
	}
	if c.Limits.MaxHeaderBytes < 0 {
		bad("limits.max_header_bytes %d: must not be negative", c.Limits.MaxHeaderBytes)
	}
	if c.StartupCatchupTimeout < 0 {
		bad("startup_catchup_timeout %v: must not be negative", c.StartupCatchupTimeout)
	}
	if d := c.Shutdown.Delay; d != nil && (*d < 0 || *d > maxShutdownDelay) {
		bad("shutdown.delay %v: want 0s to %v", *d, maxShutdownDelay)
	}
	if d := c.Shutdown.Timeout; d < 0 || d > maxShutdownTimeout {
		bad("shutdown.timeout %v: want above 0s and at most %v (unset: %v)", d, maxShutdownTimeout, DefaultShutdownTimeout)
	}
	if c.Limits.RetryBodyBytes < 0 {
		bad("limits.retry_body_bytes %d: must not be negative", c.Limits.RetryBodyBytes)
	}
	for _, l := range []struct {
		name string
		v    int64
	}{{"max_conns", int64(c.Limits.MaxConns)}, {"retry_buffer_total", c.Limits.RetryBufferTotal}, {"body_min_rate", c.Limits.BodyMinRate}} {
		if l.v < 0 {
			bad("limits.%s %d: must not be negative", l.name, l.v)
		}
	}
	body, total := cmp.Or(c.Limits.RetryBodyBytes, proxy.DefaultRetryBodyBytes), cmp.Or(c.Limits.RetryBufferTotal, proxy.DefaultRetryBufferTotal)
	if body > 0 && total > 0 && total < body {
		bad("limits.retry_buffer_total %d: must be at least limits.retry_body_bytes (%d), or no body could ever be kept whole for a retry", total, body)
	}
	return errors.Join(errs...)
}

// Table builds the routing table the config describes (index 0).
func (c *Config) Table() (*fsm.Table, error) {
	t, err := fsm.NewTable(0, c.Pools)
	if err != nil {
		return nil, fmt.Errorf("pools: %w", err)
	}
	return t, nil
}

// ClusterConfig maps the config onto the control plane's, with the file's
// pools as the seed of a new cluster. The token may come from GWELB_TOKEN.
// A secret file that cannot be read is the error, with the rest of the
// config mapped all the same (the seed is the file's pools whatever else
// it says).
func (c *Config) ClusterConfig(dev bool) (cluster.Config, error) {
	key, _ := c.gossipKey()
	var fileErr error
	if c.GossipKeyFile != "" {
		k, err := readTokenFile("gossip_key_file", c.GossipKeyFile)
		if err == nil {
			key, err = decodeGossipKey("gossip_key_file "+c.GossipKeyFile, k)
		}
		fileErr = err
	}
	token, readToken, err := c.tokens()
	if fileErr == nil {
		fileErr = err
	}
	cc := cluster.Config{
		Name: c.Node, DataDir: c.DataDir,
		RaftAddr: c.RaftAddr, GossipAddr: c.GossipAddr, GRPCAddr: c.GRPCAddr, AdvertiseAddr: c.AdvertiseAddr,
		BootstrapExpect: c.BootstrapExpect, RetryJoin: c.RetryJoin,
		Token: token, ReadToken: readToken, GossipKey: key, Dev: dev,
		StartupCatchupTimeout: c.StartupCatchupTimeout,
		Timing: cluster.Timing{
			HeartbeatTimeout: c.Raft.HeartbeatTimeout, ElectionTimeout: c.Raft.ElectionTimeout,
			LeaderLeaseTimeout: c.Raft.LeaderLeaseTimeout, GossipProfile: c.Raft.Gossip,
		},
		Seed: c.Pools,
	}
	if c.TLS != nil {
		cc.TLS = pki.Bundle{CAFile: c.TLS.CAFile, CertFile: c.TLS.CertFile, KeyFile: c.TLS.KeyFile}
	}
	cc.Insecure, cc.ServerNames = c.Insecure, c.ServerNames
	if fileErr != nil {
		return cc, fileErr
	}
	if err := cc.Validate(); err != nil {
		return cc, err
	}
	return cc, nil
}

// maxTokenFile bounds what a token file may hold.
const maxTokenFile = 4096

// tokens returns the read-write and read-only operator tokens: token or
// the trimmed contents of token_file (else GWELB_TOKEN), read_token or the
// trimmed contents of read_token_file. A file that cannot be read is an
// error naming its field; so is a read-only token equal to the read-write
// one, which would make the read-only role meaningless.
func (c *Config) tokens() (token, readToken string, err error) {
	token, readToken = c.Token, c.ReadToken
	if c.TokenFile != "" {
		if token, err = readTokenFile("token_file", c.TokenFile); err != nil {
			return "", "", err
		}
	}
	if token == "" {
		token = os.Getenv("GWELB_TOKEN")
	}
	if c.ReadTokenFile != "" {
		if readToken, err = readTokenFile("read_token_file", c.ReadTokenFile); err != nil {
			return "", "", err
		}
	}
	if readToken != "" && readToken == token {
		return "", "", errors.New("read_token: must differ from token, or the read-only role would grant writes")
	}
	return token, readToken, nil
}

// readTokenFile reads a token from a regular file of at most maxTokenFile
// bytes, trimmed of surrounding white space; empty is an error.
func readTokenFile(field, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", field, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("%s: %w", field, err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s %s: not a regular file", field, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxTokenFile+1))
	if err != nil {
		return "", fmt.Errorf("%s: read %s: %w", field, path, err)
	}
	if len(data) > maxTokenFile {
		return "", fmt.Errorf("%s %s: larger than %d bytes", field, path, maxTokenFile)
	}
	tok := strings.TrimSpace(string(data))
	if tok == "" {
		return "", fmt.Errorf("%s %s: empty", field, path)
	}
	return tok, nil
}

// applyDev fills what a lone -dev node needs and the file left out: a
// name, loopback addresses and a data directory in a temporary folder.
func (c *Config) applyDev() error {
	if c.Node == "" {
		c.Node = "dev"
	}
	if c.RaftAddr == "" {
		c.RaftAddr = "127.0.0.1:7101"
	}
	if c.GossipAddr == "" {
		c.GossipAddr = "127.0.0.1:7201"
	}
	if c.GRPCAddr == "" {
		c.GRPCAddr = "127.0.0.1:7001"
	}
	if c.DataDir == "" {
		dir, err := os.MkdirTemp("", "gwelb-dev-")
		if err != nil {
			return fmt.Errorf("data_dir: %w", err)
		}
		c.DataDir = dir
	}
	return nil
}

func (c *Config) gossipKey() ([]byte, error) {
	if c.GossipKey == "" {
		return nil, nil
	}
	return decodeGossipKey("gossip_key", c.GossipKey)
}

// decodeGossipKey decodes a base64 gossip key of 16, 24 or 32 bytes; field
// names its source in the error.
func decodeGossipKey(field, s string) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%s: not base64: %w", field, err)
	}
	switch len(key) {
	case 16, 24, 32:
		return key, nil
	}
	return nil, fmt.Errorf("%s: %d bytes after base64, want 16, 24 or 32", field, len(key))
}

// ProxyOptions maps the config onto the data plane's options.
func (c *Config) ProxyOptions() (proxy.Options, error) {
	opts := proxy.Options{
		ConnectTimeout:        c.Timeouts.Connect,
		ResponseHeaderTimeout: c.Timeouts.ResponseHeader,
		RetryBodyBytes:        c.Limits.RetryBodyBytes,
		RetryBufferTotal:      c.Limits.RetryBufferTotal,
		BodyReadTimeout:       c.Timeouts.BodyRead,
		BodyMinRate:           c.Limits.BodyMinRate,
	}
	// validate has judged the format; -dev has set the node's name by now.
	opts.AccessLogFormat, _ = proxy.ParseAccessLogFormat(c.AccessLogFormat)
	opts.NodeName = c.Node
	if c.UpstreamTLS.CAFile != "" || c.UpstreamTLS.InsecureSkipVerify {
		tc := &tls.Config{InsecureSkipVerify: c.UpstreamTLS.InsecureSkipVerify, MinVersion: tls.VersionTLS12}
		if c.UpstreamTLS.CAFile != "" {
			pem, err := os.ReadFile(c.UpstreamTLS.CAFile)
			if err != nil {
				return opts, fmt.Errorf("upstream_tls.ca_file: %w", err)
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return opts, fmt.Errorf("upstream_tls.ca_file %q: no PEM certificates", c.UpstreamTLS.CAFile)
			}
		}
		opts.UpstreamTLS = tc
	}
	return opts, nil
}

// ListenerConfigs maps the config's listeners onto the data plane's.
func (c *Config) ListenerConfigs() []proxy.ListenerConfig {
	out := make([]proxy.ListenerConfig, 0, len(c.Listeners))
	for _, l := range c.Listeners {
		lc := proxy.ListenerConfig{
			Addr: l.Addr, Pools: l.Pools,
			ReadHeaderTimeout: c.Timeouts.ReadHeader, IdleTimeout: c.Timeouts.Idle,
			MaxHeaderBytes: c.Limits.MaxHeaderBytes, MaxConns: c.Limits.MaxConns,
		}
		if l.TLS != nil {
			lc.CertFile, lc.KeyFile = l.TLS.Cert, l.TLS.Key
		}
		lc.Field = fmt.Sprintf("listeners[%d]", len(out))
		out = append(out, lc)
	}
	return out
}

func checkAddr(addr string) error {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return errors.New("want host:port")
	}
	return nil
}
