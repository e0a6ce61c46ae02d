package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/gwelb/gwelb/fsm"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// The JSON of -o json. Every command prints the messages of
// proto/gwelb/v1 the node answered, in one form (README.md, "JSON
// output"), so a script can rely on it:
//
//   - field names as in the .proto (snake_case), in the .proto's order;
//   - every field present: zero values too (0, "", false, [], {}), an unset
//     message or unset optional field as null;
//   - enums as their value names ("ADMIN_STATE_DRAIN"), numbers only for a
//     value this gwelbctl does not know;
//   - 64-bit integers as JSON numbers, like every other number (protojson
//     writes them as strings);
//   - bytes as standard base64.
//
// This is protojson's own form with those choices, so protojson (or any
// protobuf library) reads it back into the messages. Commands that add
// what no message holds (route --all-nodes: addr, error) add keys to the
// message's object; a few print small objects of their own (version,
// snapshot save, README lists them).

// compactProto returns m as compact JSON in gwelbctl's form.
func compactProto(m proto.Message, extra ...jsonField) ([]byte, error) {
	b, err := appendProtoJSON(nil, m.ProtoReflect(), extra)
	if err != nil {
		return nil, fmt.Errorf("marshal %s: %w", m.ProtoReflect().Descriptor().Name(), err)
	}
	return b, nil
}

// jsonField is a key gwelbctl adds to a message's object, and its value
// (encoded with encoding/json).
type jsonField struct {
	key   string
	value any
}

// appendProtoJSON appends message m as a JSON object, then extra.
func appendProtoJSON(b []byte, m protoreflect.Message, extra []jsonField) ([]byte, error) {
	if m.Descriptor().FullName().Parent() == "google.protobuf" {
		// A well-known type has a JSON form of its own (a Duration is
		// "1.5s"): protojson's.
		raw, err := protojson.Marshal(m.Interface())
		if err != nil {
			return nil, err
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, raw); err != nil {
			return nil, err
		}
		return append(b, buf.Bytes()...), nil
	}
	b = append(b, '{')
	first := true
	key := func(name string) {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = appendJSONString(b, name)
		b = append(b, ':')
	}
	fields := m.Descriptor().Fields()
	var err error
	for i := range fields.Len() {
		fd := fields.Get(i)
		if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() && m.WhichOneof(od) != fd {
			continue // an unset member of a real oneof is no field of this message
		}
		key(string(fd.Name()))
		switch {
		case fd.IsList():
			b = append(b, '[')
			l := m.Get(fd).List()
			for j := range l.Len() {
				if j > 0 {
					b = append(b, ',')
				}
				if b, err = appendProtoValue(b, fd, l.Get(j)); err != nil {
					return nil, err
				}
			}
			b = append(b, ']')
		case fd.IsMap():
			b, err = appendProtoMap(b, fd, m.Get(fd).Map())
		case fd.HasPresence() && !m.Has(fd):
			b = append(b, "null"...) // unset: a message, or an optional field ("default")
		default:
			b, err = appendProtoValue(b, fd, m.Get(fd))
		}
		if err != nil {
			return nil, err
		}
	}
	for _, f := range extra {
		key(f.key)
		raw, err := json.Marshal(f.value)
		if err != nil {
			return nil, err
		}
		b = append(b, raw...)
	}
	return append(b, '}'), nil
}

// appendProtoMap appends a map field as an object, keys sorted.
func appendProtoMap(b []byte, fd protoreflect.FieldDescriptor, m protoreflect.Map) ([]byte, error) {
	keys := make([]protoreflect.MapKey, 0, m.Len())
	m.Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
		keys = append(keys, k)
		return true
	})
	sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, k.String())
		b = append(b, ':')
		var err error
		if b, err = appendProtoValue(b, fd.MapValue(), m.Get(k)); err != nil {
			return nil, err
		}
	}
	return append(b, '}'), nil
}

// appendProtoValue appends one value of field fd.
func appendProtoValue(b []byte, fd protoreflect.FieldDescriptor, v protoreflect.Value) ([]byte, error) {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return strconv.AppendBool(b, v.Bool()), nil
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return strconv.AppendInt(b, v.Int(), 10), nil
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return strconv.AppendUint(b, v.Uint(), 10), nil
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		f := v.Float()
		switch {
		case math.IsNaN(f):
			return append(b, `"NaN"`...), nil
		case math.IsInf(f, 1):
			return append(b, `"Infinity"`...), nil
		case math.IsInf(f, -1):
			return append(b, `"-Infinity"`...), nil
		}
		bits := 64
		if fd.Kind() == protoreflect.FloatKind {
			bits = 32
		}
		return strconv.AppendFloat(b, f, 'g', -1, bits), nil
	case protoreflect.StringKind:
		return appendJSONString(b, v.String()), nil
	case protoreflect.BytesKind:
		return appendJSONString(b, base64.StdEncoding.EncodeToString(v.Bytes())), nil
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return appendJSONString(b, string(ev.Name())), nil
		}
		return strconv.AppendInt(b, int64(v.Enum()), 10), nil
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return appendProtoJSON(b, v.Message(), nil)
	}
	return nil, fmt.Errorf("field %s: kind %v", fd.FullName(), fd.Kind())
}

// appendJSONString appends s as a JSON string, as encoding/json writes it
// but without escaping <, > and & (no HTML here).
func appendJSONString(b []byte, s string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return append(b, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
}

// printProto prints m as JSON indented by two spaces, with extra keys.
func (a *app) printProto(m proto.Message, extra ...jsonField) error {
	raw, err := compactProto(m, extra...)
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
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // as the messages: "<" stays "<"
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("marshal JSON: %w", err)
	}
	return a.printRawJSON(bytes.TrimSuffix(buf.Bytes(), []byte("\n")))
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
