package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/gwelb/gwelb/internal/rpcerr"
	"github.com/gwelb/gwelb/internal/snapstream"
	"github.com/gwelb/gwelb/internal/testnet"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

const testToken = "s3cret"

// testNow is the CLI's clock in tests; ages are computed against it.
var testNow = time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)

// fakeAdmin is a canned gwelbv1.AdminServer that records what it is sent.
type fakeAdmin struct {
	gwelbv1.UnimplementedAdminServer

	mu       sync.Mutex
	status   *gwelbv1.StatusResponse
	route    *gwelbv1.RouteResponse
	err      error // returned by every call when set
	reqs     []proto.Message
	snapshot []byte // sent by SnapshotSave in 10000-byte chunks
	restored []byte // received by SnapshotRestore
	chunks   []int  // sizes of the chunks received by SnapshotRestore
	events   []*gwelbv1.WatchEvent
	block    bool // Watch waits for the client to go after the events
}

func (f *fakeAdmin) record(m proto.Message) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = append(f.reqs, m)
	return f.err
}

// lastReq returns the last request received.
func (f *fakeAdmin) lastReq(t *testing.T) proto.Message {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.reqs) == 0 {
		t.Fatal("server received no request")
	}
	return f.reqs[len(f.reqs)-1]
}

// Status returns the canned status.
func (f *fakeAdmin) Status(_ context.Context, r *gwelbv1.StatusRequest) (*gwelbv1.StatusResponse, error) {
	if err := f.record(r); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status, nil
}

// Join answers that every address joined.
func (f *fakeAdmin) Join(_ context.Context, r *gwelbv1.JoinRequest) (*gwelbv1.JoinResponse, error) {
	if err := f.record(r); err != nil {
		return nil, err
	}
	return &gwelbv1.JoinResponse{Joined: int32(len(r.GetAddrs()))}, nil
}

// Leave records the request.
func (f *fakeAdmin) Leave(_ context.Context, r *gwelbv1.LeaveRequest) (*gwelbv1.LeaveResponse, error) {
	if err := f.record(r); err != nil {
		return nil, err
	}
	return &gwelbv1.LeaveResponse{}, nil
}

// PutMember answers index 42.
func (f *fakeAdmin) PutMember(_ context.Context, r *gwelbv1.PutMemberRequest) (*gwelbv1.WriteResponse, error) {
	if err := f.record(r); err != nil {
		return nil, err
	}
	return &gwelbv1.WriteResponse{Index: 42}, nil
}

// RemoveMember answers index 43.
func (f *fakeAdmin) RemoveMember(_ context.Context, r *gwelbv1.RemoveMemberRequest) (*gwelbv1.WriteResponse, error) {
	if err := f.record(r); err != nil {
		return nil, err
	}
	return &gwelbv1.WriteResponse{Index: 43}, nil
}

// SetMemberState answers index 44.
func (f *fakeAdmin) SetMemberState(_ context.Context, r *gwelbv1.SetMemberStateRequest) (*gwelbv1.WriteResponse, error) {
	if err := f.record(r); err != nil {
		return nil, err
	}
	return &gwelbv1.WriteResponse{Index: 44}, nil
}

// Route returns the canned route.
func (f *fakeAdmin) Route(_ context.Context, r *gwelbv1.RouteRequest) (*gwelbv1.RouteResponse, error) {
	if err := f.record(r); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.route, nil
}

// TransferLeadership names --node, or n2, as the new leader.
func (f *fakeAdmin) TransferLeadership(_ context.Context, r *gwelbv1.TransferLeadershipRequest) (*gwelbv1.TransferLeadershipResponse, error) {
	if err := f.record(r); err != nil {
		return nil, err
	}
	leader := r.GetNode()
	if leader == "" {
		leader = "n2"
	}
	return &gwelbv1.TransferLeadershipResponse{Leader: leader}, nil
}

// Watch sends the canned events, then ends or waits for the client.
func (f *fakeAdmin) Watch(r *gwelbv1.WatchRequest, stream grpc.ServerStreamingServer[gwelbv1.WatchEvent]) error {
	if err := f.record(r); err != nil {
		return err
	}
	for _, ev := range f.events {
		if err := stream.Send(ev); err != nil {
			return err
		}
	}
	if f.block {
		<-stream.Context().Done()
		return status.FromContextError(stream.Context().Err()).Err()
	}
	return nil
}

// SnapshotSave streams the canned snapshot.
func (f *fakeAdmin) SnapshotSave(r *gwelbv1.SnapshotSaveRequest, stream grpc.ServerStreamingServer[gwelbv1.SnapshotChunk]) error {
	if err := f.record(r); err != nil {
		return err
	}
	for data := f.snapshot; len(data) > 0; {
		n := min(len(data), 10000)
		if err := stream.Send(&gwelbv1.SnapshotChunk{Data: data[:n]}); err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

// SnapshotRestore collects the chunks and answers index 77.
func (f *fakeAdmin) SnapshotRestore(stream grpc.ClientStreamingServer[gwelbv1.SnapshotChunk, gwelbv1.SnapshotRestoreResponse]) error {
	if err := f.record(&gwelbv1.SnapshotChunk{}); err != nil {
		return err
	}
	data, err := snapstream.Receive(func() (*gwelbv1.SnapshotChunk, error) {
		c, err := stream.Recv()
		if err == nil {
			f.mu.Lock()
			f.chunks = append(f.chunks, len(c.GetData()))
			f.mu.Unlock()
		}
		return c, err
	}, snapstream.MaxBytes)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.restored = data
	f.mu.Unlock()
	return stream.SendAndClose(&gwelbv1.SnapshotRestoreResponse{Index: 77})
}

// checkToken refuses calls without the test token, as a real node does.
func checkToken(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("authorization"); len(v) != 1 || v[0] != "Bearer "+testToken {
		return status.Error(codes.Unauthenticated, "missing or wrong token")
	}
	return nil
}

// startServer serves f on a loopback port and returns its address.
func startServer(t *testing.T, f *fakeAdmin, opts ...grpc.ServerOption) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts = append(opts,
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if err := checkToken(ctx); err != nil {
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if err := checkToken(ss.Context()); err != nil {
				return err
			}
			return h(srv, ss)
		}),
	)
	s := grpc.NewServer(opts...)
	gwelbv1.RegisterAdminServer(s, f)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(lis)
	}()
	t.Cleanup(func() {
		s.Stop()
		<-done
	})
	return lis.Addr().String()
}

type result struct {
	stdout, stderr string
	code           int
}

// cliEnv runs gwelbctl with args and the given environment variables.
func cliEnv(t *testing.T, vars map[string]string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	e := env{getenv: func(k string) string { return vars[k] }, now: func() time.Time { return testNow }}
	code := runWith(t.Context(), e, args, &stdout, &stderr)
	return result{stdout.String(), stderr.String(), code}
}

// cli runs gwelbctl against addr with the test token.
func cli(t *testing.T, addr string, args ...string) result {
	t.Helper()
	return cliEnv(t, nil, append([]string{"--addr", addr, "--token", testToken}, args...)...)
}

// wantOK fails the test unless r succeeded silently on stderr.
func wantOK(t *testing.T, r result) {
	t.Helper()
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("exit %d, stderr %q, stdout:\n%s", r.code, r.stderr, r.stdout)
	}
}

// wantFail fails the test unless r exited with code and printed exactly one
// line, "gwelbctl: " followed by a message matching pattern, on stderr.
func wantFail(t *testing.T, r result, code int, pattern string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit %d, want %d; stderr %q", r.code, code, r.stderr)
	}
	if !strings.HasPrefix(r.stderr, "gwelbctl: ") || strings.Count(r.stderr, "\n") != 1 || !strings.HasSuffix(r.stderr, "\n") {
		t.Fatalf("stderr is not one gwelbctl line: %q", r.stderr)
	}
	if !regexp.MustCompile(pattern).MatchString(r.stderr) {
		t.Fatalf("stderr %q does not match %q", r.stderr, pattern)
	}
}

// wantLine fails the test unless out has a line matching pattern.
func wantLine(t *testing.T, out, pattern string) {
	t.Helper()
	re := regexp.MustCompile(pattern)
	for l := range strings.SplitSeq(out, "\n") {
		if re.MatchString(l) {
			return
		}
	}
	t.Fatalf("no line matches %q in:\n%s", pattern, out)
}

func ago(d time.Duration) int64 { return testNow.Add(-d).UnixNano() }

func cannedStatus() *gwelbv1.StatusResponse {
	return &gwelbv1.StatusResponse{
		Node:           "n1",
		RaftState:      "Leader",
		Leader:         "n1",
		LeaderGrpcAddr: "127.0.0.1:7001",
		Peers: []*gwelbv1.RaftPeer{
			{Id: "n1", Address: "127.0.0.1:7000", Suffrage: "Voter", Leader: true},
			{Id: "n2", Address: "127.0.0.1:7010", Suffrage: "Voter"},
		},
		Gossip: []*gwelbv1.GossipMember{
			{Name: "n1", Address: "127.0.0.1:7946", Status: "alive", GrpcAddr: "127.0.0.1:7001", RaftAddr: "127.0.0.1:7000"},
			{Name: "n2", Address: "127.0.0.1:7956", Status: "suspect", GrpcAddr: "127.0.0.1:7011", RaftAddr: "127.0.0.1:7010"},
		},
		AppliedIndex: 42,
		LastLogIndex: 43,
		TableIndex:   41,
		Pools: []*gwelbv1.PoolStatus{
			{
				Pool: &gwelbv1.Pool{Name: "frontend", Prefix: "/frontend"},
				Members: []*gwelbv1.MemberStatus{
					{
						Member: &gwelbv1.Member{Pool: "frontend", Route: "1", Url: "http://127.0.0.1:9081", Weight: 1,
							VerdictSinceUnixNanos: ago(192 * time.Second)},
						InFlight: 4,
						Quarantined: []*gwelbv1.LocalQuarantine{
							{Node: "n2", Route: "1", UntilUnixNanos: testNow.Add(7 * time.Second).UnixNano(), RemainingMs: 7000},
						},
						Observations: []*gwelbv1.Observation{
							{Pool: "frontend", Route: "1", Node: "n1", UnixNanos: ago(3 * time.Minute)},
							{Pool: "frontend", Route: "1", Node: "n2", Down: true, UnixNanos: ago(12 * time.Second), Cause: "connection refused"},
						},
					},
					{
						Member: &gwelbv1.Member{Pool: "frontend", Route: "2", Url: "http://127.0.0.1:9082", Weight: 2,
							State: gwelbv1.AdminState_ADMIN_STATE_DRAIN, Verdict: gwelbv1.Verdict_VERDICT_DOWN,
							VerdictSinceUnixNanos: ago(2 * time.Hour), VerdictCause: "majority observes down"},
					},
				},
			},
			{
				Pool: &gwelbv1.Pool{Name: "backend", Prefix: "/backend"},
				Members: []*gwelbv1.MemberStatus{
					{Member: &gwelbv1.Member{Pool: "backend", Route: "b1", Url: "http://127.0.0.1:9091", Weight: 1,
						State: gwelbv1.AdminState_ADMIN_STATE_DISABLED}},
				},
			},
		},
	}
}

func TestStatus(t *testing.T) {
	f := &fakeAdmin{status: cannedStatus()}
	addr := startServer(t, f)

	r := cli(t, addr, "status")
	wantOK(t, r)
	for _, p := range []string{
		`^Node:\s+n1$`,
		`^Raft state:\s+Leader$`,
		`^Leader:\s+n1 \(127\.0\.0\.1:7001\)$`,
		`^Applied index:\s+42$`,
		`^Last log index:\s+43$`,
		`^Table index:\s+41$`,
		`^ID\s+ADDRESS\s+SUFFRAGE\s+LEADER$`,
		`^n1\s+127\.0\.0\.1:7000\s+Voter\s+\*$`,
		`^n2\s+127\.0\.0\.1:7010\s+Voter\s+-$`,
		`^n2\s+127\.0\.0\.1:7956\s+suspect\s+127\.0\.0\.1:7011\s+127\.0\.0\.1:7010$`,
		`^Pool frontend \(prefix /frontend\):$`,
		`^ROUTE\s+URL\s+WEIGHT\s+STATE\s+VERDICT\s+SINCE\s+CAUSE\s+IN-FLIGHT\s+QUARANTINED\s+OBSERVATIONS$`,
		`^1\s+http://127\.0\.0\.1:9081\s+1\s+active\s+up\s+3m12s\s+-\s+4\s+n2 until 10:00:07Z \(7s left\)\s+n1=up 3m0s, n2=down 12s \(connection refused\)$`,
		`^2\s+http://127\.0\.0\.1:9082\s+2\s+drain\s+down\s+2h0m\s+majority observes down\s+0\s+-\s+-$`,
		`^b1\s+http://127\.0\.0\.1:9091\s+1\s+disabled\s+up\s+-\s+-\s+0\s+-\s+-$`,
	} {
		wantLine(t, r.stdout, p)
	}
	if strings.Contains(r.stdout, "Last contact") {
		t.Error("leader shows a last contact")
	}

	r = cli(t, addr, "status", "-o", "json")
	wantOK(t, r)
	var got gwelbv1.StatusResponse
	if err := protojson.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("status -o json does not parse: %v\n%s", err, r.stdout)
	}
	if !proto.Equal(&got, cannedStatus()) {
		t.Errorf("status -o json round trip differs:\n%s", r.stdout)
	}
	if !strings.Contains(r.stdout, "\n  \"node\": \"n1\",\n") || strings.Contains(r.stdout, "inFlight") {
		t.Errorf("want proto field names indented by 2:\n%s", r.stdout)
	}
}

func TestStatusFollower(t *testing.T) {
	st := &gwelbv1.StatusResponse{Node: "n2", RaftState: "Follower", LastContactMs: 1500}
	addr := startServer(t, &fakeAdmin{status: st})
	r := cli(t, addr, "status")
	wantOK(t, r)
	wantLine(t, r.stdout, `^Leader:\s+\(none\)$`)
	wantLine(t, r.stdout, `^Last contact:\s+1\.5s$`)
	wantLine(t, r.stdout, `^\(none\)$`)
}

func TestMemberList(t *testing.T) {
	addr := startServer(t, &fakeAdmin{status: cannedStatus()})

	r := cli(t, addr, "member", "list")
	wantOK(t, r)
	wantLine(t, r.stdout, `^POOL\s+ROUTE\s+URL\s+WEIGHT\s+STATE\s+VERDICT\s+IN-FLIGHT$`)
	wantLine(t, r.stdout, `^frontend\s+2\s+http://127\.0\.0\.1:9082\s+2\s+drain\s+down\s+0$`)
	wantLine(t, r.stdout, `^backend\s+b1\s+http://127\.0\.0\.1:9091\s+1\s+disabled\s+up\s+0$`)

	r = cli(t, addr, "member", "list", "--pool", "backend")
	wantOK(t, r)
	if strings.Contains(r.stdout, "frontend") || !strings.Contains(r.stdout, "b1") {
		t.Errorf("--pool backend:\n%s", r.stdout)
	}

	r = cli(t, addr, "member", "list", "--pool", "frontend", "-o", "json")
	wantOK(t, r)
	var raw []json.RawMessage
	if err := json.Unmarshal([]byte(r.stdout), &raw); err != nil || len(raw) != 2 {
		t.Fatalf("want a JSON array of 2 members, got %v:\n%s", err, r.stdout)
	}
	var ms gwelbv1.MemberStatus
	if err := protojson.Unmarshal(raw[0], &ms); err != nil {
		t.Fatal(err)
	}
	if ms.GetMember().GetRoute() != "1" || ms.GetInFlight() != 4 || len(ms.GetObservations()) != 2 {
		t.Errorf("first member: %v", &ms)
	}

	wantFail(t, cli(t, addr, "member", "list", "--pool", "nope"), exitNotFound, `pool "nope" not found`)
}

func TestMemberAdd(t *testing.T) {
	f := &fakeAdmin{}
	addr := startServer(t, f)

	r := cli(t, addr, "member", "add", "frontend", "GWE_F_3", "http://127.0.0.1:9083", "--weight", "3", "--state", "drain")
	wantOK(t, r)
	if want := "member frontend/GWE_F_3 added (http://127.0.0.1:9083, weight 3, drain) (index 42)\n"; r.stdout != want {
		t.Errorf("stdout %q, want %q", r.stdout, want)
	}
	req := f.lastReq(t).(*gwelbv1.PutMemberRequest)
	want := &gwelbv1.Member{Pool: "frontend", Route: "GWE_F_3", Url: "http://127.0.0.1:9083", Weight: 3, State: gwelbv1.AdminState_ADMIN_STATE_DRAIN}
	if !proto.Equal(req.GetMember(), want) {
		t.Errorf("member sent %v, want %v", req.GetMember(), want)
	}
	if !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(req.GetRequestId()) {
		t.Errorf("request_id %q is not 8 random bytes in hex", req.GetRequestId())
	}
	first := req.GetRequestId()

	r = cli(t, addr, "member", "add", "frontend", "GWE_F_3", "https://gwe.example:9443", "-o", "json")
	wantOK(t, r)
	var wr gwelbv1.WriteResponse
	if err := protojson.Unmarshal([]byte(r.stdout), &wr); err != nil || wr.GetIndex() != 42 {
		t.Errorf("json %q: %v", r.stdout, err)
	}
	req = f.lastReq(t).(*gwelbv1.PutMemberRequest)
	if req.GetMember().GetWeight() != 1 || req.GetMember().GetState() != gwelbv1.AdminState_ADMIN_STATE_ACTIVE {
		t.Errorf("defaults: %v", req.GetMember())
	}
	if req.GetRequestId() == first {
		t.Error("two writes share a request_id")
	}

	for _, args := range [][]string{
		{"member", "add", "frontend", "1", "http://h:1", "--state", "paused"},
		{"member", "add", "frontend", "1", "http://h:1", "--weight", "x"},
	} {
		r := cli(t, addr, args...)
		if r.code != exitUsage || !strings.HasPrefix(r.stderr, "gwelbctl: ") || !strings.Contains(r.stderr, "Usage:") {
			t.Errorf("%v: exit %d, stderr %q", args, r.code, r.stderr)
		}
	}
	// An invalid member is judged by the cluster's validator before it is
	// sent: one line, exit 1, the cluster's words.
	f.mu.Lock()
	sent := len(f.reqs)
	f.mu.Unlock()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"not a url"}, `gwelbctl: put member frontend/1: url "not a url": want http://host:port or https://host:port` + "\n"},
		{[]string{"ftp://h/"}, `gwelbctl: put member frontend/1: url "ftp://h/": want http://host:port or https://host:port` + "\n"},
		{[]string{"http://h:1", "--weight", "-1"}, `gwelbctl: put member frontend/1: weight -1: want 1..1000` + "\n"},
	} {
		r := cli(t, addr, append([]string{"member", "add", "frontend", "1"}, tc.args...)...)
		if r.code != exitError || r.stderr != tc.want {
			t.Errorf("%v: exit %d, stderr %q; want exit 1, %q", tc.args, r.code, r.stderr, tc.want)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.reqs) != sent {
		t.Error("an invalid member was sent to the cluster")
	}
}

func TestMemberChanges(t *testing.T) {
	f := &fakeAdmin{}
	addr := startServer(t, f)
	for _, tc := range []struct {
		verb  string
		state gwelbv1.AdminState
		out   string
	}{
		{"drain", gwelbv1.AdminState_ADMIN_STATE_DRAIN, "member frontend/2 is now drain (index 44)\n"},
		{"disable", gwelbv1.AdminState_ADMIN_STATE_DISABLED, "member frontend/2 is now disabled (index 44)\n"},
		{"enable", gwelbv1.AdminState_ADMIN_STATE_ACTIVE, "member frontend/2 is now active (index 44)\n"},
	} {
		r := cli(t, addr, "member", tc.verb, "frontend", "2")
		wantOK(t, r)
		if r.stdout != tc.out {
			t.Errorf("%s: stdout %q, want %q", tc.verb, r.stdout, tc.out)
		}
		req, ok := f.lastReq(t).(*gwelbv1.SetMemberStateRequest)
		if !ok || req.GetPool() != "frontend" || req.GetRoute() != "2" || req.GetState() != tc.state || req.GetRequestId() == "" {
			t.Errorf("%s sent %v", tc.verb, f.lastReq(t))
		}
	}

	r := cli(t, addr, "member", "remove", "backend", "b1")
	wantOK(t, r)
	if r.stdout != "member backend/b1 removed (index 43)\n" {
		t.Errorf("remove: %q", r.stdout)
	}
	req, ok := f.lastReq(t).(*gwelbv1.RemoveMemberRequest)
	if !ok || req.GetPool() != "backend" || req.GetRoute() != "b1" || req.GetRequestId() == "" {
		t.Errorf("remove sent %v", f.lastReq(t))
	}
}

func TestRoute(t *testing.T) {
	f := &fakeAdmin{route: &gwelbv1.RouteResponse{Node: "n1", TableIndex: 41, Route: "2", Url: "http://127.0.0.1:9082", Reason: "sticky"}}
	addr := startServer(t, f)

	r := cli(t, addr, "route", "frontend", ".2")
	wantOK(t, r)
	wantLine(t, r.stdout, `^NODE\s+INDEX\s+ROUTE\s+URL\s+REASON\s+QUARANTINED$`)
	wantLine(t, r.stdout, `^n1\s+41\s+2\s+http://127\.0\.0\.1:9082\s+sticky\s+-$`)
	if req := f.lastReq(t).(*gwelbv1.RouteRequest); req.GetPool() != "frontend" || req.GetValue() != ".2" {
		t.Errorf("sent %v", req)
	}

	r = cli(t, addr, "route", "frontend", ".2", "-o", "json")
	wantOK(t, r)
	var rr gwelbv1.RouteResponse
	if err := protojson.Unmarshal([]byte(r.stdout), &rr); err != nil || !proto.Equal(&rr, f.route) {
		t.Errorf("json %q: %v", r.stdout, err)
	}
}

// routeCluster starts len(routes) fake nodes answering the given routes, the
// first of which lists them all as alive gossip members, plus a dead one.
func routeCluster(t *testing.T, routes ...string) (string, []string) {
	t.Helper()
	var addrs []string
	st := &gwelbv1.StatusResponse{Node: "n0"}
	for i, route := range routes {
		name := "n" + string(rune('0'+i))
		f := &fakeAdmin{route: &gwelbv1.RouteResponse{Node: name, TableIndex: uint64(40 + i), Route: route, Url: "http://127.0.0.1:908" + route, Reason: "fallback"}}
		if i == 0 {
			f.status = st
		}
		addr := startServer(t, f)
		addrs = append(addrs, addr)
		st.Gossip = append(st.Gossip, &gwelbv1.GossipMember{Name: name, Status: "alive", GrpcAddr: addr})
	}
	st.Gossip = append(st.Gossip,
		&gwelbv1.GossipMember{Name: "dead", Status: "dead", GrpcAddr: testnet.ClosedAddr(t)},
		&gwelbv1.GossipMember{Name: "nogrpc", Status: "alive"},
	)
	return addrs[0], addrs
}

func TestRouteAllNodesDisagree(t *testing.T) {
	addr, addrs := routeCluster(t, "1", "2")

	r := cli(t, addr, "route", "frontend", "abc", "--all-nodes")
	wantFail(t, r, exitDisagreement, `nodes disagree on the route of "abc" in pool frontend`)
	wantLine(t, r.stdout, `^NODE\s+ADDR\s+INDEX\s+ROUTE\s+URL\s+REASON\s+QUARANTINED\s+ERROR$`)
	wantLine(t, r.stdout, `^n0\s+`+regexp.QuoteMeta(addrs[0])+`\s+40\s+1\s+http://127\.0\.0\.1:9081\s+fallback\s+-\s+-$`)
	wantLine(t, r.stdout, `^n1\s+`+regexp.QuoteMeta(addrs[1])+`\s+41\s+2\s+http://127\.0\.0\.1:9082\s+fallback\s+-\s+-$`)
	wantLine(t, r.stdout, `^DISAGREEMENT: n0 -> 1 at index 40; n1 -> 2 at index 41 \(table indexes differ`)
	if strings.Contains(r.stdout, "dead") || strings.Contains(r.stdout, "nogrpc") {
		t.Errorf("asked a node that is not alive or has no gRPC address:\n%s", r.stdout)
	}

	r = cli(t, addr, "route", "frontend", "abc", "--all-nodes", "-o", "json")
	if r.code != exitDisagreement {
		t.Fatalf("exit %d", r.code)
	}
	var rows []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &rows); err != nil {
		t.Fatalf("not a JSON array: %v\n%s", err, r.stdout)
	}
	if len(rows) != 2 || rows[0]["node"] != "n0" || rows[0]["addr"] != addrs[0] || rows[0]["table_index"] != 40.0 ||
		rows[0]["route"] != "1" || rows[0]["url"] != "http://127.0.0.1:9081" || rows[0]["reason"] != "fallback" || rows[1]["route"] != "2" {
		t.Errorf("rows: %v", rows)
	}
}

func TestRouteAllNodesAgree(t *testing.T) {
	addr, _ := routeCluster(t, "1", "1", "1")
	r := cli(t, addr, "route", "frontend", "abc", "--all-nodes")
	wantOK(t, r)
	if strings.Contains(r.stdout, "DISAGREEMENT") || strings.Count(r.stdout, "\n") != 4 {
		t.Errorf("stdout:\n%s", r.stdout)
	}
}

func TestRouteAllNodesUnreachable(t *testing.T) {
	addr, _ := routeCluster(t, "1")
	f := &fakeAdmin{status: &gwelbv1.StatusResponse{Node: "n0", Gossip: []*gwelbv1.GossipMember{
		{Name: "n0", Status: "alive", GrpcAddr: addr},
		{Name: "gone", Status: "alive", GrpcAddr: testnet.ClosedAddr(t)},
	}}}
	r := cli(t, startServer(t, f), "route", "frontend", "abc", "--all-nodes")
	wantFail(t, r, exitError, `1 of 2 nodes did not answer`)
	wantLine(t, r.stdout, `^gone\s+\S+\s+-\s+-\s+-\s+-\s+-\s+cannot reach gwelb node at \S+: connection refused$`)
}

func TestRaft(t *testing.T) {
	f := &fakeAdmin{status: cannedStatus()}
	addr := startServer(t, f)

	r := cli(t, addr, "raft", "peers")
	wantOK(t, r)
	wantLine(t, r.stdout, `^n1\s+127\.0\.0\.1:7000\s+Voter\s+\*$`)

	r = cli(t, addr, "raft", "peers", "-o", "json")
	wantOK(t, r)
	var peers []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &peers); err != nil || len(peers) != 2 || peers[0]["leader"] != true || peers[1]["id"] != "n2" {
		t.Errorf("peers json %v: %s", err, r.stdout)
	}

	r = cli(t, addr, "raft", "transfer-leader", "--node", "n3")
	wantOK(t, r)
	if r.stdout != "leadership transferred to n3\n" || f.lastReq(t).(*gwelbv1.TransferLeadershipRequest).GetNode() != "n3" {
		t.Errorf("stdout %q, sent %v", r.stdout, f.lastReq(t))
	}
	r = cli(t, addr, "raft", "transfer-leader", "-o", "json")
	wantOK(t, r)
	if f.lastReq(t).(*gwelbv1.TransferLeadershipRequest).GetNode() != "" || !strings.Contains(r.stdout, `"leader": "n2"`) {
		t.Errorf("stdout %q", r.stdout)
	}
}

func TestJoinLeave(t *testing.T) {
	f := &fakeAdmin{}
	addr := startServer(t, f)

	r := cli(t, addr, "join", "127.0.0.1:7946", "127.0.0.1:7956")
	wantOK(t, r)
	if r.stdout != "joined 2 of 2 node(s)\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	if got := f.lastReq(t).(*gwelbv1.JoinRequest).GetAddrs(); len(got) != 2 || got[1] != "127.0.0.1:7956" {
		t.Errorf("sent %v", got)
	}
	r = cli(t, addr, "join", "127.0.0.1:7946", "-o", "json")
	wantOK(t, r)
	if !strings.Contains(r.stdout, `"joined": 1`) {
		t.Errorf("stdout %q", r.stdout)
	}

	r = cli(t, addr, "leave")
	wantOK(t, r)
	if r.stdout != "node at "+addr+" left the cluster\n" || f.lastReq(t).(*gwelbv1.LeaveRequest).GetNode() != "" {
		t.Errorf("stdout %q, sent %v", r.stdout, f.lastReq(t))
	}
	r = cli(t, addr, "leave", "--node", "n3")
	wantOK(t, r)
	if r.stdout != "node n3 removed from the cluster\n" || f.lastReq(t).(*gwelbv1.LeaveRequest).GetNode() != "n3" {
		t.Errorf("stdout %q, sent %v", r.stdout, f.lastReq(t))
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	data := make([]byte, 200_000)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	f := &fakeAdmin{snapshot: data}
	addr := startServer(t, f)
	path := filepath.Join(t.TempDir(), "gwelb.snap")

	r := cli(t, addr, "snapshot", "save", path)
	wantOK(t, r)
	if want := "saved snapshot: 200000 bytes to " + path + "\n"; r.stdout != want {
		t.Errorf("stdout %q, want %q", r.stdout, want)
	}
	saved, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(saved, data) {
		t.Fatalf("saved file differs (%d bytes, %v)", len(saved), err)
	}
	if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("temporary file left behind: %v", err)
	}

	r = cli(t, addr, "snapshot", "restore", path)
	wantOK(t, r)
	if want := "restored snapshot: 200000 bytes from " + path + " (index 77)\n"; r.stdout != want {
		t.Errorf("stdout %q, want %q", r.stdout, want)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !bytes.Equal(f.restored, data) {
		t.Fatalf("restored %d bytes differ from the %d saved", len(f.restored), len(data))
	}
	if want := []int{65536, 65536, 65536, 3392}; len(f.chunks) != len(want) || f.chunks[0] != want[0] || f.chunks[3] != want[3] {
		t.Errorf("chunks %v, want %v", f.chunks, want)
	}
}

func TestSnapshotErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "empty.snap")
	addr := startServer(t, &fakeAdmin{})

	r := cli(t, addr, "snapshot", "save", path)
	wantFail(t, r, exitError, `empty snapshot`)
	if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("temporary file left behind: %v", err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("empty snapshot saved: %v", err)
	}
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	wantFail(t, cli(t, addr, "snapshot", "restore", path), exitError, `is empty`)
	wantFail(t, cli(t, addr, "snapshot", "restore", filepath.Join(dir, "missing")), exitError, `open snapshot: .*no such file`)

	// A failure mid-restore is the server's status, not a broken pipe.
	if err := os.WriteFile(path, make([]byte, 300_000), 0o600); err != nil {
		t.Fatal(err)
	}
	f := &fakeAdmin{err: rpcerr.NoLeader("election in progress")}
	wantFail(t, cli(t, startServer(t, f), "snapshot", "restore", path), exitNoLeader, `^gwelbctl: election in progress\n$`)
}

// lineWriter is a goroutine-safe buffer that reports each write.
type lineWriter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes chan struct{}
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, err := w.buf.Write(p)
	select {
	case w.writes <- struct{}{}:
	default:
	}
	return n, err
}

func (w *lineWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func watchEvents() []*gwelbv1.WatchEvent {
	st := cannedStatus()
	return []*gwelbv1.WatchEvent{
		{TableIndex: 41, Pools: st.GetPools()},
		{TableIndex: 42, Pools: st.GetPools()[1:]},
	}
}

func TestWatch(t *testing.T) {
	addr := startServer(t, &fakeAdmin{events: watchEvents()})

	r := cli(t, addr, "watch")
	wantOK(t, r)
	want := "2026-11-24T10:00:00Z index 41  frontend: 1=up 2=down,drain  backend: b1=up,disabled\n" +
		"2026-11-24T10:00:00Z index 42  backend: b1=up,disabled\n"
	if r.stdout != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", r.stdout, want)
	}

	r = cli(t, addr, "watch", "-o", "json", "--timeout", "1ns")
	wantOK(t, r)
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 lines:\n%s", r.stdout)
	}
	for i, l := range lines {
		var ev gwelbv1.WatchEvent
		if err := protojson.Unmarshal([]byte(l), &ev); err != nil || !proto.Equal(&ev, watchEvents()[i]) {
			t.Errorf("line %d %q: %v", i, l, err)
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, []byte(l)); err != nil || compact.String() != l {
			t.Errorf("line %d is not compact JSON: %q", i, l)
		}
	}
}

func TestWatchInterrupt(t *testing.T) {
	addr := startServer(t, &fakeAdmin{events: watchEvents()[:1], block: true})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	out := &lineWriter{writes: make(chan struct{}, 1)}
	var stderr bytes.Buffer
	done := make(chan int)
	go func() {
		e := env{getenv: func(string) string { return "" }, now: func() time.Time { return testNow }}
		done <- runWith(ctx, e, []string{"--addr", addr, "--token", testToken, "watch"}, out, &stderr)
	}()
	<-out.writes // the first event is printed; the stream stays open
	cancel()     // Ctrl-C
	if code := <-done; code != 0 || stderr.Len() != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
	if !strings.Contains(out.String(), "index 41") {
		t.Errorf("stdout %q", out.String())
	}
}

// A watch whose node goes away under it cannot reach the node (exit 3),
// like one that never got there: the stream's headers came from the node,
// its end did not. Counted by the headers, it was exit 1, "the node is
// unavailable".
func TestWatchNodeGone(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	gwelbv1.RegisterAdminServer(s, &fakeAdmin{events: watchEvents()[:1], block: true})
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = s.Serve(lis)
	}()
	t.Cleanup(func() { s.Stop(); <-served })

	out := &lineWriter{writes: make(chan struct{}, 1)}
	var stderr bytes.Buffer
	done := make(chan int)
	go func() {
		e := env{getenv: func(string) string { return "" }, now: func() time.Time { return testNow }}
		done <- runWith(t.Context(), e, []string{"--addr", lis.Addr().String(), "--token", testToken, "watch"}, out, &stderr)
	}()
	<-out.writes // the first event is printed; the stream stays open
	s.Stop()     // the node dies: its connections close
	if code := <-done; code != exitUnreachable || !strings.HasPrefix(stderr.String(), "gwelbctl: cannot reach gwelb node at "+lis.Addr().String()+": ") {
		t.Fatalf("exit %d, stderr %q, want exit %d, cannot reach", code, stderr.String(), exitUnreachable)
	}
}

func TestExitCodes(t *testing.T) {
	ok := startServer(t, &fakeAdmin{status: cannedStatus()})
	closed := testnet.ClosedAddr(t)
	// The reason decides exit 4, not the words: this message avoids them,
	// and the next two servers use them without the reason.
	noLeader := startServer(t, &fakeAdmin{err: rpcerr.NoLeader("between elections; try again shortly")})
	saysNoLeader := startServer(t, &fakeAdmin{err: status.Error(codes.Unavailable, "no leader election needed: node is shutting down")})
	otherDomain := startServer(t, &fakeAdmin{err: withInfo(t, codes.Unavailable, "no leader", "NO_LEADER", "example.com")})
	notFound := startServer(t, &fakeAdmin{err: status.Error(codes.NotFound, `member frontend/9 not found`)})
	denied := startServer(t, &fakeAdmin{err: status.Error(codes.PermissionDenied, "client certificate not allowed")})
	busy := startServer(t, &fakeAdmin{err: status.Error(codes.Unavailable, "node is shutting down")})
	invalid := startServer(t, &fakeAdmin{err: status.Error(codes.InvalidArgument, "weight must not exceed 1000")})

	for _, tc := range []struct {
		name    string
		addr    string
		args    []string
		code    int
		pattern string
	}{
		{"unreachable", closed, []string{"status"}, exitUnreachable, `^gwelbctl: cannot reach gwelb node at ` + regexp.QuoteMeta(closed) + `: connection refused\n$`},
		{"unreachable write", closed, []string{"member", "drain", "frontend", "1"}, exitUnreachable, `cannot reach gwelb node`},
		{"unreachable watch", closed, []string{"watch"}, exitUnreachable, `cannot reach gwelb node`},
		{"unreachable snapshot", closed, []string{"snapshot", "save", filepath.Join(t.TempDir(), "s")}, exitUnreachable, `cannot reach gwelb node`},
		{"no leader", noLeader, []string{"member", "drain", "frontend", "1"}, exitNoLeader, `^gwelbctl: between elections; try again shortly\n$`},
		{"no leader on a read", noLeader, []string{"status"}, exitNoLeader, `^gwelbctl: between elections; try again shortly\n$`},
		{"the words without the reason", saysNoLeader, []string{"member", "drain", "frontend", "1"}, exitError, `^gwelbctl: member drain: node at \S+ is unavailable: no leader election needed: node is shutting down\n$`},
		{"the reason of another domain", otherDomain, []string{"status"}, exitError, `^gwelbctl: status: node at \S+ is unavailable: no leader\n$`},
		{"not found", notFound, []string{"member", "remove", "frontend", "9"}, exitNotFound, `^gwelbctl: member frontend/9 not found\n$`},
		{"permission denied", denied, []string{"status"}, exitUnauthorised, `^gwelbctl: status: permission denied: client certificate not allowed\n$`},
		{"unavailable but reached", busy, []string{"status"}, exitError, `^gwelbctl: status: node at \S+ is unavailable: node is shutting down\n$`},
		{"other error", invalid, []string{"member", "add", "frontend", "1", "http://h:1", "--weight", "5"}, exitError, `^gwelbctl: member add: weight must not exceed 1000\n$`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantFail(t, cli(t, tc.addr, tc.args...), tc.code, tc.pattern)
		})
	}

	t.Run("wrong token", func(t *testing.T) {
		r := cliEnv(t, nil, "--addr", ok, "--token", "wrong", "status")
		wantFail(t, r, exitUnauthorised, `^gwelbctl: unauthorised: check --token / GWELB_TOKEN\n$`)
		r = cliEnv(t, nil, "--addr", ok, "member", "list")
		wantFail(t, r, exitUnauthorised, `unauthorised`)
	})
}

// withInfo is a status error with an ErrorInfo detail.
func withInfo(t *testing.T, code codes.Code, msg, reason, domain string) error {
	t.Helper()
	st, err := status.New(code, msg).WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: domain})
	if err != nil {
		t.Fatal(err)
	}
	return st.Err()
}

// TestRPCErrorMapping pins the whole mapping of rpcError: status code,
// reason and whether the node was reached decide the exit code; the
// message never does.
func TestRPCErrorMapping(t *testing.T) {
	for _, tc := range []struct {
		name    string
		err     error
		reached bool
		code    int
	}{
		{"unauthenticated", status.Error(codes.Unauthenticated, "missing or wrong token"), true, exitUnauthorised},
		{"permission denied", status.Error(codes.PermissionDenied, "no leader may see this"), true, exitUnauthorised},
		{"not found", status.Error(codes.NotFound, "no leader named n9"), true, exitNotFound},
		{"no leader reason", rpcerr.NoLeader("not leader"), true, exitNoLeader},
		{"no leader reason, connection dropped since", rpcerr.NoLeader("between elections"), false, exitNoLeader},
		{"no leader reason, wrapped", fmt.Errorf("relay: %w", rpcerr.NoLeader("x")), true, exitNoLeader},
		{"no leader reason on another code", withInfo(t, codes.FailedPrecondition, "x", rpcerr.ReasonNoLeader, rpcerr.Domain), true, exitError},
		{"no leader reason of another domain", withInfo(t, codes.Unavailable, "x", rpcerr.ReasonNoLeader, "example.com"), true, exitError},
		{"unavailable, not reached", status.Error(codes.Unavailable, "connection refused"), false, exitUnreachable},
		{"unavailable, not reached, saying no leader", status.Error(codes.Unavailable, "no leader"), false, exitUnreachable},
		{"unavailable, reached", status.Error(codes.Unavailable, "node shutting down"), true, exitError},
		{"unavailable, reached, saying no leader", status.Error(codes.Unavailable, "NO LEADER here"), true, exitError},
		{"deadline, not reached", status.Error(codes.DeadlineExceeded, "context deadline exceeded"), false, exitUnreachable},
		{"deadline, reached", context.DeadlineExceeded, true, exitError},
		{"canceled", context.Canceled, true, exitError},
		{"invalid argument", status.Error(codes.InvalidArgument, "no leader: weight"), true, exitError},
		{"not a status", fmt.Errorf("no leader"), true, exitError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := rpcError("op", "127.0.0.1:1", tc.reached, time.Second, tc.err)
			var ce *cliError
			if !errors.As(err, &ce) {
				t.Fatalf("rpcError returned %T %v, want a *cliError", err, err)
			}
			if ce.code != tc.code {
				t.Errorf("exit %d (%q), want %d", ce.code, ce.msg, tc.code)
			}
		})
	}
}

// TestAnswerBeatsConnectionState: an Unavailable the node sent is its own
// answer (exit 1) even when the connection does not yet say Ready. grpc-go
// hands a new connection to RPCs a moment before it reports it Ready, and a
// fast answer used to land in that moment as "cannot reach" (exit 3): CI
// saw it on "unavailable but reached".
func TestAnswerBeatsConnectionState(t *testing.T) {
	busy := startServer(t, &fakeAdmin{err: status.Error(codes.Unavailable, "node is shutting down")})
	a := &app{timeout: time.Second, token: testToken}
	n, err := a.dial(busy)
	if err != nil {
		t.Fatal(err)
	}
	defer n.close()
	// The stats handler marks the node's answer.
	_, err = n.api.Status(t.Context(), &gwelbv1.StatusRequest{})
	if !errors.As(err, new(answeredError)) || status.Code(err) != codes.Unavailable || status.Convert(err).Message() != "node is shutting down" {
		t.Fatalf("the node's own answer: %v (%T), want it marked answered with its status kept", err, err)
	}
	// A connection that never came up is not an answer.
	c, err := a.dial(testnet.ClosedAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	_, err = c.api.Status(t.Context(), &gwelbv1.StatusRequest{})
	if errors.As(err, new(answeredError)) || status.Code(err) != codes.Unavailable {
		t.Fatalf("refused connection: %v (%T), want an unmarked Unavailable", err, err)
	}
	// The marked answer decides on a connection that is not Ready.
	if st := c.cc.GetState(); st == connectivity.Ready {
		t.Fatalf("state %v, want a connection that is not Ready", st)
	}
	var ce *cliError
	if !errors.As(c.fail("status", answeredError{status.Error(codes.Unavailable, "node is shutting down")}), &ce) || ce.code != exitError {
		t.Fatalf("got %+v, want exit %d", ce, exitError)
	}
}

func TestUsageErrors(t *testing.T) {
	addr := startServer(t, &fakeAdmin{status: cannedStatus()})
	for _, args := range [][]string{
		{"member", "add", "frontend"},
		{"member", "remove", "frontend"},
		{"member", "drain"},
		{"member", "list", "extra"},
		{"route", "frontend"},
		{"join"},
		{"snapshot", "save"},
		{"status", "--bogus"},
		{"bogus"},
		{"member", "bogus"},
		{"-o", "yaml", "status"},
		{"--timeout", "-1s", "status"},
		{"--timeout", "soon", "status"},
	} {
		r := cli(t, addr, args...)
		if r.code != exitUsage {
			t.Errorf("%v: exit %d, want 2; stderr %q", args, r.code, r.stderr)
			continue
		}
		if !strings.HasPrefix(r.stderr, "gwelbctl: ") || !strings.Contains(r.stderr, "\nUsage:\n") || r.stdout != "" {
			t.Errorf("%v: stderr %q, stdout %q", args, r.stderr, r.stdout)
		}
	}
	r := cli(t, addr, "member", "add", "frontend")
	if first := strings.SplitN(r.stderr, "\n", 2)[0]; first != "gwelbctl: missing arguments ROUTE URL" {
		t.Errorf("first line %q", first)
	}

	// Help is not an error.
	for _, args := range [][]string{{"--help"}, {"member"}, {"member", "add", "-h"}, {}} {
		r := cli(t, addr, args...)
		if r.code != 0 || !strings.Contains(r.stdout, "Usage:") || r.stderr != "" {
			t.Errorf("%v: exit %d, stdout %q", args, r.code, r.stdout)
		}
	}
	for _, args := range [][]string{{"--help"}, {"status", "--help"}, {"member", "drain", "--help"}, {"route", "--help"}} {
		r := cli(t, addr, args...)
		if !strings.Contains(r.stdout, "Exit codes:") || !strings.Contains(r.stdout, "7  route disagreement") {
			t.Errorf("%v: exit %d, stdout %q", args, r.code, r.stdout)
		}
	}
}

func TestEnvironment(t *testing.T) {
	f := &fakeAdmin{status: cannedStatus()}
	addr := startServer(t, f)

	r := cliEnv(t, map[string]string{"GWELB_ADDR": addr, "GWELB_TOKEN": testToken}, "raft", "peers")
	wantOK(t, r)

	// Flags beat the environment.
	r = cliEnv(t, map[string]string{"GWELB_ADDR": testnet.ClosedAddr(t), "GWELB_TOKEN": "wrong"}, "--addr", addr, "--token", testToken, "raft", "peers")
	wantOK(t, r)
	r = cliEnv(t, map[string]string{"GWELB_ADDR": addr, "GWELB_TOKEN": testToken}, "--token", "wrong", "raft", "peers")
	wantFail(t, r, exitUnauthorised, `unauthorised`)

	r = cliEnv(t, map[string]string{"GWELB_ADDR": addr, "GWELB_TOKEN": testToken, "GWELB_CLIENT_CERT": "c.pem"}, "status")
	wantFail(t, r, exitUsage, `need --ca-file`)
}

func TestTimeout(t *testing.T) {
	// A node that never answers hits --timeout.
	addr := startServer(t, &fakeAdmin{}, grpc.ChainUnaryInterceptor(func(ctx context.Context, _ any, _ *grpc.UnaryServerInfo, _ grpc.UnaryHandler) (any, error) {
		<-ctx.Done()
		return nil, status.FromContextError(ctx.Err()).Err()
	}))
	r := cli(t, addr, "--timeout", "50ms", "status")
	wantFail(t, r, exitError, `^gwelbctl: status: no answer from \S+ within 50ms \(raise --timeout\)\n$`)
}

func TestVersion(t *testing.T) {
	r := cliEnv(t, nil, "version")
	wantOK(t, r)
	if !strings.HasPrefix(r.stdout, "gwelbctl dev (go") {
		t.Errorf("stdout %q", r.stdout)
	}
	r = cliEnv(t, nil, "version", "-o", "json")
	wantOK(t, r)
	var v map[string]string
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || v["version"] != "dev" {
		t.Errorf("json %q: %v", r.stdout, err)
	}
}

// testPKI writes a CA, a server certificate for "gwelb.test" and a client
// certificate into dir, and returns the server's TLS config.
func testPKI(t *testing.T, dir string) *tls.Config {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "gwelb test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, filepath.Join(dir, "ca.pem"), "CERTIFICATE", caDER)

	issue := func(serial int64, name string, usage x509.ExtKeyUsage) tls.Certificate {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: name},
			DNSNames:     []string{name},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		writePEM(t, filepath.Join(dir, name+".pem"), "CERTIFICATE", der)
		writePEM(t, filepath.Join(dir, name+"-key.pem"), "EC PRIVATE KEY", keyDER)
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	}
	server := issue(2, "gwelb.test", x509.ExtKeyUsageServerAuth)
	issue(3, "client", x509.ExtKeyUsageClientAuth)
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return &tls.Config{
		Certificates: []tls.Certificate{server},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	}
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	addr := startServer(t, &fakeAdmin{status: cannedStatus()}, grpc.Creds(credentials.NewTLS(testPKI(t, dir))))
	tlsArgs := []string{
		"--ca-file", filepath.Join(dir, "ca.pem"),
		"--cert-file", filepath.Join(dir, "client.pem"),
		"--key-file", filepath.Join(dir, "client-key.pem"),
		"--tls-server-name", "gwelb.test",
	}
	wantOK(t, cli(t, addr, slices.Concat(tlsArgs, []string{"raft", "peers"})...))

	// The same through the environment.
	r := cliEnv(t, map[string]string{
		"GWELB_ADDR":        addr,
		"GWELB_TOKEN":       testToken,
		"GWELB_CACERT":      filepath.Join(dir, "ca.pem"),
		"GWELB_CLIENT_CERT": filepath.Join(dir, "client.pem"),
		"GWELB_CLIENT_KEY":  filepath.Join(dir, "client-key.pem"),
	}, "--tls-server-name", "gwelb.test", "raft", "peers")
	wantOK(t, r)

	// Plaintext against a TLS node, and a certificate for another name,
	// cannot connect.
	wantFail(t, cli(t, addr, "status"), exitUnreachable, `cannot reach gwelb node at .*\(does the node use TLS\? set --ca-file\)\n$`)
	r = cli(t, addr, slices.Concat(tlsArgs[:6], []string{"status"})...)
	wantFail(t, r, exitUnreachable, `cannot reach gwelb node at .*certificate`)
	r = cli(t, addr, slices.Concat(tlsArgs[:2], tlsArgs[6:], []string{"status"})...)
	wantFail(t, r, exitUnreachable, `cannot reach gwelb node at .*\(does the node require a client certificate\? set --cert-file and --key-file\)\n$`)
}

func TestShortCause(t *testing.T) {
	for in, want := range map[string]string{
		`connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:1: connect: connection refused"`: "connection refused",
		`connection error: desc = "transport: authentication handshake failed: tls: bad certificate"`:                  "authentication handshake failed: tls: bad certificate",
		`name resolver error: produced zero addresses`:                                                                 "name resolver error: produced zero addresses",
		`connection error: desc = "write tcp 127.0.0.1:5->127.0.0.1:6: write: broken pipe"`:                            "write: broken pipe",
	} {
		if got := shortCause(in); got != want {
			t.Errorf("shortCause(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFmtDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                           "0s",
		1499 * time.Millisecond:     "1s",
		192 * time.Second:           "3m12s",
		2*time.Hour + 5*time.Minute: "2h5m",
		75 * time.Hour:              "3d3h",
	} {
		if got := fmtDuration(d); got != want {
			t.Errorf("fmtDuration(%s) = %q, want %q", d, got, want)
		}
	}
	if got := age(testNow, testNow.Add(time.Minute).UnixNano()); got != "0s" {
		t.Errorf("age in the future = %q", got)
	}
}
