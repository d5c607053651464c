// Package tgtd runs Debian's iSCSI target daemon (tgt) for tests: each
// Server is a private tgtd with its own control port and portal, torn
// down when the test ends. Tests use it to prove interoperability with a
// target the project did not write.
package tgtd

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/shareless/shareless/internal/testenv"
)

// Control ports this package may use (tgtd -C); other test suites use
// other ranges.
const (
	ctrlFirst = 150
	ctrlLast  = 199
)

// Target is one target to configure.
type Target struct {
	IQN string
	// LUNs are backing files, served as LUN 1, 2, ... (LUN 0 is tgtd's
	// controller).
	LUNs []string
	// Thin turns on thin provisioning (UNMAP, WRITE SAME with UNMAP, GET
	// LBA STATUS, LBPME).
	Thin bool
	// User and Secret enable one-way CHAP; MutualUser and MutualSecret
	// are what the target answers with in mutual CHAP.
	User, Secret             string
	MutualUser, MutualSecret string
	// Params are target parameters (tgtadm --mode target --op update).
	Params map[string]string
}

// Server is a running tgtd.
type Server struct {
	t       testing.TB
	tgtd    string
	tgtadm  string
	Ctrl    int
	Port    int
	lock    *os.File
	cmd     *exec.Cmd
	exited  chan struct{}
	logPath string
	targets []Target
}

// Start runs a tgtd on 127.0.0.1 with a free portal port, or ends the test
// if tgtd is missing or not run as root.
func Start(t testing.TB) *Server {
	t.Helper()
	testenv.NeedRoot(t)
	paths := testenv.NeedCommands(t, "tgtd", "tgtadm")
	s := &Server{t: t, tgtd: paths[0], tgtadm: paths[1], Port: testenv.FreePort(t),
		logPath: filepath.Join(t.TempDir(), "tgtd.log")}
	s.Ctrl, s.lock = claimCtrlPort(t)
	t.Cleanup(func() {
		s.Kill()
		os.Remove(fmt.Sprintf("/var/run/tgtd/socket.%d", s.Ctrl))
		s.lock.Close()
	})
	s.start()
	return s
}

// claimCtrlPort takes a control port that no other test process of ours
// holds, with an flock that lasts as long as the test.
func claimCtrlPort(t testing.TB) (int, *os.File) {
	t.Helper()
	for n := ctrlFirst; n <= ctrlLast; n++ {
		f, err := os.OpenFile(filepath.Join(os.TempDir(), fmt.Sprintf("shareless-tgtd-ctrl.%d.lock", n)), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			t.Fatalf("tgtd control port lock: %v", err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/var/run/tgtd/socket.%d.lock", n)); err == nil {
			// Maybe a stale lock of a tgtd we killed; tgtd's own flock
			// decides, so only skip sockets that answer.
			if exec.Command("tgtadm", "-C", strconv.Itoa(n), "--op", "show", "--mode", "system").Run() == nil {
				f.Close()
				continue
			}
		}
		return n, f
	}
	t.Fatalf("no free tgtd control port in %d..%d", ctrlFirst, ctrlLast)
	return 0, nil
}

func (s *Server) start() {
	s.t.Helper()
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		s.t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(s.tgtd, "-f", "-C", strconv.Itoa(s.Ctrl), "--iscsi", fmt.Sprintf("portal=127.0.0.1:%d", s.Port))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("starting tgtd: %v", err)
	}
	s.cmd = cmd
	s.exited = make(chan struct{})
	go func() { cmd.Wait(); close(s.exited) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if s.adm("--op", "show", "--mode", "system") == nil {
			if c, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
				c.Close()
				break
			}
		}
		select {
		case <-s.exited:
			log, _ := os.ReadFile(s.logPath)
			s.t.Fatalf("tgtd exited at start: %s", log)
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("tgtd did not come up on control port %d, portal %s", s.Ctrl, s.Addr())
		}
		time.Sleep(20 * time.Millisecond)
	}
	for i, tg := range s.targets {
		s.configure(i+1, tg)
	}
}

// Addr is the portal, host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port)) }

// PID is the tgtd process id.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// AddTarget configures a target; it survives Restart.
func (s *Server) AddTarget(tg Target) {
	s.t.Helper()
	s.targets = append(s.targets, tg)
	s.configure(len(s.targets), tg)
}

func (s *Server) configure(tid int, tg Target) {
	s.t.Helper()
	id := strconv.Itoa(tid)
	s.mustAdm("--op", "new", "--mode", "target", "--tid", id, "-T", tg.IQN)
	for k, v := range tg.Params {
		s.mustAdm("--op", "update", "--mode", "target", "--tid", id, "-n", k, "-v", v)
	}
	for i, path := range tg.LUNs {
		lun := strconv.Itoa(i + 1)
		s.mustAdm("--op", "new", "--mode", "logicalunit", "--tid", id, "--lun", lun, "-b", path)
		if tg.Thin {
			s.mustAdm("--op", "update", "--mode", "logicalunit", "--tid", id, "--lun", lun, "--params", "thin_provisioning=1")
		}
	}
	if tg.User != "" {
		s.adm("--op", "new", "--mode", "account", "--user", tg.User, "--password", tg.Secret)
		s.mustAdm("--op", "bind", "--mode", "account", "--tid", id, "--user", tg.User)
	}
	if tg.MutualUser != "" {
		s.adm("--op", "new", "--mode", "account", "--user", tg.MutualUser, "--password", tg.MutualSecret)
		s.mustAdm("--op", "bind", "--mode", "account", "--tid", id, "--user", tg.MutualUser, "--outgoing")
	}
	s.mustAdm("--op", "bind", "--mode", "target", "--tid", id, "-I", "ALL")
}

func (s *Server) adm(args ...string) error {
	full := append([]string{"-C", strconv.Itoa(s.Ctrl), "--lld", "iscsi"}, args...)
	out, err := exec.Command(s.tgtadm, full...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("tgtadm %v: %v: %s", args, err, out)
	}
	return nil
}

func (s *Server) mustAdm(args ...string) {
	s.t.Helper()
	if err := s.adm(args...); err != nil {
		s.t.Fatal(err)
	}
}

// Kill kills tgtd with SIGKILL (a crash, as far as initiators can tell)
// and waits for it to exit.
func (s *Server) Kill() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}

// Restart starts tgtd again after Kill, on the same ports and with the
// same targets.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	s.start()
}
