// Package fsm holds gwelb's replicated state and the immutable routing Table
// it publishes. It does no I/O, reads no clock and draws no random numbers:
// every node that applies the same commands builds the same Table, so every
// node routes a given sticky value to the same member.
package fsm

import (
	"cmp"
	"fmt"
	"iter"
	"net/url"
	"slices"
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
// change and shared by all readers without locks. Tables the FSM builds
// share structure with the table before them (DESIGN.md §5.2): a pool the
// change did not touch is the same *Pool, and a pool whose members changed
// shares every block of members the change did not touch.
type Table struct {
	index uint64
	pools []*Pool // longest prefix first, then by name: longest prefix wins
}

// blockShift sizes the copy-on-write blocks a Pool keeps its members in: a
// change to one member copies its block of 64 and the block index (n/64
// pointers), not the pool, so a change costs the same at 10 or 10,000
// members.
const (
	blockShift = 6
	blockSize  = 1 << blockShift
)

// Pool is one pool of a Table.
type Pool struct {
	spec   PoolSpec   // settings, without members
	lay    *layout    // replaced whenever spec, routes, URLs or weights change
	blocks [][]Member // members by index, blockSize per block; never modified once published
	n      int        // number of members
}

// layout is what a pool's routing derives from its members' routes and
// weights. It is shared by the versions of a pool whose changes are admin
// states and verdicts only, and its identity tells the data plane that its
// per-member state may be carried over (SameLayout).
type layout struct {
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
	slices.SortStableFunc(t.pools, func(a, b *Pool) int { return cmp.Compare(len(b.spec.Prefix), len(a.spec.Prefix)) })
	return t, nil
}

// newPool builds a pool from a spec ValidatePools accepted.
func newPool(spec PoolSpec) *Pool {
	members := make([]Member, len(spec.Members))
	for i, ms := range spec.Members {
		u, _ := ParseMemberURL(ms.URL) // validated
		members[i] = Member{MemberSpec: ms, Target: u}
	}
	spec.Members = nil // members live in the blocks
	return buildPool(spec, members)
}

// buildPool lays members out in blocks and derives the routing from them.
func buildPool(spec PoolSpec, members []Member) *Pool {
	p := &Pool{spec: spec, n: len(members), lay: &layout{byRoute: make(map[string]int, len(members)), wrr: smoothWRR(members)}}
	for i := range members {
		p.lay.byRoute[members[i].Route] = i
	}
	for lo := 0; lo < len(members); lo += blockSize {
		p.blocks = append(p.blocks, members[lo:min(lo+blockSize, len(members)):min(lo+blockSize, len(members))])
	}
	return p
}

// memberEdit replaces member i of a pool by m.
type memberEdit struct {
	i int
	m Member
}

// edited returns a copy of p with spec (when not nil) and the members of
// edits replaced, sharing every block no edit touches. The edits keep the
// members' routes; a new route or a removed member is a rebuild (buildPool).
func (p *Pool) edited(spec *PoolSpec, edits []memberEdit) *Pool {
	q := &Pool{spec: p.spec, lay: p.lay, blocks: p.blocks, n: p.n}
	relayout, reweigh := spec != nil, false
	if spec != nil {
		q.spec = *spec
	}
	if len(edits) > 0 {
		q.blocks = slices.Clone(p.blocks)
		copied := map[int]bool{}
		for _, e := range edits {
			b := e.i >> blockShift
			if !copied[b] {
				q.blocks[b] = slices.Clone(p.blocks[b])
				copied[b] = true
			}
			old := &p.blocks[b][e.i&(blockSize-1)]
			relayout = relayout || old.URL != e.m.URL || old.Weight != e.m.Weight
			reweigh = reweigh || old.Weight != e.m.Weight
			q.blocks[b][e.i&(blockSize-1)] = e.m
		}
	}
	if relayout {
		q.lay = &layout{byRoute: p.lay.byRoute, wrr: p.lay.wrr}
		if reweigh {
			q.lay.wrr = smoothWRR(q.Members())
		}
	}
	return q
}

// smoothWRR returns nginx's smooth weighted round-robin order: each member
// appears weight times, spread out rather than in runs. nginx adds every
// member's weight to its current value, picks the largest (the first on a
// tie) and takes the total off it. Members of equal weight are picked in
// turn, index order, so it suffices to compare the next member of each
// weight: O(total weight × distinct weights) rather than × members.
func smoothWRR(members []Member) []int {
	type group struct {
		weight  int
		members []int // indexes, ascending
		next    int   // position in members of the next to pick
		rounds  int   // completed turns: each member before next was picked rounds+1 times, the others rounds
	}
	var groups []*group
	byWeight := map[int]*group{}
	total := 0
	for i, m := range members {
		total += m.Weight
		g := byWeight[m.Weight]
		if g == nil {
			g = &group{weight: m.Weight}
			byWeight[m.Weight] = g
			groups = append(groups, g)
		}
		g.members = append(g.members, i)
	}
	order := make([]int, 0, total)
	for k := 1; k <= total; k++ {
		// The current value of member i after k additions is
		// k*weight - total*picks; the group's best is its next member.
		var best *group
		bestValue, bestIndex := 0, 0
		for _, g := range groups {
			v, i := k*g.weight-total*g.rounds, g.members[g.next]
			if best == nil || v > bestValue || (v == bestValue && i < bestIndex) {
				best, bestValue, bestIndex = g, v, i
			}
		}
		order = append(order, bestIndex)
		if best.next++; best.next == len(best.members) {
			best.next, best.rounds = 0, best.rounds+1
		}
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

// Len is the number of members (0 for a nil pool).
func (p *Pool) Len() int {
	if p == nil {
		return 0
	}
	return p.n
}

// Members returns a copy of the pool's members in the order they were
// defined (route order for tables the FSM builds). It allocates the whole
// list: loops over a large pool use All, Len and Member.
func (p *Pool) Members() []Member {
	out := make([]Member, 0, p.n)
	for _, b := range p.blocks {
		out = append(out, b...)
	}
	return out
}

// All yields the index and member of every member, in order, without copying.
func (p *Pool) All() iter.Seq2[int, *Member] {
	return func(yield func(int, *Member) bool) {
		for bi, b := range p.blocks {
			for j := range b {
				if !yield(bi<<blockShift+j, &b[j]) {
					return
				}
			}
		}
	}
}

// Member returns the i-th member.
func (p *Pool) Member(i int) *Member { return &p.blocks[i>>blockShift][i&(blockSize-1)] }

// Lookup returns the index of the member with the given route.
func (p *Pool) Lookup(route string) (int, bool) {
	i, ok := p.lay.byRoute[route]
	return i, ok
}

// Schedule is the smooth weighted round-robin order of member indexes for new
// sessions; callers walk it with their own counter.
func (p *Pool) Schedule() []int { return p.lay.wrr }

// SameLayout reports whether q is a version of p with the same settings and
// the same members (routes, URLs and weights, in the same order): the two
// differ at most in admin states and verdicts. The data plane carries its
// per-member state (quarantine, connections in flight, cookies) over by
// index between such versions instead of rebuilding it (DESIGN.md §5.2). A
// pool the FSM did not touch is the same pointer, which is SameLayout too.
func (p *Pool) SameLayout(q *Pool) bool {
	return q != nil && p.lay == q.lay && p.spec.Name == q.spec.Name
}

// Changed returns the indexes of the members that differ between prev and
// p, a later version of the same pool with the same layout, comparing only
// the member blocks the two do not share: O(members/64 + 64 × changed).
// It reports false when the layouts differ (members came, went or moved;
// SameLayout): then every member may have changed.
func (p *Pool) Changed(prev *Pool) ([]int, bool) {
	if !p.SameLayout(prev) {
		return nil, false
	}
	var changed []int
	for bi, b := range p.blocks {
		old := prev.blocks[bi]
		if &b[0] == &old[0] {
			continue // shared: unchanged
		}
		for j := range b {
			if b[j] != old[j] {
				changed = append(changed, bi<<blockShift+j)
			}
		}
	}
	return changed, true
}

// Usable reports whether member i may take traffic by the cluster's view:
// not disabled and verdict up. Drain members are usable for their sessions.
func (m *Member) Usable() bool { return m.State != Disabled && m.Verdict == Up }
