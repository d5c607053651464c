package cinderbridge

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

// A connector as os-brick's get_connector_properties builds it on an x86
// compute host with iSCSI, FC and NVMe, as Nova's
// LibvirtDriver.get_volume_connector calls it (enforce_multipath=True),
// plus Nova's mountpoint and a key this package does not know.
const fullConnector = `{
  "platform": "x86_64", "os_type": "linux", "ip": "192.0.2.21", "host": "compute1",
  "multipath": false, "enforce_multipath": true,
  "initiator": "iqn.1993-08.org.debian:01:5a2b3c4d5e6f",
  "wwpns": ["21000024ff3a2b10", "21000024ff3a2b11"], "wwnns": ["20000024ff3a2b10", "20000024ff3a2b11"],
  "nqn": "nqn.2014-08.org.nvmexpress:uuid:4c4c4544-0036-3510-8052-b7c04f4e4433",
  "nvme_hostid": "4c4c4544-0036-3510-8052-b7c04f4e4433",
  "uuid": "1b0ae6f0-3ab6-4f0f-a6c6-5a7d7b8e9f00", "system uuid": "4c4c4544-0036-3510-8052-b7c04f4e4433",
  "nvme_native_multipath": false, "found_dsc": "found", "host_ips": ["192.0.2.21", "2001:db8::21"],
  "do_local_attach": false, "mountpoint": "/dev/vdb",
  "storpool_wanted_client_id": 7
}`

func TestConnectorRoundTrip(t *testing.T) {
	var c Connector
	if err := json.Unmarshal([]byte(fullConnector), &c); err != nil {
		t.Fatal(err)
	}
	f := false
	want := Connector{
		Platform: "x86_64", OSType: "linux", IP: "192.0.2.21", Host: "compute1",
		EnforceMultipath: true, Initiator: "iqn.1993-08.org.debian:01:5a2b3c4d5e6f",
		WWPNs: []string{"21000024ff3a2b10", "21000024ff3a2b11"}, WWNNs: []string{"20000024ff3a2b10", "20000024ff3a2b11"},
		NQN:        "nqn.2014-08.org.nvmexpress:uuid:4c4c4544-0036-3510-8052-b7c04f4e4433",
		NVMeHostID: "4c4c4544-0036-3510-8052-b7c04f4e4433", UUID: "1b0ae6f0-3ab6-4f0f-a6c6-5a7d7b8e9f00",
		SystemUUID: "4c4c4544-0036-3510-8052-b7c04f4e4433", NVMeNativeMultipath: &f, FoundDSC: "found",
		HostIPs: []string{"192.0.2.21", "2001:db8::21"}, DoLocalAttach: &f, Mountpoint: "/dev/vdb",
		Extra: map[string]json.RawMessage{"storpool_wanted_client_id": json.RawMessage("7")},
	}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("got  %+v\nwant %+v", c, want)
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var in, out map[string]any
	if err := json.Unmarshal([]byte(fullConnector), &in); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Errorf("round trip changed the dict:\n in  %v\n out %v", in, out)
	}
}

// A minimal iSCSI-only connector keeps multipath=false on the wire
// (connectors/base.py always sets it) and grows no other key.
func TestConnectorMinimal(t *testing.T) {
	c := Connector{Host: "compute2", Initiator: "iqn.1993-08.org.debian:01:abc"}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"host":"compute2","multipath":false,"enforce_multipath":false,"initiator":"iqn.1993-08.org.debian:01:abc"}`
	if string(b) != want {
		t.Errorf("got %s\nwant %s", b, want)
	}
}

func TestConnectorErrors(t *testing.T) {
	for in, key := range map[string]string{
		`{"wwpns": "21000024ff3a2b10"}`: "wwpns",
		`{"multipath": "yes"}`:          "multipath",
		`{"host": 1}`:                   "host",
	} {
		var c Connector
		err := json.Unmarshal([]byte(in), &c)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Key != key || fe.Problem != WrongType {
			t.Errorf("%s: err = %v, want WrongType on %s", in, err, key)
		}
	}
	var c Connector
	if err := json.Unmarshal([]byte(`[1]`), &c); err == nil {
		t.Error("a list decoded as a connector")
	}
}

func TestConnectorValidate(t *testing.T) {
	fc := Connector{WWPNs: []string{"21000024ff3a2b10"}, WWNNs: []string{"20000024ff3a2b10"}}
	iscsiOnly := Connector{Initiator: "iqn.1993-08.org.debian:01:abc"}
	tests := []struct {
		c       Connector
		t       VolumeType
		key     string
		problem Problem
	}{
		{fc, TypeFibreChannel, "", 0},
		{iscsiOnly, TypeISCSI, "", 0},
		// The case Method A exists for: a destination with no FC HBA.
		{iscsiOnly, TypeFibreChannel, "wwpns", Missing},
		{Connector{WWPNs: fc.WWPNs}, TypeFibreChannel, "wwnns", Missing},
		{Connector{WWPNs: []string{"zz"}, WWNNs: fc.WWNNs}, TypeFibreChannel, "wwpns[0]", BadValue},
		{fc, TypeISCSI, "initiator", Missing},
		{Connector{Initiator: "host1"}, TypeISCSI, "initiator", BadValue},
	}
	for _, tt := range tests {
		err := tt.c.Validate(tt.t)
		if tt.key == "" {
			if err != nil {
				t.Errorf("%+v for %s: %v", tt.c, tt.t, err)
			}
			continue
		}
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Key != tt.key || fe.Problem != tt.problem {
			t.Errorf("%+v for %s: err = %v, want %v on %s", tt.c, tt.t, err, tt.problem, tt.key)
		}
	}
}
