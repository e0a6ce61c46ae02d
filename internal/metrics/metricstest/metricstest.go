// Package metricstest scrapes a real /metrics endpoint over HTTP and reads
// the exposition with Prometheus' own text parser, for tests that judge
// metrics the way a Prometheus server would see them.
package metricstest

import (
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Families is one scrape, by metric family name.
type Families map[string]*dto.MetricFamily

// Scrape GETs url (an ops listener's /metrics) asking for the text format
// and parses the answer with the Prometheus text parser; any failure,
// including a series name outside the classic character set, fails t.
func Scrape(t testing.TB, url string) Families {
	t.Helper()
	f, err := TryScrape(url)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TryScrape is Scrape returning its error.
func TryScrape(url string) (Families, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
		return nil, fmt.Errorf("scrape %s: %s: %s", url, resp.Status, b)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		return nil, fmt.Errorf("scrape %s: Content-Type %q, want the text format", url, ct)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: parse: %w", url, err)
	}
	return fams, nil
}

// Value returns the value of the series of family name whose labels
// include the given name, value pairs, and whether exactly one matched.
// Counters, gauges and untyped series give their value; histograms their
// sample count.
func (f Families) Value(name string, labels ...string) (float64, bool) {
	var v float64
	n := 0
	for _, m := range f.series(name, labels) {
		v = value(m)
		n++
	}
	return v, n == 1
}

// Sum adds the values of every series of family name whose labels include
// the given pairs (0 when none).
func (f Families) Sum(name string, labels ...string) float64 {
	var v float64
	for _, m := range f.series(name, labels) {
		v += value(m)
	}
	return v
}

// Count is the number of series of family name whose labels include the pairs.
func (f Families) Count(name string, labels ...string) int {
	return len(f.series(name, labels))
}

// Names lists the families whose name starts with prefix, sorted.
func (f Families) Names(prefix string) []string {
	var out []string
	for n := range f {
		if strings.HasPrefix(n, prefix) {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

func (f Families) series(name string, labels []string) []*dto.Metric {
	if len(labels)%2 != 0 {
		panic("metricstest: labels are name, value pairs")
	}
	fam := f[name]
	if fam == nil {
		return nil
	}
	var out []*dto.Metric
next:
	for _, m := range fam.GetMetric() {
		for i := 0; i < len(labels); i += 2 {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
					break
				}
			}
			if !found && !(labels[i+1] == "" && !hasLabel(m, labels[i])) {
				continue next
			}
		}
		out = append(out, m)
	}
	return out
}

func hasLabel(m *dto.Metric, name string) bool {
	for _, lp := range m.GetLabel() {
		if lp.GetName() == name {
			return true
		}
	}
	return false
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Histogram != nil:
		return float64(m.GetHistogram().GetSampleCount())
	case m.Summary != nil:
		return float64(m.GetSummary().GetSampleCount())
	case m.Untyped != nil:
		return m.GetUntyped().GetValue()
	}
	return 0
}
