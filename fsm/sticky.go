package fsm

import "strings"

// MaxStickyLen is the longest sticky value honoured; longer values are
// treated as absent rather than hashed or logged at length.
const MaxStickyLen = 256

// RouteOf returns what follows the first '.' of a sticky value, Apache's
// rule: ".GWE_F_2" -> "GWE_F_2", "abc.2" -> "2", "abc" -> "".
func RouteOf(value string) string {
	if i := strings.IndexByte(value, '.'); i >= 0 {
		return value[i+1:]
	}
	return ""
}

// ValidSticky reports whether v is usable as a sticky value: 1 to
// MaxStickyLen visible ASCII characters that cannot break a Cookie header
// or a log line. Anything else counts as no sticky value at all.
func ValidSticky(v string) bool {
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
