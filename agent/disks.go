package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/shareless/shareless/iscsi/chap"
	"github.com/shareless/shareless/iscsi/initiator"
	"github.com/shareless/shareless/iscsi/scsi"
	"github.com/shareless/shareless/iscsi/target"
	"github.com/shareless/shareless/replicator"
)

// disk is one open managed disk: its image in the store, the target that
// serves it and, for a replica still reading from another host, the
// initiator session to that host's export.
type disk struct {
	ref DiskRef
	rep *replicator.Replica
	tgt *target.Target
	src *initiator.Session // nil for a disk that needs no source
	dev *countingDevice
}

// disks is the registry of open managed disks and their exports.
type disks struct {
	store  *replicator.Store
	portal *portal
	chap   *chap.Credentials // nil: no authentication (lab only)
	log    *slog.Logger

	mu   sync.Mutex
	open map[DiskRef]*disk
}

// export serves rep under ref's IQN through the portal.
func (d *disks) export(ref DiskRef, rep *replicator.Replica, src *initiator.Session) error {
	dev := &countingDevice{Replica: rep}
	t, err := target.New(target.Config{
		IQN:    ref.IQN(),
		LUNs:   []target.LUN{{Device: dev, Unit: scsi.UnitConfig{ID: ref.IQN(), Logger: d.log}}},
		CHAP:   d.chap,
		NoAuth: d.chap == nil,
		Logger: d.log,
	})
	if err != nil {
		return fmt.Errorf("export %s: %w", ref, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, dup := d.open[ref]; dup {
		t.Close()
		return fmt.Errorf("export %s: already open", ref)
	}
	if err := d.portal.add(ref.IQN(), t); err != nil {
		t.Close()
		return err
	}
	d.open[ref] = &disk{ref: ref, rep: rep, tgt: t, src: src, dev: dev}
	return nil
}

// get returns the open disk ref, or nil.
func (d *disks) get(ref DiskRef) *disk {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.open[ref]
}

// ofInstance returns the instance's open disks, by disk name.
func (d *disks) ofInstance(instance string) []*disk {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []*disk
	for ref, dk := range d.open {
		if ref.Instance == instance {
			out = append(out, dk)
		}
	}
	slices.SortFunc(out, func(a, b *disk) int { return strings.Compare(a.ref.Disk, b.ref.Disk) })
	return out
}

// all returns every open disk, ordered by reference.
func (d *disks) all() []*disk {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]*disk, 0, len(d.open))
	for _, dk := range d.open {
		out = append(out, dk)
	}
	slices.SortFunc(out, func(a, b *disk) int { return strings.Compare(a.ref.String(), b.ref.String()) })
	return out
}

// take unregisters ref and stops serving it; the caller closes or rolls
// back the returned disk.
func (d *disks) take(ref DiskRef) *disk {
	d.mu.Lock()
	dk := d.open[ref]
	delete(d.open, ref)
	d.mu.Unlock()
	if dk != nil {
		d.portal.remove(ref.IQN())
	}
	return dk
}

// close stops serving ref and closes its image, keeping it in the store.
func (d *disks) close(ref DiskRef) error {
	dk := d.take(ref)
	if dk == nil {
		return nil
	}
	return dk.shut(dk.rep.Close)
}

// shut ends the disk with end (Close or Rollback), then its source session.
func (dk *disk) shut(end func() error) error {
	err := end()
	if dk.src != nil {
		err = errors.Join(err, dk.src.Close())
	}
	if err != nil {
		return fmt.Errorf("close %s: %w", dk.ref, err)
	}
	return nil
}

// openStore opens and exports every disk of the store that opens without
// a source. A replica that still needs its source stays closed until its
// migration resumes (the node's Restart actions reopen it).
func (d *disks) openStore(ctx context.Context) error {
	names, err := d.store.List()
	if err != nil {
		return fmt.Errorf("list store: %w", err)
	}
	for _, name := range names {
		ref, err := parseStoreName(name)
		if err != nil {
			d.log.Warn("store entry ignored", "err", err)
			continue
		}
		rep, err := d.store.Open(ctx, name, nil, replicator.ReplicaOptions{})
		switch {
		case errors.Is(err, replicator.ErrCorruptMetadata):
			d.log.Error("disk not opened: its metadata is corrupt", "disk", ref, "err", err)
			continue
		case err != nil:
			d.log.Info("disk not opened at start; its migration reopens it", "disk", ref, "err", err)
			continue
		}
		if err := d.export(ref, rep, nil); err != nil {
			rep.Close()
			return err
		}
		d.log.Info("disk exported", "disk", ref, "iqn", ref.IQN(), "state", rep.State())
	}
	return nil
}

// closeAll closes every disk (agent shutdown).
func (d *disks) closeAll() error {
	var errs []error
	for _, dk := range d.all() {
		errs = append(errs, d.close(dk.ref))
	}
	return errors.Join(errs...)
}

// countingDevice counts the bytes initiators read through the export, for
// /metrics. It embeds the replica itself, not a blockdev.Device, so that
// the optional interfaces the target looks for (AllocationReporter: GET
// LBA STATUS, which lets a peer's copier skip holes) stay visible.
type countingDevice struct {
	*replicator.Replica
	read atomic.Int64
}

func (c *countingDevice) ReadAt(ctx context.Context, p []byte, off int64) error {
	err := c.Replica.ReadAt(ctx, p, off)
	if err == nil {
		c.read.Add(int64(len(p)))
	}
	return err
}

// dropSource closes ref's session to its source once the replica holds
// every block and reads nothing more from it.
func (d *disks) dropSource(ref DiskRef) {
	d.mu.Lock()
	dk := d.open[ref]
	var src *initiator.Session
	if dk != nil {
		src, dk.src = dk.src, nil
	}
	d.mu.Unlock()
	if src != nil {
		src.Close()
	}
}
