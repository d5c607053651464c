package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/shareless/shareless/localapi"
	"github.com/shareless/shareless/novahook"
	"github.com/shareless/shareless/replicator"
	"github.com/shareless/shareless/virt"
)

// Adoption (design.md §2) turns a running instance's local file disks into
// managed disks. For each file disk the agent makes a managed disk of the
// same guest-visible size, exports it, and has libvirt block-copy the file
// onto it (synchronous writes, so a busy guest cannot outrun the copy) and
// pivot. Before the first copy it writes the instance's adoption guard,
// <state_path>/guard/<domain name>, a JSON localapi.Adoption that records
// which file each managed disk came from.
//
// What Nova sees. A raw file on the store's mount (Nova's
// [libvirt] images_type = flat or raw, and [store] path next to Nova's
// instances directory) is adopted by hard link (replicator.Store.Import):
// the managed disk's image is Nova's file itself, one inode, so the block
// copy rewrites the same bytes and Nova's file stays the live data, read
// by anything that reads it (Nova's own copies included). Nova deletes
// its instance directory when the instance leaves the host; the store's
// name keeps the data. On the host it moves to, the agent links the disk
// into Nova's new directory once the copy is complete (linkForNova), and
// on the way back likewise. The domain's persistent definition names
// Nova's files again (persistent.go): Nova's operations that power the
// instance off and read its disks from the domain (cold migration,
// resize, shelve, the snapshot of a stopped instance) read the file. A
// start of the domain on Nova's file XML (Nova writes it again on hard
// reboot, power on, rescue, unshelve, resize, cold migration) is allowed
// when that file is the complete, writable disk: the agent hands the disk
// back to Nova (startOnFiles) and the instance is no longer adopted;
// anything else is refused by the prepare hook, so a VM never boots stale
// or missing data. A live snapshot of a running adopted instance reads
// the root disk's path from the live XML, which is a network disk: Nova
// fails it ("Can't retrieve root device path from instance libvirt
// configuration") before anything changes; stop the instance first.
//
// Any other file disk (qcow2, or a store on another mount) is copied: the
// file stays as it was at the pivot and is never used again while the
// guard exists: the prepare/start hook refuses a domain XML that names it.
//
// Release gives the disks back: libvirt block-copies each managed disk
// onto its file and pivots, then the agent removes the store disk and the
// guard. It requires a running domain, no live migration of the instance
// in progress, and every disk complete and unsealed (a sealed disk or an
// incomplete replica is not this host's to give back). The copy is a full
// one into the existing file: a qcow2 file with a backing file ends up
// holding every block itself.
//
// One adoption, release or hand-back runs at a time (adoptMu).

// guardPath is the adoption guard of domain (the hook knows the domain by
// name only; `shareless hook --state-dir` checks the same file when the
// agent is down).
func (a *Agent) guardPath(domain string) string {
	return filepath.Join(a.cfg.Default.StatePath, "guard", filepath.Base(domain))
}

// readGuard returns domain's adoption record; os.ErrNotExist when the
// domain is not adopted.
func (a *Agent) readGuard(domain string) (localapi.Adoption, error) {
	var ad localapi.Adoption
	b, err := os.ReadFile(a.guardPath(domain))
	if err != nil {
		return ad, err
	}
	if err := json.Unmarshal(b, &ad); err != nil {
		return ad, fmt.Errorf("adoption guard %s: %w", a.guardPath(domain), err)
	}
	return ad, nil
}

// writeGuard records ad durably (file, then directory, synced) before the
// caller relies on it: a guard lost in a crash would let a VM boot a
// stale file.
func (a *Agent) writeGuard(ad localapi.Adoption) error {
	path := a.guardPath(ad.Domain)
	b, err := json.MarshalIndent(ad, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("adoption guard: %w", err)
	}
	tmp := path + ".tmp"
	if err := writeSynced(tmp, b); err != nil {
		return fmt.Errorf("adoption guard: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("adoption guard: %w", err)
	}
	return syncDir(filepath.Dir(path))
}

// removeGuard deletes domain's guard durably.
func (a *Agent) removeGuard(domain string) error {
	path := a.guardPath(domain)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("adoption guard: %w", err)
	}
	return syncDir(filepath.Dir(path))
}

func writeSynced(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	return errors.Join(err, f.Close())
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	err = d.Sync()
	return errors.Join(err, d.Close())
}

// lookupServer finds server's domain: an instance UUID, a domain name, or
// (with [openstack] credentials) a Nova server name.
func (a *Agent) lookupServer(ctx context.Context, c *virt.Conn, server string) (virt.Domain, error) {
	if id := strings.ToLower(server); checkInstance(id) == nil {
		u, err := virt.ParseUUID(id)
		if err != nil {
			return virt.Domain{}, err
		}
		d, err := c.LookupDomainByUUID(ctx, u)
		if errors.Is(err, virt.ErrNoDomain) {
			return d, fmt.Errorf("instance %s has no domain on this host", id)
		}
		return d, err
	}
	d, err := c.LookupDomain(ctx, server)
	if !errors.Is(err, virt.ErrNoDomain) {
		return d, err
	}
	if a.nova == nil {
		return d, fmt.Errorf("no domain named %q on this host (without [openstack] credentials, name an instance UUID or a domain)", server)
	}
	id, err := a.nova.serverID(ctx, server)
	if err != nil {
		return d, err
	}
	return a.lookupServer(ctx, c, id)
}

// managedDisk is how QEMU on this host reaches ref: the local agent on
// 127.0.0.1, with CHAP through SecretUsage when CHAP is configured.
func (a *Agent) managedDisk(ref DiskRef) virt.ISCSIDisk {
	d := virt.ISCSIDisk{IQN: ref.IQN(), LUN: 0, Host: "127.0.0.1", Port: a.cfg.ISCSI.Port}
	if a.chap != nil {
		d.Username, d.SecretUsage = a.cfg.ISCSI.CHAPUser, SecretUsage
	}
	return d
}

// runningDomain resolves server to a running domain.
func (a *Agent) runningDomain(ctx context.Context, server string) (*virt.Conn, virt.Domain, error) {
	if a.cfg.Libvirt.URI == "" {
		return nil, virt.Domain{}, errors.New("this host runs no libvirtd ([libvirt] uri is empty): adopt disk files with shareless adopt --file")
	}
	c, err := a.libvirt.get()
	if err != nil {
		return nil, virt.Domain{}, err
	}
	d, err := a.lookupServer(ctx, c, server)
	if err != nil {
		return nil, d, err
	}
	st, err := c.DomainState(ctx, d)
	if err != nil {
		return nil, d, err
	}
	if st != virt.StateRunning {
		return nil, d, fmt.Errorf("domain %s is %s, not running: its disks are block-copied by the running QEMU", d.Name, st)
	}
	return c, d, nil
}

// Adopt implements localapi.Backend.
func (b localBackend) Adopt(ctx context.Context, server string, progress func(localapi.Progress)) (localapi.Adoption, error) {
	return b.a.adopt(ctx, server, progress)
}

// Release implements localapi.Backend.
func (b localBackend) Release(ctx context.Context, server string, progress func(localapi.Progress)) (localapi.Adoption, error) {
	return b.a.releaseAdoption(ctx, server, progress)
}

// CopyNow implements localapi.Backend: the instance's remote-only replicas
// (Method B) start copying (Method C). A replica whose source is not sealed
// yet starts once it is, as any copy does.
func (b localBackend) CopyNow(ctx context.Context, instance string) (localapi.CopyNowResult, error) {
	res := localapi.CopyNowResult{Instance: instance, Switched: []string{}, Copying: []string{}}
	local := b.a.disks.ofInstance(instance)
	if len(local) == 0 {
		return res, fmt.Errorf("instance %s has no managed disk on this host", instance)
	}
	for _, dk := range local {
		switched, err := dk.rep.StartCopying()
		if err != nil {
			return res, fmt.Errorf("disk %s: %w", dk.ref, err)
		}
		if switched {
			res.Switched = append(res.Switched, dk.ref.Disk)
			b.a.log.Info("remote-only disk switched to copying", "disk", dk.ref)
		} else {
			res.Copying = append(res.Copying, dk.ref.Disk)
		}
	}
	return res, nil
}

func (a *Agent) adopt(ctx context.Context, server string, progress func(localapi.Progress)) (localapi.Adoption, error) {
	a.adoptMu.Lock()
	defer a.adoptMu.Unlock()
	c, d, err := a.runningDomain(ctx, server)
	if err != nil {
		return localapi.Adoption{}, err
	}
	ad, err := a.planAdoption(ctx, c, d)
	if err != nil {
		return ad, err
	}
	log := a.log.With("instance", ad.Instance, "domain", d.Name)
	// The guard comes first: from here on, a start with Nova's file XML
	// is refused even if the agent dies halfway.
	if err := a.writeGuard(ad); err != nil {
		return ad, err
	}
	refs := make([]DiskRef, len(ad.Disks))
	for i, ds := range ad.Disks {
		refs[i] = DiskRef{ad.Instance, ds.Disk}
		linked, err := a.createAdopted(ctx, refs[i], ds)
		if err != nil {
			return ad, a.abandonAdoption(ad, refs[:i], 0, err)
		}
		ad.Disks[i].Linked = linked
	}
	if err := a.writeGuard(ad); err != nil {
		return ad, a.abandonAdoption(ad, refs, 0, err)
	}
	for i, ds := range ad.Disks {
		log.Info("adopting disk", "target", ds.Target, "file", ds.File, "iqn", ds.IQN, "size", ds.Size)
		err := c.CopyDisk(ctx, d, ds.Target, a.managedDisk(refs[i]), func(done, total uint64) {
			progress(localapi.Progress{Target: ds.Target, Done: done, Total: total})
		})
		if err != nil {
			return ad, a.abandonAdoption(ad, refs, i, fmt.Errorf("disk %s: %w", ds.Target, err))
		}
	}
	// The pivots wrote the LUNs into the persistent definition too.
	a.persistNovaFiles(ctx, c, d)
	log.Info("adopted", "disks", len(ad.Disks))
	return ad, nil
}

// planAdoption checks that every disk of d is a local raw or qcow2 file
// and names its managed disk after the file (Nova's disk, disk.local, ...).
func (a *Agent) planAdoption(ctx context.Context, c *virt.Conn, d virt.Domain) (localapi.Adoption, error) {
	ad := localapi.Adoption{Instance: d.UUID.String(), Domain: d.Name}
	switch _, err := a.readGuard(d.Name); {
	case err == nil:
		return ad, fmt.Errorf("domain %s is already adopted (guard %s); release it first", d.Name, a.guardPath(d.Name))
	case !errors.Is(err, os.ErrNotExist):
		return ad, err
	}
	disks, err := c.Disks(ctx, d)
	if err != nil {
		return ad, err
	}
	seen := make(map[DiskRef]bool)
	for _, x := range disks {
		if x.Device != "" && x.Device != "disk" {
			continue // a config drive or an empty cdrom: nothing to move
		}
		if x.Type != "file" {
			return ad, fmt.Errorf("disk %s of %s is a %s disk, not a local file: adoption moves domains whose disks are all local files", x.Target, d.Name, x.Type)
		}
		if x.Format != "raw" && x.Format != "qcow2" {
			return ad, fmt.Errorf("disk %s of %s is a %s file; adoption copies raw and qcow2", x.Target, d.Name, x.Format)
		}
		ref, err := NewDiskRef(ad.Instance, filepath.Base(x.File))
		if err != nil {
			return ad, fmt.Errorf("disk %s of %s: its file name cannot name a managed disk: %w", x.Target, d.Name, err)
		}
		if seen[ref] || a.disks.get(ref) != nil {
			return ad, fmt.Errorf("disk %s of %s: managed disk %s exists already", x.Target, d.Name, ref)
		}
		seen[ref] = true
		size, err := c.DiskCapacity(ctx, d, x.Target)
		if err != nil {
			return ad, err
		}
		ad.Disks = append(ad.Disks, localapi.AdoptedDisk{Target: x.Target, File: x.File, Format: x.Format,
			Disk: ref.Disk, IQN: ref.IQN(), Size: size})
	}
	if len(ad.Disks) == 0 {
		return ad, fmt.Errorf("domain %s has no disk to adopt", d.Name)
	}
	return ad, nil
}

// createAdopted makes and serves ds's managed disk. A raw file on the
// store's mount becomes the disk itself (Store.Import, a hard link: nothing
// is copied into the store, and Nova's file stays the live data; the block
// copy then rewrites the same bytes through the export, which QEMU's
// write-blocking mirror serializes with the guest's writes). Otherwise the
// disk starts empty and the block copy fills it.
func (a *Agent) createAdopted(ctx context.Context, ref DiskRef, ds localapi.AdoptedDisk) (linked bool, err error) {
	if ds.Format == "raw" {
		rep, err := a.store.Import(ctx, ref.storeName(), ds.File)
		switch {
		case err == nil:
			if err := a.disks.export(ref, rep, nil); err != nil {
				return false, errors.Join(err, rep.Close(), a.store.Remove(ref.storeName()))
			}
			return true, nil
		case !errors.Is(err, syscall.EXDEV):
			return false, err
		}
		a.log.Warn("the store is on another mount than the instance's file: adoption copies it, and the file stays as it is at the pivot",
			"file", ds.File, "store", a.cfg.Store.Path)
	}
	return false, a.createExport(ctx, ref, ds.Size)
}

// createExport makes an empty disk of size in the store and serves it.
func (a *Agent) createExport(ctx context.Context, ref DiskRef, size int64) error {
	rep, err := a.store.Create(ctx, ref.storeName(), size)
	if err != nil {
		return err
	}
	if err := a.disks.export(ref, rep, nil); err != nil {
		return errors.Join(err, rep.Close(), a.store.Remove(ref.storeName()))
	}
	return nil
}

// abandonAdoption undoes what an adoption that failed with cause made:
// the disks from refs[pivoted:] (the guest does not use them) and, if no
// disk pivoted, the guard; otherwise the guard keeps the pivoted ones, so
// that they can be released.
func (a *Agent) abandonAdoption(ad localapi.Adoption, refs []DiskRef, pivoted int, cause error) error {
	errs := []error{cause}
	for _, ref := range refs[pivoted:] {
		errs = append(errs, a.removeDisk(ref))
	}
	ad.Disks = ad.Disks[:pivoted]
	if pivoted == 0 {
		errs = append(errs, a.removeGuard(ad.Domain))
	} else {
		errs = append(errs, a.writeGuard(ad), fmt.Errorf("%d disks were adopted before the failure; `shareless release %s` gives them back", pivoted, ad.Domain))
	}
	return errors.Join(errs...)
}

// usesManaged reports whether the live disk ds.Target runs on its managed
// disk (true) or still on its file (false); anything else is an error, and
// release leaves that disk alone.
func usesManaged(live []virt.DiskInfo, ds localapi.AdoptedDisk) (bool, error) {
	for _, x := range live {
		switch {
		case x.Target != ds.Target:
		case x.Type == "network" && x.Protocol == "iscsi" && x.Name == ds.IQN+"/0":
			return true, nil
		case x.Type == "file" && x.File == ds.File:
			return false, nil
		default:
			return false, fmt.Errorf("disk %s is neither managed disk %s nor file %s: not releasing it", ds.Target, ds.IQN, ds.File)
		}
	}
	return false, fmt.Errorf("the domain has no disk %s", ds.Target)
}

// removeDisk stops serving ref and deletes it from the store.
func (a *Agent) removeDisk(ref DiskRef) error {
	if dk := a.disks.take(ref); dk != nil {
		if err := dk.shut(dk.rep.Close); err != nil {
			return err
		}
	}
	return a.store.Remove(ref.storeName())
}

func (a *Agent) releaseAdoption(ctx context.Context, server string, progress func(localapi.Progress)) (localapi.Adoption, error) {
	a.adoptMu.Lock()
	defer a.adoptMu.Unlock()
	c, d, err := a.runningDomain(ctx, server)
	if err != nil {
		return localapi.Adoption{}, err
	}
	ad, err := a.readGuard(d.Name)
	if errors.Is(err, os.ErrNotExist) {
		return ad, fmt.Errorf("domain %s is not adopted on this host", d.Name)
	}
	if err != nil {
		return ad, err
	}
	for _, m := range a.node.Migrations() {
		if m.Instance == ad.Instance && (m.Phase == novahook.PhasePreparing || m.Phase == novahook.PhaseReady || m.Phase == novahook.PhaseCopying) {
			return ad, fmt.Errorf("instance %s is migrating (%s, %s): release it when the migration is over", ad.Instance, m.Role, m.Phase)
		}
	}
	for _, ds := range ad.Disks {
		ref := DiskRef{ad.Instance, ds.Disk}
		dk := a.disks.get(ref)
		if dk == nil {
			return ad, fmt.Errorf("managed disk %s is not open on this host", ref)
		}
		if st := dk.rep.Stats(); st.State != replicator.StateComplete || st.Sealed {
			return ad, fmt.Errorf("managed disk %s is %s (sealed %t): only a complete, writable disk can be given back", ref, st.State, st.Sealed)
		}
	}
	live, err := c.Disks(ctx, d)
	if err != nil {
		return ad, err
	}
	log := a.log.With("instance", ad.Instance, "domain", d.Name)
	left := ad
	for len(left.Disks) > 0 {
		ds := left.Disks[0]
		switch onManaged, err := usesManaged(live, ds); {
		case err != nil:
			return ad, err
		case onManaged:
			log.Info("releasing disk", "target", ds.Target, "file", ds.File)
			err := c.CopyDisk(ctx, d, ds.Target, virt.FileDisk{Path: ds.File, Format: ds.Format}, func(done, total uint64) {
				progress(localapi.Progress{Target: ds.Target, Done: done, Total: total})
			})
			if err != nil {
				return ad, fmt.Errorf("disk %s: %w", ds.Target, err)
			}
		default:
			// An adoption interrupted before this disk's pivot: the
			// file is current, the managed disk never was.
			log.Warn("disk never left its file; dropping its managed disk", "target", ds.Target, "file", ds.File)
		}
		// The guest is on its file again: forget the disk, guard first,
		// so that a crash here leaves no guard naming a removed disk.
		left.Disks = left.Disks[1:]
		if len(left.Disks) > 0 {
			err = a.writeGuard(left)
		} else {
			err = a.removeGuard(d.Name)
		}
		if err != nil {
			return ad, err
		}
		if err := a.removeDisk(DiskRef{ad.Instance, ds.Disk}); err != nil {
			return ad, err
		}
	}
	log.Info("released", "disks", len(ad.Disks))
	return ad, nil
}
