package cluster

import (
	"bytes"
	"math"
	"testing"

	"github.com/hashicorp/raft"
)

// The commit index a heartbeat carries (transport.go stampBeat) comes off
// whole and leaves raft's own Leader field as raft made it; anything else
// in the field (raft's plain address, a stamp cut short or followed by
// more bytes) names no commit and is passed on untouched.
func TestBeatStamp(t *testing.T) {
	addr := []byte("127.0.0.1:7101")
	request := func(leader []byte) *raft.AppendEntriesRequest {
		r := &raft.AppendEntriesRequest{Term: 3}
		*leaderField(r) = bytes.Clone(leader)
		return r
	}
	stamped := func(commit uint64) []byte { return *leaderField(stampBeat(request(addr), commit)) }
	for _, tc := range []struct {
		name       string
		leader     []byte
		commit     uint64
		ok         bool
		wantLeader []byte
	}{
		{"commit 0", stamped(0), 0, true, addr},
		{"commit 1", stamped(1), 1, true, addr},
		{"commit 300", stamped(300), 300, true, addr},
		{"largest commit", stamped(math.MaxUint64), math.MaxUint64, true, addr},
		{"no address", *leaderField(stampBeat(request(nil), 7)), 7, true, []byte{}},
		{"raft's address alone", addr, 0, false, addr},
		{"empty", nil, 0, false, nil},
		{"stamp without a number", append(bytes.Clone(addr), beatStamp...), 0, false, append(bytes.Clone(addr), beatStamp...)},
		{"number cut short", stamped(300)[:len(stamped(300))-1], 0, false, stamped(300)[:len(stamped(300))-1]},
		{"bytes after the number", append(stamped(5), 'x'), 0, false, append(stamped(5), 'x')},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := request(tc.leader)
			commit, ok := takeStamp(req)
			if ok != tc.ok || commit != tc.commit {
				t.Errorf("takeStamp = %d, %v; want %d, %v", commit, ok, tc.commit, tc.ok)
			}
			if got := *leaderField(req); !bytes.Equal(got, tc.wantLeader) {
				t.Errorf("Leader after takeStamp %q, want %q", got, tc.wantLeader)
			}
		})
	}
	// raft's heartbeat loop sends the same request every time: stamping
	// must not change it.
	args := request(addr)
	if s := stampBeat(args, 9); s == args || !bytes.Equal(*leaderField(args), addr) || s.Term != 3 {
		t.Errorf("stampBeat changed raft's request: Leader %q", *leaderField(args))
	}
}
