package cinderbridge

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
)

// TransportSpec is the volume type extra spec that pins a volume's
// transport. "iscsi" presents the volume over the array's iSCSI targets to
// every host; absent (or "fibre_channel"), hosts with FC ports get the FC
// presentation and hosts without get the iSCSI one. Cinder's capabilities
// filter ignores scoped keys, so the two types of one backend schedule
// alike.
const TransportSpec = "shareless:transport"

// The operations of the Cinder driver wrapper (DriverRequest.Op), one per
// decision it must not take itself.
const (
	OpRoute   = "route"   // which connector to give the wrapped FC driver's initialize_connection
	OpPresent = "present" // the connection_info to answer, from the FC driver's
	OpRelease = "release" // which connector to give its terminate_connection, if any
	OpRetype  = "retype"  // whether a retype is done without moving data
)

// DriverRequest is what the wrapper sends `shareless cinder-driver` on
// stdin, one JSON object per call.
type DriverRequest struct {
	Op     string       `json:"op"`
	Volume DriverVolume `json:"volume"`
	// Connector is the host connector Cinder received (route, present,
	// release).
	Connector *Connector `json:"connector,omitempty"`
	// Connection is what the wrapped driver's initialize_connection
	// answered (present).
	Connection json.RawMessage `json:"connection_info,omitempty"`
	// Attachments are the volume's attachments as Cinder records them,
	// the one being released included (release).
	Attachments []DriverAttachment `json:"attachments,omitempty"`
	// Diff is Cinder's volume_types_diff of the old and new type (retype):
	// for each of extra_specs, qos_specs and encryption, every key with
	// its [old, new] values.
	Diff map[string]map[string][2]json.RawMessage `json:"diff,omitempty"`
}

// DriverVolume is the volume a request is about.
type DriverVolume struct {
	ID string `json:"id"`
	// Host is the volume's Cinder host, "hostname@backend#pool".
	Host string `json:"host"`
	// Transport is the volume type's TransportSpec, or "".
	Transport string `json:"transport,omitempty"`
}

// DriverAttachment is one attachment of the volume: the connector it was
// made with and the driver_volume_type it was answered.
type DriverAttachment struct {
	Connector  *Connector `json:"connector"`
	VolumeType VolumeType `json:"driver_volume_type"`
}

// DriverAnswer is what `shareless cinder-driver` writes on stdout.
type DriverAnswer struct {
	// Connector is what to pass to the wrapped driver (route, release);
	// absent from a release answer: do not call it.
	Connector *Connector `json:"connector,omitempty"`
	// Connection is the connection_info to return to Cinder (present), in
	// the nested form drivers answer.
	Connection json.RawMessage `json:"connection_info,omitempty"`
	// Retyped (retype): true when the retype needs nothing from the array;
	// false: ask the wrapped driver.
	Retyped bool `json:"retyped,omitempty"`
}

// viaCarrier reports whether a host reaches the volume over iSCSI, through
// the backend's carrier: it has no FC port, or the volume's type says
// iscsi.
func viaCarrier(v DriverVolume, c *Connector) bool {
	return v.Transport == string(TypeISCSI) || len(c.WWPNs) == 0
}

// Decide answers one request of the Cinder driver wrapper.
func (m *TransportMap) Decide(req DriverRequest) (DriverAnswer, error) {
	switch req.Op {
	case OpRoute, OpPresent, OpRelease:
		if req.Connector == nil {
			return DriverAnswer{}, &FieldError{Key: "connector", Problem: Missing}
		}
	}
	switch req.Volume.Transport {
	case "", string(TypeFibreChannel), string(TypeISCSI):
	default:
		return DriverAnswer{}, &FieldError{Key: "volume.transport", Problem: BadValue,
			Detail: fmt.Sprintf("%s %q, want fibre_channel or iscsi", TransportSpec, req.Volume.Transport)}
	}
	switch req.Op {
	case OpRoute:
		if !viaCarrier(req.Volume, req.Connector) {
			return DriverAnswer{Connector: req.Connector}, nil
		}
		c, err := m.carrierConnector(req.Volume.Host, req.Connector)
		return DriverAnswer{Connector: c}, err
	case OpPresent:
		b, err := m.present(req)
		return DriverAnswer{Connection: b}, err
	case OpRelease:
		return m.release(req)
	case OpRetype:
		return DriverAnswer{Retyped: transportOnly(req.Diff)}, nil
	}
	return DriverAnswer{}, &FieldError{Key: "op", Problem: BadValue, Detail: fmt.Sprintf("%q, want route, present, release or retype", req.Op)}
}

// carrierConnector is the connector the FC driver gets for a host without
// FC: the backend's carrier ports under the carrier's host name, with the
// host's platform; nothing of the host's own identity, so that the array
// maps the LUN to the carrier's host object and nowhere else.
func (m *TransportMap) carrierConnector(volumeHost string, host *Connector) (*Connector, error) {
	b, err := m.byName(volumeHost)
	if err != nil {
		return nil, err
	}
	if b.Carrier == nil {
		return nil, &MapError{Backend: b.Name, Problem: NoPath, Detail: "no carrier: a host without FC cannot attach its volumes"}
	}
	c := &Connector{Platform: host.Platform, OSType: host.OSType, Host: b.Carrier.Host,
		WWPNs: wwnStrings(b.Carrier.WWPNs), WWNNs: wwnStrings(b.Carrier.WWNNs)}
	if c.Host == "" {
		c.Host = DefaultCarrierHost
	}
	return c, nil
}

// present turns the FC driver's answer into the host's connection_info:
// verbatim for an FC host; the iSCSI presentation of the same LUN for a
// host through the carrier, as "iscsi" when the host has an initiator of
// its own (Nova's iSCSI volume driver and os-brick attach it), else as
// "local" whose device_path names the LUN (ByPath) for the agent's hook.
func (m *TransportMap) present(req DriverRequest) (json.RawMessage, error) {
	conn, err := Parse(req.Connection)
	if err != nil {
		return nil, fmt.Errorf("the FC driver's connection_info: %w", err)
	}
	fc, ok := conn.(*FibreChannel)
	if !ok {
		return nil, fmt.Errorf("the FC driver answered driver_volume_type %q, want %q", conn.VolumeType(), TypeFibreChannel)
	}
	if !viaCarrier(req.Volume, req.Connector) {
		return req.Connection, nil // verbatim: the driver's own keys stay
	}
	is, err := m.FCToISCSI(fc, req.Volume.Host)
	if err != nil {
		return nil, err
	}
	if is.VolumeID == "" {
		is.VolumeID = req.Volume.ID
	}
	if req.Connector.Initiator != "" {
		return MarshalNested(is)
	}
	return MarshalNested(&Local{Attrs: Attrs{VolumeID: is.VolumeID, AccessMode: is.AccessMode, Encrypted: is.Encrypted,
		Discard: is.Discard, Cacheable: is.Cacheable, QoSSpecs: is.QoSSpecs, PhysicalBlock: is.PhysicalBlock,
		LogicalBlock: is.LogicalBlock, DevicePath: ByPath(is.Targets[0])}})
}

// release decides the FC driver's terminate_connection: an FC host's own
// connector; for a host that came through the carrier, the carrier's
// connector, unless another attachment of the volume still uses the
// carrier (its mapping must stay) or none did. The attachment being
// released is found by its connector; its answered type, not the volume's
// current type, says how it came (a retype since does not change that).
func (m *TransportMap) release(req DriverRequest) (DriverAnswer, error) {
	self := -1
	for i, a := range req.Attachments {
		if a.Connector != nil && sameHost(a.Connector, req.Connector) {
			self = i
			break
		}
	}
	carried := viaCarrier(req.Volume, req.Connector)
	if self >= 0 {
		carried = req.Attachments[self].VolumeType != TypeFibreChannel
	}
	if !carried {
		return DriverAnswer{Connector: req.Connector}, nil
	}
	for i, a := range req.Attachments {
		if i != self && a.VolumeType != "" && a.VolumeType != TypeFibreChannel {
			return DriverAnswer{}, nil // the carrier's mapping serves another attachment
		}
	}
	c, err := m.carrierConnector(req.Volume.Host, req.Connector)
	return DriverAnswer{Connector: c}, err
}

// sameHost reports whether two connectors are one host's.
func sameHost(a, b *Connector) bool {
	return a.Host == b.Host && a.Initiator == b.Initiator && slices.Equal(a.WWPNs, b.WWPNs)
}

// transportOnly reports whether a volume type diff changes TransportSpec
// and nothing else: the data stays where it is and only the next
// attachments are presented differently, so the retype is done.
func transportOnly(diff map[string]map[string][2]json.RawMessage) bool {
	changed := false
	for group, keys := range diff {
		for k, v := range keys {
			if equalJSON(v[0], v[1]) {
				continue
			}
			if group != "extra_specs" || k != TransportSpec {
				return false
			}
			changed = true
		}
	}
	return changed
}

func equalJSON(a, b json.RawMessage) bool {
	var ca, cb bytes.Buffer
	if json.Compact(&ca, a) != nil || json.Compact(&cb, b) != nil {
		return bytes.Equal(a, b)
	}
	return bytes.Equal(ca.Bytes(), cb.Bytes())
}
