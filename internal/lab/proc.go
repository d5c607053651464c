package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// Proc is a long-running process the lab started inside a host (libvirtd,
// tgtd, or a program under test such as the shareless agent). Its output
// is appended to Log. The lab stops it by PID at cleanup if the test has
// not.
type Proc struct {
	Name string
	Log  string
	cmd  *exec.Cmd
	done chan struct{}
}

// Spawn starts name with args inside the host (its network, mount and UTS
// namespaces) in the background, output appended to DIR/NAME.log.
func (h *Host) Spawn(name string, args ...string) (*Proc, error) {
	return h.spawn(filepath.Base(name), h.Command(context.Background(), name, args...))
}

func (h *Host) spawn(logName string, cmd *exec.Cmd) (*Proc, error) {
	p := &Proc{Name: logName, Log: filepath.Join(h.Dir, logName+".log"), cmd: cmd, done: make(chan struct{})}
	out, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("host %s: starting %s: %w", h.Name, logName, err)
	}
	go func() { cmd.Wait(); close(p.done) }()
	id, err := procIdentity(cmd.Process.Pid)
	if err == nil {
		err = h.lab.record("procs", id)
	}
	if err != nil {
		h.lab.t.Logf("lab: host %s: recording %s (pid %d) for a later sweep: %v", h.Name, logName, cmd.Process.Pid, err)
	}
	h.lab.teardown = append(h.lab.teardown, func() {
		if err := p.Stop(5 * time.Second); err != nil {
			h.lab.t.Logf("lab cleanup: host %s: %v", h.Name, err)
		}
	})
	return p, nil
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Exited is closed when the process has exited.
func (p *Proc) Exited() <-chan struct{} { return p.done }

// Stop sends SIGTERM and waits for the process to exit, killing it after
// grace. Stopping an exited process does nothing.
func (p *Proc) Stop(grace time.Duration) error {
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	return p.Kill()
}

// Kill sends SIGKILL and waits for the process to exit: a crash, for
// fault tests.
func (p *Proc) Kill() error {
	if err := p.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	<-p.done
	return nil
}

// Signal sends sig unless the process has exited, e.g. SIGSTOP and SIGCONT
// to make a daemon hang and recover.
func (p *Proc) Signal(sig syscall.Signal) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("%s (pid %d): %v: %w", p.Name, p.Pid(), sig, err)
	}
	return nil
}

// ExitState is how the process ended, nil while it runs: a test checks
// that a daemon it stopped exited cleanly.
func (p *Proc) ExitState() *os.ProcessState {
	select {
	case <-p.done:
		return p.cmd.ProcessState
	default:
		return nil
	}
}
