package rpcerr

import (
	"errors"
	"fmt"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestNoLeaderReason(t *testing.T) {
	info := func(code codes.Code, reason, domain string) error {
		st, err := status.New(code, "m").WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: domain})
		if err != nil {
			t.Fatal(err)
		}
		return st.Err()
	}
	for _, tc := range []struct {
		name   string
		err    error
		reason string
		is     bool
	}{
		{"nil", nil, "", false},
		{"NoLeader", NoLeader("between elections"), ReasonNoLeader, true},
		{"wrapped", fmt.Errorf("relay: %w", NoLeader("x")), ReasonNoLeader, true},
		{"the words only", status.Error(codes.Unavailable, "no leader"), "", false},
		{"not a status", errors.New("no leader"), "", false},
		{"another domain", info(codes.Unavailable, ReasonNoLeader, "example.com"), "", false},
		{"another code", info(codes.Internal, ReasonNoLeader, Domain), ReasonNoLeader, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Reason(status.Convert(tc.err)); got != tc.reason {
				t.Errorf("Reason = %q, want %q", got, tc.reason)
			}
			if got := IsNoLeader(tc.err); got != tc.is {
				t.Errorf("IsNoLeader = %v, want %v", got, tc.is)
			}
		})
	}
	if st := status.Convert(NoLeader("between elections")); st.Code() != codes.Unavailable || st.Message() != "between elections" {
		t.Errorf("NoLeader status %v %q, want Unavailable with the message as given", st.Code(), st.Message())
	}
}
