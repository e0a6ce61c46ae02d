// Package rpcerr holds the machine-readable reasons gwelb attaches to the
// gRPC statuses of its admin API, so that clients (gwelbctl, a node
// forwarding a request) act on a status code and a reason, never on the
// wording of a message, which is for people and may change.
//
// A reason travels as a google.rpc.ErrorInfo detail of the status. It
// survives forwarding: a follower that relays a request to the leader
// returns the leader's status as is, details included.
package rpcerr

import (
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Domain is the ErrorInfo domain of gwelb's reasons.
const Domain = "gwelb.io"

// ReasonNoLeader says the request needs the Raft leader and none could
// serve it: none is elected, or leadership moved while the request was on
// its way. The cluster may be fine a moment later; retry.
const ReasonNoLeader = "NO_LEADER"

// NoLeader returns an Unavailable status error with message msg and the
// reason ReasonNoLeader.
func NoLeader(msg string) error {
	return withReason(codes.Unavailable, msg, ReasonNoLeader)
}

// withReason returns a status error with an ErrorInfo detail of Domain.
func withReason(code codes.Code, msg, reason string) error {
	st := status.New(code, msg)
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: Domain}); err == nil {
		st = d
	}
	return st.Err()
}

// Reason returns the gwelb reason in st's details, or "" when there is
// none (a transport failure, a status from an older node).
func Reason(st *status.Status) string {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == Domain {
			return info.GetReason()
		}
	}
	return ""
}

// IsNoLeader reports whether err is an Unavailable status with the reason
// ReasonNoLeader (also when err wraps it).
func IsNoLeader(err error) bool {
	st, ok := status.FromError(err)
	return err != nil && ok && st.Code() == codes.Unavailable && Reason(st) == ReasonNoLeader
}
