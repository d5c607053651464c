package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/shareless/shareless/internal/lab"
	"github.com/shareless/shareless/internal/testenv"
	"github.com/shareless/shareless/localapi"
	"github.com/shareless/shareless/virt"
)

// TestLiveMigration runs real live migrations of running guests with
// managed disks between the lab's two hosts, each scenario with its own
// instance (the disks are created in A's store before the agents start)
// in one lab, because a lab and its broker take a while to come up.
func TestLiveMigration(t *testing.T) {
	c, insts := startCloud(t, []string{"back", "kill", "cut", "abort", "refuse", "adopt", "methodb"}, "adopt")
	t.Run("there and back", func(t *testing.T) { thereAndBack(t, c, insts["back"]) })
	t.Run("destination agent killed mid-copy", func(t *testing.T) { agentKilled(t, c, insts["kill"]) })
	t.Run("link cut mid-copy", func(t *testing.T) { linkCut(t, c, insts["cut"]) })
	t.Run("aborted before switch-over", func(t *testing.T) { aborted(t, c, insts["abort"]) })
	t.Run("destination hook refuses", func(t *testing.T) { refused(t, c, insts["refuse"]) })
	t.Run("adopted file disk there and back", func(t *testing.T) { adopted(t, c, insts["adopt"]) })
	t.Run("method A: FC volume lands as an iSCSI disk", func(t *testing.T) { methodA(t, c) })
	// Last: it restarts B's agent under another method and back.
	t.Run("method B then copy-now", func(t *testing.T) { methodB(t, c, insts["methodb"]) })
}

// methodB: B's agent runs with [replicator] method = remote (Method B).
// After A→B the guest counts on B while B's store holds only what it wrote
// there, reading the rest from A, and nothing is copied; `copy-now`
// (Method C from then on) completes the copy and B's image is exact. B's
// agent gets method = copy back at the end.
func methodB(t *testing.T, c *cloud, inst *instance) {
	a, b := c.a, c.b
	setMethod(t, b, "remote")
	t.Cleanup(func() { setMethod(t, b, "copy") })
	c.boot(t, a, inst, managedDisk(inst))
	w := watchCounter(t, a.image(inst), b.image(inst))
	w.waitPast(t, 2, 20*time.Second)
	m, err := c.migrate(t, inst, a, b)
	if err != nil {
		t.Fatalf("migrate A→B: %v", err)
	}
	w.waitPast(t, w.max()+3, 20*time.Second) // the guest goes on writing on B
	// At bandwidth_limit a copy would have moved several MiB by now.
	d, _ := b.disk(inst)
	if d.State != "remote" || d.Mode != "remote" || d.BytesCopied != 0 || d.BytesLocal > 2*grain {
		t.Fatalf("B's disk under Method B: %+v; want remote, nothing copied, only the guest's block(s) local", d)
	}
	if mg, _ := b.migration(inst, "dest"); mg.Phase == "copied" {
		t.Fatalf("the migration ended without a copy: %+v", mg)
	}
	if st, err := a.status(); err != nil || st.SafeToPowerOff {
		t.Errorf("A while B reads from it: safe to power off %v, %v", st.SafeToPowerOff, err)
	}
	remote, err := b.metric(fmt.Sprintf("shareless_disk_read_remote_bytes_total{instance=%q,disk=%q}", inst.uuid, inst.ref.Disk))
	if err != nil || remote == 0 {
		t.Errorf("B's reads from A: %d, %v; want some", remote, err)
	}
	t.Logf("Method B on B: %d bytes local of %d, %d bytes copied, guest read %d bytes from A",
		d.BytesLocal, d.Size, d.BytesCopied, remote)

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	res, err := localapi.NewClient(b.outside(socketPath)).CopyNow(ctx, inst.uuid)
	if err != nil || len(res.Switched) != 1 {
		t.Fatalf("copy-now: %+v, %v", res, err)
	}
	took := copiedExactly(t, c, inst, w, m)
	testenv.Report(t, "e2e method B a->b: %d KiB local before copy-now, then the copy took %v after the switch-over",
		d.BytesLocal>>10, took)
}

// setMethod restarts n's agent with [replicator] method = method.
func setMethod(t *testing.T, n *node, method string) {
	t.Helper()
	n.stopAgent()
	conf, err := os.ReadFile(n.outside(confPath))
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^method = .*\n`)
	conf = append(re.ReplaceAll(conf, nil), "method = "+method+"\n"...) // [replicator] is the last section
	if err := os.WriteFile(n.outside(confPath), conf, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := n.startAgent(); err != nil {
		t.Fatal(err)
	}
}

// thereAndBack: A→B with Method C, the guest running throughout; B's
// replica copies everything and holds A's data; then B→A, where only the
// blocks the guest modified on B move, and A's image is exact.
func thereAndBack(t *testing.T, c *cloud, inst *instance) {
	a, b := c.a, c.b
	c.boot(t, a, inst, managedDisk(inst))
	w := watchCounter(t, a.image(inst), b.image(inst))
	w.waitPast(t, 2, 20*time.Second)

	m, err := c.migrate(t, inst, a, b)
	if err != nil {
		t.Fatalf("migrate A→B: %v", err)
	}
	w.waitPast(t, w.max(), 10*time.Second)
	// A is still the source of B's copy: an operator must not power it
	// off (design.md §3).
	if st, err := a.status(); err != nil || st.SafeToPowerOff {
		t.Errorf("A while B copies from it: safe to power off %v, %v", st.SafeToPowerOff, err)
	}
	copied := waitCopied(t, inst, a, b, 2*time.Minute)
	sameData(t, inst, b.image(inst))
	if st, err := a.status(); err != nil || !st.SafeToPowerOff {
		t.Errorf("A after B copied everything: safe to power off %v (%+v), %v", st.SafeToPowerOff, st.CopyingFromHere, err)
	}
	testenv.Report(t, "e2e migration a->b (Method C, %d MiB disk, bandwidth_limit %d MiB/s): downtime %v, migration %v (libvirt), copy %v after the switch-over (agent)",
		diskSize>>20, bandwidth>>20, m.job.Downtime, m.job.Elapsed, copied.Sub(m.landed).Round(time.Millisecond))

	// The way back: A still holds the image B copied, sealed, so A fetches
	// only what the guest modified on B.
	w.waitPast(t, w.max()+1, 10*time.Second)
	m, err = c.migrate(t, inst, b, a)
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

// toB boots inst on A, migrates it to B and waits until B copies, for a
// fault in the middle of the copy.
func toB(t *testing.T, c *cloud, inst *instance) (*counterWatch, migration) {
	t.Helper()
	c.boot(t, c.a, inst, managedDisk(inst))
	w := watchCounter(t, c.a.image(inst), c.b.image(inst))
	w.waitPast(t, 1, 20*time.Second)
	m, err := c.migrate(t, inst, c.a, c.b)
	if err != nil {
		t.Fatalf("migrate A→B: %v", err)
	}
	testenv.Eventually(t, 30*time.Second, "B copies", func() (bool, string) {
		d, _ := c.b.disk(inst)
		return d.State == "copying" && d.BytesLocal >= diskSize/4, fmt.Sprintf("%+v", d)
	})
	return w, m
}

// copiedExactly waits for the end of inst's copy to B, stops the guest and
// checks B's image and the guest's counter.
func copiedExactly(t *testing.T, c *cloud, inst *instance, w *counterWatch, m migration) time.Duration {
	t.Helper()
	copied := waitCopied(t, inst, c.a, c.b, 2*time.Minute)
	w.waitPast(t, w.max()+1, 20*time.Second)
	stop(t, c.b, inst)
	first, last := w.finish(t)
	if n := checkImage(t, inst, c.b.image(inst)); n < last {
		t.Errorf("B's image holds counter %d; the guest had counted to %d", n, last)
	}
	t.Logf("the guest counted %d..%d without a gap", first, last)
	return copied.Sub(m.landed).Round(time.Millisecond)
}

// agentKilled: B's agent dies (SIGKILL) in the middle of the copy and
// starts again; it resumes from what it persisted, the guest on B waits
// for its disk meanwhile and goes on, and B's image is exact.
func agentKilled(t *testing.T, c *cloud, inst *instance) {
	w, m := toB(t, c, inst)
	before, _ := c.b.disk(inst)
	if err := c.b.agent.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	if err := c.b.startAgent(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "B copies again", func() (bool, string) {
		d, _ := c.b.disk(inst)
		return d.BytesLocal > before.BytesLocal, fmt.Sprintf("%+v", d)
	})
	after, _ := c.b.disk(inst)
	resumed := time.Since(killed).Round(time.Millisecond)
	counted := w.waitPast(t, w.max(), 30*time.Second)
	took := copiedExactly(t, c, inst, w, m)
	testenv.Report(t, "e2e migration a->b, B's agent SIGKILLed mid-copy at %d of %d MiB local: copying again %v later (%d MiB local), guest counting again (%d), copy %v in all, downtime %v, B's image exact",
		before.BytesLocal>>20, diskSize>>20, resumed, after.BytesLocal>>20, counted, took, m.job.Downtime)
}

// linkCut: the link between the hosts is cut for 10 s in the middle of
// the copy. The copy stalls, the guest on B goes on with the blocks it
// holds (its writes are local), and the copy resumes by itself, at once,
// when the link returns; B's image is exact.
func linkCut(t *testing.T, c *cloud, inst *instance) {
	w, m := toB(t, c, inst)
	if err := c.lab.Cut(c.b.host); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	restored := false
	defer func() {
		if !restored {
			c.lab.Restore(c.b.host)
		}
	}()
	atCut, _ := c.b.disk(inst)
	counter := w.max()
	time.Sleep(10 * time.Second)
	during, _ := c.b.disk(inst)
	if err := c.lab.Restore(c.b.host); err != nil {
		t.Fatal(err)
	}
	restored = true
	back := time.Now()
	// What was in flight at the cut may still land; the copy must not
	// advance by more than that while the link is down.
	if during.BytesLocal-atCut.BytesLocal > 8*chunk {
		t.Errorf("B copied %d bytes with the link cut", during.BytesLocal-atCut.BytesLocal)
	}
	if w.max() <= counter {
		t.Errorf("the guest on B stopped counting while the link was cut (at %d)", counter)
	}
	testenv.Eventually(t, 60*time.Second, "B copies again", func() (bool, string) {
		d, _ := c.b.disk(inst)
		return d.BytesLocal > during.BytesLocal || d.BytesRemaining == 0, fmt.Sprintf("%+v", d)
	})
	resumed := time.Now()
	took := copiedExactly(t, c, inst, w, m)
	// The initiator notices a silent source only by its keepalive, so B
	// may or may not have called A down within 10 s; either way the copy
	// resumes by itself.
	testenv.Report(t, "e2e migration a->b, link cut 10 s mid-copy at %d of %d MiB local (B reported its source down: %v): copying again %v after the link returned (%v after the cut), guest on B counting throughout, copy %v in all, downtime %v, B's image exact",
		atCut.BytesLocal>>20, diskSize>>20, during.SourceDownSince != nil, resumed.Sub(back).Round(time.Millisecond),
		resumed.Sub(cut).Round(time.Millisecond), took, m.job.Downtime)
}

// aborted: the operator aborts the migration before the switch-over
// (nova live-migration-abort: abort.start, libvirt's abortJob, abort.end,
// then Nova's rollback). B discards its replica, A's export stays
// writable, and the guest runs on on A.
func aborted(t *testing.T, c *cloud, inst *instance) {
	a, b := c.a, c.b
	d := c.boot(t, a, inst, managedDisk(inst))
	w := watchCounter(t, a.image(inst))
	w.waitPast(t, 1, 20*time.Second)
	c.preLiveMigration(t, inst, a, b)
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		// 1 MiB/s: the guest's memory takes about a minute.
		done <- c.liveMigrate(t.Context(), inst, a, b, virt.MigrateOptions{BandwidthMiB: 1})
	}()
	testenv.Eventually(t, 30*time.Second, "memory moving", func() (bool, string) {
		js, err := a.conn.JobStats(t.Context(), d)
		return err == nil && js.Operation == virt.JobMigrationOut && js.MemoryProcessed > 0, fmt.Sprintf("%+v %v", js, err)
	})
	if _, ok := b.disk(inst); !ok {
		t.Error("B does not serve a replica during the migration")
	}
	c.emit(t, notification("abort-start", inst, a, a))
	if err := a.conn.AbortJob(t.Context(), d); err != nil {
		t.Fatal(err)
	}
	c.emit(t, notification("abort-end", inst, a, a))
	err := <-done
	if !errors.Is(err, virt.ErrOperationAborted) {
		t.Fatalf("migration ended with %v; want it aborted", err)
	}
	c.finish(t, inst, a, b, err)
	stayed(t, inst, a, b)
	checkRolledBack(t, c, inst)
	rolledBack := time.Since(start).Round(time.Millisecond)
	w.waitPast(t, w.max()+1, 20*time.Second)
	stop(t, a, inst)
	_, last := w.finish(t)
	checkImage(t, inst, a.image(inst))
	testenv.Report(t, "e2e migration a->b aborted before the switch-over: B's replica discarded and A's export writable %v after the start; the guest counted on on A to %d, A's image exact",
		rolledBack, last)
}

// refused: the destination's hook refuses the migration (the pre
// notifications never reached B's agent, so it has no replica ready
// within hook_wait); libvirt fails the migration cleanly and the guest
// runs on on A.
func refused(t *testing.T, c *cloud, inst *instance) {
	a, b := c.a, c.b
	c.boot(t, a, inst, managedDisk(inst))
	w := watchCounter(t, a.image(inst))
	w.waitPast(t, 1, 20*time.Second)
	start := time.Now()
	err := c.liveMigrate(t.Context(), inst, a, b, virt.MigrateOptions{})
	took := time.Since(start).Round(time.Millisecond)
	if !errors.Is(err, virt.ErrHookFailed) {
		t.Fatalf("migration ended with %v; want it refused by the hook", err)
	}
	t.Logf("refused after %v: %v", took, err)
	if took < hookWait || took > hookWait+10*time.Second {
		t.Errorf("the hook answered after %v; want hook_wait, %v", took, hookWait)
	}
	c.finish(t, inst, a, b, err)
	stayed(t, inst, a, b)
	if d, _ := a.disk(inst); d.Sealed || d.State != "complete" {
		t.Errorf("A's disk after the refusal: %+v", d)
	}
	w.waitPast(t, w.max()+1, 20*time.Second)
	stop(t, a, inst)
	w.finish(t)
	checkImage(t, inst, a.image(inst))
	testenv.Report(t, "e2e migration a->b refused by B's hook after %v (hook_wait %v); the guest counted on on A", took, hookWait)
}

// adopted: a running guest on a local file disk is adopted with shareless
// adopt (A's agent creates the managed disk, has libvirt block-copy the
// file onto it in synchronous-writes mode and pivot), then migrated to B
// and back with no block migration: the migrations move RAM only, the
// disk follows by Method C.
func adopted(t *testing.T, c *cloud, inst *instance) {
	a, b := c.a, c.b
	ctx := t.Context()
	dir := filepath.Join(a.host.Instances(), inst.uuid)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "disk")
	if err := os.WriteFile(file, inst.data(), 0o644); err != nil {
		t.Fatal(err)
	}
	fileDisk := lab.Disk{Target: "vda", File: filepath.Join(lab.InstancesPath, inst.uuid, "disk")}
	c.boot(t, a, inst, fileDisk)
	w := watchCounter(t, file, a.image(inst), b.image(inst))
	w.waitPast(t, 1, 20*time.Second)
	start := time.Now()
	out, err := exec.CommandContext(ctx, c.bin, "adopt", "--socket", a.outside(socketPath), inst.domain).CombinedOutput()
	if err != nil {
		t.Fatalf("shareless adopt %s: %v\n%s", inst.domain, err, out)
	}
	adoption := time.Since(start).Round(time.Millisecond)
	onFile := w.max()
	w.waitPast(t, onFile, 20*time.Second)
	if n, _ := lab.ReadCounter(file); n != onFile {
		t.Logf("note: the file disk's counter is %d, last seen %d", n, onFile)
	}
	sameData(t, inst, a.image(inst))

	m, err := c.migrate(t, inst, a, b)
	if err != nil {
		t.Fatalf("migrate A→B: %v", err)
	}
	copied := waitCopied(t, inst, a, b, 2*time.Minute)
	there := fmt.Sprintf("downtime %v, migration %v, copy %v", m.job.Downtime, m.job.Elapsed, copied.Sub(m.landed).Round(time.Millisecond))
	w.waitPast(t, w.max()+1, 20*time.Second)
	m, err = c.migrate(t, inst, b, a)
	if err != nil {
		t.Fatalf("migrate B→A: %v", err)
	}
	copied = waitCopied(t, inst, b, a, 2*time.Minute)
	w.waitPast(t, w.max()+1, 20*time.Second)
	stop(t, a, inst)
	_, last := w.finish(t)
	if n := checkImage(t, inst, a.image(inst)); n < last {
		t.Errorf("A's image holds counter %d; the guest had counted to %d", n, last)
	}
	if n, _ := lab.ReadCounter(file); n > onFile {
		t.Errorf("the abandoned file disk was written after the pivot: counter %d > %d", n, onFile)
	}
	// Nova regenerates file-disk XML on hard reboot and start: the hook
	// must refuse to boot the stale file.
	d, err := a.conn.DefineDomain(ctx, c.lab.Guest.InstanceXML(inst.uuid, inst.domain, c.lab.ConsoleLog(inst.domain), fileDisk))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.conn.StartDomain(ctx, d); !errors.Is(err, virt.ErrHookFailed) || !strings.Contains(err.Error(), "adopted") {
		t.Errorf("starting the adopted instance on its stale file: %v; want the hook to refuse it as adopted", err)
	}
	testenv.Report(t, "e2e adoption of a running file-disk guest (%d MiB) by shareless adopt (block copy, pivot) in %v; then a->b RAM only (%s) and b->a (downtime %v, migration %v, copy %v), A's image exact, a start on the stale file refused",
		diskSize>>20, adoption, there, m.job.Downtime, m.job.Elapsed, copied.Sub(m.landed).Round(time.Millisecond))
}

// checkRolledBack checks that a rolled-back migration left nothing on B
// and A's export writable.
func checkRolledBack(t *testing.T, c *cloud, inst *instance) {
	t.Helper()
	testenv.Eventually(t, 20*time.Second, "B's replica discarded", func() (bool, string) {
		_, open := c.b.disk(inst)
		_, err := os.Stat(filepath.Join(c.b.outside(storePath), inst.ref.String()))
		return !open && errors.Is(err, os.ErrNotExist), fmt.Sprintf("open %v, store entry %v", open, err)
	})
	testenv.Eventually(t, 20*time.Second, "A's source record rolled back", func() (bool, string) {
		m, _ := c.a.migration(inst, "source")
		d, _ := c.a.disk(inst)
		return m.Phase == "rolled-back" && !d.Sealed, fmt.Sprintf("migration %+v, disk %+v", m, d)
	})
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
