package virt_test

import (
	"context"
	"errors"
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
// are printed.
func TestMigrateThereAndBack(t *testing.T) {
	testenv.SkipIfShort(t)
	l := lab.Start(t, lab.Options{})
	hosts := []*lab.Host{l.A(), l.B()}
	conns := []*virt.Conn{connect(t, l.A()), connect(t, l.B())}
	ctx := t.Context()
	var events []<-chan virt.LifecycleEvent
	for _, c := range conns {
		ch, err := c.LifecycleEvents(ctx)
		if err != nil {
			t.Fatal(err)
		}
		events = append(events, ch)
	}

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
	expectEvent(t, events[0], name, virt.EventStarted, "booted")
	if err := lab.WaitConsole(l.ConsoleLog(name), lab.BootMarker, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	waitCounter(t, img, 1, 10*time.Second)

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
		mctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		start := time.Now()
		err = src.Migrate(mctx, d, virt.MigrateOptions{DestURI: hosts[hop.to].MigrationURI(), DestXML: destXML})
		wall := time.Since(start)
		cancel()
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
		expectEvent(t, events[hop.to], name, virt.EventStarted, "migrated")
		expectEvent(t, events[hop.from], name, virt.EventStopped, "migrated")

		js, err := dst.CompletedJobStats(ctx, nd)
		if err != nil {
			t.Fatal(err)
		}
		if js.Type != virt.JobCompleted || js.Operation != virt.JobMigrationIn || js.DiskTotal != 0 {
			t.Fatalf("%s: completed job %+v, want an incoming RAM-only migration", label, js)
		}
		after := waitCounter(t, img, before, 10*time.Second)
		t.Logf("migration %s: downtime=%v total=%v wall=%v memory=%.1fMiB of %.1fMiB in %d iterations, disk copied=%d bytes; counter %d -> %d",
			label, js.Downtime, js.Elapsed, wall.Round(time.Millisecond), mib(js.MemoryProcessed), mib(js.MemoryTotal),
			js.MemoryIteration, js.DiskProcessed, before, after)
	}
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }
