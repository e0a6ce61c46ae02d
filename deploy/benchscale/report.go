package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// report collects the figures as table rows.
type report struct {
	rows  []row
	notes []string
}

// row is one figure: what, the measurement, the goal ("" for none) and
// whether it was met.
type row struct {
	what, got, goal string
	verdict         string // "ok", "MISS" or "" (no goal)
}

func (r *report) add(what, got string) { r.rows = append(r.rows, row{what: what, got: got}) }

// check adds a figure with a goal.
func (r *report) check(what, got, goal string, met bool) {
	v := "MISS"
	if met {
		v = "ok"
	}
	r.rows = append(r.rows, row{what, got, goal, v})
}

func (r *report) note(format string, args ...any) {
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}

// print writes the table (Markdown, so it pastes into README.md).
func (r *report) print(w io.Writer) {
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| figure | measured | goal (issue 13) | |")
	fmt.Fprintln(w, "|---|---|---|---|")
	for _, x := range r.rows {
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", x.what, x.got, x.goal, x.verdict)
	}
	for _, n := range r.notes {
		fmt.Fprintln(w, "* "+n)
	}
}

// quantile returns the q-quantile (nearest rank) of ds.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

// ms formats d in milliseconds.
func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

// mib formats bytes in MiB.
func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// pct formats a share of one core.
func pct(f float64) string { return fmt.Sprintf("%.1f%%", 100*f) }

// stats summarises floats as "min / median / max".
func stats(xs []float64, f func(float64) string) string {
	if len(xs) == 0 {
		return "-"
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	parts := []string{f(s[0]), f(s[len(s)/2]), f(s[len(s)-1])}
	return strings.Join(parts, " / ")
}
