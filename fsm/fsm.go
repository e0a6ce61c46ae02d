package fsm

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// CommandVersion is the Command.version this build writes for a command
// every version applies. A command an older node would misapply is written
// with the version that introduced it (commandVersion), so during a rolling
// upgrade older nodes refuse just those (ErrVersion) and apply the rest.
const CommandVersion = 1

// MaxCommandVersion is the highest Command.version this build applies:
// version 2 added PutMember's mode, version 3 bounded probing (a pool's
// health.probers, passive observations; DESIGN.md §5.2, §5.5), version 4
// PutPool's expected settings (compare-and-set).
const MaxCommandVersion = poolCASVersion

var (
	// ErrNotFound reports a command naming a pool or member that does not exist.
	ErrNotFound = errors.New("not found")
	// ErrInvalid reports a command that is malformed or would make the table invalid.
	ErrInvalid = errors.New("invalid")
	// ErrVersion reports a command written for a newer version of the FSM.
	ErrVersion = errors.New("unsupported command version")
	// ErrConflict reports a compare-and-set PutPool whose expected
	// settings are not the pool's any more: another write changed them
	// after the writer read them.
	ErrConflict = errors.New("changed meanwhile")
)

// maxMs is the largest millisecond count that still fits a time.Duration.
const maxMs = math.MaxInt64 / int64(time.Millisecond)

// maxOutcomes bounds the window of request ids whose outcome the FSM
// remembers for exact retries (DESIGN.md §5.3). A client retries within
// seconds; 1,024 writes is far more than arrive in that time.
const maxOutcomes = 1024

// marshalOpts makes encodings byte-identical across nodes and runs, so
// snapshots of equal states can be compared byte for byte.
var marshalOpts = proto.MarshalOptions{Deterministic: true}

// FSM is gwelb's replicated state machine: it applies Commands from the Raft
// log to a State and publishes the routing Table built from it. A command
// costs what it changes (DESIGN.md §5.2): the state is indexed and changed
// in place with an undo log (store.go), and each Table shares with the one
// before it every pool and member block the command did not touch.
type FSM struct {
	publish func(*Table)

	mu sync.Mutex
	s  *store // guarded by mu

	table atomic.Pointer[Table] // read lock-free by the data plane
}

var _ raft.FSM = (*FSM)(nil)

// NewFSM returns an FSM with an empty state and an empty table at index 0.
// publish, which may be nil, receives every new Table, in index order, on
// the goroutine that applied the command and without FSM locks held (so it
// may call State or Table).
func NewFSM(publish func(*Table)) *FSM {
	f := &FSM{publish: publish, s: newStore()}
	empty, err := NewTable(0, nil)
	if err != nil {
		panic(fmt.Sprintf("fsm: empty table: %v", err)) // cannot happen: no pools, nothing to reject
	}
	f.table.Store(empty)
	return f
}

// Table returns the current routing table; it is never nil.
func (f *FSM) Table() *Table { return f.table.Load() }

// AppliedIndex is the Raft index of the last command this FSM applied.
func (f *FSM) AppliedIndex() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.s.index
}

// State returns a deep copy of the whole replicated state. It copies every
// member and observation: callers that need one member or one field use
// Member, Seeded, Balancers or NextHoldDownEnd, which cost what they return.
func (f *FSM) State() *gwelbv1.State {
	f.mu.Lock()
	st := f.s.state() // shares immutable messages: copied outside the lock
	f.mu.Unlock()
	return proto.Clone(st).(*gwelbv1.State)
}

// Member returns a copy of one member and of its observations (by node),
// or false when there is no such member.
func (f *FSM) Member(pool, route string) (*gwelbv1.Member, []*gwelbv1.Observation, bool) {
	f.mu.Lock()
	rec := f.s.member(pool, route)
	f.mu.Unlock()
	if rec == nil {
		return nil, nil, false
	}
	obs := make([]*gwelbv1.Observation, len(rec.obs))
	for i, o := range rec.obs {
		obs[i] = proto.Clone(o).(*gwelbv1.Observation)
	}
	return proto.Clone(rec.msg).(*gwelbv1.Member), obs, true
}

// Seeded reports whether the config file's seed was applied (DESIGN.md §5.4).
func (f *FSM) Seeded() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.s.seeded
}

// Balancers returns the balancer nodes (the live voters) among which each
// member's probers are chosen, sorted.
func (f *FSM) Balancers() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.s.balancers)
}

// Observers returns the live non-voters whose passive observations count, sorted.
func (f *FSM) Observers() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.s.observers)
}

// NextHoldDownEnd returns the earliest end of a flap hold-down (unix
// nanoseconds, by the proposer's clock) of any member, or false when no
// member is held down.
func (f *FSM) NextHoldDownEnd() (int64, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	next := f.s.nextHold()
	return next, next != 0
}

// AppliedEarlier is Apply's answer to a retried request whose first attempt
// was applied: the index it was applied at. Nothing is applied again.
type AppliedEarlier uint64

// Apply applies the Command in l.Data at l.Index. It returns nil,
// AppliedEarlier, or an error wrapping ErrNotFound, ErrInvalid or
// ErrVersion; a rejected command leaves the state unchanged except for the
// applied index. A command whose request_id was applied before answers what
// it answered then (exact retries, DESIGN.md §5.3).
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil // raft hands a plain FSM only commands; be safe anyway
	}
	var cmd gwelbv1.Command
	decodeErr := proto.Unmarshal(l.Data, &cmd)

	f.mu.Lock()
	if o, ok := f.s.byRequest[cmd.GetRequestId()]; ok && decodeErr == nil {
		f.s.index = l.Index
		f.mu.Unlock()
		return answerOf(o)
	}
	tbl, err := f.applyLocked(l.Index, &cmd, decodeErr)
	if id := cmd.GetRequestId(); id != "" && decodeErr == nil {
		f.s.remember(newOutcome(id, l.Index, err))
	}
	f.mu.Unlock()

	if tbl != nil && f.publish != nil {
		f.publish(tbl)
	}
	if err != nil {
		return err
	}
	return nil // an untyped nil, so Response() == nil holds
}

// newOutcome records what applying request id at index answered.
func newOutcome(id string, index uint64, err error) *gwelbv1.Outcome {
	o := &gwelbv1.Outcome{RequestId: id, Index: index}
	switch {
	case err == nil:
		return o
	case errors.Is(err, ErrNotFound):
		o.Code = gwelbv1.OutcomeCode_OUTCOME_NOT_FOUND
	case errors.Is(err, ErrVersion):
		o.Code = gwelbv1.OutcomeCode_OUTCOME_VERSION
	case errors.Is(err, ErrExists):
		o.Code = gwelbv1.OutcomeCode_OUTCOME_EXISTS
	case errors.Is(err, ErrConflict):
		o.Code = gwelbv1.OutcomeCode_OUTCOME_CONFLICT
	default:
		o.Code = gwelbv1.OutcomeCode_OUTCOME_INVALID
	}
	o.Error = err.Error()
	return o
}

// outcomeError is a remembered rejection, as errors.Is sees the original.
type outcomeError struct {
	msg  string
	kind error
}

func (e *outcomeError) Error() string        { return e.msg }
func (e *outcomeError) Is(target error) bool { return target == e.kind }

// answerOf is what Apply returns again for a remembered outcome.
func answerOf(o *gwelbv1.Outcome) any {
	switch o.GetCode() {
	case gwelbv1.OutcomeCode_OUTCOME_APPLIED:
		return AppliedEarlier(o.GetIndex())
	case gwelbv1.OutcomeCode_OUTCOME_NOT_FOUND:
		return &outcomeError{o.GetError(), ErrNotFound}
	case gwelbv1.OutcomeCode_OUTCOME_VERSION:
		return &outcomeError{o.GetError(), ErrVersion}
	case gwelbv1.OutcomeCode_OUTCOME_EXISTS:
		return &outcomeError{o.GetError(), ErrExists}
	case gwelbv1.OutcomeCode_OUTCOME_CONFLICT:
		return &outcomeError{o.GetError(), ErrConflict}
	}
	return &outcomeError{o.GetError(), ErrInvalid}
}

// applyLocked applies cmd and returns the new Table when the state changed.
func (f *FSM) applyLocked(index uint64, cmd *gwelbv1.Command, decodeErr error) (*Table, error) {
	// Raft applied the entry whatever its fate; the index says so.
	f.s.index = index
	if decodeErr != nil {
		return nil, fmt.Errorf("decode command at index %d: %w: %w", index, ErrInvalid, decodeErr)
	}
	what := describe(cmd)
	if v := cmd.GetVersion(); v > MaxCommandVersion {
		return nil, fmt.Errorf("%s: version %d, this node applies up to %d: %w", what, v, MaxCommandVersion, ErrVersion)
	}
	// Change the state in place; a rejected command is undone without trace.
	if err := applyToStore(f.s, cmd); err != nil {
		f.s.rollback()
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	d := f.s.delta()
	if d.empty() {
		f.s.rollback()  // equal values stored again: keep the old messages
		return nil, nil // a no-op publishes nothing
	}
	// The whole state must still build a Table: what the data plane cannot
	// route never enters the replicated state. Members were judged on their
	// way in, so only new pool settings can clash (two pools, one prefix).
	if len(d.pools) > 0 {
		if err := f.s.checkPools(); err != nil {
			f.s.rollback()
			return nil, fmt.Errorf("%s: %w: %w", what, ErrInvalid, err)
		}
	}
	tbl := f.s.table(f.table.Load(), d)
	f.s.commit()
	f.table.Store(tbl)
	return tbl, nil
}

// Snapshot captures the state; Persist encodes it as deterministic bytes.
// Taking it costs one pass over the members under the lock (the messages
// are shared, not copied: stored messages are immutable), so Apply never
// waits for an encoding.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &snapshot{st: f.s.state()}, nil
}

// Restore replaces the state with a snapshot's and publishes its table. A
// snapshot whose pools or members the validator rejects is refused with the
// field named and changes nothing: every way into the state (commands, the
// admin API's restore) is validated, so such a snapshot was forged or
// corrupted, and routing from it would answer 404 or worse.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return fmt.Errorf("restore: read snapshot: %w", err)
	}
	st, tbl, err := DecodeState(data)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	s := storeOf(st)

	f.mu.Lock()
	f.s = s
	f.table.Store(tbl)
	f.mu.Unlock()

	if f.publish != nil {
		f.publish(tbl)
	}
	return nil
}

// DecodeState decodes a snapshot's bytes (a raft snapshot, an operator's
// snapshot file or the table cache), puts it in the order Apply keeps and
// judges it with the validator; it returns the state and its routing Table.
func DecodeState(data []byte) (*gwelbv1.State, *Table, error) {
	st := &gwelbv1.State{}
	if err := proto.Unmarshal(data, st); err != nil {
		return nil, nil, fmt.Errorf("decode state: %w: %w", ErrInvalid, err)
	}
	if err := normalize(st); err != nil {
		return nil, nil, err
	}
	tbl, err := TableFromState(st)
	if err != nil {
		return nil, nil, fmt.Errorf("state at index %d: %w", st.GetIndex(), err)
	}
	return st, tbl, nil
}

// snapshot is the state at one index; its messages are immutable.
type snapshot struct{ st *gwelbv1.State }

// Persist encodes the snapshot and writes it to sink, cancelling the sink
// on error.
func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	data, err := marshalOpts.Marshal(s.st)
	if err == nil {
		_, err = sink.Write(data)
	}
	if err != nil {
		// The encode or write error is the one worth reporting; Cancel only cleans up.
		_ = sink.Cancel()
		return fmt.Errorf("persist snapshot %s at index %d: %w", sink.ID(), s.st.GetIndex(), err)
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("persist snapshot %s: close: %w", sink.ID(), err)
	}
	return nil
}

// Release does nothing: the snapshot holds no resources but memory.
func (s *snapshot) Release() {}

// EncodeCommand marshals c deterministically, with the lowest version that
// applies it right (commandVersion: CommandVersion for all but a PutMember
// with a mode) when c leaves Version 0. The caller's message is not
// modified.
func EncodeCommand(c *gwelbv1.Command) ([]byte, error) {
	if c == nil {
		return nil, fmt.Errorf("encode command: nil: %w", ErrInvalid)
	}
	if c.GetVersion() == 0 {
		c = proto.Clone(c).(*gwelbv1.Command)
		c.Version = commandVersion(c)
	}
	data, err := marshalOpts.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode command: %w", err)
	}
	return data, nil
}

// describe names a command for error messages.
func describe(cmd *gwelbv1.Command) string {
	switch op := cmd.GetOp().(type) {
	case *gwelbv1.Command_Seed:
		return "seed"
	case *gwelbv1.Command_PutPool:
		return "put pool " + op.PutPool.GetPool().GetName()
	case *gwelbv1.Command_RemovePool:
		return "remove pool " + op.RemovePool.GetName()
	case *gwelbv1.Command_PutMember:
		m := op.PutMember.GetMember()
		return fmt.Sprintf("put member %s/%s", m.GetPool(), m.GetRoute())
	case *gwelbv1.Command_RemoveMember:
		return fmt.Sprintf("remove member %s/%s", op.RemoveMember.GetPool(), op.RemoveMember.GetRoute())
	case *gwelbv1.Command_SetMemberState:
		return fmt.Sprintf("set member state %s/%s", op.SetMemberState.GetPool(), op.SetMemberState.GetRoute())
	case *gwelbv1.Command_SetBalancers:
		return "set balancers"
	case *gwelbv1.Command_Observe:
		o := op.Observe.GetObservation()
		return fmt.Sprintf("observe %s/%s by %s", o.GetPool(), o.GetRoute(), o.GetNode())
	}
	return "command"
}

// applyToStore applies cmd to s in place, logging how to undo each step.
// On error s may be half changed: the caller rolls it back.
func applyToStore(s *store, cmd *gwelbv1.Command) error {
	now := cmd.GetUnixNanos()
	var err error
	switch op := cmd.GetOp().(type) {
	case *gwelbv1.Command_Seed:
		err = applySeed(s, op.Seed, now)
	case *gwelbv1.Command_PutPool:
		err = putPool(s, op.PutPool.GetPool(), op.PutPool.GetExpected(), now)
	case *gwelbv1.Command_RemovePool:
		err = removePool(s, op.RemovePool.GetName())
	case *gwelbv1.Command_PutMember:
		err = putMember(s, op.PutMember.GetMember(), op.PutMember.GetMode(), now)
	case *gwelbv1.Command_RemoveMember:
		err = removeMember(s, op.RemoveMember.GetPool(), op.RemoveMember.GetRoute())
	case *gwelbv1.Command_SetMemberState:
		err = setMemberState(s, op.SetMemberState.GetPool(), op.SetMemberState.GetRoute(), op.SetMemberState.GetState())
	case *gwelbv1.Command_SetBalancers:
		err = setBalancers(s, op.SetBalancers.GetNodes(), op.SetBalancers.GetObservers(), now)
	case *gwelbv1.Command_Observe:
		err = observe(s, op.Observe.GetObservation(), now)
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
	releaseHolds(s, now)
	return nil
}

// applySeed installs the config file's pools and members once. A pool or
// member that already exists (an operator was quicker than the seed) is
// kept as it is.
func applySeed(s *store, seed *gwelbv1.Seed, now int64) error {
	if s.seeded {
		return nil // seeded before: never overwrite what operators changed since
	}
	s.setSeeded()
	pools := map[string]bool{}
	for _, p := range seed.GetPools() {
		if err := validatePool(p); err != nil {
			return err
		}
		if pools[p.GetName()] {
			return fmt.Errorf("pool %s listed twice: %w", p.GetName(), ErrInvalid)
		}
		pools[p.GetName()] = true
		if s.pools[p.GetName()] == nil {
			s.setPoolMsg(p.GetName(), proto.Clone(p).(*gwelbv1.Pool))
		}
	}
	members := map[memberKey]bool{}
	for _, m := range seed.GetMembers() {
		if err := validateMember(m); err != nil {
			return fmt.Errorf("member %s/%s: %w", m.GetPool(), m.GetRoute(), err)
		}
		k := memberKey{m.GetPool(), m.GetRoute()}
		if members[k] {
			return fmt.Errorf("member %s/%s listed twice: %w", k.pool, k.route, ErrInvalid)
		}
		members[k] = true
		if s.pools[k.pool] == nil {
			return fmt.Errorf("member %s/%s: pool %s %w", k.pool, k.route, k.pool, ErrNotFound)
		}
		if s.member(k.pool, k.route) == nil {
			s.setMember(k, &memberRec{msg: storedMember(m, now)})
		}
	}
	return nil
}

// validatePool judges a pool of a command with the one validator.
func validatePool(p *gwelbv1.Pool) error {
	if p == nil {
		return fmt.Errorf("no pool: %w", ErrInvalid)
	}
	return ValidatePool(PoolFromProto(p))
}

// validateMember judges a member of a command with the one validator.
func validateMember(m *gwelbv1.Member) error {
	if m == nil {
		return fmt.Errorf("no member: %w", ErrInvalid)
	}
	return ValidateMember(MemberFromProto(m))
}

// storedMember returns the stored form of a member the operator described: a
// new member is UP until the balancers observe otherwise.
func storedMember(m *gwelbv1.Member, now int64) *gwelbv1.Member {
	c := operatorFields(m)
	verdictFields{verdict: gwelbv1.Verdict_VERDICT_UP, since: now}.applyTo(c)
	return c
}

// operatorFields copies m, normalising weight 0 to NewTable's default 1 so
// the state shows the weight the member really has.
func operatorFields(m *gwelbv1.Member) *gwelbv1.Member {
	c := proto.Clone(m).(*gwelbv1.Member)
	if c.Weight == 0 {
		c.Weight = 1
	}
	return c
}

func putPool(s *store, p, expected *gwelbv1.Pool, now int64) error {
	if err := validatePool(p); err != nil {
		return err
	}
	if expected != nil {
		cur := s.pools[p.GetName()]
		if cur == nil {
			return fmt.Errorf("pool %s %w", p.GetName(), ErrNotFound)
		}
		if !samePoolSettings(cur.msg, expected) {
			return fmt.Errorf("pool %s: its settings %w: read them again", p.GetName(), ErrConflict)
		}
	}
	existed := s.pools[p.GetName()] != nil
	oldK := 0
	if existed {
		oldK = int(s.pools[p.GetName()].msg.GetHealth().GetProbers())
	}
	s.setPoolMsg(p.GetName(), proto.Clone(p).(*gwelbv1.Pool))
	// A new health.probers moves the pool's members to other probers: the
	// one case where PutPool visits the pool's members (DESIGN.md §5.5).
	if k := int(p.GetHealth().GetProbers()); existed && k != oldK {
		pr := s.pools[p.GetName()]
		for _, route := range pr.routes {
			reassign(s, pr, route, Probers(p.GetName(), route, oldK, s.balancers), Probers(p.GetName(), route, k, s.balancers), now)
		}
	}
	return nil
}

// samePoolSettings tells whether two pools have the same settings,
// members aside, as the one schema sees them (a reader's copy went through
// PoolFromProto and back).
func samePoolSettings(a, b *gwelbv1.Pool) bool {
	sa, sb := PoolFromProto(a), PoolFromProto(b)
	sa.Members, sb.Members = nil, nil
	return proto.Equal(PoolToProto(sa), PoolToProto(sb))
}

func removePool(s *store, name string) error {
	if s.pools[name] == nil {
		return fmt.Errorf("pool %w", ErrNotFound)
	}
	s.removePool(name)
	return nil
}

func putMember(s *store, m *gwelbv1.Member, mode gwelbv1.PutMemberMode, now int64) error {
	if mode != gwelbv1.PutMemberMode_PUT_MEMBER_MODE_UPSERT {
		var old *gwelbv1.Member
		if rec := s.member(m.GetPool(), m.GetRoute()); rec != nil {
			old = rec.msg
		}
		var err error
		if m, err = resolvePutMode(m, mode, old); err != nil {
			return err
		}
	}
	if err := validateMember(m); err != nil {
		return err
	}
	if s.pools[m.GetPool()] == nil {
		return fmt.Errorf("pool %s %w", m.GetPool(), ErrNotFound)
	}
	k := memberKey{m.GetPool(), m.GetRoute()}
	old := s.member(k.pool, k.route)
	switch {
	case old == nil:
		s.setMember(k, &memberRec{msg: storedMember(m, now)})
	case old.msg.GetUrl() == m.GetUrl():
		// The verdict is the cluster's, not the operator's: keep it.
		c := operatorFields(m)
		verdictOf(old.msg).applyTo(c)
		s.setMember(k, &memberRec{msg: c, obs: old.obs})
	default:
		// A new URL is a different server: what was observed of the old
		// one says nothing about it.
		c := storedMember(m, now)
		c.VerdictCause = "url changed"
		s.setMember(k, &memberRec{msg: c})
	}
	return nil
}

func removeMember(s *store, pool, route string) error {
	if s.member(pool, route) == nil {
		return fmt.Errorf("member %w", ErrNotFound)
	}
	s.setMember(memberKey{pool, route}, nil)
	return nil
}

func setMemberState(s *store, pool, route string, state gwelbv1.AdminState) error {
	if AdminStateFromProto(state).Proto() != state {
		return fmt.Errorf("admin state %d: want active, drain or disabled: %w", state, ErrInvalid)
	}
	old := s.member(pool, route)
	if old == nil {
		return fmt.Errorf("member %w", ErrNotFound)
	}
	c := proto.Clone(old.msg).(*gwelbv1.Member)
	c.State = state
	s.setMember(memberKey{pool, route}, &memberRec{msg: c, obs: old.obs})
	return nil
}

// setBalancers records the balancer nodes (live voters) and the live
// non-voters, forgets what nodes no longer entitled to observe a member
// observed of it and re-derives every verdict, since each member's probers
// may have moved. It is the one command that visits every member; a member
// whose probers and verdict stand costs a count of its observations.
func setBalancers(s *store, nodes, observers []string, now int64) error {
	if slices.Contains(nodes, "") || slices.Contains(observers, "") {
		return fmt.Errorf("empty node name: %w", ErrInvalid)
	}
	set := sortedSet(nodes)
	obsSet := sortedSet(observers)
	before := s.balancers
	if !slices.Equal(set, s.balancers) || !slices.Equal(obsSet, s.observers) {
		s.setBalancers(set, obsSet)
	}
	for _, name := range s.names() {
		p := s.pools[name]
		k := int(p.msg.GetHealth().GetProbers())
		for _, route := range p.routes {
			probers := Probers(name, route, k, set)
			old := probers
			if !slices.Equal(before, set) {
				old = Probers(name, route, k, before)
			}
			reassign(s, p, route, old, probers, now)
		}
	}
	return nil
}

// sortedSet returns names sorted without duplicates, in a new slice.
func sortedSet(names []string) []string {
	set := slices.Clone(names)
	slices.Sort(set)
	return slices.Compact(set)
}

// reassign makes one member's observations and verdict follow a change of
// its probers from old to probers (equal when they did not move): it
// drops the observations of nodes no longer entitled to one (keepObservation)
// and re-derives the verdict, giving the probers new to the member time to
// judge (deriveVerdict's pending).
func reassign(s *store, p *poolRec, route string, old, probers []string, now int64) {
	rec := p.members[route]
	next := rec
	keep := func(o *gwelbv1.Observation) bool { return keepObservation(s, probers, o) }
	if len(s.balancers) > 0 && !allFunc(rec.obs, keep) {
		next = &memberRec{msg: rec.msg, obs: slices.DeleteFunc(slices.Clone(rec.obs), func(o *gwelbv1.Observation) bool { return !keep(o) })}
	}
	pending := 0
	if len(old) > 0 {
		for _, n := range probers {
			if !isMember(old, n) && !slices.ContainsFunc(next.obs, func(o *gwelbv1.Observation) bool { return o.GetNode() == n }) {
				pending++
			}
		}
	}
	next = rederiveWith(s, p, next, probers, pending, now)
	if next != rec {
		s.setMember(memberKey{p.msg.GetName(), route}, next)
	}
}

// keepObservation reports whether o may stay on record with a member whose
// probers are probers: a prober's own, or a passive one of a live node
// (balancer or observer). With no balancer set every observation stays.
func keepObservation(s *store, probers []string, o *gwelbv1.Observation) bool {
	if len(s.balancers) == 0 || isMember(probers, o.GetNode()) {
		return true
	}
	return o.GetPassive() && (isMember(s.balancers, o.GetNode()) || isMember(s.observers, o.GetNode()))
}

func allFunc[T any](xs []T, f func(T) bool) bool {
	for _, x := range xs {
		if !f(x) {
			return false
		}
	}
	return true
}

// observe records a node's latest view of a member and re-derives its
// verdict. A node has a say on a member when it is one of its probers, or,
// with a passive observation, when it is a live balancer or non-voter
// (DESIGN.md §5.5); other observations are ignored.
func observe(s *store, o *gwelbv1.Observation, now int64) error {
	if o == nil {
		return fmt.Errorf("no observation: %w", ErrInvalid)
	}
	if o.GetNode() == "" {
		return fmt.Errorf("observation without node: %w", ErrInvalid)
	}
	rec := s.member(o.GetPool(), o.GetRoute())
	if rec == nil {
		return fmt.Errorf("member %w", ErrNotFound)
	}
	p := s.pools[o.GetPool()]
	probers := s.probersOf(p, o.GetRoute())
	if !keepObservation(s, probers, o) {
		return nil // not (or no longer) entitled to observe this member: it has no say
	}
	c := proto.Clone(o).(*gwelbv1.Observation)
	j, ok := slices.BinarySearchFunc(rec.obs, o.GetNode(), func(x *gwelbv1.Observation, node string) int { return cmp.Compare(x.GetNode(), node) })
	var obs []*gwelbv1.Observation
	switch {
	case !ok:
		obs = slices.Insert(slices.Clone(rec.obs), j, c)
	case o.GetUnixNanos() < rec.obs[j].GetUnixNanos():
		return nil // reordered or replayed: the node has a newer view on record
	default:
		obs = slices.Clone(rec.obs)
		obs[j] = c
	}
	s.setMember(memberKey{o.GetPool(), o.GetRoute()}, rederiveWith(s, p, &memberRec{msg: rec.msg, obs: obs}, probers, 0, now))
	return nil
}

// probersOf returns the probers of member route of pool p (Probers).
func (s *store) probersOf(p *poolRec, route string) []string {
	return Probers(p.msg.GetName(), route, int(p.msg.GetHealth().GetProbers()), s.balancers)
}

// releaseHolds re-derives every member whose hold-down has ended by now:
// the hold-downs are kept by their end, so this costs nothing when none is
// due, however many members are held.
func releaseHolds(s *store, now int64) {
	for _, k := range s.due(now) {
		p := s.pools[k.pool]
		rec := p.members[k.route]
		next := rederive(s, p, rec, now)
		if next == rec {
			if until := rec.msg.GetHoldDownUntilUnixNanos(); until != 0 {
				s.hold(k, until) // cannot happen: an ended hold is released
			}
			continue
		}
		s.setMember(k, next)
	}
}

// rederive returns rec with its verdict recomputed at command time now,
// or rec itself when the verdict stands.
func rederive(s *store, p *poolRec, rec *memberRec, now int64) *memberRec {
	return rederiveWith(s, p, rec, s.probersOf(p, rec.msg.GetRoute()), 0, now)
}

// rederiveWith is rederive with the member's probers given, and pending of
// them new to it (deriveVerdict).
func rederiveWith(s *store, p *poolRec, rec *memberRec, probers []string, pending int, now int64) *memberRec {
	m := rec.msg
	// deriveVerdict changes nothing for a member held down until after
	// now, or not held and already judged as its observations say: tell
	// these apart without copying anything (SetBalancers asks for all).
	if until := m.GetHoldDownUntilUnixNanos(); until != 0 {
		if now < until {
			return rec
		}
	} else if countObservations(rec.obs, probers).verdict() == m.GetVerdict() {
		return rec
	}
	cur := verdictOf(m)
	next := deriveVerdict(cur, rec.obs, probers, pending, p.msg.GetHealth(), now)
	if next.equal(cur) {
		return rec
	}
	c := proto.Clone(m).(*gwelbv1.Member)
	next.applyTo(c)
	return &memberRec{msg: c, obs: rec.obs}
}

// The state's slices are kept sorted so that lookups are binary searches
// and snapshots are deterministic without sorting at Persist time.

func comparePools(a, b *gwelbv1.Pool) int { return cmp.Compare(a.GetName(), b.GetName()) }

func compareMembers(a, b *gwelbv1.Member) int {
	return cmp.Or(cmp.Compare(a.GetPool(), b.GetPool()), cmp.Compare(a.GetRoute(), b.GetRoute()))
}

func compareObservations(a, b *gwelbv1.Observation) int {
	return cmp.Or(cmp.Compare(a.GetPool(), b.GetPool()), cmp.Compare(a.GetRoute(), b.GetRoute()), cmp.Compare(a.GetNode(), b.GetNode()))
}

// normalize sorts a restored state as Apply keeps it and rejects duplicate
// keys and observations of members that do not exist, which no sequence of
// commands can produce.
func normalize(st *gwelbv1.State) error {
	slices.SortFunc(st.Pools, comparePools)
	slices.SortFunc(st.Members, compareMembers)
	slices.SortFunc(st.Observations, compareObservations)
	slices.Sort(st.Balancers)
	st.Balancers = slices.Compact(st.Balancers)
	slices.Sort(st.Observers)
	st.Observers = slices.Compact(st.Observers)
	for i := 1; i < len(st.Pools); i++ {
		if comparePools(st.Pools[i-1], st.Pools[i]) == 0 {
			return fmt.Errorf("pool %s twice: %w", st.Pools[i].GetName(), ErrInvalid)
		}
	}
	for i := 1; i < len(st.Members); i++ {
		if compareMembers(st.Members[i-1], st.Members[i]) == 0 {
			return fmt.Errorf("member %s/%s twice: %w", st.Members[i].GetPool(), st.Members[i].GetRoute(), ErrInvalid)
		}
	}
	for i := 1; i < len(st.Observations); i++ {
		if o := st.Observations[i]; compareObservations(st.Observations[i-1], o) == 0 {
			return fmt.Errorf("observation %s/%s by %s twice: %w", o.GetPool(), o.GetRoute(), o.GetNode(), ErrInvalid)
		}
	}
	// Both lists are sorted: walk them together.
	mi := 0
	for _, o := range st.Observations {
		for mi < len(st.Members) && cmp.Or(cmp.Compare(st.Members[mi].GetPool(), o.GetPool()), cmp.Compare(st.Members[mi].GetRoute(), o.GetRoute())) < 0 {
			mi++
		}
		if mi == len(st.Members) || st.Members[mi].GetPool() != o.GetPool() || st.Members[mi].GetRoute() != o.GetRoute() {
			return fmt.Errorf("observation %s/%s by %s: no such member: %w", o.GetPool(), o.GetRoute(), o.GetNode(), ErrInvalid)
		}
	}
	if len(st.Outcomes) > maxOutcomes {
		st.Outcomes = st.Outcomes[len(st.Outcomes)-maxOutcomes:]
	}
	return nil
}
