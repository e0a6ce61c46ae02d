package confimport

import (
	"bytes"
	"encoding"
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/gwelb/gwelb/fsm"
)

// fileConfig is the part of gwelb's config file an import fills, in the
// order it is printed. The pools are fsm.PoolSpec, the config file's own
// type (DESIGN.md §5.1), so their keys are the schema's yaml tags.
type fileConfig struct {
	Node      string         `yaml:"node"`
	LogLevel  string         `yaml:"log_level"`
	Timeouts  Timeouts       `yaml:"timeouts"`
	Listeners []Listener     `yaml:"listeners"`
	Pools     []fsm.PoolSpec `yaml:"pools"`
}

// YAML renders the config as a gwelb config file with its comments: a
// head saying where it came from and what was not imported, and per field
// the source's directive it came from or why the source's has no gwelb
// equivalent.
func (c *Config) YAML() ([]byte, error) {
	root, err := sparse(reflect.ValueOf(fileConfig{
		Node: c.Node, LogLevel: c.LogLevel, Timeouts: c.Timeouts, Listeners: c.Listeners, Pools: c.Pools,
	}))
	if err != nil {
		return nil, err
	}
	doc := &yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{root}}
	doc.HeadComment = c.header()
	if k := key(root, "node"); k != nil {
		k.HeadComment = "this node's name, unique in its cluster"
	}
	var head []string
	for _, n := range mergeNotes(c.notes) {
		if !attach(root, n) {
			head = append(head, wrap("  "+n.text(), "    ")...)
		}
	}
	if len(head) > 0 {
		doc.HeadComment += "\n\nIn the source, with no gwelb key:\n" + strings.Join(head, "\n")
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("render config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("render config: %w", err)
	}
	return buf.Bytes(), nil
}

func (c *Config) header() string {
	lines := []string{
		fmt.Sprintf("gwelb config imported by `gwelbctl import %s %s`.", c.kind, c.file),
		"Check it: gwelb validate -dev -config FILE; run it as a lone node: gwelb agent -dev -config FILE.",
		"A node of a cluster also needs data_dir, raft_addr, gossip_addr, grpc_addr,",
		"bootstrap_expect, retry_join, tls and gossip_key (README.md, Configuration).",
	}
	if len(c.Warnings) > 0 {
		lines = append(lines, "", "Not imported (also printed as warnings):")
		for _, w := range c.Warnings {
			lines = append(lines, wrap(fmt.Sprintf("  line %d: %s", w.Line, w.Msg), "    ")...)
		}
	}
	return strings.Join(lines, "\n")
}

// mergeNotes joins notes with the same place and reason into one, their
// subjects listed: "proxy_buffers 8 2m (line 55), proxy_buffer_size 10m
// (line 56): not needed: ...".
func mergeNotes(ns []note) []note {
	var out []note
	idx := map[string]int{}
	for _, n := range ns {
		n.subject, n.why = printable(n.subject), printable(n.why)
		k := n.path + "\x00" + strconv.FormatBool(n.line) + "\x00" + n.why
		if n.why == "" {
			k += "\x00" + n.subject
		}
		if i, ok := idx[k]; ok {
			if !strings.Contains(out[i].subject, n.subject) {
				out[i].subject += ", " + n.subject
			}
			continue
		}
		idx[k] = len(out)
		out = append(out, n)
	}
	return out
}

func (n note) text() string {
	switch {
	case n.subject == "":
		return n.why
	case n.why == "":
		return n.subject
	}
	return n.subject + ": " + n.why
}

// attach puts note n where its path points, or above the nearest enclosing
// entry that exists (a field left at its default is not printed). A line
// note puts its subject after the value and its reason above the key, so
// lines stay short. attach is false for a note about the file as a whole.
func attach(root *yaml.Node, n note) bool {
	path := n.path
	line := n.line
	for {
		k, v := lookup(root, path)
		if v == nil {
			if path == "" {
				return false
			}
			line = false
			if i := strings.LastIndexAny(path, ".["); i >= 0 {
				path = path[:i]
			} else {
				path = ""
			}
			continue
		}
		head := k
		if head == nil {
			head = v // a sequence item: the comment goes above its "- "
		}
		if !line {
			head.HeadComment = joinComment(head.HeadComment, strings.Join(wrap(n.text(), ""), "\n"))
			return true
		}
		short, why := n.subject, n.why
		if short == "" {
			short, why = n.why, ""
		}
		if v.Kind == yaml.ScalarNode {
			v.LineComment = joinComment(v.LineComment, short)
		} else {
			head.LineComment = joinComment(head.LineComment, short)
		}
		if why != "" {
			head.HeadComment = joinComment(head.HeadComment, strings.Join(wrap(why, ""), "\n"))
		}
		return true
	}
}

func joinComment(old, add string) string {
	if old == "" {
		return add
	}
	return old + "\n" + add
}

// lookup finds path (`pools[0].members[1].url`) under root: the key node
// (nil for a sequence item) and the value node; nil, nil if absent.
func lookup(root *yaml.Node, path string) (k, v *yaml.Node) {
	if path == "" {
		return nil, nil
	}
	v = root
	for _, seg := range strings.Split(path, ".") {
		name, index := seg, -1
		if i := strings.IndexByte(seg, '['); i >= 0 && strings.HasSuffix(seg, "]") {
			name = seg[:i]
			n, err := strconv.Atoi(seg[i+1 : len(seg)-1])
			if err != nil {
				return nil, nil
			}
			index = n
		}
		k = key(v, name)
		if k == nil {
			return nil, nil
		}
		v = value(v, name)
		if index >= 0 {
			if v.Kind != yaml.SequenceNode || index >= len(v.Content) {
				return nil, nil
			}
			k, v = nil, v.Content[index]
		}
	}
	return k, v
}

func key(m *yaml.Node, name string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == name {
			return m.Content[i]
		}
	}
	return nil
}

func value(m *yaml.Node, name string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == name {
			return m.Content[i+1]
		}
	}
	return nil
}

var textMarshaler = reflect.TypeFor[encoding.TextMarshaler]()

// sparse encodes v as yaml.Marshal would, through the same yaml tags, but
// leaves out every struct field at its zero value: an imported config
// shows what the source set, and gwelb's defaults (fsm.PoolSpec.WithDefaults)
// fill in the rest. A pointer set to a zero value (fail_timeout: 0s, "no
// quarantine") is kept.
func sparse(v reflect.Value) (*yaml.Node, error) {
	for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		if v.IsNil() {
			return nil, nil
		}
		if v.Type().Implements(textMarshaler) {
			break
		}
		v = v.Elem()
	}
	switch {
	case v.Kind() == reflect.Struct && !v.Type().Implements(textMarshaler):
		m := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if !f.IsExported() || name == "-" || name == "" || v.Field(i).IsZero() {
				continue
			}
			n, err := sparse(v.Field(i))
			if err != nil {
				return nil, err
			}
			if n == nil {
				continue
			}
			m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: name}, n)
		}
		return m, nil
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() != reflect.Uint8:
		s := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		for i := range v.Len() {
			n, err := sparse(v.Index(i))
			if err != nil {
				return nil, err
			}
			if n == nil {
				n = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Style: yaml.FlowStyle}
			}
			s.Content = append(s.Content, n)
		}
		return s, nil
	}
	var n yaml.Node
	if err := n.Encode(v.Interface()); err != nil {
		return nil, fmt.Errorf("render config: %w", err)
	}
	return &n, nil
}

// wrap breaks a comment of one paragraph into lines of at most 76
// columns (a longer word stays whole); the first line keeps s's leading
// spaces, the others start with indent.
func wrap(s, indent string) []string {
	const width = 76
	line := s[:len(s)-len(strings.TrimLeft(s, " "))]
	var out []string
	first := true
	for _, w := range strings.Fields(s) {
		switch {
		case first:
			line += w
			first = false
		case len(line)+1+len(w) > width:
			out = append(out, line)
			line = indent + w
		default:
			line += " " + w
		}
	}
	return append(out, line)
}
