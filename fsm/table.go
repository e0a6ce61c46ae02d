// Package fsm holds gwelb's replicated state and the immutable routing Table
// it publishes. It does no I/O, reads no clock and draws no random numbers:
// every node that applies the same commands builds the same Table, so every
// node routes a given sticky value to the same member.
package fsm

import (
	"fmt"
	"net/url"
	"sort"
	"strings"
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

// NewTable applies defaults to pools, judges them with ValidatePools and
// builds a Table at the given Raft index. Building a table is the last
// check before anything routes: what the data plane cannot route never
// becomes a Table.
func NewTable(index uint64, pools []PoolSpec) (*Table, error) {
	specs := make([]PoolSpec, len(pools))
	for i, p := range pools {
		specs[i] = p.WithDefaults()
	}
	if err := ValidatePools(specs); err != nil {
		return nil, err
	}
	t := &Table{index: index}
	for _, spec := range specs {
		t.pools = append(t.pools, newPool(spec))
	}
	sort.SliceStable(t.pools, func(i, j int) bool { return len(t.pools[i].spec.Prefix) > len(t.pools[j].spec.Prefix) })
	return t, nil
}

// newPool builds a pool from a spec ValidatePools accepted.
func newPool(spec PoolSpec) *Pool {
	p := &Pool{spec: spec, byRoute: make(map[string]int, len(spec.Members))}
	p.spec.Members = nil // members live in p.members
	for _, ms := range spec.Members {
		u, _ := ParseMemberURL(ms.URL) // validated
		p.byRoute[ms.Route] = len(p.members)
		p.members = append(p.members, Member{MemberSpec: ms, Target: u})
	}
	p.wrr = smoothWRR(p.members)
	return p
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
