package fsm

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// planPools is a cluster's two pools as the seed stores them (defaults
// applied), with a drained member.
func planPools() []PoolSpec {
	front := PoolSpec{
		Name: "frontend", Prefix: "/frontend",
		Sticky:      StickySpec{Query: "alias", Cookie: "FRONTEND_ROUTEID"},
		FailTimeout: new(30 * time.Second),
		Members: []MemberSpec{
			{Route: "GWE_F_1", URL: "http://127.0.0.1:8091"},
			{Route: "GWE_F_2", URL: "http://127.0.0.1:8092"},
		},
	}
	back := validPool()
	back.FailTimeout = new(5 * time.Second)
	back.Members = append(back.Members, MemberSpec{Route: "3", URL: "http://127.0.0.1:9083", State: Drain})
	return []PoolSpec{front.WithDefaults(), back.WithDefaults()}
}

// unsetDefaults is what a config file says for the same pools: defaults left
// unset, the drained member written as active (the file is not told about
// drains).
func unsetDefaults() []PoolSpec {
	pools := planPools()
	for i := range pools {
		p := &pools[i]
		p.Cookie.Path = ""
		p.Health = HealthSpec{}
		p.Members = slices.Clone(p.Members)
		for j := range p.Members {
			p.Members[j].Weight = 0
			p.Members[j].State = Active
		}
	}
	return pools
}

// TestPlanChanges: what an operator reads for each kind of edit of a config
// file, one line per change.
func TestPlanChanges(t *testing.T) {
	tests := []struct {
		name    string
		edit    func([]PoolSpec) []PoolSpec
		want    []string // the plan's lines
		emptied []string
	}{
		{"unset equals default, admin state ignored", func(p []PoolSpec) []PoolSpec { return unsetDefaults() }, nil, nil},
		{"fail_timeout", func(p []PoolSpec) []PoolSpec {
			p[1].FailTimeout = new(10 * time.Second)
			return p
		}, []string{"~ pool backend fail_timeout 5s -> 10s"}, nil},
		{"fail_timeout unset is the default 10s", func(p []PoolSpec) []PoolSpec {
			p[1].FailTimeout = nil
			return p
		}, []string{"~ pool backend fail_timeout 5s -> 10s"}, nil},
		{"cookie and health", func(p []PoolSpec) []PoolSpec {
			p[1].Cookie.Secure, p[1].Cookie.SameSite = true, "None"
			p[1].Health.Interval, p[1].Health.Path = 5*time.Second, "/backend/healthz"
			return p
		}, []string{
			`~ pool backend cookie.secure false -> true`,
			`~ pool backend cookie.same_site "" -> "None"`,
			`~ pool backend health.path "/backend/about" -> "/backend/healthz"`,
			`~ pool backend health.interval 2s -> 5s`,
		}, nil},
		{"member added takes the file's state", func(p []PoolSpec) []PoolSpec {
			p[1].Members = append(p[1].Members, MemberSpec{Route: "4", URL: "http://127.0.0.1:9084", Weight: 2, State: Disabled})
			return p
		}, []string{"+ pool backend member 4 url=http://127.0.0.1:9084 weight=2 state=disabled"}, nil},
		{"member url and weight changed, state not", func(p []PoolSpec) []PoolSpec {
			m := &p[1].Members[2]
			m.URL, m.Weight, m.State = "http://127.0.0.1:9093", 3, Active
			return p
		}, []string{
			"~ pool backend member 3 url http://127.0.0.1:9083 -> http://127.0.0.1:9093",
			"~ pool backend member 3 weight 1 -> 3",
		}, nil},
		{"member removed", func(p []PoolSpec) []PoolSpec {
			p[1].Members = p[1].Members[:2]
			return p
		}, []string{"- pool backend member 3 url=http://127.0.0.1:9083 weight=1 state=drain"}, nil},
		{"every member removed", func(p []PoolSpec) []PoolSpec {
			p[0].Members = nil
			return p
		}, []string{
			"- pool frontend member GWE_F_1 url=http://127.0.0.1:8091 weight=1 state=active",
			"- pool frontend member GWE_F_2 url=http://127.0.0.1:8092 weight=1 state=active",
		}, []string{"frontend"}},
		{"every member replaced", func(p []PoolSpec) []PoolSpec {
			p[0].Members = []MemberSpec{{Route: "GWE_F_9", URL: "http://127.0.0.1:8099"}}
			return p
		}, []string{
			"- pool frontend member GWE_F_1 url=http://127.0.0.1:8091 weight=1 state=active",
			"- pool frontend member GWE_F_2 url=http://127.0.0.1:8092 weight=1 state=active",
			"+ pool frontend member GWE_F_9 url=http://127.0.0.1:8099 weight=1 state=active",
		}, []string{"frontend"}},
		{"pool removed", func(p []PoolSpec) []PoolSpec { return p[1:] }, []string{"- pool frontend (2 members)"}, []string{"frontend"}},
		{"pool added", func(p []PoolSpec) []PoolSpec {
			return append(p, PoolSpec{
				Name: "api", Prefix: "/api", Sticky: StickySpec{Cookie: "ROUTEID", Insert: true}, FailTimeout: new(10 * time.Second),
				Members: []MemberSpec{{Route: "1", URL: "http://127.0.0.1:7081"}},
			})
		}, []string{
			`+ pool api prefix="/api" sticky.cookie="ROUTEID" sticky.insert=true`,
			"+ pool api member 1 url=http://127.0.0.1:7081 weight=1 state=active",
		}, nil},
		{"prefix change moves the default health path", func(p []PoolSpec) []PoolSpec {
			q := unsetDefaults()
			q[1].Prefix = "/be"
			return q
		}, []string{
			`~ pool backend prefix "/backend" -> "/be"`,
			`~ pool backend health.path "/backend/about" -> "/be/about"`,
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			have := planPools()
			plan := PlanChanges(have, tt.edit(planPools()))
			got := strings.Split(strings.TrimSuffix(plan.String(), "\n"), "\n")
			if plan.String() == "" {
				got = nil
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("plan:\n%s\nwant:\n%s", plan, strings.Join(tt.want, "\n"))
			}
			if plan.Empty() != (len(tt.want) == 0) {
				t.Errorf("Empty() = %v for plan %q", plan.Empty(), plan)
			}
			if !slices.Equal(plan.Emptied, tt.emptied) {
				t.Errorf("Emptied = %q, want %q", plan.Emptied, tt.emptied)
			}
			if !reflect.DeepEqual(have, planPools()) {
				t.Error("PlanChanges modified have")
			}
		})
	}
}

// TestPlanChangesApplied: the specs a plan carries are what apply sends —
// a changed member keeps the admin state it has, a new one takes the
// file's; and applying a plan's changes to have gives a state with an empty
// plan against the file.
func TestPlanChangesApplied(t *testing.T) {
	want := unsetDefaults()
	want[1].Members[2].URL = "http://127.0.0.1:9093"                                                              // drained in have
	want[1].Members = append(want[1].Members, MemberSpec{Route: "4", URL: "http://127.0.0.1:9084", State: Drain}) // new, drained by the file
	want[1].Cookie.HTTPOnly = true
	want = append(want, PoolSpec{Name: "api", Prefix: "/api", Sticky: StickySpec{Query: "alias"}})
	want = want[1:] // frontend removed

	plan := PlanChanges(planPools(), want)
	for _, mc := range plan.Members {
		if mc.Member.Route == "3" && (mc.Op != OpChange || mc.Member.State != Drain) {
			t.Errorf("member 3: %c state %s, want a change that keeps drain", mc.Op, mc.Member.State)
		}
		if mc.Member.Route == "4" && (mc.Op != OpAdd || mc.Member.State != Drain) {
			t.Errorf("member 4: %c state %s, want an add with the file's drain", mc.Op, mc.Member.State)
		}
	}

	// Apply the plan to the state the way gwelbctl apply does, through the
	// FSM's own commands, and plan again.
	st := &gwelbv1.State{}
	for _, p := range planPools() {
		if err := applyCommand(st, &gwelbv1.Command{Op: &gwelbv1.Command_PutPool{PutPool: &gwelbv1.PutPool{Pool: PoolToProto(p)}}}); err != nil {
			t.Fatal(err)
		}
		for _, m := range p.Members {
			if err := applyCommand(st, &gwelbv1.Command{Op: &gwelbv1.Command_PutMember{PutMember: &gwelbv1.PutMember{Member: MemberToProto(p.Name, m)}}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, pc := range plan.Pools {
		cmd := &gwelbv1.Command{Op: &gwelbv1.Command_PutPool{PutPool: &gwelbv1.PutPool{Pool: PoolToProto(pc.Pool)}}}
		if pc.Op == OpRemove {
			cmd = &gwelbv1.Command{Op: &gwelbv1.Command_RemovePool{RemovePool: &gwelbv1.RemovePool{Name: pc.Pool.Name}}}
		}
		if err := applyCommand(st, cmd); err != nil {
			t.Fatalf("%c pool %s: %v", pc.Op, pc.Pool.Name, err)
		}
	}
	for _, mc := range plan.Members {
		cmd := &gwelbv1.Command{Op: &gwelbv1.Command_PutMember{PutMember: &gwelbv1.PutMember{Member: MemberToProto(mc.Pool, mc.Member)}}}
		if mc.Op == OpRemove {
			cmd = &gwelbv1.Command{Op: &gwelbv1.Command_RemoveMember{RemoveMember: &gwelbv1.RemoveMember{Pool: mc.Pool, Route: mc.Member.Route}}}
		}
		if err := applyCommand(st, cmd); err != nil {
			t.Fatalf("%c member %s/%s: %v", mc.Op, mc.Pool, mc.Member.Route, err)
		}
	}
	if again := PlanChanges(PoolsFromState(st), want); !again.Empty() {
		t.Errorf("after applying the plan, plan again:\n%s", again)
	}
	if _, err := TableFromState(st); err != nil {
		t.Errorf("applied state does not build a table: %v", err)
	}
}

// TestPlanComparesEveryField: every leaf field of PoolSpec (but name and
// members) shows in a plan when it changes, named by its yaml path; a field
// added to PoolSpec later is covered without a list to update.
func TestPlanComparesEveryField(t *testing.T) {
	base := validPool().WithDefaults()
	var paths []string
	var visit func(prefix string, v reflect.Value)
	visit = func(prefix string, v reflect.Value) {
		for i := range v.NumField() {
			f := v.Type().Field(i)
			tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if prefix == "" && (tag == "name" || tag == "members") {
				continue
			}
			fv := v.Field(i)
			if fv.Kind() == reflect.Struct {
				visit(prefix+tag+".", fv)
				continue
			}
			changed := validPool().WithDefaults()
			cv := reflect.ValueOf(&changed).Elem()
			target := cv
			for _, idx := range fieldIndex(reflect.TypeOf(changed), prefix+tag) {
				target = target.Field(idx)
			}
			switch target.Kind() {
			case reflect.Pointer:
				target.Set(reflect.New(target.Type().Elem()))
				target.Elem().SetInt(target.Elem().Int() + 7)
			case reflect.String:
				target.SetString(target.String() + "x")
			case reflect.Bool:
				target.SetBool(!target.Bool())
			case reflect.Int, reflect.Int64:
				target.SetInt(target.Int() + 7)
			default:
				t.Fatalf("field %s: kind %s not handled by the plan test", prefix+tag, target.Kind())
			}
			plan := PlanChanges([]PoolSpec{base}, []PoolSpec{changed})
			if len(plan.Pools) != 1 || len(plan.Pools[0].Fields) != 1 || plan.Pools[0].Fields[0].Field != prefix+tag {
				t.Errorf("changing %s: plan %q", prefix+tag, plan)
			}
			paths = append(paths, prefix+tag)
		}
	}
	visit("", reflect.ValueOf(base))
	if len(paths) < 20 {
		t.Errorf("only %d fields compared: %q", len(paths), paths)
	}
}

// fieldIndex finds the struct field indexes of a yaml path in t.
func fieldIndex(t reflect.Type, path string) []int {
	var idx []int
	for _, part := range strings.Split(path, ".") {
		for i := range t.NumField() {
			if tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); tag == part {
				idx = append(idx, i)
				t = t.Field(i).Type
				break
			}
		}
	}
	return idx
}
