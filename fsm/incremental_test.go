package fsm

// The indexed FSM against the reference model (reference_test.go): the
// same log gives the same answers, the same state byte for byte and the
// same routing, command after command; the tables it publishes share what
// did not change and never change once published (DESIGN.md §5.2).

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// icGen draws command logs over a pool large enough to span several member
// blocks (blockSize) and two small ones, with request ids that repeat,
// prefixes that collide, stale observations and bytes that are no command.
type icGen struct {
	r      *rand.Rand
	now    int64
	routes []string
	ids    []string
}

// icNonVoters are the non-voters of the generated logs: passive observers.
var icNonVoters = []string{"nv1", "nv2"}

var icPools = []string{"big", "backend", "frontend", "spare"}

func newICGen(seed uint64) *icGen {
	g := &icGen{r: rand.New(rand.NewPCG(seed, 13)), now: t0}
	for i := range 3*blockSize + 7 {
		g.routes = append(g.routes, fmt.Sprintf("r%03d", i))
	}
	return g
}

func (g *icGen) pick(xs []string) string { return xs[g.r.IntN(len(xs))] }

func (g *icGen) pool() *gwelbv1.Pool {
	name := g.pick(icPools)
	p := &gwelbv1.Pool{Name: name, Prefix: "/" + name, Cookie: "ROUTEID", InsertCookie: g.r.IntN(2) == 0}
	switch g.r.IntN(6) {
	case 0:
		p.Prefix = "/" + g.pick(icPools) // another pool's prefix, or its own
	case 1:
		p.Prefix = g.pick([]string{"/", "/a/b", "bad"})
	}
	if g.r.IntN(2) == 0 {
		p.Health = &gwelbv1.HealthCheck{FlapLimit: int32(g.r.IntN(3)), FlapWindowMs: 1 + g.r.Int64N(2000), HoldDownMs: 1 + g.r.Int64N(200), Probers: int32(g.r.IntN(4))}
	}
	if g.r.IntN(4) == 0 {
		p.FailTimeoutMs = proto.Int64(g.r.Int64N(3) * 1000)
	}
	return p
}

func (g *icGen) member(pool string) *gwelbv1.Member {
	url := fmt.Sprintf("http://10.0.0.%d:%d", g.r.IntN(3), 9000+g.r.IntN(2))
	if g.r.IntN(30) == 0 {
		url = "ftp://nope"
	}
	return &gwelbv1.Member{Pool: pool, Route: g.pick(g.routes), Url: url, Weight: int32(g.r.IntN(4)),
		State: []gwelbv1.AdminState{0, 0, 1, 2, 7}[g.r.IntN(5)]}
}

// seed is the log's first command: the big pool nearly full, and two more.
func (g *icGen) seed() *gwelbv1.Command {
	s := &gwelbv1.Seed{Pools: []*gwelbv1.Pool{
		{Name: "big", Prefix: "/big", Cookie: "ROUTEID", InsertCookie: true,
			Health: &gwelbv1.HealthCheck{FlapLimit: 2, FlapWindowMs: 2000, HoldDownMs: 150, Probers: 2}},
		{Name: "backend", Prefix: "/backend", QueryParam: "alias"},
		{Name: "frontend", Prefix: "/frontend", Cookie: "F"},
	}}
	for i, r := range g.routes {
		if i%9 != 4 { // gaps: members added later land between others
			s.Members = append(s.Members, &gwelbv1.Member{Pool: "big", Route: r, Url: fmt.Sprintf("http://10.1.%d.%d:80", i/250, i%250), Weight: int32(1 + i%3)})
		}
	}
	for _, r := range g.routes[:5] {
		s.Members = append(s.Members, &gwelbv1.Member{Pool: "backend", Route: r, Url: "http://10.0.0.9:1"})
	}
	return fxCmd(t0, s)
}

func (g *icGen) command() *gwelbv1.Command {
	g.now += g.r.Int64N(30*int64(time.Millisecond)) - 4*int64(time.Millisecond)
	at := g.now
	var c *gwelbv1.Command
	// Observations dominate, as in a real log, mostly of a few members.
	switch k := g.r.IntN(40); {
	case k == 0:
		s := &gwelbv1.Seed{Pools: []*gwelbv1.Pool{g.pool()}}
		for range g.r.IntN(3) {
			s.Members = append(s.Members, g.member(s.Pools[0].GetName()))
		}
		c = fxCmd(at, s)
	case k <= 2:
		c = cmdPutPool(at, g.pool())
	case k == 3:
		c = cmdRemovePool(at, g.pick(icPools[1:])) // the big pool stays, mostly
	case k <= 8:
		c = fxCmd(at, &gwelbv1.PutMember{Member: g.member(g.pick(icPools)), Mode: gwelbv1.PutMemberMode(g.r.IntN(4))}) // 3: unknown
	case k <= 10:
		c = cmdRemoveMember(at, g.pick(icPools), g.pick(g.routes))
	case k <= 15:
		c = cmdSetState(at, g.pick(icPools), g.pick(g.routes), []gwelbv1.AdminState{0, 1, 2, 9}[g.r.IntN(4)])
	case k <= 17:
		var nodes []string
		for _, n := range fxNodes {
			if g.r.IntN(3) > 0 {
				nodes = append(nodes, n)
			}
		}
		if g.r.IntN(10) == 0 {
			nodes = append(nodes, "")
		}
		c = cmdBalancers(at, nodes...)
		for _, n := range icNonVoters {
			if g.r.IntN(2) == 0 {
				c.GetSetBalancers().Observers = append(c.GetSetBalancers().Observers, n)
			}
		}
	case k == 18:
		c = fxCmd(at, nil) // no operation
	default:
		pool, route := "big", g.routes[g.r.IntN(6)*(blockSize-1)%len(g.routes)]
		if g.r.IntN(3) == 0 {
			pool, route = g.pick(icPools), g.pick(g.routes)
		}
		node := g.pick(fxNodes)
		passive := g.r.IntN(4) == 0
		if passive && g.r.IntN(2) == 0 {
			node = g.pick(icNonVoters)
		}
		if g.r.IntN(20) == 0 {
			node = ""
		}
		c = cmdObserve(at, pool, route, node, g.r.IntN(2) == 0, at-g.r.Int64N(50*int64(time.Millisecond)), g.pick(fxCauses))
		c.GetObserve().GetObservation().Passive = passive
	}
	// Operators' writes carry request ids, retried now and then.
	if c.GetObserve() == nil && c.GetSetBalancers() == nil && g.r.IntN(3) > 0 {
		if len(g.ids) > 0 && g.r.IntN(5) == 0 {
			c.RequestId = g.ids[g.r.IntN(len(g.ids))]
		} else {
			c.RequestId = fmt.Sprintf("req-%d", len(g.ids))
			g.ids = append(g.ids, c.RequestId)
		}
	}
	if g.r.IntN(60) == 0 {
		c.Version = MaxCommandVersion + 1
	}
	return c
}

// icPoolSig digests what the data plane routes by in one pool: settings,
// schedule and every member with its parsed URL (by pointer) and index.
func icPoolSig(p *Pool) uint64 {
	h := fnv.New64a()
	fmt.Fprintf(h, "%+v %v|", p.Spec(), p.Schedule())
	var b []byte
	for i, m := range p.All() {
		j, ok := p.Lookup(m.Route)
		b = append(b[:0], m.Route...)
		b = append(b, 0)
		b = append(b, m.URL...)
		b = binary.LittleEndian.AppendUint64(b, uint64(i)<<32|uint64(j))
		b = append(b, byte(m.State), byte(m.Verdict), byte(m.Weight), byte(m.Weight>>8))
		if ok {
			b = append(b, 1)
		}
		b = binary.LittleEndian.AppendUint64(b, uint64(uintptr(unsafe.Pointer(m.Target))))
		h.Write(b)
	}
	return h.Sum64()
}

// icLayoutSig digests what SameLayout promises equal.
func icLayoutSig(p *Pool) uint64 {
	h := fnv.New64a()
	fmt.Fprintf(h, "%+v|", p.Spec())
	var b []byte
	for _, m := range p.All() {
		b = append(append(append(b[:0], m.Route...), 0), m.URL...)
		b = binary.LittleEndian.AppendUint64(b, uint64(m.Weight))
		h.Write(b)
	}
	return h.Sum64()
}

func icTableSig(t *Table) []uint64 {
	sig := []uint64{t.Index()}
	for _, p := range t.Pools() {
		sig = append(sig, icPoolSig(p))
	}
	return sig
}

// icSameRouting checks that got routes as want, pool by pool.
func icSameRouting(t *testing.T, where string, got, want *Table) {
	t.Helper()
	if got.Index() != want.Index() || len(got.Pools()) != len(want.Pools()) {
		t.Fatalf("%s: table at %d with %d pools, reference at %d with %d", where, got.Index(), len(got.Pools()), want.Index(), len(want.Pools()))
	}
	for i, pg := range got.Pools() {
		pw := want.Pools()[i]
		if !reflect.DeepEqual(pg.Spec(), pw.Spec()) || !slices.Equal(pg.Schedule(), pw.Schedule()) || !reflect.DeepEqual(pg.Members(), pw.Members()) {
			t.Fatalf("%s: pool %s\n%+v %v %+v\nreference\n%+v %v %+v", where, pg.Name(), pg.Spec(), pg.Schedule(), pg.Members(), pw.Spec(), pw.Schedule(), pw.Members())
		}
		for j, m := range pg.All() {
			if k, ok := pg.Lookup(m.Route); !ok || k != j {
				t.Fatalf("%s: pool %s: Lookup(%q) = %d, %v; want %d", where, pg.Name(), m.Route, k, ok, j)
			}
		}
		for v := range 20 {
			value, route := fmt.Sprintf("visitor-%d", v), fmt.Sprintf("r%03d", v*11)
			if a, b := pg.Pick(value, route, uint64(v), nil), pw.Pick(value, route, uint64(v), nil); a != b {
				t.Fatalf("%s: pool %s: Pick(%q, %q) = %d, reference %d", where, pg.Name(), value, route, a, b)
			}
		}
	}
}

func TestApplyMatchesReference(t *testing.T) {
	logs, length := uint64(16), 300
	if raceEnabled {
		logs = 2 // the race is in concurrent readers (TestFSMConcurrentReaders), not here
	}
	var published, refused, shared, relaid int
	for seed := range logs {
		g := newICGen(seed)
		f, ref := NewFSM(nil), newRefFSM()
		var pub []*Table
		f.publish = func(tbl *Table) { pub = append(pub, tbl) }
		var old *Table // the table before, with its digest: never to change
		var oldSig []uint64
		for i := range length {
			index := uint64(i + 1)
			var data []byte
			switch {
			case i == 0:
				data, _ = EncodeCommand(g.seed())
			case g.r.IntN(200) == 0:
				data = []byte("\xff\x01not a command")
			default:
				data, _ = EncodeCommand(g.command())
			}
			where := fmt.Sprintf("log %d entry %d", seed, index)
			var cmd gwelbv1.Command
			decodeErr := proto.Unmarshal(data, &cmd)

			prev := f.Table()
			n := len(pub)
			got := f.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: data})
			want, wantPub := ref.apply(index, &cmd, decodeErr)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("%s (%s): Apply = %v, reference %v", where, describe(&cmd), got, want)
			}
			if (len(pub) > n) != wantPub {
				t.Fatalf("%s (%s): published %v, reference %v", where, describe(&cmd), len(pub) > n, wantPub)
			}
			if _, isErr := got.(error); isErr {
				refused++
			}
			gotState, _ := marshalOpts.Marshal(f.State())
			wantState, _ := marshalOpts.Marshal(ref.st)
			if !bytes.Equal(gotState, wantState) {
				t.Fatalf("%s (%s): state differs:\n%s", where, describe(&cmd), stateDiff(f.State(), ref.st))
			}
			if !wantPub {
				if f.Table() != prev {
					t.Fatalf("%s: the table changed without a publish", where)
				}
				continue
			}
			published++
			icSameRouting(t, where, f.Table(), ref.table)
			// Structural sharing: a pool whose routing did not change is
			// the same *Pool; SameLayout holds exactly when routes, URLs,
			// weights and settings are the same.
			for _, p := range f.Table().Pools() {
				q := prev.Pool(p.Name())
				if q == nil {
					continue
				}
				if icPoolSig(p) == icPoolSig(q) && p != q {
					t.Fatalf("%s: pool %s is unchanged but was rebuilt", where, p.Name())
				}
				if p == q {
					shared++
				}
				if same, want := p.SameLayout(q), icLayoutSig(p) == icLayoutSig(q); same != want {
					t.Fatalf("%s: pool %s: SameLayout = %v, layouts equal = %v", where, p.Name(), same, want)
				} else if !same {
					relaid++
				} else {
					// Changed names exactly the members that differ.
					var want []int
					for i, m := range p.All() {
						if *m != *q.Member(i) {
							want = append(want, i)
						}
					}
					if got, ok := p.Changed(q); !ok || !slices.Equal(got, want) {
						t.Fatalf("%s: pool %s: Changed = %v %v, want %v", where, p.Name(), got, ok, want)
					}
				}
			}
			// Published tables never change (readers hold them lock-free),
			// though the next one shares their blocks.
			if old != nil && !slices.Equal(icTableSig(old), oldSig) {
				t.Fatalf("%s: the table at index %d changed after it was published", where, old.Index())
			}
			old, oldSig = f.Table(), icTableSig(f.Table())

			// Now and then a follower installs this state from a snapshot
			// and carries on in the node's place: the index it rebuilds
			// must behave as the one built command by command.
			if g.r.IntN(50) == 0 {
				r := fxRestore(t, fxSnapshot(t, f), nil)
				r.publish = f.publish
				icSameRouting(t, where+" restored", r.Table(), ref.table)
				f = r
			}
		}
	}
	t.Logf("%d logs: %d tables published, %d commands refused, %d pools shared by pointer, %d laid out again", logs, published, refused, shared, relaid)
	if published < int(logs)*length/4 || refused < int(logs) || shared < published || relaid < int(logs) {
		t.Fatalf("weak generator: %d published, %d refused, %d shared, %d laid out again", published, refused, shared, relaid)
	}
}

// nginxWRR is nginx's smooth weighted round-robin as it is written: every
// member's current value grows by its weight, the largest (first on a tie)
// is picked and pays the total.
func nginxWRR(weights []int) []int {
	total := 0
	for _, w := range weights {
		total += w
	}
	var order []int
	current := make([]int, len(weights))
	for range total {
		best := -1
		for i, w := range weights {
			current[i] += w
			if best < 0 || current[i] > current[best] {
				best = i
			}
		}
		current[best] -= total
		order = append(order, best)
	}
	return order
}

func TestSmoothWRRIsNginx(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 300 {
		n := 1 + r.IntN(40)
		distinct := 1 + r.IntN(5)
		weights := make([]int, n)
		members := make([]Member, n)
		for i := range weights {
			weights[i] = 1 + r.IntN(distinct)*r.IntN(7)
			members[i].Weight = weights[i]
		}
		if got, want := smoothWRR(members), nginxWRR(weights); !slices.Equal(got, want) {
			t.Fatalf("weights %v: schedule %v, nginx %v", weights, got, want)
		}
	}
}

// TestFSMAccessors: the accessors that cost what they return agree with
// the whole State.
func TestFSMAccessors(t *testing.T) {
	h := fxNew(t)
	if _, ok := h.f.NextHoldDownEnd(); ok || h.f.Seeded() || h.f.Balancers() != nil {
		t.Fatal("a new FSM has a hold-down, a seed or balancers")
	}
	flappy := fxFlappyBackend()
	h.must(SeedCommand(nil), cmdBalancers(t0, "c", "a", "b"), cmdPutPool(t0, flappy),
		cmdPutMember(t0, "backend", "1", "http://10.0.0.1:1"))
	// Flap member 1 until it is held down.
	for i := range 12 {
		at := t0 + int64(i+1)*int64(time.Millisecond)
		h.must(cmdObserve(at, "backend", "1", "a", i%2 == 0, at, "x"), cmdObserve(at, "backend", "1", "b", i%2 == 0, at, "x"))
	}
	st := h.f.State()
	m, obs, ok := h.f.Member("backend", "1")
	if !ok || !proto.Equal(m, st.GetMembers()[0]) || len(obs) != 2 || !proto.Equal(obs[0], st.GetObservations()[0]) {
		t.Fatalf("Member = %v %v %v, state %v", m, obs, ok, st)
	}
	if _, _, ok := h.f.Member("backend", "9"); ok {
		t.Error("Member found a member that does not exist")
	}
	until, ok := h.f.NextHoldDownEnd()
	if !ok || until != st.GetMembers()[0].GetHoldDownUntilUnixNanos() {
		t.Errorf("NextHoldDownEnd = %d %v, member held until %d", until, ok, st.GetMembers()[0].GetHoldDownUntilUnixNanos())
	}
	if !h.f.Seeded() || !slices.Equal(h.f.Balancers(), []string{"a", "b", "c"}) {
		t.Errorf("Seeded %v, Balancers %v", h.f.Seeded(), h.f.Balancers())
	}
	// Released at the end by any command; then nothing is held.
	h.must(cmdBalancers(until, "a", "b", "c"))
	if _, ok := h.f.NextHoldDownEnd(); ok {
		t.Error("a hold-down is left after its end")
	}
}

// TestRestoreRefusesOrphanObservations: every observation belongs to a
// member; a snapshot with one that does not was forged or corrupted.
func TestRestoreRefusesOrphanObservations(t *testing.T) {
	h := fxNew(t)
	h.must(cmdBalancers(t0, "a", "b", "c"))
	h.must(fxBackendWith(t0)...)
	h.must(cmdObserve(t0+1, "backend", "2", "a", true, t0, "refused"))
	for _, o := range []*gwelbv1.Observation{
		{Pool: "backend", Route: "0", Node: "a"},  // before every member
		{Pool: "backend", Route: "22", Node: "a"}, // between two
		{Pool: "nope", Route: "1", Node: "a"},     // after every member
	} {
		st := h.f.State()
		st.Observations = append(st.Observations, o)
		data, _ := marshalOpts.Marshal(st)
		if err := NewFSM(nil).Restore(io.NopCloser(bytes.NewReader(data))); err == nil || !strings.Contains(err.Error(), "no such member") {
			t.Errorf("restore with an observation of %s/%s: %v", o.GetPool(), o.GetRoute(), err)
		}
	}
}

// stateDiff names the members and observations two states disagree on.
func stateDiff(got, want *gwelbv1.State) string {
	var b strings.Builder
	gm := map[string]string{}
	for _, m := range got.GetMembers() {
		gm[m.GetPool()+"/"+m.GetRoute()] = m.String()
	}
	for _, m := range want.GetMembers() {
		k := m.GetPool() + "/" + m.GetRoute()
		if gm[k] != m.String() {
			fmt.Fprintf(&b, "member %s:\n  got  %s\n  want %s\n", k, gm[k], m.String())
		}
		delete(gm, k)
	}
	for k, v := range gm {
		fmt.Fprintf(&b, "member %s only in got: %s\n", k, v)
	}
	if fmt.Sprint(got.GetObservations()) != fmt.Sprint(want.GetObservations()) {
		fmt.Fprintf(&b, "observations:\n  got  %v\n  want %v\n", got.GetObservations(), want.GetObservations())
	}
	if fmt.Sprint(got.GetBalancers(), got.GetObservers()) != fmt.Sprint(want.GetBalancers(), want.GetObservers()) {
		fmt.Fprintf(&b, "balancers: got %v %v, want %v %v\n", got.GetBalancers(), got.GetObservers(), want.GetBalancers(), want.GetObservers())
	}
	return b.String()
}
