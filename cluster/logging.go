package cluster

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// hclogSlog is an hclog.Logger that writes to a *slog.Logger, so raft's
// records reach gwelb's one log stream with their fields: each key/value
// pair of a call, and of With, becomes a slog attribute; the logger's name
// (Named, ResetNamed) is the attribute "component"; hclog's levels map onto
// slog's (Trace is slog.LevelDebug-4).
//
// On top of the slog handler's own level, hclog's level (SetLevel, shared
// with every logger derived from this one, as hclog's own loggers share
// it) filters: Info by default, because raft's Debug records are a
// running commentary nobody running gwelb at log_level debug wants.
type hclogSlog struct {
	base    *slog.Logger // without the name and implied attributes
	log     *slog.Logger // base with them
	name    string
	implied []any // With's pairs, as given (ImpliedArgs)
	level   *atomic.Int32
}

var _ hclog.Logger = (*hclogSlog)(nil)

// newHCLogger returns raft's logger: component is its name.
func newHCLogger(component string, l *slog.Logger) hclog.Logger {
	level := new(atomic.Int32)
	level.Store(int32(hclog.Info))
	return newHCLogSlog(l, component, nil, level)
}

func newHCLogSlog(base *slog.Logger, name string, implied []any, level *atomic.Int32) *hclogSlog {
	l := base
	if name != "" {
		l = l.With("component", name)
	}
	if attrs := hclogAttrs(implied); len(attrs) > 0 {
		l = l.With(attrs...)
	}
	return &hclogSlog{base: base, log: l, name: name, implied: implied, level: level}
}

// slogLevel maps an hclog level onto slog's.
func slogLevel(l hclog.Level) slog.Level {
	switch l {
	case hclog.Trace:
		return slog.LevelDebug - 4
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	default: // Info, NoLevel (a message without a level)
		return slog.LevelInfo
	}
}

// enabled tells whether a record at l would be written.
func (h *hclogSlog) enabled(l hclog.Level) bool {
	if l == hclog.Off {
		return false
	}
	if l == hclog.NoLevel {
		l = hclog.Info
	}
	floor := hclog.Level(h.level.Load())
	return floor != hclog.Off && l >= floor && h.log.Enabled(context.Background(), slogLevel(l))
}

// Log writes msg and the key/value pairs args at level.
func (h *hclogSlog) Log(level hclog.Level, msg string, args ...any) {
	if !h.enabled(level) {
		return
	}
	if len(args) == 1 {
		if f, ok := args[0].(hclog.Format); ok && len(f) > 0 {
			msg, args = fmt.Sprintf(fmt.Sprint(f[0]), f[1:]...), nil
		}
	}
	h.log.Log(context.Background(), slogLevel(level), msg, hclogAttrs(args)...)
}

// hclogAttrs turns hclog's alternating keys and values into slog
// attributes. A key that is not a string is printed; a value without a key
// goes under hclog's EXTRA_VALUE_AT_END, as hclog writes it.
func hclogAttrs(args []any) []any {
	if len(args) == 0 {
		return nil
	}
	out := make([]any, 0, (len(args)+1)/2)
	for i := 0; i < len(args); i += 2 {
		if i+1 == len(args) {
			if _, ok := args[i].(hclog.CapturedStacktrace); ok {
				out = append(out, slog.String("stacktrace", fmt.Sprint(args[i])))
				break
			}
			out = append(out, slog.Any(hclog.MissingKey, hclogValue(args[i])))
			break
		}
		key, ok := args[i].(string)
		if !ok {
			key = fmt.Sprint(args[i])
		}
		out = append(out, slog.Any(key, hclogValue(args[i+1])))
	}
	return out
}

// hclogValue is v as hclog would print it, kept typed where slog handlers
// print it the same way: numbers, booleans, strings, durations and times
// stay what they are; hclog's formatting wrappers are applied; anything
// else (a *raft.Raft, a []raft.Server, an error) becomes its text, so a
// JSON handler never marshals a struct's fields instead.
func hclogValue(v any) any {
	switch v := v.(type) {
	case nil:
		return nil
	case string, bool, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, float32, float64, time.Duration, time.Time:
		return v
	case hclog.Hex:
		return "0x" + strconv.FormatInt(int64(v), 16)
	case hclog.Octal:
		return "0" + strconv.FormatInt(int64(v), 8)
	case hclog.Binary:
		return "0b" + strconv.FormatInt(int64(v), 2)
	case hclog.Quote:
		return strconv.Quote(string(v))
	case hclog.Format:
		if len(v) == 0 {
			return ""
		}
		return fmt.Sprintf(fmt.Sprint(v[0]), v[1:]...)
	case error, fmt.Stringer:
		return fmt.Sprint(v) // fmt survives a nil receiver's panic
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.String: // raft.ServerID, raft.ServerAddress
		return rv.String()
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return rv.Int()
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return rv.Uint()
	case reflect.Bool:
		return rv.Bool()
	}
	return fmt.Sprintf("%v", v)
}

func (h *hclogSlog) Trace(msg string, args ...any) { h.Log(hclog.Trace, msg, args...) }
func (h *hclogSlog) Debug(msg string, args ...any) { h.Log(hclog.Debug, msg, args...) }
func (h *hclogSlog) Info(msg string, args ...any)  { h.Log(hclog.Info, msg, args...) }
func (h *hclogSlog) Warn(msg string, args ...any)  { h.Log(hclog.Warn, msg, args...) }
func (h *hclogSlog) Error(msg string, args ...any) { h.Log(hclog.Error, msg, args...) }

func (h *hclogSlog) IsTrace() bool { return h.enabled(hclog.Trace) }
func (h *hclogSlog) IsDebug() bool { return h.enabled(hclog.Debug) }
func (h *hclogSlog) IsInfo() bool  { return h.enabled(hclog.Info) }
func (h *hclogSlog) IsWarn() bool  { return h.enabled(hclog.Warn) }
func (h *hclogSlog) IsError() bool { return h.enabled(hclog.Error) }

// ImpliedArgs returns the pairs given to With, this logger's and its
// parents'.
func (h *hclogSlog) ImpliedArgs() []any { return h.implied }

// With returns a logger that adds args to every record.
func (h *hclogSlog) With(args ...any) hclog.Logger {
	implied := make([]any, 0, len(h.implied)+len(args))
	implied = append(append(implied, h.implied...), args...)
	return newHCLogSlog(h.base, h.name, implied, h.level)
}

// Name is the logger's name, the records' "component".
func (h *hclogSlog) Name() string { return h.name }

// Named returns a logger named name below this one ("raft.snapshot").
func (h *hclogSlog) Named(name string) hclog.Logger {
	if h.name != "" {
		name = h.name + "." + name
	}
	return newHCLogSlog(h.base, name, h.implied, h.level)
}

// ResetNamed returns a logger named name, whatever this one's name.
func (h *hclogSlog) ResetNamed(name string) hclog.Logger {
	return newHCLogSlog(h.base, name, h.implied, h.level)
}

// SetLevel sets hclog's level for this logger and every one derived from
// the same root.
func (h *hclogSlog) SetLevel(level hclog.Level) { h.level.Store(int32(level)) }

// GetLevel returns hclog's level.
func (h *hclogSlog) GetLevel() hclog.Level { return hclog.Level(h.level.Load()) }

// StandardLogger returns a *log.Logger whose lines reach this logger.
func (h *hclogSlog) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(h.StandardWriter(opts), "", 0)
}

// StandardWriter returns a writer whose lines reach this logger: at
// opts.ForceLevel if set, else at the "[LEVEL]" the line starts with when
// opts.InferLevels is set, else at Info.
func (h *hclogSlog) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	w := &stdLogWriter{log: h.log, level: slog.LevelInfo, infer: true}
	if opts != nil {
		w.infer = opts.InferLevels
		if opts.ForceLevel != hclog.NoLevel {
			w.level, w.infer = slogLevel(opts.ForceLevel), false
		}
	}
	return w
}

// stdLogWriter turns the lines of a standard *log.Logger into slog
// records. A *log.Logger has no fields and no levels, so this part is text
// by necessity: memberlist writes "[LEVEL] memberlist: message", and the
// level tag and the "memberlist: " prefix become the record's level and
// component.
type stdLogWriter struct {
	log    *slog.Logger
	level  slog.Level // of lines without a level tag
	infer  bool       // read the level from a leading "[LEVEL]"
	prefix string     // removed from the message after the tag, e.g. "memberlist: "
}

func (w *stdLogWriter) Write(p []byte) (int, error) {
	for line := range strings.SplitSeq(strings.TrimRight(string(p), "\r\n"), "\n") {
		level, msg := w.level, strings.TrimSpace(line)
		if w.infer {
			if l, rest, ok := levelTag(msg); ok {
				level, msg = l, rest
			}
		}
		msg = strings.TrimPrefix(msg, w.prefix)
		if msg != "" && w.log.Enabled(context.Background(), level) {
			w.log.Log(context.Background(), level, msg)
		}
	}
	return len(p), nil
}

// levelTag reads the "[LEVEL] " a log line starts with, as hclog's
// InferLevels does: TRACE, DEBUG, INFO, WARN, ERR and ERROR.
func levelTag(line string) (slog.Level, string, bool) {
	if !strings.HasPrefix(line, "[") {
		return 0, line, false
	}
	tag, rest, ok := strings.Cut(line[1:], "]")
	if !ok {
		return 0, line, false
	}
	var level slog.Level
	switch tag {
	case "TRACE":
		level = slog.LevelDebug - 4
	case "DEBUG":
		level = slog.LevelDebug
	case "INFO":
		level = slog.LevelInfo
	case "WARN", "WARNING":
		level = slog.LevelWarn
	case "ERR", "ERROR":
		level = slog.LevelError
	default:
		return 0, line, false
	}
	return level, strings.TrimSpace(rest), true
}

// newStdLogger returns memberlist's logger: its records carry component.
func newStdLogger(component string, l *slog.Logger) *log.Logger {
	return log.New(&stdLogWriter{log: l.With("component", component), level: slog.LevelInfo, infer: true, prefix: component + ": "}, "", 0)
}
