package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shareless/shareless/internal/lab"
	"github.com/shareless/shareless/internal/testenv"
	"github.com/shareless/shareless/localapi"
	"github.com/shareless/shareless/virt"
)

// TestNovaLibvirt drives real Nova with the libvirt driver (novaCloud):
// an instance adopted by shareless live-migrates with RAM only and its
// disk follows post-copy, beside a block migration of an identical
// instance that is not adopted; then it comes back moving only what
// changed; compute1 is drained and powered off (its services stopped).
func TestNovaLibvirt(t *testing.T) {
	c := startNova(t)
	for _, n := range []*node{c.a, c.b} {
		c.logMigrations(t, n)
	}
	adopted := c.create(t, "adopted")
	plain := c.create(t, "plain")

	var ad localapi.Adoption
	if err := json.Unmarshal(c.adopt(t, c.a, "adopted"), &ad); err != nil || len(ad.Disks) != 1 || ad.Instance != adopted.uuid {
		t.Fatalf("adoption of the server named adopted: %+v (%v)", ad, err)
	}
	if ds := ad.Disks[0]; !ds.Linked || ds.Disk != "disk" || ds.File != novaInstances+"/"+adopted.uuid+"/disk" || ds.Size != flavorDisk {
		t.Fatalf("adopted disk %+v: want Nova's raw 1 GiB file, linked", ds)
	}
	sameInode(t, c.novaFile(c.a, adopted), c.a.image(adopted))
	n := waitCounter(t, c.a.image(adopted), 0, 30*time.Second)
	waitCounter(t, c.novaFile(c.a, adopted), n, 30*time.Second)
	c.persistentOnFile(t, c.a, adopted)
	t.Logf("adopted: the guest counts on its managed disk, which is Nova's file (one inode); the domain's persistent definition names that file")

	// Each step starts where the previous one left the instances.
	for _, step := range []struct {
		name string
		run  func(*testing.T)
	}{
		{"there", func(t *testing.T) { c.there(t, adopted, plain) }},
		{"drain", func(t *testing.T) { c.drain(t, adopted) }},
		{"back", func(t *testing.T) { c.back(t, adopted) }},
		{"abort", func(t *testing.T) { c.abort(t, adopted) }},
		{"hard reboot", func(t *testing.T) { c.hardReboot(t, adopted) }},
		{"stop start", func(t *testing.T) { c.stopStart(t, adopted) }},
		{"rescue", func(t *testing.T) { c.rescue(t, adopted) }},
		{"snapshot", func(t *testing.T) { c.snapshot(t, adopted) }},
		{"shelve", func(t *testing.T) { c.shelve(t, adopted) }},
		{"cold migrate", func(t *testing.T) { c.coldMigrate(t, adopted) }},
		{"resize revert", func(t *testing.T) { c.resizeRevert(t, adopted) }},
		{"resize", func(t *testing.T) { c.resize(t, adopted) }},
		{"hard reboot while copying", func(t *testing.T) { c.rebootWhileCopying(t, adopted) }},
		{"delete", func(t *testing.T) { c.deleteFrees(t, adopted) }},
	} {
		if !t.Run(step.name, step.run) {
			return
		}
	}
}

// there: both instances go to compute2 with `openstack server migrate
// --live-migration --host compute2 --wait`; Nova decides the block
// migration itself (no shared storage). The adopted one moves RAM only:
// libvirt's flags lack the storage-copy bits, the destination's job copied
// no disk, QEMU ran no NBD mirror. The guest counts on; the agents, on
// Nova's real notifications, copy the disk after the switch-over, and
// compute2's image ends equal to what the guest wrote, linked as Nova's
// file there.
func (c *novaCloud) there(t *testing.T, adopted, plain *instance) {
	before, err := lab.ReadCounter(c.a.image(adopted))
	if err != nil {
		t.Fatal(err)
	}
	logs := c.markLogs(t)
	plainRuns, plainTook, plainJob := c.novaMigrate(t, plain, c.b)
	plainFlags := c.migrationFlags(t, logs)
	plainNBD := nbd(c.qmpSince(t, logs))
	waitCounter(t, c.novaFile(c.b, plain), 0, 30*time.Second)

	logs = c.markLogs(t)
	since := time.Now()
	runs, took, job := c.novaMigrate(t, adopted, c.b)
	landed := time.Now()
	flags := c.migrationFlags(t, logs)
	if job.DiskTotal != 0 || job.DiskProcessed != 0 {
		t.Errorf("the adopted instance's migration copied disk: %+v", job)
	}
	if flags&storageCopy != 0 || plainFlags&storageCopy == 0 {
		t.Errorf("libvirt flags: adopted %#x, plain %#x; want the storage-copy bits (%#x) only on the plain one", flags, plainFlags, storageCopy)
	}
	if adoptedNBD := nbd(c.qmpSince(t, logs)); !plainNBD || adoptedNBD {
		t.Errorf("QEMU's NBD block copy: plain instance %t, adopted %t; want only the plain one", plainNBD, adoptedNBD)
	}
	// The guest counts on compute2 (on its replica) while the copy runs.
	waitCounter(t, c.b.image(adopted), before, 30*time.Second)
	testenv.Report(t, "nova live migration compute1->compute2, 1 GiB disk holding %d MiB, TCG guest, time until it runs on compute2: adopted %.2f s (openstack --wait %.2f s; libvirt job %v, downtime %v, flags %#x, no NBD copy) vs block migration of an identical instance %.2f s (openstack --wait %.2f s; libvirt job %v, downtime %v, flags %#x, NBD copy)",
		rootData>>20, runs.Seconds(), took.Seconds(), job.Elapsed, job.Downtime, flags,
		plainRuns.Seconds(), plainTook.Seconds(), plainJob.Elapsed, plainJob.Downtime, plainFlags)

	c.notSafe(t, adopted)
	copied := waitCopied(t, adopted, c.a, c.b, 3*time.Minute)
	t.Logf("Nova's notifications as the agents received them:\n%s", c.notifications(t, adopted, since))
	testenv.Report(t, "nova: the adopted instance's 1 GiB disk was copied post-copy to compute2 %v after the migration returned ([replicator] bandwidth_limit %d MiB/s)",
		copied.Sub(landed).Round(100*time.Millisecond), novaBandwidth>>20)
	last := waitCounter(t, c.b.image(adopted), 0, 30*time.Second)
	c.sameDisk(t, c.b.image(adopted), nil, last)
	sameInode(t, c.novaFile(c.b, adopted), c.b.image(adopted))
	c.persistentOnFile(t, c.b, adopted)
}

// persistentOnFile waits until inst's domain on n runs on its managed
// disk while its persistent definition, what Nova reads once it has
// powered the instance off, names Nova's file.
func (c *novaCloud) persistentOnFile(t *testing.T, n *node, inst *instance) {
	t.Helper()
	d := c.domain(t, n, inst)
	testenv.Eventually(t, 30*time.Second, "the persistent definition names Nova's file", func() (bool, string) {
		live, err := n.conn.DomainXML(t.Context(), d, 0)
		if err != nil {
			return false, err.Error()
		}
		inactive, err := n.conn.DomainXML(t.Context(), d, virt.XMLInactive)
		if err != nil {
			return false, err.Error()
		}
		return strings.Contains(live, "name='"+inst.ref.IQN()+"/0'") &&
				strings.Contains(inactive, "<source file='"+novaInstances+"/"+inst.uuid+"/disk'/>"),
			fmt.Sprintf("live:\n%s\npersistent:\n%s", live, inactive)
	})
}

// notSafe: while compute2 copies inst's disk from compute1, `shareless
// status` on compute1 says it is not safe to power off, with the bytes
// left and the ETA.
func (c *novaCloud) notSafe(t *testing.T, inst *instance) {
	t.Helper()
	testenv.Eventually(t, 30*time.Second, "compute1 reports the copy to compute2", func() (bool, string) {
		st, err := c.a.status()
		if err != nil || st.SafeToPowerOff || len(st.CopyingFromHere) != 1 {
			return false, fmt.Sprintf("%+v %v", st, err)
		}
		o := st.CopyingFromHere[0]
		return o.Instance == inst.uuid && o.Known && o.BytesRemaining > 0 && o.ETASeconds > 0, fmt.Sprintf("%+v", o)
	})
	text := c.statusText(t, c.a)
	if !bytes.Contains([]byte(text), []byte("safe to power off: no")) {
		t.Errorf("shareless status on compute1 while compute2 copies:\n%s", text)
	}
	t.Logf("compute1 while compute2 copies from it:\n%s", text)
}

// drain: compute1 is the source of compute2's copy; `shareless status`
// says it is not safe to power it off, with what is left and when it
// ends, until the copy is done. Then compute1's services stop (its agent
// and nova-compute: the host is powered off) and the instance on
// compute2 keeps running on its disk.
func (c *novaCloud) drain(t *testing.T, inst *instance) {
	st, err := c.a.status()
	if err != nil {
		t.Fatal(err)
	}
	if !st.SafeToPowerOff {
		t.Fatalf("compute1 after the copy: not safe to power off: %+v", st.CopyingFromHere)
	}
	t.Logf("compute1 status after the copy:\n%s", c.statusText(t, c.a))
	// The plain instance went to compute2 with Nova's block migration
	// and owes compute1 nothing; the adopted one's copy is done. Power
	// compute1 off: its agent and nova-compute stop.
	c.a.stopAgent()
	if err := c.compute[c.a].Stop(30 * time.Second); err != nil {
		t.Errorf("nova-compute on compute1: %v", err)
	}
	n := waitCounter(t, c.b.image(inst), 0, 10*time.Second)
	waitCounter(t, c.b.image(inst), n+2, 30*time.Second)
	if s := c.show(t, inst.uuid); s.Status != "ACTIVE" || s.Host != c.b.name {
		t.Errorf("with compute1 off: %+v", s)
	}
	t.Logf("compute1 off: the instance on compute2 counted from %d past %d", n, n+2)
	// compute1 comes back for the way back.
	if err := c.a.startAgent(); err != nil {
		t.Fatal(err)
	}
	c.startCompute(t, c.a)
	testenv.Eventually(t, 2*time.Minute, "compute1's nova-compute up again", func() (bool, string) {
		out, err := c.tryOpenstack("compute", "service", "list", "--service", "nova-compute", "--host", c.a.name, "-f", "value", "-c", "State")
		return err == nil && out == "up", out + fmt.Sprint(err)
	})
}

// back: about 1% of the disk's tracking blocks change on compute2 (written
// through the managed disk's export there, by qemu-io as a second
// initiator beside the guest, which writes only its counter); the
// instance goes back to compute1, which fetches only the changed blocks:
// the bytes moved are printed against the disk's size, and compute1's
// image is exact.
func (c *novaCloud) back(t *testing.T, inst *instance) {
	wrote := c.scribble(t, c.b, inst, flavorDisk/grain/100)
	c.wrote = wrote
	runs, took, job := c.novaMigrate(t, inst, c.a)
	if job.DiskTotal != 0 {
		t.Errorf("the way back copied disk in libvirt: %+v", job)
	}
	waitCopied(t, inst, c.b, c.a, 3*time.Minute)
	moved, err := c.a.sourceReadBytes(inst)
	if err != nil {
		t.Fatal(err)
	}
	changed := int64(len(wrote)+1) * grain // and the counter's block
	testenv.Report(t, "nova live migration back compute2->compute1 after %d of %d tracking blocks changed: runs on compute1 after %.2f s (openstack --wait %.2f s), moved %d KiB = %.2f%% of the %d MiB disk",
		len(wrote), flavorDisk/grain, runs.Seconds(), took.Seconds(), moved>>10, 100*float64(moved)/flavorDisk, flavorDisk>>20)
	if moved < changed || moved > changed+4*grain {
		t.Errorf("the way back read %d bytes from compute2; want the %d changed blocks (%d bytes) and a few KiB QEMU reads when it opens the disk", moved, len(wrote)+1, changed)
	}
	last := waitCounter(t, c.a.image(inst), 0, 30*time.Second)
	c.sameDisk(t, c.a.image(inst), wrote, last)
	sameInode(t, c.novaFile(c.a, inst), c.a.image(inst))
}

// abort: a live migration to compute2 is aborted by Nova's API (DELETE
// /servers/{id}/migrations/{id}, `openstack server migration abort`)
// while libvirt moves its memory (slowed to 1 MiB/s for the abort to land
// mid-way): the instance stays whole on compute1, running on its disk,
// which is unsealed and exact; compute2 keeps no replica.
func (c *novaCloud) abort(t *testing.T, inst *instance) {
	ctx := t.Context()
	d := c.domain(t, c.a, inst)
	since := time.Now()
	c.openstack(t, "server", "migrate", "--live-migration", "--host", c.b.name, inst.uuid)
	testenv.Eventually(t, time.Minute, "libvirt migrates the instance", func() (bool, string) {
		job, err := c.a.conn.JobStats(ctx, d)
		return err == nil && job.Type != virt.JobNone, fmt.Sprintf("%+v %v", job, err)
	})
	if out, err := exec.Command("virsh", "-c", c.a.host.URI(), "migrate-setspeed", inst.domain, "1").CombinedOutput(); err != nil {
		t.Fatalf("virsh migrate-setspeed: %v\n%s", err, out)
	}
	var id string
	testenv.Eventually(t, time.Minute, "Nova lists the running migration", func() (bool, string) {
		out, err := c.tryOpenstack("server", "migration", "list", "--server", inst.uuid, "--status", "running", "-f", "value", "-c", "Id")
		id = out
		return err == nil && out != "", out + fmt.Sprint(err)
	})
	c.openstack(t, "server", "migration", "abort", inst.uuid, id)
	testenv.Eventually(t, 2*time.Minute, "Nova ends the aborted migration", func() (bool, string) {
		s := c.show(t, inst.uuid)
		return s.Status == "ACTIVE" && s.TaskState == "", fmt.Sprintf("%+v", s)
	})
	if s := c.show(t, inst.uuid); s.Host != c.a.name {
		t.Fatalf("after the abort: %+v", s)
	}
	var migs []struct {
		ID     int    `json:"Id"`
		Status string `json:"Status"`
	}
	if err := json.Unmarshal([]byte(c.openstack(t, "server", "migration", "list", "--server", inst.uuid, "-f", "json")), &migs); err != nil {
		t.Fatal(err)
	}
	for _, m := range migs {
		if fmt.Sprint(m.ID) == id && m.Status != "cancelled" {
			t.Errorf("the migration's status: %q, want cancelled", m.Status)
		}
	}
	stayed(t, inst, c.a, c.b)
	testenv.Eventually(t, 30*time.Second, "compute2 drops its replica", func() (bool, string) {
		d, ok := c.b.disk(inst)
		return !ok, fmt.Sprintf("%+v", d)
	})
	if d, ok := c.a.disk(inst); !ok || d.Sealed || d.State != "complete" {
		t.Errorf("compute1's disk after the abort: %+v", d)
	}
	n := waitCounter(t, c.a.image(inst), 0, 10*time.Second)
	waitCounter(t, c.a.image(inst), n+1, 30*time.Second)
	c.sameDisk(t, c.a.image(inst), c.wrote, n)
	sameInode(t, c.novaFile(c.a, inst), c.a.image(inst))
	t.Logf("Nova's notifications of the aborted migration:\n%s", c.notifications(t, inst, since))
}

// hardReboot: `openstack server reboot --hard` of the adopted instance.
// Nova destroys the domain and starts it on XML it writes again from its
// instance directory, naming its file; that file is the managed disk, so
// the prepare hook hands the disk back to Nova and the guest boots on it
// with every byte it wrote; once it runs the agent adopts it again
// ([libvirt] readopt), by link.
func (c *novaCloud) hardReboot(t *testing.T, inst *instance) {
	readopts := c.readopts(t, c.a)
	c.openstack(t, "server", "reboot", "--hard", "--wait", inst.uuid)
	c.readopted(t, c.a, inst, readopts)
}

// stopStart: `openstack server stop`, then `start`: Nova powers the domain
// off, and on start writes its XML again from its files (as hard reboot):
// the disk is handed back with the data, and adopted again.
func (c *novaCloud) stopStart(t *testing.T, inst *instance) {
	c.openstack(t, "server", "stop", inst.uuid)
	c.waitStatus(t, inst, "SHUTOFF")
	c.startHandsBack(t, inst)
}

// startHandsBack: the instance is off on compute1 with its managed disk
// whole; `openstack server start` writes the domain's XML again from
// Nova's files, so the disk is handed back with the data, and the agent
// adopts it again once it runs.
func (c *novaCloud) startHandsBack(t *testing.T, inst *instance) {
	c.sameDisk(t, c.a.image(inst), c.wrote, 0)
	readopts := c.readopts(t, c.a)
	c.openstack(t, "server", "start", inst.uuid)
	c.waitStatus(t, inst, "ACTIVE")
	c.readopted(t, c.a, inst, readopts)
}

// rescue: `openstack server rescue` powers the instance off and saves
// its domain's XML for unrescue: the persistent definition, which names
// Nova's file. The rescue domain starts from a fresh root (disk.rescue)
// with the instance's own file as its second disk: the prepare hook hands
// the disk back, and the rescue guest sees it with its data; the agent
// does not adopt a rescue domain. `openstack server unrescue` starts the
// saved XML, on the file, with the data; the agent adopts it again.
func (c *novaCloud) rescue(t *testing.T, inst *instance) {
	readopts := c.readopts(t, c.a)
	c.openstack(t, "server", "rescue", inst.uuid)
	c.waitStatus(t, inst, "RESCUE")
	if d, ok := c.a.disk(inst); ok {
		t.Fatalf("the agent still serves the disk in rescue: %+v", d)
	}
	// The rescue guest counts on both its disks, the instance's too.
	n := waitCounter(t, c.novaFile(c.a, inst), 0, 90*time.Second)
	c.sameDisk(t, c.novaFile(c.a, inst), c.wrote, n)
	if d, ok := c.a.disk(inst); ok {
		t.Fatalf("the agent adopted the rescue domain: %+v", d)
	}
	c.openstack(t, "server", "unrescue", inst.uuid)
	c.waitStatus(t, inst, "ACTIVE")
	c.readopted(t, c.a, inst, readopts)
}

// checkManaged fails the test unless inst's live domain on compute1 runs
// on its managed disk.
func checkManaged(t *testing.T, c *novaCloud, inst *instance) {
	t.Helper()
	live, err := c.a.conn.DomainXML(t.Context(), c.domain(t, c.a, inst), 0)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(live, "name='"+inst.ref.IQN()+"/0'") {
		t.Fatalf("the domain does not run on its managed disk:\n%s", live)
	}
}

// snapshot: `openstack server image create` of the adopted instance while
// it runs is refused (liveSnapshotRefused). Stopped, it is snapshotted
// cold: Nova reads the root disk's path from the domain's persistent
// definition, which names Nova's file, the managed disk's image (one
// inode), and the image (its data as the Glance stand-in stored it) holds
// every byte the guest wrote. `openstack server start` then hands the disk
// back, and it is adopted again.
func (c *novaCloud) snapshot(t *testing.T, inst *instance) {
	c.liveSnapshotRefused(t, inst)
	c.persistentOnFile(t, c.a, inst)
	c.openstack(t, "server", "stop", inst.uuid)
	c.waitStatus(t, inst, "SHUTOFF")
	last, err := lab.ReadCounter(c.a.image(inst))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	out := c.openstack(t, "server", "image", "create", "--name", "snap-"+inst.uuid[:8], "--wait", "-f", "value", "-c", "id", inst.uuid)
	took := time.Since(start)
	// --wait prints its progress before the id.
	id := out[strings.LastIndexAny(out, "\r\n")+1:]
	c.waitStatus(t, inst, "SHUTOFF")
	file := c.standInData(id)
	if n, err := lab.ReadCounter(file); err != nil || n != last {
		t.Errorf("the snapshot's counter: %d (%v); the stopped guest's disk holds %d", n, err, last)
	}
	c.sameDisk(t, file, c.wrote, last)
	testenv.Report(t, "nova: cold snapshot of the stopped adopted instance (%d MiB disk) from Nova's file: image active after %.2f s (openstack server image create --wait), equal to what the guest wrote",
		flavorDisk>>20, took.Seconds())
	c.openstack(t, "image", "delete", id)
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Errorf("the Glance stand-in keeps the deleted image's data: %v", err)
	}
	c.startHandsBack(t, inst)
}

// liveSnapshotRefused: `openstack server image create` of the running
// adopted instance. Nova's libvirt driver reads the root disk's path from
// the live XML, which names the managed disk (a network disk), and fails
// the snapshot before it changes anything, deleting the image it created;
// compute1's agent logs why and what works. The instance stays ACTIVE on
// its managed disk, with its data.
func (c *novaCloud) liveSnapshotRefused(t *testing.T, inst *instance) {
	name := "live-" + inst.uuid[:8]
	if out, err := c.tryOpenstack("server", "image", "create", "--name", name, "--wait", inst.uuid); err == nil {
		t.Fatalf("the live snapshot of the adopted instance succeeded:\n%s", out)
	}
	c.waitStatus(t, inst, "ACTIVE")
	log, err := os.ReadFile(c.compute[c.a].Log)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(log, []byte(snapshotRefusal)) {
		t.Errorf("nova-compute on compute1 did not refuse the snapshot with %q", snapshotRefusal)
	}
	if log, err = os.ReadFile(c.a.agent.Log); err != nil || !bytes.Contains(log, []byte(liveSnapshotAdvice)) {
		t.Errorf("compute1's agent did not log %q (%v)", liveSnapshotAdvice, err)
	}
	if images := c.openstack(t, "image", "list", "-f", "value", "-c", "Name"); slices.Contains(strings.Fields(images), name) {
		t.Errorf("Nova kept the image of the refused snapshot: %s", images)
	}
	t.Logf("the live snapshot was refused (%q), the agent said why (%q)", snapshotRefusal, liveSnapshotAdvice)
	if d, ok := c.a.disk(inst); !ok || d.State != "complete" || d.Sealed {
		t.Fatalf("the managed disk after the refused snapshot: %+v", d)
	}
	checkManaged(t, c, inst)
	n := waitCounter(t, c.a.image(inst), 0, 10*time.Second)
	c.sameDisk(t, c.a.image(inst), c.wrote, n)
}

// shelve: `openstack server shelve` powers the adopted instance off,
// snapshots it cold from Nova's file as above and offloads it
// (shelved_offload_time 0): Nova removes the domain and its files, and on
// instance.shelve_offload.end every agent frees the instance's managed
// disks and its adoption guard; the shelved image holds every byte the
// guest wrote. `openstack server unshelve` boots it from that image on
// compute1 (this openstackclient has no --host, Nova's microversion 2.91:
// compute2's nova-compute is disabled meanwhile), on Nova's file with the
// data, and Nova deletes the image. It is adopted again.
func (c *novaCloud) shelve(t *testing.T, inst *instance) {
	last := waitCounter(t, c.a.image(inst), 0, 10*time.Second)
	start := time.Now()
	c.openstack(t, "server", "shelve", inst.uuid)
	c.waitStatus(t, inst, "SHELVED_OFFLOADED")
	shelved := time.Since(start)
	c.freed(t, inst)
	if _, err := os.Stat(c.novaFile(c.a, inst)); !os.IsNotExist(err) {
		t.Errorf("Nova's file after the offload: %v", err)
	}
	image := c.standInData(c.shelvedImage(t, inst))
	c.sameDisk(t, image, c.wrote, last)

	c.openstack(t, "compute", "service", "set", "--disable", "--disable-reason", "the unshelve goes to compute1", c.b.name, "nova-compute")
	start = time.Now()
	_, err := c.tryOpenstack("server", "unshelve", "--wait", inst.uuid)
	unshelved := time.Since(start)
	c.openstack(t, "compute", "service", "set", "--enable", c.b.name, "nova-compute")
	if err != nil {
		t.Fatal(err)
	}
	c.waitStatus(t, inst, "ACTIVE")
	c.handedBack(t, c.a, inst)
	testenv.Eventually(t, time.Minute, "Nova deletes the shelved image", func() (bool, string) {
		_, err := os.Stat(image)
		return os.IsNotExist(err), fmt.Sprint(err)
	})
	testenv.Report(t, "nova: shelve of the adopted instance (%d MiB disk, cold snapshot of Nova's file, offloaded, store freed) %.2f s; unshelve onto compute1 from the image %.2f s (openstack --wait), every byte the guest wrote there",
		flavorDisk>>20, shelved.Seconds(), unshelved.Seconds())
	c.adoptAgain(t, inst)
}

// shelvedImage is the id of the image Nova shelved inst into, checked to
// be inst's: "<server name>-shelved", with its instance_uuid.
func (c *novaCloud) shelvedImage(t *testing.T, inst *instance) string {
	t.Helper()
	var images []struct {
		ID   string `json:"ID"`
		Name string `json:"Name"`
	}
	if err := json.Unmarshal([]byte(c.openstack(t, "image", "list", "-f", "json")), &images); err != nil {
		t.Fatal(err)
	}
	want := c.show(t, inst.uuid).Name + "-shelved"
	for _, im := range images {
		if im.Name != want {
			continue
		}
		var shown struct {
			Status     string         `json:"status"`
			Properties map[string]any `json:"properties"`
		}
		if err := json.Unmarshal([]byte(c.openstack(t, "image", "show", "-f", "json", im.ID)), &shown); err != nil {
			t.Fatal(err)
		}
		if shown.Status != "active" || shown.Properties["instance_uuid"] != inst.uuid {
			t.Fatalf("the shelved image %s: %+v", im.ID, shown)
		}
		return im.ID
	}
	t.Fatalf("no image %q: %+v", want, images)
	return ""
}

// standInData is where the osbox's Glance stand-in keeps an uploaded
// image's data.
func (c *novaCloud) standInData(id string) string {
	return filepath.Join(c.osboxDir, "images", id)
}

// rebootWhileCopying: after a live migration to compute2, while compute2
// does not hold the whole disk yet (its agent under [replicator] method =
// remote, so that the copy waits for the operator), Nova's operations that
// read the disk's file find none: compute2's agent links it into Nova's
// directory only once the disk is whole, and the domain's persistent
// definition names that file. `openstack server migrate --host compute1`
// (cold) powers the instance off and fails before it copies anything: the
// server goes to ERROR on compute2. `openstack server reboot --hard`:
// Nova destroys the domain and, to start it again from its files, looks
// for the file: it fails before it starts anything. The data stays whole.
// `shareless copy-now` copies the rest; then a hard reboot starts: the
// agent linked the disk as Nova's file there and hands it back, and the
// guest boots with every byte; the agent adopts it again.
func (c *novaCloud) rebootWhileCopying(t *testing.T, inst *instance) {
	setMethod(t, c.b, "remote")
	c.novaMigrate(t, inst, c.b)
	if d, ok := c.b.disk(inst); !ok || d.BytesRemaining == 0 || d.Mode != "remote" {
		t.Fatalf("compute2 holds the whole disk already: %+v", d)
	}
	c.persistentOnFile(t, c.b, inst)
	missing := []byte("No such file or directory: '" + novaInstances + "/" + inst.uuid + "/disk'")
	log, err := os.ReadFile(c.compute[c.b].Log)
	if err != nil {
		t.Fatal(err)
	}
	before := bytes.Count(log, missing)
	out, err := c.tryOpenstack("server", "migrate", "--host", c.a.name, "--wait", inst.uuid)
	t.Logf("openstack server migrate --host %s (cold) while compute2 copies: %v\n%s", c.a.name, err, out)
	testenv.Eventually(t, 2*time.Minute, "the failed cold migration ends", func() (bool, string) {
		s := c.show(t, inst.uuid)
		return s.TaskState == "" && s.Status == "ERROR" && s.Host == c.b.name, fmt.Sprintf("%+v", s)
	})
	if log, err = os.ReadFile(c.compute[c.b].Log); err != nil || bytes.Count(log, missing) <= before {
		t.Errorf("nova-compute on compute2 did not fail the cold migration on %q (%v)", missing, err)
	}
	if _, err := os.Stat(c.novaFile(c.a, inst)); !os.IsNotExist(err) {
		t.Errorf("compute1 has a disk file of the instance after the failed cold migration: %v", err)
	}
	if d, ok := c.b.disk(inst); !ok || d.State == "complete" {
		t.Fatalf("compute2's disk after the failed cold migration: %+v", d)
	}
	out, err = c.tryOpenstack("server", "reboot", "--hard", "--wait", inst.uuid)
	t.Logf("openstack server reboot --hard while compute2 copies: %v\n%s", err, out)
	testenv.Eventually(t, 2*time.Minute, "the refused reboot ends", func() (bool, string) {
		s := c.show(t, inst.uuid)
		return s.TaskState == "" && s.Status == "ERROR", fmt.Sprintf("%+v", s)
	})
	if log, err = os.ReadFile(c.compute[c.b].Log); err != nil {
		t.Fatal(err)
	}
	refusal := []byte("Cannot reboot instance: [Errno 2] No such file or directory: '" + novaInstances + "/" + inst.uuid + "/disk'")
	if !bytes.Contains(log, refusal) {
		t.Errorf("nova-compute on compute2 did not fail the reboot with %q", refusal)
	}
	if d, ok := c.b.disk(inst); !ok || d.State == "complete" {
		t.Fatalf("compute2's disk after the refused reboot: %+v", d)
	}
	if out, err := exec.Command(c.bin, "copy-now", "--socket", c.b.outside(socketPath), inst.uuid).CombinedOutput(); err != nil {
		t.Fatalf("shareless copy-now: %v\n%s", err, out)
	}
	// After a resize the disk is bigger, and all of it allocated (Nova's
	// scp wrote its zeroes): twice its time at the bandwidth limit.
	waitCopied(t, inst, c.a, c.b, max(3*time.Minute, 2*time.Duration(c.rootDisk/novaBandwidth)*time.Second))
	sameInode(t, c.novaFile(c.b, inst), c.b.image(inst))
	readopts := c.readopts(t, c.b)
	c.openstack(t, "server", "reboot", "--hard", "--wait", inst.uuid)
	c.waitStatus(t, inst, "ACTIVE")
	c.readopted(t, c.b, inst, readopts)
}

// snapshotRefusal is how Nova's libvirt driver fails a snapshot of a
// domain whose root disk is a network disk other than RBD;
// liveSnapshotAdvice, how the agent explains it.
const (
	snapshotRefusal    = "Can't retrieve root device path from instance libvirt configuration"
	liveSnapshotAdvice = "Nova cannot snapshot a running instance whose disks are shareless managed disks"
)

// deleteFrees: `openstack server delete` frees the instance's managed
// disks in every agent's store (compute1 kept the sealed image of the
// migration to compute2) and its adoption guard.
func (c *novaCloud) deleteFrees(t *testing.T, inst *instance) {
	c.openstack(t, "server", "delete", "--wait", inst.uuid)
	c.freed(t, inst)
}

// freed waits until every agent has removed inst's managed disk from its
// store and its adoption guard.
func (c *novaCloud) freed(t *testing.T, inst *instance) {
	t.Helper()
	for _, n := range []*node{c.a, c.b} {
		waitFreed(t, n, inst)
	}
}

// waitFreed waits until n's agent holds nothing of inst: neither its
// managed disk nor the disk's store entry nor its adoption guard.
func waitFreed(t *testing.T, n *node, inst *instance) {
	t.Helper()
	testenv.Eventually(t, 30*time.Second, n.name+" frees the instance's disk and guard", func() (bool, string) {
		d, ok := n.disk(inst)
		_, err := os.Stat(filepath.Dir(n.image(inst)))
		_, gerr := os.Stat(n.outside(filepath.Join(statePath, "guard", inst.domain)))
		return !ok && os.IsNotExist(err) && os.IsNotExist(gerr), fmt.Sprintf("%+v, store entry: %v, guard: %v", d, err, gerr)
	})
}

// handedBack checks that inst is ACTIVE on n and runs on Nova's file with
// the data (onNovaFile).
func (c *novaCloud) handedBack(t *testing.T, n *node, inst *instance) {
	t.Helper()
	if s := c.show(t, inst.uuid); s.Status != "ACTIVE" || s.Host != n.name {
		t.Fatalf("%+v", s)
	}
	c.onNovaFile(t, n, inst, c.rootDisk)
}

// onNovaFile checks that inst runs on n on Nova's file, of size bytes,
// which the agent does not serve, with the data and a new counter.
func (c *novaCloud) onNovaFile(t *testing.T, n *node, inst *instance, size int64) {
	t.Helper()
	if d, ok := n.disk(inst); ok {
		t.Fatalf("the agent still serves the disk: %+v", d)
	}
	live, err := n.conn.DomainXML(t.Context(), c.domain(t, n, inst), 0)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(live, "<source file='"+novaInstances+"/"+inst.uuid+"/disk'") {
		t.Fatalf("the domain does not run on Nova's file:\n%s", live)
	}
	last := waitCounter(t, c.novaFile(n, inst), 0, 90*time.Second)
	c.sameDiskOf(t, c.novaFile(n, inst), size, c.wrote, last)
	t.Logf("the guest runs on Nova's file on %s with its data", n.name)
}

// readoptMsg is how an agent logs that it adopted an instance again after
// Nova started it on its files.
const readoptMsg = "adopted again after Nova's start"

// readopts counts n's agent's adoptions after Nova's starts so far.
func (c *novaCloud) readopts(t *testing.T, n *node) int {
	t.Helper()
	b, err := os.ReadFile(n.agent.Log)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Count(b, []byte(readoptMsg))
}

// readopted checks that inst is ACTIVE on n, where Nova started it on its
// file: the agent handed the disk back for the start and, once the guest
// ran, adopted it again by link (one more readopt than before): the guest
// counts on the managed disk, Nova's file, with every byte it wrote.
func (c *novaCloud) readopted(t *testing.T, n *node, inst *instance, before int) {
	t.Helper()
	if s := c.show(t, inst.uuid); s.Status != "ACTIVE" || s.Host != n.name {
		t.Fatalf("%+v", s)
	}
	testenv.Eventually(t, time.Minute, n.name+"'s agent adopts the instance again", func() (bool, string) {
		d, ok := n.disk(inst)
		return c.readopts(t, n) > before && ok && d.State == "complete", fmt.Sprintf("%+v", d)
	})
	c.persistentOnFile(t, n, inst)
	sameInode(t, c.novaFile(n, inst), n.image(inst))
	last := waitCounter(t, n.image(inst), 0, 30*time.Second)
	c.sameDisk(t, n.image(inst), c.wrote, last)
	t.Logf("%s: Nova's start handed the disk back, the agent adopted it again; the guest counts on it with its data", n.name)
}

// adoptAgain adopts inst on compute1 again, by link.
func (c *novaCloud) adoptAgain(t *testing.T, inst *instance) {
	t.Helper()
	var ad localapi.Adoption
	if err := json.Unmarshal(c.adopt(t, c.a, inst.uuid), &ad); err != nil || len(ad.Disks) != 1 || !ad.Disks[0].Linked {
		t.Fatalf("adopting again: %+v (%v)", ad, err)
	}
	sameInode(t, c.novaFile(c.a, inst), c.a.image(inst))
	n := waitCounter(t, c.a.image(inst), 0, 10*time.Second)
	waitCounter(t, c.a.image(inst), n, 30*time.Second)
}

func (c *novaCloud) waitStatus(t *testing.T, inst *instance, status string) {
	t.Helper()
	testenv.Eventually(t, 3*time.Minute, "server "+status, func() (bool, string) {
		s := c.show(t, inst.uuid)
		return s.Status == status && s.TaskState == "", fmt.Sprintf("%+v", s)
	})
}

// domain is inst's domain on n.
func (c *novaCloud) domain(t *testing.T, n *node, inst *instance) virt.Domain {
	t.Helper()
	u, err := virt.ParseUUID(inst.uuid)
	if err != nil {
		t.Fatal(err)
	}
	d, err := n.conn.LookupDomainByUUID(t.Context(), u)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// notifications are the Nova notifications about inst that the agents
// logged since a time: when, which agent, event, sender, outcome.
func (c *novaCloud) notifications(t *testing.T, inst *instance, since time.Time) string {
	t.Helper()
	type line struct {
		at                               time.Time
		agent, event, publisher, outcome string
	}
	var lines []line
	for _, n := range []*node{c.a, c.b} {
		b, err := os.ReadFile(n.agent.Log)
		if err != nil {
			t.Fatal(err)
		}
		for l := range strings.Lines(string(b)) {
			if !strings.Contains(l, "msg=notification ") || !strings.Contains(l, "instance="+inst.uuid) {
				continue
			}
			f := logfmt(l)
			at, err := time.Parse(time.RFC3339Nano, f["time"])
			if err != nil || at.Before(since) {
				continue
			}
			lines = append(lines, line{at, n.name, f["event_type"], f["publisher"], f["outcome"]})
		}
	}
	slices.SortFunc(lines, func(x, y line) int { return x.at.Compare(y.at) })
	var out strings.Builder
	for _, l := range lines {
		fmt.Fprintf(&out, "  %6.2fs  %-8s  %-42s  %-22s  %s\n", l.at.Sub(since).Seconds(), l.agent, l.event, l.publisher, l.outcome)
	}
	return out.String()
}

// logfmt splits one logfmt line into its keys and values.
func logfmt(line string) map[string]string {
	f := map[string]string{}
	for rest := strings.TrimSpace(line); rest != ""; {
		k, v, ok := strings.Cut(rest, "=")
		if !ok {
			break
		}
		if strings.HasPrefix(v, `"`) {
			end := 1
			for end < len(v) && (v[end] != '"' || v[end-1] == '\\') {
				end++
			}
			f[k], rest = strings.Trim(v[:min(end+1, len(v))], `"`), strings.TrimSpace(v[min(end+1, len(v)):])
			continue
		}
		val, r, _ := strings.Cut(v, " ")
		f[k], rest = val, strings.TrimSpace(r)
	}
	return f
}

// storageCopy are libvirt's VIR_MIGRATE_NON_SHARED_DISK and
// VIR_MIGRATE_NON_SHARED_INC: a block migration.
const storageCopy = 0x40 | 0x80

// logMark is where each host's libvirtd log was when a step began.
type logMark map[*node]int

// logMigrations has n's libvirtd log its migration steps (with their
// flags) besides the QMP commands the lab logs.
func (c *novaCloud) logMigrations(t *testing.T, n *node) {
	t.Helper()
	admin := "libvirtd:///system?socket=" + n.host.Dir + "/run/libvirt-admin-sock"
	if out, err := exec.Command("virt-admin", "-c", admin, "daemon-log-filters", "1:qemu.qemu_monitor 1:qemu.qemu_migration").CombinedOutput(); err != nil {
		t.Fatalf("virt-admin on %s: %v\n%s", n.name, err, out)
	}
}

func (c *novaCloud) markLogs(t *testing.T) logMark {
	t.Helper()
	m := logMark{}
	for _, n := range []*node{c.a, c.b} {
		b, err := n.host.LibvirtdLog()
		if err != nil {
			t.Fatal(err)
		}
		m[n] = len(b)
	}
	return m
}

// logsSince is what the hosts' libvirtd logs gained since m.
func (c *novaCloud) logsSince(t *testing.T, m logMark) []byte {
	t.Helper()
	var all []byte
	for n, off := range m {
		b, err := n.host.LibvirtdLog()
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, b[min(off, len(b)):]...)
	}
	return all
}

// flagsRE finds the flags of a migration step in libvirt's debug log: on
// the line that also says how many disks it copies.
var flagsRE = regexp.MustCompile(`nmigrate_disks=\d+.*flags=(0x[0-9a-f]+)`)

// migrationFlags are the flags of the source's migration since m.
func (c *novaCloud) migrationFlags(t *testing.T, m logMark) uint64 {
	t.Helper()
	logs := c.logsSince(t, m)
	found := flagsRE.FindSubmatch(logs)
	if found == nil {
		t.Fatalf("no migration flags in the libvirtd logs (%d bytes)", len(logs))
	}
	var f uint64
	if _, err := fmt.Sscanf(string(found[1]), "0x%x", &f); err != nil {
		t.Fatal(err)
	}
	return f
}

// nbd reports whether QMP commands hold QEMU's NBD block copy.
func nbd(qmp []byte) bool {
	return bytes.Contains(qmp, []byte("nbd-server-start")) || bytes.Contains(qmp, []byte("blockdev-mirror"))
}

// qmpSince are the QMP commands libvirt sent QEMU since m.
func (c *novaCloud) qmpSince(t *testing.T, m logMark) []byte {
	t.Helper()
	var out []byte
	for line := range bytes.Lines(c.logsSince(t, m)) {
		if bytes.Contains(line, []byte("QEMU_MONITOR_SEND_MSG")) {
			out = append(out, line...)
		}
	}
	return out
}

// statusText is `shareless status` on n.
func (c *novaCloud) statusText(t *testing.T, n *node) string {
	t.Helper()
	out, err := exec.Command(c.bin, "status", "--socket", n.outside(socketPath)).CombinedOutput()
	if err != nil {
		t.Fatalf("shareless status on %s: %v\n%s", n.name, err, out)
	}
	return string(out)
}

// scribble writes count 4 KiB runs of random data at distinct tracking
// blocks of inst's managed disk on n (never block 0, the guest's counter),
// through n's export with qemu-io, and returns them by offset.
func (c *novaCloud) scribble(t *testing.T, n *node, inst *instance, count int64) map[int64][]byte {
	t.Helper()
	rng := mrand.New(mrand.NewPCG(7, uint64(count)))
	runs := map[int64][]byte{}
	used := map[int64]bool{}
	args := []string{"-f", "raw"}
	for int64(len(runs)) < count {
		block := 1 + rng.Int64N(flavorDisk/grain-1)
		if used[block] {
			continue
		}
		used[block] = true
		off := block*grain + rng.Int64N(grain/4096)*4096
		pattern := byte(1 + rng.IntN(254))
		runs[off] = bytes.Repeat([]byte{pattern}, 4096)
		args = append(args, "-c", fmt.Sprintf("write -P %#x %d 4096", pattern, off))
	}
	url := fmt.Sprintf("iscsi://%s%%%s@127.0.0.1:%d/%s/0", chapUser, c.chap, iscsiPort, inst.ref.IQN())
	if out, err := n.host.Command(t.Context(), "qemu-io", append(args, url)...).CombinedOutput(); err != nil {
		t.Fatalf("qemu-io on %s: %v\n%s", n.name, err, out)
	}
	return runs
}

// sameDisk checks an image of the adopted instance's root disk, of its
// flavor's size (sameDiskOf).
func (c *novaCloud) sameDisk(t *testing.T, image string, wrote map[int64][]byte, last uint64) {
	t.Helper()
	c.sameDiskOf(t, image, c.rootDisk, wrote, last)
}

// sameDiskOf checks an image of the root disk of size bytes: the root
// image's data, zeroes after it, the runs in wrote, and in sector 0 the
// guest's counter, at least last.
func (c *novaCloud) sameDiskOf(t *testing.T, image string, size int64, wrote map[int64][]byte, last uint64) {
	t.Helper()
	if n, err := lab.ReadCounter(image); err != nil || n < last {
		t.Errorf("%s: counter %d (%v); the guest had counted to %d", image, n, err, last)
	}
	f, err := os.Open(image)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || fi.Size() != size {
		t.Fatalf("%s: %v bytes (%v), want %d", image, fi.Size(), err, size)
	}
	const step = 1 << 20
	got, want := make([]byte, step), make([]byte, step)
	for off := int64(0); off < size; off += step {
		if _, err := io.ReadFull(f, got); err != nil {
			t.Fatal(err)
		}
		clear(want)
		if off < int64(len(c.root)) {
			copy(want, c.root[off:])
		}
		for at, run := range wrote {
			if at >= off && at < off+step {
				copy(want[at-off:], run)
			}
		}
		from := 0
		if off == 0 {
			from = 512 // the counter
		}
		if i := firstDiff(got[from:], want[from:]); i >= 0 {
			t.Fatalf("%s differs from what the guest wrote at byte %d", image, off+int64(from+i))
		}
	}
}

func firstDiff(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// sameInode fails the test unless a and b are one file.
func sameInode(t *testing.T, a, b string) {
	t.Helper()
	fa, err := os.Stat(a)
	if err != nil {
		t.Fatal(err)
	}
	fb, err := os.Stat(b)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(fa, fb) {
		t.Fatalf("%s and %s are not the same file", a, b)
	}
}
