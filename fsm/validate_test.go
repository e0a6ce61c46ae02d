package fsm

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func validPool() PoolSpec {
	return PoolSpec{
		Name: "backend", Prefix: "/backend",
		Sticky:  StickySpec{Cookie: "ROUTEID", Insert: true},
		Members: []MemberSpec{{Route: "1", URL: "http://127.0.0.1:9081"}, {Route: "2", URL: "http://127.0.0.1:9082"}},
	}
}

// TestValidatePool: every rule, with the exact line an operator reads.
func TestValidatePool(t *testing.T) {
	tests := []struct {
		name string
		edit func(*PoolSpec)
		want string // "" for valid
	}{
		{"valid", func(*PoolSpec) {}, ""},
		{"root prefix", func(p *PoolSpec) { p.Prefix = "/" }, ""},
		{"query only", func(p *PoolSpec) { p.Sticky = StickySpec{Query: "alias"} }, ""},
		{"same_site None with secure", func(p *PoolSpec) { p.Cookie.SameSite, p.Cookie.Secure = "None", true }, ""},
		{"zero fail_timeout", func(p *PoolSpec) { p.FailTimeout = new(time.Duration(0)) }, ""},
		{"flap damping", func(p *PoolSpec) {
			p.Health.FlapLimit, p.Health.FlapWindow, p.Health.HoldDown = 3, time.Minute, time.Minute
		}, ""},
		{"weight 0 means 1", func(p *PoolSpec) { p.Members[0].Weight = 0 }, ""},
		{"route with dot", func(p *PoolSpec) { p.Members[0].Route = "GWE.F.1" }, ""},
		{"ipv6 member", func(p *PoolSpec) { p.Members[0].URL = "https://[::1]:9443/" }, ""},

		{"empty name", func(p *PoolSpec) { p.Name = "" }, `pool "": name "": want 1 to 64 letters, digits, '.', '_' or '-'`},
		{"name with newline", func(p *PoolSpec) { p.Name = "b\nx" }, `pool "b\nx": name "b\nx": want 1 to 64 letters`},
		{"prefix without slash", func(p *PoolSpec) { p.Prefix = "backend" }, `pool "backend": prefix "backend": want / or a path starting with / and not ending with /`},
		{"prefix trailing slash", func(p *PoolSpec) { p.Prefix = "/backend/" }, `prefix "/backend/": want / or a path`},
		{"prefix dot-dot", func(p *PoolSpec) { p.Prefix = "/a/../b" }, `prefix "/a/../b": want no empty, '.' or '..' segments`},
		{"prefix escape", func(p *PoolSpec) { p.Prefix = "/a%2fb" }, `prefix "/a%2fb": character '%'`},
		{"no sticky source", func(p *PoolSpec) { p.Sticky = StickySpec{} }, `pool "backend": sticky: needs a query parameter or a cookie`},
		{"insert without cookie", func(p *PoolSpec) { p.Sticky = StickySpec{Query: "alias", Insert: true} }, `sticky.insert: needs sticky.cookie`},
		{"cookie name with space", func(p *PoolSpec) { p.Sticky.Cookie = "ROUTE ID" }, `sticky.cookie "ROUTE ID": want a cookie name (an HTTP token)`},
		{"cookie name with semicolon", func(p *PoolSpec) { p.Sticky.Cookie = "ROUTE;ID" }, `sticky.cookie "ROUTE;ID"`},
		{"cookie name with equals", func(p *PoolSpec) { p.Sticky.Cookie = "ROUTE=ID" }, `sticky.cookie "ROUTE=ID"`},
		{"cookie name non-ASCII", func(p *PoolSpec) { p.Sticky.Cookie = "ROUTÉID" }, `sticky.cookie`},
		{"query name with ampersand", func(p *PoolSpec) { p.Sticky.Query = "a&b" }, `sticky.query "a&b": want an HTTP token without`},
		{"cookie path injection", func(p *PoolSpec) { p.Cookie.Path = "/; Domain=attacker.example" }, `cookie.path "/; Domain=attacker.example": want a path starting with /`},
		{"cookie path CRLF", func(p *PoolSpec) { p.Cookie.Path = "/\r\nX: y" }, `cookie.path "/\r\nX: y"`},
		{"cookie path relative", func(p *PoolSpec) { p.Cookie.Path = "backend" }, `cookie.path "backend"`},
		{"cookie domain injection", func(p *PoolSpec) { p.Cookie.Domain = "a.example; Secure" }, `cookie.domain "a.example; Secure": want a host name`},
		{"negative max_age", func(p *PoolSpec) { p.Cookie.MaxAge = -1 }, `cookie.max_age -1: want 0 (a session cookie) to`},
		{"same_site case", func(p *PoolSpec) { p.Cookie.SameSite = "lax" }, `cookie.same_site "lax": want Lax, Strict or None`},
		{"same_site None without secure", func(p *PoolSpec) { p.Cookie.SameSite = "None" }, `cookie.same_site "None": None needs cookie.secure: true`},
		{"negative fail_timeout", func(p *PoolSpec) { p.FailTimeout = new(-time.Second) }, `fail_timeout -1s: want 0s (no quarantine) to 24h0m0s`},
		{"health path without slash", func(p *PoolSpec) { p.Health.Path = "about" }, `pool "backend": health.path "about": must start with /`},
		{"health path with space", func(p *PoolSpec) { p.Health.Path = "/a b" }, `health.path "/a b": character ' '`},
		{"negative interval", func(p *PoolSpec) { p.Health.Interval = -time.Second }, `health.interval -1s: want more than 0s and at most 1h0m0s`},
		{"huge interval", func(p *PoolSpec) { p.Health.Interval = 2 * time.Hour }, `health.interval 2h0m0s`},
		{"negative timeout", func(p *PoolSpec) { p.Health.Timeout = -time.Second }, `health.timeout -1s`},
		{"negative rise", func(p *PoolSpec) { p.Health.Rise = -1 }, `health.rise -1: want 1..100`},
		{"negative fall", func(p *PoolSpec) { p.Health.Fall = -1 }, `health.fall -1: want 1..100`},
		{"expect_status 999", func(p *PoolSpec) { p.Health.ExpectStatus = 999 }, `health.expect_status 999: want an HTTP status 100..599`},
		{"flap_limit without window", func(p *PoolSpec) { p.Health.FlapLimit = 3 }, `health.flap_limit 3: needs health.flap_window and health.hold_down`},
		{"negative flap_window", func(p *PoolSpec) { p.Health.FlapWindow = -time.Second }, `health.flap_window -1s`},
		{"negative hold_down", func(p *PoolSpec) { p.Health.HoldDown = -time.Second }, `health.hold_down -1s`},

		{"duplicate route", func(p *PoolSpec) { p.Members[1].Route = "1" }, `pool "backend": members[1] "1": route "1": already used by members[0]`},
		{"empty route", func(p *PoolSpec) { p.Members[1].Route = "" }, `members[1] "": route "": want 1 to 256 visible ASCII characters`},
		{"route with space", func(p *PoolSpec) { p.Members[1].Route = "GWE F" }, `route "GWE F"`},
		{"route with semicolon", func(p *PoolSpec) { p.Members[1].Route = "a;b" }, `route "a;b"`},
		{"route non-ASCII", func(p *PoolSpec) { p.Members[1].Route = "é" }, `route "é"`},
		{"url with path (the guide's BalancerMember form)", func(p *PoolSpec) { p.Members[1].URL = "http://127.0.0.1:9083/backend" }, `url "http://127.0.0.1:9083/backend": must have no path, query or user`},
		{"url with query", func(p *PoolSpec) { p.Members[1].URL = "http://127.0.0.1:1/?a=b" }, `must have no path, query or user`},
		{"url with user", func(p *PoolSpec) { p.Members[1].URL = "http://u:p@127.0.0.1:1" }, `must have no path, query or user`},
		{"url scheme", func(p *PoolSpec) { p.Members[1].URL = "ftp://127.0.0.1:1" }, `url "ftp://127.0.0.1:1": want http://host:port or https://host:port`},
		{"url without scheme", func(p *PoolSpec) { p.Members[1].URL = "127.0.0.1:9082" }, `url "127.0.0.1:9082"`},
		{"url without host", func(p *PoolSpec) { p.Members[1].URL = "http://" }, `url "http://": want http://host:port`},
		{"url bad port", func(p *PoolSpec) { p.Members[1].URL = "http://127.0.0.1:99999" }, `port "99999": want 1..65535`},
		{"url unparsable", func(p *PoolSpec) { p.Members[1].URL = "http://[::1" }, `url "http://[::1": not a URL`},
		{"weight negative", func(p *PoolSpec) { p.Members[1].Weight = -1 }, `members[1] "2": weight -1: want 1..1000`},
		{"weight too big", func(p *PoolSpec) { p.Members[1].Weight = 1001 }, `weight 1001: want 1..1000`},
		{"bad admin state", func(p *PoolSpec) { p.Members[1].State = 9 }, `members[1] "2": state 9: want active, drain or disabled`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := validPool()
			tt.edit(&p)
			err := ValidatePool(p)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("ValidatePool: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ValidatePool = %v, want an error containing %q", err, tt.want)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("%v is not ErrInvalid", err)
			}
			if strings.Count(err.Error(), "\n") != 0 {
				t.Errorf("one edit, several problems:\n%v", err)
			}
			// The routing table and the replicated state refuse it too.
			if _, err := NewTable(1, []PoolSpec{p}); err == nil {
				t.Error("NewTable accepted it")
			}
		})
	}
}

func TestValidatePoolsAcrossPools(t *testing.T) {
	a, b := validPool(), validPool()
	b.Name = "other"
	if err := ValidatePools([]PoolSpec{a, b}); err == nil || err.Error() != `pools[1] "other": prefix "/backend": already used by pools[0] "backend"` {
		t.Errorf("duplicate prefix: %v", err)
	}
	b.Name, b.Prefix = "backend", "/other"
	if err := ValidatePools([]PoolSpec{a, b}); err == nil || err.Error() != `pools[1] "backend": name "backend": already used by pools[0]` {
		t.Errorf("duplicate name: %v", err)
	}
	b.Name, b.Health.Rise, b.Members[0].URL = "other", -1, "ftp://x"
	err := ValidatePools([]PoolSpec{a, b})
	want := `pools[1] "other": health.rise -1: want 1..100` + "\n" +
		`pools[1] "other": members[0] "1": url "ftp://x": want http://host:port or https://host:port`
	if err == nil || err.Error() != want {
		t.Errorf("every problem:\n%v\nwant:\n%s", err, want)
	}
}

func TestValidateMember(t *testing.T) {
	if err := ValidateMember(MemberSpec{Route: "3", URL: "http://127.0.0.1:9083"}); err != nil {
		t.Fatal(err)
	}
	err := ValidateMember(MemberSpec{Route: "a b", URL: "http://h/x", Weight: -2})
	want := `route "a b": want 1 to 256 visible ASCII characters without spaces, quotes, ';', ',' or '\'` + "\n" +
		`url "http://h/x": must have no path, query or user: gwelb forwards the request target unchanged` + "\n" +
		`weight -2: want 1..1000`
	if err == nil || err.Error() != want {
		t.Errorf("ValidateMember:\n%v\nwant:\n%s", err, want)
	}
}

// TestStoredDurationsCannotWrap: a millisecond count too large for a
// Duration is rejected, not wrapped into a plausible value.
func TestStoredDurationsCannotWrap(t *testing.T) {
	p := PoolToProto(validPool())
	huge := maxMs + 1
	p.FailTimeoutMs = &huge
	if err := ValidatePool(PoolFromProto(p)); err == nil || !strings.Contains(err.Error(), "fail_timeout") {
		t.Errorf("ValidatePool = %v", err)
	}
}
