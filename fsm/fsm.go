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

// CommandVersion is the Command.version this build writes and the highest it applies.
const CommandVersion = 1

var (
	// ErrNotFound reports a command naming a pool or member that does not exist.
	ErrNotFound = errors.New("not found")
	// ErrInvalid reports a command that is malformed or would make the table invalid.
	ErrInvalid = errors.New("invalid")
	// ErrVersion reports a command written for a newer version of the FSM.
	ErrVersion = errors.New("unsupported command version")
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
// log to a State and publishes the routing Table built from it.
type FSM struct {
	publish func(*Table)

	mu       sync.Mutex
	st       *gwelbv1.State              // guarded by mu; kept in the sort order State documents
	outcomes map[string]*gwelbv1.Outcome // guarded by mu; st.Outcomes by request id

	table atomic.Pointer[Table] // read lock-free by the data plane
}

var _ raft.FSM = (*FSM)(nil)

// NewFSM returns an FSM with an empty state and an empty table at index 0.
// publish, which may be nil, receives every new Table, in index order, on
// the goroutine that applied the command and without FSM locks held (so it
// may call State or Table).
func NewFSM(publish func(*Table)) *FSM {
	f := &FSM{publish: publish, st: &gwelbv1.State{}, outcomes: map[string]*gwelbv1.Outcome{}}
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
	return f.st.GetIndex()
}

// State returns a deep copy of the whole replicated state.
func (f *FSM) State() *gwelbv1.State {
	f.mu.Lock()
	defer f.mu.Unlock()
	return proto.Clone(f.st).(*gwelbv1.State)
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
	if o, ok := f.outcomes[cmd.GetRequestId()]; ok && decodeErr == nil {
		f.st.Index = l.Index
		f.mu.Unlock()
		return answerOf(o)
	}
	tbl, err := f.applyLocked(l.Index, &cmd, decodeErr)
	if id := cmd.GetRequestId(); id != "" && decodeErr == nil {
		f.remember(newOutcome(id, l.Index, err))
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

// remember adds an outcome to the window, dropping the oldest past maxOutcomes.
func (f *FSM) remember(o *gwelbv1.Outcome) {
	f.st.Outcomes = append(f.st.Outcomes, o)
	f.outcomes[o.GetRequestId()] = o
	if n := len(f.st.Outcomes) - maxOutcomes; n > 0 {
		for _, old := range f.st.Outcomes[:n] {
			delete(f.outcomes, old.GetRequestId())
		}
		f.st.Outcomes = slices.Clone(f.st.Outcomes[n:])
	}
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
	}
	return &outcomeError{o.GetError(), ErrInvalid}
}

// applyLocked applies cmd and returns the new Table when the state changed.
func (f *FSM) applyLocked(index uint64, cmd *gwelbv1.Command, decodeErr error) (*Table, error) {
	// Raft applied the entry whatever its fate; the index says so.
	f.st.Index = index
	if decodeErr != nil {
		return nil, fmt.Errorf("decode command at index %d: %w: %w", index, ErrInvalid, decodeErr)
	}
	what := describe(cmd)
	if v := cmd.GetVersion(); v > CommandVersion {
		return nil, fmt.Errorf("%s: version %d, this node applies up to %d: %w", what, v, CommandVersion, ErrVersion)
	}
	// Work on a copy so that a rejected command leaves no trace.
	next := proto.Clone(f.st).(*gwelbv1.State)
	if err := applyCommand(next, cmd); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if proto.Equal(next, f.st) {
		return nil, nil // a no-op publishes nothing
	}
	// Building the table is the validation of pools and members: what the
	// data plane cannot route never enters the replicated state.
	tbl, err := TableFromState(next)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %w", what, ErrInvalid, err)
	}
	f.st = next
	f.table.Store(tbl)
	return tbl, nil
}

// Snapshot captures the state as deterministic bytes; Persist only writes them.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	data, err := marshalOpts.Marshal(f.st)
	if err != nil {
		return nil, fmt.Errorf("snapshot at index %d: %w", f.st.GetIndex(), err)
	}
	return &snapshot{data: data}, nil
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
	outcomes := make(map[string]*gwelbv1.Outcome, len(st.GetOutcomes()))
	for _, o := range st.GetOutcomes() {
		outcomes[o.GetRequestId()] = o
	}

	f.mu.Lock()
	f.st = st
	f.outcomes = outcomes
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

// snapshot is an immutable encoding of the state at one index.
type snapshot struct{ data []byte }

// Persist writes the snapshot to sink, cancelling the sink on error.
func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s.data); err != nil {
		// The write error is the one worth reporting; Cancel only cleans up.
		_ = sink.Cancel()
		return fmt.Errorf("persist snapshot %s: %w", sink.ID(), err)
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("persist snapshot %s: close: %w", sink.ID(), err)
	}
	return nil
}

// Release does nothing: the snapshot holds no resources.
func (s *snapshot) Release() {}

// EncodeCommand marshals c deterministically, with Version = CommandVersion
// when c leaves it 0. The caller's message is not modified.
func EncodeCommand(c *gwelbv1.Command) ([]byte, error) {
	if c == nil {
		return nil, fmt.Errorf("encode command: nil: %w", ErrInvalid)
	}
	if c.GetVersion() == 0 {
		c = proto.Clone(c).(*gwelbv1.Command)
		c.Version = CommandVersion
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

// applyCommand applies cmd to st in place. On error st may be half changed:
// the caller works on a copy.
func applyCommand(st *gwelbv1.State, cmd *gwelbv1.Command) error {
	now := cmd.GetUnixNanos()
	var err error
	switch op := cmd.GetOp().(type) {
	case *gwelbv1.Command_Seed:
		err = applySeed(st, op.Seed, now)
	case *gwelbv1.Command_PutPool:
		err = putPool(st, op.PutPool.GetPool())
	case *gwelbv1.Command_RemovePool:
		err = removePool(st, op.RemovePool.GetName())
	case *gwelbv1.Command_PutMember:
		err = putMember(st, op.PutMember.GetMember(), now)
	case *gwelbv1.Command_RemoveMember:
		err = removeMember(st, op.RemoveMember.GetPool(), op.RemoveMember.GetRoute())
	case *gwelbv1.Command_SetMemberState:
		err = setMemberState(st, op.SetMemberState.GetPool(), op.SetMemberState.GetRoute(), op.SetMemberState.GetState())
	case *gwelbv1.Command_SetBalancers:
		err = setBalancers(st, op.SetBalancers.GetNodes(), now)
	case *gwelbv1.Command_Observe:
		err = observe(st, op.Observe.GetObservation(), now)
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
	releaseHolds(st, now)
	return nil
}

// applySeed installs the config file's pools and members once. A pool or
// member that already exists (an operator was quicker than the seed) is
// kept as it is.
func applySeed(st *gwelbv1.State, seed *gwelbv1.Seed, now int64) error {
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

func putPool(st *gwelbv1.State, p *gwelbv1.Pool) error {
	if err := validatePool(p); err != nil {
		return err
	}
	c := proto.Clone(p).(*gwelbv1.Pool)
	if i, ok := findPool(st, p.GetName()); ok {
		st.Pools[i] = c
	} else {
		st.Pools = slices.Insert(st.Pools, i, c)
	}
	return nil
}

func removePool(st *gwelbv1.State, name string) error {
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

func putMember(st *gwelbv1.State, m *gwelbv1.Member, now int64) error {
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
	dropObservations(st, m.GetPool(), m.GetRoute())
	return nil
}

func removeMember(st *gwelbv1.State, pool, route string) error {
	i, ok := findMember(st, pool, route)
	if !ok {
		return fmt.Errorf("member %w", ErrNotFound)
	}
	st.Members = slices.Delete(st.Members, i, i+1)
	dropObservations(st, pool, route)
	return nil
}

func setMemberState(st *gwelbv1.State, pool, route string, state gwelbv1.AdminState) error {
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

// setBalancers records the nodes whose majority decides verdicts, forgets
// what other nodes observed and re-derives every verdict, since the
// majority itself may have moved.
func setBalancers(st *gwelbv1.State, nodes []string, now int64) error {
	if slices.Contains(nodes, "") {
		return fmt.Errorf("empty node name: %w", ErrInvalid)
	}
	set := slices.Clone(nodes)
	slices.Sort(set)
	set = slices.Compact(set)
	st.Balancers = set
	if len(set) > 0 {
		st.Observations = slices.DeleteFunc(st.Observations, func(o *gwelbv1.Observation) bool {
			_, ok := slices.BinarySearch(set, o.GetNode())
			return !ok
		})
	}
	for i := range st.Members {
		rederive(st, i, now)
	}
	return nil
}

// observe records a node's latest view of a member and re-derives its verdict.
func observe(st *gwelbv1.State, o *gwelbv1.Observation, now int64) error {
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
	if len(st.Balancers) > 0 {
		if _, ok := slices.BinarySearch(st.Balancers, o.GetNode()); !ok {
			return nil // not (or no longer) a balancer: it has no say
		}
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
	rederive(st, mi, now)
	return nil
}

// releaseHolds re-derives every member whose hold-down has ended by now.
func releaseHolds(st *gwelbv1.State, now int64) {
	for i, m := range st.Members {
		if m.GetHoldDownUntilUnixNanos() != 0 && now >= m.GetHoldDownUntilUnixNanos() {
			rederive(st, i, now)
		}
	}
}

// rederive recomputes the verdict of member i at command time now.
func rederive(st *gwelbv1.State, i int, now int64) {
	m := st.Members[i]
	var hc *gwelbv1.HealthCheck
	if pi, ok := findPool(st, m.GetPool()); ok {
		hc = st.Pools[pi].GetHealth()
	}
	lo, hi := observationRange(st, m.GetPool(), m.GetRoute())
	cur := verdictOf(m)
	if next := deriveVerdict(cur, st.Observations[lo:hi], st.Balancers, hc, now); !next.equal(cur) {
		next.applyTo(m)
	}
}

func dropObservations(st *gwelbv1.State, pool, route string) {
	lo, hi := observationRange(st, pool, route)
	st.Observations = slices.Delete(st.Observations, lo, hi)
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

// normalize sorts a restored state as Apply keeps it and rejects duplicate
// keys, which no sequence of commands can produce.
func normalize(st *gwelbv1.State) error {
	slices.SortFunc(st.Pools, comparePools)
	slices.SortFunc(st.Members, compareMembers)
	slices.SortFunc(st.Observations, compareObservations)
	slices.Sort(st.Balancers)
	st.Balancers = slices.Compact(st.Balancers)
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
	if len(st.Outcomes) > maxOutcomes {
		st.Outcomes = st.Outcomes[len(st.Outcomes)-maxOutcomes:]
	}
	return nil
}
