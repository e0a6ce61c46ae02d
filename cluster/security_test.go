package cluster_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/gwelb/gwelb/cluster/clustertest"
	"github.com/gwelb/gwelb/fsm"
	"github.com/gwelb/gwelb/internal/pki"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// tlsStreamLayer is an attacker's raft stream layer: TLS with whatever
// certificate it has, accepting any server.
type tlsStreamLayer struct {
	net.Listener
	cfg *tls.Config
}

func (s *tlsStreamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout}, Config: s.cfg}
	return d.Dial("tcp", string(addr))
}

// attackRaft plays a rogue leader against one node's raft_addr, as the
// attack of DESIGN.md §4 did: AppendEntries at a higher term with a
// PutMember pointing backend/2 at evilURL (guessing the previous entry's
// term), then an InstallSnapshot of an empty state. It returns the first
// transport error; nil means raft answered.
func attackRaft(t *testing.T, trans *raft.NetworkTransport, id, addr string, lastIndex uint64, evilURL string) (appendErr, snapErr error, accepted bool) {
	t.Helper()
	data, err := fsm.EncodeCommand(&gwelbv1.Command{UnixNanos: time.Now().UnixNano(), Op: &gwelbv1.Command_PutMember{PutMember: &gwelbv1.PutMember{
		Member: &gwelbv1.Member{Pool: "backend", Route: "2", Url: evilURL, Weight: 1},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	const term = 1 << 20
	hdr := raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("evil"), Addr: []byte(trans.LocalAddr())}
	for guess := uint64(1); guess <= 16; guess++ {
		req := &raft.AppendEntriesRequest{
			RPCHeader: hdr, Term: term + guess, PrevLogEntry: lastIndex, PrevLogTerm: guess,
			Entries:           []*raft.Log{{Index: lastIndex + 1, Term: term + guess, Type: raft.LogCommand, Data: data}},
			LeaderCommitIndex: lastIndex + 1,
		}
		var resp raft.AppendEntriesResponse
		if err := trans.AppendEntries(raft.ServerID(id), raft.ServerAddress(addr), req, &resp); err != nil {
			appendErr = err
			break
		}
		if resp.Success {
			accepted = true
			break
		}
	}
	empty, err := proto.MarshalOptions{Deterministic: true}.Marshal(&gwelbv1.State{})
	if err != nil {
		t.Fatal(err)
	}
	conf := raft.EncodeConfiguration(raft.Configuration{Servers: []raft.Server{{ID: raft.ServerID(id), Address: raft.ServerAddress(addr), Suffrage: raft.Voter}}})
	var sresp raft.InstallSnapshotResponse
	snapErr = trans.InstallSnapshot(raft.ServerID(id), raft.ServerAddress(addr), &raft.InstallSnapshotRequest{
		RPCHeader: hdr, SnapshotVersion: raft.SnapshotVersionMax, Term: term + 100,
		LastLogIndex: lastIndex + 100, LastLogTerm: term + 100, Configuration: conf, ConfigurationIndex: lastIndex + 100, Size: int64(len(empty)),
	}, &sresp, bytes.NewReader(empty))
	if snapErr == nil && sresp.Success {
		accepted = true
	}
	return appendErr, snapErr, accepted
}

// members lists a node's table as pool/route -> url.
func members(tn *clustertest.Node) map[string]string {
	out := map[string]string{}
	for _, p := range tn.Node.Table().Pools() {
		for _, m := range p.Members() {
			out[p.Name()+"/"+m.Route] = m.URL
		}
	}
	return out
}

func lastLogIndex(t *testing.T, c *clustertest.Cluster, tn *clustertest.Node) uint64 {
	t.Helper()
	cl, ctx := c.Admin(tn)
	st, err := cl.Status(ctx, &gwelbv1.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return st.GetLastLogIndex()
}

// TestRaftRefusesStrangers replays the raw-Raft attack of DESIGN.md §4
// over real sockets: a hashicorp/raft client without a certificate, and
// one with a node certificate of another CA, sends AppendEntries (higher
// term, a PutMember pointing backend/2 at its own server) and an
// InstallSnapshot of an empty state to every node's raft_addr. Every call
// must fail in the transport and no table may change. The same client
// against an insecure -dev node rewrites its table: the attack itself
// works, TLS is what stops it.
func TestRaftRefusesStrangers(t *testing.T) {
	c := clustertest.New(t, 3)
	const evil = "http://127.0.0.1:1"
	// The cluster is up before every follower's own FSM applied the
	// seed: compare from the seeded tables.
	c.WaitAll("the seeded table in every node's own FSM", func(tn *clustertest.Node) bool { return len(members(tn)) > 0 })
	before := map[string]map[string]string{}
	for _, tn := range c.Live() {
		before[tn.Cfg.Name] = members(tn)
	}

	plain, err := raft.NewTCPTransport("127.0.0.1:0", nil, 1, 2*time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	other := clustertest.NewPKI(t).Node("n1") // another CA, a name of this cluster
	otherPair, err := tls.LoadX509KeyPair(other.CertFile, other.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	foreign := raft.NewNetworkTransport(&tlsStreamLayer{Listener: ln, cfg: &tls.Config{
		Certificates: []tls.Certificate{otherPair}, InsecureSkipVerify: true, MinVersion: tls.VersionTLS13, //nolint:gosec // the attacker
	}}, 1, 2*time.Second, io.Discard)
	defer foreign.Close()

	for name, trans := range map[string]*raft.NetworkTransport{"no certificate": plain, "another CA's certificate": foreign} {
		for _, tn := range c.Live() {
			last := lastLogIndex(t, c, tn)
			appendErr, snapErr, accepted := attackRaft(t, trans, tn.Cfg.Name, tn.Cfg.RaftAddr, last, evil)
			if appendErr == nil || snapErr == nil || accepted {
				t.Errorf("%s -> %s raft_addr: AppendEntries err %v, InstallSnapshot err %v, accepted %v; want both refused in the transport",
					name, tn.Cfg.Name, appendErr, snapErr, accepted)
			}
		}
	}
	// Raft is asynchronous: prove the cluster still commits, then compare.
	putMember(t, c, c.WaitLeader(), "9", c.GWE["1"].URL)
	c.WaitAll("member 9 everywhere", func(tn *clustertest.Node) bool { return members(tn)["backend/9"] != "" })
	for _, tn := range c.Live() {
		got := members(tn)
		delete(got, "backend/9")
		if len(got) != len(before[tn.Cfg.Name]) {
			t.Errorf("%s: table %v, was %v", tn.Cfg.Name, got, before[tn.Cfg.Name])
		}
		for k, v := range before[tn.Cfg.Name] {
			if got[k] != v {
				t.Errorf("%s: %s = %q, was %q", tn.Cfg.Name, k, got[k], v)
			}
		}
	}

	// Control: the same attack on a plaintext (insecure -dev) node works.
	cfg := c.NodeConfig("ctl")
	clustertest.Insecure(0, &cfg)
	cfg.Dev, cfg.Seed = true, c.Nodes[0].Cfg.Seed
	ctl := c.Start(cfg)
	clustertest.WaitFor(t, 20*time.Second, "the -dev node seeded", func() bool { return members(ctl)["backend/2"] != "" })
	if _, _, accepted := attackRaft(t, plain, "ctl", cfg.RaftAddr, lastLogIndex(t, c, ctl), evil); !accepted {
		t.Fatal("control: the raw raft attack was not accepted by a plaintext node; the attack above proves nothing")
	}
}

// strangerServer is an attacker's admin API: it records the metadata of
// every call it receives and counts connections.
type strangerServer struct {
	gwelbv1.UnimplementedAdminServer
	mu      sync.Mutex
	md      []metadata.MD
	accepts atomic.Int64
	addr    string
}

func (s *strangerServer) record(ctx context.Context) {
	md, _ := metadata.FromIncomingContext(ctx)
	s.mu.Lock()
	s.md = append(s.md, md)
	s.mu.Unlock()
}

func (s *strangerServer) Status(ctx context.Context, _ *gwelbv1.StatusRequest) (*gwelbv1.StatusResponse, error) {
	s.record(ctx)
	return &gwelbv1.StatusResponse{}, nil
}

func (s *strangerServer) calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.md)
}

func (s *strangerServer) tokens() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, md := range s.md {
		out = append(out, md.Get("authorization")...)
	}
	return out
}

type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// startStranger runs a memberlist node with the cluster's gossip key that
// advertises its own admin and raft addresses, as a gwelb node's gossip
// meta does. creds is its admin API's TLS (nil: plaintext).
func startStranger(t *testing.T, c *clustertest.Cluster, name string, creds *tls.Config) *strangerServer {
	t.Helper()
	s := &strangerServer{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	var opts []grpc.ServerOption
	if creds != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(creds)))
	}
	opts = append(opts, grpc.UnknownServiceHandler(func(_ any, ss grpc.ServerStream) error {
		s.record(ss.Context())
		return status.Error(codes.Unimplemented, "stranger")
	}), grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		s.record(ctx)
		return h(ctx, req)
	}))
	srv := grpc.NewServer(opts...)
	gwelbv1.RegisterAdminServer(srv, s)
	go srv.Serve(countingListener{ln, &s.accepts})
	t.Cleanup(srv.Stop)
	raftLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raftLn.Close() })
	go func() {
		for {
			conn, err := raftLn.Accept()
			if err != nil {
				return
			}
			conn.Close()
		}
	}()

	meta, err := json.Marshal(map[string]string{"r": raftLn.Addr().String(), "g": s.addr})
	if err != nil {
		t.Fatal(err)
	}
	mc := memberlist.DefaultLocalConfig()
	mc.Name = name
	host, port, _ := net.SplitHostPort(clustertest.FreeAddr(t))
	mc.BindAddr, mc.AdvertiseAddr = host, host
	mc.BindPort, _ = strconv.Atoi(port)
	mc.AdvertisePort = mc.BindPort
	mc.SecretKey = c.GossipKey
	mc.Delegate = metaDelegate(meta)
	mc.LogOutput = io.Discard
	ml, err := memberlist.Create(mc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ml.Shutdown() })
	if _, err := ml.Join([]string{c.Nodes[0].Cfg.GossipAddr}); err != nil {
		t.Fatalf("stranger %s: join gossip: %v", name, err)
	}
	return s
}

type metaDelegate []byte

func (d metaDelegate) NodeMeta(int) []byte                  { return d }
func (metaDelegate) NotifyMsg([]byte)                       {}
func (metaDelegate) GetBroadcasts(int, int) [][]byte        { return nil }
func (metaDelegate) LocalState(bool) []byte                 { return nil }
func (metaDelegate) MergeRemoteState(buf []byte, join bool) {}

// TestGossipStrangerNeverVotesNorSeesTheToken replays the gossip attack of
// DESIGN.md §4: strangers holding the gossip key join gossip advertising
// their own admin and raft addresses — one with a plaintext admin API, one
// with a node certificate of another CA, one with a certificate of this
// CA for another name. None may become a voter, and none may receive the
// operator token, though every node's status fan-out dials them.
func TestGossipStrangerNeverVotesNorSeesTheToken(t *testing.T) {
	c := clustertest.New(t, 3)
	tlsFor := func(b pki.Bundle) *tls.Config {
		cfg, err := b.ServerConfig(tls.RequestClientCert)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	strangers := map[string]*strangerServer{
		"s-plain":   startStranger(t, c, "s-plain", nil),
		"s-otherca": startStranger(t, c, "s-otherca", tlsFor(clustertest.NewPKI(t).Node("s-otherca"))),
		"s-misname": startStranger(t, c, "s-misname", tlsFor(c.PKI().Node("someone-else"))),
	}
	leader := c.WaitLeader()
	clustertest.WaitFor(t, 60*time.Second, "the leader gossiping with the strangers", func() bool {
		tn := leader
		cl, ctx := c.Admin(tn)
		st, err := cl.Status(ctx, &gwelbv1.StatusRequest{})
		if err != nil {
			return false
		}
		seen := 0
		for _, g := range st.GetGossip() {
			if strangers[g.GetName()] != nil && g.GetStatus() == "alive" {
				seen++
			}
		}
		return seen == len(strangers)
	})

	// Watch past a reconcile interval (5 s) and a few gossip events; each
	// round asks every node's Status, whose fan-out dials every gossip
	// member's admin address.
	deadline := time.Now().Add(6 * time.Second)
	for time.Now().Before(deadline) {
		for _, tn := range c.Live() {
			cl, ctx := c.Admin(tn)
			st, err := cl.Status(ctx, &gwelbv1.StatusRequest{})
			if err != nil {
				continue
			}
			for _, p := range st.GetPeers() {
				if strangers[p.GetId()] != nil {
					t.Fatalf("%s: stranger %s is in the raft configuration as %s", tn.Cfg.Name, p.GetId(), p.GetSuffrage())
				}
			}
		}
		for name, s := range strangers {
			if toks := s.tokens(); len(toks) > 0 {
				t.Fatalf("stranger %s received the operator token: %q", name, toks)
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	for name, s := range strangers {
		if s.accepts.Load() == 0 {
			t.Errorf("stranger %s was never dialed: the test proves nothing about it", name)
		}
	}
	// The misnamed stranger proves a certificate of this CA, so the
	// fan-out calls it (as a node, without the token); the others never
	// complete a handshake.
	if strangers["s-plain"].calls()+strangers["s-otherca"].calls() > 0 {
		t.Error("a stranger without a certificate of the cluster CA received a call")
	}
	// The recorder works: the misnamed stranger was called, without token.
	if strangers["s-misname"].calls() == 0 {
		t.Error("the misnamed stranger (a certificate of this CA) was never called: the token check above saw nothing")
	}
}

// adminClient dials tn's admin API with tc and an optional token.
func adminClient(t *testing.T, tn *clustertest.Node, tc *tls.Config, token string) (gwelbv1.AdminClient, context.Context) {
	t.Helper()
	cc, err := grpc.NewClient(tn.Node.GRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	if token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	}
	return gwelbv1.NewAdminClient(cc), ctx
}

// TestAdminAuthByCertificate pins authorize (DESIGN.md §4) over real TLS:
// an operator client certificate of the CA writes without a token; the
// node-only RPCs (Apply, CatchUp) refuse the operator token and the client
// certificate; a node certificate of another CA does not get through the
// handshake, token or not.
func TestAdminAuthByCertificate(t *testing.T) {
	c := clustertest.New(t, 3)
	f := c.Followers()[0]
	ca := c.PKI().CAFile()

	cert, key := c.PKI().Client("alice")
	op, err := pki.OperatorClientConfig(ca, cert, key, "")
	if err != nil {
		t.Fatal(err)
	}
	cl, ctx := adminClient(t, f, op, "")
	if _, err := cl.PutMember(ctx, &gwelbv1.PutMemberRequest{Member: &gwelbv1.Member{Pool: "backend", Route: "cert", Url: c.GWE["1"].URL, Weight: 1}}); err != nil {
		t.Fatalf("PutMember with an operator client certificate, through a follower: %v", err)
	}
	cmd, err := fsm.EncodeCommand(&gwelbv1.Command{Op: &gwelbv1.Command_RemoveMember{RemoveMember: &gwelbv1.RemoveMember{Pool: "backend", Route: "cert"}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Apply(ctx, &gwelbv1.ApplyRequest{Command: cmd}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("Apply with an operator client certificate: %v, want PermissionDenied", err)
	}
	tokenOnly, err := pki.OperatorClientConfig(ca, "", "", "")
	if err != nil {
		t.Fatal(err)
	}
	cl, ctx = adminClient(t, f, tokenOnly, clustertest.Token)
	if _, err := cl.Apply(ctx, &gwelbv1.ApplyRequest{Command: cmd}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("Apply with the operator token: %v, want PermissionDenied", err)
	}
	if _, err := cl.CatchUp(ctx, &gwelbv1.CatchUpRequest{Node: "x"}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("CatchUp with the operator token: %v, want PermissionDenied", err)
	}
	cl, ctx = adminClient(t, f, tokenOnly, "")
	if _, err := cl.Status(ctx, &gwelbv1.StatusRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("Status with neither token nor certificate: %v, want Unauthenticated", err)
	}

	other := clustertest.NewPKI(t).Node("n9")
	pair, err := tls.LoadX509KeyPair(other.CertFile, other.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	// Presented whatever the server asks for (crypto/tls would otherwise
	// send no certificate the server's CA list does not name).
	foreign := tokenOnly.Clone()
	foreign.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &pair, nil }
	cl, ctx = adminClient(t, f, foreign, clustertest.Token)
	if _, err := cl.Apply(ctx, &gwelbv1.ApplyRequest{Command: cmd}); status.Code(err) != codes.Unavailable {
		t.Errorf("Apply with another CA's node certificate: %v, want the handshake refused (Unavailable)", err)
	}
	if _, ok := members(c.WaitLeader())["backend/cert"]; !ok {
		t.Error("a refused Apply removed the member")
	}
}

// TestInsecureShowsInStatus: a node started outside -dev with insecure:
// true says so in Status (gwelbctl status shows it); a secure node does not.
func TestInsecureShowsInStatus(t *testing.T) {
	c := clustertest.NewEmpty(t)
	for _, insecure := range []bool{true, false} {
		cfg := c.NodeConfig(fmt.Sprintf("solo-%v", insecure))
		if insecure {
			clustertest.Insecure(0, &cfg)
		}
		cfg.BootstrapExpect = 1
		tn := c.Start(cfg)
		cl, ctx := c.Admin(tn)
		st, err := cl.Status(ctx, &gwelbv1.StatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if st.GetInsecure() != insecure {
			t.Errorf("%s: Status.insecure = %v, want %v", cfg.Name, st.GetInsecure(), insecure)
		}
	}
}
