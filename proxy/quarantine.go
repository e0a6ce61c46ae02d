package proxy

import "time"

// QuarantinedUntil returns when this node's data plane stops skipping
// member route of pool after a connection failure (routing contract rule
// 8), or the zero time when it does not skip it: not quarantined, the
// quarantine over, or no such member in the table requests are routed by.
//
// It only reads: the control plane asks it to answer `Route` with the
// choice a request would really get here, and to show local quarantine in
// `Status` (the proxy never imports the cluster; the daemon hands this
// method over as a func, like InFlight).
func (s *Server) QuarantinedUntil(pool, route string) time.Time {
	v := s.view.Load()
	if v == nil {
		return time.Time{}
	}
	for _, pv := range v.pools {
		if pv.spec.Name != pool {
			continue
		}
		i, ok := pv.pool.Lookup(route)
		if !ok {
			return time.Time{}
		}
		until := pv.members[i].quarantinedUntil.Load()
		if until <= time.Now().UnixNano() {
			return time.Time{}
		}
		return time.Unix(0, until)
	}
	return time.Time{}
}
