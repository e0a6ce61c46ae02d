package fsm

import "math"

// Pick chooses the member for a request (routing contract rules 5 and 6):
// the member named by route when it is usable; otherwise, if the request
// carried a sticky value, the rendezvous winner for that value, so every node
// picks the same replacement without talking; otherwise the n-th entry of
// the weighted round-robin schedule. skip, which may be nil, excludes
// members this node cannot use right now (local quarantine). Pick returns -1
// when no member is usable.
func (p *Pool) Pick(value, route string, n uint64, skip func(int) bool) int {
	if i, ok := p.lay.byRoute[route]; ok && p.Member(i).Usable() && (skip == nil || !skip(i)) {
		return i
	}
	if value != "" {
		return p.Rendezvous(value, skip)
	}
	return p.RoundRobin(n, skip)
}

// Rendezvous returns the usable active member with the highest weighted
// rendezvous (HRW) score for value, or -1. Drain members take no new
// sessions, so they never win.
func (p *Pool) Rendezvous(value string, skip func(int) bool) int {
	best, bestScore := -1, math.Inf(-1)
	for bi, b := range p.blocks {
		for j := range b {
			m := &b[j]
			i := bi<<blockShift + j
			if m.State != Active || m.Verdict != Up || (skip != nil && skip(i)) {
				continue
			}
			// Weighted HRW (Schindelhauer & Schomaker): score = -w / ln(u), u in (0,1).
			h := hrwHash(value, m.Route)
			u := (float64(h>>11) + 0.5) / (1 << 53)
			score := -float64(m.Weight) / math.Log(u)
			if score > bestScore {
				best, bestScore = i, score
			}
		}
	}
	return best
}

// RoundRobin returns the first usable active member at or after position n
// of the smooth weighted round-robin schedule, or -1.
func (p *Pool) RoundRobin(n uint64, skip func(int) bool) int {
	wrr := p.lay.wrr
	l := uint64(len(wrr))
	for k := range l {
		i := wrr[(n+k)%l]
		m := p.Member(i)
		if m.State == Active && m.Verdict == Up && (skip == nil || !skip(i)) {
			return i
		}
	}
	return -1
}

// hrwHash is FNV-1a over value, a separator and route, finished with the
// splitmix64 mixer so that similar inputs spread over the whole range.
func hrwHash(value, route string) uint64 {
	const prime = 1099511628211
	h := uint64(14695981039346656037)
	for i := 0; i < len(value); i++ {
		h = (h ^ uint64(value[i])) * prime
	}
	h = (h ^ 0xff) * prime
	for i := 0; i < len(route); i++ {
		h = (h ^ uint64(route[i])) * prime
	}
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}
