package fsm

import (
	"errors"
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"

	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// ErrExists reports a PutMember in create mode (gwelbctl member add) for a
// route the pool already has: adding must never reset a member an operator
// drained or disabled (DESIGN.md §5.4).
var ErrExists = errors.New("already exists")

// MaxWeight is the largest member weight the validator accepts (the
// smallest is 1: a weight of 0 in a spec means "unset", read as 1).
const MaxWeight = maxWeight

// putModeVersion is the Command.version that introduced PutMember's mode:
// a version 1 node would apply CREATE and UPDATE as an upsert (resetting
// the admin state), so it must refuse them.
const putModeVersion = 2

// boundedProbingVersion is the Command.version that introduced bounded
// probing (DESIGN.md §5.5): a version 2 node would count every voter's
// observation of a member whose pool sets health.probers, and every
// passive observation, as a prober's, so it must refuse a pool with
// probers set and a passive observation. SetBalancers' observers need no
// new version: an older node ignores them, and it refuses the passive
// observations they admit.
const boundedProbingVersion = 3

// poolCASVersion is the Command.version that introduced PutPool's expected
// settings: a version 3 node would ignore them and apply the change over
// whatever another write left, the lost update they prevent.
const poolCASVersion = 4

// commandVersion is the lowest Command.version that applies c right.
func commandVersion(c *gwelbv1.Command) uint32 {
	if c.GetPutPool().GetExpected() != nil {
		return poolCASVersion
	}
	if c.GetObserve().GetObservation().GetPassive() || c.GetPutPool().GetPool().GetHealth().GetProbers() != 0 ||
		slices.ContainsFunc(c.GetSeed().GetPools(), func(p *gwelbv1.Pool) bool { return p.GetHealth().GetProbers() != 0 }) {
		return boundedProbingVersion
	}
	if pm := c.GetPutMember(); pm != nil && pm.GetMode() != gwelbv1.PutMemberMode_PUT_MEMBER_MODE_UPSERT {
		return putModeVersion
	}
	return CommandVersion
}

// resolvePutMode turns a PutMember in create or update mode into the upsert
// it amounts to, given the member that exists now (nil for none), or
// refuses it (DESIGN.md §5.2): CREATE refuses an existing route
// (ErrExists); UPDATE wants the member (ErrNotFound), keeps its admin state
// and keeps its URL and weight where m leaves them unset ("", 0). It is a
// pure function of the command and the state, as Apply must be.
func resolvePutMode(m *gwelbv1.Member, mode gwelbv1.PutMemberMode, old *gwelbv1.Member) (*gwelbv1.Member, error) {
	if m == nil {
		return nil, nil // the validator says "no member"
	}
	switch mode {
	case gwelbv1.PutMemberMode_PUT_MEMBER_MODE_UPSERT:
		return m, nil
	case gwelbv1.PutMemberMode_PUT_MEMBER_MODE_CREATE:
		if old != nil {
			return nil, fmt.Errorf("route %s %w (url %s, %s): update it instead", old.GetRoute(), ErrExists, old.GetUrl(), AdminStateFromProto(old.GetState()))
		}
		return m, nil
	case gwelbv1.PutMemberMode_PUT_MEMBER_MODE_UPDATE:
		if old == nil {
			return nil, fmt.Errorf("member %w", ErrNotFound)
		}
		c := proto.Clone(m).(*gwelbv1.Member)
		c.State = old.GetState() // operational: only SetMemberState changes it
		if c.GetUrl() == "" {
			c.Url = old.GetUrl()
		}
		if c.GetWeight() == 0 {
			c.Weight = old.GetWeight()
		}
		return c, nil
	}
	return nil, fmt.Errorf("mode %d: want upsert, create or update: %w", mode, ErrInvalid)
}
