package lab

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/shareless/shareless/internal/testenv"
	"golang.org/x/sys/unix"
)

// Host is one lab host: a network namespace with an address on Subnet and
// an "anchor" process that holds the host's private mount and UTS
// namespaces, into which libvirtd and any Command are entered. The anchor
// outlives libvirtd restarts, so the host keeps its identity across them.
type Host struct {
	Name     string // "a", "b", ...
	Hostname string // inside the UTS namespace; libvirt refuses to migrate between equal hostnames
	Addr     netip.Addr
	UUID     string // libvirtd's host_uuid; libvirt refuses to migrate between equal ones
	NetNS    string
	// Dir holds the host's private libvirt directories (etc, run, lib,
	// log, cache), bind-mounted over /etc/libvirt, /run/libvirt, ... in
	// its mount namespace, and readable from outside for tests; and its
	// local storage, DIR/instances, mounted at InstancesPath; with
	// Options.SSH, its /root/.ssh (DIR/ssh) and sshd (DIR/sshd).
	Dir string

	lab      *Lab
	anchor   *Proc
	libvirtd *Proc // nil while stopped
}

func (l *Lab) newHost(i int, opts Options) (*Host, error) {
	name := string(rune('a' + i))
	addr := netip.MustParsePrefix(Subnet).Addr()
	for range i + 1 {
		addr = addr.Next()
	}
	h := &Host{
		Name:     name,
		Hostname: "shl-" + l.ID + "-" + name,
		Addr:     addr,
		UUID:     testenv.UUID(),
		NetNS:    "shl-" + l.ID + "-" + name,
		Dir:      filepath.Join(l.Dir, "host-"+name),
		lab:      l,
	}
	if err := h.writeConfig(); err != nil {
		return nil, err
	}
	for n, script := range opts.Hooks {
		if err := h.InstallHook(n, script); err != nil {
			return nil, err
		}
	}
	if err := h.plugNetwork(); err != nil {
		return nil, err
	}
	if err := h.startAnchor(opts.SSH); err != nil {
		return nil, err
	}
	if err := l.record("hosts", h.Dir); err != nil {
		return nil, err
	}
	// Registered before libvirtd is spawned, so it runs after libvirtd
	// is stopped (teardown runs backwards).
	l.teardown = append(l.teardown, func() { killQEMU(l.t, h.Dir) })
	return h, nil
}

// URI is the libvirt URI of the host's daemon, for clients outside the
// namespaces (tests, virsh).
func (h *Host) URI() string {
	return "qemu:///system?socket=" + filepath.Join(h.Dir, "run", "libvirt-sock")
}

// MigrationURI is the host's daemon as another host's libvirtd reaches it
// for a peer-to-peer migration.
func (h *Host) MigrationURI() string {
	return "qemu+tcp://" + h.Addr.String() + "/system"
}

// Command prepares a command that runs inside the host: its network, mount
// and UTS namespaces, seeing the host's /etc/libvirt and /run/libvirt.
// This is how a test runs a command such as `shareless export` "on" a
// host; Spawn runs a long-lived one (the agent) in the background.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"--target", strconv.Itoa(h.anchor.Pid()),
		"--mount", "--uts", "--net", "--", name}, args...)...)
}

// InstallHook installs a libvirt qemu hook as /etc/libvirt/hooks/qemu.d/NAME.
// libvirtd notices new hooks when it starts (StopLibvirtd, StartLibvirtd).
func (h *Host) InstallHook(name string, script []byte) error {
	dir := filepath.Join(h.Dir, "etc", "hooks", "qemu.d")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, name), script, 0o755)
}

// InstancesPath is each host's local, unshared storage as its libvirtd and
// QEMU see it, like Nova's instances_path: the same path names a
// different file on each host, so a disk there must be copied (or
// adopted) to move with its VM. From outside: Host.Instances.
const InstancesPath = "/var/lib/shareless-lab/instances"

// Instances is the outside path of the host's InstancesPath.
func (h *Host) Instances() string { return filepath.Join(h.Dir, "instances") }

func (h *Host) writeConfig() error {
	for _, d := range []string{"etc/qemu", "etc/hooks/qemu.d", "run", "lib/qemu", "log/qemu", "cache/qemu/capabilities", "instances"} {
		if err := os.MkdirAll(filepath.Join(h.Dir, d), 0o755); err != nil {
			return err
		}
	}
	files := map[string]string{
		// Unix sockets without auth for the tests; TCP without auth
		// between the hosts, on the host's lab address only. The log
		// has warnings, plus the QMP commands libvirt sends to QEMU, so
		// that a test can check what libvirt asked QEMU to do.
		"libvirtd.conf": fmt.Sprintf(`unix_sock_dir = "/run/libvirt"
unix_sock_group = "root"
unix_sock_ro_perms = "0777"
unix_sock_rw_perms = "0770"
auth_unix_ro = "none"
auth_unix_rw = "none"
listen_tls = 0
listen_tcp = 1
listen_addr = %q
tcp_port = "16509"
auth_tcp = "none"
host_uuid = %q
log_level = 3
log_filters = "1:qemu.qemu_monitor"
log_outputs = "1:file:/var/log/libvirt/libvirtd.log"
`, h.Addr, h.UUID),
		// QEMU as root without cgroups, namespaces, security labels or
		// virtlogd: what a container can do. Migration on the lab address.
		"qemu.conf": fmt.Sprintf(`user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
migration_address = %q
migration_host = %q
migration_port_min = 49152
migration_port_max = 49215
`, h.Addr, h.Addr),
		"libvirt.conf": "uri_default = \"qemu:///system\"\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(h.Dir, "etc", name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// plugNetwork creates the host's namespace and a veth pair into the
// lab's bridge. Both ends are created directly in their namespaces, so
// nothing appears in the machine's own.
func (h *Host) plugNetwork() error {
	l := h.lab
	if err := run("ip", "netns", "add", h.NetNS); err != nil {
		return err
	}
	l.teardown = append(l.teardown, func() { logErr(l.t, run("ip", "netns", "del", h.NetNS)) })
	for _, args := range [][]string{
		{"link", "add", "eth0", "netns", h.NetNS, "type", "veth", "peer", "name", "port-" + h.Name, "netns", l.switchNS},
		{"-n", l.switchNS, "link", "set", "dev", "port-" + h.Name, "master", "br0"},
		{"-n", l.switchNS, "link", "set", "dev", "port-" + h.Name, "up"},
		{"-n", h.NetNS, "addr", "add", h.Addr.String() + "/24", "dev", "eth0"},
		{"-n", h.NetNS, "link", "set", "eth0", "up"},
		{"-n", h.NetNS, "link", "set", "lo", "up"},
	} {
		if err := run("ip", args...); err != nil {
			return err
		}
	}
	return nil
}

// anchorScript runs in the host's new mount and UTS namespaces: it names
// the host, mounts its private libvirt directories, reports, and waits.
const anchorScript = `set -e
hostname "$1"
shift
dir=$1
shift
while [ $# -gt 0 ]; do
	mkdir -p "$2"
	mount --bind "$dir/$1" "$2"
	shift 2
done
echo ready
exec sleep infinity
`

func (h *Host) startAnchor(ssh bool) error {
	args := []string{"netns", "exec", h.NetNS, "unshare", "--mount", "--uts", "--propagation", "private",
		"--", "sh", "-c", anchorScript, "anchor", h.Hostname, h.Dir,
		// The host's subdirectories and where libvirtd sees them.
		"etc", "/etc/libvirt", "run", "/run/libvirt", "lib", "/var/lib/libvirt",
		"log", "/var/log/libvirt", "cache", "/var/cache/libvirt", "instances", InstancesPath}
	if ssh {
		root, err := rootSSHDir()
		if err != nil {
			return err
		}
		if err := os.MkdirAll(h.sshDir(), 0o700); err != nil {
			return err
		}
		args = append(args, "ssh", root)
	}
	p, err := h.spawn("anchor", exec.Command("ip", args...))
	if err != nil {
		return err
	}
	h.anchor = p
	err = waitFor(10*time.Second, 20*time.Millisecond, func() (bool, error) {
		select {
		case <-p.Exited():
			return false, fmt.Errorf("exited: %v", p.cmd.ProcessState)
		default:
		}
		b, err := os.ReadFile(p.Log)
		return bytes.Contains(b, []byte("ready\n")), err
	})
	if err != nil {
		return fmt.Errorf("host %s: namespace anchor: %v\n  %s", h.Name, err, tail(p.Log, 10))
	}
	return nil
}

// StartLibvirtd starts the host's libvirtd and waits until it answers.
func (h *Host) StartLibvirtd() error {
	if h.libvirtd != nil {
		return fmt.Errorf("host %s: libvirtd already running", h.Name)
	}
	capsDir := filepath.Join(h.Dir, "cache", "qemu", "capabilities")
	shared := filepath.Join(CacheDir, "qemu-capabilities")
	if err := copyFiles(shared, capsDir); err != nil {
		return err
	}
	// On one CPU: libvirt's cached QEMU capabilities are valid only for
	// the cpuid of the CPU that checks them, and the vCPUs of some
	// machines differ (each differing check is an 8 s re-probe). libvirt
	// gives QEMU all CPUs back.
	cpu, err := firstCPU()
	if err != nil {
		return err
	}
	start := time.Now()
	p, err := h.spawn("libvirtd", h.Command(context.Background(), "taskset", "--cpu-list", strconv.Itoa(cpu),
		"libvirtd", "--listen", "--pid-file", "/run/libvirt/libvirtd.pid"))
	if err != nil {
		return err
	}
	h.libvirtd = p
	err = waitFor(90*time.Second, 100*time.Millisecond, func() (bool, error) {
		select {
		case <-p.Exited():
			return false, fmt.Errorf("exited: %v", p.cmd.ProcessState)
		default:
		}
		return exec.Command("virsh", "-c", h.URI(), "version").Run() == nil, nil
	})
	if err != nil {
		return fmt.Errorf("host %s: libvirtd (pid %d) not answering on %s: %v\n  %s\n  %s", h.Name, p.Pid(),
			h.URI(), err, tail(p.Log, 10), tail(filepath.Join(h.Dir, "log", "libvirtd.log"), 10))
	}
	h.lab.t.Logf("lab: host %s: libvirtd pid %d answering after %v", h.Name, p.Pid(), time.Since(start).Round(time.Millisecond))
	// Share the capability probe with the next daemon (the first start
	// of a fresh cache spends most of its time probing QEMU).
	return copyFiles(capsDir, shared)
}

// LibvirtdLog returns the host's libvirtd log so far: warnings, and the
// QMP commands libvirt sent to QEMU (log_filters), so that a test can check
// what libvirt asked QEMU to do, e.g. that a migration started no NBD
// server (no block migration).
func (h *Host) LibvirtdLog() ([]byte, error) {
	return os.ReadFile(filepath.Join(h.Dir, "log", "libvirtd.log"))
}

// Libvirtd is the host's running libvirtd, nil while stopped.
func (h *Host) Libvirtd() *Proc { return h.libvirtd }

// StopLibvirtd stops the host's libvirtd (SIGTERM, then SIGKILL after
// 10 s). Running domains keep running; the next libvirtd takes them back.
func (h *Host) StopLibvirtd() error {
	if h.libvirtd == nil {
		return nil
	}
	err := h.libvirtd.Stop(10 * time.Second)
	h.libvirtd = nil
	return err
}

// destroyDomains powers off every domain of a running libvirtd, so that
// nothing of a test outlives it.
func (h *Host) destroyDomains() {
	if h.libvirtd == nil {
		return
	}
	out, err := exec.Command("virsh", "-c", h.URI(), "list", "--name").Output()
	if err != nil {
		h.lab.t.Logf("lab cleanup: host %s: listing domains: %v", h.Name, err)
		return
	}
	for name := range strings.FieldsSeq(string(out)) {
		logErr(h.lab.t, run("virsh", "-c", h.URI(), "destroy", name))
	}
}

// copyFiles copies the regular files of src into dst (atomically each),
// creating dst; a missing src is empty.
func copyFiles(src, dst string) error {
	entries, err := os.ReadDir(src)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			return err
		}
		if err := writeAtomic(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// writeAtomic writes a file under a temporary name and renames it, so
// that a concurrent run never reads half of it.
func writeAtomic(path string, b []byte, mode os.FileMode) error {
	tmp := path + ".tmp-" + randomHex(4)
	if err := os.WriteFile(tmp, b, mode); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// firstCPU is the first CPU this process may run on.
func firstCPU() (int, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return 0, fmt.Errorf("sched_getaffinity: %w", err)
	}
	for i := range 1024 {
		if set.IsSet(i) {
			return i, nil
		}
	}
	return 0, fmt.Errorf("no CPU in the affinity mask")
}
