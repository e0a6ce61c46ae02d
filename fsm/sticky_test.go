package fsm

import (
	"strings"
	"testing"
)

func TestRouteOf(t *testing.T) {
	tests := []struct{ value, route string }{
		{".GWE_F_2", "GWE_F_2"},
		{"abc.2", "2"},
		{".2", "2"},
		{"abc", ""},
		{"", ""},
		{".", ""},
		{"abc.", ""},
		{"a.b.c", "b.c"}, // the FIRST dot, as Apache
		{"..2", ".2"},
	}
	for _, tt := range tests {
		if got := RouteOf(tt.value); got != tt.route {
			t.Errorf("RouteOf(%q) = %q, want %q", tt.value, got, tt.route)
		}
	}
}

func TestValidSticky(t *testing.T) {
	valid := []string{".2", "abc.2", ".GWE_F_2", "x", strings.Repeat("a", MaxStickyLen), "%2E2", "a=b", "a:b/c?d&e", "~!@#$^*()[]{}<>|`'"}
	invalid := []string{"", strings.Repeat("a", MaxStickyLen+1), ".2 ", " .2", "a\tb", ".2\x00", ".2\x7f", "\x01", ".2é", `"`, `.2"`, ".2,3", ".2;3", `.\2`, "\n"}
	for _, v := range valid {
		if !ValidSticky(v) {
			t.Errorf("ValidSticky(%.40q) = false, want true", v)
		}
	}
	for _, v := range invalid {
		if ValidSticky(v) {
			t.Errorf("ValidSticky(%.40q) = true, want false", v)
		}
	}
}
