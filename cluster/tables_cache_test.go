package cluster

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// TestTableCacheRefusesInvalid: a cache file the validator rejects (edited
// by hand, written by a looser version, corrupted) is not routed from; the
// error names the field.
func TestTableCacheRefusesInvalid(t *testing.T) {
	for _, tc := range []struct {
		st   *gwelbv1.State
		want string
	}{
		{&gwelbv1.State{Index: 7, Pools: []*gwelbv1.Pool{{Name: "backend", Prefix: "/backend", Cookie: "ROUTEID", Health: &gwelbv1.HealthCheck{ExpectStatus: 999}}}},
			`state at index 7: pools[0] "backend": health.expect_status 999: want an HTTP status 100..599`},
		{&gwelbv1.State{Index: 7, Pools: []*gwelbv1.Pool{{Name: "backend", Prefix: "/backend", Cookie: "ROUTEID"}},
			Members: []*gwelbv1.Member{{Pool: "backend", Route: "1", Url: "http://127.0.0.1:1/x"}}},
			`state at index 7: pools[0] "backend": members[0] "1": url "http://127.0.0.1:1/x": must have no path`},
	} {
		data, _ := proto.Marshal(tc.st)
		if _, _, err := decodeTableCache(data); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("decodeTableCache = %v, want %q", err, tc.want)
		}
	}
	if _, _, err := decodeTableCache([]byte("not protobuf \xff")); err == nil {
		t.Error("garbage accepted")
	}
}
