package virt

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"

	libvirt "github.com/digitalocean/go-libvirt"
)

// Secret is a libvirt secret of usage type iscsi: the CHAP password QEMU
// presents to an iSCSI target, named in disk XML as
// <auth username='...'><secret type='iscsi' usage='USAGE'/></auth>.
// Managed disks and Method A volumes need one on every host that runs the
// VM, under the same usage name.
type Secret struct {
	UUID  UUID
	Usage string // the usage target, e.g. "shareless-chap"
}

// secretXML is libvirt's secret definition.
type secretXML struct {
	XMLName     xml.Name `xml:"secret"`
	Ephemeral   string   `xml:"ephemeral,attr"`
	Private     string   `xml:"private,attr"`
	UUID        string   `xml:"uuid,omitempty"`
	Description string   `xml:"description,omitempty"`
	Usage       struct {
		Type   string `xml:"type,attr"`
		Target string `xml:"target"`
	} `xml:"usage"`
}

// DefineISCSISecret defines a persistent, private secret of usage type
// iscsi for usage. Private: libvirt never hands the value back to a
// client, only to QEMU. Defining a usage that exists keeps its UUID (and
// value), so the agent can call this again after a restart.
func (c *Conn) DefineISCSISecret(ctx context.Context, usage, description string) (Secret, error) {
	x := secretXML{Ephemeral: "no", Private: "yes", Description: description}
	x.Usage.Type = "iscsi"
	x.Usage.Target = usage
	old, err := c.LookupISCSISecret(ctx, usage)
	switch {
	case err == nil:
		x.UUID = old.UUID.String()
	case !errors.Is(err, ErrNoSecret):
		return Secret{}, err
	}
	b, err := xml.Marshal(x)
	if err != nil {
		return Secret{}, fmt.Errorf("virt: secret XML: %w", err)
	}
	s, err := call(ctx, c, fmt.Sprintf("define secret %q", usage), notIdempotent, func(l *libvirt.Libvirt) (libvirt.Secret, error) {
		return l.SecretDefineXML(string(b), 0)
	})
	if err != nil {
		return Secret{}, err
	}
	c.log.Info("defined iscsi secret", "usage", usage, "uuid", UUID(s.UUID))
	return Secret{UUID: UUID(s.UUID), Usage: s.UsageID}, nil
}

// LookupISCSISecret finds the iscsi secret for usage; ErrNoSecret if none.
func (c *Conn) LookupISCSISecret(ctx context.Context, usage string) (Secret, error) {
	s, err := call(ctx, c, fmt.Sprintf("lookup secret %q", usage), idempotent, func(l *libvirt.Libvirt) (libvirt.Secret, error) {
		return l.SecretLookupByUsage(int32(libvirt.SecretUsageTypeIscsi), usage)
	})
	if err != nil {
		return Secret{}, err
	}
	return Secret{UUID: UUID(s.UUID), Usage: s.UsageID}, nil
}

// SetSecretValue stores the secret's value (the CHAP password). The value
// is never logged.
func (c *Conn) SetSecretValue(ctx context.Context, s Secret, value []byte) error {
	return do(ctx, c, fmt.Sprintf("set value of secret %q", s.Usage), idempotent, func(l *libvirt.Libvirt) error {
		return l.SecretSetValue(s.raw(), value, 0)
	})
}

// UndefineSecret removes the secret; ErrNoSecret if it is already gone.
func (c *Conn) UndefineSecret(ctx context.Context, s Secret) error {
	err := do(ctx, c, fmt.Sprintf("undefine secret %q", s.Usage), notIdempotent, func(l *libvirt.Libvirt) error {
		return l.SecretUndefine(s.raw())
	})
	if err == nil {
		c.log.Info("undefined iscsi secret", "usage", s.Usage, "uuid", s.UUID)
	}
	return err
}

func (s Secret) raw() libvirt.Secret {
	return libvirt.Secret{UUID: libvirt.UUID(s.UUID), UsageType: int32(libvirt.SecretUsageTypeIscsi), UsageID: s.Usage}
}
