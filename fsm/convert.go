package fsm

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"time"

	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// PoolFromProto converts a replicated pool to a PoolSpec without members.
// It is lossless and applies no defaults (WithDefaults does, in NewTable).
// Millisecond counts too large for a Duration saturate, so the validator
// rejects them instead of seeing a wrapped, plausible value.
func PoolFromProto(p *gwelbv1.Pool) PoolSpec {
	ca := p.GetCookieAttrs()
	hc := p.GetHealth()
	s := PoolSpec{
		Name:   p.GetName(),
		Prefix: p.GetPrefix(),
		Sticky: StickySpec{Query: p.GetQueryParam(), Cookie: p.GetCookie(), Insert: p.GetInsertCookie()},
		Cookie: CookieSpec{
			Path:     ca.GetPath(),
			Domain:   ca.GetDomain(),
			MaxAge:   int(ca.GetMaxAge()),
			Secure:   ca.GetSecure(),
			HTTPOnly: ca.GetHttpOnly(),
			SameSite: ca.GetSameSite(),
		},
		Health: HealthSpec{
			Path:         hc.GetPath(),
			Interval:     msToDuration(hc.GetIntervalMs()),
			Timeout:      msToDuration(hc.GetTimeoutMs()),
			Rise:         int(hc.GetRise()),
			Fall:         int(hc.GetFall()),
			ExpectStatus: int(hc.GetExpectStatus()),
			FlapLimit:    int(hc.GetFlapLimit()),
			FlapWindow:   msToDuration(hc.GetFlapWindowMs()),
			HoldDown:     msToDuration(hc.GetHoldDownMs()),
			Probers:      int(hc.GetProbers()),
		},
	}
	if p.FailTimeoutMs != nil {
		ft := msToDuration(p.GetFailTimeoutMs())
		s.FailTimeout = &ft
	}
	return s
}

// PoolToProto converts a PoolSpec to a replicated pool, ignoring its members.
// Cookie attributes and health check are left nil when all their fields are
// zero, so PoolToProto(PoolFromProto(p)) equals p for such pools.
func PoolToProto(s PoolSpec) *gwelbv1.Pool {
	p := &gwelbv1.Pool{
		Name:         s.Name,
		Prefix:       s.Prefix,
		QueryParam:   s.Sticky.Query,
		Cookie:       s.Sticky.Cookie,
		InsertCookie: s.Sticky.Insert,
	}
	if s.FailTimeout != nil {
		ms := s.FailTimeout.Milliseconds()
		p.FailTimeoutMs = &ms
	}
	if s.Cookie != (CookieSpec{}) {
		p.CookieAttrs = &gwelbv1.CookieAttrs{
			Path:     s.Cookie.Path,
			Domain:   s.Cookie.Domain,
			MaxAge:   clamp32(s.Cookie.MaxAge),
			Secure:   s.Cookie.Secure,
			HttpOnly: s.Cookie.HTTPOnly,
			SameSite: s.Cookie.SameSite,
		}
	}
	if h := s.Health; h != (HealthSpec{}) {
		p.Health = &gwelbv1.HealthCheck{
			Path:         h.Path,
			IntervalMs:   h.Interval.Milliseconds(),
			TimeoutMs:    h.Timeout.Milliseconds(),
			Rise:         clamp32(h.Rise),
			Fall:         clamp32(h.Fall),
			ExpectStatus: clamp32(h.ExpectStatus),
			FlapLimit:    clamp32(h.FlapLimit),
			FlapWindowMs: h.FlapWindow.Milliseconds(),
			HoldDownMs:   h.HoldDown.Milliseconds(),
			Probers:      clamp32(h.Probers),
		}
	}
	return p
}

// MemberToProto converts a MemberSpec of the named pool to a replicated
// member, verdict included (PutMember and Seed ignore it).
func MemberToProto(pool string, m MemberSpec) *gwelbv1.Member {
	v := gwelbv1.Verdict_VERDICT_UP
	if m.Verdict == Down {
		v = gwelbv1.Verdict_VERDICT_DOWN
	}
	return &gwelbv1.Member{
		Pool:    pool,
		Route:   m.Route,
		Url:     m.URL,
		Weight:  clamp32(m.Weight),
		State:   m.State.Proto(),
		Verdict: v,
	}
}

// MemberFromProto converts a replicated member to a MemberSpec. An admin
// state this version does not know becomes one the validator rejects.
func MemberFromProto(m *gwelbv1.Member) MemberSpec {
	v := Up
	if m.GetVerdict() != gwelbv1.Verdict_VERDICT_UP {
		v = Down
	}
	return MemberSpec{Route: m.GetRoute(), URL: m.GetUrl(), Weight: int(m.GetWeight()), State: AdminStateFromProto(m.GetState()), Verdict: v}
}

// Proto is the admin state's protobuf value; an unknown state maps to a
// value no version accepts.
func (s AdminState) Proto() gwelbv1.AdminState {
	switch s {
	case Active:
		return gwelbv1.AdminState_ADMIN_STATE_ACTIVE
	case Drain:
		return gwelbv1.AdminState_ADMIN_STATE_DRAIN
	case Disabled:
		return gwelbv1.AdminState_ADMIN_STATE_DISABLED
	}
	return -1
}

// AdminStateFromProto maps a protobuf admin state by name, never by number;
// an unknown value becomes one the validator rejects.
func AdminStateFromProto(s gwelbv1.AdminState) AdminState {
	switch s {
	case gwelbv1.AdminState_ADMIN_STATE_ACTIVE:
		return Active
	case gwelbv1.AdminState_ADMIN_STATE_DRAIN:
		return Drain
	case gwelbv1.AdminState_ADMIN_STATE_DISABLED:
		return Disabled
	}
	return AdminState(math.MaxUint8)
}

// SeedCommand builds the Seed command for the config file's pools and their
// members, with defaults applied so the replicated state says what a pool
// really does. The caller sets UnixNanos (and RequestId) before proposing it.
func SeedCommand(pools []PoolSpec) *gwelbv1.Command {
	seed := &gwelbv1.Seed{}
	for _, p := range pools {
		p = p.WithDefaults()
		seed.Pools = append(seed.Pools, PoolToProto(p))
		for _, m := range p.Members {
			seed.Members = append(seed.Members, MemberToProto(p.Name, m))
		}
	}
	return &gwelbv1.Command{Version: CommandVersion, Op: &gwelbv1.Command_Seed{Seed: seed}}
}

// TableFromState builds the routing Table of a state at the state's index:
// pools by name, members in route order, each with its derived verdict, and
// health-check defaults filled in.
func TableFromState(st *gwelbv1.State) (*Table, error) {
	pools := slices.Clone(st.GetPools())
	slices.SortFunc(pools, func(a, b *gwelbv1.Pool) int { return cmp.Compare(a.GetName(), b.GetName()) })
	specs := make([]PoolSpec, len(pools))
	byName := make(map[string]int, len(pools))
	for i, p := range pools {
		specs[i] = PoolFromProto(p)
		byName[p.GetName()] = i // a duplicate name is ValidatePools' to report
	}
	members := slices.Clone(st.GetMembers())
	slices.SortFunc(members, compareMembers)
	for _, m := range members {
		i, ok := byName[m.GetPool()]
		if !ok {
			return nil, fmt.Errorf("member %s/%s: pool %q: %w", m.GetPool(), m.GetRoute(), m.GetPool(), ErrNotFound)
		}
		specs[i].Members = append(specs[i].Members, MemberFromProto(m))
	}
	return NewTable(st.GetIndex(), specs)
}

// msToDuration converts a stored millisecond count, saturating instead of
// wrapping.
func msToDuration(ms int64) time.Duration {
	if ms > maxMs {
		return time.Duration(math.MaxInt64)
	}
	if ms < -maxMs {
		return time.Duration(math.MinInt64)
	}
	return time.Duration(ms) * time.Millisecond
}

// clamp32 narrows without wrapping, so an out-of-range value stays out of
// range (and is rejected) rather than turning into a plausible one.
func clamp32(v int) int32 {
	return int32(max(math.MinInt32, min(math.MaxInt32, v)))
}
