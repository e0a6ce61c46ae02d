package ui

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
)

// AuditTee returns a slog.Handler that passes every record to next and
// also records the node's audit records (message "audit", cluster/audit.go,
// DESIGN.md §4.3) in h, for the dashboard's "recent admin writes". Give it
// to the cluster's logger: audit records are then kept whatever the log
// level, the others go to next as before.
func AuditTee(next slog.Handler, h *History) slog.Handler {
	h.FedByAudit()
	return &auditTee{next: next, h: h}
}

type auditTee struct {
	next slog.Handler
	h    *History
	pre  []slog.Attr // from WithAttrs, outside any group
}

func (a *auditTee) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo || a.next.Enabled(ctx, l)
}

func (a *auditTee) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "audit" {
		a.h.Record(auditWrite(r, a.pre))
		// An audit trail that log_level can silence is no trail
		// (DESIGN.md §4.3): audit records are written at any level.
		return a.next.Handle(ctx, r)
	}
	if !a.next.Enabled(ctx, r.Level) {
		return nil
	}
	return a.next.Handle(ctx, r)
}

func (a *auditTee) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &auditTee{next: a.next.WithAttrs(attrs), h: a.h, pre: append(a.pre[:len(a.pre):len(a.pre)], attrs...)}
}

func (a *auditTee) WithGroup(name string) slog.Handler {
	// Audit records are not logged inside a group; keep teeing what is.
	return &auditTee{next: a.next.WithGroup(name), h: a.h, pre: a.pre}
}

// auditWrite turns an audit record into a Write: who (and via), the RPC
// with its arguments, the outcome.
func auditWrite(r slog.Record, pre []slog.Attr) Write {
	w := Write{Time: r.Time}
	var who, via, rpc, outcome, code, errMsg, node, index string
	var args []string
	take := func(a slog.Attr) bool {
		v := a.Value.Resolve().String()
		switch a.Key {
		case "who":
			who = v
		case "via":
			via = v
		case "rpc":
			rpc = v
		case "outcome":
			outcome = v
		case "code":
			code = v
		case "error":
			errMsg = v
		case "index":
			index = v
		case "node":
			node = v
		case "request_id":
			w.RequestID = v
		default:
			args = append(args, a.Key+"="+v)
		}
		return true
	}
	for _, a := range pre {
		take(a)
	}
	r.Attrs(take)
	w.Who = who
	if via != "" {
		w.Who += " via " + via
	}
	w.What = strings.TrimSpace(rpc + " " + strings.Join(args, " "))
	switch {
	case outcome == "ok" && index != "":
		w.Outcome = "ok (index " + index + ")"
	case outcome == "ok":
		w.Outcome = "ok"
	default:
		w.Outcome = fmt.Sprintf("%s: %s", code, errMsg)
	}
	w.Node = node
	return w
}
