package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shareless/shareless/config"
	"github.com/shareless/shareless/internal/testenv"
	"github.com/shareless/shareless/localapi"
)

// startLocal runs an agent in this process with no broker and no
// libvirtd (a socket nobody serves), as on a host where libvirt is not
// up yet. It returns the agent and its local API client.
func startLocal(t *testing.T) (*Agent, *localapi.Client) {
	t.Helper()
	return startLocalLibvirt(t, true)
}

// startLocalLibvirt is startLocal; without libvirt, [libvirt] uri is
// empty: a host that runs no libvirtd at all.
func startLocalLibvirt(t *testing.T, libvirt bool) (*Agent, *localapi.Client) {
	t.Helper()
	dir, err := os.MkdirTemp("", "shl-local-") // short: a unix socket path
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ports, err := testenv.FreePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("test.conf", fmt.Appendf(nil, `[DEFAULT]
host = local
state_path = %[1]s/state
[amqp]
transport_url = rabbit://guest:guest@127.0.0.1:1/
[iscsi]
listen = 127.0.0.1
port = %[2]d
[store]
path = %[1]s/store
[libvirt]
uri = %[4]s
[api]
listen = 127.0.0.1:%[3]d
socket = %[1]s/agent.sock
metrics_listen =
[replicator]
hook_wait = 2s
`, dir, ports[0], ports[1], map[bool]string{true: dir + "/no-libvirt-sock"}[libvirt]))
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
	})
	return a, localapi.NewClient(cfg.API.Socket)
}

// TestWithoutLibvirtd: the agent starts and serves the hook and status
// while libvirtd is absent; adoption says why it cannot proceed.
func TestWithoutLibvirtd(t *testing.T) {
	_, c := startLocal(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := c.Status(ctx); err != nil {
		t.Fatalf("status without libvirtd: %v", err)
	}
	if _, err := c.Adopt(ctx, "instance-1", nil); err == nil || !strings.Contains(err.Error(), "libvirtd") {
		t.Fatalf("adopt without libvirtd: %v", err)
	}
	// A file adoption must first know that no domain of the instance runs here.
	file := filepath.Join(t.TempDir(), "disk")
	if err := os.WriteFile(file, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AdoptFiles(ctx, "0d1c8e5e-7b1a-4f57-9f5d-1a2b3c4d5e6f", []string{file}, nil); err == nil || !strings.Contains(err.Error(), "libvirtd") {
		t.Fatalf("file adoption while libvirtd is configured but down: %v", err)
	}
}

// TestStartGuard: an adopted domain does not start on a file its guard
// records (Nova's regenerated XML); it starts on its managed disk, and a
// file disk that was not adopted (a config drive) does not stop it.
func TestStartGuard(t *testing.T) {
	a, c := startLocal(t)
	const inst = "0d1c8e5e-7b1a-4f57-9f5d-1a2b3c4d5e6f"
	nova := "/var/lib/nova/instances/" + inst + "/"
	if err := a.writeGuard(localapi.Adoption{Instance: inst, Domain: "instance-1",
		Disks: []localapi.AdoptedDisk{{Target: "vda", File: nova + "disk", Format: "qcow2", Disk: "disk"}}}); err != nil {
		t.Fatal(err)
	}
	domain := func(disks string) string {
		return "<domain><name>instance-1</name><uuid>" + inst + "</uuid><devices>" + disks + "</devices></domain>"
	}
	managed := "<disk type='network' device='disk'><source protocol='iscsi' name='iqn.2026-11.io.shareless:" + inst + ".disk/0'><host name='127.0.0.1' port='3260'/></source></disk>"
	configDrive := "<disk type='file' device='cdrom'><source file='" + nova + "disk.config'/></disk>"
	for _, tc := range []struct {
		name, domain, xml string
		refused           bool
	}{
		{"Nova's file XML", "instance-1", domain("<disk type='file' device='disk'><source file='" + nova + "disk'/></disk>" + configDrive), true},
		{"managed disk and config drive", "instance-1", domain(managed + configDrive), false},
		{"a domain not adopted", "instance-2", domain("<disk type='file' device='disk'><source file='" + nova + "disk'/></disk>"), false},
	} {
		for _, op := range []string{"prepare", "start"} {
			_, err := c.Hook(t.Context(), localapi.HookRequest{Domain: tc.domain, Op: op, SubOp: "begin", Extra: "-", XML: tc.xml})
			if refused := err != nil; refused != tc.refused || refused && !strings.Contains(err.Error(), "was adopted by shareless") {
				t.Errorf("%s, %s: %v; want refused %t", tc.name, op, err, tc.refused)
			}
		}
	}
}

// TestReadRouteMetrics: reads through a managed disk's export are counted
// on /metrics by where they were served from.
func TestReadRouteMetrics(t *testing.T) {
	a, _ := startLocal(t)
	ref, err := NewDiskRef("0d1c8e5e-7b1a-4f57-9f5d-1a2b3c4d5e6f", "disk")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.createExport(t.Context(), ref, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := a.disks.get(ref).dev.ReadAt(t.Context(), make([]byte, 4096), 0); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	a.writeMetrics(&b)
	for _, want := range []string{
		`shareless_disk_read_local_bytes_total{instance="` + ref.Instance + `",disk="disk"} 4096`,
		`shareless_disk_read_remote_bytes_total{instance="` + ref.Instance + `",disk="disk"} 0`,
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("metrics lack %s:\n%s", want, b.String())
		}
	}
}

// TestMigrateBeginWithoutManagedDisks: a VM that owes nothing to shareless
// migrates in at once even though this agent heard nothing from Nova
// about it (after an agent restart or a broker outage); one with a managed
// disk waits for its replicas and is refused when they never come.
func TestMigrateBeginWithoutManagedDisks(t *testing.T) {
	_, c := startLocal(t)
	const inst = "1d1c8e5e-7b1a-4f57-9f5d-1a2b3c4d5e6f"
	domain := func(disk string) string {
		return "<domain><name>instance-3</name><uuid>" + inst + "</uuid><devices>" + disk + "</devices></domain>"
	}
	plain := domain("<disk type='file' device='disk'><source file='/var/lib/nova/instances/" + inst + "/disk'/></disk>")
	managed := domain("<disk type='network' device='disk'><source protocol='iscsi' name='iqn.2026-11.io.shareless:" + inst + ".disk/0'><host name='127.0.0.1' port='3260'/></source></disk>")
	for _, op := range [][2]string{{"migrate", "begin"}, {"release", "end"}} {
		start := time.Now()
		if _, err := c.Hook(t.Context(), localapi.HookRequest{Domain: "instance-3", Op: op[0], SubOp: op[1], Extra: "-", XML: plain}); err != nil {
			t.Fatalf("%s of a VM without managed disks: %v", op[0], err)
		}
		if took := time.Since(start); took > time.Second {
			t.Fatalf("%s of a VM without managed disks waited %v", op[0], took)
		}
	}
	if _, err := c.Hook(t.Context(), localapi.HookRequest{Domain: "instance-3", Op: "migrate", SubOp: "begin", Extra: "-", XML: managed}); err == nil {
		t.Fatal("migrate begin of a managed disk with no replica prepared was allowed")
	}
}

// TestMigrateBeginVolumeWithoutTransportMap: a volume disk that Cinder
// presented to this host as an iSCSI LUN by its by-path name, attached by
// no initiator here, cannot run without [cinder] transport_map: the hook
// refuses the migration and says so, rather than let libvirt fail on a
// missing device.
func TestMigrateBeginVolumeWithoutTransportMap(t *testing.T) {
	_, c := startLocal(t)
	xml := "<domain><name>instance-4</name><uuid>2d1c8e5e-7b1a-4f57-9f5d-1a2b3c4d5e6f</uuid><devices>" +
		"<disk type='block' device='disk'><source dev='/dev/disk/by-path/ip-192.0.2.7:3260-iscsi-iqn.2026-11.test:array-lun-3'/>" +
		"<target dev='vdb' bus='virtio'/><serial>v1</serial></disk></devices></domain>"
	_, err := c.Hook(t.Context(), localapi.HookRequest{Domain: "instance-4", Op: "migrate", SubOp: "begin", Extra: "-", XML: xml})
	if err == nil || !strings.Contains(err.Error(), "transport_map") {
		t.Fatalf("migrate begin: %v; want a refusal naming [cinder] transport_map", err)
	}
}
