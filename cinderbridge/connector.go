package cinderbridge

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
)

// Connector is os-brick's connector properties dict: what a compute host
// tells Cinder about itself when it asks for a connection
// (os_brick/initiator/connector.py get_connector_properties merges
// platform/os_type/ip/host with every connector's own keys: multipath and
// enforce_multipath from connectors/base.py, initiator from iscsi.py,
// wwpns/wwnns from fibre_channel.py, nqn/nvme_hostid/uuid/"system uuid"
// from nvmeof.py, found_dsc/host_ips from lightos.py, do_local_attach from
// rbd.py). Nova adds mountpoint before attachment_update
// (nova/volume/cinder.py). Keys the bridge does not know are kept in Extra
// so that a connector passed through the bridge reaches Cinder unchanged.
type Connector struct {
	Platform            string   `json:"platform,omitempty"`
	OSType              string   `json:"os_type,omitempty"`
	IP                  string   `json:"ip,omitempty"`
	Host                string   `json:"host,omitempty"`
	Multipath           bool     `json:"multipath"`
	EnforceMultipath    bool     `json:"enforce_multipath"`
	Initiator           string   `json:"initiator,omitempty"`
	WWPNs               []string `json:"wwpns,omitempty"`
	WWNNs               []string `json:"wwnns,omitempty"`
	NQN                 string   `json:"nqn,omitempty"`
	NVMeHostID          string   `json:"nvme_hostid,omitempty"`
	UUID                string   `json:"uuid,omitempty"`
	SystemUUID          string   `json:"system uuid,omitempty"`
	NVMeNativeMultipath *bool    `json:"nvme_native_multipath,omitempty"`
	FoundDSC            string   `json:"found_dsc,omitempty"` // "found" or ""
	HostIPs             []string `json:"host_ips,omitempty"`
	DoLocalAttach       *bool    `json:"do_local_attach,omitempty"`
	Mountpoint          string   `json:"mountpoint,omitempty"`

	// Extra holds the keys not listed above, verbatim.
	Extra map[string]json.RawMessage `json:"-"`
}

// connectorFields is Connector without its methods, for encoding/json.
type connectorFields Connector

// knownConnectorKeys lists the JSON names of Connector's fields.
func knownConnectorKeys() map[string]bool {
	t := reflect.TypeFor[connectorFields]()
	keys := make(map[string]bool, t.NumField())
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name != "" && name != "-" {
			keys[name] = true
		}
	}
	return keys
}

// UnmarshalJSON reads a connector; a key of the wrong type is a
// *FieldError naming it.
func (c *Connector) UnmarshalJSON(b []byte) error {
	var f connectorFields
	if err := json.Unmarshal(b, &f); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return &FieldError{Key: te.Field, Problem: WrongType, Detail: fmt.Sprintf("%s, want %s", te.Value, te.Type)}
		}
		return fmt.Errorf("connector: %w", err)
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(b, &all); err != nil {
		return fmt.Errorf("connector: %w", err)
	}
	for k := range knownConnectorKeys() {
		delete(all, k)
	}
	if len(all) > 0 {
		f.Extra = all
	}
	*c = Connector(f)
	return nil
}

// MarshalJSON writes the connector with its Extra keys.
func (c Connector) MarshalJSON() ([]byte, error) {
	b, err := json.Marshal(connectorFields(c))
	if err != nil || len(c.Extra) == 0 {
		return b, err
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(b, &all); err != nil {
		return nil, err
	}
	for k, v := range c.Extra {
		if _, clash := all[k]; !clash {
			all[k] = v
		}
	}
	return json.Marshal(all)
}

// PortWWNs returns the host's FC port names in canonical form.
func (c *Connector) PortWWNs() ([]WWN, error) { return parseWWNs("wwpns", c.WWPNs) }

// Validate checks the keys a driver of type t needs, as Cinder's drivers
// do before initialize_connection: FibreChannelDriver.validate_connector
// wants non-empty wwpns and wwnns (cinder/volume/driver.py), the iSCSI
// targets want initiator (cinder/volume/targets/iscsi.py). A failure here
// is exactly the 400 that makes Nova's pre_live_migration fail on a
// destination without FC.
func (c *Connector) Validate(t VolumeType) error {
	switch t {
	case TypeFibreChannel:
		if len(c.WWPNs) == 0 {
			return &FieldError{Key: "wwpns", Problem: Missing}
		}
		if len(c.WWNNs) == 0 {
			return &FieldError{Key: "wwnns", Problem: Missing}
		}
		if _, err := c.PortWWNs(); err != nil {
			return err
		}
		_, err := parseWWNs("wwnns", c.WWNNs)
		return err
	case TypeISCSI:
		if c.Initiator == "" {
			return &FieldError{Key: "initiator", Problem: Missing}
		}
		if err := CheckIQN(c.Initiator); err != nil {
			return &FieldError{Key: "initiator", Problem: BadValue, Detail: err.Error()}
		}
		return nil
	case TypeLocal:
		return nil
	}
	return fmt.Errorf("connector: unknown volume type %q", t)
}
