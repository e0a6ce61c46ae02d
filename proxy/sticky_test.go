package proxy

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/gwelb/gwelb/fsm"
)

func TestQueryParam(t *testing.T) {
	tests := []struct {
		raw, name, want string
	}{
		{"alias=.GWE_F_2", "alias", ".GWE_F_2"},
		{"a=1&alias=.GWE_F_2&b=2", "alias", ".GWE_F_2"},
		{"alias=%2EGWE_F_2", "alias", ".GWE_F_2"},
		{"alias=%2eGWE%5FF%5F2", "alias", ".GWE_F_2"},
		{"alias=.1&alias=.2", "alias", ".1"},
		{"alias=&alias=.2", "alias", ""}, // the first occurrence decides, even empty
		{"alias", "alias", ""},
		{"alias=%zz", "alias", ""},
		{"alias=%", "alias", ""},
		{"alias=a+b.1", "alias", ""}, // '+' is a space: not a valid value
		{"alias=.1%00", "alias", ""},
		{"alias=.1%C3%A9", "alias", ""},
		{"Alias=.1", "alias", ""},
		{"%61lias=.1", "alias", ""}, // names are compared raw
		{"xalias=.1&aliasx=.2", "alias", ""},
		{"alias=.1;x=2", "alias", ""}, // ';' is no separator, and makes the value invalid
		{"x=1;alias=.1", "alias", ""},
		{"alias=a=b.1", "alias", "a=b.1"},
		{"&&alias=.3&", "alias", ".3"},
		{"", "alias", ""},
		{"alias=.1", "", ""},
	}
	for _, tt := range tests {
		if got := queryParam(tt.raw, tt.name); got != tt.want {
			t.Errorf("queryParam(%q, %q) = %q, want %q", tt.raw, tt.name, got, tt.want)
		}
	}
}

func TestCookieValue(t *testing.T) {
	tests := []struct {
		name  string
		lines []string
		want  string
	}{
		{"plain", []string{"ROUTEID=.2"}, ".2"},
		{"among others", []string{"a=1; ROUTEID=.2; b=2"}, ".2"},
		{"no space", []string{"a=1;ROUTEID=.2"}, ".2"},
		{"tabs and spaces", []string{"a=1;\t ROUTEID=.2 \t; b"}, ".2"},
		{"first of two", []string{"ROUTEID=.1; ROUTEID=.2"}, ".1"},
		{"first line wins", []string{"ROUTEID=.1", "ROUTEID=.2"}, ".1"},
		{"second line", []string{"a=b", "ROUTEID=.3"}, ".3"},
		{"quoted", []string{`ROUTEID=".2"`}, ".2"},
		{"verbatim, not decoded", []string{"ROUTEID=%2E2"}, "%2E2"},
		{"case-sensitive name", []string{"routeid=.2"}, ""},
		{"name prefix", []string{"ROUTEIDX=.2; XROUTEID=.3"}, ""},
		{"space before =", []string{"ROUTEID =.2"}, ""},
		{"empty", []string{"ROUTEID="}, ""},
		{"empty quoted", []string{`ROUTEID=""`}, ""},
		{"first malformed wins", []string{"ROUTEID=a,b; ROUTEID=.2"}, ""},
		{"bare name", []string{"ROUTEID; x=.2"}, ""},
		{"lone quote", []string{`ROUTEID="`}, ""},
		{"inner quote", []string{`ROUTEID=a"b`}, ""},
		{"non-ASCII", []string{"ROUTEID=.2\xc3\xa9"}, ""},
		{"too long", []string{"ROUTEID=" + strings.Repeat("x", fsm.MaxStickyLen+1)}, ""},
		{"value with =", []string{"ROUTEID=a=b.2"}, "a=b.2"},
		{"no lines", nil, ""},
		{"empty line", []string{""}, ""},
		{"only separators", []string{";;; ;"}, ""},
	}
	for _, tt := range tests {
		if got := cookieValue(tt.lines, "ROUTEID"); got != tt.want {
			t.Errorf("%s: cookieValue(%q) = %q, want %q", tt.name, tt.lines, got, tt.want)
		}
	}
}

func TestReadSticky(t *testing.T) {
	req := func(rawQuery string, cookies ...string) *http.Request {
		r := &http.Request{URL: &url.URL{Path: "/frontend/x", RawQuery: rawQuery}, Header: http.Header{}}
		if len(cookies) > 0 {
			r.Header["Cookie"] = cookies
		}
		return r
	}
	tests := []struct {
		name        string
		r           *http.Request
		query, ck   string // pool's names
		wantQ, want string // keys.query and keys.value()
	}{
		{"alias beats cookie", req("alias=.GWE_F_3", "FRONTEND_ROUTEID=.GWE_F_1"), "alias", "FRONTEND_ROUTEID", ".GWE_F_3", ".GWE_F_3"},
		{"cookie when no alias", req("", "FRONTEND_ROUTEID=.GWE_F_1"), "alias", "FRONTEND_ROUTEID", "", ".GWE_F_1"},
		{"cookie when alias malformed", req("alias=%zz", "FRONTEND_ROUTEID=.GWE_F_1"), "alias", "FRONTEND_ROUTEID", "", ".GWE_F_1"},
		{"backend reads no query", req("alias=.1", "ROUTEID=.2"), "", "ROUTEID", "", ".2"},
		{"query-only pool ignores cookies", req("", "ROUTEID=.2"), "alias", "", "", ""},
		{"nothing", req(""), "alias", "FRONTEND_ROUTEID", "", ""},
	}
	for _, tt := range tests {
		k := readSticky(tt.r, tt.query, tt.ck)
		if k.query != tt.wantQ || k.value() != tt.want {
			t.Errorf("%s: readSticky = %+v (value %q), want query %q value %q", tt.name, k, k.value(), tt.wantQ, tt.want)
		}
	}
}

func TestSetCookieString(t *testing.T) {
	tests := []struct {
		name, cookie, route string
		attrs               fsm.CookieSpec
		want                string
	}{
		{"guide backend", "ROUTEID", "2", fsm.CookieSpec{Path: "/"}, "ROUTEID=.2; Path=/"},
		{"guide frontend", "FRONTEND_ROUTEID", "GWE_F_2", fsm.CookieSpec{Path: "/"}, "FRONTEND_ROUTEID=.GWE_F_2; Path=/"},
		{"everything", "ROUTEID", "1", fsm.CookieSpec{Path: "/b", Domain: "example.com", MaxAge: 10, Secure: true, HTTPOnly: true, SameSite: "Strict"},
			"ROUTEID=.1; Path=/b; Domain=example.com; Max-Age=10; Secure; HttpOnly; SameSite=Strict"},
		{"no cookie name", "", "1", fsm.CookieSpec{Path: "/"}, ""},
	}
	for _, tt := range tests {
		if got := setCookie(tt.cookie, tt.route, tt.attrs); got != tt.want {
			t.Errorf("%s: setCookie = %q, want %q", tt.name, got, tt.want)
		}
	}
}
