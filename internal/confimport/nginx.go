package confimport

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/gwelb/gwelb/fsm"
)

// nginx: nginx.conf as in the guide's nginx tab. An upstream is a pool's
// members; the location that proxies to it gives the prefix; `map
// $arg_alias` and `map $cookie_NAME` give the sticky parameter or cookie and
// the route of each server (the key without its leading '.'); `map
// $upstream_addr $serverid` with `add_header Set-Cookie "NAME=$serverid;
// Max-Age=N;"` makes gwelb insert the cookie; listen gives the listeners.

// nDir is a directive of an nginx config, with its block if it has one.
type nDir struct {
	name    string
	args    []string
	line    int
	isBlock bool
	block   []*nDir
	end     int // line of the block's closing brace
}

func (d *nDir) words() string { return words(d.name, d.args) }

func (d *nDir) arg(i int) string {
	if i < len(d.args) {
		return d.args[i]
	}
	return ""
}

// parseNginx reads src into directives and blocks, as nginx's own lexer
// does: words, "..." and '...' strings, ';', '{' and '}', # comments. The
// guide's samples are cut at page breaks in its PDF (a block left open at
// the end, closing braces repeated after the break): those are warnings,
// not errors, so the samples import as printed.
func parseNginx(b *builder, src []byte) ([]*nDir, error) {
	s := string(src)
	line := 1
	root := &nDir{isBlock: true}
	stack := []*nDir{root}
	var cur []string
	curLine := 0
	add := func(w string, at int) error {
		if len(w) > 1 && w[0] == '<' && (w[1] == '/' || w[1] >= 'A' && w[1] <= 'Z' || w[1] >= 'a' && w[1] <= 'z') {
			return b.errorf(at, "%q is Apache syntax, not nginx's (gwelbctl import apache FILE)", w)
		}
		if len(cur) == 0 {
			curLine = at
		}
		cur = append(cur, w)
		return nil
	}
	for i := 0; i < len(s); {
		c := s[i]
		top := stack[len(stack)-1]
		switch {
		case c == '\n':
			line++
			i++
		case c == ' ' || c == '\t' || c == '\r':
			i++
		case c == '#':
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == ';' || c == '{':
			if len(cur) == 0 {
				return nil, b.errorf(line, "%q with no directive before it: not an nginx config", string(c))
			}
			d := &nDir{name: cur[0], args: cur[1:], line: curLine, isBlock: c == '{'}
			top.block = append(top.block, d)
			if d.isBlock {
				stack = append(stack, d)
			}
			cur = nil
			i++
		case c == '}':
			if len(cur) > 0 {
				return nil, b.errorf(curLine, "%q is not ended by ';': not an nginx config", strings.Join(cur, " "))
			}
			i++
			if len(stack) == 1 {
				b.warn(line, "'}' closes no block (the guide's nginx samples repeat closing lines after a page break); ignored")
				continue
			}
			top.end = line
			stack = stack[:len(stack)-1]
		case c == '"' || c == '\'':
			start := line
			var sb strings.Builder
			j := i + 1
			for ; j < len(s) && s[j] != c; j++ {
				if s[j] == '\\' && j+1 < len(s) {
					j++
				}
				if s[j] == '\n' {
					line++
				}
				sb.WriteByte(s[j])
			}
			if j >= len(s) {
				return nil, b.errorf(start, "a quoted string is not closed: not an nginx config")
			}
			if err := add(sb.String(), start); err != nil {
				return nil, err
			}
			i = j + 1
		default:
			j := i
			for j < len(s) {
				cj := s[j]
				if cj == ' ' || cj == '\t' || cj == '\r' || cj == '\n' || cj == ';' || cj == '}' {
					break
				}
				if cj == '{' {
					// ${name} inside a word is a variable, not a block.
					if j > i && s[j-1] == '$' {
						if k := strings.IndexByte(s[j:], '}'); k > 0 {
							j += k + 1
							continue
						}
					}
					break
				}
				j++
			}
			if err := add(s[i:j], line); err != nil {
				return nil, err
			}
			i = j
		}
	}
	if len(cur) > 0 {
		return nil, b.errorf(curLine, "%q has no ';' before the end of the file: not an nginx config", strings.Join(cur, " "))
	}
	for len(stack) > 1 {
		top := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		top.end = line
		b.warn(top.line, "%s { is not closed before the end of the file (the guide's nginx samples lose closing lines at a page break); read as closed", top.words())
	}
	return root.block, nil
}

type nUpstream struct {
	name    string
	d       *nDir
	servers []*nServer
	notes   []pending
	used    bool
}

type nServer struct {
	d           *nDir
	addr        string // host:port, the port filled in, to match maps against
	url         string // http://host[:port] as written
	weight      int
	state       fsm.AdminState
	failTimeout *lineDur
}

type mapKind int

const (
	mapQuery  mapKind = iota // map $arg_NAME
	mapCookie                // map $cookie_NAME
	mapID                    // map $upstream_addr: the route cookie's value per server
)

type nMap struct {
	d       *nDir
	kind    mapKind
	param   string // the query parameter or cookie name
	target  string // the variable the map sets, e.g. $http_sticky_backend
	entries []*nDir
	def     *nDir
	used    bool
}

type nCookie struct {
	d    *nDir
	c    cookieHeader
	what string
}

type nLocation struct {
	d         *nDir
	prefix    string
	upstreams []*nUpstream
	https     bool
	maps      []*nMap // sticky maps whose variable a proxy_pass uses
	cookies   []nCookie
	choice    []int // lines of the guide's if/set choice
	notes     []pending
}

type nServerBlock struct {
	d         *nDir
	listens   []*nDir
	locations []*nLocation
	named     []*nDir
	notes     []pending
	cert, key string
	pools     []*pool
}

type nginxImporter struct {
	b         *builder
	upstreams map[string]*nUpstream
	maps      []*nMap
	byTarget  map[string]*nMap
	servers   []*nServerBlock
	// first is the first directive a balancer config does not have: where
	// a file that is not one is reported.
	first      int
	firstWords string
}

func importNginx(b *builder, src []byte) error {
	top, err := parseNginx(b, src)
	if err != nil {
		return err
	}
	a := &nginxImporter{b: b, upstreams: map[string]*nUpstream{}, byTarget: map[string]*nMap{}}
	for _, d := range top {
		a.main(d)
	}
	if len(a.upstreams) == 0 {
		const msg = "no upstream { server ...; } block: not an nginx balancer config"
		if a.first != 0 {
			return b.errorf(a.first, "%q is not a directive of a balancer config, and there is %s", a.firstWords, msg)
		}
		return b.errorf(1, "%s", msg)
	}
	return a.build()
}

func (a *nginxImporter) unknown(d *nDir, why string) {
	if a.first == 0 {
		a.first, a.firstWords = d.line, d.words()
	}
	if d.isBlock {
		a.b.warn(d.line, "%s { ... } (lines %d-%d): %s", d.words(), d.line, d.end, why)
		return
	}
	a.b.warn(d.line, "%s: %s", d.words(), why)
}

func (a *nginxImporter) main(d *nDir) {
	b := a.b
	switch d.name {
	case "events":
		subject := src(d.line, "events")
		for _, k := range d.block {
			switch k.name {
			case "worker_connections", "multi_accept", "use", "accept_mutex":
				subject += ", " + src(k.line, k.words())
			default:
				a.unknown(k, notKnown)
			}
		}
		b.note("", false, subject, "not needed: gwelb serves each connection on its own goroutine; limits.max_conns (10000 per listener) bounds them")
	case "worker_processes", "worker_rlimit_nofile", "worker_cpu_affinity", "pid", "user", "daemon", "master_process":
		b.note("", false, src(d.line, d.words()), "not needed: gwelb is one process that uses every core")
	case "error_log":
		a.errorLog(d)
	case "http":
		a.http(d.block)
	case "server", "location", "upstream", "map", "return", "proxy_pass", "add_header", "if", "set", "break", "error_page":
		a.unknown(d, "outside http { } (the guide's nginx frontend sample repeats lines after a page break); not imported")
	default:
		a.unknown(d, notKnown)
	}
}

func (a *nginxImporter) errorLog(d *nDir) {
	level := "error"
	if len(d.args) > 1 {
		level = d.args[len(d.args)-1]
	}
	a.b.setLogLevel(d.line, level, d.words())
}

func (a *nginxImporter) http(kids []*nDir) {
	b := a.b
	// Upstreams and maps first: nginx lets a server use them before they
	// are defined.
	for _, d := range kids {
		switch d.name {
		case "upstream":
			a.upstream(d)
		case "map":
			a.mapBlock(d)
		}
	}
	for _, d := range kids {
		switch d.name {
		case "upstream", "map":
		case "server":
			a.server(d)
		case "include":
			if strings.HasSuffix(d.arg(0), "mime.types") {
				b.note("", false, src(d.line, d.words()), "not needed: gwelb serves no files of its own")
				continue
			}
			a.unknown(d, "not followed: import the included file too")
		case "default_type", "types", "charset", "sendfile", "tcp_nopush", "tcp_nodelay":
			b.note("", false, src(d.line, d.words()), "not needed: gwelb serves no files of its own")
		case "map_hash_bucket_size", "map_hash_max_size", "variables_hash_bucket_size", "variables_hash_max_size", "server_names_hash_bucket_size", "server_names_hash_max_size":
			b.note("", false, src(d.line, d.words()), "not needed: gwelb looks routes up in a map, names of up to 256 bytes")
		case "log_format":
			b.note("", false, src(d.line, d.name, d.arg(0), "..."), "not needed: gwelb's access log has the fields of the guide's format (alias, cookie) and the route and member chosen (README, Configuration)")
		case "access_log":
			b.note("", false, src(d.line, d.words()), "gwelb's access log is access_log: FILE, stdout or stderr (off by default)")
		case "error_log":
			a.errorLog(d)
		case "keepalive_timeout":
			if t, ok := parseSeconds(d.arg(0)); ok {
				b.setIdle(d.line, t, d.words())
				continue
			}
			a.unknown(d, "not imported")
		case "client_max_body_size", "client_body_buffer_size":
			b.note("", false, src(d.line, d.words()), "not needed: request bodies stream with no size limit (DESIGN.md rule 9)")
		case "proxy_connect_timeout":
			if t, ok := parseSeconds(d.arg(0)); ok {
				b.setConnect(d.line, t, d.words())
				continue
			}
			a.unknown(d, "not imported")
		default:
			a.unknown(d, notKnown)
		}
	}
}

func (a *nginxImporter) upstream(d *nDir) {
	up := &nUpstream{name: d.arg(0), d: d}
	if _, dup := a.upstreams[up.name]; dup {
		a.unknown(d, "a second upstream of this name; not imported")
		return
	}
	for _, k := range d.block {
		switch k.name {
		case "server":
			if s := a.upstreamServer(k); s != nil {
				up.servers = append(up.servers, s)
			}
		case "keepalive", "keepalive_requests", "keepalive_timeout", "keepalive_time", "zone":
			up.notes = append(up.notes, pending{subject: src(k.line, k.words()), why: "not needed: gwelb keeps and reuses connections to members itself"})
		case "least_conn", "ip_hash", "hash", "random":
			a.unknown(k, "gwelb gives new sessions out by smooth weighted round-robin and moves sessions by rendezvous hashing (DESIGN.md rule 6); not imported")
		default:
			a.unknown(k, notKnown)
		}
	}
	if len(up.servers) == 0 {
		a.unknown(d, "no server; not imported")
		return
	}
	a.upstreams[up.name] = up
}

// upstreamServer reads `server ADDR [weight=N] [fail_timeout=T] ...`.
func (a *nginxImporter) upstreamServer(d *nDir) *nServer {
	b := a.b
	raw := d.arg(0)
	if strings.HasPrefix(raw, "unix:") || raw == "" {
		a.unknown(d, "gwelb reaches members over TCP; not imported")
		return nil
	}
	addr, ok := serverAddr(raw)
	if !ok {
		a.unknown(d, "not a host:port; not imported")
		return nil
	}
	s := &nServer{d: d, addr: addr, url: "http://" + raw}
	for _, p := range d.args[1:] {
		k, v, _ := strings.Cut(p, "=")
		switch k {
		case "weight":
			w, err := strconv.Atoi(v)
			if err != nil || w < 1 {
				b.warn(d.line, "%s: %s not imported", d.words(), p)
				continue
			}
			s.weight = w
		case "fail_timeout":
			t, ok := parseSeconds(v)
			if !ok {
				b.warn(d.line, "%s: %s not imported", d.words(), p)
				continue
			}
			if s.failTimeout == nil {
				s.failTimeout = &lineDur{line: d.line, d: t, what: "server ... " + p}
			}
		case "max_fails":
			switch v {
			case "1":
			case "0":
				s.failTimeout = &lineDur{line: d.line, d: 0, what: "server ... " + p}
			default:
				b.warn(d.line, "%s: %s: gwelb leaves a member out after its first refused connection (DESIGN.md rule 8); not imported", d.words(), p)
			}
		case "down":
			s.state = fsm.Disabled
		default:
			b.warn(d.line, "%s: %s not imported", d.words(), p)
		}
	}
	return s
}

// serverAddr normalises an nginx server or map address to host:port
// (port 80 when left out).
func serverAddr(raw string) (string, bool) {
	if raw == "" || strings.ContainsAny(raw, "/<>$") {
		return "", false
	}
	host, port, err := net.SplitHostPort(raw)
	if err != nil {
		if strings.Contains(raw, ":") && !strings.HasPrefix(raw, "[") {
			return "", false
		}
		host, port = strings.Trim(raw, "[]"), "80"
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || host == "" {
		return "", false
	}
	return net.JoinHostPort(strings.ToLower(host), port), true
}

func (a *nginxImporter) mapBlock(d *nDir) {
	b := a.b
	if len(d.args) != 2 {
		a.unknown(d, "want map $source $variable; not imported")
		return
	}
	source, target := d.args[0], d.args[1]
	m := &nMap{d: d, target: target}
	switch {
	case strings.HasPrefix(source, "$arg_"):
		m.kind, m.param = mapQuery, source[len("$arg_"):]
	case strings.HasPrefix(source, "$cookie_"):
		m.kind, m.param = mapCookie, source[len("$cookie_"):]
	case source == "$upstream_addr":
		m.kind = mapID
	case source == "$http_upgrade":
		b.note("", false, src(d.line, "map", source, target), "not needed: WebSocket upgrades are built in and follow the same stickiness (DESIGN.md rule 9)")
		return
	default:
		a.unknown(d, "not a stickiness map (of $arg_NAME, $cookie_NAME or $upstream_addr); not imported")
		return
	}
	for _, e := range d.block {
		switch {
		case e.name == "default":
			m.def = e
		case e.name == "hostnames" || e.name == "volatile" || e.name == "include":
			a.unknown(e, "not imported")
		case len(e.args) != 1:
			a.unknown(e, "want KEY VALUE; not imported")
		case strings.HasPrefix(e.name, "~"):
			a.unknown(e, "a regular expression; not imported")
		default:
			m.entries = append(m.entries, e)
		}
	}
	a.maps = append(a.maps, m)
	a.byTarget[target] = m
}

func (a *nginxImporter) server(d *nDir) {
	sb := &nServerBlock{d: d}
	for _, k := range d.block {
		switch k.name {
		case "listen":
			sb.listens = append(sb.listens, k)
		case "server_name":
			sb.notes = append(sb.notes, pending{subject: src(k.line, k.words()), why: "gwelb routes by path prefix, whatever the host name"})
		case "location":
			if strings.HasPrefix(k.arg(0), "@") {
				sb.named = append(sb.named, k)
				continue
			}
			if loc := a.location(sb, k); loc != nil {
				sb.locations = append(sb.locations, loc)
			}
		case "ssl_certificate":
			sb.cert = k.arg(0)
		case "ssl_certificate_key":
			sb.key = k.arg(0)
		case "proxy_connect_timeout":
			if t, ok := parseSeconds(k.arg(0)); ok {
				a.b.setConnect(k.line, t, k.words())
				continue
			}
			a.unknown(k, "not imported")
		default:
			a.unknown(k, notKnown)
		}
	}
	a.servers = append(a.servers, sb)
}

func (a *nginxImporter) location(sb *nServerBlock, d *nDir) *nLocation {
	path := d.arg(0)
	if len(d.args) == 2 {
		switch d.args[0] {
		case "^~":
			path = d.args[1]
		default:
			a.unknown(d, "a regular-expression or exact-match location; gwelb pools are path prefixes; not imported")
			return nil
		}
	} else if len(d.args) != 1 {
		a.unknown(d, "not imported")
		return nil
	}
	loc := &nLocation{d: d, prefix: normPath(path)}
	a.locBody(loc, d.block, false)
	return loc
}

// bodyDirectives have no gwelb equivalent because bodies stream.
var bodyDirectives = []string{"proxy_buffers", "proxy_buffer_size", "proxy_busy_buffers_size", "proxy_buffering",
	"proxy_request_buffering", "proxy_max_temp_file_size", "proxy_temp_file_write_size", "client_body_buffer_size", "client_max_body_size"}

func (a *nginxImporter) locBody(loc *nLocation, kids []*nDir, inIf bool) {
	b := a.b
	for _, k := range kids {
		switch {
		case k.name == "proxy_pass":
			a.proxyPass(loc, k)
		case k.name == "if":
			loc.choice = append(loc.choice, k.line, k.end)
			a.locBody(loc, k.block, true)
		case (k.name == "set" || k.name == "break") && inIf:
		case k.name == "return" && k.arg(0) == "500":
			loc.notes = append(loc.notes, pending{subject: src(k.line, k.words()), why: "not needed: gwelb never answers 500; 503 when no member is usable (DESIGN.md rule 10)"})
		case k.name == "add_header":
			if strings.EqualFold(k.arg(0), "Set-Cookie") {
				if c, ok := parseSetCookie(k.arg(1)); ok {
					loc.cookies = append(loc.cookies, nCookie{d: k, c: c, what: "add_header Set-Cookie " + strconv.Quote(k.arg(1))})
					continue
				}
			}
			a.unknown(k, "gwelb does not change a member's response headers; not imported")
		case k.name == "proxy_http_version":
			loc.notes = append(loc.notes, pending{subject: src(k.line, k.words()), why: "not needed: gwelb speaks HTTP/1.1 to members and tunnels WebSocket upgrades (DESIGN.md rule 9)"})
		case k.name == "proxy_set_header":
			switch strings.ToLower(k.arg(0)) {
			case "upgrade", "connection":
				loc.notes = append(loc.notes, pending{subject: src(k.line, k.words()), why: "not needed: gwelb speaks HTTP/1.1 to members and tunnels WebSocket upgrades (DESIGN.md rule 9)"})
			case "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host":
				loc.notes = append(loc.notes, pending{subject: src(k.line, k.words()), why: "not needed: gwelb appends X-Forwarded-For and sets X-Forwarded-Proto and -Host"})
			case "host":
				a.unknown(k, "gwelb sends the member's host:port as Host; not imported")
			default:
				a.unknown(k, "gwelb does not add request headers; not imported")
			}
		case slices.Contains(bodyDirectives, k.name):
			loc.notes = append(loc.notes, pending{subject: src(k.line, k.words()), why: "not needed: request and response bodies stream both ways with no size limit (DESIGN.md rule 9)"})
		case k.name == "proxy_connect_timeout":
			if t, ok := parseSeconds(k.arg(0)); ok {
				b.setConnect(k.line, t, k.words())
				continue
			}
			a.unknown(k, "not imported")
		case k.name == "proxy_read_timeout" || k.name == "proxy_send_timeout":
			a.unknown(k, "gwelb waits timeouts.response_header (60s) for a member's response headers and then streams without a timeout; not imported")
		case k.name == "error_page" && fallbackPage(k):
			loc.notes = append(loc.notes, pending{subject: src(k.line, k.words()),
				why: "not needed: when a member refuses the connection gwelb retries once on the fallback member, the same one on every node, and pins the session there (DESIGN.md rules 6-8)"})
		case k.name == "proxy_next_upstream" && !slices.ContainsFunc(k.args, func(s string) bool { return s != "error" && s != "timeout" }):
			loc.notes = append(loc.notes, pending{subject: src(k.line, k.words()), why: "gwelb retries a refused connection once on the fallback member (DESIGN.md rule 8)"})
		default:
			a.unknown(k, notKnown)
		}
	}
}

// fallbackPage tells whether d is the guide's `error_page 502 = @fallback`.
func fallbackPage(d *nDir) bool {
	if len(d.args) < 2 || !strings.HasPrefix(d.args[len(d.args)-1], "@") {
		return false
	}
	for _, c := range d.args[:len(d.args)-1] {
		if c != "502" && c != "503" && c != "504" && c != "=" {
			return false
		}
	}
	return true
}

func (a *nginxImporter) proxyPass(loc *nLocation, d *nDir) {
	target := d.arg(0)
	scheme, rest, ok := strings.Cut(target, "://")
	if !ok || (scheme != "http" && scheme != "https") {
		a.unknown(d, "gwelb proxies to http or https members; not imported")
		return
	}
	if strings.HasPrefix(rest, "$") {
		j := 1
		for j < len(rest) && (isWordByte(rest[j])) {
			j++
		}
		m := a.byTarget[rest[:j]]
		if m == nil || m.kind == mapID {
			a.unknown(d, "a variable that is no stickiness map; not imported")
			return
		}
		if !slices.Contains(loc.maps, m) {
			loc.maps = append(loc.maps, m)
		}
		if strings.Contains(rest, "$uri") {
			loc.notes = append(loc.notes, pending{subject: src(d.line, d.words()),
				why: "gwelb does not rebuild the URL from $uri (which re-encodes it and breaks %20): the request target reaches the member byte for byte (DESIGN.md rule 9)"})
		}
		return
	}
	host, uri := rest, ""
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		host, uri = rest[:i], rest[i:]
	}
	up := a.upstreams[host]
	if up == nil {
		a.unknown(d, "a single server, not an upstream; not imported")
		return
	}
	if uri != "" && normPath(uri) != loc.prefix {
		a.b.warn(d.line, "%s: nginx replaces %s with %s; gwelb forwards the request target unchanged", d.words(), loc.prefix, uri)
	}
	if scheme == "https" {
		loc.https = true
	}
	if !slices.Contains(loc.upstreams, up) {
		loc.upstreams = append(loc.upstreams, up)
	}
}

func isWordByte(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func (a *nginxImporter) build() error {
	b := a.b
	var pools []*pool
	taken := map[string]bool{}
	byKey := map[string]*pool{}
	for _, sb := range a.servers {
		for _, loc := range sb.locations {
			if len(loc.upstreams) == 0 {
				a.unknown(loc.d, "proxies to no upstream; not imported")
				continue
			}
			up := loc.upstreams[0]
			for _, other := range loc.upstreams[1:] {
				b.warn(loc.d.line, "location %s proxies to upstream %s and %s: gwelb serves a prefix from one pool; %s not imported here", loc.prefix, up.name, other.name, other.name)
			}
			key := up.name + " " + loc.prefix
			pl := byKey[key]
			if pl == nil {
				var err error
				if pl, err = a.pool(sb, up, loc, taken); err != nil {
					return err
				}
				byKey[key] = pl
				pools = append(pools, pl)
			}
			if !slices.Contains(sb.pools, pl) {
				sb.pools = append(sb.pools, pl)
			}
		}
	}
	for _, m := range a.maps {
		if !m.used {
			a.unknown(m.d, "no location uses it with an upstream whose servers it names; not imported")
		}
	}
	if len(pools) == 0 {
		var line int
		for _, up := range a.upstreams {
			if line == 0 || up.d.line < line {
				line = up.d.line
			}
		}
		return b.errorf(line, "no location proxies to an upstream: nothing to import")
	}
	for _, up := range a.upstreams {
		if !up.used {
			b.warn(up.d.line, "upstream %s: no location proxies to it; not imported", up.name)
		}
	}
	ls, err := a.listeners()
	if err != nil {
		return err
	}
	listeners, notes := ls.build(b, pools)
	return b.finish(pools, listeners, notes)
}

// pool makes the pool of upstream up served by location loc.
func (a *nginxImporter) pool(sb *nServerBlock, up *nUpstream, loc *nLocation, taken map[string]bool) (*pool, error) {
	b := a.b
	up.used = true
	pl := &pool{line: loc.d.line, spec: fsm.PoolSpec{Name: poolName(loc.prefix, up.name, taken), Prefix: loc.prefix}}
	pl.notes = append(pl.notes, pending{subject: src(up.d.line, "upstream "+up.name) + ", " + src(loc.d.line, loc.d.words())})
	pl.notes = append(pl.notes, up.notes...)
	pl.notes = append(pl.notes, loc.notes...)
	if len(loc.choice) > 0 {
		pl.notes = append(pl.notes, pending{subject: fmt.Sprintf("the if/set choice (lines %d-%d)", slices.Min(loc.choice), slices.Max(loc.choice)),
			why: "not needed: it is gwelb's routing: the member the sticky value names, else the rendezvous fallback (DESIGN.md rules 3-6)"})
	}
	for _, n := range sb.named {
		for _, k := range n.block {
			if k.name == "proxy_pass" && strings.TrimPrefix(strings.TrimPrefix(k.arg(0), "http://"), "https://") == up.name {
				pl.notes = append(pl.notes, pending{subject: src(n.line, n.words()), why: "not needed: the fallback is built in (DESIGN.md rules 6 and 8)"})
			}
		}
	}

	servers := map[string]*nServer{}
	for _, s := range up.servers {
		servers[s.addr] = s
	}
	// The sticky maps: those a proxy_pass of the location uses, else those
	// whose values are this upstream's servers.
	sticky := slices.Clone(loc.maps)
	for _, m := range a.maps {
		if m.kind != mapID && !slices.Contains(sticky, m) && mapNames(m, servers, false) {
			sticky = append(sticky, m)
		}
	}
	routes := map[string]string{} // server addr -> route
	routeLine := map[string]int{}
	routeDir := map[string]*nDir{}
	for _, m := range sticky {
		m.used = true
		field := "sticky"
		switch {
		case m.kind == mapQuery && pl.spec.Sticky.Query == "":
			pl.spec.Sticky.Query = m.param
		case m.kind == mapCookie && pl.spec.Sticky.Cookie == "":
			pl.spec.Sticky.Cookie = m.param
		default:
			b.warn(m.d.line, "%s: gwelb reads one query parameter and one cookie per pool; not imported", m.d.words())
			continue
		}
		pl.notes = append(pl.notes, pending{rel: field, line: true, subject: src(m.d.line, "map", m.d.args[0], m.d.args[1]),
			why: "gwelb routes to the member named after the value's first '.' (DESIGN.md rule 3)"})
		if m.def != nil {
			pl.notes = append(pl.notes, pending{rel: "sticky", subject: src(m.def.line, m.def.words()),
				why: "not needed: a value that names no usable member goes to the rendezvous fallback (DESIGN.md rule 6)"})
		}
		for _, e := range m.entries {
			addr, ok := serverAddr(e.arg(0))
			s := servers[addr]
			if !ok || s == nil {
				b.warn(e.line, "%s: %s is no server of upstream %s; not imported", e.words(), e.arg(0), up.name)
				continue
			}
			route, dot := strings.CutPrefix(e.name, ".")
			if !dot {
				b.warn(e.line, "%s: the key has no leading '.': gwelb takes the route after the first '.' of the value, so %s never reaches this member", e.words(), e.name)
			}
			if old, dup := routes[addr]; dup {
				if old != route {
					b.warn(e.line, "%s: server %s already has route %s (line %d); gwelb gives a member one route", e.words(), e.arg(0), old, routeLine[addr])
				}
				continue
			}
			routes[addr], routeLine[addr], routeDir[addr] = route, e.line, e
		}
	}
	if pl.spec.Sticky.Query == "" && pl.spec.Sticky.Cookie == "" {
		return nil, b.errorf(loc.d.line, "location %s proxies to upstream %s with no map $arg_NAME or $cookie_NAME naming its servers: GWE needs sticky sessions", loc.prefix, up.name)
	}
	// The route cookie's values, from map $upstream_addr $serverid.
	ids := map[string]string{}
	idMaps := map[string]*nMap{}
	for _, m := range a.maps {
		if m.kind != mapID || !mapNames(m, servers, true) {
			continue
		}
		idMaps[m.target] = m
		for _, e := range m.entries {
			if addr, ok := serverAddr(e.name); ok && servers[addr] != nil {
				ids[addr] = e.arg(0)
			}
		}
	}
	for _, s := range up.servers {
		m := &member{line: s.d.line, spec: fsm.MemberSpec{URL: s.url, Weight: s.weight, State: s.state}}
		if loc.https {
			m.spec.URL = "https://" + strings.TrimPrefix(s.url, "http://")
		}
		route, ok := routes[s.addr]
		if !ok {
			route = s.addr
			b.warn(s.d.line, "%s: no map names a route for it; named %s", s.d.words(), route)
		}
		m.spec.Route = route
		if ok {
			e := routeDir[s.addr]
			m.notes = append(m.notes, pending{rel: "route", line: true, subject: src(e.line, e.words())})
		}
		if s.failTimeout != nil {
			pl.failTimeouts = append(pl.failTimeouts, *s.failTimeout)
		} else {
			pl.failTimeouts = append(pl.failTimeouts, lineDur{line: s.d.line, d: fsm.DefaultFailTimeout, what: "server " + s.d.arg(0) + " (nginx's default fail_timeout=10s)"})
		}
		pl.members = append(pl.members, m)
	}
	// Only a fail_timeout the source sets is carried over.
	if !slices.ContainsFunc(up.servers, func(s *nServer) bool { return s.failTimeout != nil }) {
		pl.failTimeouts = nil
	}
	for _, c := range loc.cookies {
		if c.c.name != pl.spec.Sticky.Cookie {
			b.warn(c.d.line, "%s: no map $cookie_%s reads this cookie; not imported", c.what, c.c.name)
			continue
		}
		a.checkCookieValue(c, pl, up, ids, idMaps)
		b.applyCookie(pl, c.d.line, c.what, c.c)
	}
	return pl, nil
}

// mapNames tells whether every entry of m names a server of servers (in
// its value, or in its key for a map of $upstream_addr).
func mapNames(m *nMap, servers map[string]*nServer, byKey bool) bool {
	if len(m.entries) == 0 {
		return false
	}
	for _, e := range m.entries {
		v := e.arg(0)
		if byKey {
			v = e.name
		}
		addr, ok := serverAddr(v)
		if !ok || servers[addr] == nil {
			return false
		}
	}
	return true
}

// checkCookieValue compares what the source's cookie holds per server with
// what gwelb inserts: ".<route>".
func (a *nginxImporter) checkCookieValue(c nCookie, pl *pool, up *nUpstream, ids map[string]string, idMaps map[string]*nMap) {
	b := a.b
	m := idMaps[c.c.value]
	if m == nil {
		b.warn(c.d.line, "%s: the value %q is no map $upstream_addr of upstream %s; gwelb inserts %s=.<route>", c.what, c.c.value, up.name, c.c.name)
		return
	}
	m.used = true
	for i, s := range up.servers {
		want := "." + pl.members[i].spec.Route
		if got, ok := ids[s.addr]; !ok || got != want {
			b.warn(m.d.line, "%s: server %s gets %s=%q from it, gwelb inserts %s=%s", m.d.words(), s.d.arg(0), c.c.name, got, c.c.name, want)
		}
	}
	pl.notes = append(pl.notes, pending{rel: "sticky.insert", subject: src(m.d.line, "map", m.d.args[0], m.d.args[1]),
		why: "not needed: gwelb inserts ." + "<route> of the member that served"})
}

// listeners makes a listener of every listen of a server that serves a pool.
func (a *nginxImporter) listeners() (*listenerSet, error) {
	b := a.b
	ls := newListenerSet()
	for _, sb := range a.servers {
		served := names(sb.pools)
		if len(served) == 0 {
			b.warn(sb.d.line, "server { ... } (lines %d-%d) proxies to no upstream; not imported", sb.d.line, sb.d.end)
			continue
		}
		listens := sb.listens
		if len(listens) == 0 {
			b.warn(sb.d.line, "server { ... } has no listen: the listener is :80, nginx's default; change it to the port nginx listened on")
			listens = []*nDir{{name: "listen", args: []string{"80"}, line: sb.d.line}}
		}
		for _, l := range listens {
			addr, ok := listenAddr(l.arg(0))
			if !ok {
				a.unknown(l, "not a listen address gwelb can use; not imported")
				continue
			}
			var tls bool
			for _, p := range l.args[1:] {
				switch p {
				case "default_server", "default":
				case "ssl":
					tls = true
				default:
					b.warn(l.line, "%s: %s not imported", l.words(), p)
				}
			}
			if ls.has(addr) {
				b.warn(l.line, "%s: another server listens on %s too; gwelb serves both on one listener, by path prefix", l.words(), addr)
			}
			ls.add(addr, l.line, served...)
			ls.notes[addr] = append(ls.notes[addr], pending{rel: "addr", line: true, subject: src(l.line, l.words())})
			ls.notes[addr] = append(ls.notes[addr], sb.notes...)
			if tls {
				if sb.cert == "" || sb.key == "" {
					b.warn(l.line, "%s: ssl without ssl_certificate and ssl_certificate_key in its server; the listener is plain HTTP", l.words())
					continue
				}
				ls.tls[addr] = &ListenerTLS{Cert: sb.cert, Key: sb.key}
			}
		}
	}
	return ls, nil
}
