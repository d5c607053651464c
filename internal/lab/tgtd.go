package lab

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shareless/shareless/internal/testenv"
)

// LUN is an iSCSI logical unit as QEMU's initiator reaches it.
type LUN struct {
	IQN  string
	LUN  int
	Host string
	Port int
	// Username and SecretUsage, when set, make QEMU log in with CHAP as
	// Username, with the value of the libvirt iscsi secret of that usage
	// on the host that runs the guest (a managed disk's login).
	Username, SecretUsage string
}

// TGTD is Debian's iSCSI target (tgtd) running in a host's network
// namespace, listening on every address there (the host's lab address
// and its own 127.0.0.1, where a managed disk is reached).
type TGTD struct {
	Host *Host
	Port int

	control int            // tgtd's control port: its socket is /var/run/tgtd/socket.N
	tids    map[string]int // target id by IQN
	proc    *Proc
}

// StartTGTD starts tgtd on the host, on iSCSI port 3260, and stops it at
// cleanup (before libvirtd, after the domains).
func (h *Host) StartTGTD(t testing.TB) *TGTD {
	t.Helper()
	testenv.NeedCommands(t, "tgtd", "tgtadm")
	g := &TGTD{Host: h, Port: 3260, tids: map[string]int{}}
	// The control socket lives in the shared filesystem: pick a number
	// no other tgtd uses (tgtd takes 0..32767).
	for {
		g.control = 1000 + rand.IntN(31000)
		if _, err := os.Stat(fmt.Sprintf("/var/run/tgtd/socket.%d", g.control)); os.IsNotExist(err) {
			break
		}
	}
	proc, err := h.spawn("tgtd", exec.Command("ip", "netns", "exec", h.NetNS, "tgtd", "-f",
		"--iscsi", fmt.Sprintf("portal=0.0.0.0:%d", g.Port), "-C", strconv.Itoa(g.control)))
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	g.proc = proc
	// tgtd ignores SIGTERM while it has targets: delete them first. This
	// runs before the Proc's own stop (teardown runs backwards).
	h.lab.teardown = append(h.lab.teardown, g.deleteAll)
	err = waitFor(10*time.Second, 100*time.Millisecond, func() (bool, error) {
		select {
		case <-proc.Exited():
			return false, fmt.Errorf("exited: %v", proc.cmd.ProcessState)
		default:
		}
		return g.adm("--op", "show", "--mode", "target") == nil, nil
	})
	if err != nil {
		t.Fatalf("lab: tgtd on host %s (pid %d) not answering: %v\n  %s", h.Name, proc.Pid(), err, tail(proc.Log, 10))
	}
	return g
}

// AddLUN exports the file backing as LUN 1 of a new target, open to any
// initiator, and returns how a guest reaches it over the lab network. Use
// Host: "127.0.0.1" from the target's own host. The IQN depends on the
// lab and name only, so each host's tgtd can serve the same IQN on its
// own loopback, as each host's agent serves a managed disk.
func (g *TGTD) AddLUN(t testing.TB, name, backing string) LUN {
	t.Helper()
	iqn := "iqn.2026-11.lab.shareless:" + g.Host.lab.ID + "-" + name
	g.tids[iqn] = len(g.tids) + 1
	tid := strconv.Itoa(g.tids[iqn])
	for _, args := range [][]string{
		{"--op", "new", "--mode", "target", "--tid", tid, "-T", iqn},
		{"--op", "new", "--mode", "logicalunit", "--tid", tid, "--lun", "1", "-b", backing},
		{"--op", "bind", "--mode", "target", "--tid", tid, "-I", "ALL"},
	} {
		if err := g.adm(args...); err != nil {
			t.Fatalf("lab: %v\n  %s", err, tail(g.proc.Log, 10))
		}
	}
	return LUN{IQN: iqn, LUN: 1, Host: g.Host.Addr.String(), Port: g.Port}
}

// RequireCHAP makes the target of lun accept only initiators that log in
// with CHAP as user/password.
func (g *TGTD) RequireCHAP(t testing.TB, lun LUN, user, password string) {
	t.Helper()
	tid, ok := g.tids[lun.IQN]
	if !ok {
		t.Fatalf("lab: tgtd on host %s has no target %s", g.Host.Name, lun.IQN)
	}
	if err := g.adm("--op", "new", "--mode", "account", "--user", user, "--password", password); err != nil {
		t.Fatalf("lab: %v", err)
	}
	if err := g.adm("--op", "bind", "--mode", "account", "--tid", strconv.Itoa(tid), "--user", user); err != nil {
		t.Fatalf("lab: %v", err)
	}
}

// Sessions returns how many iSCSI sessions are logged in to lun's target:
// which host's QEMU uses it.
func (g *TGTD) Sessions(t testing.TB, lun LUN) int {
	t.Helper()
	out, err := exec.Command("tgtadm", "-C", strconv.Itoa(g.control), "--lld", "iscsi",
		"--op", "show", "--mode", "conn", "--tid", strconv.Itoa(g.tids[lun.IQN])).CombinedOutput()
	if err != nil {
		t.Fatalf("lab: tgtadm show conn: %v: %s", err, out)
	}
	return strings.Count(string(out), "Session:")
}

func (g *TGTD) adm(args ...string) error {
	return run("tgtadm", append([]string{"-C", strconv.Itoa(g.control), "--lld", "iscsi"}, args...)...)
}

// deleteAll deletes the targets and the target system, after which tgtd
// exits.
func (g *TGTD) deleteAll() {
	for _, tid := range g.tids {
		g.adm("--op", "delete", "--mode", "target", "--tid", strconv.Itoa(tid), "--force")
	}
	g.adm("--op", "delete", "--mode", "system")
}
