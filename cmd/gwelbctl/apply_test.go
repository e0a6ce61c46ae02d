package main

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/gwelb/gwelb/fsm"
)

// TestPlanSteps: apply's order — pools put, members put, members removed,
// pools removed — except a removal whose prefix a new pool takes (a
// rename), which goes first.
func TestPlanSteps(t *testing.T) {
	sticky := fsm.StickySpec{Cookie: "ROUTEID", Insert: true}
	have := []fsm.PoolSpec{
		{Name: "old", Prefix: "/backend", Sticky: sticky, Members: []fsm.MemberSpec{{Route: "1", URL: "http://127.0.0.1:1"}}},
		{Name: "gone", Prefix: "/gone", Sticky: sticky},
		{Name: "front", Prefix: "/frontend", Sticky: sticky, Members: []fsm.MemberSpec{
			{Route: "a", URL: "http://127.0.0.1:2"}, {Route: "b", URL: "http://127.0.0.1:3"}}},
	}
	want := []fsm.PoolSpec{
		{Name: "new", Prefix: "/backend", Sticky: sticky, Members: []fsm.MemberSpec{{Route: "1", URL: "http://127.0.0.1:1"}}},
		{Name: "front", Prefix: "/frontend", Sticky: sticky, FailTimeout: new(time.Second), Members: []fsm.MemberSpec{
			{Route: "a", URL: "http://127.0.0.1:2", Weight: 2}, {Route: "c", URL: "http://127.0.0.1:4"}}},
	}
	var got []string
	for _, s := range planSteps(fsm.PlanChanges(have, want)) {
		got = append(got, s.RPC+" "+s.Lines[0])
	}
	wantSteps := []string{
		"RemovePool - pool old (1 members)",
		"PutPool ~ pool front fail_timeout 10s -> 1s",
		`PutPool + pool new prefix="/backend" sticky.cookie="ROUTEID" sticky.insert=true`,
		"PutMember ~ pool front member a weight 1 -> 2",
		"PutMember + pool front member c url=http://127.0.0.1:4 weight=1 state=active",
		"PutMember + pool new member 1 url=http://127.0.0.1:1 weight=1 state=active",
		"RemoveMember - pool front member b url=http://127.0.0.1:3 weight=1 state=active",
		"RemovePool - pool gone (0 members)",
	}
	if !slices.Equal(got, wantSteps) {
		t.Errorf("steps:\n%q\nwant:\n%q", got, wantSteps)
	}
}

// TestApplyDryRunJSON: apply -o json --dry-run prints the steps it would
// take and sends no write.
func TestApplyDryRunJSON(t *testing.T) {
	f := &fakeAdmin{status: cannedStatus()}
	addr := startServer(t, f)
	file := writeFile(t, `pools:
  - name: frontend
    prefix: /frontend
    sticky: {query: alias}
    members:
      - {route: "1", url: "http://127.0.0.1:9081", weight: 3}
      - {route: "2", url: "http://127.0.0.1:9082", weight: 2, state: active}
  - name: backend
    prefix: /backend
    sticky: {cookie: ROUTEID}
    members:
      - {route: "b1", url: "http://127.0.0.1:9091"}
`)
	r := cli(t, addr, "-o", "json", "apply", "-f", file, "--dry-run")
	wantOK(t, r)
	var out struct {
		DryRun bool `json:"dry_run"`
		Steps  []struct {
			RPC     string   `json:"rpc"`
			Changes []string `json:"changes"`
		} `json:"steps"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("%v:\n%s", err, r.stdout)
	}
	var rpcs []string
	for _, s := range out.Steps {
		rpcs = append(rpcs, s.RPC)
	}
	if !out.DryRun || !slices.Equal(rpcs, []string{"PutPool", "PutPool", "PutMember"}) {
		t.Errorf("dry run %v, steps %v:\n%s", out.DryRun, rpcs, r.stdout)
	}
	for _, req := range f.reqs {
		if _, ok := req.(interface{ GetRequestId() string }); ok {
			t.Errorf("a dry run sent %T", req)
		}
	}
}
