package e2e

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/shareless/shareless/internal/testenv"
	"github.com/shareless/shareless/virt"
)

// Nova's cold migration and resize with the libvirt driver and no shared
// storage: the source powers the instance off, reads its disks from the
// domain's persistent definition, and copies Nova's files to the
// destination with ssh and scp (the lab's sshd); the destination starts
// the instance on its copy, VERIFY_RESIZE. A confirm deletes the source's
// files; a revert deletes the destination's and starts the instance again
// on the source's. Each step starts with the instance adopted on compute1
// and ends with it there, adopted again. The adopted domain's persistent
// definition names Nova's file (agent/persistent.go), which holds the
// managed disk's data (one inode): that is what Nova copies. Nova's file
// on the destination is a plain file disk; the source's agent frees the
// managed disk once the move is confirmed, and hands it back to Nova when
// a revert starts the instance again on the source's file, then adopts it
// again ([libvirt] readopt).

// coldMigrate: `openstack server migrate --host compute2 --wait`, then
// `openstack server resize confirm`: the instance runs on compute2 on
// Nova's file with every byte the guest wrote, and compute1 keeps nothing
// of it (no agent store entry, no instance directory). Then the same
// back to compute1, where it is adopted again.
func (c *novaCloud) coldMigrate(t *testing.T, inst *instance) {
	c.persistentOnFile(t, c.a, inst)
	runs, took := c.coldMove(t, inst, c.b, "migrate", "--host", c.b.name)
	c.onNovaFile(t, c.b, inst, c.rootDisk)
	confirm := c.confirm(t, inst, c.a)
	c.handedBack(t, c.b, inst)
	testenv.Report(t, "nova cold migration compute1->compute2 of a %d MiB raw disk (scp): runs on compute2 after %.2f s (openstack --wait %.2f s), confirm %.2f s",
		c.rootDisk>>20, runs.Seconds(), took.Seconds(), confirm.Seconds())
	runs, took = c.coldMove(t, inst, c.a, "migrate", "--host", c.a.name)
	confirm = c.confirm(t, inst, c.b)
	c.handedBack(t, c.a, inst)
	testenv.Report(t, "nova cold migration back compute2->compute1: runs on compute1 after %.2f s (openstack --wait %.2f s), confirm %.2f s",
		runs.Seconds(), took.Seconds(), confirm.Seconds())
	c.adoptAgain(t, inst)
}

// resizeRevert: `openstack server resize --flavor BIG --wait` moves the
// instance to compute2 (Nova resizes on another host), where it runs on
// Nova's copy grown to the bigger root disk, with the data; `openstack
// server resize revert` starts it again on compute1 on its own file, the
// old size, with the data (the agent hands the disk back to Nova for the
// start and adopts it again once it runs), and compute2 keeps nothing of
// it.
func (c *novaCloud) resizeRevert(t *testing.T, inst *instance) {
	c.persistentOnFile(t, c.a, inst)
	runs, took := c.coldMove(t, inst, c.b, "resize", "--flavor", bigFlavor)
	c.onNovaFile(t, c.b, inst, bigDisk)
	readopts := c.readopts(t, c.a)
	start := time.Now()
	c.openstack(t, "server", "resize", "revert", inst.uuid)
	c.waitStatus(t, inst, "ACTIVE")
	revert := time.Since(start)
	c.readopted(t, c.a, inst, readopts)
	c.leftNothing(t, c.b, inst)
	testenv.Report(t, "nova resize %d->%d MiB root disk, compute1->compute2 (scp): runs on compute2 after %.2f s (openstack --wait %.2f s), revert to compute1 %.2f s",
		c.rootDisk>>20, bigDisk>>20, runs.Seconds(), took.Seconds(), revert.Seconds())
}

// resize: as resizeRevert, confirmed: the instance stays on compute2 with
// the bigger root disk (which later steps see), and compute1 keeps nothing
// of it; then it is cold-migrated back to compute1 and adopted again.
func (c *novaCloud) resize(t *testing.T, inst *instance) {
	c.persistentOnFile(t, c.a, inst)
	runs, took := c.coldMove(t, inst, c.b, "resize", "--flavor", bigFlavor)
	confirm := c.confirm(t, inst, c.a)
	c.rootDisk = bigDisk
	c.handedBack(t, c.b, inst)
	testenv.Report(t, "nova resize %d->%d MiB root disk, compute1->compute2 (scp): runs on compute2 after %.2f s (openstack --wait %.2f s), confirm %.2f s",
		flavorDisk>>20, bigDisk>>20, runs.Seconds(), took.Seconds(), confirm.Seconds())
	runs, took = c.coldMove(t, inst, c.a, "migrate", "--host", c.a.name)
	confirm = c.confirm(t, inst, c.b)
	c.handedBack(t, c.a, inst)
	testenv.Report(t, "nova cold migration back compute2->compute1 of the resized %d MiB raw disk (scp): runs on compute1 after %.2f s (openstack --wait %.2f s), confirm %.2f s",
		bigDisk>>20, runs.Seconds(), took.Seconds(), confirm.Seconds())
	c.adoptAgain(t, inst)
}

// coldMove runs `openstack server ARGS... --wait INSTANCE` (a cold
// migration or a resize) and checks that it leaves inst in VERIFY_RESIZE on
// dst. It returns how long after the command started the domain ran on dst
// and how long the command took.
func (c *novaCloud) coldMove(t *testing.T, inst *instance, dst *node, args ...string) (runs, took time.Duration) {
	t.Helper()
	start := time.Now()
	landed := c.watchRuns(t, inst, dst, start)
	_, err := c.tryOpenstack(append(append([]string{"server"}, args...), "--wait", inst.uuid)...)
	took = time.Since(start)
	runs = landed()
	if err != nil {
		t.Fatal(err)
	}
	if s := c.show(t, inst.uuid); s.Status != "VERIFY_RESIZE" || s.Host != dst.name {
		t.Fatalf("after server %v to %s: %+v; want VERIFY_RESIZE there", args, dst.name, s)
	}
	return runs, took
}

// confirm runs `openstack server resize confirm`, waits until the instance
// is ACTIVE, checks that src, the host it left, keeps nothing of it, and
// returns how long that took.
func (c *novaCloud) confirm(t *testing.T, inst *instance, src *node) time.Duration {
	t.Helper()
	start := time.Now()
	c.openstack(t, "server", "resize", "confirm", inst.uuid)
	c.waitStatus(t, inst, "ACTIVE")
	took := time.Since(start)
	c.leftNothing(t, src, inst)
	return took
}

// leftNothing checks that n holds nothing of inst: no domain, no instance
// directory of Nova's (nor the one a migration renames it to), nothing in
// the agent's store.
func (c *novaCloud) leftNothing(t *testing.T, n *node, inst *instance) {
	t.Helper()
	dir := n.outside(filepath.Join(novaInstances, inst.uuid))
	testenv.Eventually(t, 30*time.Second, n.name+" drops the instance", func() (bool, string) {
		for _, d := range []string{dir, dir + "_resize"} {
			if _, err := os.Stat(d); !os.IsNotExist(err) {
				return false, d + " is still there"
			}
		}
		return true, ""
	})
	if _, err := n.conn.LookupDomain(t.Context(), inst.domain); !errors.Is(err, virt.ErrNoDomain) {
		t.Errorf("%s's libvirt still has the domain %s (%v)", n.name, inst.domain, err)
	}
	waitFreed(t, n, inst)
}
