package proxy

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/gwelb/gwelb/fsm"
)

// FuzzSticky feeds arbitrary query strings and Cookie headers to the
// sticky key reader: it must never panic, only ever return valid values,
// and the route must be what follows the value's first dot.
func FuzzSticky(f *testing.F) {
	for _, seed := range [][2]string{
		// The guide's forms.
		{"alias=.GWE_F_2", ""},
		{"", "FRONTEND_ROUTEID=.GWE_F_2"},
		{"", "ROUTEID=.2"},
		{"alias=.GWE_F_2", "FRONTEND_ROUTEID=.GWE_F_1"},
		{"alias=%2EGWE_F_2", ""},
		{"", "ROUTEID=abc.2"},
		{"alias=abc", "ROUTEID=abc"},
		// Awkward ones.
		{"alias=.1&alias=.2", "ROUTEID=.1; ROUTEID=.2"},
		{"alias=%zz&alias=.1", `ROUTEID=".2"`},
		{"alias=a+b.1;c", "routeid=.2;ROUTEID=\".\""},
		{"alias=%00.1", "ROUTEID=.2\xc3\xa9"},
		{"alias", "ROUTEID"},
		{"=&=&alias=", "=;;ROUTEID=;"},
		{"alias=" + strings.Repeat("a", 300) + ".1", "ROUTEID=" + strings.Repeat("b", 300) + ".2"},
		{"alias=..", "ROUTEID=\"\""},
	} {
		f.Add(seed[0], seed[1])
	}
	s := pickServer(f)
	v := s.view.Load()
	pools := []*poolView{v.match("/frontend/x"), v.match("/backend/x")}
	f.Fuzz(func(t *testing.T, rawQuery, cookie string) {
		r := &http.Request{URL: &url.URL{Path: "/x", RawQuery: rawQuery}, Header: http.Header{"Cookie": {cookie}}}
		for _, pv := range pools {
			k := readSticky(r, pv.spec.Sticky.Query, pv.spec.Sticky.Cookie)
			if k.query != "" && !fsm.ValidSticky(k.query) {
				t.Fatalf("query value %q is not valid", k.query)
			}
			if k.cookie != "" && !fsm.ValidSticky(k.cookie) {
				t.Fatalf("cookie value %q is not valid", k.cookie)
			}
			if pv.spec.Sticky.Query == "" && k.query != "" {
				t.Fatalf("pool without a query parameter read %q", k.query)
			}
			// The cookie value is verbatim: it appears in the header, right
			// after the name (possibly inside quotes).
			if k.cookie != "" && !strings.Contains(cookie, pv.spec.Sticky.Cookie+"="+k.cookie) && !strings.Contains(cookie, pv.spec.Sticky.Cookie+`="`+k.cookie+`"`) {
				t.Fatalf("cookie value %q is not in %q", k.cookie, cookie)
			}
			// An undecoded query value appears as sent.
			if k.query != "" && !strings.ContainsAny(rawQuery, "%+") && !strings.Contains(rawQuery, pv.spec.Sticky.Query+"="+k.query) {
				t.Fatalf("query value %q is not in %q", k.query, rawQuery)
			}
			value := k.value()
			if value != "" && !fsm.ValidSticky(value) {
				t.Fatalf("value %q is not valid", value)
			}
			if k.query != "" && value != k.query {
				t.Fatalf("value %q, but the query %q must win", value, k.query)
			}
			route := fsm.RouteOf(value)
			if !strings.HasSuffix(value, route) {
				t.Fatalf("route %q is not a suffix of %q", route, value)
			}
			if i := strings.IndexByte(value, '.'); (i < 0 && route != "") || (i >= 0 && route != value[i+1:]) {
				t.Fatalf("fsm.RouteOf(%q) = %q, want what follows the first dot", value, route)
			}
			if m := pv.pick(value, route, 0); m < 0 || m >= len(pv.members) {
				t.Fatalf("pick(%q) = %d", value, m)
			}
		}
	})
}
