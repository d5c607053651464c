package virt_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/shareless/shareless/internal/lab"
	"github.com/shareless/shareless/internal/testenv"
	"github.com/shareless/shareless/virt"
)

// TestMigrateThereAndBack live-migrates a running guest whose disk is an
// iSCSI network disk from host A to host B and back, peer to peer, the way
// Nova's libvirt driver does (destination XML from the migratable XML,
// Nova's default flags). The LUN is served by tgtd on A's lab address,
// which both hosts reach, so the migration moves RAM only. The guest must
// keep counting on its disk after each move; the completed job's figures
// are printed. Before that, two attempts must fail and leave the guest
// on A: one refused by B's qemu hook (ErrHookFailed), one cancelled by
// its context (aborted in libvirt, ErrOperationAborted).
func TestMigrateThereAndBack(t *testing.T) {
	testenv.SkipIfShort(t)
	l := lab.Start(t, lab.Options{Hooks: map[string][]byte{"refuse": []byte(refuseHook)}})
	hosts := []*lab.Host{l.A(), l.B()}
	conns := []*virt.Conn{connect(t, l.A()), connect(t, l.B())}
	ctx := t.Context()
	// subscribe follows a host's events for one step of the test, so
	// that events of earlier steps do not linger.
	subscribe := func(c *virt.Conn) (<-chan virt.LifecycleEvent, context.CancelFunc) {
		t.Helper()
		sctx, cancel := context.WithCancel(ctx)
		ch, err := c.LifecycleEvents(sctx)
		if err != nil {
			t.Fatal(err)
		}
		return ch, cancel
	}
	events, stop := subscribe(conns[0])

	img := rawDisk(t, l.Dir, "mig.img", 32<<20)
	lun := l.A().StartTGTD(t).AddLUN(t, "mig", img)
	name := "shl-" + l.ID + "-mig"
	d, err := conns[0].DefineDomain(ctx, l.Guest.DomainXML(name, l.ConsoleLog(name), lab.Disk{Target: "vda", ISCSI: &lun}))
	if err != nil {
		t.Fatal(err)
	}
	if err := conns[0].StartDomain(ctx, d); err != nil {
		t.Fatal(err)
	}
	expectEvent(t, events, name, virt.EventStarted, "booted")
	stop()
	if err := lab.WaitConsole(l.ConsoleLog(name), lab.BootMarker, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	waitCounter(t, img, 1, 10*time.Second)

	// Two migrations that must fail and leave the guest running on A.
	stayed := func(t *testing.T) {
		t.Helper()
		if _, err := conns[1].LookupDomain(ctx, name); !errors.Is(err, virt.ErrNoDomain) {
			t.Fatalf("B has the domain: %v", err)
		}
		if st, err := conns[0].DomainState(ctx, d); err != nil || st != virt.StateRunning {
			t.Fatalf("on A: state %v, %v", st, err)
		}
		n, _ := lab.ReadCounter(img)
		waitCounter(t, img, n, 10*time.Second)
	}
	t.Run("refused by the destination hook", func(t *testing.T) {
		marker := filepath.Join(l.B().Dir, "etc", "refuse-migration")
		if err := os.WriteFile(marker, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(marker)
		err := conns[0].Migrate(ctx, d, virt.MigrateOptions{DestURI: l.B().MigrationURI()})
		if !errors.Is(err, virt.ErrHookFailed) {
			t.Fatalf("got %v, want ErrHookFailed", err)
		}
		t.Logf("refused as expected: %v", err)
		stayed(t)
	})
	t.Run("cancelled", func(t *testing.T) {
		// At 1 MiB/s the guest's ~60 MiB take a minute: cancel once the
		// source's job stats show memory moving, as Nova's monitor
		// would when a migration does not converge.
		mctx, cancel := context.WithCancel(ctx)
		defer cancel()
		done := make(chan error, 1)
		go func() {
			done <- conns[0].Migrate(mctx, d, virt.MigrateOptions{DestURI: l.B().MigrationURI(), BandwidthMiB: 1})
		}()
		deadline := time.Now().Add(30 * time.Second)
		for {
			js, err := conns[0].JobStats(ctx, d)
			if err != nil {
				t.Fatal(err)
			}
			if js.Type == virt.JobUnbounded && js.Operation == virt.JobMigrationOut && js.MemoryProcessed > 0 {
				t.Logf("migrating: %.1f of %.1f MiB after %v; cancelling", mib(js.MemoryProcessed), mib(js.MemoryTotal), js.Elapsed)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no migration progress in job stats: %+v", js)
			}
			time.Sleep(100 * time.Millisecond)
		}
		cancel()
		err := <-done
		if !errors.Is(err, context.Canceled) || !errors.Is(err, virt.ErrOperationAborted) {
			t.Fatalf("got %v, want Canceled and ErrOperationAborted", err)
		}
		t.Logf("aborted as expected: %v", err)
		stayed(t)
	})

	for _, hop := range []struct{ from, to int }{{0, 1}, {1, 0}} {
		src, dst := conns[hop.from], conns[hop.to]
		label := hosts[hop.from].Name + "->" + hosts[hop.to].Name
		d, err := src.LookupDomain(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		destXML, err := src.DomainXML(ctx, d, virt.XMLMigratable|virt.XMLSecure)
		if err != nil {
			t.Fatal(err)
		}
		before, err := lab.ReadCounter(img)
		if err != nil {
			t.Fatal(err)
		}
		evFrom, stopFrom := subscribe(src)
		evTo, stopTo := subscribe(dst)
		mctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		watch := watchJob(ctx, src, d)
		start := time.Now()
		err = src.Migrate(mctx, d, virt.MigrateOptions{DestURI: hosts[hop.to].MigrationURI(), DestXML: destXML})
		wall := time.Since(start)
		cancel()
		srcJob := watch()
		if err != nil {
			t.Fatalf("migrate %s: %v", label, err)
		}

		// The source undefined it (VIR_MIGRATE_UNDEFINE_SOURCE); the
		// destination runs it, persistently.
		if _, err := src.LookupDomain(ctx, name); !errors.Is(err, virt.ErrNoDomain) {
			t.Fatalf("%s: source still has the domain: %v", label, err)
		}
		nd, err := dst.LookupDomain(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if st, err := dst.DomainState(ctx, nd); err != nil || st != virt.StateRunning {
			t.Fatalf("%s: destination state %v, %v", label, st, err)
		}
		if _, err := dst.DomainXML(ctx, nd, virt.XMLInactive); err != nil {
			t.Fatalf("%s: not persistent on the destination: %v", label, err)
		}
		expectEvent(t, evTo, name, virt.EventStarted, "migrated")
		expectEvent(t, evFrom, name, virt.EventStopped, "migrated")
		stopFrom()
		stopTo()

		js, err := dst.CompletedJobStats(ctx, nd)
		if err != nil {
			t.Fatal(err)
		}
		if js.Type != virt.JobCompleted || js.Operation != virt.JobMigrationIn {
			t.Fatalf("%s: completed job %+v, want an incoming migration", label, js)
		}
		// RAM only: the source's job never had a disk to copy, and the
		// destination's QEMU never served NBD.
		if srcJob.MemoryTotal == 0 || srcJob.DiskTotal != 0 {
			t.Fatalf("%s: source job %+v, want memory and no disk", label, srcJob)
		}
		if bytes.Contains(qmpLog(t, hosts[hop.to]), []byte("nbd-server-start")) {
			t.Fatalf("%s: the destination started an NBD server", label)
		}
		after := waitCounter(t, img, before, 10*time.Second)
		testenv.Report(t, "migration %s: downtime=%v total=%v wall=%v memory=%.1fMiB of %.1fMiB in %d iterations, disk copied=%d bytes (source job); counter %d -> %d",
			label, js.Downtime, js.Elapsed, wall.Round(time.Millisecond), mib(js.MemoryProcessed), mib(js.MemoryTotal),
			js.MemoryIteration, srcJob.DiskProcessed, before, after)
	}
}

// refuseHook is a libvirt qemu hook that refuses incoming migrations while
// /etc/libvirt/refuse-migration exists on its host, as the shareless hook
// refuses one whose disks are not ready.
const refuseHook = `#!/bin/sh
if [ "$2 $3" = "migrate begin" ] && [ -e /etc/libvirt/refuse-migration ]; then
	echo "refused by the test's hook" >&2
	exit 1
fi
exit 0
`

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// TestBlockMigration moves a guest whose disk is a local file, the same
// path on both hosts but different storage, with Nova's block migration
// (NBD copy of the listed disk): the completed job reports the disk bytes,
// the guest counts on B's file, and B's file holds A's data.
func TestBlockMigration(t *testing.T) {
	testenv.SkipIfShort(t)
	l := lab.Start(t, lab.Options{})
	a, b := l.A(), l.B()
	ca, cb := connect(t, a), connect(t, b)
	ctx := t.Context()

	const size = 32 << 20
	name := "shl-" + l.ID + "-blk"
	for _, h := range l.Hosts {
		if err := os.MkdirAll(filepath.Join(h.Instances(), name), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	srcFile := filepath.Join(a.Instances(), name, "disk")
	dstFile := filepath.Join(b.Instances(), name, "disk")
	dataDisk(t, srcFile, size)
	rawDisk(t, filepath.Join(b.Instances(), name), "disk", size) // Nova creates the destination's disk first
	disk := lab.Disk{Target: "vda", File: filepath.Join(lab.InstancesPath, name, "disk")}
	d, err := ca.DefineDomain(ctx, l.Guest.DomainXML(name, l.ConsoleLog(name), disk))
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.StartDomain(ctx, d); err != nil {
		t.Fatal(err)
	}
	if err := lab.WaitConsole(l.ConsoleLog(name), lab.BootMarker, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	waitCounter(t, srcFile, 1, 10*time.Second)

	destXML, err := ca.DomainXML(ctx, d, virt.XMLMigratable|virt.XMLSecure)
	if err != nil {
		t.Fatal(err)
	}
	// The disk figures are the source's: the destination's incoming job
	// counts memory only, and the source's completed stats go with its
	// domain (go-libvirt drops the job-completed event). So watch the
	// source's job while it runs, as Nova's migration monitor does.
	watch := watchJob(ctx, ca, d)
	start := time.Now()
	if err := ca.Migrate(ctx, d, virt.MigrateOptions{DestURI: b.MigrationURI(), DestXML: destXML, CopyDisks: []string{"vda"}}); err != nil {
		t.Fatal(err)
	}
	wall := time.Since(start)
	src := watch()
	nd, err := cb.LookupDomain(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	js, err := cb.CompletedJobStats(ctx, nd)
	if err != nil {
		t.Fatal(err)
	}
	if src.DiskTotal != size || src.DiskProcessed == 0 {
		t.Fatalf("source job %+v: want the %d-byte disk copied", src, size)
	}
	if !bytes.Contains(qmpLog(t, b), []byte("nbd-server-start")) {
		t.Fatal("the destination never started an NBD server")
	}
	last, err := lab.ReadCounter(srcFile)
	if err != nil {
		t.Fatal(err)
	}
	n := waitCounter(t, dstFile, last, 10*time.Second)
	if now, _ := lab.ReadCounter(srcFile); now != last {
		t.Fatalf("A's file still changes: %d -> %d", last, now)
	}
	t.Logf("block migration a->b: downtime=%v total=%v wall=%v disk=%.1fMiB of %.1fMiB (last seen on the source) memory=%.1fMiB; counter %d on A, %d on B",
		js.Downtime, js.Elapsed, wall.Round(time.Millisecond), mib(src.DiskProcessed), mib(src.DiskTotal), mib(js.MemoryProcessed), last, n)
	sameBeyondCounter(t, srcFile, dstFile)
}

// watchJob polls d's job stats every 50 ms until the returned function is
// called, which returns the last stats seen while a job ran.
func watchJob(ctx context.Context, c *virt.Conn, d virt.Domain) func() virt.JobStats {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan virt.JobStats, 1)
	go func() {
		var last virt.JobStats
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			if js, err := c.JobStats(ctx, d); err == nil && js.Type != virt.JobNone {
				last = js
			}
			select {
			case <-ctx.Done():
				done <- last
				return
			case <-t.C:
			}
		}
	}()
	return func() virt.JobStats {
		cancel()
		return <-done
	}
}

// TestMigrateLoopbackDisk migrates a guest whose disk XML is a managed
// disk's: an iSCSI disk on 127.0.0.1, valid unchanged on every host
// because each host serves the IQN on its own loopback (here tgtd on both
// hosts, over one backing file, standing in for the agents). After the
// move, B's QEMU is logged in to B's target and A's target is idle.
func TestMigrateLoopbackDisk(t *testing.T) {
	testenv.SkipIfShort(t)
	l := lab.Start(t, lab.Options{})
	a, b := l.A(), l.B()
	ca := connect(t, a)
	ctx := t.Context()

	img := rawDisk(t, l.Dir, "managed.img", 32<<20)
	ta, tb := a.StartTGTD(t), b.StartTGTD(t)
	lun := ta.AddLUN(t, "managed", img)
	if other := tb.AddLUN(t, "managed", img); other.IQN != lun.IQN {
		t.Fatalf("IQNs differ: %s, %s", lun.IQN, other.IQN)
	}
	lun.Host = "127.0.0.1"
	name := "shl-" + l.ID + "-lo"
	d, err := ca.DefineDomain(ctx, l.Guest.DomainXML(name, l.ConsoleLog(name), lab.Disk{Target: "vda", ISCSI: &lun}))
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.StartDomain(ctx, d); err != nil {
		t.Fatal(err)
	}
	if err := lab.WaitConsole(l.ConsoleLog(name), lab.BootMarker, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	waitCounter(t, img, 1, 10*time.Second)
	if n, m := ta.Sessions(t, lun), tb.Sessions(t, lun); n != 1 || m != 0 {
		t.Fatalf("before: sessions on A %d, on B %d; want 1, 0", n, m)
	}
	// No destination XML: the disk needs no rewriting.
	if err := ca.Migrate(ctx, d, virt.MigrateOptions{DestURI: b.MigrationURI()}); err != nil {
		t.Fatal(err)
	}
	before, err := lab.ReadCounter(img)
	if err != nil {
		t.Fatal(err)
	}
	after := waitCounter(t, img, before, 10*time.Second)
	if n, m := ta.Sessions(t, lun), tb.Sessions(t, lun); n != 0 || m != 1 {
		t.Fatalf("after: sessions on A %d, on B %d; want 0, 1", n, m)
	}
	t.Logf("loopback disk followed the guest to B: counter %d -> %d", before, after)
}
