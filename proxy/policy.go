package proxy

import (
	"net/http"
	"strings"
)

// allowHeader is the Allow header of a 405: what the balancer forwards.
const allowHeader = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"

// refuse says whether the balancer answers a request itself before any
// pool is chosen, with the status and a short reason:
//
//   - 405 for CONNECT (the balancer is not a forward proxy) and TRACE
//     (it would echo the client's cookies back through any member);
//   - 400 for a path that a member could read differently from how the
//     balancer matched it against the pools: dot-segments (raw "." or ".."
//     segments, also with ";params", and any "%2e"), an encoded slash or
//     backslash ("%2f", "%5c") and a raw backslash. GWE never sends them;
//     a member that normalises "/backend/../frontend/x" or decodes
//     "%2f" would otherwise serve a pool the listener does not.
func refuse(method, target string) (code int, reason string) {
	switch method {
	case http.MethodConnect, http.MethodTrace:
		return http.StatusMethodNotAllowed, "gwelb: method not allowed"
	}
	if badPath(rawPath(target)) {
		return http.StatusBadRequest, "gwelb: dot-segments and encoded slashes are not accepted in the path"
	}
	return 0, ""
}

// rawPath is the path of a request target as the client sent it: before
// the query in origin form ("/a/b?q"), after the authority in absolute form
// ("http://h/a/b?q"); "" for authority form and "*".
func rawPath(target string) string {
	if !strings.HasPrefix(target, "/") {
		i := strings.Index(target, "://")
		if i < 0 {
			return ""
		}
		rest := target[i+3:]
		j := strings.IndexByte(rest, '/')
		if j < 0 {
			return ""
		}
		target = rest[j:]
	}
	if i := strings.IndexByte(target, '?'); i >= 0 {
		target = target[:i]
	}
	return target
}

// badPath reports whether a raw path holds a dot-segment, "%2e", "%2f",
// "%5c" (any case) or a backslash. It allocates nothing.
func badPath(p string) bool {
	segStart := 0
	for i := 0; i <= len(p); i++ {
		if i == len(p) || p[i] == '/' {
			seg := p[segStart:i]
			if j := strings.IndexByte(seg, ';'); j >= 0 {
				seg = seg[:j] // Tomcat and Jetty drop ";params" before resolving ".."
			}
			if seg == "." || seg == ".." {
				return true
			}
			segStart = i + 1
			continue
		}
		switch p[i] {
		case '\\':
			return true
		case '%':
			if i+2 < len(p) {
				hi, lo := p[i+1], p[i+2]|0x20 // lower-case the second digit
				if (hi == '2' && (lo == 'e' || lo == 'f')) || (hi == '5' && lo == 'c') {
					return true
				}
			}
		}
	}
	return false
}

// isWebSocket lets only WebSocket upgrades through: a GET over HTTP/1.1
// whose Upgrade is exactly "websocket" and whose Connection names upgrade.
// Any other Upgrade (h2c above all: a member that accepts it would speak
// HTTP/2 through the tunnel, past every check of the balancer) is removed
// with HTTP2-Settings when the head is forwarded (forward.go), so the
// member sees a plain request; HAProxy does the same.
func isWebSocket(h *reqHead) bool {
	if !h.upgrade || h.method != http.MethodGet || h.minor < 1 {
		return false
	}
	n, ws, conn := 0, false, false
	for _, hd := range h.headers {
		switch {
		case strings.EqualFold(hd.name, "upgrade"):
			n++
			ws = strings.EqualFold(hd.value, "websocket")
		case strings.EqualFold(hd.name, "connection"):
			conn = conn || hasTokenString(hd.value, "upgrade")
		}
	}
	return n == 1 && ws && conn
}
