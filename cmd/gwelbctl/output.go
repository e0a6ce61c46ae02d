package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/gwelb/gwelb/fsm"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// protoJSON is the JSON form of messages: proto field names (as in the
// .proto and the --all-nodes array), unpopulated fields left out.
var protoJSON = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: false}

// compactProto returns m as compact JSON. protojson randomises its
// whitespace on purpose, so the result is normalised.
func compactProto(m proto.Message) ([]byte, error) {
	raw, err := protoJSON.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("marshal %s: %w", m.ProtoReflect().Descriptor().Name(), err)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil, fmt.Errorf("compact JSON: %w", err)
	}
	return buf.Bytes(), nil
}

// printProto prints m as JSON indented by two spaces.
func (a *app) printProto(m proto.Message) error {
	raw, err := compactProto(m)
	if err != nil {
		return err
	}
	return a.printRawJSON(raw)
}

// printProtoList prints msgs as a JSON array indented by two spaces.
func printProtoList[M proto.Message](a *app, msgs []M) error {
	items := make([]json.RawMessage, 0, len(msgs))
	for _, m := range msgs {
		raw, err := compactProto(m)
		if err != nil {
			return err
		}
		items = append(items, raw)
	}
	return a.printJSON(items)
}

// printJSON prints v, encoded with encoding/json, indented by two spaces.
func (a *app) printJSON(v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("marshal JSON: %w", err)
	}
	return a.printRawJSON(raw)
}

// printRawJSON prints compact JSON indented by two spaces.
func (a *app) printRawJSON(raw []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return fmt.Errorf("indent JSON: %w", err)
	}
	buf.WriteByte('\n')
	if _, err := a.stdout.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

// table is a tabwriter for column output; rows are tab-separated cells.
type table struct {
	tw  *tabwriter.Writer
	err error
}

// newTable starts a table on w with the given column headers.
func newTable(w io.Writer, headers ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)}
	t.row(headers...)
	return t
}

// row adds a row; empty cells print as "-".
func (t *table) row(cells ...string) {
	if t.err != nil {
		return
	}
	for i, c := range cells {
		if c == "" {
			cells[i] = "-"
		}
	}
	_, t.err = fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

// flush writes the table out.
func (t *table) flush() error {
	if t.err == nil {
		t.err = t.tw.Flush()
	}
	if t.err != nil {
		return fmt.Errorf("write output: %w", t.err)
	}
	return nil
}

// stateName is the CLI name of an admin state: active, drain, disabled.
func stateName(s gwelbv1.AdminState) string { return fsm.AdminStateFromProto(s).String() }

// verdictName is the CLI name of a verdict: up, down.
func verdictName(v gwelbv1.Verdict) string {
	return strings.ToLower(strings.TrimPrefix(v.String(), "VERDICT_"))
}

// age is how long ago unixNanos was, as "3m12s"; "" when unixNanos is 0. A
// time in the future (clock skew between nodes) shows as "0s".
func age(now time.Time, unixNanos int64) string {
	if unixNanos == 0 {
		return ""
	}
	d := now.Sub(time.Unix(0, unixNanos))
	if d < 0 {
		d = 0
	}
	return fmtDuration(d)
}

// fmtDuration prints d with at most two units: 45s, 3m12s, 2h5m, 3d4h.
func fmtDuration(d time.Duration) string {
	s := int64(d.Round(time.Second) / time.Second)
	switch {
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm%ds", s/60, s%60)
	case s < 48*3600:
		return fmt.Sprintf("%dh%dm", s/3600, s%3600/60)
	default:
		return fmt.Sprintf("%dd%dh", s/86400, s%86400/3600)
	}
}

// memberName is "pool/route".
func memberName(pool, route string) string { return pool + "/" + route }
