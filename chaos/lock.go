package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/gwelb/gwelb/internal/childproc"
)

// lockWait is how long a run waits for another run on the machine to end:
// longer than a long profile, so CI waits out a developer's make chaos-long.
const lockWait = 40 * time.Minute

// lockRun makes runs on one machine take turns: they share the namespace
// names, the 100.127.77.0/24 network and the loopback ports, and a run
// starts by removing what an earlier run left behind, so two at once would
// destroy each other (CI and a developer on the same machine, say). The
// lock is an flock, so the kernel releases it when a run dies however it
// dies, and leftovers found under the lock are always a dead run's.
func lockRun(ctx context.Context, log *slog.Logger) (release func(), err error) {
	path := filepath.Join(os.TempDir(), "gwchaos.lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return nil, fmt.Errorf("run lock %s: %w", path, err)
	}
	deadline := time.Now().Add(lockWait)
	logged := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if err != syscall.EWOULDBLOCK {
			f.Close()
			return nil, fmt.Errorf("run lock %s: %w", path, err)
		}
		if !logged {
			log.Warn("another chaos run holds the machine; waiting for it to end", "lock", path, "at_most", lockWait)
			logged = true
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("another chaos run held %s for more than %v", path, lockWait)
		}
		if err := childproc.Sleep(ctx, 500*time.Millisecond); err != nil {
			f.Close()
			return nil, err
		}
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
