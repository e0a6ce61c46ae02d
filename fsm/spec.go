package fsm

import (
	"fmt"
	"time"

	"gopkg.in/yaml.v3"
)

// The pool and member model (DESIGN.md §5.1, "one schema"). These types are
// what the YAML config decodes into, what gwelbctl builds before it sends a
// member, and what the routing Table holds; the replicated state stores
// their protobuf form (proto/gwelb/v1/fsm.proto), converted in convert.go.
// Defaults are applied only by PoolSpec.WithDefaults and judged only by the
// validators of validate.go.
//
// Adding a pool field means: the field here (with its yaml tag), the field
// in fsm.proto, one line each way in convert.go, and its rule in validate.go.

// DefaultFailTimeout is the local quarantine after a connection failure when
// a pool does not set fail_timeout: nginx's default (the guide uses 30 s for
// frontends and 5 s for backends).
const DefaultFailTimeout = 10 * time.Second

// PoolSpec describes a pool: its prefix, how it reads sticky values and its
// members.
type PoolSpec struct {
	Name   string     `yaml:"name"`   // letters, digits, '.', '_', '-'
	Prefix string     `yaml:"prefix"` // path prefix, e.g. "/frontend"
	Sticky StickySpec `yaml:"sticky"`
	Cookie CookieSpec `yaml:"cookie"` // attributes of the inserted cookie
	// FailTimeout is the local quarantine after a connection failure; nil
	// means DefaultFailTimeout, 0 turns quarantine off.
	FailTimeout *time.Duration `yaml:"fail_timeout"`
	Health      HealthSpec     `yaml:"health"` // active probe and verdict flap damping (see verdict.go)
	Members     []MemberSpec   `yaml:"members"`
}

// StickySpec names where a pool reads its sticky value and whether it
// inserts the cookie itself (the guide's backend ROUTEID).
type StickySpec struct {
	Query  string `yaml:"query"`  // sticky query parameter ("alias"), "" for none
	Cookie string `yaml:"cookie"` // sticky cookie ("FRONTEND_ROUTEID", "ROUTEID"), "" for none
	Insert bool   `yaml:"insert"` // set Cookie when the route is assigned or changes
}

// CookieSpec holds the attributes of the sticky cookie a pool inserts.
type CookieSpec struct {
	Path     string `yaml:"path"` // default "/"
	Domain   string `yaml:"domain"`
	MaxAge   int    `yaml:"max_age"` // seconds; 0 means a session cookie
	Secure   bool   `yaml:"secure"`
	HTTPOnly bool   `yaml:"http_only"`
	SameSite string `yaml:"same_site"` // "", "Lax", "Strict" or "None" (needs Secure)
}

// HealthSpec configures how balancer nodes probe a pool's members and how
// the cluster damps a flapping verdict. Zero values mean "default" for the
// probe fields (see WithDefaults) and "off" for flap damping.
type HealthSpec struct {
	Path         string        `yaml:"path"`          // probe path; default "<prefix>/about"
	Interval     time.Duration `yaml:"interval"`      // time between probes; default 2s
	Timeout      time.Duration `yaml:"timeout"`       // per probe; default 1s
	Rise         int           `yaml:"rise"`          // consecutive successes before a node observes up; default 2
	Fall         int           `yaml:"fall"`          // consecutive failures before a node observes down; default 2
	ExpectStatus int           `yaml:"expect_status"` // HTTP status of a healthy answer; default 200
	FlapLimit    int           `yaml:"flap_limit"`    // verdict flips within FlapWindow that trigger a hold-down; 0 = off
	FlapWindow   time.Duration `yaml:"flap_window"`   // window in which flips are counted
	HoldDown     time.Duration `yaml:"hold_down"`     // how long a flapping member is held down
	// Probers is how many balancer nodes probe each member (bounded
	// probing, DESIGN.md §5.5): the k live voters with the highest
	// rendezvous score for the member; the verdict is their majority.
	// 0 = every live voter.
	Probers int `yaml:"probers"`
}

// MemberSpec describes one GWE server of a pool.
type MemberSpec struct {
	Route  string     `yaml:"route"`  // unique in its pool, e.g. "1" or "GWE_Frontend_103"
	URL    string     `yaml:"url"`    // scheme://host:port of the GWE server
	Weight int        `yaml:"weight"` // relative share of new sessions, 1..1000; 0 means 1
	State  AdminState `yaml:"state"`  // active (default), drain or disabled
	// Verdict is the cluster's, derived from observations; operators and
	// config files never set it.
	Verdict Verdict `yaml:"-"`
}

// WithDefaults returns p with every unset field that has a default filled
// in: cookie path, fail timeout, probe settings and member weights. It is
// the only place defaults are applied.
func (p PoolSpec) WithDefaults() PoolSpec {
	if p.Cookie.Path == "" {
		p.Cookie.Path = "/"
	}
	if p.FailTimeout == nil {
		d := DefaultFailTimeout
		p.FailTimeout = &d
	}
	p.Health = p.Health.WithDefaults(p.Prefix)
	if len(p.Members) > 0 {
		ms := make([]MemberSpec, len(p.Members))
		for i, m := range p.Members {
			ms[i] = m.WithDefaults()
		}
		p.Members = ms
	}
	return p
}

// WithDefaults returns m with weight 0 read as 1.
func (m MemberSpec) WithDefaults() MemberSpec {
	if m.Weight == 0 {
		m.Weight = 1
	}
	return m
}

// Quarantine is the pool's fail timeout, DefaultFailTimeout when unset.
func (p PoolSpec) Quarantine() time.Duration {
	if p.FailTimeout == nil {
		return DefaultFailTimeout
	}
	return *p.FailTimeout
}

// MarshalText writes the admin state's name, so configs and JSON show it.
func (s AdminState) MarshalText() ([]byte, error) {
	if int(s) >= len(adminStateNames) {
		return nil, fmt.Errorf("admin state %d: %w", s, ErrInvalid)
	}
	return []byte(adminStateNames[s]), nil
}

// UnmarshalText reads an admin state's name.
func (s *AdminState) UnmarshalText(b []byte) error {
	st, err := ParseAdminState(string(b))
	if err != nil {
		return err
	}
	*s = st
	return nil
}

// UnmarshalYAML reads "state: drain", naming the line of a bad value.
func (s *AdminState) UnmarshalYAML(n *yaml.Node) error {
	if err := s.UnmarshalText([]byte(n.Value)); err != nil {
		return fmt.Errorf("line %d: state: %w", n.Line, err)
	}
	return nil
}
