package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/shareless/shareless/novahook"
	"github.com/shareless/shareless/replicator"
)

// startOnFiles decides a start of domain (instance inst) whose XML has
// file disks. Nova writes file disk XML again on hard reboot, power on,
// rescue, unshelve, resize and cold migration, from its instance directory.
//
// A file that is a managed disk's image here (the same inode: adopted by
// link, or linked into Nova's directory once a replica completed, see
// linkForNova) holds the disk's current data. If the disk is complete and
// writable here and the instance is not migrating, the agent hands it back
// to Nova: it stops serving it and drops it from the store (the file keeps
// the data) and from the adoption guard, and the start goes on, on the
// file. The agent adopts the instance again once it runs ([libvirt]
// readopt, readopt.go), or `shareless adopt` does. Every other file of a managed disk or of an adopted instance
// would boot stale or missing data: refused, with the reason.
func (a *Agent) startOnFiles(log *slog.Logger, domain, inst string, files []string) error {
	a.adoptMu.Lock()
	defer a.adoptMu.Unlock()
	ad, gerr := a.readGuard(domain)
	guarded := gerr == nil
	if errors.Is(gerr, os.ErrNotExist) {
		gerr = nil
	}
	adopted := make(map[string]bool)
	for _, d := range ad.Disks {
		adopted[d.File] = true
	}
	var back []*disk
	for _, f := range files {
		var dk *disk
		if ref, err := NewDiskRef(inst, filepath.Base(f)); err == nil {
			dk = a.disks.get(ref)
		}
		if dk != nil && a.outdatedBy(dk, f) {
			log.Info("Nova brought a file of its own for a disk that moved away from here (cold migration, resize): the sealed image here is dropped", "file", f, "disk", dk.ref)
			back = append(back, dk)
			continue
		}
		var err error
		if dk != nil {
			err = a.canHandBack(dk, f)
		}
		// An unreadable guard refuses every file disk rather than guess
		// about it.
		if (dk == nil || errors.Is(err, errNotLinked)) && (gerr != nil || adopted[f]) {
			log.Warn("refusing to start an adopted instance on its stale file disk", "file", f, "guard_err", gerr)
			return fmt.Errorf("%s was adopted by shareless: its disk %s is stale, the data is in the managed disk; start it with the managed disks' XML, or run `shareless release` while it runs on them", domain, f)
		}
		if dk == nil {
			continue
		}
		if err != nil {
			log.Warn("refusing to start on a managed disk's file", "file", f, "disk", dk.ref, "reason", err)
			return fmt.Errorf("%s: %s is shareless managed disk %s, which cannot be handed back to Nova now: %w", domain, f, dk.ref, err)
		}
		back = append(back, dk)
	}
	for _, dk := range back {
		if err := a.removeDisk(dk.ref); err != nil {
			return fmt.Errorf("%s: handing disk %s back to Nova: %w", domain, dk.ref, err)
		}
		log.Info("managed disk removed: the instance starts on Nova's file", "disk", dk.ref)
		kept := ad.Disks[:0]
		for _, d := range ad.Disks {
			if d.Disk != dk.ref.Disk {
				kept = append(kept, d)
			}
		}
		ad.Disks = kept
	}
	if len(back) > 0 && a.cfg.Libvirt.Readopt {
		a.readopts.handedBack(domain)
	}
	switch {
	case len(back) == 0 || !guarded:
		// No guard to update: nothing handed back, a guard unreadable
		// (left for an operator), or none here (a host the instance
		// migrated to).
	case len(ad.Disks) > 0:
		return a.writeGuard(ad)
	default:
		if err := a.removeGuard(domain); err != nil {
			return err
		}
	}
	return nil
}

// outdatedBy says whether file, Nova's file of dk, replaces dk: dk is
// sealed (the instance left this host, and Nova then removed its files
// here), so a file Nova has here again is one it made or copied since,
// the instance's data as Nova means it.
func (a *Agent) outdatedBy(dk *disk, file string) bool {
	if !dk.rep.Stats().Sealed {
		return false
	}
	same, err := a.isImage(dk.ref, file)
	return err == nil && !same
}

// canHandBack says why dk, named by Nova's file, cannot become that file
// again, or nil if it can: file must be the disk's image itself, complete
// and writable here, with no migration of the instance under way.
func (a *Agent) canHandBack(dk *disk, file string) error {
	for _, m := range a.node.Migrations() {
		if m.Instance == dk.ref.Instance && (m.Phase == novahook.PhasePreparing || m.Phase == novahook.PhaseReady) {
			return fmt.Errorf("the instance is migrating (%s, %s)", m.Role, m.Phase)
		}
	}
	st := dk.rep.Stats()
	switch {
	case st.State != replicator.StateComplete && dk.rep.RemoteOnly():
		return fmt.Errorf("it is read remotely from its source ([replicator] method = remote), %d of %d bytes not here; `shareless copy-now %s`, then wait until `shareless status` shows it complete",
			st.BytesRemaining, st.Size, dk.ref.Instance)
	case st.State != replicator.StateComplete:
		return fmt.Errorf("it is still being copied to this host, %d of %d bytes left (ETA %v); wait until `shareless status` shows it complete",
			st.BytesRemaining, st.Size, st.ETA.Round(time.Second))
	case st.Sealed:
		return errors.New("it is sealed: the instance has moved to another host")
	}
	same, err := a.isImage(dk.ref, file)
	switch {
	case err != nil:
		return err
	case !same:
		return errNotLinked
	}
	return nil
}

// isImage says whether file is ref's image in the store (the same inode).
func (a *Agent) isImage(ref DiskRef, file string) (bool, error) {
	img, err := a.store.ImagePath(ref.storeName())
	if err != nil {
		return false, err
	}
	fi, err := os.Stat(file)
	if err != nil {
		return false, fmt.Errorf("Nova's file: %w", err)
	}
	ii, err := os.Stat(img)
	if err != nil {
		return false, err
	}
	return os.SameFile(fi, ii), nil
}

// errNotLinked: Nova's file is not the managed disk's image.
var errNotLinked = errors.New("Nova's file is not the managed disk's data (it was adopted by copy, or the file was made again): start it with the managed disks' XML, or `shareless release` it while it runs")

// linkForNova (destination, once ds, an instance's disks, are complete
// here) gives Nova its files back: each disk's image becomes
// <[store] instances_path>/<instance>/<disk name>, a hard link, where Nova
// made the instance's directory (pre_live_migration does) and has no file
// of that name. Nova's operations that read the file, or start the
// instance on it, then see the disk's current data (startOnFiles).
func (a *Agent) linkForNova(ds []*disk) {
	if a.cfg.Store.InstancesPath == "" {
		return
	}
	for _, dk := range ds {
		log := a.log.With("disk", dk.ref)
		dir := filepath.Join(a.cfg.Store.InstancesPath, dk.ref.Instance)
		if _, err := os.Stat(dir); err != nil {
			log.Info("no instance directory of Nova's: the disk is not linked there", "err", err)
			continue
		}
		img, err := a.store.ImagePath(dk.ref.storeName())
		if err != nil {
			log.Warn("not linked into Nova's instance directory", "err", err)
			continue
		}
		file := filepath.Join(dir, dk.ref.Disk)
		err = os.Link(img, file)
		switch {
		case err == nil:
			log.Info("disk linked into Nova's instance directory", "file", file)
		case errors.Is(err, os.ErrExist):
			if same, _ := a.isImage(dk.ref, file); same {
				continue
			}
			log.Warn("Nova's instance directory has a file of its own for the disk: not linked, and a start on it is refused", "file", file)
		default:
			log.Warn("not linked into Nova's instance directory", "file", file, "err", err)
		}
	}
}

// Nova's notifications after which an instance's data is no longer in any
// agent's store here: every agent hears them, whichever host sent them.
const (
	// EventDeleteEnd: the instance is deleted, its files are gone.
	EventDeleteEnd = "instance.delete.end"
	// EventResizeConfirmEnd: a cold migration or resize is confirmed; the
	// instance runs on payload.host on the file Nova copied there (the
	// source's persistent definition named Nova's file, persistent.go),
	// and the source removed its copy.
	EventResizeConfirmEnd = "instance.resize_confirm.end"
	// EventShelveOffloadEnd: the instance is shelved into its snapshot
	// image (made from Nova's file) and has no host.
	EventShelveOffloadEnd = "instance.shelve_offload.end"
)

// EventSnapshotStart: Nova starts a snapshot (openstack server image
// create) of an instance.
const EventSnapshotStart = "instance.snapshot.start"

// snapshotStarts tells the operator why Nova's snapshot of a running
// instance that runs on managed disks here will fail, and what works.
func (a *Agent) snapshotStarts(inst, state string) {
	if state != "active" {
		return
	}
	for _, dk := range a.disks.all() {
		if dk.ref.Instance == inst && !dk.rep.Stats().Sealed {
			a.log.Error("Nova cannot snapshot a running instance whose disks are shareless managed disks (its live XML names an iSCSI LUN): the snapshot fails and the instance keeps running unchanged. Stop the instance and snapshot it then (Nova reads its file), or `shareless release` it first",
				"instance", inst, "disk", dk.ref)
			return
		}
	}
}

// instanceGone frees what this host keeps of instance inst after one of
// the events above: its managed disks, served or sealed, and its adoption
// guard. After a resize confirmed to this very host the instance runs
// here on Nova's file and nothing is left to free. A disk adopted by copy
// (Nova's file was stale, and Nova copied that file) is kept, with an
// error that says where its data is: it is the only copy.
func (a *Agent) instanceGone(event, inst, host string) error {
	if err := checkInstance(inst); err != nil {
		return err
	}
	if event == EventResizeConfirmEnd && host == a.cfg.Default.Host {
		return nil
	}
	a.adoptMu.Lock()
	defer a.adoptMu.Unlock()
	guards, err := os.ReadDir(filepath.Join(a.cfg.Default.StatePath, "guard"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	var errs []error
	byCopy := map[string]bool{} // disk names adopted by copy
	var domains []string
	for _, g := range guards {
		ad, err := a.readGuard(g.Name())
		if err != nil || ad.Instance != inst {
			continue
		}
		domains = append(domains, g.Name())
		for _, ds := range ad.Disks {
			byCopy[ds.Disk] = byCopy[ds.Disk] || !ds.Linked
		}
	}
	names, err := a.store.List()
	if err != nil {
		return err
	}
	kept := false
	for _, name := range names {
		ref, err := parseStoreName(name)
		if err != nil || ref.Instance != inst {
			continue
		}
		if dk := a.disks.get(ref); event != EventDeleteEnd && dk != nil && !dk.rep.Stats().Sealed && byCopy[ref.Disk] {
			img, _ := a.store.ImagePath(ref.storeName())
			a.log.Error("Nova moved an instance whose disk was adopted by copy: Nova took its stale file, the data is only in this host's managed disk; it is kept",
				"event", event, "disk", ref, "image", img)
			kept = true
			continue
		}
		if err := a.removeDisk(ref); err != nil {
			errs = append(errs, err)
			continue
		}
		a.log.Info("the instance's data left the store: its managed disk is removed", "event", event, "disk", ref)
	}
	if !kept {
		for _, d := range domains {
			errs = append(errs, a.removeGuard(d))
		}
	}
	return errors.Join(errs...)
}
