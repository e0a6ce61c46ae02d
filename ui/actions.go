package ui

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/gwelb/gwelb/fsm"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// actionTimeout bounds one write: the admin API waits up to 5 s for a
// leader (DESIGN.md §1.3), then answers.
const actionTimeout = 10 * time.Second

// action is the only state change the dashboard offers: drain, disable,
// enable or set weight of one member, as a call to this node's admin API
// with the session's token (so through Raft, the API's authorization and
// its audit log). It answers 403 without the session's CSRF token, from
// another origin, or to a read-only session; otherwise it redirects back
// to the page with the outcome (post/redirect/get).
func (s *Server) action(w http.ResponseWriter, r *http.Request, sess *session) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if !s.checkPost(w, r, sess) {
		return
	}
	if sess.ReadOnly() {
		s.errorPage(w, r, http.StatusForbidden, "refused: this session logged in with the read-only token")
		return
	}
	pool, route, op := r.PostFormValue("pool"), r.PostFormValue("route"), r.PostFormValue("op")
	back := safeBack(r.PostFormValue("back"))
	if pool == "" || route == "" {
		s.errorPage(w, r, http.StatusBadRequest, "pool and route are required")
		return
	}
	what := op + " " + pool + "/" + route
	ctx, cancel := context.WithTimeout(r.Context(), actionTimeout)
	defer cancel()
	var (
		index uint64
		err   error
		rid   = randomHex(8) // the write's request_id: exact retries, and its audit record
	)
	switch op {
	case "drain", "disable", "enable":
		state := map[string]gwelbv1.AdminState{"drain": gwelbv1.AdminState_ADMIN_STATE_DRAIN,
			"disable": gwelbv1.AdminState_ADMIN_STATE_DISABLED, "enable": gwelbv1.AdminState_ADMIN_STATE_ACTIVE}[op]
		index, err = s.setState(ctx, sess, pool, route, state, rid)
	case "weight":
		raw := strings.TrimSpace(r.PostFormValue("weight"))
		what = fmt.Sprintf("set weight of %s/%s to %s", pool, route, raw)
		w, perr := strconv.Atoi(raw)
		if perr != nil {
			err = status.Errorf(codes.InvalidArgument, "weight %q: want a whole number 1..1000", raw)
			break
		}
		index, err = s.setWeight(ctx, sess, pool, route, w, rid)
	default:
		s.errorPage(w, r, http.StatusBadRequest, "op: want drain, disable, enable or weight")
		return
	}
	outcome := "ok"
	if err != nil {
		outcome = errText(err)
		sess.setFlash(false, what+": "+outcome)
	} else {
		sess.setFlash(true, fmt.Sprintf("%s: done (Raft index %d)", what, index))
	}
	if !s.history.Has(rid) { // this node's audit log did not record it: another node decided it
		who := "token"
		if s.opts.Token == "" && s.opts.ReadToken == "" {
			who = "anonymous (-dev)"
		}
		s.history.Record(Write{Time: time.Now(), Who: who + " on the dashboard of " + s.opts.Node, What: what, Outcome: outcome, RequestID: rid})
	}
	s.log.Info("dashboard action", "remote", r.RemoteAddr, "action", what, "outcome", outcome)
	http.Redirect(w, r, back, http.StatusSeeOther)
}

func (s *Server) setState(ctx context.Context, sess *session, pool, route string, st gwelbv1.AdminState, rid string) (uint64, error) {
	c, err := s.self()
	if err != nil {
		return 0, err
	}
	resp, err := c.SetMemberState(outgoing(ctx, sess.token, false), &gwelbv1.SetMemberStateRequest{
		Pool: pool, Route: route, State: st, RequestId: rid,
	})
	return resp.GetIndex(), err
}

// setWeight changes a member's weight and nothing else: PutMember in
// UPDATE mode keeps the admin state and is refused (NotFound) for a member
// that is gone, decided by the FSM, so a drain racing it is not undone.
func (s *Server) setWeight(ctx context.Context, sess *session, pool, route string, weight int, rid string) (uint64, error) {
	c, err := s.self()
	if err != nil {
		return 0, err
	}
	st, err := c.Status(outgoing(ctx, sess.token, true), &gwelbv1.StatusRequest{})
	if err != nil {
		return 0, err
	}
	var m *gwelbv1.Member
	for _, ps := range st.GetPools() {
		for _, ms := range ps.GetMembers() {
			if ms.GetMember().GetPool() == pool && ms.GetMember().GetRoute() == route {
				m = proto.Clone(ms.GetMember()).(*gwelbv1.Member)
			}
		}
	}
	if m == nil {
		return 0, status.Errorf(codes.NotFound, "no member %s/%s", pool, route)
	}
	if weight < 1 || weight != int(int32(weight)) {
		// 0 would mean "the default" to the member spec (weight 1): an
		// operator typing 0 means something else, so it is refused.
		return 0, status.Errorf(codes.InvalidArgument, "weight %d: want 1..1000", weight)
	}
	m.Weight = int32(weight)
	if err := fsm.ValidateMember(fsm.MemberFromProto(m)); err != nil {
		return 0, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	resp, err := c.PutMember(outgoing(ctx, sess.token, false), &gwelbv1.PutMemberRequest{
		Member: m, RequestId: rid, Mode: gwelbv1.PutMemberMode_PUT_MEMBER_MODE_UPDATE,
	})
	return resp.GetIndex(), err
}
