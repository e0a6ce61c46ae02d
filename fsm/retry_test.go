package fsm

import (
	"errors"
	"fmt"
	"testing"

	"github.com/hashicorp/raft"

	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// applyRaw applies a command and returns Apply's answer as it is.
func (h *fxHarness) applyRaw(cmd *gwelbv1.Command) any {
	h.t.Helper()
	data, err := EncodeCommand(cmd)
	if err != nil {
		h.t.Fatal(err)
	}
	h.index++
	return h.f.Apply(&raft.Log{Index: h.index, Term: 1, Type: raft.LogCommand, Data: data})
}

func withID(c *gwelbv1.Command, id string) *gwelbv1.Command {
	c.RequestId = id
	return c
}

// TestExactRetries: a write whose answer was lost and that is sent again
// with its request id answers what the first attempt answered, and is not
// applied twice (DESIGN.md §5.3).
func TestExactRetries(t *testing.T) {
	h := fxNew(t)
	h.must(fxBackendWith(t0)...)
	firstIndex := h.index + 1

	// RemoveMember applied; its answer "lost"; the retry must not say "not found".
	if resp := h.applyRaw(withID(cmdRemoveMember(t0, "backend", "2"), "rm-1")); resp != nil {
		t.Fatalf("first remove = %v", resp)
	}
	resp := h.applyRaw(withID(cmdRemoveMember(t0, "backend", "2"), "rm-1"))
	if got, ok := resp.(AppliedEarlier); !ok || uint64(got) != firstIndex {
		t.Fatalf("retried remove = %T %v, want AppliedEarlier(%d)", resp, resp, firstIndex)
	}
	// Without the request id it is a new request, and the member is gone.
	if err := h.apply(cmdRemoveMember(t0, "backend", "2")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("new remove = %v, want not found", err)
	}

	// A rejected write is rejected again with the same error, even when it
	// would succeed now.
	err1 := h.apply(withID(cmdSetState(t0, "backend", "9", gwelbv1.AdminState_ADMIN_STATE_DRAIN), "st-1"))
	h.must(cmdPutMember(t0, "backend", "9", "http://127.0.0.1:9"))
	err2 := h.apply(withID(cmdSetState(t0, "backend", "9", gwelbv1.AdminState_ADMIN_STATE_DRAIN), "st-1"))
	if !errors.Is(err1, ErrNotFound) || !errors.Is(err2, ErrNotFound) || err1.Error() != err2.Error() {
		t.Fatalf("answers %v / %v, want the same not-found twice", err1, err2)
	}
	if h.member("backend", "9").GetState() != gwelbv1.AdminState_ADMIN_STATE_ACTIVE {
		t.Fatal("the retried (rejected) write was applied")
	}

	// The window survives a snapshot and restore.
	g := fxRestore(t, fxSnapshot(t, h.f), nil)
	g2 := &fxHarness{t: t, f: g, index: h.index}
	if resp := g2.applyRaw(withID(cmdRemoveMember(t0, "backend", "2"), "rm-1")); resp != AppliedEarlier(firstIndex) {
		t.Fatalf("retry after restore = %v", resp)
	}
}

func TestExactRetriesWindowIsBounded(t *testing.T) {
	h := fxNew(t)
	h.must(fxBackendWith(t0)...)
	for i := range maxOutcomes + 10 {
		h.must(withID(cmdSetState(t0, "backend", "1", gwelbv1.AdminState_ADMIN_STATE_ACTIVE), fmt.Sprint("id-", i)))
	}
	st := h.f.State()
	if n := len(st.GetOutcomes()); n != maxOutcomes {
		t.Fatalf("%d outcomes kept, want %d", n, maxOutcomes)
	}
	if st.GetOutcomes()[0].GetRequestId() != "id-10" {
		t.Fatalf("oldest kept = %q, want id-10", st.GetOutcomes()[0].GetRequestId())
	}
	// id-0 fell out of the window: it is applied as a new request.
	if resp := h.applyRaw(withID(cmdSetState(t0, "backend", "1", gwelbv1.AdminState_ADMIN_STATE_DRAIN), "id-0")); resp != nil {
		t.Fatalf("forgotten id answered %v", resp)
	}
}
