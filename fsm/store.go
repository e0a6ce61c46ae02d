package fsm

import (
	"cmp"
	"container/heap"
	"maps"
	"reflect"
	"slices"

	"google.golang.org/protobuf/proto"

	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// The FSM keeps the replicated state indexed for the commands that change
// it (DESIGN.md §5.2): pools by name, each pool's members by route, each
// member's observations with the member, and the flap hold-downs by their
// end. A command changes that state in place and logs how to
// undo each step; a command that fails is undone, one that succeeds costs
// what it touched. Every stored protobuf message (pool, member,
// observation, outcome) is immutable once stored: a change stores a new
// message, so a snapshot or a State copy can share them without a lock.

// memberKey names a member.
type memberKey struct{ pool, route string }

// memberRec is one member's stored message and its observations (sorted
// by node). A memberRec is immutable: a change stores a new one.
type memberRec struct {
	msg *gwelbv1.Member
	obs []*gwelbv1.Observation
}

// equal reports whether r and o hold equal replicated data.
func (r *memberRec) equal(o *memberRec) bool {
	if r == nil || o == nil {
		return r == o
	}
	return proto.Equal(r.msg, o.msg) && slices.EqualFunc(r.obs, o.obs, func(a, b *gwelbv1.Observation) bool { return proto.Equal(a, b) })
}

// poolRec is one pool and its members.
type poolRec struct {
	msg     *gwelbv1.Pool
	members map[string]*memberRec
	routes  []string // the members' routes, sorted; see owned
	// owned: routes was copied by the current command, so nothing but
	// this record refers to it and the command may change it in place.
	// Otherwise it is replaced, never modified in place: the undo log, or
	// a command before, holds it. Without this, a command adding n
	// members (a seed) copied the list n times and kept every copy for
	// undo, O(n²) memory (890 MiB at 10,000 members).
	owned bool
}

// store is the replicated state, indexed; see the comment above.
type store struct {
	index     uint64
	seeded    bool
	pools     map[string]*poolRec
	balancers []string           // sorted; replaced, never modified in place
	observers []string           // sorted live non-voters; replaced, never modified in place
	outcomes  []*gwelbv1.Outcome // oldest first; appended, trimmed by reslicing
	byRequest map[string]*gwelbv1.Outcome
	held      map[memberKey]int64 // members with a hold-down, by its end
	holds     holdHeap            // the same by end, earliest first; may hold stale entries (see due)
	unknown   []byte              // fields of State this version does not know, kept for the snapshot

	undo  []undoStep // how to take back the current command's changes
	owned []*poolRec // pools whose route list the current command copied (poolRec.owned)
}

func newStore() *store {
	return &store{pools: map[string]*poolRec{}, byRequest: map[string]*gwelbv1.Outcome{}, held: map[memberKey]int64{}}
}

// undoStep restores one thing a command changed.
type undoStep struct {
	kind      undoKind
	key       memberKey
	rec       *memberRec // stepMember: the member before (nil: absent)
	routes    []string   // stepMember: the pool's routes before
	pool      *poolRec   // stepPoolRemoved: the removed pool
	msg       *gwelbv1.Pool
	balancers []string
	observers []string
	seeded    bool
}

type undoKind uint8

const (
	stepMember      undoKind = iota // a member was set, added or removed
	stepPoolMsg                     // an existing pool's settings were replaced
	stepPoolAdded                   // a pool was added
	stepPoolRemoved                 // a pool (already without members) was removed
	stepBalancers
	stepSeeded
)

// member returns the stored member, or nil.
func (s *store) member(pool, route string) *memberRec {
	if p := s.pools[pool]; p != nil {
		return p.members[route]
	}
	return nil
}

// setMember stores rec (nil removes) as the member of an existing pool.
func (s *store) setMember(k memberKey, rec *memberRec) {
	p := s.pools[k.pool]
	old := p.members[k.route]
	s.undo = append(s.undo, undoStep{kind: stepMember, key: k, rec: old, routes: p.routes})
	s.putMember(p, k, old, rec)
}

// putMember stores rec in place of old, keeping routes and holds in step.
func (s *store) putMember(p *poolRec, k memberKey, old, rec *memberRec) {
	switch {
	case rec == nil && old != nil:
		delete(p.members, k.route)
		s.ownRoutes(p)
		i, _ := slices.BinarySearch(p.routes, k.route)
		p.routes = slices.Delete(p.routes, i, i+1)
	case rec != nil && old == nil:
		p.members[k.route] = rec
		s.ownRoutes(p)
		i, _ := slices.BinarySearch(p.routes, k.route)
		p.routes = slices.Insert(p.routes, i, k.route)
	case rec != nil:
		p.members[k.route] = rec
	}
	delete(s.held, k)
	if rec != nil {
		if until := rec.msg.GetHoldDownUntilUnixNanos(); until != 0 {
			s.hold(k, until)
		}
	}
}

// ownRoutes gives the current command its own copy of p's route list,
// once per command (poolRec.owned).
func (s *store) ownRoutes(p *poolRec) {
	if p.owned {
		return
	}
	p.routes = slices.Clone(p.routes)
	p.owned = true
	s.owned = append(s.owned, p)
}

// disown ends the current command's ownership of the route lists it copied.
func (s *store) disown() {
	for _, p := range s.owned {
		p.owned = false
	}
	clear(s.owned)
	s.owned = s.owned[:0]
}

// hold records that member k is held down until until.
func (s *store) hold(k memberKey, until int64) {
	s.held[k] = until
	heap.Push(&s.holds, holdEntry{until, k})
	if len(s.holds) > 2*len(s.held)+64 {
		// Mostly stale: rebuild from the map (the order of equal ends
		// does not matter, each member is judged on its own).
		s.holds = s.holds[:0]
		for k, until := range s.held {
			s.holds = append(s.holds, holdEntry{until, k})
		}
		heap.Init(&s.holds)
	}
}

// due removes from the heap and returns the members whose hold-down ends
// at or before now. An entry is stale, and skipped, when its member was
// released, removed or held anew since: the map says what holds. Stale
// entries cost nothing until they reach the top; every change re-pushes
// (a rolled-back command's members included), so a member held in the map
// always has an entry.
func (s *store) due(now int64) []memberKey {
	var keys []memberKey
	for len(s.holds) > 0 && s.holds[0].until <= now {
		e := heap.Pop(&s.holds).(holdEntry)
		if until, ok := s.held[e.key]; ok && until == e.until {
			// A member re-held with the same end has several entries: it
			// is due once (a second release would find nothing held).
			delete(s.held, e.key)
			keys = append(keys, e.key)
		}
	}
	return keys
}

// nextHold is the earliest end of a hold-down, or 0.
func (s *store) nextHold() int64 {
	for len(s.holds) > 0 {
		if e := s.holds[0]; s.held[e.key] == e.until {
			return e.until
		}
		heap.Pop(&s.holds)
	}
	return 0
}

type holdEntry struct {
	until int64
	key   memberKey
}

// holdHeap is a min-heap of hold-down ends (container/heap).
type holdHeap []holdEntry

func (h holdHeap) Len() int           { return len(h) }
func (h holdHeap) Less(i, j int) bool { return h[i].until < h[j].until }
func (h holdHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *holdHeap) Push(x any)        { *h = append(*h, x.(holdEntry)) }
func (h *holdHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// setPoolMsg stores msg as the settings of pool name, adding the pool.
func (s *store) setPoolMsg(name string, msg *gwelbv1.Pool) {
	if p := s.pools[name]; p != nil {
		s.undo = append(s.undo, undoStep{kind: stepPoolMsg, key: memberKey{pool: name}, msg: p.msg})
		p.msg = msg
		return
	}
	s.pools[name] = &poolRec{msg: msg, members: map[string]*memberRec{}}
	s.undo = append(s.undo, undoStep{kind: stepPoolAdded, key: memberKey{pool: name}})
}

// removePool removes pool name with its members and their observations.
func (s *store) removePool(name string) {
	p := s.pools[name]
	for _, route := range p.routes {
		s.setMember(memberKey{name, route}, nil)
	}
	s.undo = append(s.undo, undoStep{kind: stepPoolRemoved, key: memberKey{pool: name}, pool: p})
	delete(s.pools, name)
}

func (s *store) setBalancers(nodes, observers []string) {
	s.undo = append(s.undo, undoStep{kind: stepBalancers, balancers: s.balancers, observers: s.observers})
	s.balancers, s.observers = nodes, observers
}

func (s *store) setSeeded() {
	s.undo = append(s.undo, undoStep{kind: stepSeeded, seeded: s.seeded})
	s.seeded = true
}

// rollback takes back every change of the current command, last first.
func (s *store) rollback() {
	for i := len(s.undo) - 1; i >= 0; i-- {
		u := &s.undo[i]
		switch u.kind {
		case stepMember:
			p := s.pools[u.key.pool]
			s.putMember(p, u.key, p.members[u.key.route], u.rec)
			p.routes = u.routes
		case stepPoolMsg:
			s.pools[u.key.pool].msg = u.msg
		case stepPoolAdded:
			delete(s.pools, u.key.pool)
		case stepPoolRemoved:
			s.pools[u.key.pool] = u.pool
		case stepBalancers:
			s.balancers, s.observers = u.balancers, u.observers
		case stepSeeded:
			s.seeded = u.seeded
		}
	}
	s.undo = s.undo[:0]
	s.disown()
}

// commit forgets how to undo the current command.
func (s *store) commit() {
	clear(s.undo) // drop the references to old records
	s.undo = s.undo[:0]
	s.disown()
}

// delta is what the current command changed, judged by value: a member or
// pool stored again with equal content is no change (DESIGN.md §5.2 rule 3).
type delta struct {
	members   map[memberKey]*memberRec // changed members: the record before (nil: added)
	pools     map[string]*gwelbv1.Pool // pools added, removed or with new settings: the settings before (nil: added)
	balancers bool
	seeded    bool
}

func (d *delta) empty() bool {
	return len(d.members) == 0 && len(d.pools) == 0 && !d.balancers && !d.seeded
}

// delta compares what the undo log says was there before with what is there now.
func (s *store) delta() *delta {
	d := &delta{members: map[memberKey]*memberRec{}, pools: map[string]*gwelbv1.Pool{}}
	seenMember := map[memberKey]bool{}
	seenPool := map[string]bool{}
	var balancersBefore, observersBefore []string
	var balancersTouched bool
	seededBefore, seededTouched := false, false
	// The first step naming a thing holds its value before the command.
	for i := range s.undo {
		u := &s.undo[i]
		switch u.kind {
		case stepMember:
			if !seenMember[u.key] {
				seenMember[u.key] = true
				if !u.rec.equal(s.member(u.key.pool, u.key.route)) {
					d.members[u.key] = u.rec
				}
			}
		case stepPoolMsg, stepPoolAdded, stepPoolRemoved:
			name := u.key.pool
			if seenPool[name] {
				continue
			}
			seenPool[name] = true
			var before *gwelbv1.Pool
			switch u.kind {
			case stepPoolMsg:
				before = u.msg
			case stepPoolRemoved:
				before = u.pool.msg
			}
			now := s.pools[name]
			switch {
			case before == nil && now == nil: // added and removed again
			case before == nil || now == nil || !proto.Equal(before, now.msg):
				d.pools[name] = before
			}
		case stepBalancers:
			if !balancersTouched {
				balancersTouched, balancersBefore, observersBefore = true, u.balancers, u.observers
			}
		case stepSeeded:
			if !seededTouched {
				seededTouched, seededBefore = true, u.seeded
			}
		}
	}
	d.balancers = balancersTouched && (!slices.Equal(balancersBefore, s.balancers) || !slices.Equal(observersBefore, s.observers))
	d.seeded = seededTouched && seededBefore != s.seeded
	return d
}

// names returns the pool names, sorted.
func (s *store) names() []string {
	return slices.Sorted(maps.Keys(s.pools))
}

// checkPools judges the pools' settings together, as building the whole
// Table would: the one validator, over every pool in name order. Members
// need no second look: each was judged when it was stored and routes are
// unique by construction, so what is left to find is a prefix two pools
// share.
func (s *store) checkPools() error {
	names := s.names()
	specs := make([]PoolSpec, len(names))
	for i, name := range names {
		specs[i] = PoolFromProto(s.pools[name].msg).WithDefaults()
	}
	return ValidatePools(specs)
}

// state returns the replicated State, sharing the stored (immutable)
// messages: cheap enough to take under the FSM's lock, and safe to encode
// or copy after it is released. Slices are in the order State documents.
func (s *store) state() *gwelbv1.State {
	st := &gwelbv1.State{Index: s.index, Seeded: s.seeded, Balancers: s.balancers, Observers: s.observers, Outcomes: s.outcomes}
	n := 0
	for _, p := range s.pools {
		n += len(p.routes)
	}
	st.Members = make([]*gwelbv1.Member, 0, n)
	for _, name := range s.names() {
		p := s.pools[name]
		st.Pools = append(st.Pools, p.msg)
		for _, route := range p.routes {
			m := p.members[route]
			st.Members = append(st.Members, m.msg)
			st.Observations = append(st.Observations, m.obs...)
		}
	}
	if len(s.unknown) > 0 {
		st.ProtoReflect().SetUnknown(s.unknown)
	}
	return st
}

// storeOf indexes a State DecodeState accepted (sorted, every member in
// a pool, every observation of a member); the store takes its messages over.
func storeOf(st *gwelbv1.State) *store {
	s := newStore()
	s.index, s.seeded, s.balancers, s.observers = st.GetIndex(), st.GetSeeded(), st.GetBalancers(), st.GetObservers()
	s.unknown = slices.Clone(st.ProtoReflect().GetUnknown())
	for _, p := range st.GetPools() {
		s.pools[p.GetName()] = &poolRec{msg: p, members: map[string]*memberRec{}}
	}
	obs := st.GetObservations()
	for _, m := range st.GetMembers() {
		p := s.pools[m.GetPool()]
		rec := &memberRec{msg: m}
		n := 0
		for n < len(obs) && obs[n].GetPool() == m.GetPool() && obs[n].GetRoute() == m.GetRoute() {
			n++
		}
		if n > 0 {
			rec.obs, obs = obs[:n:n], obs[n:]
		}
		p.members[m.GetRoute()] = rec
		p.routes = append(p.routes, m.GetRoute())
		if until := m.GetHoldDownUntilUnixNanos(); until != 0 {
			s.hold(memberKey{m.GetPool(), m.GetRoute()}, until)
		}
	}
	s.outcomes = st.GetOutcomes()
	for _, o := range s.outcomes {
		s.byRequest[o.GetRequestId()] = o
	}
	return s
}

// remember adds an outcome to the window, dropping the oldest past maxOutcomes.
func (s *store) remember(o *gwelbv1.Outcome) {
	s.outcomes = append(s.outcomes, o)
	s.byRequest[o.GetRequestId()] = o
	if n := len(s.outcomes) - maxOutcomes; n > 0 {
		for _, old := range s.outcomes[:n] {
			delete(s.byRequest, old.GetRequestId())
		}
		// Slide the window along the array: append copies it to a new
		// one when the array is full (amortised O(1) per command), and no
		// element a snapshot shares is ever written again.
		s.outcomes = s.outcomes[n:]
	}
}

// table builds the Table at s.index after the change d, from the previous
// table: pools d did not touch are reused as they are, a touched pool
// shares the blocks of members it did not touch (DESIGN.md §5.2).
func (s *store) table(prev *Table, d *delta) *Table {
	// What changed, pool by pool.
	type poolChange struct {
		settings bool     // spec may differ
		rebuild  bool     // members added or removed: lay the pool out again
		routes   []string // members changed in place
	}
	changes := map[string]*poolChange{}
	change := func(pool string) *poolChange {
		c := changes[pool]
		if c == nil {
			c = &poolChange{}
			changes[pool] = c
		}
		return c
	}
	for name := range d.pools {
		change(name).settings = true
	}
	for k, before := range d.members {
		now := s.member(k.pool, k.route)
		switch {
		case now == nil && s.pools[k.pool] == nil: // its pool went too
		case before == nil || now == nil:
			change(k.pool).rebuild = true
		case tableFieldsDiffer(before.msg, now.msg):
			c := change(k.pool)
			c.routes = append(c.routes, k.route)
		}
	}

	t := &Table{index: s.index, pools: make([]*Pool, 0, len(s.pools))}
	resort := false
	for _, old := range prev.pools {
		name := old.spec.Name
		c := changes[name]
		p := s.pools[name]
		switch {
		case c == nil:
			t.pools = append(t.pools, old)
		case p == nil:
			resort = true // removed
		default:
			np := s.buildPool(p, old, c.settings, c.rebuild, c.routes)
			resort = resort || np.spec.Prefix != old.spec.Prefix
			t.pools = append(t.pools, np)
		}
		delete(changes, name)
	}
	for _, name := range slices.Sorted(maps.Keys(changes)) { // pools new to the table
		if p := s.pools[name]; p != nil {
			t.pools = append(t.pools, s.buildPool(p, nil, true, true, nil))
			resort = true
		}
	}
	if resort {
		slices.SortFunc(t.pools, comparePrefixes)
	}
	return t
}

// comparePrefixes orders a Table's pools: longest prefix first (it wins),
// then by name, as NewTable orders TableFromState's pools.
func comparePrefixes(a, b *Pool) int {
	return cmp.Or(cmp.Compare(len(b.spec.Prefix), len(a.spec.Prefix)), cmp.Compare(a.spec.Name, b.spec.Name))
}

// tableFieldsDiffer reports whether a member's change reaches the Table.
func tableFieldsDiffer(a, b *gwelbv1.Member) bool {
	return a.GetUrl() != b.GetUrl() || a.GetWeight() != b.GetWeight() || a.GetState() != b.GetState() || a.GetVerdict() != b.GetVerdict()
}

// tableMember is the Table's form of a stored member. The parsed URL of
// prev (the member's previous form, may be nil) is reused when the URL is
// unchanged: members are validated on their way into the state.
func tableMember(m *gwelbv1.Member, prev *Member) Member {
	spec := MemberFromProto(m).WithDefaults()
	if prev != nil && prev.URL == spec.URL {
		return Member{MemberSpec: spec, Target: prev.Target}
	}
	u, _ := ParseMemberURL(spec.URL)
	return Member{MemberSpec: spec, Target: u}
}

// buildPool returns the Table's pool for p given its previous version old
// (nil when new): old itself when nothing it holds changed, a copy sharing
// old's untouched member blocks when members changed in place, a fresh
// layout when members were added or removed.
func (s *store) buildPool(p *poolRec, old *Pool, settings, rebuild bool, routes []string) *Pool {
	var spec *PoolSpec
	if settings || old == nil {
		sp := PoolFromProto(p.msg).WithDefaults()
		if old == nil || !reflect.DeepEqual(sp, old.spec) {
			spec = &sp
		}
	}
	if rebuild || old == nil {
		// Both lists are in route order: walk them together to reuse the
		// parsed URLs of the members that stay.
		members := make([]Member, len(p.routes))
		j, n := 0, old.Len()
		for i, route := range p.routes {
			for j < n && old.Member(j).Route < route {
				j++
			}
			var prev *Member
			if j < n && old.Member(j).Route == route {
				prev = old.Member(j)
			}
			members[i] = tableMember(p.members[route].msg, prev)
		}
		sp := old.specOr(spec)
		return buildPool(sp, members)
	}
	var edits []memberEdit
	for _, route := range routes {
		i, _ := old.Lookup(route)
		edits = append(edits, memberEdit{i: i, m: tableMember(p.members[route].msg, old.Member(i))})
	}
	if spec == nil && len(edits) == 0 {
		return old
	}
	return old.edited(spec, edits)
}

// specOr is spec when set, else p's settings (p may be nil only with spec set).
func (p *Pool) specOr(spec *PoolSpec) PoolSpec {
	if spec != nil {
		return *spec
	}
	return p.spec
}
