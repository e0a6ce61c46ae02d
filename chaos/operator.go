package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/gwelb/gwelb/fsm"
	"github.com/gwelb/gwelb/internal/childproc"
	"github.com/gwelb/gwelb/internal/snapstream"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// opTimeout bounds every admin call of the operator: more than gwelb's own
// write timeout (5 s of waiting for a leader), so that a call through a
// live node in a healthy cluster always gets gwelb's answer.
const opTimeout = 8 * time.Second

// operator is one operator client: it changes the extra members through
// random nodes (the gRPC API or gwelbctl) and reads them back.
type operator struct {
	d   *driver
	id  int
	rng *rand.Rand
}

// run makes calls until ctx ends. A call in flight then runs to its end
// (its own deadline): a write cut short could still be applied, and it
// must be in the history with its outcome.
func (o *operator) run(ctx context.Context) {
	for ctx.Err() == nil {
		if childproc.Sleep(ctx, between(o.rng, 200*time.Millisecond, 700*time.Millisecond)) != nil {
			return
		}
		o.d.opMu.RLock()
		if o.rng.IntN(5) == 0 {
			o.d.rec.addAdmin(o.d.readMembers(context.Background(), pick(o.rng, o.d.dnsNodes()), o.id))
		} else {
			o.write(context.Background())
		}
		o.d.opMu.RUnlock()
	}
}

// adminState is the protobuf value of an admin state's name (fsm parses
// names; chaos only picks valid ones).
func adminState(name string) gwelbv1.AdminState {
	s, err := fsm.ParseAdminState(name)
	if err != nil {
		panic(err)
	}
	return s.Proto()
}

func stateName(s gwelbv1.AdminState) string { return fsm.AdminStateFromProto(s).String() }

// write makes one random write on one extra member.
func (o *operator) write(ctx context.Context) {
	e := pick(o.rng, o.d.extra)
	op := AdminOp{Client: o.id, Key: e.key()}
	switch r := o.rng.IntN(10); {
	case r < 4:
		op.Kind, op.Weight = opPut, int32(1+o.rng.IntN(3))
	case r < 8:
		op.Kind = opSet
	default:
		op.Kind = opRemove
	}
	if op.Kind != opRemove {
		op.State = pick(o.rng, []string{"active", "active", "drain", "disabled"})
	}
	n := pick(o.rng, o.d.dnsNodes())
	op.Via = n.name
	if o.rng.IntN(4) == 0 {
		op.Tool = "gwelbctl"
		if op.Kind == opPut {
			op.Kind = opCreate // member add refuses a route that exists
		}
		o.d.ctlWrite(ctx, n, e, &op)
	} else {
		op.Tool = "grpc"
		o.d.grpcWrite(ctx, n, e, &op)
	}
	o.d.rec.addAdmin(op)
}

// grpcWrite makes the write through the admin API of n.
func (d *driver) grpcWrite(ctx context.Context, n *gnode, e extraMember, op *AdminOp) {
	cctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	id := fmt.Sprintf("chaos-%d-%d", d.seed, time.Now().UnixNano())
	c := n.client()
	op.Invoke = d.now()
	var resp *gwelbv1.WriteResponse
	var err error
	switch op.Kind {
	case opPut:
		resp, err = c.PutMember(cctx, &gwelbv1.PutMemberRequest{RequestId: id, Member: &gwelbv1.Member{
			Pool: e.pool, Route: e.route, Url: e.server.url, Weight: op.Weight, State: adminState(op.State)}})
	case opSet:
		resp, err = c.SetMemberState(cctx, &gwelbv1.SetMemberStateRequest{RequestId: id, Pool: e.pool, Route: e.route, State: adminState(op.State)})
	case opRemove:
		resp, err = c.RemoveMember(cctx, &gwelbv1.RemoveMemberRequest{RequestId: id, Pool: e.pool, Route: e.route})
	}
	op.Return = d.now()
	op.Outcome, op.Err = classify(err)
	if err == nil {
		op.Index = resp.GetIndex()
	}
}

// classify maps an admin API error onto an outcome. Only a call that
// never reached a node (the dial failed) certainly did nothing; any other
// failure may have been applied.
func classify(err error) (string, string) {
	if err == nil {
		return outOK, ""
	}
	st := status.Convert(err)
	msg := st.Message()
	switch st.Code() {
	case codes.NotFound:
		return outNotFound, msg
	case codes.InvalidArgument, codes.Unauthenticated, codes.PermissionDenied:
		return outInvalid, msg
	case codes.Unavailable:
		if strings.Contains(msg, "Error while dialing") {
			return outFailed, msg
		}
	}
	return outIndeterminate, st.Code().String() + ": " + msg
}

// ctlWrite makes the write with bin/gwelbctl, as an operator at a shell.
func (d *driver) ctlWrite(ctx context.Context, n *gnode, e extraMember, op *AdminOp) {
	args := []string{"member"}
	switch op.Kind {
	case opCreate:
		args = append(args, "add", e.pool, e.route, e.server.url, "--weight", strconv.Itoa(int(op.Weight)), "--state", op.State)
	case opRemove:
		args = append(args, "remove", e.pool, e.route)
	case opSet:
		verb := map[string]string{"active": "enable", "drain": "drain", "disabled": "disable"}[op.State]
		args = append(args, verb, e.pool, e.route)
	}
	op.Invoke = d.now()
	code, stdout, stderr := d.gwelbctl(ctx, n, opTimeout, args...)
	op.Return = d.now()
	switch code {
	case 0:
		op.Outcome = outOK
		var w struct {
			Index string `json:"index"`
		}
		if json.Unmarshal(stdout, &w) == nil {
			op.Index, _ = strconv.ParseUint(w.Index, 10, 64)
		}
	case 6:
		op.Outcome = outNotFound
	case 1:
		// gwelbctl gives "already exists" no exit code of its own; its
		// message says the member was left as it is.
		op.Outcome = outIndeterminate
		if op.Kind == opCreate && strings.Contains(string(stderr), "already exists; it was not changed") {
			op.Outcome = outExists
		}
	case 2, 5:
		op.Outcome = outInvalid
	case 3:
		// Unreachable: certain only when the connection was refused.
		op.Outcome = outIndeterminate
		if strings.Contains(string(stderr), "connection refused") {
			op.Outcome = outFailed
		}
	default:
		op.Outcome = outIndeterminate
	}
	if code != 0 {
		op.Err = fmt.Sprintf("gwelbctl exit %d: %s", code, strings.TrimSpace(string(stderr)))
	}
}

// gwelbctl runs bin/gwelbctl against node n and returns its exit code
// (-1 when it could not run) and output.
func (d *driver) gwelbctl(ctx context.Context, n *gnode, timeout time.Duration, args ...string) (int, []byte, []byte) {
	cctx, cancel := context.WithTimeout(ctx, timeout+5*time.Second)
	defer cancel()
	argv := []string{"--addr", n.grpcAddr, "--timeout", timeout.String(), "-o", "json"}
	if ca, err := d.caFile(); err == nil {
		argv = append(argv, "--ca-file", ca)
	}
	argv = append(argv, args...)
	cmd := exec.CommandContext(cctx, filepath.Join(d.bin, "gwelbctl"), argv...)
	cmd.Env = append(cmd.Environ(), "GWELB_TOKEN="+d.token)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, stdout.Bytes(), stderr.Bytes()
	case errors.As(err, &ee) && ee.ExitCode() >= 0:
		return ee.ExitCode(), stdout.Bytes(), stderr.Bytes()
	}
	return -1, stdout.Bytes(), []byte(err.Error())
}

// readMembers makes one linearizable read of the extra members through n
// with SnapshotSave, which the leader answers after a barrier (lin.go).
func (d *driver) readMembers(ctx context.Context, n *gnode, client int) AdminOp {
	op := AdminOp{Client: client, Kind: opRead, Via: n.name, Tool: "grpc", Invoke: d.now()}
	st, err := d.snapshot(ctx, n)
	op.Return = d.now()
	op.Outcome, op.Err = classify(err)
	if err != nil {
		return op
	}
	op.Read = d.extraOf(st)
	return op
}

// snapshot fetches the replicated state through n (SnapshotSave).
func (d *driver) snapshot(ctx context.Context, n *gnode) (*gwelbv1.State, error) {
	cctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	stream, err := n.client().SnapshotSave(cctx, &gwelbv1.SnapshotSaveRequest{})
	if err != nil {
		return nil, err
	}
	data, err := snapstream.Receive(stream.Recv, snapstream.MaxBytes)
	if err != nil {
		return nil, err
	}
	var st gwelbv1.State
	if err := proto.Unmarshal(data, &st); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "snapshot of %s: %v", n.name, err)
	}
	return &st, nil
}

// extraOf picks the extra members out of a state.
func (d *driver) extraOf(st *gwelbv1.State) map[string]MemberVal {
	out := map[string]MemberVal{}
	want := map[string]bool{}
	for _, e := range d.extra {
		want[e.key()] = true
	}
	for _, m := range st.GetMembers() {
		k := key(m.GetPool(), m.GetRoute())
		if want[k] {
			out[k] = MemberVal{Present: true, Weight: m.GetWeight(), State: stateName(m.GetState())}
		}
	}
	return out
}
