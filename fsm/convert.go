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
// It is lossless: defaults are applied by NewTable and TableFromState, not here.
func PoolFromProto(p *gwelbv1.Pool) PoolSpec {
	ca := p.GetCookieAttrs()
	hc := p.GetHealth()
	return PoolSpec{
		Name:         p.GetName(),
		Prefix:       p.GetPrefix(),
		QueryParam:   p.GetQueryParam(),
		Cookie:       p.GetCookie(),
		InsertCookie: p.GetInsertCookie(),
		CookieAttrs: CookieSpec{
			Path:     ca.GetPath(),
			Domain:   ca.GetDomain(),
			MaxAge:   int(ca.GetMaxAge()),
			Secure:   ca.GetSecure(),
			HTTPOnly: ca.GetHttpOnly(),
			SameSite: ca.GetSameSite(),
		},
		FailTimeout: msToDuration(p.GetFailTimeoutMs()),
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
		},
	}
}

// PoolToProto converts a PoolSpec to a replicated pool, ignoring its members.
// Cookie attributes and health check are left nil when all their fields are
// zero, so PoolToProto(PoolFromProto(p)) equals p for such pools.
func PoolToProto(s PoolSpec) *gwelbv1.Pool {
	p := &gwelbv1.Pool{
		Name:          s.Name,
		Prefix:        s.Prefix,
		QueryParam:    s.QueryParam,
		Cookie:        s.Cookie,
		InsertCookie:  s.InsertCookie,
		FailTimeoutMs: s.FailTimeout.Milliseconds(),
	}
	if s.CookieAttrs != (CookieSpec{}) {
		p.CookieAttrs = &gwelbv1.CookieAttrs{
			Path:     s.CookieAttrs.Path,
			Domain:   s.CookieAttrs.Domain,
			MaxAge:   clamp32(s.CookieAttrs.MaxAge),
			Secure:   s.CookieAttrs.Secure,
			HttpOnly: s.CookieAttrs.HTTPOnly,
			SameSite: s.CookieAttrs.SameSite,
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
		State:   gwelbv1.AdminState(m.State),
		Verdict: v,
	}
}

// MemberFromProto converts a replicated member to a MemberSpec. An admin
// state this version does not know becomes one NewTable rejects.
func MemberFromProto(m *gwelbv1.Member) MemberSpec {
	st := AdminState(math.MaxUint8)
	if s := m.GetState(); s >= 0 && s <= gwelbv1.AdminState(Disabled) {
		st = AdminState(s)
	}
	v := Up
	if m.GetVerdict() != gwelbv1.Verdict_VERDICT_UP {
		v = Down
	}
	return MemberSpec{Route: m.GetRoute(), URL: m.GetUrl(), Weight: int(m.GetWeight()), State: st, Verdict: v}
}

// SeedCommand builds the Seed command for the config file's pools and their
// members. The caller sets UnixNanos (and RequestId) before proposing it.
func SeedCommand(pools []PoolSpec) *gwelbv1.Command {
	seed := &gwelbv1.Seed{}
	for _, p := range pools {
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
		specs[i].Health = specs[i].Health.WithDefaults(specs[i].Prefix)
		if _, dup := byName[p.GetName()]; dup {
			return nil, fmt.Errorf("pool %q: duplicate name", p.GetName())
		}
		byName[p.GetName()] = i
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

func msToDuration(ms int64) time.Duration { return time.Duration(ms) * time.Millisecond }

// clamp32 narrows without wrapping, so an out-of-range value stays out of
// range (and is rejected) rather than turning into a plausible one.
func clamp32(v int) int32 {
	return int32(max(math.MinInt32, min(math.MaxInt32, v)))
}
