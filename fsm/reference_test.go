package fsm

// The reference model: Apply as it was before the state was indexed (issue
// 13), each command applied to a whole copy of the State, compared with
// proto.Equal and judged by building the whole Table. TestApplyMatchesReference
// checks that the indexed FSM answers, stores and routes exactly as this
// model does, command after command.

import (
	"cmp"
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"

	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// refFSM is the reference FSM: a State and the Table last built from it.
type refFSM struct {
	st       *gwelbv1.State
	table    *Table
	outcomes map[string]*gwelbv1.Outcome
}

func newRefFSM() *refFSM {
	t, _ := NewTable(0, nil)
	return &refFSM{st: &gwelbv1.State{}, table: t, outcomes: map[string]*gwelbv1.Outcome{}}
}

// apply is the old FSM.Apply for a decoded command at index; it returns
// the answer and whether a table was published.
func (f *refFSM) apply(index uint64, cmd *gwelbv1.Command, decodeErr error) (any, bool) {
	if o, ok := f.outcomes[cmd.GetRequestId()]; ok && decodeErr == nil {
		f.st.Index = index
		return answerOf(o), false
	}
	published, err := f.applyLocked(index, cmd, decodeErr)
	if id := cmd.GetRequestId(); id != "" && decodeErr == nil {
		o := newOutcome(id, index, err)
		f.st.Outcomes = append(f.st.Outcomes, o)
		f.outcomes[id] = o
		if n := len(f.st.Outcomes) - maxOutcomes; n > 0 {
			for _, old := range f.st.Outcomes[:n] {
				delete(f.outcomes, old.GetRequestId())
			}
			f.st.Outcomes = slices.Clone(f.st.Outcomes[n:])
		}
	}
	if err != nil {
		return err, published
	}
	return nil, published
}

func (f *refFSM) applyLocked(index uint64, cmd *gwelbv1.Command, decodeErr error) (bool, error) {
	f.st.Index = index
	if decodeErr != nil {
		return false, fmt.Errorf("decode command at index %d: %w: %w", index, ErrInvalid, decodeErr)
	}
	what := describe(cmd)
	if v := cmd.GetVersion(); v > MaxCommandVersion {
		return false, fmt.Errorf("%s: version %d, this node applies up to %d: %w", what, v, MaxCommandVersion, ErrVersion)
	}
	next := proto.Clone(f.st).(*gwelbv1.State)
	if err := applyCommand(next, cmd); err != nil {
		return false, fmt.Errorf("%s: %w", what, err)
	}
	if proto.Equal(next, f.st) {
		return false, nil
	}
	tbl, err := TableFromState(next)
	if err != nil {
		return false, fmt.Errorf("%s: %w: %w", what, ErrInvalid, err)
	}
	f.st = next
	f.table = tbl
	return true, nil
}

// applyCommand applies cmd to st in place, as Apply did before the state
// was indexed (other tests, plan_test.go's, apply commands to a State with
// it). On error st may be half changed: the caller works on a copy. A new
// op goes here as well as in applyToStore, or TestApplyMatchesReference
// reports the difference.
func applyCommand(st *gwelbv1.State, cmd *gwelbv1.Command) error {
	now := cmd.GetUnixNanos()
	var err error
	switch op := cmd.GetOp().(type) {
	case *gwelbv1.Command_Seed:
		err = refApplySeed(st, op.Seed, now)
	case *gwelbv1.Command_PutPool:
		err = refPutPool(st, op.PutPool.GetPool(), op.PutPool.GetExpected(), now)
	case *gwelbv1.Command_RemovePool:
		err = refRemovePool(st, op.RemovePool.GetName())
	case *gwelbv1.Command_PutMember:
		m := op.PutMember.GetMember()
		var old *gwelbv1.Member
		if i, ok := findMember(st, m.GetPool(), m.GetRoute()); ok {
			old = st.Members[i]
		}
		if m, err = resolvePutMode(m, op.PutMember.GetMode(), old); err == nil {
			err = refPutMember(st, m, now)
		}
	case *gwelbv1.Command_RemoveMember:
		err = refRemoveMember(st, op.RemoveMember.GetPool(), op.RemoveMember.GetRoute())
	case *gwelbv1.Command_SetMemberState:
		err = refSetMemberState(st, op.SetMemberState.GetPool(), op.SetMemberState.GetRoute(), op.SetMemberState.GetState())
	case *gwelbv1.Command_SetBalancers:
		err = refSetBalancers(st, op.SetBalancers.GetNodes(), op.SetBalancers.GetObservers(), now)
	case *gwelbv1.Command_Observe:
		err = refObserve(st, op.Observe.GetObservation(), now)
	case nil:
		// An operation this version does not know decodes as none at all.
		err = fmt.Errorf("no operation: %w", ErrInvalid)
	default:
		err = fmt.Errorf("operation %T: %w", op, ErrInvalid)
	}
	if err != nil {
		return err
	}
	// Probers report only changes, so a member whose hold-down ended may
	// never be observed again: any command past the end releases it.
	refReleaseHolds(st, now)
	return nil
}

// applySeed installs the config file's pools and members once. A pool or
// member that already exists (an operator was quicker than the seed) is
// kept as it is.
func refApplySeed(st *gwelbv1.State, seed *gwelbv1.Seed, now int64) error {
	if st.GetSeeded() {
		return nil // seeded before: never overwrite what operators changed since
	}
	st.Seeded = true
	pools := map[string]bool{}
	for _, p := range seed.GetPools() {
		if err := validatePool(p); err != nil {
			return err
		}
		if pools[p.GetName()] {
			return fmt.Errorf("pool %s listed twice: %w", p.GetName(), ErrInvalid)
		}
		pools[p.GetName()] = true
		if i, ok := findPool(st, p.GetName()); !ok {
			st.Pools = slices.Insert(st.Pools, i, proto.Clone(p).(*gwelbv1.Pool))
		}
	}
	type key struct{ pool, route string }
	members := map[key]bool{}
	for _, m := range seed.GetMembers() {
		if err := validateMember(m); err != nil {
			return fmt.Errorf("member %s/%s: %w", m.GetPool(), m.GetRoute(), err)
		}
		k := key{m.GetPool(), m.GetRoute()}
		if members[k] {
			return fmt.Errorf("member %s/%s listed twice: %w", k.pool, k.route, ErrInvalid)
		}
		members[k] = true
		if _, ok := findPool(st, k.pool); !ok {
			return fmt.Errorf("member %s/%s: pool %s %w", k.pool, k.route, k.pool, ErrNotFound)
		}
		if i, ok := findMember(st, k.pool, k.route); !ok {
			st.Members = slices.Insert(st.Members, i, storedMember(m, now))
		}
	}
	return nil
}

func refPutPool(st *gwelbv1.State, p, expected *gwelbv1.Pool, now int64) error {
	if err := validatePool(p); err != nil {
		return err
	}
	c := proto.Clone(p).(*gwelbv1.Pool)
	i, ok := findPool(st, p.GetName())
	if expected != nil && !ok {
		return ErrNotFound
	}
	if expected != nil && !samePoolSettings(st.Pools[i], expected) {
		return ErrConflict
	}
	if !ok {
		st.Pools = slices.Insert(st.Pools, i, c)
		return nil
	}
	oldK := int(st.Pools[i].GetHealth().GetProbers())
	st.Pools[i] = c
	if k := int(c.GetHealth().GetProbers()); k != oldK {
		lo, hi := memberRange(st, p.GetName())
		for mi := lo; mi < hi; mi++ {
			m := st.Members[mi]
			refReassign(st, m.GetPool(), m.GetRoute(), Probers(m.GetPool(), m.GetRoute(), oldK, st.Balancers), Probers(m.GetPool(), m.GetRoute(), k, st.Balancers), now)
		}
	}
	return nil
}

func refRemovePool(st *gwelbv1.State, name string) error {
	i, ok := findPool(st, name)
	if !ok {
		return fmt.Errorf("pool %w", ErrNotFound)
	}
	st.Pools = slices.Delete(st.Pools, i, i+1)
	lo, hi := memberRange(st, name)
	st.Members = slices.Delete(st.Members, lo, hi)
	st.Observations = slices.DeleteFunc(st.Observations, func(o *gwelbv1.Observation) bool { return o.GetPool() == name })
	return nil
}

func refPutMember(st *gwelbv1.State, m *gwelbv1.Member, now int64) error {
	if err := validateMember(m); err != nil {
		return err
	}
	if _, ok := findPool(st, m.GetPool()); !ok {
		return fmt.Errorf("pool %s %w", m.GetPool(), ErrNotFound)
	}
	i, ok := findMember(st, m.GetPool(), m.GetRoute())
	if !ok {
		st.Members = slices.Insert(st.Members, i, storedMember(m, now))
		return nil
	}
	old := st.Members[i]
	if old.GetUrl() == m.GetUrl() {
		// The verdict is the cluster's, not the operator's: keep it.
		c := operatorFields(m)
		verdictOf(old).applyTo(c)
		st.Members[i] = c
		return nil
	}
	// A new URL is a different server: what was observed of the old one
	// says nothing about it.
	c := storedMember(m, now)
	c.VerdictCause = "url changed"
	st.Members[i] = c
	refDropObservations(st, m.GetPool(), m.GetRoute())
	return nil
}

func refRemoveMember(st *gwelbv1.State, pool, route string) error {
	i, ok := findMember(st, pool, route)
	if !ok {
		return fmt.Errorf("member %w", ErrNotFound)
	}
	st.Members = slices.Delete(st.Members, i, i+1)
	refDropObservations(st, pool, route)
	return nil
}

func refSetMemberState(st *gwelbv1.State, pool, route string, state gwelbv1.AdminState) error {
	if AdminStateFromProto(state).Proto() != state {
		return fmt.Errorf("admin state %d: want active, drain or disabled: %w", state, ErrInvalid)
	}
	i, ok := findMember(st, pool, route)
	if !ok {
		return fmt.Errorf("member %w", ErrNotFound)
	}
	st.Members[i].State = state
	return nil
}

// setBalancers records the balancers and observers, forgets what nodes no
// longer entitled to observe a member observed of it and re-derives every
// verdict, since each member's probers may have moved.
func refSetBalancers(st *gwelbv1.State, nodes, observers []string, now int64) error {
	if slices.Contains(nodes, "") || slices.Contains(observers, "") {
		return fmt.Errorf("empty node name: %w", ErrInvalid)
	}
	set := slices.Compact(slices.Sorted(slices.Values(nodes)))
	obsSet := slices.Compact(slices.Sorted(slices.Values(observers)))
	before := st.Balancers
	st.Balancers, st.Observers = set, obsSet
	for i := 0; i < len(st.Members); i++ {
		m := st.Members[i]
		k := refProbersK(st, m.GetPool())
		refReassign(st, m.GetPool(), m.GetRoute(), Probers(m.GetPool(), m.GetRoute(), k, before), Probers(m.GetPool(), m.GetRoute(), k, set), now)
	}
	return nil
}

func refProbersK(st *gwelbv1.State, pool string) int {
	pi, _ := findPool(st, pool)
	return int(st.Pools[pi].GetHealth().GetProbers())
}

// refEntitled is whether node's observation o of a member with the given
// probers may be on record.
func refEntitled(st *gwelbv1.State, probers []string, o *gwelbv1.Observation) bool {
	if len(st.Balancers) == 0 || slices.Contains(probers, o.GetNode()) {
		return true
	}
	return o.GetPassive() && (slices.Contains(st.Balancers, o.GetNode()) || slices.Contains(st.Observers, o.GetNode()))
}

// refReassign drops the observations of a member no longer entitled and
// re-derives its verdict, the probers new to it pending.
func refReassign(st *gwelbv1.State, pool, route string, old, probers []string, now int64) {
	st.Observations = slices.DeleteFunc(st.Observations, func(o *gwelbv1.Observation) bool {
		return o.GetPool() == pool && o.GetRoute() == route && !refEntitled(st, probers, o)
	})
	pending := 0
	if len(old) > 0 {
		for _, n := range probers {
			if _, heard := findObservation(st, pool, route, n); !slices.Contains(old, n) && !heard {
				pending++
			}
		}
	}
	mi, _ := findMember(st, pool, route)
	refRederiveWith(st, mi, pending, now)
}

// observe records a node's latest view of a member and re-derives its verdict.
func refObserve(st *gwelbv1.State, o *gwelbv1.Observation, now int64) error {
	if o == nil {
		return fmt.Errorf("no observation: %w", ErrInvalid)
	}
	if o.GetNode() == "" {
		return fmt.Errorf("observation without node: %w", ErrInvalid)
	}
	mi, ok := findMember(st, o.GetPool(), o.GetRoute())
	if !ok {
		return fmt.Errorf("member %w", ErrNotFound)
	}
	if !refEntitled(st, Probers(o.GetPool(), o.GetRoute(), refProbersK(st, o.GetPool()), st.Balancers), o) {
		return nil // not (or no longer) entitled: it has no say
	}
	c := proto.Clone(o).(*gwelbv1.Observation)
	j, ok := findObservation(st, o.GetPool(), o.GetRoute(), o.GetNode())
	switch {
	case !ok:
		st.Observations = slices.Insert(st.Observations, j, c)
	case o.GetUnixNanos() < st.Observations[j].GetUnixNanos():
		return nil // reordered or replayed: the node has a newer view on record
	default:
		st.Observations[j] = c
	}
	refRederive(st, mi, now)
	return nil
}

// releaseHolds re-derives every member whose hold-down has ended by now.
func refReleaseHolds(st *gwelbv1.State, now int64) {
	for i, m := range st.Members {
		if m.GetHoldDownUntilUnixNanos() != 0 && now >= m.GetHoldDownUntilUnixNanos() {
			refRederive(st, i, now)
		}
	}
}

// rederive recomputes the verdict of member i at command time now.
func refRederive(st *gwelbv1.State, i int, now int64) { refRederiveWith(st, i, 0, now) }

func refRederiveWith(st *gwelbv1.State, i, pending int, now int64) {
	m := st.Members[i]
	var hc *gwelbv1.HealthCheck
	if pi, ok := findPool(st, m.GetPool()); ok {
		hc = st.Pools[pi].GetHealth()
	}
	lo, hi := observationRange(st, m.GetPool(), m.GetRoute())
	cur := verdictOf(m)
	probers := Probers(m.GetPool(), m.GetRoute(), int(hc.GetProbers()), st.Balancers)
	if next := deriveVerdict(cur, st.Observations[lo:hi], probers, pending, hc, now); !next.equal(cur) {
		next.applyTo(m)
	}
}

func refDropObservations(st *gwelbv1.State, pool, route string) {
	lo, hi := observationRange(st, pool, route)
	st.Observations = slices.Delete(st.Observations, lo, hi)
}

// State-level lookups of the reference model (and of the invariant checks).

func findPool(st *gwelbv1.State, name string) (int, bool) {
	return slices.BinarySearchFunc(st.Pools, name, func(p *gwelbv1.Pool, name string) int { return cmp.Compare(p.GetName(), name) })
}

func findMember(st *gwelbv1.State, pool, route string) (int, bool) {
	return slices.BinarySearchFunc(st.Members, &gwelbv1.Member{Pool: pool, Route: route}, compareMembers)
}

func findObservation(st *gwelbv1.State, pool, route, node string) (int, bool) {
	return slices.BinarySearchFunc(st.Observations, &gwelbv1.Observation{Pool: pool, Route: route, Node: node}, compareObservations)
}

// memberRange returns the bounds of pool's members in st.Members.
func memberRange(st *gwelbv1.State, pool string) (lo, hi int) {
	lo, _ = slices.BinarySearchFunc(st.Members, pool, func(m *gwelbv1.Member, pool string) int { return cmp.Compare(m.GetPool(), pool) })
	hi = lo
	for hi < len(st.Members) && st.Members[hi].GetPool() == pool {
		hi++
	}
	return lo, hi
}

// observationRange returns the bounds of one member's observations in st.Observations.
func observationRange(st *gwelbv1.State, pool, route string) (lo, hi int) {
	lo, _ = findObservation(st, pool, route, "")
	hi = lo
	for hi < len(st.Observations) && st.Observations[hi].GetPool() == pool && st.Observations[hi].GetRoute() == route {
		hi++
	}
	return lo, hi
}
