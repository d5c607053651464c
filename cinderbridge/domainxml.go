package cinderbridge

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/shareless/shareless/domainxml"
)

// ISCSIDisk says how one volume's disk is to be reached on the
// destination: the iSCSI presentation of its LUN.
type ISCSIDisk struct {
	// VolumeID is matched against the disk's <serial>, which Nova sets to
	// the Cinder volume id; nova/virt/libvirt/migration.py
	// _update_volume_xml matches disks the same way.
	VolumeID string
	// DevicePath, when set, also matches a disk whose <source dev> is this
	// path. Nova writes no <serial> for device='lun' disks
	// (nova/virt/libvirt/config.py LibvirtConfigGuestDisk.format_dom), so
	// those can only be found by the source host's device path (the
	// device_path of the source's connection_info).
	DevicePath string
	// Conn is the iSCSI connection. QEMU's iSCSI network disk has exactly
	// one portal (libvirt's schema allows one <host> for protocol iscsi):
	// Conn.Targets[0] is used, so the caller orders the targets by
	// preference or reachability. There is no multipath inside QEMU.
	// libvirt's parser takes any CHAP user name, but its schema
	// (domaincommon.rng diskAuth, genericName) allows only [a-zA-Z0-9_+-]:
	// user names that are IQNs, as Storwize's driver sends
	// (storwize_svc_iscsi.py), fail virt-xml-validate while working.
	Conn *ISCSI
	// SecretUsage names the libvirt secret (usage type iscsi) holding the
	// CHAP password; required when Conn.Auth is set. The secret must be
	// defined on the destination before the migration starts (SecretXML).
	SecretUsage string
	// InitiatorIQN, when set, is the initiator name QEMU logs in with. The
	// array maps the LUN to an initiator; without this element libiscsi
	// presents QEMU's default name, which no array has been told about.
	InitiatorIQN string
}

// DiskError reports a volume whose disk could not be rewritten.
type DiskError struct {
	Disk    string // the volume id, or the device path when there is none
	Problem DiskProblem
	Detail  string
}

// DiskProblem says why a disk was not rewritten.
type DiskProblem int

// The problems a DiskError reports.
const (
	DiskNotFound    DiskProblem = iota + 1 // no disk has the volume's serial or device path
	DiskAmbiguous                          // several disks match
	DiskUnsupported                        // the disk is of a kind the bridge does not rewrite
	DiskBadRequest                         // the ISCSIDisk itself is incomplete or invalid
)

func (p DiskProblem) String() string {
	switch p {
	case DiskNotFound:
		return "disk not found"
	case DiskAmbiguous:
		return "several disks match"
	case DiskUnsupported:
		return "disk not supported"
	case DiskBadRequest:
		return "bad request"
	}
	return fmt.Sprintf("DiskProblem(%d)", int(p))
}

func (e *DiskError) Error() string {
	return fmt.Sprintf("volume disk %s: %s: %s", e.Disk, e.Problem, e.Detail)
}

// ident names the disk in errors.
func (d ISCSIDisk) ident() string {
	if d.VolumeID != "" {
		return d.VolumeID
	}
	return d.DevicePath
}

// DiskRef describes one disk of a domain, as a hook needs it to decide
// which disks are Cinder volumes and how to match them.
type DiskRef struct {
	Type           string // disk type: file, block, network, ...
	Device         string // disk, lun, cdrom, ...
	Serial         string // Nova sets it to the volume id (not for device='lun')
	SourceDev      string // <source dev> of a block disk
	SourceProtocol string // <source protocol> of a network disk
	SourceName     string // <source name> of a network disk
	TargetDev      string // <target dev>: vda, sdb, ...
}

// ListDisks returns the /domain/devices/disk elements of a domain XML in
// document order.
func ListDisks(domain []byte) ([]DiskRef, error) {
	elems, err := domainxml.Disks(domain)
	if err != nil {
		return nil, err
	}
	out := make([]DiskRef, len(elems))
	for i, e := range elems {
		out[i] = DiskRef{Type: e.Type, Device: e.Device, Serial: strings.TrimSpace(e.Serial),
			SourceDev: e.SourceDev, SourceProtocol: e.SourceProtocol, SourceName: e.SourceName, TargetDev: e.TargetDev}
	}
	return out, nil
}

// RewriteDomainXML rewrites the disks of the given volumes into
// QEMU-native iSCSI network disks, for the domain XML that libvirt's qemu
// hook receives on stdin at "migrate begin" (and that the hook prints
// back, changed, on stdout).
//
// Only three things change in a matched disk: the type attribute of
// <disk> becomes 'network', the <source> element is replaced by
// <source protocol='iscsi' name='IQN/LUN'> with its <host>, <auth> and
// <initiator>, and a disk-level <auth> (the pre-3.9 placement) is removed
// so that the disk has one. Every other byte of the document, the rest of
// each disk included (driver with cache/io/discard, target, serial,
// address, alias, boot order, readonly, shareable, iotune, blockio), is
// copied unchanged.
//
// Nova's own _update_volume_xml replaces the children of a volume's disk
// from the destination's connection_info but never its type attribute; the
// hook must do this part.
func RewriteDomainXML(domain []byte, disks []ISCSIDisk) ([]byte, error) {
	for i, d := range disks {
		if err := checkRequest(d); err != nil {
			return nil, err
		}
		for _, e := range disks[:i] {
			if e.VolumeID == d.VolumeID && d.VolumeID != "" {
				return nil, &DiskError{Disk: d.ident(), Problem: DiskBadRequest, Detail: "listed twice"}
			}
		}
	}
	elems, err := domainxml.Disks(domain)
	if err != nil {
		return nil, err
	}
	var edits []domainxml.Edit
	taken := map[int]string{} // disk element -> the request that took it
	for _, d := range disks {
		var match []int
		for i, e := range elems {
			if e.HasSerial && d.VolumeID != "" && strings.TrimSpace(e.Serial) == d.VolumeID ||
				d.DevicePath != "" && e.SourceDev == d.DevicePath ||
				// Already rewritten to this LUN: a hook that runs twice
				// finds a device-path-matched disk again.
				e.SourceProtocol == "iscsi" && e.SourceName == iscsiName(d.Conn) {
				match = append(match, i)
			}
		}
		switch len(match) {
		case 0:
			return nil, &DiskError{Disk: d.ident(), Problem: DiskNotFound, Detail: fmt.Sprintf("no disk with serial %q or source dev %q", d.VolumeID, d.DevicePath)}
		case 1:
		default:
			return nil, &DiskError{Disk: d.ident(), Problem: DiskAmbiguous, Detail: fmt.Sprintf("%d disks match", len(match))}
		}
		if other, ok := taken[match[0]]; ok {
			return nil, &DiskError{Disk: d.ident(), Problem: DiskAmbiguous, Detail: fmt.Sprintf("the disk it matches is also matched by %s", other)}
		}
		taken[match[0]] = d.ident()
		e := elems[match[0]]
		switch {
		case e.Type == "block":
		case e.Type == "network" && e.SourceProtocol == "iscsi": // rewritten before: rewrite again
		default:
			return nil, &DiskError{Disk: d.ident(), Problem: DiskUnsupported, Detail: fmt.Sprintf("disk type %q (protocol %q); only block disks become iSCSI", e.Type, e.SourceProtocol)}
		}
		if !e.HasSource {
			return nil, &DiskError{Disk: d.ident(), Problem: DiskUnsupported, Detail: "the disk has no <source>"}
		}
		tag, err := domainxml.SetAttr(domain[e.Tag.Start:e.Tag.End], "type", "network")
		if err != nil {
			return nil, &DiskError{Disk: d.ident(), Problem: DiskUnsupported, Detail: err.Error()}
		}
		edits = append(edits, domainxml.Edit{Span: e.Tag, Text: tag}, domainxml.Edit{Span: e.Source, Text: sourceXML(d, e, domainxml.QuoteOf(tag))})
		for _, a := range e.Auths {
			edits = append(edits, domainxml.Edit{Span: a})
		}
	}
	return domainxml.Apply(domain, edits), nil
}

func checkRequest(d ISCSIDisk) error {
	bad := func(format string, args ...any) error {
		return &DiskError{Disk: d.ident(), Problem: DiskBadRequest, Detail: fmt.Sprintf(format, args...)}
	}
	if d.VolumeID == "" && d.DevicePath == "" {
		return bad("neither a volume id nor a device path to match")
	}
	if d.Conn == nil || len(d.Conn.Targets) == 0 {
		return bad("no iSCSI target")
	}
	t := d.Conn.Targets[0]
	if err := CheckIQN(t.IQN); err != nil {
		return bad("%v", err)
	}
	if _, err := ParsePortal(t.Portal.String()); err != nil || t.Portal.Port < 1 || t.Portal.Port > 65535 {
		return bad("portal %v is invalid", t.Portal)
	}
	if t.LUN < 0 || t.LUN > MaxLUN {
		return bad("LUN %d out of [0, %d]", t.LUN, MaxLUN)
	}
	switch d.Conn.AddressingMode {
	case "", AddressingSAM, AddressingTransparent, AddressingSAM2, AddressingSAM3Flat:
	default:
		return bad("addressing mode %q unknown", d.Conn.AddressingMode)
	}
	if d.Conn.Auth != nil {
		if d.Conn.Auth.Username == "" {
			return bad("CHAP without a user name")
		}
		if err := checkUsage(d.SecretUsage); err != nil {
			return bad("%v", err)
		}
	}
	if d.InitiatorIQN != "" {
		if err := CheckIQN(d.InitiatorIQN); err != nil {
			return bad("initiator: %v", err)
		}
	}
	return nil
}

// iscsiName is libvirt's source name for an iSCSI LUN: "IQN/LUN", with
// the LUN number as libiscsi must send it (WireLUN).
func iscsiName(c *ISCSI) string {
	t := c.Targets[0]
	return t.IQN + "/" + strconv.Itoa(WireLUN(t.LUN, c.AddressingMode))
}

// sourceXML writes the network source element, indented like the
// document: one level deeper than <source> for its children, a level being
// the difference between the source's and the disk's indentation.
func sourceXML(d ISCSIDisk, e domainxml.Disk, q byte) []byte {
	t := d.Conn.Targets[0]
	nl, in1, in2 := "", "", ""
	if e.SourcePretty {
		unit := "  "
		if len(e.SourceIndent) > len(e.Indent) && strings.HasPrefix(e.SourceIndent, e.Indent) {
			unit = e.SourceIndent[len(e.Indent):]
		}
		nl, in1, in2 = "\n", e.SourceIndent+unit, e.SourceIndent+unit+unit
	}
	a := func(name, value string) string {
		return " " + name + "=" + string(q) + domainxml.EscapeAttr(value) + string(q)
	}
	var b strings.Builder
	b.WriteString("<source" + a("protocol", "iscsi") + a("name", iscsiName(d.Conn)) + ">" + nl)
	b.WriteString(in1 + "<host" + a("name", t.Portal.Host) + a("port", strconv.Itoa(t.Portal.Port)) + "/>" + nl)
	if c := d.Conn.Auth; c != nil {
		b.WriteString(in1 + "<auth" + a("username", c.Username) + ">" + nl)
		b.WriteString(in2 + "<secret" + a("type", "iscsi") + a("usage", d.SecretUsage) + "/>" + nl)
		b.WriteString(in1 + "</auth>" + nl)
	}
	if d.InitiatorIQN != "" {
		b.WriteString(in1 + "<initiator>" + nl)
		b.WriteString(in2 + "<iqn" + a("name", d.InitiatorIQN) + "/>" + nl)
		b.WriteString(in1 + "</initiator>" + nl)
	}
	if nl != "" {
		b.WriteString(e.SourceIndent)
	}
	b.WriteString("</source>")
	return []byte(b.String())
}

// checkUsage accepts a libvirt secret usage name: libvirt's schema
// (basictypes.rng objectName) allows anything but '/' and newline.
func checkUsage(usage string) error {
	if usage == "" {
		return errors.New("CHAP needs a libvirt secret usage name")
	}
	if strings.ContainsAny(usage, "/\n") {
		return fmt.Errorf("secret usage %q contains '/' or a newline", usage)
	}
	return nil
}

// SecretUsage returns the usage name the bridge gives the libvirt secret
// for a CHAP user on an iSCSI target. Disks refer to the secret by usage,
// not by UUID, so the same disk XML is valid on every host that defined
// the secret, whatever UUID libvirt gave it there.
func SecretUsage(targetIQN, username string) string {
	r := strings.NewReplacer("/", "_", "\n", "_")
	return r.Replace("shareless-chap " + targetIQN + " " + username)
}

// SecretXML returns the libvirt <secret> definition (formatsecret: usage
// type iscsi, whose <target> is the usage name) to pass to
// virSecretDefineXML on the destination before the migration; its value
// is then set to the CHAP password with virSecretSetValue. The secret is
// persistent (a libvirtd restart must not break the guest's next
// reconnect) and private (libvirt never reveals the value to clients).
func SecretXML(usage, description string) ([]byte, error) {
	if err := checkUsage(usage); err != nil {
		return nil, err
	}
	var b strings.Builder
	b.WriteString("<secret ephemeral='no' private='yes'>\n")
	if description != "" {
		b.WriteString("  <description>" + domainxml.EscapeAttr(description) + "</description>\n")
	}
	b.WriteString("  <usage type='iscsi'>\n")
	b.WriteString("    <target>" + domainxml.EscapeAttr(usage) + "</target>\n")
	b.WriteString("  </usage>\n")
	b.WriteString("</secret>\n")
	return []byte(b.String()), nil
}
