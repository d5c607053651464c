package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shareless/shareless/agent"
	"github.com/shareless/shareless/internal/lab"
	"github.com/shareless/shareless/internal/testenv"
	"github.com/shareless/shareless/virt"
)

// The real-Nova environment (issue 9): the lab's two hosts, each with its
// libvirtd, a real nova-compute (compute_driver = libvirt.LibvirtDriver,
// virt_type = qemu, [libvirt] images_type = flat so that an instance's
// disk is a raw file) and a shareless agent; and a real OpenStack Zed
// control plane, tox-tests/osbox, joined to the lab's bridge, whose
// RabbitMQ carries Nova's real versioned notifications to the agents.
// Servers boot from images of the lab's tiny guest that the osbox's Glance
// stand-in serves, and move with the real openstack CLI.
const (
	// osboxIP is the control plane's address on the lab's bridge.
	osboxIP = "10.254.71.10"
	// Nova's state on each host is under /var/lib/libvirt, which the lab
	// makes private to the host, on the same mount as the agent's store:
	// an adopted instance file and its managed disk are one inode.
	novaState     = "/var/lib/libvirt/nova"
	novaInstances = novaState + "/instances"
	// novaBandwidth slows the post-copy so that a drain can be watched.
	novaBandwidth = 16 << 20
	// The root image: rootData random bytes from rootDataAt, in a raw
	// image Nova extends to the flavor's 1 GiB disk.
	rootDataAt = 1 << 20
	rootData   = 256 << 20
	flavorDisk = 1 << 30
	// bigFlavor has a bigger root disk, for a resize (Nova never shrinks
	// one).
	bigFlavor = "m1.shl.big"
	bigDisk   = 2 << 30
	// Image ids in the Glance stand-in.
	kernelImage = "0e0e0e0e-0000-4000-8000-000000000001"
	initrdImage = "0e0e0e0e-0000-4000-8000-000000000002"
	rootImage   = "0e0e0e0e-0000-4000-8000-000000000003"
	flavor      = "m1.shl"
)

// novaCloud is the cloud of the e2e tests with real Nova: a is compute1,
// b is compute2 (node.name is Nova's host name, which the agents use too).
type novaCloud struct {
	*cloud
	osboxDir string
	chap     string           // the agents' CHAP secret
	root     []byte           // the root image's content
	wrote    map[int64][]byte // runs written to the adopted disk besides the root image
	compute  map[*node]*lab.Proc
	// rootDisk is the adopted instance's root disk size, as its flavor
	// says: a confirmed resize grows it.
	rootDisk int64
}

// startNova brings up the lab, the osbox, both agents and both
// nova-computes, registered and mapped, and the flavors. Root on each host
// reaches the other with ssh (the lab's sshd), as Nova's cold migration
// and resize need: they copy an instance's files with scp.
func startNova(t *testing.T) *novaCloud {
	t.Helper()
	testenv.SkipIfShort(t)
	testenv.NeedRoot(t)
	testenv.NeedCommands(t, "openstack", "mariadb-install-db", "keystone-manage", "privsep-helper", "qemu-img", "qemu-io", "virt-admin")
	work := t.TempDir()
	c := &novaCloud{cloud: &cloud{}, osboxDir: filepath.Join(work, "osbox"), compute: map[*node]*lab.Proc{}, rootDisk: flavorDisk}
	c.bin = buildShareless(t, work)
	c.lab = lab.Start(t, lab.Options{Hooks: hooks(c.bin), SSH: true})
	images := c.writeImages(t, work)

	start := time.Now()
	up := exec.Command("../tox-tests/osbox/up.sh")
	up.Env = append(os.Environ(), c.osboxEnv()...)
	up.Env = append(up.Env, "OSBOX_IP="+osboxIP, "OSBOX_BRIDGE=br0", "OSBOX_BRIDGE_NETNS="+c.lab.SwitchNetNS(),
		"OSBOX_COMPUTES=0", "OSBOX_CINDER=0", "OSBOX_IMAGES="+images)
	t.Cleanup(func() {
		down := exec.Command("../tox-tests/osbox/down.sh")
		down.Env = append(os.Environ(), c.osboxEnv()...)
		if out, err := down.CombinedOutput(); err != nil {
			t.Errorf("osbox down: %v\n%s", err, out)
		}
	})
	if out, err := up.CombinedOutput(); err != nil {
		t.Fatalf("osbox up: %v\n%s", err, out)
	}
	t.Logf("osbox up in %v", time.Since(start).Round(time.Second))

	c.chap = randomHex(t, 8)
	chap, psk := c.chap, randomHex(t, 32)
	transport := "rabbit://guest:guest@" + osboxIP + ":5672/"
	c.a, c.b = c.newNode(t, c.lab.A()), c.newNode(t, c.lab.B())
	for i, n := range []*node{c.a, c.b} {
		n.name = fmt.Sprintf("compute%d", i+1)
		n.instancesPath = novaInstances
		n.bandwidth = novaBandwidth
		// shareless adopt finds a server by name through Nova.
		n.extraConf = fmt.Sprintf(`
[openstack]
auth_url = http://%s:5000/v3
username = admin
password_file = /etc/libvirt/shareless/os-password
project_name = admin
interface = public
`, osboxIP)
	}
	for _, n := range []*node{c.a, c.b} {
		if err := n.configure(transport, chap, psk, c.a, c.b); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(n.outside("/etc/libvirt/shareless/os-password"), []byte("admin\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := n.startAgent(); err != nil {
			t.Fatal(err)
		}
		c.startCompute(t, n)
	}
	t.Cleanup(func() {
		for _, n := range []*node{c.a, c.b} {
			if t.Failed() {
				t.Logf("agent on %s:\n%s", n.name, tailFile(n.agent.Log, 60))
			}
			n.stopAgent()
		}
	})
	testenv.Eventually(t, 3*time.Minute, "both nova-computes up and mapped to the cell", func() (bool, string) {
		out, err := c.tryOpenstack("hypervisor", "list", "-f", "value", "-c", "Hypervisor Hostname", "-c", "State")
		return err == nil && strings.Count(out, " up") == 2, out + fmt.Sprint(err)
	})
	c.openstack(t, "flavor", "create", "--ram", "128", "--disk", fmt.Sprint(flavorDisk>>30), "--vcpus", "1", flavor)
	c.openstack(t, "flavor", "create", "--ram", "128", "--disk", fmt.Sprint(bigDisk>>30), "--vcpus", "1", bigFlavor)
	t.Logf("real Nova with two libvirt computes ready in %v", time.Since(start).Round(time.Second))
	return c
}

func (c *novaCloud) osboxEnv() []string { return []string{"OSBOX_DIR=" + c.osboxDir} }

// writeImages writes the guest's kernel, initramfs and a raw root image
// holding c.root, and the list the Glance stand-in serves them from.
func (c *novaCloud) writeImages(t *testing.T, dir string) string {
	t.Helper()
	c.root = make([]byte, rootDataAt+rootData)
	mrand.NewChaCha8([32]byte{9}).Read(c.root[rootDataAt:])
	rootFile := filepath.Join(dir, "root.raw")
	if err := os.WriteFile(rootFile, c.root, 0o644); err != nil {
		t.Fatal(err)
	}
	type image struct {
		ID         string            `json:"id"`
		Name       string            `json:"name"`
		File       string            `json:"file"`
		DiskFormat string            `json:"disk_format"`
		Properties map[string]string `json:"properties,omitempty"`
	}
	list := []image{
		{kernelImage, "tiny-kernel", c.lab.Guest.Kernel, "raw", nil},
		{initrdImage, "tiny-initrd", c.lab.Guest.Initrd, "raw", nil},
		{rootImage, "tiny", rootFile, "raw", map[string]string{"kernel_id": kernelImage, "ramdisk_id": initrdImage,
			"os_command_line": "console=ttyS0 quiet panic=-1"}},
	}
	b, err := json.Marshal(list)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "images.json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// startCompute runs a real nova-compute inside n's host, as an operator
// configures one next to libvirtd: the libvirt driver with TCG, raw disk
// files, live migration over TCP on the host's address. It runs as root
// (no sudo, no rootwrap): privsep starts its helper directly.
func (c *novaCloud) startCompute(t *testing.T, n *node) {
	t.Helper()
	conf := filepath.Join(c.osboxDir, "etc", "nova", n.name+"-libvirt.conf")
	novaConf := filepath.Join(c.osboxDir, "etc", "nova", "nova.conf")
	helper := fmt.Sprintf("privsep-helper --config-file %s --config-file %s", novaConf, conf)
	body := fmt.Sprintf(`[DEFAULT]
host = %s
my_ip = %s
compute_driver = libvirt.LibvirtDriver
# the tiny guest ignores ACPI: power it off at once on stop, rescue, shelve
shutdown_timeout = 0
# raw disks throughout: else a cold migration or resize turns the copied
# raw file into qcow2 on the destination
use_cow_images = false
state_path = %s
instances_path = %s
[libvirt]
virt_type = qemu
cpu_mode = none
connection_uri = qemu:///system
live_migration_scheme = tcp
live_migration_inbound_addr = %s
images_type = flat
[oslo_concurrency]
lock_path = %s/lock
[nova_sys_admin]
helper_command = %s
[privsep_osbrick]
helper_command = %s
[vif_plug_ovs_privileged]
helper_command = %s
[vif_plug_linux_bridge_privileged]
helper_command = %s
`, n.name, n.host.Addr, novaState, novaInstances, n.host.Addr, novaState, helper, helper, helper, helper)
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(n.outside(novaInstances), 0o755); err != nil {
		t.Fatal(err)
	}
	service, err := filepath.Abs("../tox-tests/osbox/service.py")
	if err != nil {
		t.Fatal(err)
	}
	p, err := n.host.Spawn("/usr/bin/python3", service, "nova-compute", "--config-file", novaConf, "--config-file", conf)
	if err != nil {
		t.Fatal(err)
	}
	c.compute[n] = p
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("nova-compute on %s:\n%s", n.name, tailFile(p.Log, 40))
		}
	})
}

// openstackTimeout bounds one openstack command (a --wait included).
const openstackTimeout = 5 * time.Minute

// tryOpenstack runs the real openstack CLI against the osbox as admin.
func (c *novaCloud) tryOpenstack(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), openstackTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "../tox-tests/osbox/openstack", args...)
	cmd.Env = append(os.Environ(), c.osboxEnv()...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("openstack %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return strings.TrimSpace(out.String()), nil
}

func (c *novaCloud) openstack(t *testing.T, args ...string) string {
	t.Helper()
	out, err := c.tryOpenstack(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// server is a Nova server's fields the tests use.
type server struct {
	ID           string `json:"id"`
	Name         string `json:"name"`
	Status       string `json:"status"`
	Host         string `json:"OS-EXT-SRV-ATTR:host"`
	InstanceName string `json:"OS-EXT-SRV-ATTR:instance_name"`
	TaskState    string `json:"OS-EXT-STS:task_state"`
}

func (c *novaCloud) show(t *testing.T, name string) server {
	t.Helper()
	var s server
	if err := json.Unmarshal([]byte(c.openstack(t, "server", "show", "-f", "json", name)), &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// create creates a server of the tiny guest on compute1 and waits until it
// is ACTIVE and its guest counts on its disk; the instance names Nova's
// disk file, "disk".
func (c *novaCloud) create(t *testing.T, name string) *instance {
	t.Helper()
	c.openstack(t, "server", "create", "--flavor", flavor, "--image", rootImage, "--nic", "none",
		"--host", c.a.name, "--wait", name)
	s := c.show(t, name)
	inst := &instance{uuid: s.ID, domain: s.InstanceName}
	var err error
	if inst.ref, err = agent.NewDiskRef(inst.uuid, "disk"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if out, err := c.tryOpenstack("server", "delete", "--wait", s.ID); err != nil {
			t.Logf("deleting %s: %v %s", name, err, out)
		}
	})
	waitCounter(t, c.novaFile(c.a, inst), 0, 90*time.Second)
	return inst
}

// novaFile is Nova's file of inst's root disk on n, from outside.
func (c *novaCloud) novaFile(n *node, inst *instance) string {
	return n.outside(filepath.Join(novaInstances, inst.uuid, "disk"))
}

// waitCounter waits until the guest's counter in image passes after and
// returns it.
func waitCounter(t *testing.T, image string, after uint64, timeout time.Duration) uint64 {
	t.Helper()
	var n uint64
	testenv.Eventually(t, timeout, "the guest counts on "+image, func() (bool, string) {
		var err error
		n, err = lab.ReadCounter(image)
		return err == nil && n > after, fmt.Sprintf("counter %d, want > %d (%v)", n, after, err)
	})
	return n
}

// novaMigrate runs `openstack server migrate --live-migration --host DST
// --wait` and returns how long after the command started the instance ran
// on dst (its domain there running: the switch-over), how long the command
// took (it polls Nova), and the destination's statistics of the incoming
// migration job.
func (c *novaCloud) novaMigrate(t *testing.T, inst *instance, dst *node) (runs, took time.Duration, job virt.JobStats) {
	t.Helper()
	start := time.Now()
	landed := c.watchRuns(t, inst, dst, start)
	_, err := c.tryOpenstack("server", "migrate", "--live-migration", "--host", dst.name, "--wait", inst.uuid)
	took = time.Since(start)
	runs = landed()
	if err != nil {
		t.Fatal(err)
	}
	if s := c.show(t, inst.uuid); s.Host != dst.name || s.Status != "ACTIVE" {
		t.Fatalf("after the migration to %s: %+v", dst.name, s)
	}
	job, err = dst.conn.CompletedJobStats(t.Context(), c.domain(t, dst, inst))
	if err != nil {
		t.Fatal(err)
	}
	return runs, took, job
}

// watchRuns watches for inst's domain running on dst; the function it
// returns stops watching and says how long after start it ran there (zero
// if it did not).
func (c *novaCloud) watchRuns(t *testing.T, inst *instance, dst *node, start time.Time) func() time.Duration {
	t.Helper()
	u, err := virt.ParseUUID(inst.uuid)
	if err != nil {
		t.Fatal(err)
	}
	landed := make(chan time.Duration, 1)
	stop := make(chan struct{})
	go func() {
		defer close(landed)
		for {
			if d, err := dst.conn.LookupDomainByUUID(t.Context(), u); err == nil {
				if st, err := dst.conn.DomainState(t.Context(), d); err == nil && st == virt.StateRunning {
					landed <- time.Since(start)
					return
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return func() time.Duration {
		close(stop)
		return <-landed
	}
}

// adopt runs `shareless adopt --json NAME` on n, the server named through
// Nova's API.
func (c *novaCloud) adopt(t *testing.T, n *node, name string) []byte {
	t.Helper()
	cmd := exec.Command(c.bin, "adopt", "--socket", n.outside(socketPath), "--json", name)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("shareless adopt %s: %v: %s", name, err, errb.String())
	}
	return out.Bytes()
}
