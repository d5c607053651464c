package agent

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/shareless/shareless/cinderbridge"
	"github.com/shareless/shareless/virt"
)

// Method A on the destination. A host without FC HBA and without a kernel
// iSCSI initiator gets, from the Cinder driver wrapper, a "local"
// connection whose device_path is os-brick's by-path name of the array's
// iSCSI LUN (cinderbridge.ByPath). Nova's local volume driver connects
// nothing, and the source's Nova writes that path into the disk's
// <source dev> of the XML it migrates with (nova/virt/libvirt/migration.py
// _update_volume_xml). The path does not exist here; the migrate hook
// turns the disk into a QEMU-native iSCSI network disk of that LUN, with
// the CHAP of the array from the transport map (a libvirt secret the agent
// defines) and [cinder] initiator_iqn as QEMU's initiator name.

// volumeDisks returns the rewrites the domain's volume disks need: every
// block disk whose source is an iSCSI by-path name that no initiator
// attached on this host. A disk the map does not cover is an error: the
// guest could not start on it.
func (a *Agent) volumeDisks(domainXML string) ([]cinderbridge.ISCSIDisk, error) {
	detached, err := cinderbridge.DetachedDisks([]byte(domainXML), pathExists)
	if err != nil {
		return nil, err
	}
	var out []cinderbridge.ISCSIDisk
	for _, d := range detached {
		tgt := d.Target
		if a.volumes == nil {
			return nil, fmt.Errorf("volume disk %s (%s): iSCSI LUN %s/%d not attached on this host, and [cinder] transport_map is not set", d.TargetDev, d.Serial, tgt.IQN, tgt.LUN)
		}
		b := a.volumes.BackendOf(tgt.IQN)
		if b == nil {
			return nil, fmt.Errorf("volume disk %s (%s): iSCSI target %s is in no backend of %s", d.TargetDev, d.Serial, tgt.IQN, a.cfg.Cinder.TransportMap)
		}
		disk := cinderbridge.ISCSIDisk{VolumeID: d.Serial, DevicePath: d.SourceDev,
			Conn: &cinderbridge.ISCSI{Targets: []cinderbridge.ISCSITarget{tgt}}, InitiatorIQN: a.cfg.Cinder.InitiatorIQN}
		if b.CHAP != nil {
			chap := *b.CHAP
			disk.Conn.Auth = &chap
			disk.SecretUsage = cinderbridge.SecretUsage(tgt.IQN, chap.Username)
		}
		out = append(out, disk)
	}
	return out, nil
}

// pathExists reports whether a device path exists on this host.
func pathExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// rewriteVolumes returns the domain XML with its volume disks rewritten,
// or "" when none needs it (libvirt then keeps its own).
func (a *Agent) rewriteVolumes(domainXML string) (string, error) {
	disks, err := a.volumeDisks(domainXML)
	if err != nil || len(disks) == 0 {
		return "", err
	}
	out, err := cinderbridge.RewriteDomainXML([]byte(domainXML), disks)
	if err != nil {
		return "", err
	}
	for _, d := range disks {
		a.log.Info("volume disk becomes a QEMU-native iSCSI disk", "volume", d.VolumeID, "from", d.DevicePath)
	}
	return string(out), nil
}

// defineVolumeSecrets defines, in the local libvirtd, the secret of every
// array iSCSI target that wants CHAP, under the usage name the rewritten
// disks name (cinderbridge.SecretUsage).
func (a *Agent) defineVolumeSecrets(ctx context.Context, c *virt.Conn) error {
	if a.volumes == nil {
		return nil
	}
	var errs []error
	for _, b := range a.volumes.Backends {
		if b.CHAP == nil {
			continue
		}
		for _, p := range b.ISCSI {
			usage := cinderbridge.SecretUsage(p.IQN, b.CHAP.Username)
			s, err := c.DefineISCSISecret(ctx, usage, "CHAP password of Cinder backend "+b.Name)
			if err == nil {
				err = c.SetSecretValue(ctx, s, []byte(b.CHAP.Password.Reveal()))
			}
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
