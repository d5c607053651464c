package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/shareless/shareless/blockdev"
	"github.com/shareless/shareless/localapi"
	"github.com/shareless/shareless/virt"
)

// File adoption turns the disk files of an instance that has no libvirt
// domain on this host into managed disks by copying them, for hosts whose
// Nova virt driver is not libvirt ([libvirt] uri empty; Nova's fake
// driver in a test cloud) and instances whose domain is not here. No
// running QEMU writes the files, so there is nothing to pivot and no
// domain XML to guard: the copy is the adoption, and the instance's file
// must not change while it runs (the operator's part, as for any offline
// copy). The managed disk is named after the file, as in adoption, and
// behaves like any other from then on: it is exported, migrates with the
// instance and comes back incrementally. There is no release: without a
// domain there is nothing to give the disk back to.

// fileImportChunk is the unit of the copy into the store.
const fileImportChunk = 1 << 20

// AdoptFiles implements localapi.Backend.
func (b localBackend) AdoptFiles(ctx context.Context, instance string, files []string, progress func(localapi.Progress)) (localapi.Adoption, error) {
	return b.a.adoptFiles(ctx, instance, files, progress)
}

func (a *Agent) adoptFiles(ctx context.Context, instance string, files []string, progress func(localapi.Progress)) (localapi.Adoption, error) {
	a.adoptMu.Lock()
	defer a.adoptMu.Unlock()
	ad := localapi.Adoption{Instance: strings.ToLower(instance)}
	if err := checkInstance(ad.Instance); err != nil {
		return ad, err
	}
	if len(files) == 0 {
		return ad, errors.New("no disk file to adopt")
	}
	if err := a.noDomain(ctx, ad.Instance); err != nil {
		return ad, err
	}
	seen := make(map[DiskRef]bool)
	for _, f := range files {
		ds, err := a.planFile(ad.Instance, f)
		if err != nil {
			return ad, err
		}
		ref := DiskRef{ad.Instance, ds.Disk}
		if seen[ref] {
			return ad, fmt.Errorf("%s: two files name managed disk %s", f, ref)
		}
		seen[ref] = true
		ad.Disks = append(ad.Disks, ds)
	}
	log := a.log.With("instance", ad.Instance)
	for i, ds := range ad.Disks {
		ref := DiskRef{ad.Instance, ds.Disk}
		log.Info("adopting disk file", "file", ds.File, "iqn", ds.IQN, "size", ds.Size)
		if err := a.importFile(ctx, ref, ds, progress); err != nil {
			errs := []error{fmt.Errorf("%s: %w", ds.File, err)}
			for _, done := range ad.Disks[:i] {
				errs = append(errs, a.removeDisk(DiskRef{ad.Instance, done.Disk}))
			}
			return ad, errors.Join(errs...)
		}
	}
	log.Info("adopted disk files", "disks", len(ad.Disks))
	return ad, nil
}

// noDomain refuses an instance that has a libvirt domain here: its QEMU
// may write the file, and libvirt would start it on the file later.
// Without libvirt on this host ([libvirt] uri empty) there is none.
func (a *Agent) noDomain(ctx context.Context, instance string) error {
	if a.cfg.Libvirt.URI == "" {
		return nil
	}
	c, err := a.libvirt.get()
	if err != nil {
		return err
	}
	u, err := virt.ParseUUID(instance)
	if err != nil {
		return err
	}
	switch _, err := c.LookupDomainByUUID(ctx, u); {
	case err == nil:
		return fmt.Errorf("instance %s has a libvirt domain on this host: adopt it while it runs (shareless adopt %s)", instance, instance)
	case !errors.Is(err, virt.ErrNoDomain):
		return err
	}
	return nil
}

// planFile checks one file: an absolute path to a raw image of whole
// 512-byte blocks, whose name can name a managed disk not present yet.
func (a *Agent) planFile(instance, file string) (localapi.AdoptedDisk, error) {
	var ds localapi.AdoptedDisk
	if !filepath.IsAbs(file) {
		return ds, fmt.Errorf("%s: the agent needs an absolute path", file)
	}
	fi, err := os.Stat(file)
	if err != nil {
		return ds, err
	}
	if !fi.Mode().IsRegular() || fi.Size() == 0 || fi.Size()%512 != 0 {
		return ds, fmt.Errorf("%s: not a raw disk image (a regular file of whole 512-byte blocks)", file)
	}
	if qcow2, err := isQcow2(file); err != nil || qcow2 {
		return ds, errors.Join(err, fmt.Errorf("%s: a qcow2 file; file adoption copies raw images (qemu-img convert first)", file))
	}
	ref, err := NewDiskRef(instance, filepath.Base(file))
	if err != nil {
		return ds, fmt.Errorf("%s: its file name cannot name a managed disk: %w", file, err)
	}
	if a.disks.get(ref) != nil {
		return ds, fmt.Errorf("%s: managed disk %s exists already", file, ref)
	}
	return localapi.AdoptedDisk{File: file, Format: "raw", Disk: ref.Disk, IQN: ref.IQN(), Size: fi.Size()}, nil
}

func isQcow2(file string) (bool, error) {
	f, err := os.Open(file)
	if err != nil {
		return false, err
	}
	defer f.Close()
	magic := make([]byte, 4)
	if _, err := f.ReadAt(magic, 0); err != nil {
		return false, err
	}
	return string(magic) == "QFI\xfb", nil
}

// importFile creates ref in the store, copies what the file holds (its
// holes stay holes), makes it durable and only then exports it.
func (a *Agent) importFile(ctx context.Context, ref DiskRef, ds localapi.AdoptedDisk, progress func(localapi.Progress)) error {
	src, err := blockdev.OpenFile(ds.File, true)
	if err != nil {
		return err
	}
	defer src.Close()
	rep, err := a.store.Create(ctx, ref.storeName(), ds.Size)
	if err != nil {
		return err
	}
	fail := func(err error) error { return errors.Join(err, rep.Close(), a.store.Remove(ref.storeName())) }
	buf := make([]byte, fileImportChunk)
	for off := int64(0); off < ds.Size; {
		data, n, err := src.Allocation(ctx, off)
		if err != nil {
			return fail(err)
		}
		n = min(n, ds.Size-off, fileImportChunk)
		if data {
			p := buf[:n]
			if err := src.ReadAt(ctx, p, off); err != nil {
				return fail(err)
			}
			if err := rep.WriteAt(ctx, p, off, false); err != nil {
				return fail(err)
			}
		}
		off += n
		progress(localapi.Progress{Target: ds.Disk, Done: uint64(off), Total: uint64(ds.Size)})
	}
	if err := rep.Flush(ctx); err != nil {
		return fail(err)
	}
	if err := a.disks.export(ref, rep, nil); err != nil {
		return fail(err)
	}
	return nil
}
