package main

import (
	"context"
	"encoding/json"
	"flag"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files of testdata/json")

// routeRow is one element of route --all-nodes -o json, as a script reads it.
type routeRow struct {
	Node        string `json:"node"`
	Addr        string `json:"addr"`
	TableIndex  uint64 `json:"table_index"`
	Route       string `json:"route"`
	URL         string `json:"url"`
	Reason      string `json:"reason"`
	Error       string `json:"error"`
	Quarantined []struct {
		Node           string `json:"node"`
		Route          string `json:"route"`
		UntilUnixNanos int64  `json:"until_unix_nanos"`
		RemainingMs    int64  `json:"remaining_ms"`
	} `json:"quarantined"`
}

// keyringAdmin is fakeAdmin answering Keyring too.
type keyringAdmin struct{ *fakeAdmin }

func (k keyringAdmin) Keyring(_ context.Context, r *gwelbv1.KeyringRequest) (*gwelbv1.KeyringResponse, error) {
	if err := k.record(r); err != nil {
		return nil, err
	}
	return &gwelbv1.KeyringResponse{Nodes: []*gwelbv1.KeyringNodeResult{
		{Node: "n1", Keys: []string{"a2V5MWtleTFrZXkxa2V5MQ=="}, Primary: "a2V5MWtleTFrZXkxa2V5MQ=="},
		{Node: "n2", Error: "no answer within 5s"},
	}}, nil
}

func cannedRoute() *gwelbv1.RouteResponse {
	return &gwelbv1.RouteResponse{Node: "n1", TableIndex: 41, Route: "3", Url: "http://127.0.0.1:9083", Reason: "fallback",
		Quarantined: []*gwelbv1.LocalQuarantine{{Node: "n1", Route: "2", UntilUnixNanos: testNow.Add(7 * time.Second).UnixNano(), RemainingMs: 7000}}}
}

// TestJSONGolden pins the -o json output of every command: names, order,
// types and zero values. A change to it is a change to what scripts read:
// update README.md ("JSON output") with the golden files (go test -run
// TestJSONGolden -update).
func TestJSONGolden(t *testing.T) {
	f := &fakeAdmin{status: cannedStatus(), route: cannedRoute(), events: watchEvents(), snapshot: []byte("snapshot bytes")}
	addr := startServer(t, f)
	keyAddr := startAdmin(t, keyringAdmin{&fakeAdmin{}})
	routeAddr, routeAddrs := routeCluster(t, "1", "2")
	dir := t.TempDir()
	snap := filepath.Join(dir, "state.snap")
	if err := os.WriteFile(snap, []byte("snapshot bytes"), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		addr string
		args []string
		code int
	}{
		{"status", addr, []string{"status"}, 0},
		{"member-list", addr, []string{"member", "list"}, 0},
		{"member-add", addr, []string{"member", "add", "frontend", "GWE_F_3", "http://127.0.0.1:9083"}, 0},
		{"member-remove", addr, []string{"member", "remove", "frontend", "GWE_F_3"}, 0},
		{"member-drain", addr, []string{"member", "drain", "frontend", "1"}, 0},
		{"member-set-weight", addr, []string{"member", "set-weight", "frontend", "1", "3"}, 0},
		{"pool-list", addr, []string{"pool", "list"}, 0},
		{"pool-show", addr, []string{"pool", "show", "frontend"}, 0},
		{"route", addr, []string{"route", "frontend", ".2"}, 0},
		{"route-all-nodes", routeAddr, []string{"route", "frontend", "abc", "--all-nodes"}, exitDisagreement},
		{"raft-peers", addr, []string{"raft", "peers"}, 0},
		{"raft-transfer-leader", addr, []string{"raft", "transfer-leader"}, 0},
		{"join", addr, []string{"join", "127.0.0.1:7946"}, 0},
		{"leave", addr, []string{"leave"}, 0},
		{"snapshot-save", addr, []string{"snapshot", "save", filepath.Join(dir, "saved.snap")}, 0},
		{"snapshot-restore", addr, []string{"snapshot", "restore", snap}, 0},
		{"watch", addr, []string{"watch", "--timeout", "1ns"}, 0},
		{"keyring-list", keyAddr, []string{"keyring", "list"}, exitError},
		{"version", addr, []string{"version"}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := cli(t, tc.addr, append([]string{"-o", "json"}, tc.args...)...)
			if r.code != tc.code {
				t.Fatalf("exit %d, want %d; stderr %q", r.code, tc.code, r.stderr)
			}
			got := r.stdout
			for i, a := range routeAddrs {
				got = strings.ReplaceAll(got, a, "ADDR"+string(rune('0'+i)))
			}
			got = strings.ReplaceAll(got, dir, "DIR")
			got = strings.ReplaceAll(got, runtime.Version(), "GOVERSION")
			path := filepath.Join("testdata", "json", tc.name+".json")
			if *updateGolden {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("-o json %s differs from %s:\n%s", strings.Join(tc.args, " "), path, got)
			}
		})
	}
}

// startAdmin serves srv on a loopback port and returns its address.
func startAdmin(t *testing.T, srv gwelbv1.AdminServer) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	gwelbv1.RegisterAdminServer(s, srv)
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

// The JSON form's promises, checked on the values rather than the text:
// enums are names, 64-bit integers numbers, zero values present, an unset
// optional field null; and protojson reads it back into the message.
func TestJSONForm(t *testing.T) {
	f := &fakeAdmin{status: cannedStatus(), route: cannedRoute()}
	addr := startServer(t, f)

	r := cli(t, addr, "-o", "json", "status")
	wantOK(t, r)
	var st map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatal(err)
	}
	pools := st["pools"].([]any)
	front := pools[0].(map[string]any)
	m0 := front["members"].([]any)[0].(map[string]any)
	member := m0["member"].(map[string]any)
	pool := front["pool"].(map[string]any)
	for _, c := range []struct {
		what string
		got  any
		want any
	}{
		{"table_index (uint64)", st["table_index"], 41.0},
		{"last_contact_ms (int64, zero)", st["last_contact_ms"], 0.0},
		{"insecure (false)", st["insecure"], false},
		{"in_flight_from (empty)", st["in_flight_from"], []any{}},
		{"member state (enum zero)", member["state"], "ADMIN_STATE_ACTIVE"},
		{"member verdict (enum zero)", member["verdict"], "VERDICT_UP"},
		{"verdict_since_unix_nanos (int64)", member["verdict_since_unix_nanos"], float64(testNow.Add(-192 * time.Second).UnixNano())},
		{"in_flight (int64)", m0["in_flight"], 4.0},
		{"quarantined remaining_ms (int64)", m0["quarantined"].([]any)[0].(map[string]any)["remaining_ms"], 7000.0},
		{"pool fail_timeout_ms (unset optional)", pool["fail_timeout_ms"], nil},
		{"pool health (unset message)", pool["health"], nil},
		{"pool insert_cookie (false)", pool["insert_cookie"], false},
	} {
		if !jsonEqual(c.got, c.want) {
			t.Errorf("status: %s = %#v, want %#v", c.what, c.got, c.want)
		}
	}
	var back gwelbv1.StatusResponse
	if err := protojson.Unmarshal([]byte(r.stdout), &back); err != nil || !proto.Equal(&back, cannedStatus()) {
		t.Errorf("protojson does not read status -o json back: %v", err)
	}

	// table_index is a number in route and in route --all-nodes alike.
	r = cli(t, addr, "-o", "json", "route", "frontend", ".2")
	wantOK(t, r)
	var rr map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &rr); err != nil || rr["table_index"] != 41.0 {
		t.Errorf("route: table_index %#v (%v)", rr["table_index"], err)
	}
	routeAddr, _ := routeCluster(t, "1", "1")
	r = cli(t, routeAddr, "-o", "json", "route", "frontend", "abc", "--all-nodes")
	wantOK(t, r)
	var rows []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &rows); err != nil || len(rows) != 2 || rows[0]["table_index"] != 40.0 || rows[0]["error"] != "" {
		t.Errorf("route --all-nodes: %v (%v)", rows, err)
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}
