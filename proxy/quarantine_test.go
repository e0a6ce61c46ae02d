package proxy

import (
	"testing"
	"time"
)

// QuarantinedUntil reads rule 8's local quarantine: set by a refused
// connection for the pool's fail_timeout, zero for every other member and
// for names the table does not have.
func TestQuarantinedUntil(t *testing.T) {
	back := startMembers(t, "/backend", "1", "2", "3")
	back[1].ts.Close() // member 2 refuses connections
	h := startProxy(t, mustTable(t, backendPool(back)), Options{}, ListenerConfig{})
	if u := h.srv.QuarantinedUntil("backend", "2"); !u.IsZero() {
		t.Fatalf("before any request: quarantined until %v", u)
	}
	before := time.Now()
	if r := h.get(t, "/backend/x", "ROUTEID=.2"); r.status != 200 || r.server() == "2" {
		t.Fatalf("got %v, want the fallback", r)
	}
	u := h.srv.QuarantinedUntil("backend", "2")
	if u.Before(before.Add(5*time.Second)) || u.After(time.Now().Add(5*time.Second)) {
		t.Errorf("quarantined until %v, want fail_timeout (5s) after the failure at %v", u, before)
	}
	for _, c := range [][2]string{{"backend", "1"}, {"backend", "3"}, {"backend", "nope"}, {"frontend", "2"}} {
		if u := h.srv.QuarantinedUntil(c[0], c[1]); !u.IsZero() {
			t.Errorf("%s/%s quarantined until %v", c[0], c[1], u)
		}
	}
}
