package confimport

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/gwelb/gwelb/fsm"
)

// Apache: httpd.conf with mod_proxy_balancer, as in the guide's Apache tab.
// A <Proxy balancer://NAME> with its BalancerMembers and ProxySet
// stickysession is a pool; the ProxyPass that points at it gives the
// prefix; a Header add Set-Cookie of the sticky cookie makes gwelb insert
// it; VirtualHosts and Listen give the listeners.

// aNode is a line of an Apache config: a directive, or a section with the
// lines inside it.
type aNode struct {
	line    int
	name    string // as written; Apache's names are case-insensitive
	args    []string
	section bool
	kids    []*aNode
	end     int  // line of the section's </Name>
	typo    bool // the guide's "[http:// http://]" was read as "http://"
	wrapped int  // line of an "env=..." the PDF of the guide wrapped onto its own line
}

func (n *aNode) is(name string) bool { return strings.EqualFold(n.name, name) }

func (n *aNode) words() string { return words(n.name, n.args) }

// typoRE is the guide's "BalancerMember [http:// http://]<Node1 IP address>".
var typoRE = regexp.MustCompile(`\[(https?)://\s+https?://\]`)

// parseApache reads src into its sections and directives. Continuation
// lines (a trailing \) are joined; comments and blank lines skipped.
func parseApache(b *builder, src []byte) ([]*aNode, error) {
	root := &aNode{section: true}
	stack := []*aNode{root}
	lines := strings.Split(string(src), "\n")
	for i := 0; i < len(lines); i++ {
		start := i + 1
		l := strings.TrimRight(lines[i], "\r")
		for strings.HasSuffix(l, "\\") && i+1 < len(lines) {
			i++
			l = l[:len(l)-1] + " " + strings.TrimRight(lines[i], "\r")
		}
		l = strings.TrimSpace(l)
		if l == "" || l[0] == '#' {
			continue
		}
		typo := typoRE.MatchString(l)
		l = typoRE.ReplaceAllString(l, "$1://")
		top := stack[len(stack)-1]
		switch {
		case strings.HasPrefix(l, "</"):
			name := strings.TrimSpace(strings.TrimSuffix(l[2:], ">"))
			if len(stack) == 1 {
				return nil, b.errorf(start, "%q closes no section: not an Apache config", l)
			}
			if !strings.EqualFold(name, top.name) {
				return nil, b.errorf(start, "</%s> closes <%s> of line %d", name, top.name, top.line)
			}
			top.end = start
			stack = stack[:len(stack)-1]
		case l[0] == '<':
			if !strings.HasSuffix(l, ">") {
				return nil, b.errorf(start, "%q: a section's < has no closing >: not an Apache config", l)
			}
			toks, err := tokenize(l[1 : len(l)-1])
			if err != nil || len(toks) == 0 {
				return nil, b.errorf(start, "%q: not an Apache section", l)
			}
			n := &aNode{line: start, name: toks[0], args: toks[1:], section: true, typo: typo}
			top.kids = append(top.kids, n)
			stack = append(stack, n)
		default:
			toks, err := tokenize(l)
			if err != nil {
				return nil, b.errorf(start, "%v: not an Apache config", err)
			}
			if slices.Contains(toks, "{") || slices.Contains(toks, "}") || strings.HasSuffix(l, ";") && !strings.Contains(l, "=") {
				return nil, b.errorf(start, "%q is nginx syntax, not Apache's (gwelbctl import nginx FILE)", l)
			}
			n := &aNode{line: start, name: toks[0], args: toks[1:], typo: typo}
			// The PDF of the guide wraps "Header add Set-Cookie ... path=/"
			// env=BALANCER_ROUTE_CHANGED" onto two lines; Apache would
			// refuse the second. Read it as the end of the Header.
			if k := len(top.kids); k > 0 && len(n.args) == 0 && strings.HasPrefix(strings.ToLower(n.name), "env=") {
				if prev := top.kids[k-1]; prev.is("Header") && !prev.section && prev.wrapped == 0 && !hasEnv(prev.args) {
					prev.args = append(prev.args, n.name)
					prev.wrapped = start
					continue
				}
			}
			top.kids = append(top.kids, n)
		}
	}
	if len(stack) > 1 {
		top := stack[len(stack)-1]
		return nil, b.errorf(top.line, "<%s> is never closed (no </%s>)", top.name, top.name)
	}
	return root.kids, nil
}

func hasEnv(args []string) bool {
	return slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(strings.ToLower(a), "env=") })
}

// tokenize splits an Apache line into words as ap_getword_conf does:
// white space separates, "..." and '...' quote (a backslash escapes the
// quote).
func tokenize(s string) ([]string, error) {
	var out []string
	for {
		s = strings.TrimLeft(s, " \t")
		if s == "" {
			return out, nil
		}
		if q := s[0]; q == '"' || q == '\'' {
			var sb strings.Builder
			i := 1
			for ; i < len(s) && s[i] != q; i++ {
				if s[i] == '\\' && i+1 < len(s) && (s[i+1] == q || s[i+1] == '\\') {
					i++
				}
				sb.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, errors.New("a quote is not closed")
			}
			out = append(out, sb.String())
			s = s[i+1:]
			continue
		}
		j := strings.IndexAny(s, " \t")
		if j < 0 {
			j = len(s)
		}
		out = append(out, s[:j])
		s = s[j:]
	}
}

// aScope is the main server or a VirtualHost.
type aScope struct {
	node      *aNode // the <VirtualHost>; nil for the main server
	passes    []*aPass
	reverses  []*aPass
	headers   []*aNode
	balancers map[string]*aBalancer
	pools     []*pool // served here: from its ProxyPasses and the ones chained to other VirtualHosts
	notes     []pending
}

type aPass struct {
	n            *aNode
	path, target string
	params       []string
}

type aBalancer struct {
	name        string // as written, without balancer://
	n           *aNode
	members     []*member
	sticky      string
	stickyNode  *aNode
	notes       []pending
	failTimeout []lineDur
	used        bool
}

type apacheImporter struct {
	b        *builder
	main     *aScope
	vhosts   []*aScope
	listens  []*aNode
	managers []*aNode
	// first is the first directive a balancer config does not have: where
	// a file that is not one is reported.
	first       int
	firstWords  string
	sawBalancer bool
}

func importApache(b *builder, src []byte) error {
	nodes, err := parseApache(b, src)
	if err != nil {
		return err
	}
	a := &apacheImporter{b: b, main: &aScope{balancers: map[string]*aBalancer{}}}
	if err := a.walk(nodes, a.main, nil, ""); err != nil {
		return err
	}
	if !a.sawBalancer {
		const msg = "no <Proxy balancer://...> with BalancerMember: not an Apache balancer config"
		if a.first != 0 {
			return b.errorf(a.first, "%q is not a directive of a balancer config, and there is %s", a.firstWords, msg)
		}
		return b.errorf(1, "%s", msg)
	}
	return a.build()
}

// unknown reports a directive the importer does not carry over.
func (a *apacheImporter) unknown(n *aNode, why string) {
	if a.first == 0 {
		a.first, a.firstWords = n.line, n.words()
	}
	if n.section {
		a.b.warn(n.line, "<%s> (lines %d-%d): %s", words(n.name, n.args), n.line, n.end, why)
		return
	}
	a.b.warn(n.line, "%s: %s", n.words(), why)
}

const notKnown = "not a directive of the guide's balancer configs; not imported"

func balancerName(u string) (string, bool) {
	if len(u) < len("balancer://") || !strings.EqualFold(u[:len("balancer://")], "balancer://") {
		return "", false
	}
	return strings.TrimRight(u[len("balancer://"):], "/"), true
}

func (s *aScope) balancer(name string, n *aNode) *aBalancer {
	k := strings.ToLower(name)
	if bal, ok := s.balancers[k]; ok {
		return bal
	}
	bal := &aBalancer{name: name, n: n}
	s.balancers[k] = bal
	return bal
}

func (a *apacheImporter) lookup(s *aScope, name string) *aBalancer {
	k := strings.ToLower(name)
	if bal, ok := s.balancers[k]; ok {
		return bal
	}
	return a.main.balancers[k]
}

// walk interprets nodes in scope s, inside balancer bal (a <Proxy
// balancer://>) or location loc (a <Location>) when set.
func (a *apacheImporter) walk(nodes []*aNode, s *aScope, bal *aBalancer, loc string) error {
	for _, n := range nodes {
		if err := a.directive(n, s, bal, loc); err != nil {
			return err
		}
	}
	return nil
}

func (a *apacheImporter) directive(n *aNode, s *aScope, bal *aBalancer, loc string) error {
	b := a.b
	name := strings.ToLower(n.name)
	arg := func(i int) string {
		if i < len(n.args) {
			return n.args[i]
		}
		return ""
	}
	if n.section {
		switch name {
		case "virtualhost":
			if s.node != nil || bal != nil || loc != "" {
				a.unknown(n, "a VirtualHost inside another section; not imported")
				return nil
			}
			vs := &aScope{node: n, balancers: map[string]*aBalancer{}}
			a.vhosts = append(a.vhosts, vs)
			return a.walk(n.kids, vs, nil, "")
		case "proxy":
			if bn, ok := balancerName(arg(0)); ok {
				a.sawBalancer = true
				nb := s.balancer(bn, n)
				if nb.n != n {
					b.warn(n.line, "%s: balancer://%s is also defined at line %d; members added to it", n.words(), bn, nb.n.line)
				}
				return a.walk(n.kids, s, nb, "")
			}
			a.proxyACL(n)
			return nil
		case "location":
			if slices.ContainsFunc(n.kids, func(k *aNode) bool {
				return k.is("SetHandler") && strings.EqualFold(k.words(), "SetHandler balancer-manager")
			}) {
				a.manager(n)
				return nil
			}
			if loc != "" || bal != nil {
				a.unknown(n, "a nested section; not imported")
				return nil
			}
			return a.walk(n.kids, s, nil, arg(0))
		case "ifmodule", "ifdefine", "ifversion":
			// Read as if the condition held: the guide's modules are loaded.
			return a.walk(n.kids, s, bal, loc)
		}
		a.unknown(n, "a section the guide's balancer configs do not use; not imported")
		return nil
	}

	switch name {
	case "balancermember":
		if bal == nil {
			bn, ok := balancerName(arg(0))
			if !ok {
				a.unknown(n, "outside <Proxy balancer://...>: not imported")
				return nil
			}
			a.sawBalancer = true
			bal = s.balancer(bn, n)
			n = &aNode{line: n.line, name: n.name, args: n.args[1:], typo: n.typo}
		}
		return a.member(n, bal)
	case "proxyset":
		if bal == nil {
			bn, ok := balancerName(arg(0))
			if !ok {
				a.unknown(n, "not for a balancer: not imported")
				return nil
			}
			bal = s.balancer(bn, n)
			a.balancerParams(bal, n, n.args[1:])
			return nil
		}
		a.balancerParams(bal, n, n.args)
		return nil
	case "proxypass", "proxypassreverse":
		args := n.args
		path := loc
		if loc == "" {
			if len(args) == 0 {
				a.unknown(n, "no path: not imported")
				return nil
			}
			path, args = args[0], args[1:]
		}
		if len(args) == 0 || args[0] == "!" {
			a.unknown(n, "no balancer to pass to; not imported")
			return nil
		}
		p := &aPass{n: n, path: path, target: args[0], params: args[1:]}
		if name == "proxypass" {
			s.passes = append(s.passes, p)
		} else {
			s.reverses = append(s.reverses, p)
		}
		return nil
	case "header":
		s.headers = append(s.headers, n)
		return nil
	case "proxyrequests":
		if strings.EqualFold(arg(0), "off") {
			b.note("", false, src(n.line, n.words()), "gwelb is a reverse proxy only, never a forward proxy")
			return nil
		}
		a.unknown(n, "gwelb is never a forward proxy; not imported")
		return nil
	case "listen":
		if s.node != nil || bal != nil || loc != "" {
			a.unknown(n, "Listen inside a section; not imported")
			return nil
		}
		a.listens = append(a.listens, n)
		return nil
	case "loadmodule":
		b.note("", false, src(n.line, n.words()), "built into gwelb (proxy, balancer, headers, WebSocket)")
		return nil
	case "loglevel":
		b.setLogLevel(n.line, arg(0), n.words())
		return nil
	case "keepalivetimeout":
		if d, ok := parseSeconds(arg(0)); ok {
			b.setIdle(n.line, d, n.words())
			return nil
		}
	case "servername", "serveralias":
		s.notes = append(s.notes, pending{subject: src(n.line, n.words()), why: "gwelb routes by path prefix, whatever the host name"})
		return nil
	case "order", "allow", "deny", "require", "satisfy":
		if bal != nil {
			b.note("", false, src(n.line, n.words()), "not needed: the data plane serves every visitor (DESIGN.md §4)")
			return nil
		}
	}
	a.unknown(n, notKnown)
	return nil
}

// proxyACL reads a <Proxy *> (or any non-balancer <Proxy>): the access
// control of Apache's proxy.
func (a *apacheImporter) proxyACL(n *aNode) {
	for _, k := range n.kids {
		switch strings.ToLower(k.name) {
		case "order", "allow", "deny", "require", "satisfy":
			a.b.note("", false, src(k.line, k.words()), "not needed: gwelb's data plane serves every visitor (DESIGN.md §4) and never proxies to other hosts")
		default:
			a.unknown(k, "inside "+src(n.line, "<"+n.words()+">")+": not imported")
		}
	}
}

// manager reads a <Location> of the balancer-manager.
func (a *apacheImporter) manager(n *aNode) {
	subject := src(n.line, "<"+n.words()+">")
	for _, k := range n.kids {
		switch strings.ToLower(k.name) {
		case "sethandler", "order", "allow", "deny", "require", "satisfy":
			if k.is("Allow") || k.is("Require") {
				subject += " with " + strings.TrimSpace(strings.SplitN(k.words(), "#", 2)[0])
			}
		default:
			a.unknown(k, "inside the balancer-manager's <Location>: not imported")
		}
	}
	a.managers = append(a.managers, n)
	a.b.note("", false, subject, "Apache's balancer-manager is gwelb's dashboard, /ui/ on the ops listener "+
		"(ops: {addr: 127.0.0.1:PORT}, keep it off the public network): it needs the operator token, "+
		"and its drain, disable and enable go through Raft and the audit log; "+
		"from a shell: gwelbctl member drain|disable|enable")
}

// member reads a BalancerMember URL [key=value...].
func (a *apacheImporter) member(n *aNode, bal *aBalancer) error {
	b := a.b
	if len(n.args) == 0 {
		a.unknown(n, "no URL: not imported")
		return nil
	}
	if strings.ContainsAny(strings.Join(n.args, " "), "<>") {
		return b.errorf(n.line, "%s: holds a placeholder of the guide's template (<...>): put in the server's address and port", n.words())
	}
	u, path, err := memberURL(n.args[0])
	if err != nil {
		return b.errorf(n.line, "BalancerMember %v", err)
	}
	m := &member{line: n.line, spec: fsm.MemberSpec{URL: u}, path: path}
	if n.typo {
		m.notes = append(m.notes, pending{rel: "url", line: true, why: "the guide's \"[http:// http://]\" typo read as http://"})
	}
	for _, p := range n.args[1:] {
		k, v, _ := strings.Cut(p, "=")
		switch strings.ToLower(k) {
		case "route":
			m.spec.Route = v
		case "loadfactor":
			w, err := strconv.Atoi(v)
			if err != nil || w < 1 {
				b.warn(n.line, "%s: loadfactor %q not imported", n.words(), v)
				continue
			}
			m.spec.Weight = w
		case "status":
			a.status(n, m, v)
		case "retry":
			d, ok := parseSeconds(v)
			if !ok {
				b.warn(n.line, "%s: retry %q not imported", n.words(), v)
				continue
			}
			bal.failTimeout = append(bal.failTimeout, lineDur{line: n.line, d: d, what: "BalancerMember ... " + p})
		case "connectiontimeout":
			d, ok := parseSeconds(v)
			if !ok {
				b.warn(n.line, "%s: connectiontimeout %q not imported", n.words(), v)
				continue
			}
			b.setConnect(n.line, d, "BalancerMember ... "+p)
		case "ping":
			m.notes = append(m.notes, pending{rel: "url", subject: src(n.line, p), why: "gwelb probes GET <prefix>/about every 2 s from every node (health)"})
		case "keepalive", "ttl", "max", "smax", "min", "acquire", "disablereuse", "flushpackets", "flushwait", "iobuffersize", "receivebuffersize":
			m.notes = append(m.notes, pending{rel: "url", subject: src(n.line, p), why: "not needed: gwelb keeps and reuses connections to members itself"})
		default:
			b.warn(n.line, "%s: %s not imported", n.words(), p)
		}
	}
	if m.spec.Route == "" {
		m.spec.Route = strings.TrimPrefix(strings.TrimPrefix(u, "http://"), "https://")
		b.warn(n.line, "%s: no route=; named %s (the sticky value .%s would reach it)", n.words(), m.spec.Route, m.spec.Route)
	} else if strings.HasPrefix(m.spec.Route, ".") {
		b.warn(n.line, "%s: route %q starts with '.': Apache and gwelb take the route after the first '.' of the sticky value, so no value reaches it; did you mean route=%s?",
			n.words(), m.spec.Route, strings.TrimLeft(m.spec.Route, "."))
	}
	bal.members = append(bal.members, m)
	if len(bal.members) == 1 {
		a.sawBalancer = true
	}
	return nil
}

// status reads BalancerMember status=+D etc.
func (a *apacheImporter) status(n *aNode, m *member, v string) {
	on := true
	for _, c := range v {
		switch c {
		case '+':
			on = true
		case '-':
			on = false
		case 'D', 'd', 'S', 's':
			if on {
				m.spec.State = fsm.Disabled
			}
		case 'N', 'n':
			if on {
				m.spec.State = fsm.Drain
			}
		default:
			if on {
				a.b.warn(n.line, "%s: status flag %c has no gwelb equivalent (no standby or error states: health verdicts decide); imported as active", n.words(), c)
			}
		}
	}
}

// balancerParams reads ProxySet (or ProxyPass) parameters of a balancer.
func (a *apacheImporter) balancerParams(bal *aBalancer, n *aNode, params []string) {
	b := a.b
	for _, p := range params {
		k, v, _ := strings.Cut(p, "=")
		switch strings.ToLower(k) {
		case "stickysession":
			bal.sticky, bal.stickyNode = v, n
		case "lbmethod":
			bal.notes = append(bal.notes, pending{subject: src(n.line, p), why: "gwelb gives new sessions out by smooth weighted round-robin (weights from loadfactor) and moves sessions by rendezvous hashing (DESIGN.md rule 6)"})
		case "maxattempts":
			bal.notes = append(bal.notes, pending{subject: src(n.line, p), why: "gwelb retries a refused connection once, on the fallback member (DESIGN.md rule 8)"})
		case "growth":
			bal.notes = append(bal.notes, pending{subject: src(n.line, p), why: "not needed: members are added at run time (gwelbctl member add)"})
		case "nofailover":
			if strings.EqualFold(v, "off") {
				continue
			}
			b.warn(n.line, "%s: gwelb always moves the session of an unusable member to the same replacement on every node (DESIGN.md rule 6); not imported", p)
		default:
			b.warn(n.line, "%s: balancer parameter %s not imported", n.words(), p)
		}
	}
}

// build turns what the walk found into pools and listeners.
func (a *apacheImporter) build() error {
	b := a.b
	scopes := append([]*aScope{a.main}, a.vhosts...)
	// ProxyPass parameters of a balancer (stickysession=...) apply before
	// the pools are made.
	for _, s := range scopes {
		for _, p := range s.passes {
			if bn, ok := balancerName(p.target); ok {
				if bal := a.lookup(s, bn); bal != nil && len(p.params) > 0 {
					a.balancerParams(bal, p.n, p.params)
				}
			}
		}
	}
	var pools []*pool
	taken := map[string]bool{}
	byKey := map[string]*pool{}
	for _, s := range scopes {
		for _, p := range s.passes {
			bn, ok := balancerName(p.target)
			if !ok {
				continue
			}
			bal := a.lookup(s, bn)
			if bal == nil {
				return b.errorf(p.n.line, "%s: no <Proxy balancer://%s> defines that balancer", p.n.words(), bn)
			}
			prefix := normPath(p.path)
			key := fmt.Sprintf("%p %s", bal, prefix)
			pl := byKey[key]
			if pl == nil {
				var err error
				if pl, err = a.pool(bal, prefix, p, taken); err != nil {
					return err
				}
				byKey[key] = pl
				pools = append(pools, pl)
			}
			if !slices.Contains(s.pools, pl) {
				s.pools = append(s.pools, pl)
			}
		}
	}
	for _, s := range scopes {
		for _, bal := range s.balancers {
			if !bal.used {
				b.warn(bal.n.line, "balancer://%s: no ProxyPass points at it; not imported", bal.name)
			}
		}
	}
	if len(pools) == 0 {
		line := 1
		for _, s := range scopes {
			for _, bal := range s.balancers {
				line = bal.n.line
				break
			}
		}
		return b.errorf(line, "no ProxyPass points at a balancer: nothing to import")
	}
	a.chains(scopes)
	if err := a.cookies(scopes, pools); err != nil {
		return err
	}
	ls := a.listeners(pools)
	listeners, notes := ls.build(b, pools)
	return b.finish(pools, listeners, notes)
}

// pool makes the pool of balancer bal served at prefix.
func (a *apacheImporter) pool(bal *aBalancer, prefix string, p *aPass, taken map[string]bool) (*pool, error) {
	b := a.b
	bal.used = true
	if bal.sticky == "" {
		return nil, b.errorf(bal.n.line, "balancer://%s has no stickysession: GWE needs sticky sessions (add ProxySet stickysession=ROUTEID)", bal.name)
	}
	pl := &pool{line: bal.n.line, spec: fsm.PoolSpec{Name: poolName(prefix, bal.name, taken), Prefix: prefix}}
	pl.notes = append(pl.notes, pending{subject: src(bal.n.line, "<Proxy balancer://"+bal.name+">") + ", " + src(p.n.line, p.n.words())})
	pl.notes = append(pl.notes, bal.notes...)
	pl.failTimeouts = bal.failTimeout
	// Apache reads stickysession=NAME from the URL (NAME=...) first, then
	// from the cookie NAME; NAME|param names the cookie and the parameter
	// apart. gwelb reads the query parameter, then the cookie (rule 3).
	cookie, query, two := strings.Cut(bal.sticky, "|")
	if !two {
		query = cookie
	}
	pl.spec.Sticky = fsm.StickySpec{Query: query, Cookie: cookie}
	pl.notes = append(pl.notes, pending{rel: "sticky", line: true, subject: src(bal.stickyNode.line, "stickysession="+bal.sticky),
		why: fmt.Sprintf("like Apache, gwelb reads the query parameter %s, then the cookie %s (DESIGN.md rule 3)", query, cookie)})
	if len(bal.members) == 0 {
		return nil, b.errorf(bal.n.line, "balancer://%s has no BalancerMember", bal.name)
	}
	for _, m := range bal.members {
		c := *m
		c.notes = slices.Clone(m.notes)
		if m.path != "" && normPath(m.path) == prefix {
			pl.notes = append(pl.notes, pending{subject: src(m.line, "BalancerMember", m.spec.URL+m.path),
				why: fmt.Sprintf("the path %s is dropped from the member URLs: gwelb forwards the request target byte for byte, so members still get %s/... (DESIGN.md rule 9)", m.path, m.path)})
		}
		if normPath(m.path) != prefix {
			b.warn(m.line, "BalancerMember %s%s: Apache sends %s/x to %s%s/x; gwelb forwards the request target unchanged, so this member gets %s/x",
				m.spec.URL, m.path, strings.TrimSuffix(prefix, "/"), m.spec.URL, m.path, strings.TrimSuffix(prefix, "/"))
		}
		pl.members = append(pl.members, &c)
	}
	return pl, nil
}

// chains reads the ProxyPasses of the guide's single-balancer setup that
// send a path to another VirtualHost of the same Apache
// (ProxyPass /frontend http://localhost:8081/frontend): that listener
// serves the pool itself.
func (a *apacheImporter) chains(scopes []*aScope) {
	b := a.b
	resolve := func(s *aScope, p *aPass) []*pool {
		u, err := url.Parse(p.target)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || !isLoopbackHost(u.Hostname()) {
			return nil
		}
		port := u.Port()
		if port == "" {
			port = "80"
		}
		target := net.JoinHostPort(u.Hostname(), port)
		prefix := normPath(p.path)
		if normPath(u.Path) != prefix {
			return nil
		}
		var found []*pool
		for _, t := range a.vhosts {
			if t == s {
				continue
			}
			for _, addr := range t.node.args {
				if la, ok := listenAddr(addr); ok && sameListener(la, target) {
					for _, pl := range t.pools {
						if pl.spec.Prefix == prefix && !slices.Contains(found, pl) {
							found = append(found, pl)
						}
					}
				}
			}
		}
		return found
	}
	for _, s := range scopes {
		for _, p := range s.passes {
			if _, ok := balancerName(p.target); ok {
				continue
			}
			found := resolve(s, p)
			if len(found) == 0 {
				b.warn(p.n.line, "%s: a single server, not a balancer; not imported", p.n.words())
				continue
			}
			for _, pl := range found {
				if !slices.Contains(s.pools, pl) {
					s.pools = append(s.pools, pl)
				}
				s.notes = append(s.notes, pending{subject: src(p.n.line, p.n.words()),
					why: fmt.Sprintf("this listener routes the pool %s itself, with no hop through another listener", pl.spec.Name)})
			}
		}
		for _, p := range s.reverses {
			if _, ok := balancerName(p.target); ok {
				b.warn(p.n.line, "%s: gwelb does not rewrite the Location of a member's redirects; a member that redirects to its own address sends the visitor there", p.n.words())
				continue
			}
			if len(resolve(s, p)) > 0 {
				s.notes = append(s.notes, pending{subject: src(p.n.line, p.n.words()), why: "not needed: no hop through another listener, so no redirect names one"})
				continue
			}
			b.warn(p.n.line, "%s: not imported", p.n.words())
		}
	}
}

// cookies reads Header add Set-Cookie "NAME=.%{BALANCER_WORKER_ROUTE}e;
// path=/" env=BALANCER_ROUTE_CHANGED: the pools of the scope (all pools for
// the main server's) that read the cookie NAME insert it.
func (a *apacheImporter) cookies(scopes []*aScope, pools []*pool) error {
	b := a.b
	for _, s := range scopes {
		for _, n := range s.headers {
			args := n.args
			if len(args) > 0 && (strings.EqualFold(args[0], "always") || strings.EqualFold(args[0], "onsuccess")) {
				args = args[1:]
			}
			if n.wrapped != 0 {
				b.warn(n.wrapped, "%s on a line of its own (as the PDF of the guide prints it): read as the end of the Header of line %d; Apache would refuse it", args[len(args)-1], n.line)
			}
			if len(args) < 3 || !strings.EqualFold(args[1], "Set-Cookie") {
				a.unknown(n, "gwelb does not change a member's response headers; not imported")
				continue
			}
			if act := strings.ToLower(args[0]); act != "add" && act != "set" && act != "append" {
				a.unknown(n, "not imported")
				continue
			}
			c, ok := parseSetCookie(args[2])
			if !ok {
				a.unknown(n, "not a cookie; not imported")
				continue
			}
			env := ""
			for _, x := range args[3:] {
				if k, v, ok := strings.Cut(x, "="); ok && strings.EqualFold(k, "env") {
					env = v
				} else {
					b.warn(n.line, "%s: %s not imported", n.words(), x)
				}
			}
			targets := s.pools
			if s.node == nil {
				targets = pools
			}
			var hit []*pool
			for _, pl := range targets {
				if pl.spec.Sticky.Cookie == c.name {
					hit = append(hit, pl)
				}
			}
			if len(hit) == 0 {
				b.warn(n.line, "%s: no balancer here reads the cookie %s (stickysession); not imported", n.words(), c.name)
				continue
			}
			switch c.value {
			case ".%{BALANCER_WORKER_ROUTE}e":
			case "%{BALANCER_WORKER_ROUTE}e":
				b.warn(n.line, "%s: the value lacks the leading '.': Apache and gwelb take the route after the first '.', so Apache's cookie never routed; gwelb inserts %s=.<route>", n.words(), c.name)
			default:
				b.warn(n.line, "%s: value %q: gwelb inserts %s=.<route>", n.words(), c.value, c.name)
			}
			what := "Header " + strings.Join(args[:2], " ") + " " + strconv.Quote(args[2])
			for _, pl := range hit {
				b.applyCookie(pl, n.line, what, c)
				if !strings.EqualFold(env, "BALANCER_ROUTE_CHANGED") {
					pl.notes = append(pl.notes, pending{rel: "sticky.insert", why: "Apache sets this cookie on every response, gwelb only when the route is assigned or changes: the same stickiness"})
				}
			}
		}
	}
	return nil
}

// listeners makes a listener of every VirtualHost and every Listen.
func (a *apacheImporter) listeners(pools []*pool) *listenerSet {
	b := a.b
	ls := newListenerSet()
	mainNames := names(a.main.pools)
	owner := map[string]*aNode{}
	for _, v := range a.vhosts {
		for _, raw := range v.node.args {
			addr, ok := listenAddr(raw)
			if !ok {
				b.warn(v.node.line, "<VirtualHost %s>: address %q not imported", strings.Join(v.node.args, " "), raw)
				continue
			}
			if o := owner[addr]; o != nil {
				b.warn(v.node.line, "<VirtualHost %s>: shares %s with the VirtualHost of line %d; gwelb serves both on one listener, by path prefix", strings.Join(v.node.args, " "), addr, o.line)
			}
			owner[addr] = v.node
			served := append(names(v.pools), mainNames...)
			if len(served) == 0 {
				b.warn(v.node.line, "<VirtualHost %s> (lines %d-%d) serves no balancer; not imported", strings.Join(v.node.args, " "), v.node.line, v.node.end)
				continue
			}
			ls.add(addr, v.node.line, served...)
			ls.notes[addr] = append(ls.notes[addr], pending{subject: src(v.node.line, "<VirtualHost "+strings.Join(v.node.args, " ")+">")})
			ls.notes[addr] = append(ls.notes[addr], v.notes...)
		}
	}
	for _, n := range a.listens {
		if len(n.args) == 0 {
			a.unknown(n, "no address; not imported")
			continue
		}
		addr, ok := listenAddr(n.args[0])
		if !ok {
			a.unknown(n, "address not imported")
			continue
		}
		if len(n.args) > 1 {
			b.warn(n.line, "%s: protocol %s not imported (TLS: listeners[].tls)", n.words(), n.args[1])
		}
		if !ls.has(addr) {
			if len(mainNames) == 0 {
				if owner[addr] == nil {
					b.warn(n.line, "%s: no VirtualHost or main-server ProxyPass serves it; not imported", n.words())
				}
				continue
			}
			ls.add(addr, n.line, mainNames...)
			ls.notes[addr] = append(ls.notes[addr], a.main.notes...)
		}
		ls.notes[addr] = append(ls.notes[addr], pending{rel: "addr", line: true, subject: src(n.line, n.words())})
	}
	if len(mainNames) > 0 && len(ls.order) == 0 {
		line := a.main.passes[0].n.line
		b.warn(line, "no Listen or VirtualHost: the listener is :80, httpd.conf's usual Listen 80; change listeners[0].addr to the port Apache listened on")
		ls.add(":80", line, mainNames...)
		ls.notes[":80"] = append(ls.notes[":80"], pending{rel: "addr", line: true, why: "assumed: the file has no Listen"})
		ls.notes[":80"] = append(ls.notes[":80"], a.main.notes...)
	}
	return ls
}

func names(ps []*pool) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.spec.Name
	}
	return out
}
