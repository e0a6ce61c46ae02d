// Package fsm holds gwelb's replicated state and the immutable routing Table
// it publishes. It does no I/O, reads no clock and draws no random numbers:
// every node that applies the same commands builds the same Table, so every
// node routes a given sticky value to the same member.
package fsm

import (
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"
)

// AdminState is an operator's wish for a member, as in Apache's balancer-manager.
type AdminState uint8

const (
	// Active members take sticky sessions and new sessions.
	Active AdminState = iota
	// Drain members keep their sticky sessions but get no new ones.
	Drain
	// Disabled members get nothing; their sessions fail over.
	Disabled
)

var adminStateNames = [...]string{Active: "active", Drain: "drain", Disabled: "disabled"}

func (s AdminState) String() string {
	if int(s) < len(adminStateNames) {
		return adminStateNames[s]
	}
	return fmt.Sprintf("AdminState(%d)", s)
}

// ParseAdminState reads "active", "drain" or "disabled".
func ParseAdminState(s string) (AdminState, error) {
	for i, n := range adminStateNames {
		if s == n {
			return AdminState(i), nil
		}
	}
	return 0, fmt.Errorf("unknown admin state %q (want active, drain or disabled)", s)
}

// Verdict is the cluster's agreed view of a member's health.
type Verdict uint8

const (
	// Up members may be routed to.
	Up Verdict = iota
	// Down members are routed around.
	Down
)

func (v Verdict) String() string {
	if v == Down {
		return "down"
	}
	return "up"
}

// CookieSpec holds the attributes of the sticky cookie a pool inserts.
type CookieSpec struct {
	Path     string // default "/"
	Domain   string
	MaxAge   int // seconds; 0 means a session cookie
	Secure   bool
	HTTPOnly bool
	SameSite string // "", "Lax", "Strict" or "None"
}

// PoolSpec describes a pool: its prefix, how it reads sticky values and its members.
type PoolSpec struct {
	Name         string
	Prefix       string        // path prefix, e.g. "/frontend"
	QueryParam   string        // sticky query parameter ("alias"), "" for none
	Cookie       string        // sticky cookie ("FRONTEND_ROUTEID", "ROUTEID"), "" for none
	InsertCookie bool          // set Cookie when the route is assigned or changes
	CookieAttrs  CookieSpec    // attributes of the inserted cookie
	FailTimeout  time.Duration // local quarantine after a connection failure
	Health       HealthSpec    // active probe and verdict flap damping (see verdict.go)
	Members      []MemberSpec
}

// MemberSpec describes one GWE server of a pool.
type MemberSpec struct {
	Route   string // unique in its pool, e.g. "1" or "GWE_Frontend_103"
	URL     string // scheme://host:port of the GWE server
	Weight  int    // relative share of new sessions, >= 1
	State   AdminState
	Verdict Verdict
}

// Table is an immutable snapshot of every pool and member, built once per
// change and shared by all readers without locks.
type Table struct {
	index uint64
	pools []*Pool // sorted by descending prefix length: longest prefix wins
}

// Pool is one pool of a Table.
type Pool struct {
	spec    PoolSpec
	members []Member
	byRoute map[string]int
	wrr     []int // smooth weighted round-robin order over all members
}

// Member is one member of a Pool, with its parsed URL.
type Member struct {
	MemberSpec
	Target *url.URL
}

// NewTable validates pools and builds a Table at the given Raft index.
func NewTable(index uint64, pools []PoolSpec) (*Table, error) {
	t := &Table{index: index}
	names := map[string]bool{}
	prefixes := map[string]string{}
	for i := range pools {
		p, err := newPool(pools[i])
		if err != nil {
			return nil, err
		}
		if names[p.spec.Name] {
			return nil, fmt.Errorf("pool %q: duplicate name", p.spec.Name)
		}
		if other, ok := prefixes[p.spec.Prefix]; ok {
			return nil, fmt.Errorf("pool %q: prefix %q already used by pool %q", p.spec.Name, p.spec.Prefix, other)
		}
		names[p.spec.Name] = true
		prefixes[p.spec.Prefix] = p.spec.Name
		t.pools = append(t.pools, p)
	}
	sort.SliceStable(t.pools, func(i, j int) bool { return len(t.pools[i].spec.Prefix) > len(t.pools[j].spec.Prefix) })
	return t, nil
}

func newPool(spec PoolSpec) (*Pool, error) {
	if spec.Name == "" {
		return nil, errors.New("pool: name is empty")
	}
	if !strings.HasPrefix(spec.Prefix, "/") || (len(spec.Prefix) > 1 && strings.HasSuffix(spec.Prefix, "/")) {
		return nil, fmt.Errorf("pool %q: prefix %q must start with / and not end with /", spec.Name, spec.Prefix)
	}
	if spec.QueryParam == "" && spec.Cookie == "" {
		return nil, fmt.Errorf("pool %q: needs a sticky query parameter or cookie", spec.Name)
	}
	if spec.InsertCookie && spec.Cookie == "" {
		return nil, fmt.Errorf("pool %q: insert_cookie needs a cookie name", spec.Name)
	}
	if !validToken(spec.Cookie) {
		return nil, fmt.Errorf("pool %q: cookie name %q is not a valid token", spec.Name, spec.Cookie)
	}
	switch spec.CookieAttrs.SameSite {
	case "", "Lax", "Strict", "None":
	default:
		return nil, fmt.Errorf("pool %q: same_site %q (want Lax, Strict or None)", spec.Name, spec.CookieAttrs.SameSite)
	}
	if spec.CookieAttrs.Path == "" {
		spec.CookieAttrs.Path = "/"
	}
	if spec.FailTimeout < 0 {
		return nil, fmt.Errorf("pool %q: fail_timeout %v is negative", spec.Name, spec.FailTimeout)
	}
	p := &Pool{spec: spec, byRoute: make(map[string]int, len(spec.Members))}
	p.spec.Members = nil // members live in p.members
	for _, ms := range spec.Members {
		m, err := newMember(ms)
		if err != nil {
			return nil, fmt.Errorf("pool %q: %w", spec.Name, err)
		}
		if _, dup := p.byRoute[m.Route]; dup {
			return nil, fmt.Errorf("pool %q: member route %q: duplicate", spec.Name, m.Route)
		}
		p.byRoute[m.Route] = len(p.members)
		p.members = append(p.members, m)
	}
	p.wrr = smoothWRR(p.members)
	return p, nil
}

func newMember(ms MemberSpec) (Member, error) {
	if ms.Route == "" || !validToken(ms.Route) {
		return Member{}, fmt.Errorf("member route %q: must be a non-empty token without spaces, ';', ',' or quotes", ms.Route)
	}
	if ms.Weight == 0 {
		ms.Weight = 1
	}
	if ms.Weight < 1 || ms.Weight > 1000 {
		return Member{}, fmt.Errorf("member %q: weight %d (want 1..1000)", ms.Route, ms.Weight)
	}
	if ms.State > Disabled {
		return Member{}, fmt.Errorf("member %q: %v", ms.Route, ms.State)
	}
	u, err := url.Parse(ms.URL)
	if err != nil {
		return Member{}, fmt.Errorf("member %q: url %q: %w", ms.Route, ms.URL, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return Member{}, fmt.Errorf("member %q: url %q: want http://host:port or https://host:port", ms.Route, ms.URL)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return Member{}, fmt.Errorf("member %q: url %q: must have no path, query or user: gwelb forwards the request target unchanged", ms.Route, ms.URL)
	}
	u.Path = ""
	return Member{MemberSpec: ms, Target: u}, nil
}

// validToken reports whether s may be used verbatim as a cookie name or
// route: printable ASCII without separators that would break a Cookie header.
func validToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || c == ';' || c == ',' || c == '"' || c == '\\' || c == '=' {
			return false
		}
	}
	return true
}

// smoothWRR returns nginx's smooth weighted round-robin order: each member
// appears weight times, spread out rather than in runs.
func smoothWRR(members []Member) []int {
	total := 0
	for _, m := range members {
		total += m.Weight
	}
	order := make([]int, 0, total)
	current := make([]int, len(members))
	for range total {
		best := -1
		for i, m := range members {
			current[i] += m.Weight
			if best < 0 || current[i] > current[best] {
				best = i
			}
		}
		current[best] -= total
		order = append(order, best)
	}
	return order
}

// Index is the Raft log index the Table was built at (0 before Raft).
func (t *Table) Index() uint64 { return t.index }

// Pools lists the pools, longest prefix first.
func (t *Table) Pools() []*Pool { return t.pools }

// Pool returns the pool with the given name, or nil.
func (t *Table) Pool(name string) *Pool {
	for _, p := range t.pools {
		if p.spec.Name == name {
			return p
		}
	}
	return nil
}

// Match returns the pool whose prefix is a whole-segment prefix of path, or nil.
func (t *Table) Match(path string) *Pool {
	for _, p := range t.pools {
		pre := p.spec.Prefix
		if pre == "/" || path == pre || (strings.HasPrefix(path, pre) && path[len(pre)] == '/') {
			return p
		}
	}
	return nil
}

// Spec returns the pool's settings (without members).
func (p *Pool) Spec() PoolSpec { return p.spec }

// Name is the pool's name.
func (p *Pool) Name() string { return p.spec.Name }

// Members lists the pool's members in the order they were defined.
func (p *Pool) Members() []Member { return p.members }

// Member returns the i-th member.
func (p *Pool) Member(i int) *Member { return &p.members[i] }

// Lookup returns the index of the member with the given route.
func (p *Pool) Lookup(route string) (int, bool) {
	i, ok := p.byRoute[route]
	return i, ok
}

// Schedule is the smooth weighted round-robin order of member indexes for new
// sessions; callers walk it with their own counter.
func (p *Pool) Schedule() []int { return p.wrr }

// Usable reports whether member i may take traffic by the cluster's view:
// not disabled and verdict up. Drain members are usable for their sessions.
func (m *Member) Usable() bool { return m.State != Disabled && m.Verdict == Up }
