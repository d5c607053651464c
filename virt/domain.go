package virt

import (
	"context"
	"encoding/hex"
	"fmt"
	"strings"

	libvirt "github.com/digitalocean/go-libvirt"
)

// UUID is a domain's or secret's UUID. Nova uses the instance UUID as the
// domain UUID, so this is how the agent finds an instance's domain.
type UUID [16]byte

// String formats u in the canonical 8-4-4-4-12 form.
func (u UUID) String() string {
	h := hex.EncodeToString(u[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// ParseUUID parses the canonical form (dashes optional, as libvirt accepts).
func ParseUUID(s string) (UUID, error) {
	var u UUID
	b, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(b) != len(u) {
		return u, fmt.Errorf("virt: bad UUID %q", s)
	}
	copy(u[:], b)
	return u, nil
}

// Domain identifies a libvirt domain.
type Domain struct {
	Name string
	UUID UUID
	// ID is the running domain's id; -1 when the domain is not running.
	ID int32
}

func (d Domain) raw() libvirt.Domain {
	return libvirt.Domain{Name: d.Name, UUID: libvirt.UUID(d.UUID), ID: d.ID}
}

func domainFrom(d libvirt.Domain) Domain {
	return Domain{Name: d.Name, UUID: UUID(d.UUID), ID: d.ID}
}

// DomainState is libvirt's virDomainState.
type DomainState int32

// The states the agent distinguishes; others print by number.
const (
	StateRunning  = DomainState(libvirt.DomainRunning)
	StatePaused   = DomainState(libvirt.DomainPaused)
	StateShutoff  = DomainState(libvirt.DomainShutoff)
	StateShutdown = DomainState(libvirt.DomainShutdown)
	StateCrashed  = DomainState(libvirt.DomainCrashed)
)

func (s DomainState) String() string {
	return strings.ToLower(strings.TrimPrefix(libvirt.DomainState(s).String(), "Domain"))
}

// XMLFlags select what DomainXML returns (virDomainXMLFlags).
type XMLFlags uint32

const (
	// XMLSecure includes security-sensitive parts such as passwords of
	// graphics consoles; needs a read-write connection.
	XMLSecure = XMLFlags(libvirt.DomainXMLSecure)
	// XMLInactive returns the persistent definition, which is what the
	// domain boots from next time, and what libvirt describes while the
	// domain is off.
	XMLInactive = XMLFlags(libvirt.DomainXMLInactive)
	// XMLMigratable returns XML fit to be edited into a migration's
	// destination XML, as Nova's get_xml_desc(dump_migratable=True).
	XMLMigratable = XMLFlags(libvirt.DomainXMLMigratable)
)

// Domains lists all domains, running and defined.
func (c *Conn) Domains(ctx context.Context) ([]Domain, error) {
	ds, err := call(ctx, c, "list domains", idempotent, func(l *libvirt.Libvirt) ([]libvirt.Domain, error) {
		ds, _, err := l.ConnectListAllDomains(1, libvirt.ConnectListDomainsActive|libvirt.ConnectListDomainsInactive)
		return ds, err
	})
	if err != nil {
		return nil, err
	}
	out := make([]Domain, len(ds))
	for i, d := range ds {
		out[i] = domainFrom(d)
	}
	return out, nil
}

// LookupDomain finds a domain by name; ErrNoDomain if there is none.
func (c *Conn) LookupDomain(ctx context.Context, name string) (Domain, error) {
	d, err := call(ctx, c, fmt.Sprintf("lookup domain %q", name), idempotent, func(l *libvirt.Libvirt) (libvirt.Domain, error) {
		return l.DomainLookupByName(name)
	})
	return domainFrom(d), err
}

// LookupDomainByUUID finds a domain by UUID; ErrNoDomain if there is none.
func (c *Conn) LookupDomainByUUID(ctx context.Context, u UUID) (Domain, error) {
	d, err := call(ctx, c, "lookup domain "+u.String(), idempotent, func(l *libvirt.Libvirt) (libvirt.Domain, error) {
		return l.DomainLookupByUUID(libvirt.UUID(u))
	})
	return domainFrom(d), err
}

// DomainXML returns the domain's XML: the live definition, or with
// XMLInactive the persistent one.
func (c *Conn) DomainXML(ctx context.Context, d Domain, flags XMLFlags) (string, error) {
	return call(ctx, c, fmt.Sprintf("get XML of %q", d.Name), idempotent, func(l *libvirt.Libvirt) (string, error) {
		return l.DomainGetXMLDesc(d.raw(), libvirt.DomainXMLFlags(flags))
	})
}

// DomainState returns the domain's state.
func (c *Conn) DomainState(ctx context.Context, d Domain) (DomainState, error) {
	st, err := call(ctx, c, fmt.Sprintf("get state of %q", d.Name), idempotent, func(l *libvirt.Libvirt) (int32, error) {
		st, _, err := l.DomainGetState(d.raw(), 0)
		return st, err
	})
	return DomainState(st), err
}

// DefineDomain defines (or redefines) a persistent domain from XML, as Nova
// does before starting an instance.
func (c *Conn) DefineDomain(ctx context.Context, xml string) (Domain, error) {
	d, err := call(ctx, c, "define domain", notIdempotent, func(l *libvirt.Libvirt) (libvirt.Domain, error) {
		return l.DomainDefineXMLFlags(xml, 0)
	})
	if err == nil {
		c.log.Info("defined domain", "domain", d.Name)
	}
	return domainFrom(d), err
}

// StartDomain boots a defined domain.
func (c *Conn) StartDomain(ctx context.Context, d Domain) error {
	return do(ctx, c, fmt.Sprintf("start %q", d.Name), notIdempotent, func(l *libvirt.Libvirt) error {
		_, err := l.DomainCreateWithFlags(d.raw(), 0)
		return err
	})
}

// DestroyDomain stops a running domain at once (power off).
func (c *Conn) DestroyDomain(ctx context.Context, d Domain) error {
	return do(ctx, c, fmt.Sprintf("destroy %q", d.Name), notIdempotent, func(l *libvirt.Libvirt) error {
		return l.DomainDestroyFlags(d.raw(), libvirt.DomainDestroyDefault)
	})
}

// UndefineDomain removes a domain's persistent definition; a running
// domain keeps running as a transient one.
func (c *Conn) UndefineDomain(ctx context.Context, d Domain) error {
	return do(ctx, c, fmt.Sprintf("undefine %q", d.Name), notIdempotent, func(l *libvirt.Libvirt) error {
		return l.DomainUndefineFlags(d.raw(), 0)
	})
}

// DomainPersistent says whether the domain has a persistent definition
// (a transient one vanishes when it stops).
func (c *Conn) DomainPersistent(ctx context.Context, d Domain) (bool, error) {
	p, err := call(ctx, c, fmt.Sprintf("is %q persistent", d.Name), idempotent, func(l *libvirt.Libvirt) (int32, error) {
		return l.DomainIsPersistent(d.raw())
	})
	return p == 1, err
}
