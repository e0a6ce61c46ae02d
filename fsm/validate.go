package fsm

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// The validators of this file are the only place a pool or member is judged
// (DESIGN.md §5.1). Every entry point calls them: config load and `gwelb
// validate`, the admin API, gwelbctl before it sends, snapshot restore,
// FSM.Apply and FSM.Restore (through NewTable) and the table-cache load.
// They judge a spec after WithDefaults, so "unset" is never an error where a
// default exists, and they report every problem, not only the first.

// Bounds of the numeric fields. Durations are bounded well below what a
// millisecond count in the replicated state can hold, so no conversion can
// overflow into a plausible value.
const (
	maxWeight     = 1000
	maxProbeCount = 100 // rise, fall
	maxFlapLimit  = 1000
	maxProbers    = 64        // health.probers; more than any sane voter count
	maxProbeTime  = time.Hour // interval, timeout
	maxHoldTime   = 24 * time.Hour
	maxNameLen    = 64
	maxPrefixLen  = 256
	maxCookieAttr = 256 // path and domain
	maxCookieAge  = 10 * 365 * 24 * 3600
	maxURLLen     = 2048
	maxHealthPath = 1024
	minStatus     = 100
	maxStatus     = 599
)

// FieldError is one problem with one field. Its text names the field path
// and the offending value: `pools[1] "backend": health.path "about": must
// start with /`.
type FieldError struct {
	Path  string // where: `pools[1] "backend": health.path`
	Value string // the value as written, already quoted when a string; "" to omit
	Msg   string // what is wrong, and what is wanted
}

func (e *FieldError) Error() string {
	if e.Value == "" {
		return e.Path + ": " + e.Msg
	}
	return e.Path + " " + e.Value + ": " + e.Msg
}

// Is makes every FieldError an ErrInvalid.
func (e *FieldError) Is(target error) bool { return target == ErrInvalid }

// Problems is every problem a validator found, in field order. A nil
// Problems is no error; see Err.
type Problems []*FieldError

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.Error()
	}
	return strings.Join(lines, "\n")
}

// Is makes Problems an ErrInvalid.
func (ps Problems) Is(target error) bool { return target == ErrInvalid }

// Err returns ps as an error, or nil when there is no problem.
func (ps Problems) Err() error {
	if len(ps) == 0 {
		return nil
	}
	return ps
}

// checker collects problems under a path prefix.
type checker struct {
	at    string
	probs *Problems
}

// named returns a checker for an element of a list, e.g. `pools[1] "backend"`.
func (c checker) named(field string, i int, name string) checker {
	at := fmt.Sprintf("%s[%d] %q:", field, i, name)
	if c.at != "" {
		at = c.at + " " + at
	}
	return checker{at: at, probs: c.probs}
}

func (c checker) add(field string, value any, format string, args ...any) {
	path := c.at
	switch {
	case path == "":
		path = field
	case strings.HasSuffix(path, ":"):
		path += " " + field
	case field != "":
		path += "." + field
	}
	v := ""
	switch x := value.(type) {
	case nil:
	case string:
		v = strconv.Quote(x)
	case time.Duration:
		v = x.String()
	default:
		v = fmt.Sprint(x)
	}
	*c.probs = append(*c.probs, &FieldError{Path: strings.TrimSuffix(path, ":"), Value: v, Msg: fmt.Sprintf(format, args...)})
}

// ValidatePools judges a whole set of pools, as a config file or the
// replicated state holds them: every pool and member, unique pool names and
// prefixes, unique routes per pool. Paths read `pools[1] "backend": ...`.
func ValidatePools(pools []PoolSpec) error {
	var probs Problems
	root := checker{probs: &probs}
	names := map[string]int{}
	prefixes := map[string]int{}
	for i, p := range pools {
		c := root.named("pools", i, p.Name)
		checkPool(c, p)
		if j, dup := names[p.Name]; dup && p.Name != "" {
			c.add("name", p.Name, "already used by pools[%d]", j)
		} else {
			names[p.Name] = i
		}
		if j, dup := prefixes[p.Prefix]; dup && p.Prefix != "" {
			c.add("prefix", p.Prefix, "already used by pools[%d] %q", j, pools[j].Name)
		} else {
			prefixes[p.Prefix] = i
		}
	}
	return probs.Err()
}

// ValidatePool judges one pool and its members. Paths read
// `pool "backend": health.path ...`.
func ValidatePool(p PoolSpec) error {
	var probs Problems
	checkPool(checker{at: fmt.Sprintf("pool %q:", p.Name), probs: &probs}, p)
	return probs.Err()
}

// ValidateMember judges one member on its own (its route, URL, weight and
// admin state), as the admin API and gwelbctl see it before it reaches a
// pool. Paths are the member's fields: `url "ftp://x": ...`.
func ValidateMember(m MemberSpec) error {
	var probs Problems
	checkMember(checker{probs: &probs}, m.WithDefaults())
	return probs.Err()
}

func checkPool(c checker, p PoolSpec) {
	healthPathSet := p.Health.Path != "" // else derived from the prefix, judged there
	p = p.WithDefaults()
	if !validName(p.Name) {
		c.add("name", p.Name, "want 1 to %d letters, digits, '.', '_' or '-'", maxNameLen)
	}
	if msg := checkPrefix(p.Prefix); msg != "" {
		c.add("prefix", p.Prefix, "%s", msg)
	}

	s := p.Sticky
	if s.Query == "" && s.Cookie == "" {
		c.add("sticky", nil, "needs a query parameter or a cookie to read the sticky value from")
	}
	if s.Query != "" && !validQueryName(s.Query) {
		c.add("sticky.query", s.Query, "want an HTTP token without '&', '=', '+', '%%' or '#'")
	}
	if s.Cookie != "" && !validHTTPToken(s.Cookie) {
		c.add("sticky.cookie", s.Cookie, "want a cookie name (an HTTP token)")
	}
	if s.Insert && s.Cookie == "" {
		c.add("sticky.insert", nil, "needs sticky.cookie: the name of the cookie to insert")
	}

	k := p.Cookie
	if !strings.HasPrefix(k.Path, "/") || len(k.Path) > maxCookieAttr || !attrSafe(k.Path) {
		c.add("cookie.path", k.Path, "want a path starting with / (at most %d visible characters, no ';')", maxCookieAttr)
	}
	if k.Domain != "" && !validCookieDomain(k.Domain) {
		c.add("cookie.domain", k.Domain, "want a host name (letters, digits, '.', '-')")
	}
	if k.MaxAge < 0 || k.MaxAge > maxCookieAge {
		c.add("cookie.max_age", k.MaxAge, "want 0 (a session cookie) to %d seconds", maxCookieAge)
	}
	switch k.SameSite {
	case "", "Lax", "Strict":
	case "None":
		if !k.Secure {
			c.add("cookie.same_site", k.SameSite, "None needs cookie.secure: true (browsers drop SameSite=None cookies without Secure)")
		}
	default:
		c.add("cookie.same_site", k.SameSite, "want Lax, Strict or None")
	}

	if ft := *p.FailTimeout; ft < 0 || ft > maxHoldTime {
		c.add("fail_timeout", ft, "want 0s (no quarantine) to %v", maxHoldTime)
	}

	h := p.Health
	if msg := checkHealthPath(h.Path); msg != "" && healthPathSet {
		c.add("health.path", h.Path, "%s", msg)
	}
	if h.Interval <= 0 || h.Interval > maxProbeTime {
		c.add("health.interval", h.Interval, "want more than 0s and at most %v", maxProbeTime)
	}
	if h.Timeout <= 0 || h.Timeout > maxProbeTime {
		c.add("health.timeout", h.Timeout, "want more than 0s and at most %v", maxProbeTime)
	}
	if h.Rise < 1 || h.Rise > maxProbeCount {
		c.add("health.rise", h.Rise, "want 1..%d", maxProbeCount)
	}
	if h.Fall < 1 || h.Fall > maxProbeCount {
		c.add("health.fall", h.Fall, "want 1..%d", maxProbeCount)
	}
	if h.ExpectStatus < minStatus || h.ExpectStatus > maxStatus {
		c.add("health.expect_status", h.ExpectStatus, "want an HTTP status %d..%d", minStatus, maxStatus)
	}
	if h.FlapLimit < 0 || h.FlapLimit > maxFlapLimit {
		c.add("health.flap_limit", h.FlapLimit, "want 0 (off) to %d", maxFlapLimit)
	}
	if h.FlapWindow < 0 || h.FlapWindow > maxHoldTime {
		c.add("health.flap_window", h.FlapWindow, "want 0s to %v", maxHoldTime)
	}
	if h.HoldDown < 0 || h.HoldDown > maxHoldTime {
		c.add("health.hold_down", h.HoldDown, "want 0s to %v", maxHoldTime)
	}
	if h.Probers < 0 || h.Probers > maxProbers {
		c.add("health.probers", h.Probers, "want 0 (every live voter) to %d", maxProbers)
	}
	if h.FlapLimit > 0 && (h.FlapWindow <= 0 || h.HoldDown <= 0) {
		c.add("health.flap_limit", h.FlapLimit, "needs health.flap_window and health.hold_down")
	}

	routes := map[string]int{}
	for i, m := range p.Members {
		mc := c.named("members", i, m.Route)
		checkMember(mc, m)
		if j, dup := routes[m.Route]; dup && m.Route != "" {
			mc.add("route", m.Route, "already used by members[%d]", j)
		} else {
			routes[m.Route] = i
		}
	}
}

func checkMember(c checker, m MemberSpec) {
	if !ValidSticky(m.Route) {
		c.add("route", m.Route, "want 1 to %d visible ASCII characters without spaces, quotes, ';', ',' or '\\'", MaxStickyLen)
	}
	if _, err := ParseMemberURL(m.URL); err != nil {
		c.add("url", m.URL, "%v", err)
	}
	if m.Weight < 1 || m.Weight > maxWeight {
		c.add("weight", m.Weight, "want 1..%d", maxWeight)
	}
	if int(m.State) >= len(adminStateNames) {
		c.add("state", int(m.State), "want active, drain or disabled")
	}
}

// ParseMemberURL parses a member's URL: http or https, a host, and nothing
// after it, because gwelb forwards the request target unchanged (DESIGN.md
// rule 9). The error says what is wrong without repeating the URL.
func ParseMemberURL(raw string) (*url.URL, error) {
	if raw == "" || len(raw) > maxURLLen {
		return nil, fmt.Errorf("want http://host:port or https://host:port")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("not a URL (%v)", err.(*url.Error).Err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Opaque != "" {
		return nil, fmt.Errorf("want http://host:port or https://host:port")
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("must have no path, query or user: gwelb forwards the request target unchanged")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("port %q: want 1..65535", p)
		}
	}
	if h := u.Hostname(); h == "" || (net.ParseIP(h) == nil && !validHostname(h)) {
		return nil, fmt.Errorf("host %q: want a host name or an IP address", h)
	}
	u.Path = ""
	return u, nil
}

// validName: pool names appear in logs, metrics and cookies' neighbours, so
// they are plain identifiers.
func validName(s string) bool {
	if s == "" || len(s) > maxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isAlnum(c) && c != '.' && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

// checkPrefix accepts "/" or "/seg[/seg...]" where segments are RFC 3986
// pchars without percent-escapes and are not dot-segments, so a prefix means
// the same thing before and after any normalisation.
func checkPrefix(p string) string {
	if p == "/" {
		return ""
	}
	if !strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") || len(p) > maxPrefixLen {
		return "want / or a path starting with / and not ending with /"
	}
	for _, seg := range strings.Split(p[1:], "/") {
		if seg == "" || seg == "." || seg == ".." {
			return "want no empty, '.' or '..' segments"
		}
		for i := 0; i < len(seg); i++ {
			c := seg[i]
			if !isAlnum(c) && !strings.ContainsRune("-._~!$&'()*+,;=:@", rune(c)) {
				return fmt.Sprintf("character %q: want letters, digits and -._~!$&'()*+,;=:@ (no percent-escapes)", c)
			}
		}
	}
	return ""
}

func checkHealthPath(p string) string {
	if !strings.HasPrefix(p, "/") {
		return "must start with /"
	}
	if len(p) > maxHealthPath {
		return fmt.Sprintf("longer than %d bytes", maxHealthPath)
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c <= ' ' || c >= 0x7f || c == '#' {
			return fmt.Sprintf("character %q: want visible ASCII without '#'", c)
		}
	}
	return ""
}

// validHTTPToken is RFC 9110's token: what a cookie or parameter name may be.
func validHTTPToken(s string) bool {
	if s == "" || len(s) > maxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isAlnum(c) && !strings.ContainsRune("!#$%&'*+-.^_`|~", rune(c)) {
			return false
		}
	}
	return true
}

// validQueryName is a token that reads the same raw and decoded and cannot
// split a query string.
func validQueryName(s string) bool {
	return validHTTPToken(s) && !strings.ContainsAny(s, "&=+%#")
}

// attrSafe reports whether s can be written into a Set-Cookie attribute
// without ending it or the header: visible ASCII without ';'.
func attrSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == ';' {
			return false
		}
	}
	return true
}

func validCookieDomain(s string) bool {
	return len(s) <= maxCookieAttr && validHostname(strings.TrimPrefix(s, "."))
}

func validHostname(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !isAlnum(c) && c != '-' && c != '_' {
				return false
			}
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}
