package e2e

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/shareless/shareless/internal/lab"
	"github.com/shareless/shareless/internal/novaemit"
	"github.com/shareless/shareless/virt"
)

// notification is Nova's versioned notification instance.live_migration_EVENT
// as publisher's nova-compute sends it, payload.host set to payloadHost.
func notification(event string, inst *instance, publisher, payloadHost *node) novaemit.Line {
	return novaemit.Line{
		Sample:      filepath.Join("..", "testdata", "nova-notifications", "resolved", "instance-live_migration_"+event+".json"),
		PublisherID: "nova-compute:" + publisher.name, UUID: inst.uuid, Host: payloadHost.name,
	}
}

func (c *cloud) emit(t *testing.T, lines ...novaemit.Line) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := novaemit.Emit(ctx, c.broker.TransportURL(), "messagingv2", lines); err != nil {
		t.Fatal(err)
	}
}

// boot defines inst on n, as Nova does (the domain's UUID is the
// instance's; its disk the managed disk on the local portal, with CHAP),
// starts it and waits until the guest counts on its disk.
func (c *cloud) boot(t *testing.T, n *node, inst *instance) virt.Domain {
	t.Helper()
	ctx := t.Context()
	disk := lab.Disk{Target: "vda", ISCSI: &lab.LUN{IQN: inst.ref.IQN(), LUN: 0, Host: "127.0.0.1", Port: 3260,
		Username: chapUser, SecretUsage: secretUsage}}
	d, err := n.conn.DefineDomain(ctx, c.lab.Guest.InstanceXML(inst.uuid, inst.domain, c.lab.ConsoleLog(inst.domain), disk))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.conn.StartDomain(ctx, d); err != nil {
		t.Fatal(err)
	}
	if err := lab.WaitConsole(c.lab.ConsoleLog(inst.domain), lab.BootMarker, 90*time.Second); err != nil {
		t.Fatal(err)
	}
	return d
}

// migration is what one live migration measured.
type migration struct {
	job    virt.JobStats // the destination's completed incoming job
	wall   time.Duration // Migrate's call, hook included
	landed time.Time     // when Migrate returned
}

// migrate live-migrates inst from src to dst the way Nova's conductor and
// computes do: pre.start/pre.end from the destination (pre_live_migration),
// then the source's libvirt migrates peer to peer with the destination XML
// (the destination's hook may refuse), then post.start from the source,
// post_dest.start/end from the destination and post.end from the source;
// on failure Nova's rollback (finish).
func (c *cloud) migrate(t *testing.T, inst *instance, src, dst *node) (migration, error) {
	t.Helper()
	c.preLiveMigration(t, inst, src, dst)
	start := time.Now()
	err := c.liveMigrate(t.Context(), inst, src, dst, virt.MigrateOptions{})
	return c.finish(t, inst, src, dst, start, err)
}

// preLiveMigration sends what Nova sends before the migration starts.
func (c *cloud) preLiveMigration(t *testing.T, inst *instance, src, dst *node) {
	t.Helper()
	c.emit(t, notification("pre-start", inst, dst, src), notification("pre-end", inst, dst, src))
}

// liveMigrate is the libvirt part: the source's libvirtd migrates inst
// peer to peer with Nova's destination XML, the migratable XML, which for
// a managed disk needs no change (the same IQN on 127.0.0.1 on every
// host). ctx ending aborts it. It does not fail the test, so that it may
// run in its own goroutine.
func (c *cloud) liveMigrate(ctx context.Context, inst *instance, src, dst *node, opts virt.MigrateOptions) error {
	d, err := src.conn.LookupDomain(ctx, inst.domain)
	if err != nil {
		return err
	}
	if opts.DestXML, err = src.conn.DomainXML(ctx, d, virt.XMLMigratable|virt.XMLSecure); err != nil {
		return err
	}
	opts.DestURI = dst.host.MigrationURI()
	return src.conn.Migrate(ctx, d, opts)
}

// finish sends what Nova sends after the migration started at start ended
// with err: post.start from the source, post_dest.start/end from the
// destination, post.end from the source; or, when it failed, the rollback:
// rollback.start on the source, rollback_dest.start/end on the destination,
// rollback.end. It returns err and, on success, the destination's figures.
func (c *cloud) finish(t *testing.T, inst *instance, src, dst *node, start time.Time, err error) (migration, error) {
	t.Helper()
	m := migration{wall: time.Since(start), landed: time.Now()}
	if err != nil {
		c.emit(t, notification("rollback-start", inst, src, src), notification("rollback_dest-start", inst, dst, src),
			notification("rollback_dest-end", inst, dst, src), notification("rollback-end", inst, src, src))
		return m, err
	}
	c.emit(t, notification("post-start", inst, src, src), notification("post_dest-start", inst, dst, src),
		notification("post_dest-end", inst, dst, dst), notification("post-end", inst, src, src))
	nd, err := dst.conn.LookupDomain(t.Context(), inst.domain)
	if err != nil {
		t.Fatal(err)
	}
	if m.job, err = dst.conn.CompletedJobStats(t.Context(), nd); err != nil {
		t.Fatal(err)
	}
	if m.job.Type != virt.JobCompleted || m.job.Operation != virt.JobMigrationIn || m.job.DiskTotal != 0 {
		t.Fatalf("completed job on %s: %+v; want an incoming RAM-only migration", dst.host.Name, m.job)
	}
	return m, nil
}

// waitCopied waits until dst's replica of inst holds every block and
// both agents record the migration as copied, and returns when that was.
func waitCopied(t *testing.T, inst *instance, src, dst *node, timeout time.Duration) time.Time {
	t.Helper()
	eventually(t, timeout, "copy to "+dst.host.Name, func() (bool, string) {
		m, _ := dst.migration(inst, "dest")
		d, _ := dst.disk(inst)
		return m.Phase == "copied" && d.BytesRemaining == 0, fmt.Sprintf("migration %+v, disk %+v", m, d)
	})
	done := time.Now()
	eventually(t, 30*time.Second, src.host.Name+" released", func() (bool, string) {
		m, _ := src.migration(inst, "source")
		return m.Phase == "copied", fmt.Sprintf("%+v", m)
	})
	return done
}

// stayed checks that a failed migration left inst running on src and
// nowhere else.
func stayed(t *testing.T, inst *instance, src, dst *node) {
	t.Helper()
	if _, err := dst.conn.LookupDomain(t.Context(), inst.domain); !errors.Is(err, virt.ErrNoDomain) {
		t.Fatalf("%s has the domain: %v", dst.host.Name, err)
	}
	d, err := src.conn.LookupDomain(t.Context(), inst.domain)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := src.conn.DomainState(t.Context(), d); err != nil || st != virt.StateRunning {
		t.Fatalf("on %s: state %v, %v", src.host.Name, st, err)
	}
}

// eventually polls cond until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v (%s)", what, timeout, detail)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
