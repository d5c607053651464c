package agent

import (
	"fmt"
	"strings"
)

// iqnPrefix starts every managed disk's target name (see the package doc).
const iqnPrefix = "iqn.2026-11.io.shareless:"

// initiatorPrefix names the agents' own initiators, one per host.
const initiatorPrefix = "iqn.2026-11.io.shareless:agent."

// DiskRef names a managed disk: an instance and a disk within it.
type DiskRef struct {
	Instance string // Nova's instance UUID, lower case
	Disk     string
}

// NewDiskRef checks instance and disk and returns their reference.
func NewDiskRef(instance, disk string) (DiskRef, error) {
	if err := checkInstance(instance); err != nil {
		return DiskRef{}, err
	}
	if disk == "" || len(disk) > 64 || strings.Trim(disk, "abcdefghijklmnopqrstuvwxyz0123456789.-") != "" || disk[0] == '.' {
		return DiskRef{}, fmt.Errorf("disk name %q: want 1 to 64 of a-z 0-9 . -, not starting with '.'", disk)
	}
	return DiskRef{instance, disk}, nil
}

// checkInstance accepts a canonical lower-case UUID, the form Nova uses.
func checkInstance(s string) error {
	if len(s) != 36 {
		return fmt.Errorf("instance %q is not a UUID", s)
	}
	for i, c := range s {
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return fmt.Errorf("instance %q is not a UUID", s)
			}
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f':
		default:
			return fmt.Errorf("instance %q is not a lower-case UUID", s)
		}
	}
	return nil
}

// IQN is the disk's iSCSI target name; the disk is its LUN 0.
func (r DiskRef) IQN() string { return iqnPrefix + r.storeName() }

// parseIQN is the inverse of DiskRef.IQN.
func parseIQN(iqn string) (DiskRef, error) {
	name, ok := strings.CutPrefix(iqn, iqnPrefix)
	if !ok {
		return DiskRef{}, fmt.Errorf("target %q is not a managed disk's", iqn)
	}
	return parseStoreName(name)
}

// storeName is the disk's directory in the store. The UUID has a fixed
// length, so the first '.' after it separates the disk name unambiguously.
func (r DiskRef) storeName() string { return r.Instance + "." + r.Disk }

func (r DiskRef) String() string { return r.storeName() }

// parseStoreName is the inverse of storeName.
func parseStoreName(name string) (DiskRef, error) {
	if len(name) < 38 || name[36] != '.' {
		return DiskRef{}, fmt.Errorf("store entry %q is not <instance>.<disk>", name)
	}
	return NewDiskRef(name[:36], name[37:])
}

// initiatorName is the IQN this host's agent logs in to peers with:
// stable per host, so that a peer's target reinstates a session after a
// restart instead of keeping a stale one.
func initiatorName(host string) string {
	var b strings.Builder
	for _, c := range strings.ToLower(host) {
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' {
			b.WriteRune(c)
		} else {
			b.WriteByte('-')
		}
	}
	return initiatorPrefix + b.String()
}
