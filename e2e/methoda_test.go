package e2e

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shareless/shareless/blockdev"
	"github.com/shareless/shareless/cinderbridge"
	"github.com/shareless/shareless/internal/lab"
	"github.com/shareless/shareless/internal/testenv"
	"github.com/shareless/shareless/iscsi/chap"
	"github.com/shareless/shareless/iscsi/scsi"
	"github.com/shareless/shareless/iscsi/target"
	"github.com/shareless/shareless/iscsi/target/targettest"
	"github.com/shareless/shareless/virt"
)

// The array of the Method A scenario: one LUN that A reaches as a block
// device (standing in for its FC path: a loop device over the LUN's
// file) and that the array's iSCSI target serves to B's QEMU, with CHAP
// and an ACL that admits only [cinder] initiator_iqn.
const (
	arrayIQN       = "iqn.2026-11.lab.shareless:array"
	arrayCHAPUser  = "array"
	arrayBackend   = "lab-array"
	arrayFCTarget  = "5000000000000a01"
	qemuInitiator  = "iqn.2026-11.lab.shareless:qemu"
	transportPath  = "/etc/libvirt/shareless/transport.json"
	arrayCHAPPath  = "/etc/libvirt/shareless/array.chap"
	volumeSize     = 8 << 20
	volumeTarget   = "vdb"
	volumeFCLUN    = 0
	volumeSerialID = "5e0d1c9a-7a4c-4f0b-9d2e-0c7b2a3f1e01"
)

// methodA: a guest whose volume disk is a block device on A (the FC
// path) is live-migrated to B, which has neither: the Cinder driver
// wrapper's decision (`shareless cinder-driver`, the transport map) names
// the array's iSCSI LUN as os-brick's by-path device, the source writes
// it into the destination XML as Nova's _update_volume_xml does, and B's
// hook turns the disk into a QEMU-native iSCSI disk of that LUN. The
// guest goes on counting on the same LUN, now through the array's target,
// after A's block device is gone.
func methodA(t *testing.T, c *cloud) {
	a, b := c.a, c.b
	// No managed disk: the instance's one disk is the volume.
	inst := &instance{uuid: testenv.UUID(), domain: "shl-" + c.lab.ID + "-methoda"}
	testenv.NeedCommands(t, "losetup")
	vol := filepath.Join(t.TempDir(), "volume.img")
	if err := os.WriteFile(vol, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(vol, volumeSize); err != nil {
		t.Fatal(err)
	}
	portal := startArray(t, c, vol)
	configureMethodA(t, b, portal)
	mapFile := cinderNodeMap(t, portal)

	// A's "FC" device: the LUN as a block device on A.
	out, err := exec.Command("losetup", "--find", "--show", vol).Output()
	if err != nil {
		t.Fatalf("losetup: %v", err)
	}
	loop := strings.TrimSpace(string(out))
	detach := func() error { return exec.Command("losetup", "--detach", loop).Run() }
	t.Cleanup(func() { detach() })

	c.boot(t, a, inst, lab.Disk{Target: volumeTarget, Block: loop, Serial: volumeSerialID})
	w := watchCounter(t, vol)
	w.waitPast(t, 2, 20*time.Second)

	byPath := presentToB(t, c, mapFile, b)
	c.preLiveMigration(t, inst, a, b)
	ctx := t.Context()
	d, err := a.conn.LookupDomain(ctx, inst.domain)
	if err != nil {
		t.Fatal(err)
	}
	srcXML, err := a.conn.DomainXML(ctx, d, virt.XMLMigratable|virt.XMLSecure)
	if err != nil {
		t.Fatal(err)
	}
	// What Nova's source does with the destination's connection_info:
	// the disk's <source> from LibvirtVolumeDriver.get_config.
	destXML := strings.Replace(srcXML, "<source dev='"+loop+"'", "<source dev='"+byPath+"'", 1)
	if destXML == srcXML {
		t.Fatalf("no <source dev='%s'> in A's XML:\n%s", loop, srcXML)
	}
	err = a.conn.Migrate(ctx, d, virt.MigrateOptions{DestURI: b.host.MigrationURI(), DestXML: destXML})
	if _, err := c.finish(t, inst, a, b, err); err != nil {
		t.Fatalf("migrate A→B: %v", err)
	}

	// B runs the guest on a network disk of the array's LUN 0, logged in
	// as qemuInitiator with the array's CHAP; serial and target kept.
	nd, err := b.conn.LookupDomain(ctx, inst.domain)
	if err != nil {
		t.Fatal(err)
	}
	live, err := b.conn.DomainXML(ctx, nd, 0)
	if err != nil {
		t.Fatal(err)
	}
	disk := volumeDisk(t, live)
	wantName := arrayIQN + "/" + fmt.Sprint(volumeFCLUN)
	if disk.Type != "network" || disk.Source.Protocol != "iscsi" || disk.Source.Name != wantName ||
		disk.Source.Host.Name+":"+disk.Source.Host.Port != portal || disk.Source.Initiator.IQN.Name != qemuInitiator ||
		disk.Source.Auth.Username != arrayCHAPUser || disk.Serial != volumeSerialID {
		t.Fatalf("B's volume disk %+v; want network iscsi %s at %s as %s with CHAP %s, serial %s\n%s",
			disk, wantName, portal, qemuInitiator, arrayCHAPUser, volumeSerialID, live)
	}
	// A's block device is gone; the guest's writes reach the LUN through
	// the array's iSCSI target only.
	if err := detach(); err != nil {
		t.Fatalf("losetup --detach %s: %v", loop, err)
	}
	before := w.max()
	after := w.waitPast(t, before+3, 30*time.Second)
	w.finish(t)
	testenv.Report(t, "e2e method A a->b: the volume disk became %s on B; the guest counted %d->%d through the array's target", wantName, before, after)
}

// startArray serves vol as LUN 0 of the array's iSCSI target, in the
// test, and returns its portal as the lab's hosts reach it.
func startArray(t *testing.T, c *cloud, vol string) string {
	t.Helper()
	dev, err := blockdev.OpenFile(vol, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	sec, err := chap.NewSecret([]byte(arraySecret))
	if err != nil {
		t.Fatal(err)
	}
	_, addr := targettest.Start(t, target.Config{IQN: arrayIQN, Listen: []string{"127.0.0.1:0"},
		LUNs:            []target.LUN{{Device: dev, Unit: scsi.UnitConfig{ID: "lab-array-volume"}}},
		CHAP:            &chap.Credentials{User: arrayCHAPUser, Secret: sec},
		AllowInitiators: []string{qemuInitiator}})
	return c.lab.Expose(t, addr).String()
}

// arraySecret is the array's CHAP secret: 16 characters, as libiscsi wants.
const arraySecret = "array-chap-0123x"

// arrayMap is the array's transport map, its CHAP password in chapFile.
func arrayMap(portal, chapFile string) string {
	return fmt.Sprintf(`{"backends": [{"name": %q, "fc_targets": [%q],
  "iscsi": [{"portal": %q, "iqn": %q}],
  "chap": {"username": %q, "password_file": %q},
  "carrier": {"wwpns": ["c000000000000001"], "wwnns": ["c000000000000000"]}}]}`,
		arrayBackend, arrayFCTarget, portal, arrayIQN, arrayCHAPUser, chapFile)
}

// cinderNodeMap writes the transport map as a Cinder volume node holds
// it, for the test's own `shareless cinder-driver`, and returns its path.
func cinderNodeMap(t *testing.T, portal string) string {
	t.Helper()
	dir := t.TempDir()
	chapFile, mapFile := filepath.Join(dir, "array.chap"), filepath.Join(dir, "transport.json")
	if err := os.WriteFile(chapFile, []byte(arraySecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(mapFile, []byte(arrayMap(portal, chapFile)), 0o600); err != nil {
		t.Fatal(err)
	}
	return mapFile
}

// configureMethodA gives n's agent the array's transport map and QEMU's
// initiator name ([cinder]), restarting it, and takes them away again at
// the end of the test.
func configureMethodA(t *testing.T, n *node, portal string) {
	t.Helper()
	for path, content := range map[string]string{transportPath: arrayMap(portal, arrayCHAPPath), arrayCHAPPath: arraySecret + "\n"} {
		if err := os.WriteFile(n.outside(path), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	conf, err := os.ReadFile(n.outside(confPath))
	if err != nil {
		t.Fatal(err)
	}
	restart := func(content []byte) {
		n.stopAgent()
		if err := os.WriteFile(n.outside(confPath), content, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := n.startAgent(); err != nil {
			t.Fatal(err)
		}
	}
	restart(append(bytes.Clone(conf), fmt.Sprintf("\n[cinder]\ntransport_map = %s\ninitiator_iqn = %s\n", transportPath, qemuInitiator)...))
	t.Cleanup(func() { restart(conf) })
	// The agent defines the array's secret once it reaches libvirtd.
	ctx := t.Context()
	usage := cinderbridge.SecretUsage(arrayIQN, arrayCHAPUser)
	testenv.Eventually(t, 20*time.Second, "the array's secret on "+n.host.Name, func() (bool, string) {
		_, err := n.conn.LookupISCSISecret(ctx, usage)
		return err == nil, fmt.Sprint(err)
	})
}

// presentToB asks `shareless cinder-driver`, as the Cinder driver wrapper
// does in initialize_connection for B's connector (no wwpns, no
// initiator), what to answer given the FC driver's answer for the
// carrier, and returns the local connection's device_path.
func presentToB(t *testing.T, c *cloud, mapFile string, b *node) string {
	t.Helper()
	req := fmt.Sprintf(`{"op": "present", "volume": {"id": %q, "host": "cinder@%s#pool"},
  "connector": {"host": %q, "platform": "x86_64", "os_type": "linux", "multipath": false},
  "connection_info": {"driver_volume_type": "fibre_channel", "data": {"target_discovered": true,
    "target_wwn": [%q], "target_lun": %d, "volume_id": %q}}}`,
		volumeSerialID, arrayBackend, b.name, arrayFCTarget, volumeFCLUN, volumeSerialID)
	cmd := exec.CommandContext(t.Context(), c.bin, "cinder-driver", "--transport-map", mapFile)
	cmd.Stdin = strings.NewReader(req)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("shareless cinder-driver: %v: %s", err, stderr.String())
	}
	var ans cinderbridge.DriverAnswer
	if err := json.Unmarshal(out, &ans); err != nil {
		t.Fatalf("%s: %v", out, err)
	}
	conn, err := cinderbridge.Parse(ans.Connection)
	if err != nil {
		t.Fatal(err)
	}
	local, ok := conn.(*cinderbridge.Local)
	if !ok {
		t.Fatalf("answer for B: %s; want a local connection", ans.Connection)
	}
	return local.DevicePath
}

// domainDisk is what the scenario checks of a disk in libvirt's XML.
type domainDisk struct {
	Type   string `xml:"type,attr"`
	Serial string `xml:"serial"`
	Target struct {
		Dev string `xml:"dev,attr"`
	} `xml:"target"`
	Source struct {
		Protocol string `xml:"protocol,attr"`
		Name     string `xml:"name,attr"`
		Host     struct {
			Name string `xml:"name,attr"`
			Port string `xml:"port,attr"`
		} `xml:"host"`
		Auth struct {
			Username string `xml:"username,attr"`
		} `xml:"auth"`
		Initiator struct {
			IQN struct {
				Name string `xml:"name,attr"`
			} `xml:"iqn"`
		} `xml:"initiator"`
	} `xml:"source"`
}

// volumeDisk returns the domain's volume disk (target volumeTarget).
func volumeDisk(t *testing.T, domXML string) domainDisk {
	t.Helper()
	var dom struct {
		Disks []domainDisk `xml:"devices>disk"`
	}
	if err := xml.Unmarshal([]byte(domXML), &dom); err != nil {
		t.Fatal(err)
	}
	for _, d := range dom.Disks {
		if d.Target.Dev == volumeTarget {
			return d
		}
	}
	t.Fatalf("no disk %s in\n%s", volumeTarget, domXML)
	return domainDisk{}
}
