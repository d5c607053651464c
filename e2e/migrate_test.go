package e2e

import (
	"testing"
	"time"

	"github.com/shareless/shareless/internal/testenv"
	"github.com/shareless/shareless/virt"
)

// TestLiveMigration runs real live migrations of running guests with
// managed disks between the lab's two hosts, each scenario with its own
// instance (the disks are created in A's store before the agents start)
// in one lab, because a lab and its broker take a while to come up.
func TestLiveMigration(t *testing.T) {
	c, insts := startCloud(t, "back", "kill", "cut", "abort", "refuse")
	t.Run("there and back", func(t *testing.T) { thereAndBack(t, c, insts["back"]) })
}

// thereAndBack: A→B with Method C, the guest running throughout; B's
// replica copies everything and holds A's data; then B→A, where only the
// blocks the guest modified on B move, and A's image is exact.
func thereAndBack(t *testing.T, c *cloud, inst *instance) {
	a, b := c.a, c.b
	c.boot(t, a, inst)
	w := watchCounter(a.image(inst), b.image(inst))
	w.waitPast(t, 2, 20*time.Second)

	m, err := c.migrate(t.Context(), t, inst, a, b, virt.MigrateOptions{}, true)
	if err != nil {
		t.Fatalf("migrate A→B: %v", err)
	}
	w.waitPast(t, w.max(), 10*time.Second)
	copied := waitCopied(t, inst, a, b, 2*time.Minute)
	sameData(t, inst, b.image(inst))
	testenv.Report(t, "e2e migration a->b (Method C, %d MiB disk, bandwidth_limit %d MiB/s): downtime %v, migration %v (libvirt), copy %v after the switch-over (agent)",
		diskSize>>20, bandwidth>>20, m.job.Downtime, m.job.Elapsed, copied.Sub(m.landed).Round(time.Millisecond))

	// The way back: A still holds the image B copied, sealed, so A fetches
	// only what the guest modified on B.
	w.waitPast(t, w.max()+1, 10*time.Second)
	m, err = c.migrate(t.Context(), t, inst, b, a, virt.MigrateOptions{}, true)
	if err != nil {
		t.Fatalf("migrate B→A: %v", err)
	}
	copied = waitCopied(t, inst, b, a, 2*time.Minute)
	// The guest wrote only sector 0 on B: one tracking block. A fetches
	// it either by the copier or when the guest's next write covers part
	// of it, whichever comes first; both read it from B once. Besides,
	// QEMU reads a few KiB when it opens the disk on the destination,
	// before the seal, which pass through to B uncached (rule 5).
	moved, err := a.sourceReadBytes(inst)
	if err != nil {
		t.Fatal(err)
	}
	if moved < grain || moved >= 2*grain {
		t.Errorf("the way back read %d bytes from B; want the one %d-byte block the guest modified there, and QEMU's few KiB of pass-through reads", moved, grain)
	}
	w.waitPast(t, w.max()+1, 10*time.Second)
	testenv.Report(t, "e2e migration b->a (Method C, way back): downtime %v, migration %v (libvirt), copy %v (agent), moved %d KiB of the %d MiB disk",
		m.job.Downtime, m.job.Elapsed, copied.Sub(m.landed).Round(time.Millisecond), moved>>10, diskSize>>20)

	stop(t, a, inst)
	first, last := w.finish(t)
	n := checkImage(t, inst, a.image(inst))
	if n < last {
		t.Errorf("A's image holds counter %d; the guest had counted to %d", n, last)
	}
	checkImage(t, inst, b.image(inst))
	t.Logf("the guest counted %d..%d without a gap across both migrations", first, last)
}

// stop powers inst off on n. Nothing is lost: the guest's writes are
// synchronous (dd with fsync, cache='none'), so each has reached the agent
// when it completes.
func stop(t *testing.T, n *node, inst *instance) {
	t.Helper()
	d, err := n.conn.LookupDomain(t.Context(), inst.domain)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.conn.DestroyDomain(t.Context(), d); err != nil {
		t.Fatal(err)
	}
}
