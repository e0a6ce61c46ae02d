package proxy

import (
	"net/http"
	"net/url"
	"strings"
)

// MaxStickyLen is the longest sticky value honoured; longer values are
// treated as absent rather than hashed or logged at length.
const MaxStickyLen = 256

// stickyKeys are the sticky values a request carried for one pool.
type stickyKeys struct {
	query  string // value of the query parameter ("alias"), "" if absent or malformed
	cookie string // value of the sticky cookie, "" if absent or malformed
}

// value is the sticky value that decides the route: a query parameter beats
// a cookie, as in Apache's mod_proxy_balancer.
func (k stickyKeys) value() string {
	if k.query != "" {
		return k.query
	}
	return k.cookie
}

// readSticky extracts the pool's sticky values from r without allocating in
// the common case (no percent-escapes in the query value).
func readSticky(r *http.Request, queryName, cookieName string) stickyKeys {
	var k stickyKeys
	if queryName != "" {
		k.query = queryParam(r.URL.RawQuery, queryName)
	}
	if cookieName != "" {
		k.cookie = cookieValue(r.Header["Cookie"], cookieName)
	}
	return k
}

// routeOf returns what follows the first '.' of a sticky value, Apache's
// rule: ".GWE_F_2" -> "GWE_F_2", "abc.2" -> "2", "abc" -> "".
func routeOf(value string) string {
	if i := strings.IndexByte(value, '.'); i >= 0 {
		return value[i+1:]
	}
	return ""
}

// queryParam returns the URL-decoded value of the first occurrence of name
// in a raw query, or "" when it is absent, empty or malformed. Names are
// compared raw and case-sensitively, as Apache does.
func queryParam(rawQuery, name string) string {
	for rawQuery != "" {
		var pair string
		pair, rawQuery, _ = strings.Cut(rawQuery, "&")
		key, val, _ := strings.Cut(pair, "=")
		if key != name {
			continue
		}
		if strings.ContainsAny(val, "%+") {
			dec, err := url.QueryUnescape(val)
			if err != nil {
				return ""
			}
			val = dec
		}
		if !validSticky(val) {
			return ""
		}
		return val
	}
	return ""
}

// cookieValue returns the verbatim value of the first cookie called name
// across all Cookie header lines (RFC 6265: optional DQUOTEs removed), or ""
// when it is absent, empty or malformed.
func cookieValue(lines []string, name string) string {
	for _, line := range lines {
		for line != "" {
			var part string
			part, line, _ = strings.Cut(line, ";")
			part = strings.TrimLeft(part, " \t")
			key, val, ok := strings.Cut(part, "=")
			if !ok || key != name {
				continue
			}
			val = strings.TrimRight(val, " \t")
			if len(val) >= 2 && val[0] == '"' && val[len(val)-1] == '"' {
				val = val[1 : len(val)-1]
			}
			if !validSticky(val) {
				return ""
			}
			return val
		}
	}
	return ""
}

// validSticky reports whether v is usable as a sticky value: 1 to
// MaxStickyLen visible ASCII characters that cannot break a Cookie header
// or a log line.
func validSticky(v string) bool {
	if v == "" || len(v) > MaxStickyLen {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c <= ' ' || c >= 0x7f || c == '"' || c == ',' || c == ';' || c == '\\' {
			return false
		}
	}
	return true
}
