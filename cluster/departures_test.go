package cluster

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

func TestDepartures(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	many := func(k int) []string {
		var out []string
		for i := range k {
			out = append(out, fmt.Sprintf("n%03d", i))
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		add    []string // added in order, one second apart
		forget []string
		want   []string
	}{
		{"nothing", nil, nil, []string{}},
		{"two leavers", []string{"b", "a"}, nil, []string{"a", "b"}},
		{"a rejoin forgets", []string{"a", "b"}, []string{"a"}, []string{"b"}},
		{"forgetting a stranger is harmless", []string{"a"}, []string{"zz"}, []string{"a"}},
		{"leaving twice is one entry", []string{"a", "a"}, nil, []string{"a"}},
		{"full: the oldest goes", many(maxDepartures + 2), nil, many(maxDepartures + 2)[2:]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var d departures
			for i, n := range tc.add {
				d.add(n, t0.Add(time.Duration(i)*time.Second))
			}
			for _, n := range tc.forget {
				d.forget(n)
			}
			if got := d.names(); !slices.Equal(got, tc.want) {
				t.Errorf("names %v, want %v", got, tc.want)
			}
		})
	}
}
