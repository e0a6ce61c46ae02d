package cluster

import (
	"context"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gwelb/gwelb/fsm"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// PoolSpecs returns the replicated pools with their members as this node's
// FSM holds them (stored form: what was written, defaults as the writer
// applied them), pools by name and members by route. Compare them with a
// config file's pools with fsm.PlanChanges, which applies defaults to both.
func (n *Node) PoolSpecs() []fsm.PoolSpec {
	return fsm.PoolsFromState(n.fsm.State())
}

// PutPool adds a pool or replaces its settings through Raft; its members
// are kept. The pool is judged by the one validator (fsm.ValidatePool)
// before anything is proposed, and again by the FSM, which also refuses a
// prefix another pool has (DESIGN.md §5.1). With expected settings it is
// a compare-and-set, decided in Apply: Aborted, nothing changed, when the
// pool's settings are not those any more (§5.2). Read-write: not in
// readOnlyMethods.
func (s *adminServer) PutPool(ctx context.Context, req *gwelbv1.PutPoolRequest) (*gwelbv1.WriteResponse, error) {
	p := req.GetPool()
	cmd := &gwelbv1.Command{Op: &gwelbv1.Command_PutPool{PutPool: &gwelbv1.PutPool{Pool: p, Expected: req.GetExpected()}}}
	if err := checkPool(p); err != nil {
		return nil, s.refuse(ctx, req.GetRequestId(), cmd, err)
	}
	if e := req.GetExpected(); e != nil && e.GetName() != p.GetName() {
		return nil, s.refuse(ctx, req.GetRequestId(), cmd, status.Errorf(codes.InvalidArgument, "put pool %s: expected settings of pool %q", p.GetName(), e.GetName()))
	}
	return s.write(ctx, req.GetRequestId(), cmd)
}

// RemovePool removes a pool and its members through Raft; an unknown pool
// is NotFound.
func (s *adminServer) RemovePool(ctx context.Context, req *gwelbv1.RemovePoolRequest) (*gwelbv1.WriteResponse, error) {
	cmd := &gwelbv1.Command{Op: &gwelbv1.Command_RemovePool{RemovePool: &gwelbv1.RemovePool{Name: req.GetName()}}}
	if req.GetName() == "" {
		return nil, s.refuse(ctx, req.GetRequestId(), cmd, status.Error(codes.InvalidArgument, "remove pool: name is required"))
	}
	return s.write(ctx, req.GetRequestId(), cmd)
}

// checkPool judges a pool before it is proposed, so a bad pool costs no
// Raft entry and reads the same wherever it is caught.
func checkPool(p *gwelbv1.Pool) error {
	if p == nil {
		return status.Error(codes.InvalidArgument, "put pool: pool is required")
	}
	if err := fsm.ValidatePool(fsm.PoolFromProto(p)); err != nil {
		return status.Errorf(codes.InvalidArgument, "put pool %s: %s", p.GetName(), strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	return nil
}
