// Package lab brings up libvirt "hosts" for tests on one machine: each host
// is a network namespace with its own address, and its own libvirtd in a
// private mount and UTS namespace (its own /etc/libvirt, /run/libvirt,
// /var/{lib,log,cache}/libvirt, hostname and host_uuid), so that libvirt
// treats two of them as two machines and live-migrates between them, peer
// to peer over TCP. It also builds (and caches) a tiny TCG guest, serves
// iSCSI LUNs with tgtd inside the namespaces, and on request (Options.SSH)
// runs an sshd on each host through which root on one host reaches the
// others with ssh and scp, as Nova's cold migration and resize do.
//
// The hosts share one bridge in a third namespace, on Subnet, an address
// range that exists only inside the lab's namespaces (it never appears on
// the machine's own interfaces or routes, so it cannot collide with a real
// network). Names carry a random run id, so concurrent runs do not collide.
// Everything the lab starts is stopped by PID in t.Cleanup, in dependency
// order: domains, iSCSI targets and sshd, libvirtd, leftover QEMU,
// namespaces. A run killed before its cleanup (go test -timeout) is
// cleaned up by the next lab (RunDir).
package lab

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shareless/shareless/internal/testenv"
)

// Subnet is the lab's network. Host i (0-based) has address .(i+1).
const Subnet = "10.254.71.0/24"

// CacheDir keeps what is slow to make and safe to share between runs: the
// guest's kernel and initramfs, the .debs they come from, and QEMU's
// capability probes (libvirt re-probes a stale cache by itself).
const CacheDir = "/var/cache/shareless-lab"

// Options shape a lab.
type Options struct {
	// Hosts is how many hosts to start (named a, b, ...); default 2.
	Hosts int
	// Hooks are libvirt qemu hooks installed on every host as
	// /etc/libvirt/hooks/qemu.d/NAME before libvirtd starts (libvirt
	// looks for hooks at start only). A hook tells hosts apart by
	// `hostname`.
	Hooks map[string][]byte
	// SSH starts an sshd on every host and lets root on each reach the
	// others with ssh and scp, non-interactively (ssh.go): what Nova's
	// cold migration and resize need between computes.
	SSH bool
}

// Lab is a running lab.
type Lab struct {
	// ID is unique to this run; it names namespaces and should prefix
	// domain names.
	ID    string
	Dir   string
	Hosts []*Host
	Guest Guest

	t        testing.TB
	switchNS string
	teardown []func() // run backwards at cleanup, once the domains are destroyed
}

// Start builds the guest (cached), creates the namespaces and starts
// libvirtd on every host. It ends the test if a needed tool is missing
// (testenv) or anything fails to come up.
func Start(t testing.TB, opts Options) *Lab {
	t.Helper()
	testenv.NeedRoot(t)
	testenv.NeedCommands(t, "ip", "unshare", "nsenter", "libvirtd", "virsh", "qemu-system-x86_64",
		"apt-get", "apt-cache", "dpkg-deb", "xz")
	if opts.SSH {
		testenv.NeedCommands(t, "sshd", "ssh", "scp", "ssh-keygen")
	}
	if opts.Hosts == 0 {
		opts.Hosts = 2
	}
	sweep(t)
	l := &Lab{ID: randomHex(3), t: t}
	l.switchNS = "shl-" + l.ID + "-sw"
	t.Cleanup(l.cleanup)
	// A short directory, not t.TempDir (named after the test): unix
	// socket paths such as DIR/host-a/run/libvirt-sock must fit 108 bytes.
	l.Dir = filepath.Join(os.TempDir(), "shl-"+l.ID)
	if err := os.Mkdir(l.Dir, 0o755); err != nil {
		t.Fatalf("lab: %v", err)
	}
	l.teardown = append(l.teardown, func() { logErr(t, os.RemoveAll(l.Dir)) })
	if err := l.register(); err != nil {
		t.Fatalf("lab: %v", err)
	}
	var err error
	if l.Guest, err = ensureGuest(t); err != nil {
		t.Fatalf("lab: building the guest: %v", err)
	}
	if err := run("ip", "netns", "add", l.switchNS); err != nil {
		t.Fatalf("lab: %v", err)
	}
	l.teardown = append(l.teardown, func() { logErr(t, run("ip", "netns", "del", l.switchNS)) })
	if err := l.ipIn(l.switchNS, "link", "add", "br0", "type", "bridge"); err != nil {
		t.Fatalf("lab: %v", err)
	}
	if err := l.ipIn(l.switchNS, "link", "set", "br0", "up"); err != nil {
		t.Fatalf("lab: %v", err)
	}
	if err := l.ipIn(l.switchNS, "addr", "add", l.ControllerAddr().String()+"/24", "dev", "br0"); err != nil {
		t.Fatalf("lab: %v", err)
	}
	ensureQEMUUser(t)
	for i := range opts.Hosts {
		h, err := l.newHost(i, opts)
		if err != nil {
			t.Fatalf("lab: host %d: %v", i, err)
		}
		l.Hosts = append(l.Hosts, h)
	}
	for _, h := range l.Hosts {
		if err := h.StartLibvirtd(); err != nil {
			t.Fatalf("lab: %v", err)
		}
	}
	if opts.SSH {
		if err := l.startSSH(); err != nil {
			t.Fatalf("lab: %v", err)
		}
	}
	t.Logf("lab %s: %d hosts on %s (dir %s)", l.ID, len(l.Hosts), Subnet, l.Dir)
	return l
}

// A is the first host.
func (l *Lab) A() *Host { return l.Hosts[0] }

// B is the second host.
func (l *Lab) B() *Host { return l.Hosts[1] }

// cleanup stops everything: each host's domains first, then what was
// registered in teardown, backwards (what started last stops first:
// targets and test programs before libvirtd, libvirtd before leftover
// QEMU, namespaces last).
func (l *Lab) cleanup() {
	for _, h := range l.Hosts {
		h.destroyDomains()
	}
	for i := len(l.teardown) - 1; i >= 0; i-- {
		l.teardown[i]()
	}
}

// ipIn runs `ip -n NS args...`.
func (l *Lab) ipIn(ns string, args ...string) error {
	return run("ip", append([]string{"-n", ns}, args...)...)
}

// ensureQEMUUser creates the libvirt-qemu system user when missing:
// libvirtd's QEMU driver fails to start without it ("Failed to parse user
// 'libvirt-qemu'") although qemu.conf says root, and the package that
// creates it (libvirt-daemon-system) would also start a system libvirtd.
func ensureQEMUUser(t testing.TB) {
	if run("getent", "passwd", "libvirt-qemu") == nil {
		return
	}
	t.Logf("lab: creating system user libvirt-qemu (libvirtd needs it to exist)")
	if run("getent", "group", "libvirt-qemu") != nil {
		if err := run("groupadd", "-r", "libvirt-qemu"); err != nil {
			t.Fatalf("lab: %v", err)
		}
	}
	if err := run("useradd", "-r", "-g", "libvirt-qemu", "-d", "/var/lib/libvirt", "-M", "-s", "/usr/sbin/nologin", "libvirt-qemu"); err != nil {
		t.Fatalf("lab: %v", err)
	}
}

// run runs a command and returns its output in the error when it fails.
func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func logErr(t testing.TB, err error) {
	if err != nil {
		t.Logf("lab cleanup: %v", err)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}

// waitFor polls cond every interval until it reports done, returns an
// error, or timeout passes.
func waitFor(timeout, interval time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		done, err := cond()
		if err != nil || done {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not after %v", timeout)
		}
		time.Sleep(interval)
	}
}

// tail returns the last n lines of a file, for error messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return filepath.Base(path) + ":\n    " + strings.Join(lines, "\n    ")
}

// ConsoleLog is where a lab domain's serial console goes (Guest.DomainXML).
func (l *Lab) ConsoleLog(domain string) string {
	return filepath.Join(l.Dir, domain+"-console.log")
}
