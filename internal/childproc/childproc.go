// Package childproc starts and stops the child processes of gwelb's
// process-level harnesses (the chaos suite, deploy/benchscale): gwelb nodes
// and stand-in GWE servers, each with its output appended to a log file.
//
// A child gets its own process group, so a Ctrl-C reaches only the
// harness, which then cleans up, and dies with the harness (Pdeathsig), so
// a killed harness leaves no process behind.
package childproc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Proc is one child process.
type Proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error // the exit status, set when done is closed
}

// Start starts argv, with env added to this process's environment and its
// output appended to logPath after a line that says when and what started.
func Start(name string, argv, env []string, logPath string) (*Proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("log of %s: %w", name, err)
	}
	fmt.Fprintf(f, "=== %s starting %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(argv, " "))
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// Name is the name Start was given.
func (p *Proc) Name() string { return p.name }

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Done is closed once the process has ended.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is the process's exit status once Done is closed (nil: exit 0).
func (p *Proc) Err() error {
	<-p.done
	return p.err
}

// Exited tells whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig syscall.Signal) error {
	if p.Exited() {
		return fmt.Errorf("%s: already exited", p.name)
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal %v to %s: %w", sig, p.name, err)
	}
	return nil
}

// Wait waits for the process to end, at most d.
func (p *Proc) Wait(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
		return fmt.Errorf("%s still running after %v", p.name, d)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Kill ends the process with SIGKILL (which a stopped process gets too)
// and waits up to 10 s for it to be gone; nil or ended is a no-op.
func (p *Proc) Kill() error {
	if p == nil || p.Exited() {
		return nil
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill %s: %w", p.name, err)
	}
	return p.Wait(context.Background(), 10*time.Second)
}

// DumpAndKill asks a hung Go process for its goroutines (SIGQUIT makes the
// runtime print them to the log and exit), then makes sure it is gone.
func (p *Proc) DumpAndKill() error {
	if p == nil || p.Exited() {
		return nil
	}
	if err := p.cmd.Process.Signal(syscall.SIGQUIT); err == nil {
		if p.Wait(context.Background(), 3*time.Second) == nil {
			return nil
		}
	}
	return p.Kill()
}

// Sleep paces a loop or spans a measurement window, or ends early with
// ctx; it never stands in for waiting on a condition.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
