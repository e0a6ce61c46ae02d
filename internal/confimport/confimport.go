// Package confimport reads the Apache (mod_proxy_balancer) and nginx
// balancer configurations of the Genesys Web Engagement deployment guide
// and turns them into a gwelb node config: `gwelbctl import apache|nginx
// FILE`.
//
// The pools are built as fsm.PoolSpec, the one model of a pool (DESIGN.md
// §5.1), judged by fsm.ValidatePools before anything is printed, and
// marshalled through their own yaml tags, so the output is what `gwelb
// validate` and the agent read. What the source says and gwelb does another
// way becomes a YAML comment saying why it is not needed; what the importer
// does not know is a Warning, never silently dropped; a file that is not a
// balancer config is an *Error naming its line.
package confimport

import (
	"bytes"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gwelb/gwelb/fsm"
)

// Kind is the format of the file to import.
type Kind string

// The formats Import reads.
const (
	Apache Kind = "apache" // httpd.conf with mod_proxy_balancer, as in the guide's Apache tab
	Nginx  Kind = "nginx"  // nginx.conf with upstream and map, as in the guide's nginx tab
)

// Kinds lists the formats Import reads.
var Kinds = []Kind{Apache, Nginx}

// DefaultNode is the node name of an imported config; -dev fills in the
// addresses a lone node needs.
const DefaultNode = "lb1"

// Listener is one data-plane listener of the imported config, with the
// yaml keys of gwelb's listeners[] entries.
type Listener struct {
	Addr  string       `yaml:"addr"`
	Pools []string     `yaml:"pools"` // nil: every pool
	TLS   *ListenerTLS `yaml:"tls"`
}

// ListenerTLS names a listener's certificate and key (PEM files).
type ListenerTLS struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// Timeouts are the node-wide timeouts the source sets, with the yaml keys
// of gwelb's timeouts block; zero means gwelb's default.
type Timeouts struct {
	Connect time.Duration `yaml:"connect"`
	Idle    time.Duration `yaml:"idle"`
}

// Config is an imported node config. YAML renders it with its comments.
type Config struct {
	Node      string
	LogLevel  string
	Timeouts  Timeouts
	Listeners []Listener
	Pools     []fsm.PoolSpec
	// Warnings are what the source says and the import did not carry
	// over, in the order of the source's lines.
	Warnings []Warning

	kind  Kind
	file  string // base name of the source, for the header comment
	notes []note
}

// Warning is something in the source that the import did not carry over.
type Warning struct {
	File string
	Line int
	Msg  string
}

func (w Warning) String() string { return fmt.Sprintf("%s:%d: warning: %s", w.File, w.Line, w.Msg) }

// Error is why a file cannot be imported: not a balancer config, or a
// balancer config gwelb cannot express. It names the line.
type Error struct {
	File string
	Line int
	Msg  string
}

func (e *Error) Error() string { return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg) }

// Import reads src, the contents of the file called name, as kind and
// returns the gwelb config it describes, already validated. The error is
// an *Error naming a line of the file.
func Import(kind Kind, name string, src []byte) (*Config, error) {
	b := &builder{file: name, cfg: &Config{Node: DefaultNode, kind: kind, file: filepath.Base(name)}}
	var err error
	switch kind {
	case Apache:
		err = importApache(b, src)
	case Nginx:
		err = importNginx(b, src)
	default:
		return nil, fmt.Errorf("import %q: want one of apache, nginx", kind)
	}
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(b.cfg.Warnings, func(x, y Warning) int { return x.Line - y.Line })
	return b.cfg, nil
}

// builder collects what an import found.
type builder struct {
	file string
	cfg  *Config
	// connectLine is where the connect timeout was set, so a second,
	// different one is a warning.
	connectLine int
	idleLine    int
	logLine     int
}

func (b *builder) errorf(line int, format string, args ...any) *Error {
	return &Error{File: b.file, Line: max(line, 1), Msg: printable(fmt.Sprintf(format, args...))}
}

func (b *builder) warn(line int, format string, args ...any) {
	b.cfg.Warnings = append(b.cfg.Warnings, Warning{File: b.file, Line: line, Msg: printable(fmt.Sprintf(format, args...))})
}

// printable escapes what a message quotes from the source so that it stays
// one line of visible text, on a terminal and in a YAML comment (which
// allows no control characters): control characters, invalid UTF-8 and
// the code points YAML excludes become \xNN or \uNNNN.
func printable(s string) string {
	var sb strings.Builder
	for i := 0; i < len(s); {
		r, w := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && w == 1:
			fmt.Fprintf(&sb, `\x%02x`, s[i])
		case r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0 || r == 0xfeff || r == 0xfffe || r == 0xffff || r == 0x2028 || r == 0x2029:
			fmt.Fprintf(&sb, `\u%04x`, r)
		default:
			sb.WriteRune(r)
		}
		i += w
	}
	return sb.String()
}

// note is a comment of the output: subject (what the source said, with its
// line) and why, at path (`pools[0].sticky.cookie`; "" is the file's head).
// Notes with the same path and why are merged into one comment.
type note struct {
	path    string
	line    bool // after the value rather than above the key
	subject string
	why     string
}

func (b *builder) note(path string, line bool, subject, why string) {
	b.cfg.notes = append(b.cfg.notes, note{path: path, line: line, subject: subject, why: why})
}

// pending is a note about an object (a pool, a listener) whose index in the
// output is not known yet; rel is the path below that object.
type pending struct {
	rel     string
	line    bool
	subject string
	why     string
}

func (p pending) at(prefix string) note {
	path := prefix
	if p.rel != "" {
		path += "." + p.rel
	}
	return note{path: path, line: p.line, subject: p.subject, why: p.why}
}

// src quotes a directive with its line: `proxy_connect_timeout 5s (line 52)`.
func src(line int, words ...string) string {
	return fmt.Sprintf("%s (line %d)", strings.Join(words, " "), line)
}

// setConnect records the node-wide connect timeout; gwelb has one per node.
func (b *builder) setConnect(line int, d time.Duration, what string) {
	switch {
	case b.connectLine == 0:
		b.cfg.Timeouts.Connect, b.connectLine = d, line
		b.note("timeouts.connect", true, src(line, what), "")
	case d != b.cfg.Timeouts.Connect:
		b.warn(line, "%s: gwelb has one connect timeout per node; kept %v from line %d", what, b.cfg.Timeouts.Connect, b.connectLine)
	}
}

func (b *builder) setIdle(line int, d time.Duration, what string) {
	switch {
	case b.idleLine == 0:
		b.cfg.Timeouts.Idle, b.idleLine = d, line
		b.note("timeouts.idle", true, src(line, what), "")
	case d != b.cfg.Timeouts.Idle:
		b.warn(line, "%s: gwelb has one idle timeout per node; kept %v from line %d", what, b.cfg.Timeouts.Idle, b.idleLine)
	}
}

// setLogLevel maps an Apache or nginx log level onto gwelb's.
func (b *builder) setLogLevel(line int, level, what string) {
	var l string
	switch strings.ToLower(level) {
	case "debug":
		l = "debug"
	case "info", "notice":
		l = "info"
	case "warn":
		l = "warn"
	case "error", "crit", "alert", "emerg":
		l = "error"
	default:
		if strings.HasPrefix(strings.ToLower(level), "trace") {
			l = "debug"
			break
		}
		b.warn(line, "%s: unknown log level %q; not imported", what, level)
		return
	}
	if b.logLine != 0 {
		if l != b.cfg.LogLevel {
			b.warn(line, "%s: gwelb has one log level per node; kept %s from line %d", what, b.cfg.LogLevel, b.logLine)
		}
		return
	}
	b.cfg.LogLevel, b.logLine = l, line
	b.note("log_level", true, src(line, what), "gwelb logs to stderr (log/slog)")
}

// member is a member in the making, with where it came from.
type member struct {
	spec fsm.MemberSpec
	line int
	path string // the path of the source's member URL, which gwelb drops
	// notes on the member's fields (rel paths "url", "route", ...).
	notes []pending
}

// pool is a pool in the making.
type pool struct {
	spec    fsm.PoolSpec
	line    int // where the pool is defined (the balancer or the location)
	members []*member
	notes   []pending
	// failTimeouts are the members' own quarantine settings, merged into
	// the pool's (gwelb has one per pool).
	failTimeouts []lineDur
}

type lineDur struct {
	line int
	d    time.Duration
	what string
}

// finish validates the pools and listeners, fills in the config and the
// notes that point into it.
func (b *builder) finish(pools []*pool, listeners []Listener, listenerNotes [][]pending) error {
	if len(pools) == 0 {
		return b.errorf(1, "no pool: not a balancer config")
	}
	for i, p := range pools {
		prefix := fmt.Sprintf("pools[%d]", i)
		b.mergeFailTimeouts(p)
		for j, m := range p.members {
			if err := fsm.ValidateMember(m.spec); err != nil {
				return b.errorf(m.line, "%s", oneLine(err))
			}
			for _, n := range m.notes {
				b.cfg.notes = append(b.cfg.notes, n.at(fmt.Sprintf("%s.members[%d]", prefix, j)))
			}
			p.spec.Members = append(p.spec.Members, m.spec)
		}
		if err := fsm.ValidatePool(p.spec); err != nil {
			return b.errorf(p.line, "%s", oneLine(err))
		}
		for _, n := range p.notes {
			b.cfg.notes = append(b.cfg.notes, n.at(prefix))
		}
		b.cfg.Pools = append(b.cfg.Pools, p.spec)
	}
	if err := fsm.ValidatePools(b.cfg.Pools); err != nil {
		return b.errorf(pools[0].line, "%s", oneLine(err))
	}
	if len(listeners) == 0 {
		return b.errorf(1, "no listener serves any pool")
	}
	for i, l := range listeners {
		if _, _, err := net.SplitHostPort(l.Addr); err != nil {
			return b.errorf(1, "listener %q: want host:port", l.Addr)
		}
		for _, n := range listenerNotes[i] {
			b.cfg.notes = append(b.cfg.notes, n.at(fmt.Sprintf("listeners[%d]", i)))
		}
	}
	b.cfg.Listeners = listeners
	return nil
}

// mergeFailTimeouts gives the pool one fail_timeout from its members'.
func (b *builder) mergeFailTimeouts(p *pool) {
	if len(p.failTimeouts) == 0 {
		return
	}
	first := p.failTimeouts[0]
	d := first.d
	for _, ft := range p.failTimeouts[1:] {
		if ft.d != first.d {
			b.warn(ft.line, "%s: gwelb has one fail_timeout per pool; kept %v from line %d", ft.what, first.d, first.line)
		}
	}
	p.spec.FailTimeout = &d
	p.notes = append(p.notes, pending{rel: "fail_timeout", line: true, subject: src(first.line, first.what),
		why: "a member that refuses a connection is left out by this node for this long (DESIGN.md rule 8)"})
}

func oneLine(err error) string { return strings.Join(strings.Fields(err.Error()), " ") }

// memberURL turns a member address of the source into a gwelb member URL:
// scheme://host:port, the path dropped (gwelb forwards the request target
// byte for byte, DESIGN.md rule 9). path is the dropped path, "" if none.
func memberURL(raw string) (u, path string, err error) {
	if strings.ContainsAny(raw, "<>") {
		return "", "", fmt.Errorf("%q holds a placeholder of the guide (<...>): put in the server's address", raw)
	}
	p, perr := url.Parse(raw)
	if perr != nil {
		return "", "", fmt.Errorf("%q: not a URL", raw)
	}
	if p.Scheme != "http" && p.Scheme != "https" {
		return "", "", fmt.Errorf("%q: gwelb speaks http or https to members, not %q", raw, p.Scheme)
	}
	if p.Host == "" || p.RawQuery != "" || p.Fragment != "" || p.User != nil {
		return "", "", fmt.Errorf("%q: want http://host:port", raw)
	}
	return p.Scheme + "://" + p.Host, strings.TrimRight(p.EscapedPath(), "/"), nil
}

// normPath is a path prefix as gwelb compares it: no trailing slash, "/"
// for the root.
func normPath(p string) string {
	p = strings.TrimRight(p, "/")
	if p == "" {
		return "/"
	}
	return p
}

// poolName derives a pool name from its prefix (`/frontend` -> frontend),
// or from fallback (the balancer's or upstream's name) for `/`.
func poolName(prefix, fallback string, taken map[string]bool) string {
	name := strings.ReplaceAll(strings.Trim(prefix, "/"), "/", "-")
	if name == "" {
		name = fallback
	}
	var sb strings.Builder
	for _, c := range name {
		if c < 0x80 && (c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			sb.WriteRune(c)
		} else {
			sb.WriteByte('_')
		}
	}
	name = sb.String()
	if name == "" {
		name = "pool"
	}
	if len(name) > 60 {
		name = name[:60]
	}
	base := name
	for i := 2; taken[name]; i++ {
		name = base + "-" + strconv.Itoa(i)
	}
	taken[name] = true
	return name
}

// parseSeconds reads a time of the source: nginx's "30s", "1m30s", "500ms"
// or a bare number of seconds (nginx and Apache).
func parseSeconds(s string) (time.Duration, bool) {
	if s == "" {
		return 0, false
	}
	if n, err := strconv.Atoi(s); err == nil {
		if n < 0 {
			return 0, false
		}
		return time.Duration(n) * time.Second, true
	}
	var total time.Duration
	rest := s
	for rest != "" {
		i := 0
		for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
			i++
		}
		if i == 0 {
			return 0, false
		}
		n, _ := strconv.Atoi(rest[:i])
		rest = rest[i:]
		j := 0
		for j < len(rest) && (rest[j] < '0' || rest[j] > '9') {
			j++
		}
		unit := rest[:j]
		rest = rest[j:]
		var u time.Duration
		switch unit {
		case "ms":
			u = time.Millisecond
		case "s", "":
			u = time.Second
		case "m":
			u = time.Minute
		case "h":
			u = time.Hour
		case "d":
			u = 24 * time.Hour
		default:
			return 0, false
		}
		total += time.Duration(n) * u
	}
	return total, true
}

// cookieHeader is a Set-Cookie value the source inserts: "NAME=VALUE;
// attr; attr=v".
type cookieHeader struct {
	name, value string
	spec        fsm.CookieSpec
	expires     bool
	unknown     []string
}

// parseSetCookie reads a Set-Cookie header value of the source.
func parseSetCookie(v string) (cookieHeader, bool) {
	var c cookieHeader
	parts := strings.Split(v, ";")
	name, value, ok := strings.Cut(strings.TrimSpace(parts[0]), "=")
	if !ok || strings.TrimSpace(name) == "" {
		return c, false
	}
	c.name, c.value = strings.TrimSpace(name), strings.TrimSpace(value)
	for _, a := range parts[1:] {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		k, val, _ := strings.Cut(a, "=")
		k, val = strings.ToLower(strings.TrimSpace(k)), strings.TrimSpace(val)
		switch k {
		case "path":
			c.spec.Path = val
		case "domain":
			c.spec.Domain = val
		case "max-age":
			n, err := strconv.Atoi(val)
			if err != nil {
				c.unknown = append(c.unknown, a)
				continue
			}
			c.spec.MaxAge = n
		case "expires":
			c.expires = true
		case "secure":
			c.spec.Secure = true
		case "httponly":
			c.spec.HTTPOnly = true
		case "samesite":
			switch strings.ToLower(val) {
			case "lax":
				c.spec.SameSite = "Lax"
			case "strict":
				c.spec.SameSite = "Strict"
			case "none":
				c.spec.SameSite = "None"
			default:
				c.unknown = append(c.unknown, a)
			}
		default:
			c.unknown = append(c.unknown, a)
		}
	}
	return c, true
}

// applyCookie makes p insert the cookie c, read from the source at line.
func (b *builder) applyCookie(p *pool, line int, what string, c cookieHeader) {
	p.spec.Sticky.Insert = true
	p.spec.Cookie = c.spec
	p.notes = append(p.notes, pending{rel: "sticky.insert", line: true, subject: src(line, what),
		why: "gwelb sets the cookie when a session's route is assigned or changes (DESIGN.md rule 7)"})
	if c.spec.Path == "" {
		p.notes = append(p.notes, pending{rel: "sticky.insert", why: "the source's cookie has no path (a browser would scope it to the request's directory); gwelb's is / (cookie.path)"})
	}
	if c.expires {
		b.warn(line, "%s: Expires is not imported: gwelb sets Max-Age (cookie.max_age)", what)
	}
	for _, a := range c.unknown {
		b.warn(line, "%s: cookie attribute %q not imported", what, a)
	}
}

// listenAddr reads a listen address of the source: "8081", "*:8081",
// "1.2.3.4:80", "[::]:80". ok is false for what gwelb cannot listen on.
func listenAddr(s string) (string, bool) {
	if s == "" {
		return "", false
	}
	if n, err := strconv.Atoi(s); err == nil {
		if n < 1 || n > 65535 {
			return "", false
		}
		return ":" + s, true
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		// "1.2.3.4" or "localhost": port 80.
		if strings.ContainsAny(s, "/:[]") {
			return "", false
		}
		host, port = s, "80"
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", false
	}
	if host == "*" || host == "_default_" {
		host = ""
	}
	if host != "" && net.ParseIP(host) == nil && !hostnameRE.MatchString(host) {
		return "", false
	}
	return net.JoinHostPort(host, port), true
}

var hostnameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$`)

// isLoopbackHost tells whether host names this machine.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// sameListener tells whether a loopback address (host:port a ProxyPass
// points at) reaches the listener addr of this file.
func sameListener(addr, target string) bool {
	h, p, err := net.SplitHostPort(addr)
	th, tp, terr := net.SplitHostPort(target)
	if err != nil || terr != nil || p != tp {
		return false
	}
	return h == "" || h == th || (isLoopbackHost(h) && isLoopbackHost(th))
}

// listenerSet accumulates listeners in source order.
type listenerSet struct {
	order []string
	pools map[string][]string // addr -> pool names, in pool order
	notes map[string][]pending
	lines map[string]int
	tls   map[string]*ListenerTLS
}

func newListenerSet() *listenerSet {
	return &listenerSet{pools: map[string][]string{}, notes: map[string][]pending{}, lines: map[string]int{}, tls: map[string]*ListenerTLS{}}
}

// add makes addr a listener (first seen at line) serving names.
func (s *listenerSet) add(addr string, line int, names ...string) {
	if _, ok := s.lines[addr]; !ok {
		s.order = append(s.order, addr)
		s.lines[addr] = line
	}
	for _, n := range names {
		if !slices.Contains(s.pools[addr], n) {
			s.pools[addr] = append(s.pools[addr], n)
		}
	}
}

func (s *listenerSet) has(addr string) bool { _, ok := s.lines[addr]; return ok }

// build returns the listeners that serve a pool, in source order, listing
// the pools of those that serve only some; the others are reported.
func (s *listenerSet) build(b *builder, pools []*pool) ([]Listener, [][]pending) {
	var ls []Listener
	var ns [][]pending
	for _, addr := range s.order {
		names := s.pools[addr]
		if len(names) == 0 {
			b.warn(s.lines[addr], "listener %s serves no balancer; not imported", addr)
			continue
		}
		var ordered []string
		for _, p := range pools {
			if slices.Contains(names, p.spec.Name) {
				ordered = append(ordered, p.spec.Name)
			}
		}
		l := Listener{Addr: addr, TLS: s.tls[addr]}
		if len(ordered) < len(pools) {
			l.Pools = ordered
		}
		ls = append(ls, l)
		ns = append(ns, s.notes[addr])
	}
	return ls, ns
}

// words quotes a directive's arguments as the source wrote them.
func words(name string, args []string) string {
	var sb bytes.Buffer
	sb.WriteString(name)
	for _, a := range args {
		sb.WriteByte(' ')
		if a == "" || strings.ContainsAny(a, " \t;{}\"'") {
			sb.WriteString(strconv.Quote(a))
		} else {
			sb.WriteString(a)
		}
	}
	return sb.String()
}
