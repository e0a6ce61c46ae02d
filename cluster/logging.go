package cluster

import (
	"bytes"
	"context"
	"io"
	"log"
	"log/slog"

	"github.com/hashicorp/go-hclog"
)

// levelWriter turns the "[LEVEL] message" lines of raft's hclog and
// memberlist's log.Logger into slog records, so one log stream carries all.
type levelWriter struct {
	log       *slog.Logger
	component string
}

func (w levelWriter) Write(p []byte) (int, error) {
	line := bytes.TrimSpace(p)
	level := slog.LevelInfo
	for _, l := range []struct {
		tag   string
		level slog.Level
	}{{"[TRACE]", slog.LevelDebug - 4}, {"[DEBUG]", slog.LevelDebug}, {"[INFO]", slog.LevelInfo}, {"[WARN]", slog.LevelWarn}, {"[ERR]", slog.LevelError}, {"[ERROR]", slog.LevelError}} {
		if i := bytes.Index(line, []byte(l.tag)); i >= 0 {
			level = l.level
			line = bytes.TrimSpace(line[i+len(l.tag):])
			break
		}
	}
	if w.log.Enabled(context.Background(), level) {
		w.log.Log(context.Background(), level, string(line), "component", w.component)
	}
	return len(p), nil
}

func newHCLogger(component string, l *slog.Logger) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:            component,
		Level:           hclog.Info,
		Output:          levelWriter{log: l, component: component},
		DisableTime:     true,
		IncludeLocation: false,
	})
}

func newStdLogger(component string, l *slog.Logger) *log.Logger {
	return log.New(io.Writer(levelWriter{log: l, component: component}), "", 0)
}
