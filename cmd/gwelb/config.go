package main

import (
	"bytes"
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
	"github.com/gwelb/gwelb/proxy"
)

// Config is gwelb's configuration file. Unknown keys are errors.
type Config struct {
	Node            string         `yaml:"node"`
	DataDir         string         `yaml:"data_dir"`
	RaftAddr        string         `yaml:"raft_addr"`
	GossipAddr      string         `yaml:"gossip_addr"`
	GRPCAddr        string         `yaml:"grpc_addr"`
	AdvertiseAddr   string         `yaml:"advertise_addr"`
	BootstrapExpect int            `yaml:"bootstrap_expect"`
	RetryJoin       []string       `yaml:"retry_join"`
	Token           string         `yaml:"token"`
	GossipKey       string         `yaml:"gossip_key"`
	GRPCTLS         *GRPCTLSConfig `yaml:"grpc_tls"`
	Raft            RaftTiming     `yaml:"raft"`
	// LeaveOnTerminate (default true) makes SIGTERM leave the cluster; false
	// keeps the node a voter that is expected back (rolling restarts).
	LeaveOnTerminate *bool `yaml:"leave_on_terminate"`

	Listeners   []ListenerConfig `yaml:"listeners"`
	OpsAddr     string           `yaml:"ops_addr"`
	AccessLog   string           `yaml:"access_log"`
	LogLevel    string           `yaml:"log_level"`
	Timeouts    Timeouts         `yaml:"timeouts"`
	Limits      Limits           `yaml:"limits"`
	UpstreamTLS UpstreamTLS      `yaml:"upstream_tls"`
	Pools       []PoolConfig     `yaml:"pools"`
}

// GRPCTLSConfig secures the admin API; with ca set, clients and peers must
// present certificates signed by it (mTLS).
type GRPCTLSConfig struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	CA   string `yaml:"ca"`
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

// Timeouts bound each phase of a request.
type Timeouts struct {
	Connect        time.Duration `yaml:"connect"`
	ReadHeader     time.Duration `yaml:"read_header"`
	ResponseHeader time.Duration `yaml:"response_header"`
	Idle           time.Duration `yaml:"idle"`
}

// Limits bound what one request may cost.
type Limits struct {
	MaxHeaderBytes int   `yaml:"max_header_bytes"`
	RetryBodyBytes int64 `yaml:"retry_body_bytes"`
}

// UpstreamTLS configures connections to https members.
type UpstreamTLS struct {
	CAFile             string `yaml:"ca_file"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// PoolConfig is one pool of GWE servers.
type PoolConfig struct {
	Name        string         `yaml:"name"`
	Prefix      string         `yaml:"prefix"`
	Sticky      StickyConfig   `yaml:"sticky"`
	Cookie      CookieConfig   `yaml:"cookie"`
	FailTimeout *time.Duration `yaml:"fail_timeout"`
	Health      HealthConfig   `yaml:"health"`
	Members     []MemberConfig `yaml:"members"`
}

// HealthConfig configures active probes of a pool's members and verdict
// flap damping.
type HealthConfig struct {
	Path         string        `yaml:"path"`
	Interval     time.Duration `yaml:"interval"`
	Timeout      time.Duration `yaml:"timeout"`
	Rise         int           `yaml:"rise"`
	Fall         int           `yaml:"fall"`
	ExpectStatus int           `yaml:"expect_status"`
	FlapLimit    int           `yaml:"flap_limit"`
	FlapWindow   time.Duration `yaml:"flap_window"`
	HoldDown     time.Duration `yaml:"hold_down"`
}

// StickyConfig names where a pool reads its sticky value.
type StickyConfig struct {
	Query  string `yaml:"query"`
	Cookie string `yaml:"cookie"`
	Insert bool   `yaml:"insert"`
}

// CookieConfig holds the attributes of an inserted sticky cookie.
type CookieConfig struct {
	Path     string `yaml:"path"`
	Domain   string `yaml:"domain"`
	MaxAge   int    `yaml:"max_age"`
	Secure   bool   `yaml:"secure"`
	HTTPOnly bool   `yaml:"http_only"`
	SameSite string `yaml:"same_site"`
}

// MemberConfig is one GWE server.
type MemberConfig struct {
	Route  string `yaml:"route"`
	URL    string `yaml:"url"`
	Weight int    `yaml:"weight"`
	State  string `yaml:"state"`
}

// defaultFailTimeout is nginx's default fail_timeout; the guide uses 30 s
// for frontends and 5 s for backends.
const defaultFailTimeout = 10 * time.Second

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

// ParseConfig decodes YAML strictly and validates the result.
func ParseConfig(data []byte) (*Config, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var cfg Config
	if err := dec.Decode(&cfg); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("config is empty")
		}
		return nil, err
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

func (c *Config) validate() error {
	if len(c.Listeners) == 0 {
		return errors.New("listeners: at least one listener is required")
	}
	if len(c.Pools) == 0 {
		return errors.New("pools: at least one pool is required")
	}
	pools := map[string]bool{}
	for i, p := range c.Pools {
		pools[p.Name] = true
		for j, m := range p.Members {
			if _, err := fsm.ParseAdminState(orDefault(m.State, "active")); err != nil {
				return fmt.Errorf("pools[%d].members[%d].state: %w", i, j, err)
			}
		}
	}
	if _, err := c.Table(); err != nil {
		return err
	}
	for i, l := range c.Listeners {
		if err := checkAddr(l.Addr); err != nil {
			return fmt.Errorf("listeners[%d].addr %q: %w", i, l.Addr, err)
		}
		for _, name := range l.Pools {
			if !pools[name] {
				return fmt.Errorf("listeners[%d].pools: no pool named %q", i, name)
			}
		}
		if l.TLS != nil && (l.TLS.Cert == "" || l.TLS.Key == "") {
			return fmt.Errorf("listeners[%d].tls: both cert and key are required", i)
		}
	}
	if c.OpsAddr != "" {
		if err := checkAddr(c.OpsAddr); err != nil {
			return fmt.Errorf("ops_addr %q: %w", c.OpsAddr, err)
		}
	}
	if _, err := c.gossipKey(); err != nil {
		return err
	}
	if c.GRPCTLS != nil && (c.GRPCTLS.Cert == "" || c.GRPCTLS.Key == "") {
		return errors.New("grpc_tls: both cert and key are required")
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		return fmt.Errorf("log_level: %w", err)
	}
	for name, d := range map[string]time.Duration{"connect": c.Timeouts.Connect, "read_header": c.Timeouts.ReadHeader, "response_header": c.Timeouts.ResponseHeader, "idle": c.Timeouts.Idle} {
		if d < 0 {
			return fmt.Errorf("timeouts.%s %v: must not be negative", name, d)
		}
	}
	if c.Limits.MaxHeaderBytes < 0 || c.Limits.RetryBodyBytes < 0 {
		return errors.New("limits: sizes must not be negative")
	}
	return nil
}

// Table builds the routing table the config describes (index 0).
func (c *Config) Table() (*fsm.Table, error) {
	specs := make([]fsm.PoolSpec, 0, len(c.Pools))
	for i, p := range c.Pools {
		ft := defaultFailTimeout
		if p.FailTimeout != nil {
			ft = *p.FailTimeout
		}
		spec := fsm.PoolSpec{
			Name:         p.Name,
			Prefix:       p.Prefix,
			QueryParam:   p.Sticky.Query,
			Cookie:       p.Sticky.Cookie,
			InsertCookie: p.Sticky.Insert,
			CookieAttrs: fsm.CookieSpec{
				Path: p.Cookie.Path, Domain: p.Cookie.Domain, MaxAge: p.Cookie.MaxAge,
				Secure: p.Cookie.Secure, HTTPOnly: p.Cookie.HTTPOnly, SameSite: p.Cookie.SameSite,
			},
			FailTimeout: ft,
			Health: fsm.HealthSpec{
				Path: p.Health.Path, Interval: p.Health.Interval, Timeout: p.Health.Timeout,
				Rise: p.Health.Rise, Fall: p.Health.Fall, ExpectStatus: p.Health.ExpectStatus,
				FlapLimit: p.Health.FlapLimit, FlapWindow: p.Health.FlapWindow, HoldDown: p.Health.HoldDown,
			},
		}
		for _, m := range p.Members {
			state, _ := fsm.ParseAdminState(orDefault(m.State, "active"))
			spec.Members = append(spec.Members, fsm.MemberSpec{Route: m.Route, URL: m.URL, Weight: m.Weight, State: state})
		}
		if _, err := fsm.NewTable(0, []fsm.PoolSpec{spec}); err != nil {
			return nil, fmt.Errorf("pools[%d]: %w", i, err)
		}
		specs = append(specs, spec)
	}
	t, err := fsm.NewTable(0, specs)
	if err != nil {
		return nil, fmt.Errorf("pools: %w", err)
	}
	return t, nil
}

// ClusterConfig maps the config onto the control plane's, with the file's
// pools as the seed of a new cluster. The token may come from GWELB_TOKEN.
func (c *Config) ClusterConfig(dev bool) (cluster.Config, error) {
	table, err := c.Table()
	if err != nil {
		return cluster.Config{}, err
	}
	var seed []fsm.PoolSpec
	for _, p := range table.Pools() {
		spec := p.Spec()
		for _, m := range p.Members() {
			spec.Members = append(spec.Members, m.MemberSpec)
		}
		seed = append(seed, spec)
	}
	key, _ := c.gossipKey()
	token := c.Token
	if token == "" {
		token = os.Getenv("GWELB_TOKEN")
	}
	cc := cluster.Config{
		Name: c.Node, DataDir: c.DataDir,
		RaftAddr: c.RaftAddr, GossipAddr: c.GossipAddr, GRPCAddr: c.GRPCAddr, AdvertiseAddr: c.AdvertiseAddr,
		BootstrapExpect: c.BootstrapExpect, RetryJoin: c.RetryJoin,
		Token: token, GossipKey: key, Dev: dev,
		Timing: cluster.Timing{
			HeartbeatTimeout: c.Raft.HeartbeatTimeout, ElectionTimeout: c.Raft.ElectionTimeout,
			LeaderLeaseTimeout: c.Raft.LeaderLeaseTimeout, GossipProfile: c.Raft.Gossip,
		},
		Seed: seed,
	}
	if c.GRPCTLS != nil {
		cc.TLS = &cluster.TLS{CertFile: c.GRPCTLS.Cert, KeyFile: c.GRPCTLS.Key, CAFile: c.GRPCTLS.CA}
	}
	if err := cc.Validate(); err != nil {
		return cc, err
	}
	return cc, nil
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
	key, err := base64.StdEncoding.DecodeString(c.GossipKey)
	if err != nil {
		return nil, fmt.Errorf("gossip_key: not base64: %w", err)
	}
	switch len(key) {
	case 16, 24, 32:
		return key, nil
	}
	return nil, fmt.Errorf("gossip_key: %d bytes after base64, want 16, 24 or 32", len(key))
}

// ProxyOptions maps the config onto the data plane's options.
func (c *Config) ProxyOptions() (proxy.Options, error) {
	opts := proxy.Options{
		ConnectTimeout:        c.Timeouts.Connect,
		ResponseHeaderTimeout: c.Timeouts.ResponseHeader,
		RetryBodyBytes:        c.Limits.RetryBodyBytes,
	}
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
			MaxHeaderBytes: c.Limits.MaxHeaderBytes,
		}
		if l.TLS != nil {
			lc.CertFile, lc.KeyFile = l.TLS.Cert, l.TLS.Key
		}
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

func orDefault(s, def string) string {
	if strings.TrimSpace(s) == "" {
		return def
	}
	return s
}
