package cinderbridge

import (
	"encoding/json"
	"errors"
	"fmt"
	"github.com/shareless/shareless/internal/secret"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
)

// VolumeType is connection_info's driver_volume_type: the os-brick
// connector protocol that reaches the volume.
type VolumeType string

// The transports the bridge handles.
const (
	TypeFibreChannel VolumeType = "fibre_channel"
	TypeISCSI        VolumeType = "iscsi"
	TypeLocal        VolumeType = "local"
)

// MaxLUN is the largest LUN the bridge accepts: 14 bits, the SAM-2/SAM-3
// flat space addressing range that os-brick's
// linuxscsi.lun_for_addressing and the kernel's by-path names can express.
// Larger values are refused rather than silently truncated on the way to
// QEMU's libiscsi.
const MaxLUN = 16383

// The addressing modes a driver may name in addressing_mode
// (os_brick/constants.py SCSI_ADDRESSING_*): how the array encodes a LUN
// number into the 8-byte SCSI LUN field.
const (
	AddressingSAM         = "SAM"         // the default: no translation
	AddressingTransparent = "transparent" // like SAM
	AddressingSAM2        = "SAM2"        // peripheral below 256, flat space from 256
	AddressingSAM3Flat    = "SAM3-flat"   // flat space for every LUN
)

// WireLUN returns the LUN number an initiator must use to reach the
// array's LUN lun: os-brick's linuxscsi.lun_for_addressing adds 16384 (the
// flat space addressing method bits, 01b in the top two bits of the first
// two bytes) under SAM3-flat, and under SAM2 from LUN 256 on. libiscsi, as
// QEMU uses it, writes its LUN number into the first two bytes of the LUN
// field as is (iscsi_pdu_set_lun), like the kernel's int_to_scsilun, so the
// same translation applies to the name of a libvirt iSCSI disk.
func WireLUN(lun int, addressingMode string) int {
	if addressingMode == AddressingSAM3Flat || addressingMode == AddressingSAM2 && lun >= 256 {
		return lun + 16384
	}
	return lun
}

// Connection is one parsed connection_info: a *FibreChannel, an *ISCSI or
// a *Local. The interface is sealed; switch on the concrete type.
type Connection interface {
	// VolumeType is the driver_volume_type.
	VolumeType() VolumeType
	// Common returns the keys every transport shares.
	Common() *Attrs
	// data returns the data dict as Cinder would write it.
	data() map[string]any
}

// Attrs are the connection_info keys that do not depend on the transport.
// Most are added by Cinder's volume manager on top of the driver's answer
// (cinder/volume/manager.py _parse_connection_options: qos_specs,
// access_mode, encrypted, cacheable, discard, block sizes); a few are added
// by Nova after it connected the volume (device_path, multipath_id in
// nova/virt/libvirt/volume/fibrechannel.py connect_volume) or by the
// attachments API (attachment_id, enforce_multipath in
// manager._connection_create). Zero means absent.
type Attrs struct {
	VolumeID         string            // volume_id (Nova's top-level "serial" when data has none)
	AccessMode       string            // "rw" or "ro"
	Encrypted        bool              // encrypted
	Discard          bool              // discard
	Cacheable        bool              // cacheable
	TargetDiscovered bool              // target_discovered
	QoSSpecs         map[string]string // qos_specs with front-end consumer; null reads as nil
	PhysicalBlock    int               // physical_block_size (Cinder sends a string)
	LogicalBlock     int               // logical_block_size
	AddressingMode   string            // addressing_mode: one of the Addressing* constants
	DevicePath       string            // device_path: host-local, set by Nova's volume driver
	MultipathID      string            // multipath_id: host-local
	AttachmentID     string            // attachment_id: flattened attachments form
	EnforceMultipath bool              // enforce_multipath: flattened attachments form
}

// Common implements Connection for every transport.
func (a *Attrs) Common() *Attrs { return a }

// Parse reads a connection_info in either form Cinder and Nova use:
//
//   - nested, {"driver_volume_type": T, "data": {...}}: what a driver's
//     initialize_connection returns, what os-initialize_connection answers
//     and what Nova stores in the BDM (with extra top-level keys such as
//     "serial");
//   - flattened, the data keys and driver_volume_type in one object: the
//     connection_info of an attachment at microversion 3.44+
//     (cinder/volume/manager.py _connection_create pops "data" and merges).
//
// Unknown keys are ignored. Every error names the offending key.
func Parse(b []byte) (Connection, error) {
	top, err := parseObject(b, "", "connection_info")
	if err != nil {
		return nil, err
	}
	vt, err := top.requiredStr("driver_volume_type")
	if err != nil {
		return nil, err
	}
	d := top
	if raw, ok := top.m["data"]; ok {
		// Only the nested form has "data"; no driver puts a key of that
		// name among its data keys.
		d, err = parseObject(raw, "data.", "data")
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) {
				err = &FieldError{Key: "data", Problem: WrongType, Detail: "want an object"}
			}
			return nil, err
		}
	}
	attrs, err := parseAttrs(d)
	if err != nil {
		return nil, err
	}
	if attrs.VolumeID == "" && d.path != "" {
		// Nova's DriverVolumeBlockDevice sets connection_info['serial'] to
		// the volume id (nova/virt/block_device.py).
		if s, _, err := top.str("serial"); err == nil {
			attrs.VolumeID = s
		}
	}
	switch VolumeType(vt) {
	case TypeFibreChannel:
		return parseFC(d, attrs)
	case TypeISCSI:
		return parseISCSI(d, attrs)
	case TypeLocal:
		return parseLocal(d, attrs)
	}
	return nil, &FieldError{Key: "driver_volume_type", Problem: BadValue,
		Detail: fmt.Sprintf("%q is not one of fibre_channel, iscsi, local", vt)}
}

// MarshalNested writes c in the nested form, as a driver's
// initialize_connection returns it. Passwords are written in clear: this is
// the wire format Cinder and Nova exchange.
func MarshalNested(c Connection) ([]byte, error) {
	return json.Marshal(map[string]any{
		"driver_volume_type": string(c.VolumeType()),
		"data":               c.data(),
	})
}

// MarshalFlat writes c in the flattened attachments form.
func MarshalFlat(c Connection) ([]byte, error) {
	m := c.data()
	m["driver_volume_type"] = string(c.VolumeType())
	return json.Marshal(m)
}

func parseAttrs(o object) (Attrs, error) {
	var a Attrs
	var err error
	str := func(k string, dst *string) {
		if err == nil {
			*dst, _, err = o.str(k)
		}
	}
	boolean := func(k string, dst *bool) {
		if err == nil {
			*dst, err = o.boolean(k)
		}
	}
	str("volume_id", &a.VolumeID)
	str("access_mode", &a.AccessMode)
	boolean("encrypted", &a.Encrypted)
	boolean("discard", &a.Discard)
	boolean("cacheable", &a.Cacheable)
	boolean("target_discovered", &a.TargetDiscovered)
	boolean("enforce_multipath", &a.EnforceMultipath)
	str("addressing_mode", &a.AddressingMode)
	str("device_path", &a.DevicePath)
	str("multipath_id", &a.MultipathID)
	str("attachment_id", &a.AttachmentID)
	if err != nil {
		return Attrs{}, err
	}
	switch a.AccessMode {
	case "", "rw", "ro":
	default:
		return Attrs{}, &FieldError{Key: o.key("access_mode"), Problem: BadValue, Detail: fmt.Sprintf("%q, want rw or ro", a.AccessMode)}
	}
	switch a.AddressingMode {
	case "", AddressingSAM, AddressingTransparent, AddressingSAM2, AddressingSAM3Flat:
	default:
		return Attrs{}, &FieldError{Key: o.key("addressing_mode"), Problem: BadValue,
			Detail: fmt.Sprintf("%q is not one of os-brick's SCSI_ADDRESSING_MODES", a.AddressingMode)}
	}
	for _, bs := range []struct {
		key string
		dst *int
	}{{"physical_block_size", &a.PhysicalBlock}, {"logical_block_size", &a.LogicalBlock}} {
		n, ok, err := o.integer(bs.key)
		if err != nil {
			return Attrs{}, err
		}
		if ok && (n < 512 || n > 65536 || n&(n-1) != 0) {
			return Attrs{}, &FieldError{Key: o.key(bs.key), Problem: OutOfRange, Detail: fmt.Sprintf("%d is not a power of two in [512, 65536]", n)}
		}
		*bs.dst = int(n)
	}
	if a.QoSSpecs, err = parseQoS(o); err != nil {
		return Attrs{}, err
	}
	return a, nil
}

// parseQoS reads qos_specs: an object of scalar values (the per-GB
// computation in _parse_connection_options turns some into integers), or
// null when the volume type has no front-end QoS.
func parseQoS(o object) (map[string]string, error) {
	v, ok, err := o.value("qos_specs")
	if err != nil || !ok {
		return nil, err
	}
	m, isObj := v.(map[string]any)
	if !isObj {
		return nil, wrongType(o.key("qos_specs"), v, "object")
	}
	out := make(map[string]string, len(m))
	for k, e := range m {
		switch x := e.(type) {
		case string:
			out[k] = x
		case json.Number:
			out[k] = x.String()
		case bool:
			out[k] = strconv.FormatBool(x)
		default:
			return nil, wrongType(fmt.Sprintf("%s[%q]", o.key("qos_specs"), k), e, "string or number")
		}
	}
	return out, nil
}

func (a *Attrs) putData(m map[string]any) {
	putStr := func(k, v string) {
		if v != "" {
			m[k] = v
		}
	}
	putBool := func(k string, v bool) {
		if v {
			m[k] = true
		}
	}
	putStr("volume_id", a.VolumeID)
	putStr("access_mode", a.AccessMode)
	putBool("encrypted", a.Encrypted)
	putBool("discard", a.Discard)
	putBool("cacheable", a.Cacheable)
	putBool("target_discovered", a.TargetDiscovered)
	putBool("enforce_multipath", a.EnforceMultipath)
	putStr("addressing_mode", a.AddressingMode)
	putStr("device_path", a.DevicePath)
	putStr("multipath_id", a.MultipathID)
	putStr("attachment_id", a.AttachmentID)
	if a.PhysicalBlock != 0 {
		m["physical_block_size"] = strconv.Itoa(a.PhysicalBlock)
	}
	if a.LogicalBlock != 0 {
		m["logical_block_size"] = strconv.Itoa(a.LogicalBlock)
	}
	if a.QoSSpecs != nil {
		m["qos_specs"] = a.QoSSpecs
	}
}

func checkLUN(key string, n int64) (int, error) {
	if n < 0 || n > MaxLUN {
		return 0, &FieldError{Key: key, Problem: OutOfRange, Detail: fmt.Sprintf("%d not in [0, %d]", n, MaxLUN)}
	}
	return int(n), nil
}

// WWN is a Fibre Channel port name in canonical form: 16 lower-case hex
// digits, no separators (the form os-brick compares, after it lower-cases
// drivers' answers in _add_targets_to_connection_properties).
type WWN string

// ParseWWN accepts a port name as drivers and operators write it:
// upper or lower case, with or without ':' separators or a 0x prefix.
func ParseWWN(s string) (WWN, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	t = strings.TrimPrefix(t, "0x")
	t = strings.ReplaceAll(t, ":", "")
	if len(t) != 16 {
		return "", fmt.Errorf("WWN %q: want 16 hex digits", s)
	}
	for _, c := range t {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return "", fmt.Errorf("WWN %q: %q is not a hex digit", s, c)
		}
	}
	return WWN(t), nil
}

// FCTarget is one path to the LUN: a target port and the LUN number behind
// it (os-brick's "targets" list of (wwn, lun) pairs).
type FCTarget struct {
	WWN WWN
	LUN int
}

// FibreChannel is a fibre_channel connection_info.
type FibreChannel struct {
	Attrs
	// Targets pairs target ports with LUNs, built as os-brick does:
	// target_wwns, else target_wwn (string or list); target_luns, else
	// target_lun for every port.
	Targets []FCTarget
	// InitiatorTargetMap is initiator_target_map: host WWPN to the target
	// ports zoned to it (what cinder/zonemanager uses to add zones).
	InitiatorTargetMap map[WWN][]WWN
}

// VolumeType implements Connection.
func (*FibreChannel) VolumeType() VolumeType { return TypeFibreChannel }

// TargetWWNs returns the target ports in order, without repeats.
func (c *FibreChannel) TargetWWNs() []WWN {
	var out []WWN
	seen := map[WWN]bool{}
	for _, t := range c.Targets {
		if !seen[t.WWN] {
			seen[t.WWN] = true
			out = append(out, t.WWN)
		}
	}
	return out
}

func parseWWNs(key string, l []string) ([]WWN, error) {
	out := make([]WWN, len(l))
	for i, s := range l {
		w, err := ParseWWN(s)
		if err != nil {
			return nil, &FieldError{Key: fmt.Sprintf("%s[%d]", key, i), Problem: BadValue, Detail: err.Error()}
		}
		out[i] = w
	}
	return out, nil
}

// parseFC mirrors os-brick's _add_targets_to_connection_properties, with
// one deliberate difference: os-brick defaults a missing target_lun to 0;
// the bridge refuses it, because presenting LUN 0 of an array to a guest
// that expects another volume is the one mistake it must never make.
func parseFC(o object, a Attrs) (*FibreChannel, error) {
	c := &FibreChannel{Attrs: a}
	wwnKey := "target_wwns"
	raw, ok, err := o.stringList(wwnKey)
	if err != nil {
		return nil, err
	}
	if !ok || len(raw) == 0 {
		wwnKey = "target_wwn"
		if raw, _, err = o.stringOrList(wwnKey); err != nil {
			return nil, err
		}
	}
	if len(raw) == 0 {
		return nil, &FieldError{Key: o.key("target_wwn"), Problem: Missing, Detail: "no target_wwn or target_wwns"}
	}
	wwns, err := parseWWNs(o.key(wwnKey), raw)
	if err != nil {
		return nil, err
	}
	lunKey := "target_luns"
	luns, ok, err := o.intList(lunKey)
	if err != nil {
		return nil, err
	}
	if !ok || len(luns) == 0 {
		lunKey = "target_lun"
		n, ok, err := o.integer(lunKey)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, &FieldError{Key: o.key("target_lun"), Problem: Missing, Detail: "no target_lun or target_luns"}
		}
		luns = []int64{n}
	}
	for i, n := range luns {
		key := o.key(lunKey)
		if lunKey == "target_luns" {
			key = fmt.Sprintf("%s[%d]", key, i)
		}
		if _, err := checkLUN(key, n); err != nil {
			return nil, err
		}
	}
	switch {
	case len(luns) == len(wwns):
		for i := range wwns {
			c.Targets = append(c.Targets, FCTarget{WWN: wwns[i], LUN: int(luns[i])})
		}
	case len(luns) == 1:
		for _, w := range wwns {
			c.Targets = append(c.Targets, FCTarget{WWN: w, LUN: int(luns[0])})
		}
	default:
		return nil, &FieldError{Key: o.key(lunKey), Problem: LengthMismatch,
			Detail: fmt.Sprintf("%d LUNs for %d WWNs in %s", len(luns), len(wwns), o.key(wwnKey))}
	}
	if c.InitiatorTargetMap, err = parseITMap(o); err != nil {
		return nil, err
	}
	return c, nil
}

func parseITMap(o object) (map[WWN][]WWN, error) {
	key := o.key("initiator_target_map")
	v, ok, err := o.value("initiator_target_map")
	if err != nil || !ok {
		return nil, err
	}
	m, isObj := v.(map[string]any)
	if !isObj {
		return nil, wrongType(key, v, "object of lists")
	}
	out := make(map[WWN][]WWN, len(m))
	// Sorted, so that two spellings of one initiator merge in a fixed
	// order.
	for _, k := range slices.Sorted(maps.Keys(m)) {
		e := m[k]
		ik := fmt.Sprintf("%s[%q]", key, k)
		init, err := ParseWWN(k)
		if err != nil {
			return nil, &FieldError{Key: ik, Problem: BadValue, Detail: err.Error()}
		}
		l, isList := e.([]any)
		if !isList {
			return nil, wrongType(ik, e, "list of strings")
		}
		strs := make([]string, len(l))
		for i, x := range l {
			s, isStr := x.(string)
			if !isStr {
				return nil, wrongType(fmt.Sprintf("%s[%d]", ik, i), x, "string")
			}
			strs[i] = s
		}
		targets, err := parseWWNs(ik, strs)
		if err != nil {
			return nil, err
		}
		out[init] = append(out[init], targets...)
	}
	return out, nil
}

func wwnStrings(l []WWN) []string {
	out := make([]string, len(l))
	for i, w := range l {
		out[i] = string(w)
	}
	return out
}

func (c *FibreChannel) data() map[string]any {
	m := map[string]any{}
	c.putData(m)
	if len(c.Targets) > 0 {
		wwns := make([]string, len(c.Targets))
		luns := make([]int, len(c.Targets))
		for i, t := range c.Targets {
			wwns[i], luns[i] = string(t.WWN), t.LUN
		}
		m["target_wwn"] = wwns
		m["target_lun"] = luns[0]
		if len(luns) > 1 {
			m["target_luns"] = luns
		}
	}
	if c.InitiatorTargetMap != nil {
		itm := make(map[string][]string, len(c.InitiatorTargetMap))
		for k, v := range c.InitiatorTargetMap {
			itm[string(k)] = wwnStrings(v)
		}
		m["initiator_target_map"] = itm
	}
	return m
}

// DefaultISCSIPort is the IANA port for iSCSI, used when a portal has none.
const DefaultISCSIPort = 3260

// Portal is an iSCSI portal: an IP address or DNS name and a TCP port.
type Portal struct {
	Host string // without brackets for IPv6
	Port int
}

// ParsePortal reads "ip:port", "[ipv6]:port", a bare address, and
// tolerates a ",tpgt" suffix as iscsiadm prints it (os-brick strips it the
// same way in _connect_to_iscsi_portal).
func ParsePortal(s string) (Portal, error) {
	t := strings.TrimSpace(s)
	if i := strings.IndexByte(t, ','); i >= 0 {
		t = t[:i]
	}
	if t == "" {
		return Portal{}, fmt.Errorf("portal %q is empty", s)
	}
	host, portStr, err := net.SplitHostPort(t)
	if err != nil {
		// No port: a bare IPv4 address or name, or a bracketed or bare
		// IPv6 address.
		host, portStr = t, ""
		if strings.HasPrefix(t, "[") && strings.HasSuffix(t, "]") {
			host = t[1 : len(t)-1]
		}
	}
	if host == "" || strings.ContainsAny(host, "[]%/ \t\n'\"<>&") {
		// '%': libvirt's <host name> takes no IPv6 zone.
		return Portal{}, fmt.Errorf("portal %q: bad host", s)
	}
	if strings.Contains(host, ":") && net.ParseIP(host) == nil {
		return Portal{}, fmt.Errorf("portal %q: bad IPv6 address", s)
	}
	p := Portal{Host: host, Port: DefaultISCSIPort}
	if portStr != "" {
		n, err := strconv.Atoi(portStr)
		if err != nil || n < 1 || n > 65535 {
			return Portal{}, fmt.Errorf("portal %q: bad port", s)
		}
		p.Port = n
	}
	return p, nil
}

// String writes the portal as Cinder does: "ip:port", "[ipv6]:port".
func (p Portal) String() string { return net.JoinHostPort(p.Host, strconv.Itoa(p.Port)) }

// CheckIQN accepts an iSCSI name (RFC 3720 §3.2.6: iqn., eui. or naa.
// formats) that can stand in libvirt's source name "IQN/LUN": no slash, no
// white space, no control characters.
func CheckIQN(s string) error {
	l := strings.ToLower(s)
	if !strings.HasPrefix(l, "iqn.") && !strings.HasPrefix(l, "eui.") && !strings.HasPrefix(l, "naa.") {
		return fmt.Errorf("iSCSI name %q: want an iqn, eui or naa name", s)
	}
	if len(s) > 223 { // RFC 3720 §3.2.6.1
		return fmt.Errorf("iSCSI name %q longer than 223 bytes", s)
	}
	for _, c := range s {
		if c <= ' ' || c == '/' || c == 0x7f || c == '\'' || c == '"' || c == '<' || c == '>' || c == '&' {
			return fmt.Errorf("iSCSI name %q contains %q", s, c)
		}
	}
	return nil
}

// ISCSITarget is one path to the LUN: portal, target name and LUN.
type ISCSITarget struct {
	Portal Portal
	IQN    string
	LUN    int
}

// CHAP is a CHAP user name and password (auth_method "CHAP" in
// connection_info; os-brick writes them to node.session.auth.* or
// discovery.sendtargets.auth.*).
type CHAP struct {
	Username string
	Password secret.Secret
}

// ISCSI is an iscsi connection_info.
type ISCSI struct {
	Attrs
	// Targets: from target_portals/target_iqns/target_luns when both
	// portal and IQN lists are present, else the single
	// target_portal/target_iqn/target_lun (os-brick base_iscsi
	// _get_all_targets). Targets[0] is the main path.
	Targets []ISCSITarget
	// Auth is the session CHAP (auth_method/auth_username/auth_password).
	Auth *CHAP
	// DiscoveryAuth is the SendTargets discovery CHAP (discovery_auth_*).
	DiscoveryAuth *CHAP
}

// VolumeType implements Connection.
func (*ISCSI) VolumeType() VolumeType { return TypeISCSI }

func parseISCSI(o object, a Attrs) (*ISCSI, error) {
	c := &ISCSI{Attrs: a}
	portals, hasPortals, err := o.stringList("target_portals")
	if err != nil {
		return nil, err
	}
	iqns, hasIQNs, err := o.stringList("target_iqns")
	if err != nil {
		return nil, err
	}
	lunList, hasLUNs, err := o.intList("target_luns")
	if err != nil {
		return nil, err
	}
	lun, hasLUN, err := o.integer("target_lun")
	if err != nil {
		return nil, err
	}
	if hasPortals && hasIQNs && len(portals) > 0 {
		if len(iqns) != len(portals) {
			return nil, &FieldError{Key: o.key("target_iqns"), Problem: LengthMismatch,
				Detail: fmt.Sprintf("%d IQNs for %d portals", len(iqns), len(portals))}
		}
		lunKeys := make([]string, len(portals))
		switch {
		case hasLUNs && len(lunList) > 0:
			if len(lunList) != len(portals) {
				return nil, &FieldError{Key: o.key("target_luns"), Problem: LengthMismatch,
					Detail: fmt.Sprintf("%d LUNs for %d portals", len(lunList), len(portals))}
			}
			for i := range lunKeys {
				lunKeys[i] = fmt.Sprintf("%s[%d]", o.key("target_luns"), i)
			}
		case hasLUN:
			lunList = make([]int64, len(portals))
			for i := range lunList {
				lunList[i], lunKeys[i] = lun, o.key("target_lun")
			}
		default:
			return nil, &FieldError{Key: o.key("target_lun"), Problem: Missing, Detail: "no target_lun or target_luns"}
		}
		for i := range portals {
			t, err := iscsiTarget(
				fmt.Sprintf("%s[%d]", o.key("target_portals"), i), portals[i],
				fmt.Sprintf("%s[%d]", o.key("target_iqns"), i), iqns[i],
				lunKeys[i], lunList[i])
			if err != nil {
				return nil, err
			}
			c.Targets = append(c.Targets, t)
		}
	} else {
		portal, err := o.requiredStr("target_portal")
		if err != nil {
			return nil, err
		}
		iqn, err := o.requiredStr("target_iqn")
		if err != nil {
			return nil, err
		}
		// Like FC, a missing LUN is an error here, not os-brick's 0.
		if !hasLUN {
			return nil, &FieldError{Key: o.key("target_lun"), Problem: Missing}
		}
		t, err := iscsiTarget(o.key("target_portal"), portal, o.key("target_iqn"), iqn, o.key("target_lun"), lun)
		if err != nil {
			return nil, err
		}
		c.Targets = []ISCSITarget{t}
	}
	if c.Auth, err = parseCHAP(o, "auth_"); err != nil {
		return nil, err
	}
	if c.DiscoveryAuth, err = parseCHAP(o, "discovery_auth_"); err != nil {
		return nil, err
	}
	return c, nil
}

func iscsiTarget(portalKey, portal, iqnKey, iqn, lunKey string, lun int64) (ISCSITarget, error) {
	p, err := ParsePortal(portal)
	if err != nil {
		return ISCSITarget{}, &FieldError{Key: portalKey, Problem: BadValue, Detail: err.Error()}
	}
	if err := CheckIQN(iqn); err != nil {
		return ISCSITarget{}, &FieldError{Key: iqnKey, Problem: BadValue, Detail: err.Error()}
	}
	n, err := checkLUN(lunKey, lun)
	if err != nil {
		return ISCSITarget{}, err
	}
	return ISCSITarget{Portal: p, IQN: iqn, LUN: n}, nil
}

// parseCHAP reads <prefix>method/username/password. Cinder's targets write
// either no method (no authentication) or "CHAP"
// (cinder/volume/targets/iscsi.py _get_iscsi_properties); "None" is what
// iscsiadm itself calls no authentication.
func parseCHAP(o object, prefix string) (*CHAP, error) {
	method, ok, err := o.str(prefix + "method")
	if err != nil || !ok || method == "" || strings.EqualFold(method, "none") {
		return nil, err
	}
	if !strings.EqualFold(method, "chap") {
		return nil, &FieldError{Key: o.key(prefix + "method"), Problem: BadValue, Detail: fmt.Sprintf("%q, want CHAP", method)}
	}
	user, err := o.requiredStr(prefix + "username")
	if err != nil {
		return nil, err
	}
	pass, err := o.requiredStr(prefix + "password")
	if err != nil {
		return nil, err
	}
	return &CHAP{Username: user, Password: secret.New(pass)}, nil
}

func (c *ISCSI) data() map[string]any {
	m := map[string]any{}
	c.putData(m)
	if len(c.Targets) > 0 {
		m["target_portal"] = c.Targets[0].Portal.String()
		m["target_iqn"] = c.Targets[0].IQN
		m["target_lun"] = c.Targets[0].LUN
	}
	if len(c.Targets) > 1 {
		portals := make([]string, len(c.Targets))
		iqns := make([]string, len(c.Targets))
		luns := make([]int, len(c.Targets))
		for i, t := range c.Targets {
			portals[i], iqns[i], luns[i] = t.Portal.String(), t.IQN, t.LUN
		}
		m["target_portals"], m["target_iqns"], m["target_luns"] = portals, iqns, luns
	}
	for prefix, a := range map[string]*CHAP{"auth_": c.Auth, "discovery_auth_": c.DiscoveryAuth} {
		if a != nil {
			m[prefix+"method"] = "CHAP"
			m[prefix+"username"] = a.Username
			m[prefix+"password"] = a.Password.Reveal()
		}
	}
	return m
}

// Local is a local connection_info: the volume is a block device on this
// host (os-brick LocalConnector; Cinder's LVM driver answers it when the
// volume and the instance share a host).
type Local struct {
	Attrs // DevicePath is required
}

// VolumeType implements Connection.
func (*Local) VolumeType() VolumeType { return TypeLocal }

func parseLocal(o object, a Attrs) (*Local, error) {
	if a.DevicePath == "" {
		return nil, &FieldError{Key: o.key("device_path"), Problem: Missing}
	}
	if !strings.HasPrefix(a.DevicePath, "/") {
		return nil, &FieldError{Key: o.key("device_path"), Problem: BadValue, Detail: fmt.Sprintf("%q is not an absolute path", a.DevicePath)}
	}
	return &Local{Attrs: a}, nil
}

func (c *Local) data() map[string]any {
	m := map[string]any{}
	c.putData(m)
	return m
}
