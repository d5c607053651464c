package virt

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"strconv"
	"time"

	libvirt "github.com/digitalocean/go-libvirt"
)

// blockJobPoll is how often CopyDisk looks at a block job's progress. It
// polls: libvirt's first block job event names a disk by a path, which a
// network disk does not have, and go-libvirt drops the second kind.
const blockJobPoll = 200 * time.Millisecond

// ISCSIDisk is where a network disk's bytes are: an iSCSI LUN that QEMU
// reaches with its own initiator (libiscsi), as a managed disk
// (127.0.0.1, served by the local agent) or a Method A volume.
type ISCSIDisk struct {
	IQN  string
	LUN  int
	Host string
	Port int
	// Username and SecretUsage, when set, make QEMU log in with CHAP: the
	// password is the value of the iscsi secret with that usage on the
	// host running the VM (DefineISCSISecret).
	Username    string
	SecretUsage string
}

// CopyDest is where CopyDisk copies a disk to: an ISCSIDisk (adoption)
// or a FileDisk (giving an adopted disk back to its file).
type CopyDest interface {
	// XML is the destination's <disk> element.
	XML() (string, error)
}

// FileDisk is a local image file of format "raw" or "qcow2".
type FileDisk struct {
	Path   string
	Format string
}

// XML returns the <disk type='file'> element of the file.
func (f FileDisk) XML() (string, error) {
	if f.Path == "" || f.Format != "raw" && f.Format != "qcow2" {
		return "", fmt.Errorf("virt: file disk needs a path and format raw or qcow2: %+v", f)
	}
	b, err := xml.Marshal(diskXML{Type: "file", Driver: &diskDriver{Name: "qemu", Type: f.Format},
		Source: diskSource{File: f.Path}})
	if err != nil {
		return "", fmt.Errorf("virt: disk XML: %w", err)
	}
	return string(b), nil
}

// diskXML is the subset of libvirt's <disk> element that a block copy's
// destination needs, and that CopyDisk and Disks read back.
type diskXML struct {
	XMLName xml.Name    `xml:"disk"`
	Type    string      `xml:"type,attr"`
	Device  string      `xml:"device,attr,omitempty"`
	Driver  *diskDriver `xml:"driver"`
	Source  diskSource  `xml:"source"`
	Target  *struct {
		Dev string `xml:"dev,attr"`
	} `xml:"target"`
	Mirror *struct {
		Ready string `xml:"ready,attr"`
	} `xml:"mirror"`
}

type diskDriver struct {
	Name string `xml:"name,attr"`
	Type string `xml:"type,attr"`
}

type diskSource struct {
	File     string    `xml:"file,attr,omitempty"`
	Dev      string    `xml:"dev,attr,omitempty"`
	Protocol string    `xml:"protocol,attr,omitempty"`
	Name     string    `xml:"name,attr,omitempty"`
	Host     *diskHost `xml:"host"`
	Auth     *diskAuth `xml:"auth"`
}

type diskHost struct {
	Name string `xml:"name,attr"`
	Port string `xml:"port,attr"`
}

type diskAuth struct {
	Username string `xml:"username,attr"`
	Secret   struct {
		Type  string `xml:"type,attr"`
		Usage string `xml:"usage,attr"`
	} `xml:"secret"`
}

// XML returns the <disk type='network'> element for the LUN, raw format:
// what a block copy's destination or a rewritten disk's source needs.
func (d ISCSIDisk) XML() (string, error) {
	if d.IQN == "" || d.Host == "" || d.Port == 0 {
		return "", fmt.Errorf("virt: iSCSI disk needs IQN, host and port: %+v", d)
	}
	x := diskXML{
		Type:   "network",
		Driver: &diskDriver{Name: "qemu", Type: "raw"},
		Source: diskSource{
			Protocol: "iscsi",
			Name:     d.IQN + "/" + strconv.Itoa(d.LUN),
			Host:     &diskHost{Name: d.Host, Port: strconv.Itoa(d.Port)},
		},
	}
	if d.Username != "" || d.SecretUsage != "" {
		if d.Username == "" || d.SecretUsage == "" {
			return "", fmt.Errorf("virt: iSCSI disk %s: CHAP needs both username and secret usage", x.Source.Name)
		}
		x.Source.Auth = &diskAuth{Username: d.Username}
		x.Source.Auth.Secret.Type = "iscsi"
		x.Source.Auth.Secret.Usage = d.SecretUsage
	}
	b, err := xml.Marshal(x)
	if err != nil {
		return "", fmt.Errorf("virt: disk XML: %w", err)
	}
	return string(b), nil
}

// CopyDisk is adoption's libvirt half: it copies the running domain's disk
// target (e.g. "vda") onto dst (the iSCSI LUN of a managed disk, or back
// onto a file at release) and pivots the guest onto it. dst must exist,
// of the disk's size (REUSE_EXT). progress, if not nil, is called with
// the job's bytes done and total each time CopyDisk looks at it. The copy
// runs in synchronous-writes mode, so a busy guest cannot outrun it
// (libvirt >= 8.0), as a transient job, so it works on Nova's persistent
// domains. It waits until the mirror is ready (block job at its end and
// libvirt's mirror ready='yes', which Nova also checks because the first
// alone has lied), then pivots. On any failure, or if ctx ends before
// the pivot, the copy is cancelled and the guest stays on its old disk.
//
// libvirt (9.0, measured by the test) writes the pivot into the persistent
// definition too, so libvirt itself would boot from the LUN; but Nova
// regenerates file-disk XML on hard reboot and start, which is why the
// agent guards starts (design.md §2).
func (c *Conn) CopyDisk(ctx context.Context, d Domain, target string, dst CopyDest, progress func(done, total uint64)) error {
	dx, err := dst.XML()
	if err != nil {
		return err
	}
	op := fmt.Sprintf("copy disk %s of %q", target, d.Name)
	log := c.log.With("domain", d.Name, "disk", target, "dest", dx)
	const flags = libvirt.DomainBlockCopyReuseExt | libvirt.DomainBlockCopyTransientJob |
		libvirt.DomainBlockCopySynchronousWrites
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("virt: %s: %w", op, err)
	}
	// Starting and pivoting are not abandoned halfway (detached): a job
	// left behind would mirror the disk for ever.
	sctx, cancel := detached(ctx)
	defer cancel()
	if err := do(sctx, c, op, notIdempotent, func(l *libvirt.Libvirt) error {
		return l.DomainBlockCopy(d.raw(), target, dx, nil, flags)
	}); err != nil {
		return err
	}
	start := time.Now()
	log.Info("block copy started")
	// abandon cancels the copy; after a failed pivot too, since a job
	// left mirroring would never end (if the pivot did happen, there is
	// no job left to cancel and libvirt says so).
	abandon := func(cause error) error {
		actx, cancel := detached(ctx)
		defer cancel()
		err := do(actx, c, op+": cancel", notIdempotent, func(l *libvirt.Libvirt) error {
			return l.DomainBlockJobAbort(d.raw(), target, 0)
		})
		log.Warn("block copy cancelled", "err", cause, "cancel_err", err)
		return errors.Join(cause, err)
	}
	if err := c.waitMirrorReady(ctx, d, target, progress); err != nil {
		return abandon(err)
	}
	log.Info("block copy ready; pivoting", "after", time.Since(start).Round(time.Millisecond))
	pctx, cancel := detached(ctx)
	defer cancel()
	if err := do(pctx, c, op+": pivot", notIdempotent, func(l *libvirt.Libvirt) error {
		return l.DomainBlockJobAbort(d.raw(), target, libvirt.DomainBlockJobAbortPivot)
	}); err != nil {
		return abandon(err)
	}
	log.Info("pivoted", "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// waitMirrorReady polls until the copy of target is ready to pivot.
func (c *Conn) waitMirrorReady(ctx context.Context, d Domain, target string, progress func(done, total uint64)) error {
	op := fmt.Sprintf("block job of %s on %q", target, d.Name)
	t := time.NewTicker(blockJobPoll)
	defer t.Stop()
	for {
		type info struct {
			found    bool
			cur, end uint64
		}
		i, err := call(ctx, c, op, idempotent, func(l *libvirt.Libvirt) (info, error) {
			found, _, _, cur, end, err := l.DomainGetBlockJobInfo(d.raw(), target, 0)
			return info{found == 1, cur, end}, err
		})
		if err != nil {
			return err
		}
		if !i.found {
			return fmt.Errorf("virt: %s: the copy job ended before it was ready (failed or cancelled; see libvirtd's log)", op)
		}
		if progress != nil {
			progress(i.cur, i.end)
		}
		if i.end > 0 && i.cur == i.end {
			ready, err := c.mirrorReady(ctx, d, target)
			if err != nil || ready {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("virt: %s: waiting for the copy: %w", op, ctx.Err())
		case <-t.C:
		}
	}
}

// mirrorReady reads the live XML's <mirror ready='yes'/> of target.
func (c *Conn) mirrorReady(ctx context.Context, d Domain, target string) (bool, error) {
	disks, err := c.disks(ctx, d)
	if err != nil {
		return false, err
	}
	for _, x := range disks {
		if x.Target != nil && x.Target.Dev == target {
			return x.Mirror != nil && x.Mirror.Ready == "yes", nil
		}
	}
	return false, fmt.Errorf("virt: domain %q has no disk %s", d.Name, target)
}

// disks parses the <disk> elements of the domain's live XML.
func (c *Conn) disks(ctx context.Context, d Domain) ([]diskXML, error) {
	s, err := c.DomainXML(ctx, d, 0)
	if err != nil {
		return nil, err
	}
	var dom struct {
		Disks []diskXML `xml:"devices>disk"`
	}
	if err := xml.Unmarshal([]byte(s), &dom); err != nil {
		return nil, fmt.Errorf("virt: parsing XML of %q: %w", d.Name, err)
	}
	return dom.Disks, nil
}

// DiskInfo describes one <disk> of a domain's live XML.
type DiskInfo struct {
	Target string // guest device, e.g. "vda"
	Device string // "disk", "cdrom", ...
	Type   string // "file", "block", "network", ...
	Format string // the driver's format: "raw", "qcow2", ...
	// File is the image of a file disk; Protocol, Name and Host the
	// source of a network disk.
	File, Protocol, Name, Host string
}

// Disks returns the disks of the domain's live XML, in its order.
func (c *Conn) Disks(ctx context.Context, d Domain) ([]DiskInfo, error) {
	xs, err := c.disks(ctx, d)
	if err != nil {
		return nil, err
	}
	out := make([]DiskInfo, 0, len(xs))
	for _, x := range xs {
		i := DiskInfo{Device: x.Device, Type: x.Type, File: x.Source.File,
			Protocol: x.Source.Protocol, Name: x.Source.Name}
		if x.Target != nil {
			i.Target = x.Target.Dev
		}
		if x.Driver != nil {
			i.Format = x.Driver.Type
		}
		if x.Source.Host != nil {
			i.Host = x.Source.Host.Name
		}
		out = append(out, i)
	}
	return out, nil
}

// DiskCapacity returns the guest-visible size of the running domain's
// disk target, in bytes (a qcow2 file's virtual size, not its length).
func (c *Conn) DiskCapacity(ctx context.Context, d Domain, target string) (int64, error) {
	n, err := call(ctx, c, fmt.Sprintf("block info of %s on %q", target, d.Name), idempotent, func(l *libvirt.Libvirt) (uint64, error) {
		_, capacity, _, err := l.DomainGetBlockInfo(d.raw(), target, 0)
		return capacity, err
	})
	return int64(n), err
}
