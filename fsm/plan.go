package fsm

import (
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// A Plan is the difference between the replicated pools and members
// ("have") and a config file's ("want"): what `gwelbctl apply` would change,
// and what a node reports when its config file no longer matches the table.
//
// Pools are compared field by field after WithDefaults, so a field left
// unset in one and set to its default in the other is no change. Members are
// compared by URL and weight only: a member's admin state is operational
// (drain, disable and enable change it, DESIGN.md §5.4), so for a member
// that exists the file's state is not part of the plan; a new member takes
// the file's state.
type Plan struct {
	Pools   []PoolChange   // by pool name
	Members []MemberChange // by pool, then route; members of removed pools are not listed (removing a pool removes them)
	// Emptied names the pools that have members now and whose every member
	// the plan removes (removed pools included), by name: `gwelbctl apply`
	// refuses such a plan without --force.
	Emptied []string
}

// ChangeOp is what a change does; its value is the sign the plan prints.
type ChangeOp byte

// The ops of a change.
const (
	OpAdd    ChangeOp = '+'
	OpChange ChangeOp = '~'
	OpRemove ChangeOp = '-'
)

// FieldChange is one field whose value differs, as the plan prints it:
// Field is the config file's path (`health.interval`, `cookie.secure`),
// Old and New the values (strings quoted).
type FieldChange struct {
	Field, Old, New string
}

// PoolChange is one pool added, changed or removed.
type PoolChange struct {
	Op ChangeOp
	// Pool is the wanted pool with defaults applied and without members
	// (OpAdd, OpChange), or the pool as it is (OpRemove).
	Pool PoolSpec
	// Was is the pool as the plan read it, without members (OpChange): the
	// settings a compare-and-set PutPool expects (DESIGN.md §5.2), so a
	// pool another writer changed after the plan was made is not
	// overwritten with a change nobody saw.
	Was PoolSpec
	// Fields are the fields that differ (OpChange), or, for OpAdd, the
	// fields the new pool does not leave at their defaults.
	Fields []FieldChange
	// Members is how many members a removed pool takes with it.
	Members int
}

// MemberChange is one member added, changed or removed.
type MemberChange struct {
	Op   ChangeOp
	Pool string
	// Member is the wanted member with defaults applied (OpAdd: with the
	// file's admin state; OpChange: with the admin state it has now, which
	// the change keeps), or the member as it is (OpRemove).
	Member MemberSpec
	Fields []FieldChange // OpChange: url and/or weight
}

// Empty reports whether the plan changes nothing.
func (p Plan) Empty() bool { return len(p.Pools) == 0 && len(p.Members) == 0 }

// PlanChanges returns what must change for the replicated pools and members
// (have) to match want. Neither slice is modified. Both are judged as they
// are: validate want first (ValidatePools), a plan of an invalid file is
// not applicable.
func PlanChanges(have, want []PoolSpec) Plan {
	haveBy := poolsByName(have)
	wantBy := poolsByName(want)
	var plan Plan
	for _, name := range unionKeys(haveBy, wantBy) {
		h, inHave := haveBy[name]
		w, inWant := wantBy[name]
		switch {
		case !inWant:
			plan.Pools = append(plan.Pools, PoolChange{Op: OpRemove, Pool: withoutMembers(h), Members: len(h.Members)})
			if len(h.Members) > 0 {
				plan.Emptied = append(plan.Emptied, name)
			}
			continue
		case !inHave:
			wd := withoutMembers(w.WithDefaults())
			base := PoolSpec{Name: w.Name, Prefix: w.Prefix}.WithDefaults()
			fields := diffFields(base, wd)
			if !slices.ContainsFunc(fields, func(f FieldChange) bool { return f.Field == "prefix" }) {
				fields = append([]FieldChange{{Field: "prefix", New: strconv.Quote(wd.Prefix)}}, fields...)
			}
			plan.Pools = append(plan.Pools, PoolChange{Op: OpAdd, Pool: wd, Fields: fields})
		default:
			hd, wd := withoutMembers(h.WithDefaults()), withoutMembers(w.WithDefaults())
			if fields := diffFields(hd, wd); len(fields) > 0 {
				plan.Pools = append(plan.Pools, PoolChange{Op: OpChange, Pool: wd, Was: withoutMembers(h), Fields: fields})
			}
		}
		removed := 0
		plan.Members, removed = planMembers(plan.Members, name, h.Members, w.Members)
		if inHave && len(h.Members) > 0 && removed == len(h.Members) {
			plan.Emptied = append(plan.Emptied, name)
		}
	}
	return plan
}

// planMembers appends the member changes of one pool to out and says how
// many members they remove.
func planMembers(out []MemberChange, pool string, have, want []MemberSpec) ([]MemberChange, int) {
	haveBy := make(map[string]MemberSpec, len(have))
	for _, m := range have {
		haveBy[m.Route] = m.WithDefaults()
	}
	wantBy := make(map[string]MemberSpec, len(want))
	for _, m := range want {
		wantBy[m.Route] = m.WithDefaults()
	}
	removed := 0
	for _, route := range unionKeys(haveBy, wantBy) {
		h, inHave := haveBy[route]
		w, inWant := wantBy[route]
		switch {
		case !inWant:
			removed++
			out = append(out, MemberChange{Op: OpRemove, Pool: pool, Member: h})
		case !inHave:
			w.Verdict = Up
			out = append(out, MemberChange{Op: OpAdd, Pool: pool, Member: w})
		default:
			var fields []FieldChange
			if h.URL != w.URL {
				fields = append(fields, FieldChange{Field: "url", Old: h.URL, New: w.URL})
			}
			if h.Weight != w.Weight {
				fields = append(fields, FieldChange{Field: "weight", Old: strconv.Itoa(h.Weight), New: strconv.Itoa(w.Weight)})
			}
			if len(fields) > 0 {
				// Admin state is operational: keep what the member has.
				w.State, w.Verdict = h.State, h.Verdict
				out = append(out, MemberChange{Op: OpChange, Pool: pool, Member: w, Fields: fields})
			}
		}
	}
	return out, removed
}

// String prints the plan as kubectl diff-like lines, one change per line,
// grouped by pool (the pool's own lines first). For example:
//
//	~ pool backend fail_timeout 10s -> 5s
//	~ pool backend member 2 weight 1 -> 2
//	- pool backend member 3 url=http://10.0.0.3:9081 weight=1 state=drain
//	+ pool backend member 4 url=http://10.0.0.4:9081 weight=1 state=active
//	- pool old (2 members)
//	+ pool reports prefix="/reports" sticky.cookie="ROUTEID"
//
// An empty plan prints "".
func (p Plan) String() string {
	var b strings.Builder
	mi := 0
	names := make([]string, 0, len(p.Pools))
	for _, pc := range p.Pools {
		names = append(names, pc.Pool.Name)
	}
	for _, mc := range p.Members {
		names = append(names, mc.Pool)
	}
	slices.Sort(names)
	names = slices.Compact(names)
	for _, name := range names {
		for _, pc := range p.Pools {
			if pc.Pool.Name == name {
				writePoolChange(&b, pc)
			}
		}
		for mi < len(p.Members) && p.Members[mi].Pool < name {
			mi++
		}
		for ; mi < len(p.Members) && p.Members[mi].Pool == name; mi++ {
			writeMemberChange(&b, p.Members[mi])
		}
	}
	return b.String()
}

func writePoolChange(b *strings.Builder, pc PoolChange) {
	switch pc.Op {
	case OpAdd:
		fmt.Fprintf(b, "+ pool %s", pc.Pool.Name)
		for _, f := range pc.Fields {
			fmt.Fprintf(b, " %s=%s", f.Field, f.New)
		}
		b.WriteByte('\n')
	case OpChange:
		for _, f := range pc.Fields {
			fmt.Fprintf(b, "~ pool %s %s %s -> %s\n", pc.Pool.Name, f.Field, f.Old, f.New)
		}
	case OpRemove:
		fmt.Fprintf(b, "- pool %s (%d members)\n", pc.Pool.Name, pc.Members)
	}
}

func writeMemberChange(b *strings.Builder, mc MemberChange) {
	m := mc.Member
	switch mc.Op {
	case OpAdd, OpRemove:
		fmt.Fprintf(b, "%c pool %s member %s url=%s weight=%d state=%s\n", mc.Op, mc.Pool, m.Route, m.URL, m.Weight, m.State)
	case OpChange:
		for _, f := range mc.Fields {
			fmt.Fprintf(b, "~ pool %s member %s %s %s -> %s\n", mc.Pool, m.Route, f.Field, f.Old, f.New)
		}
	}
}

// diffFields lists the fields of two pools (members aside) that differ, in
// PoolSpec's field order, named by their yaml paths. It walks the struct,
// so a field added to PoolSpec is compared without anyone remembering to.
func diffFields(old, new PoolSpec) []FieldChange {
	var out []FieldChange
	walkFields("", reflect.ValueOf(old), reflect.ValueOf(new), &out)
	return out
}

var durationType = reflect.TypeFor[time.Duration]()

func walkFields(prefix string, a, b reflect.Value, out *[]FieldChange) {
	t := a.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if tag == "" || tag == "-" || (prefix == "" && (tag == "name" || tag == "members")) {
			continue
		}
		path := prefix + tag
		fa, fb := a.Field(i), b.Field(i)
		if fa.Kind() == reflect.Struct {
			walkFields(path+".", fa, fb, out)
			continue
		}
		if va, vb := fieldValue(fa), fieldValue(fb); va != vb {
			*out = append(*out, FieldChange{Field: path, Old: va, New: vb})
		}
	}
}

// fieldValue prints one leaf field of a pool: strings quoted, durations as
// Go prints them (10s, 1m30s), an unset pointer as "default".
func fieldValue(v reflect.Value) string {
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return "default"
		}
		v = v.Elem()
	}
	switch {
	case v.Type() == durationType:
		return time.Duration(v.Int()).String()
	case v.Kind() == reflect.String:
		return strconv.Quote(v.String())
	}
	return fmt.Sprint(v.Interface())
}

func withoutMembers(p PoolSpec) PoolSpec {
	p.Members = nil
	return p
}

func poolsByName(pools []PoolSpec) map[string]PoolSpec {
	m := make(map[string]PoolSpec, len(pools))
	for _, p := range pools {
		m[p.Name] = p
	}
	return m
}

// unionKeys returns the keys of a and b, sorted.
func unionKeys[V any](a, b map[string]V) []string {
	keys := make([]string, 0, len(a)+len(b))
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

// PoolsFromState returns the pools of a replicated state with their
// members, in the stored form (no defaults applied): pools by name, members
// by route. It is what PlanChanges compares a config file with.
func PoolsFromState(st *gwelbv1.State) []PoolSpec {
	pools := slices.Clone(st.GetPools())
	slices.SortFunc(pools, comparePools)
	specs := make([]PoolSpec, len(pools))
	byName := make(map[string]int, len(pools))
	for i, p := range pools {
		specs[i] = PoolFromProto(p)
		byName[p.GetName()] = i
	}
	members := slices.Clone(st.GetMembers())
	slices.SortFunc(members, compareMembers)
	for _, m := range members {
		if i, ok := byName[m.GetPool()]; ok {
			specs[i].Members = append(specs[i].Members, MemberFromProto(m))
		}
	}
	return specs
}
