package proxy

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/gwelb/gwelb/fsm"
)

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

// readStickyHead is readSticky on a parsed head (head.go): the values
// point into the head's buffer, and nothing is allocated unless the query
// value holds percent-escapes.
func readStickyHead(h *reqHead, queryName, cookieName string) stickyKeys {
	var k stickyKeys
	if queryName != "" && h.rawQuery != "" {
		k.query = queryParam(h.rawQuery, queryName)
	}
	if cookieName != "" {
		for _, hd := range h.headers {
			if len(hd.name) == 6 && strings.EqualFold(hd.name, "cookie") {
				if v, found := cookieInLine(hd.value, cookieName); found {
					k.cookie = v
					break
				}
			}
		}
	}
	return k
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
		if !fsm.ValidSticky(val) {
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
		if v, found := cookieInLine(line, name); found {
			return v
		}
	}
	return ""
}

// cookieInLine looks for the first cookie called name in one Cookie line:
// found reports whether there is one, and value is its value ("" when
// malformed).
func cookieInLine(line, name string) (value string, found bool) {
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
		if !fsm.ValidSticky(val) {
			return "", true
		}
		return val, true
	}
	return "", false
}
