package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"

	"github.com/shareless/shareless/domainxml"
	"github.com/shareless/shareless/virt"
)

// What Nova reads of an adopted instance's domain. The live definition
// names the managed disks' LUNs: that is what makes Nova's live migration
// move RAM only. The persistent definition (what the domain boots from
// next, and what libvirt reports while it is off) names Nova's files
// instead: <[store] instances_path>/<instance>/<disk name>, raw, which is
// the managed disk's image itself (linked by adoption or by linkForNova).
// Nova's operations that power the instance off and then read its disks
// from the domain (cold migration and resize copy them to the destination,
// shelve and the snapshot of a stopped instance read them into an image)
// then find the files, with the current data; a disk whose copy to this
// host is not complete has no file yet, and Nova fails such an operation
// before it copies anything. Libvirt writes a block copy's pivot and an
// incoming migration's XML into the persistent definition too, so the
// agent rewrites it whenever a domain is defined.
//
// A disk adopted by copy (Nova's file is stale) keeps its LUN there.

// followDomains follows libvirt's domain events until ctx ends. It keeps
// the persistent definitions naming Nova's files (persistNovaFiles): for
// every domain at first and after each reconnection, and for a domain
// each time it is defined. And it adopts again the domains whose disks
// were handed back to Nova for a start, once they run (readopt).
func (a *Agent) followDomains(ctx context.Context, c *virt.Conn) {
	events, err := c.LifecycleEvents(ctx)
	if err != nil {
		a.log.Warn("not following libvirt's domain events: persistent definitions are rewritten only at adoption, and instances Nova starts on their files are not adopted again", "err", err)
		return
	}
	all := func() {
		ds, err := c.Domains(ctx)
		if err != nil {
			a.log.Warn("listing domains", "err", err)
			return
		}
		for _, d := range ds {
			a.persistNovaFiles(ctx, c, d)
		}
	}
	all()
	for e := range events {
		switch {
		case e.Resync:
			all()
		case e.Type == virt.EventDefined:
			a.persistNovaFiles(ctx, c, e.Domain)
		case e.Type == virt.EventStarted || e.Type == virt.EventResumed:
			a.readopt(ctx, c, e.Domain)
		}
	}
}

// persistNovaFiles rewrites d's persistent definition so that each of its
// managed disks served here, except those adopted by copy, is Nova's file.
// Errors are logged: the guest is not affected, only what Nova would read
// after powering it off.
func (a *Agent) persistNovaFiles(ctx context.Context, c *virt.Conn, d virt.Domain) {
	if a.cfg.Store.InstancesPath == "" {
		return
	}
	inst := d.UUID.String()
	log := a.log.With("domain", d.Name, "instance", inst)
	// Of a transient domain this is the live definition, which is never
	// redefined: libvirt would make the domain persistent.
	x, err := c.DomainXML(ctx, d, virt.XMLInactive|virt.XMLSecure)
	if err != nil {
		if !errors.Is(err, virt.ErrNoDomain) {
			log.Warn("reading the domain's persistent definition", "err", err)
		}
		return
	}
	files := a.novaFiles(d.Name, inst, []byte(x))
	if len(files) == 0 {
		return
	}
	out, n, err := domainxml.NetworkToFiles([]byte(x), files)
	if err != nil || n == 0 {
		if err != nil {
			log.Warn("rewriting the domain's persistent definition", "err", err)
		}
		return
	}
	if ok, err := c.DomainPersistent(ctx, d); err != nil || !ok {
		return
	}
	if _, err := c.DefineDomain(ctx, string(out)); err != nil {
		log.Warn("redefining the domain on Nova's files", "err", err)
		return
	}
	log.Info("persistent definition names Nova's files", "disks", n)
}

// novaFiles maps the source names of the managed disks in domain XML x
// (of instance inst) that persistNovaFiles rewrites to Nova's files.
func (a *Agent) novaFiles(domain, inst string, x []byte) map[string]string {
	disks, err := domainxml.Disks(x)
	if err != nil {
		return nil
	}
	ad, err := a.readGuard(domain)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		// Which disks were adopted by copy is unknown: leave them all.
		return nil
	}
	byCopy := map[string]bool{}
	for _, ds := range ad.Disks {
		byCopy[ds.Disk] = !ds.Linked
	}
	files := map[string]string{}
	for _, dx := range disks {
		iqn, ok := strings.CutSuffix(dx.SourceName, "/0")
		if dx.Type != "network" || dx.SourceProtocol != "iscsi" || !ok {
			continue
		}
		ref, err := parseIQN(iqn)
		if err != nil || ref.Instance != inst || a.disks.get(ref) == nil || byCopy[ref.Disk] {
			continue
		}
		files[dx.SourceName] = filepath.Join(a.cfg.Store.InstancesPath, inst, ref.Disk)
	}
	return files
}
