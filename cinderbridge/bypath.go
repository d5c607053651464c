package cinderbridge

import (
	"strconv"
	"strings"
)

// byPathPrefix and the rest of the name are os-brick's for an iSCSI LUN
// that the kernel initiator attached
// (os_brick/initiator/connectors/iscsi.py _get_device_path:
// /dev/disk/by-path/ip-PORTAL-iscsi-IQN-lun-LUN).
const byPathPrefix = "/dev/disk/by-path/ip-"

// ByPath is the device path a kernel initiator would give the LUN of t.
// The Cinder driver wrapper answers a host without an iSCSI initiator
// with a "local" connection whose device_path is this name: Nova's local
// volume driver (nova/virt/libvirt/volume/volume.py LibvirtVolumeDriver)
// connects nothing and writes it into the disk's <source dev>, and the
// destination's migrate hook, which finds it there, turns the disk into a
// QEMU-native iSCSI disk of that very LUN (ParseByPath). The name carries
// nothing secret; the CHAP comes from the host's transport map.
func ByPath(t ISCSITarget) string {
	return byPathPrefix + t.Portal.String() + "-iscsi-" + t.IQN + "-lun-" + strconv.Itoa(t.LUN)
}

// ParseByPath reads a name ByPath wrote. ok is false for any other path,
// FC and multipath device paths included.
func ParseByPath(p string) (t ISCSITarget, ok bool) {
	rest, found := strings.CutPrefix(p, byPathPrefix)
	if !found {
		return ISCSITarget{}, false
	}
	portal, rest, found := strings.Cut(rest, "-iscsi-")
	if !found {
		return ISCSITarget{}, false
	}
	i := strings.LastIndex(rest, "-lun-")
	if i < 0 {
		return ISCSITarget{}, false
	}
	lun, err := strconv.Atoi(rest[i+len("-lun-"):])
	if err != nil || lun < 0 || lun > MaxLUN {
		return ISCSITarget{}, false
	}
	t = ISCSITarget{IQN: rest[:i], LUN: lun}
	if t.Portal, err = ParsePortal(portal); err != nil || CheckIQN(t.IQN) != nil {
		return ISCSITarget{}, false
	}
	return t, true
}

// DetachedDisk is a block disk of a domain whose source is an iSCSI
// by-path name that no initiator attached on the host.
type DetachedDisk struct {
	DiskRef
	Target ISCSITarget
}

// DetachedDisks returns the domain's block disks named by an iSCSI by-path
// name (ByPath) for which attached reports false: on a host where a
// kernel initiator attached the LUN, the path exists and the disk stays a
// block disk as Nova meant it.
func DetachedDisks(domain []byte, attached func(path string) bool) ([]DetachedDisk, error) {
	refs, err := ListDisks(domain)
	if err != nil {
		return nil, err
	}
	var out []DetachedDisk
	for _, d := range refs {
		if t, ok := ParseByPath(d.SourceDev); ok && d.Type == "block" && !attached(d.SourceDev) {
			out = append(out, DetachedDisk{DiskRef: d, Target: t})
		}
	}
	return out, nil
}
