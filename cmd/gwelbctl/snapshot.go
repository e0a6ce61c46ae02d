package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/gwelb/gwelb/internal/snapstream"
	gwelbv1 "github.com/gwelb/gwelb/proto/gwelb/v1"
)

func (a *app) snapshotCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Save and restore the replicated state",
		RunE:  groupRunE,
	}
	cmd.AddCommand(a.snapshotSaveCmd(), a.snapshotRestoreCmd())
	return cmd
}

func (a *app) snapshotSaveCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "save FILE",
		Short: "Save a snapshot of the replicated state to FILE",
		Long: `Save a snapshot of the replicated state (pools, members, admin states,
balancer nodes, observations) to FILE. The snapshot is written to FILE.tmp
and renamed to FILE once complete, so FILE is never left half written.`,
		Args: args("FILE"),
		RunE: func(cmd *cobra.Command, argv []string) error {
			path := argv[0]
			n, err := a.connect()
			if err != nil {
				return err
			}
			defer n.close()
			ctx, cancel := a.callContext(cmd)
			defer cancel()
			stream, err := n.api.SnapshotSave(ctx, &gwelbv1.SnapshotSaveRequest{})
			if err != nil {
				return n.fail("snapshot save", err)
			}
			size, err := writeFileAtomic(path, func(w io.Writer) (int64, error) {
				data, err := snapstream.Receive(stream.Recv, snapstream.MaxBytes)
				if errors.Is(err, snapstream.ErrTooLarge) {
					return 0, fmt.Errorf("snapshot save: %w", err)
				}
				if err != nil {
					return 0, n.fail("snapshot save", err)
				}
				k, err := w.Write(data)
				if err != nil {
					return int64(k), fmt.Errorf("write %s: %w", path+".tmp", err)
				}
				return int64(k), nil
			})
			if err != nil {
				return err
			}
			if a.jsonOutput() {
				return a.printJSON(map[string]any{"path": path, "bytes": size})
			}
			_, err = fmt.Fprintf(a.stdout, "saved snapshot: %d bytes to %s\n", size, path)
			return err
		},
	}
}

// writeFileAtomic writes path through fill into path+".tmp", syncs it and
// renames it to path. On failure the temporary file is removed. An empty
// result is an error: a snapshot always holds something.
func writeFileAtomic(path string, fill func(io.Writer) (int64, error)) (int64, error) {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, fmt.Errorf("create snapshot file: %w", err)
	}
	size, err := fill(f)
	if err == nil && size == 0 {
		err = errors.New("snapshot save: the node sent an empty snapshot")
	}
	if err == nil {
		if err = f.Sync(); err != nil {
			err = fmt.Errorf("sync %s: %w", tmp, err)
		}
	}
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close %s: %w", tmp, cerr)
	}
	if err == nil {
		if err = os.Rename(tmp, path); err != nil {
			err = fmt.Errorf("rename snapshot file: %w", err)
		}
	}
	if err != nil {
		_ = os.Remove(tmp)
		return 0, err
	}
	return size, nil
}

func (a *app) snapshotRestoreCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "restore FILE",
		Short: "Replace the replicated state with a saved snapshot",
		Long: `Replace the replicated state of the whole cluster with the snapshot in FILE,
made by "gwelbctl snapshot save". Every change since the snapshot is lost.`,
		Args: args("FILE"),
		RunE: func(cmd *cobra.Command, argv []string) error {
			path := argv[0]
			data, err := readSnapshotFile(path)
			if err != nil {
				return err
			}
			n, err := a.connect()
			if err != nil {
				return err
			}
			defer n.close()
			ctx, cancel := a.callContext(cmd)
			defer cancel()
			stream, err := n.api.SnapshotRestore(ctx)
			if err != nil {
				return n.fail("snapshot restore", err)
			}
			// On a failed send the stream is broken; its status comes
			// from CloseAndRecv below.
			_ = snapstream.Send(data, stream.Send)
			resp, err := stream.CloseAndRecv()
			if err != nil {
				return n.fail("snapshot restore", err)
			}
			if a.jsonOutput() {
				return a.printProto(resp)
			}
			_, err = fmt.Fprintf(a.stdout, "restored snapshot: %d bytes from %s (index %d)\n", len(data), path, resp.GetIndex())
			return err
		},
	}
}

// readSnapshotFile reads a snapshot file whole, refusing an empty one and
// one larger than any node would accept (checked before reading, so a wrong
// path to a huge file fails at once).
func readSnapshotFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open snapshot: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat snapshot: %w", err)
	}
	switch {
	case fi.Size() == 0:
		return nil, fmt.Errorf("snapshot restore: %s is empty", path)
	case fi.Size() > snapstream.MaxBytes:
		return nil, fmt.Errorf("snapshot restore: %s: %w: %d bytes, at most %d", path, snapstream.ErrTooLarge, fi.Size(), snapstream.MaxBytes)
	}
	data, err := io.ReadAll(io.LimitReader(f, snapstream.MaxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read snapshot: %w", err)
	}
	if len(data) > snapstream.MaxBytes {
		return nil, fmt.Errorf("snapshot restore: %s: %w: grew past %d bytes while read", path, snapstream.ErrTooLarge, snapstream.MaxBytes)
	}
	return data, nil
}
