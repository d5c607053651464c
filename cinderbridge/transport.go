package cinderbridge

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// TransportMap is what the operator tells the agent about arrays that
// present the same LUNs on Fibre Channel and on iSCSI ports: for each
// Cinder backend, its FC target ports, its iSCSI targets, the CHAP it
// expects and how its LUN numbers correspond. The agent's config fills it;
// Validate checks it once, at load.
//
// Cinder has no notion of "the other transport of this array"; an FC-only
// driver never answers iSCSI (cinder/volume/driver.py FibreChannelDriver).
// This map is that missing knowledge, written down once per array.
type TransportMap struct {
	Backends []Backend
}

// Backend describes one array, as one Cinder backend sees it.
type Backend struct {
	// Name is the Cinder backend name: the cinder.conf section, which is
	// the part of a volume's host ("os-vol-host-attr:host",
	// "hostname@backend#pool") between '@' and '#'.
	Name string
	// FCTargets are the array's FC target ports. They choose the backend
	// when a connection's volume host is not known, they guard against a
	// stale map (a connection using a port not listed here is refused), and
	// they are the ports ISCSIToFC presents.
	FCTargets []WWN
	// ISCSI lists the array's iSCSI targets in order of preference; the
	// first usable one is the path QEMU will use.
	ISCSI []ISCSIPath
	// CHAP is the session CHAP the array's iSCSI targets expect, or nil.
	CHAP *CHAP
	// LUN says which iSCSI LUN number carries an FC LUN.
	LUN LUNMapping
	// Carrier, when set, is how the backend's FC driver presents a LUN to
	// the hosts that reach it over iSCSI; nil means such hosts cannot
	// attach through the Cinder driver wrapper.
	Carrier *Carrier
}

// Carrier is a host object on the array that holds FC port names no
// fabric needs to see (the FC driver maps LUNs to it by them) and the
// iSCSI initiator names of the hosts without FC (so the array's iSCSI
// targets show those hosts the same LUN map). The operator creates it
// once; the Cinder driver wrapper then asks the array's own FC driver to
// map a volume to the carrier, and the transport map turns the FC answer
// into the iSCSI presentation of the same LUN.
type Carrier struct {
	// Host is the connector "host" the FC driver sees: drivers name or
	// look up the array's host object by it. Empty: DefaultCarrierHost.
	Host  string
	WWPNs []WWN
	WWNNs []WWN
}

// DefaultCarrierHost is the connector host name of a carrier that names none.
const DefaultCarrierHost = "shareless-carrier"

// ISCSIPath is one iSCSI target of the array.
type ISCSIPath struct {
	Portal Portal
	IQN    string
	// FCTargets, when not empty, ties this iSCSI target to the FC ports
	// that present the same LUN numbers (arrays that group ports per
	// controller or per host group): the path is used only for a
	// connection through one of them. Empty: every FC port of the backend.
	FCTargets []WWN
}

// LUNMapping turns an FC LUN number into the iSCSI LUN number of the same
// volume. The zero value means "the same number", which is what arrays with
// one LUN map per host object do.
type LUNMapping struct {
	// Offset is added to the FC LUN.
	Offset int
	// Explicit, when not nil, is the whole rule: FC LUN to iSCSI LUN. A LUN
	// it does not list is an error, never a guess.
	Explicit map[int]int
}

// MapProblem says why the transport map could not translate a connection.
type MapProblem int

// The problems a MapError reports.
const (
	NoBackend        MapProblem = iota + 1 // no backend matches the volume host or ports
	AmbiguousBackend                       // several backends match the ports
	UncoveredWWN                           // the connection uses an FC port the backend does not list
	UncoveredLUN                           // the LUN mapping has no entry for the LUN
	AmbiguousLUN                           // one path would need two different LUN numbers
	NoPath                                 // no path of the other transport applies
	BadMap                                 // the map itself is invalid
)

func (p MapProblem) String() string {
	switch p {
	case NoBackend:
		return "no backend"
	case AmbiguousBackend:
		return "ambiguous backend"
	case UncoveredWWN:
		return "WWN not covered"
	case UncoveredLUN:
		return "LUN not covered"
	case AmbiguousLUN:
		return "ambiguous LUN"
	case NoPath:
		return "no path"
	case BadMap:
		return "invalid transport map"
	}
	return fmt.Sprintf("MapProblem(%d)", int(p))
}

// MapError reports a connection the transport map does not cover.
type MapError struct {
	Backend string // the backend chosen, or "" when none was
	Problem MapProblem
	Detail  string
}

func (e *MapError) Error() string {
	if e.Backend == "" {
		return fmt.Sprintf("transport map: %s: %s", e.Problem, e.Detail)
	}
	return fmt.Sprintf("transport map: backend %q: %s: %s", e.Backend, e.Problem, e.Detail)
}

// Validate checks the map as the config loader must before use.
func (m *TransportMap) Validate() error {
	bad := func(b, format string, args ...any) error {
		return &MapError{Backend: b, Problem: BadMap, Detail: fmt.Sprintf(format, args...)}
	}
	seen := map[string]bool{}
	for i, b := range m.Backends {
		if b.Name == "" || strings.ContainsAny(b.Name, "@#") {
			return bad("", "backend %d: name %q must be non-empty and hold no '@' or '#'", i, b.Name)
		}
		if seen[b.Name] {
			return bad(b.Name, "defined twice")
		}
		seen[b.Name] = true
		for _, w := range b.FCTargets {
			if canon, err := ParseWWN(string(w)); err != nil || canon != w {
				return bad(b.Name, "FC target %q is not a canonical WWN (16 lower-case hex digits)", w)
			}
		}
		for j, p := range b.ISCSI {
			if p.Portal.Host == "" || p.Portal.Port < 1 || p.Portal.Port > 65535 {
				return bad(b.Name, "iSCSI path %d: portal %v", j, p.Portal)
			}
			if _, err := ParsePortal(p.Portal.String()); err != nil {
				return bad(b.Name, "iSCSI path %d: %v", j, err)
			}
			if err := CheckIQN(p.IQN); err != nil {
				return bad(b.Name, "iSCSI path %d: %v", j, err)
			}
			for _, w := range p.FCTargets {
				if !slices.Contains(b.FCTargets, w) {
					return bad(b.Name, "iSCSI path %d: FC target %s is not among the backend's FC targets", j, w)
				}
			}
		}
		if b.CHAP != nil && (b.CHAP.Username == "" || b.CHAP.Password.IsZero()) {
			return bad(b.Name, "CHAP needs a user name and a password")
		}
		if c := b.Carrier; c != nil {
			if len(c.WWPNs) == 0 || len(c.WWNNs) == 0 {
				return bad(b.Name, "the carrier needs WWPNs and WWNNs")
			}
			for _, w := range slices.Concat(c.WWPNs, c.WWNNs) {
				if canon, err := ParseWWN(string(w)); err != nil || canon != w {
					return bad(b.Name, "carrier port %q is not a canonical WWN", w)
				}
			}
		}
		if b.LUN.Offset < -MaxLUN || b.LUN.Offset > MaxLUN {
			return bad(b.Name, "LUN offset %d out of range", b.LUN.Offset)
		}
		for fc, is := range b.LUN.Explicit {
			if fc < 0 || fc > MaxLUN || is < 0 || is > MaxLUN {
				return bad(b.Name, "explicit LUN %d->%d out of [0, %d]", fc, is, MaxLUN)
			}
		}
	}
	return nil
}

// backendName returns the backend part of a Cinder volume host:
// "hostname@backend#pool" gives "backend"; a bare name is taken as is.
func backendName(volumeHost string) string {
	name := volumeHost
	if _, after, ok := strings.Cut(name, "@"); ok {
		name = after
	}
	name, _, _ = strings.Cut(name, "#")
	return name
}

// byName finds the backend a volume host names.
func (m *TransportMap) byName(volumeHost string) (*Backend, error) {
	name := backendName(volumeHost)
	for i := range m.Backends {
		if m.Backends[i].Name == name {
			return &m.Backends[i], nil
		}
	}
	return nil, &MapError{Problem: NoBackend, Detail: fmt.Sprintf("volume host %q names backend %q, which the map does not list", volumeHost, name)}
}

// byMatch finds the single backend for which match is true.
func (m *TransportMap) byMatch(what string, match func(*Backend) bool) (*Backend, error) {
	var found *Backend
	for i := range m.Backends {
		b := &m.Backends[i]
		if !match(b) {
			continue
		}
		if found != nil {
			return nil, &MapError{Problem: AmbiguousBackend, Detail: fmt.Sprintf("backends %q and %q both list %s; give the volume host", found.Name, b.Name, what)}
		}
		found = b
	}
	if found == nil {
		return nil, &MapError{Problem: NoBackend, Detail: fmt.Sprintf("no backend lists %s", what)}
	}
	return found, nil
}

// toISCSI maps an FC LUN number to the iSCSI one.
func (l LUNMapping) toISCSI(backend string, fcLUN int) (int, error) {
	n := fcLUN + l.Offset
	if l.Explicit != nil {
		var ok bool
		if n, ok = l.Explicit[fcLUN]; !ok {
			return 0, &MapError{Backend: backend, Problem: UncoveredLUN, Detail: fmt.Sprintf("FC LUN %d has no explicit iSCSI LUN", fcLUN)}
		}
	}
	if n < 0 || n > MaxLUN {
		return 0, &MapError{Backend: backend, Problem: UncoveredLUN, Detail: fmt.Sprintf("FC LUN %d maps to %d, out of [0, %d]", fcLUN, n, MaxLUN)}
	}
	return n, nil
}

// toFC is the inverse of toISCSI.
func (l LUNMapping) toFC(backend string, iscsiLUN int) (int, error) {
	if l.Explicit == nil {
		n := iscsiLUN - l.Offset
		if n < 0 || n > MaxLUN {
			return 0, &MapError{Backend: backend, Problem: UncoveredLUN, Detail: fmt.Sprintf("iSCSI LUN %d maps back to %d, out of [0, %d]", iscsiLUN, n, MaxLUN)}
		}
		return n, nil
	}
	var found []int
	for fc, is := range l.Explicit {
		if is == iscsiLUN {
			found = append(found, fc)
		}
	}
	switch len(found) {
	case 0:
		return 0, &MapError{Backend: backend, Problem: UncoveredLUN, Detail: fmt.Sprintf("no explicit FC LUN maps to iSCSI LUN %d", iscsiLUN)}
	case 1:
		return found[0], nil
	}
	slices.Sort(found)
	return 0, &MapError{Backend: backend, Problem: AmbiguousLUN, Detail: fmt.Sprintf("FC LUNs %v all map to iSCSI LUN %d", found, iscsiLUN)}
}

// carried returns the attributes that describe the volume rather than one
// host's attachment of it: device_path and multipath_id are host-local
// (Nova sets them after connecting), attachment_id and enforce_multipath
// belong to one attachment, target_discovered to one transport.
func carried(a Attrs) Attrs {
	a.DevicePath, a.MultipathID, a.AttachmentID = "", "", ""
	a.EnforceMultipath, a.TargetDiscovered = false, false
	a.QoSSpecs = maps.Clone(a.QoSSpecs)
	return a
}

// FCToISCSI presents the LUN of an FC connection_info over the same
// array's iSCSI targets. volumeHost is the volume's Cinder host
// ("os-vol-host-attr:host"); when empty, the backend is the one whose FC
// ports include every port of the connection. The answer lists every iSCSI
// path of the map that applies, in the map's order, with the backend's CHAP;
// volume attributes (volume_id, access_mode, encrypted, discard, qos_specs,
// block sizes, addressing_mode) carry over, host-local keys do not.
func (m *TransportMap) FCToISCSI(fc *FibreChannel, volumeHost string) (*ISCSI, error) {
	wwns := fc.TargetWWNs()
	if len(wwns) == 0 {
		return nil, &MapError{Problem: NoPath, Detail: "the FC connection has no target"}
	}
	var b *Backend
	var err error
	if volumeHost != "" {
		b, err = m.byName(volumeHost)
	} else {
		b, err = m.byMatch(fmt.Sprintf("every WWN of %v", wwns), func(b *Backend) bool {
			for _, w := range wwns {
				if !slices.Contains(b.FCTargets, w) {
					return false
				}
			}
			return true
		})
	}
	if err != nil {
		return nil, err
	}
	if len(b.FCTargets) > 0 {
		for _, w := range wwns {
			if !slices.Contains(b.FCTargets, w) {
				return nil, &MapError{Backend: b.Name, Problem: UncoveredWWN, Detail: fmt.Sprintf("FC target %s is not listed; the map is out of date", w)}
			}
		}
	}
	out := &ISCSI{Attrs: carried(fc.Attrs)}
	if b.CHAP != nil {
		chap := *b.CHAP
		out.Auth = &chap
	}
	for _, p := range b.ISCSI {
		var luns []int
		for _, t := range fc.Targets {
			if (len(p.FCTargets) == 0 || slices.Contains(p.FCTargets, t.WWN)) && !slices.Contains(luns, t.LUN) {
				luns = append(luns, t.LUN)
			}
		}
		switch len(luns) {
		case 0:
			continue // this iSCSI target mirrors FC ports the connection does not use
		case 1:
		default:
			return nil, &MapError{Backend: b.Name, Problem: AmbiguousLUN, Detail: fmt.Sprintf("iSCSI target %s at %v would carry FC LUNs %v; tie it to FC ports", p.IQN, p.Portal, luns)}
		}
		n, err := b.LUN.toISCSI(b.Name, luns[0])
		if err != nil {
			return nil, err
		}
		out.Targets = append(out.Targets, ISCSITarget{Portal: p.Portal, IQN: p.IQN, LUN: n})
	}
	if len(out.Targets) == 0 {
		return nil, &MapError{Backend: b.Name, Problem: NoPath, Detail: fmt.Sprintf("no iSCSI target mirrors FC ports %v", wwns)}
	}
	return out, nil
}

// ISCSIToFC is the way back: it presents the LUN of an iSCSI connection
// over the array's FC ports, for a volume retyped back to its FC type or an
// instance migrating back to an FC host. host, when not nil, is the
// connector of the host that will connect; its wwpns fill
// initiator_target_map with every target port, as drivers do without a
// fabric lookup service (e.g. cinder/volume/drivers/pure.py
// _build_initiator_target_map).
func (m *TransportMap) ISCSIToFC(c *ISCSI, volumeHost string, host *Connector) (*FibreChannel, error) {
	if len(c.Targets) == 0 {
		return nil, &MapError{Problem: NoPath, Detail: "the iSCSI connection has no target"}
	}
	var b *Backend
	var err error
	if volumeHost != "" {
		b, err = m.byName(volumeHost)
	} else {
		iqns := make([]string, len(c.Targets))
		for i, t := range c.Targets {
			iqns[i] = t.IQN
		}
		b, err = m.byMatch(fmt.Sprintf("every IQN of %v", iqns), func(b *Backend) bool {
			for _, iqn := range iqns {
				if b.pathsFor(iqn) == nil {
					return false
				}
			}
			return true
		})
	}
	if err != nil {
		return nil, err
	}
	lunOf := map[WWN]int{}
	for _, t := range c.Targets {
		paths := b.pathsFor(t.IQN)
		if paths == nil {
			return nil, &MapError{Backend: b.Name, Problem: NoPath, Detail: fmt.Sprintf("iSCSI target %s is not listed", t.IQN)}
		}
		n, err := b.LUN.toFC(b.Name, t.LUN)
		if err != nil {
			return nil, err
		}
		for _, p := range paths {
			ports := p.FCTargets
			if len(ports) == 0 {
				ports = b.FCTargets
			}
			for _, w := range ports {
				if old, ok := lunOf[w]; ok && old != n {
					return nil, &MapError{Backend: b.Name, Problem: AmbiguousLUN, Detail: fmt.Sprintf("FC target %s would carry LUNs %d and %d", w, old, n)}
				}
				lunOf[w] = n
			}
		}
	}
	out := &FibreChannel{Attrs: carried(c.Attrs)}
	for _, w := range b.FCTargets { // the map's order, for a deterministic answer
		if n, ok := lunOf[w]; ok {
			out.Targets = append(out.Targets, FCTarget{WWN: w, LUN: n})
		}
	}
	if len(out.Targets) == 0 {
		return nil, &MapError{Backend: b.Name, Problem: NoPath, Detail: "the backend lists no FC target"}
	}
	if host != nil && len(host.WWPNs) > 0 {
		initiators, err := host.PortWWNs()
		if err != nil {
			return nil, err
		}
		targets := out.TargetWWNs()
		out.InitiatorTargetMap = make(map[WWN][]WWN, len(initiators))
		for _, i := range initiators {
			out.InitiatorTargetMap[i] = slices.Clone(targets)
		}
	}
	return out, nil
}

// BackendOf returns the backend that lists an iSCSI target (compared
// without regard to case), or nil.
func (m *TransportMap) BackendOf(iqn string) *Backend {
	for i := range m.Backends {
		if m.Backends[i].pathsFor(iqn) != nil {
			return &m.Backends[i]
		}
	}
	return nil
}

// pathsFor returns the iSCSI paths with the given target name (iSCSI
// names compare without regard to case, RFC 3722).
func (b *Backend) pathsFor(iqn string) []ISCSIPath {
	var out []ISCSIPath
	for _, p := range b.ISCSI {
		if strings.EqualFold(p.IQN, iqn) {
			out = append(out, p)
		}
	}
	return out
}
