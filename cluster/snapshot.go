package cluster

import (
	"bytes"
	"errors"
	"io"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/gwelb/gwelb/fsm"
	"github.com/gwelb/gwelb/internal/snapstream"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

// maxSnapshotBytes bounds a restored snapshot; the state is a few KiB per
// hundred members.
const maxSnapshotBytes = snapstream.MaxBytes

// SnapshotSave streams the leader's state (forwarded when asked on a
// follower), after a barrier, so the snapshot holds every acknowledged write.
func (s *adminServer) SnapshotSave(req *gwelbv1.SnapshotSaveRequest, stream grpc.ServerStreamingServer[gwelbv1.SnapshotChunk]) error {
	n := s.n
	ctx := stream.Context()
	if !n.IsLeader() {
		c, err := n.leaderClient(ctx)
		if err != nil {
			return err
		}
		up, err := c.SnapshotSave(n.peers.outgoing(ctx), req)
		if err != nil {
			return err
		}
		for {
			chunk, err := up.Recv()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			if err := stream.Send(chunk); err != nil {
				return err
			}
		}
	}
	if err := awaitRaft(stream.Context(), n.raft.Barrier(n.cfg.WriteTimeout)); err != nil {
		return raftUnavailable("barrier", err)
	}
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(n.fsm.State())
	if err != nil {
		return status.Errorf(codes.Internal, "marshal state: %v", err)
	}
	return snapstream.Send(data, stream.Send)
}

// SnapshotRestore installs a saved state through raft.Restore on the leader,
// which makes every follower install it too.
func (s *adminServer) SnapshotRestore(stream grpc.ClientStreamingServer[gwelbv1.SnapshotChunk, gwelbv1.SnapshotRestoreResponse]) error {
	n := s.n
	ctx := stream.Context()
	raw, err := snapstream.Receive(stream.Recv, maxSnapshotBytes)
	if errors.Is(err, snapstream.ErrTooLarge) {
		return status.Errorf(codes.InvalidArgument, "snapshot larger than %d bytes", maxSnapshotBytes)
	}
	if err != nil {
		return err
	}
	// The one validator judges the snapshot before anything is proposed.
	st, _, err := fsm.DecodeState(raw)
	if err != nil {
		err = status.Errorf(codes.InvalidArgument, "snapshot refused, nothing restored: %v", err)
		n.auditRestore(ctx, raw, nil, 0, err)
		return err
	}
	if !n.IsLeader() {
		c, err := n.leaderClient(ctx)
		if err != nil {
			n.auditRestore(ctx, raw, st, 0, err)
			return err
		}
		// The leader logs the restore, naming the caller (audit.go).
		up, err := c.SnapshotRestore(n.relayContext(ctx))
		if err != nil {
			return err
		}
		// In chunks: the whole snapshot in one message would pass gRPC's
		// 4 MiB message limit long before maxSnapshotBytes. A failed send
		// breaks the stream; its status comes from CloseAndRecv.
		_ = snapstream.Send(raw, up.Send)
		resp, err := up.CloseAndRecv()
		if err != nil {
			return err
		}
		return stream.SendAndClose(resp)
	}
	// The saved state carries the index it was saved at, older than the
	// tables the nodes route on now, and a node's data plane only moves to
	// newer tables: stamp the state with the index Raft installs it at
	// (meta.Index+1), so every proxy switches to the restored table.
	st.Index = max(st.GetIndex(), n.raft.LastIndex()+1)
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(st)
	if err != nil {
		return status.Errorf(codes.Internal, "marshal state: %v", err)
	}
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Index: st.Index - 1, Size: int64(len(data))}
	if err := n.raft.Restore(meta, bytes.NewReader(data), n.cfg.WriteTimeout); err != nil {
		err = raftUnavailable("restore", err)
		n.auditRestore(ctx, raw, st, 0, err)
		return err
	}
	index := n.raft.AppliedIndex()
	n.auditRestore(ctx, raw, st, index, nil)
	return stream.SendAndClose(&gwelbv1.SnapshotRestoreResponse{Index: index})
}
