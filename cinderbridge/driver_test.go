package cinderbridge

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// mapJSON is a transport map file as an operator writes it: backend fc-a
// of testMap, with a carrier.
const mapJSON = `{"backends": [{
  "name": "fc-a",
  "fc_targets": ["50:0a:09:82:80:fe:eb:a5", "500A098290FEEBA5"],
  "iscsi": [
    {"portal": "192.0.2.10:3260", "iqn": "iqn.1992-08.com.netapp:sn.a1", "fc_targets": ["500a098280feeba5"]},
    {"portal": "192.0.2.11", "iqn": "iqn.1992-08.com.netapp:sn.a2", "fc_targets": ["500a098290feeba5"]}
  ],
  "chap": {"username": "shareless", "password_file": "PWFILE"},
  "lun": {"offset": 0},
  "carrier": {"host": "iscsi-hosts", "wwpns": ["c0:50:76:ff:fe:00:00:01"], "wwnns": ["c0:50:76:ff:fe:00:00:00"]}
}]}`

func loadTestMap(t testing.TB) *TransportMap {
	t.Helper()
	dir := t.TempDir()
	pw := filepath.Join(dir, "chap")
	if err := os.WriteFile(pw, []byte("0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "transport.json")
	if err := os.WriteFile(path, []byte(strings.Replace(mapJSON, "PWFILE", pw, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := LoadTransportMap(path)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestLoadTransportMap(t *testing.T) {
	m := loadTestMap(t)
	want := testMap().Backends[0]
	want.Carrier = &Carrier{Host: "iscsi-hosts", WWPNs: []WWN{"c05076fffe000001"}, WWNNs: []WWN{"c05076fffe000000"}}
	got := m.Backends[0]
	if got.CHAP.Password.Reveal() != want.CHAP.Password.Reveal() {
		t.Errorf("CHAP password %q, want the file's first line", got.CHAP.Password.Reveal())
	}
	got.CHAP, want.CHAP = nil, nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("loaded\n %+v\nwant\n %+v", got, want)
	}

	read := func(string) ([]byte, error) { return []byte("secret"), nil }
	for name, tc := range map[string]struct{ json, want string }{
		"unknown key":        {`{"backends": [{"name": "x", "portal": "1.2.3.4"}]}`, `unknown field "portal"`},
		"bad wwn":            {`{"backends": [{"name": "x", "fc_targets": ["zz"]}]}`, "fc_targets[0]"},
		"bad portal":         {`{"backends": [{"name": "x", "iscsi": [{"portal": "a:b:c:d:99999", "iqn": "iqn.2000-01.x:y"}]}]}`, "iscsi[0]"},
		"chap without file":  {`{"backends": [{"name": "x", "chap": {"username": "u"}}]}`, "password_file is required"},
		"explicit not a LUN": {`{"backends": [{"name": "x", "lun": {"explicit": {"one": 1}}}]}`, `key "one"`},
		"carrier half":       {`{"backends": [{"name": "x", "carrier": {"wwpns": ["c05076fffe000001"]}}]}`, "wwpns and wwnns"},
		"invalid map":        {`{"backends": [{"name": "a@b"}]}`, "invalid transport map"},
	} {
		_, err := ParseTransportMap([]byte(tc.json), read)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one mentioning %q", name, err, tc.want)
		}
	}
}

func TestByPath(t *testing.T) {
	for _, tgt := range []ISCSITarget{
		{Portal: Portal{"192.0.2.10", 3260}, IQN: "iqn.1992-08.com.netapp:sn.a1", LUN: 7},
		{Portal: Portal{"2001:db8::20", 3261}, IQN: "iqn.2010-06.com.example:has-lun-in-name", LUN: 16383},
	} {
		p := ByPath(tgt)
		got, ok := ParseByPath(p)
		if !ok || got != tgt {
			t.Errorf("ParseByPath(%q) = %+v, %v; want %+v", p, got, ok, tgt)
		}
	}
	if p := ByPath(ISCSITarget{Portal: Portal{"192.0.2.10", 3260}, IQN: "iqn.2000-01.x:y", LUN: 1}); p != "/dev/disk/by-path/ip-192.0.2.10:3260-iscsi-iqn.2000-01.x:y-lun-1" {
		t.Errorf("ByPath = %q; want os-brick's name", p)
	}
	for _, p := range []string{
		"/dev/disk/by-path/pci-0000:05:00.0-fc-0x500a098280feeba5-lun-1", // os-brick's FC name
		"/dev/dm-3",
		"/dev/disk/by-path/ip-192.0.2.10:3260-iscsi-iqn.2000-01.x:y-lun-x",
		"/dev/disk/by-path/ip-192.0.2.10:3260-iscsi-target1-lun-1",
		"/dev/disk/by-path/ip-192.0.2.10:3260-iscsi-iqn.2000-01.x:y-lun-99999",
	} {
		if tgt, ok := ParseByPath(p); ok {
			t.Errorf("ParseByPath(%q) = %+v; want not an iSCSI by-path name", p, tgt)
		}
	}
}

// fcAnswer is what an FC driver answers for the carrier: LUN 4 behind
// both controllers of array A.
const fcAnswer = `{"driver_volume_type": "fibre_channel", "data": {"target_discovered": true,
  "target_wwn": ["500a098280feeba5", "500a098290feeba5"], "target_lun": 4, "volume_id": "VOL",
  "discard": true, "vendor_key": "kept for FC hosts",
  "initiator_target_map": {"c05076fffe000001": ["500a098280feeba5", "500a098290feeba5"]}}}`

var (
	fcHost    = &Connector{Host: "compute1", Platform: "x86_64", OSType: "linux", Initiator: "iqn.1993-08.org.debian:01:c1", WWPNs: []string{"10000090fa0d0001"}, WWNNs: []string{"20000090fa0d0001"}}
	bareHost  = &Connector{Host: "compute2", Platform: "x86_64", OSType: "linux", IP: "192.0.2.52"}
	iscsiHost = &Connector{Host: "compute3", Platform: "x86_64", OSType: "linux", Initiator: "iqn.1993-08.org.debian:01:c3"}
)

const volHost = "cinder@fc-a#pool0"

func decide(t *testing.T, m *TransportMap, req DriverRequest) DriverAnswer {
	t.Helper()
	if req.Volume.Host == "" {
		req.Volume.Host = volHost
	}
	req.Volume.ID = "VOL"
	// Through JSON both ways, as the wrapper and the command exchange it.
	b, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	var wire DriverRequest
	if err := json.Unmarshal(b, &wire); err != nil {
		t.Fatal(err)
	}
	a, err := m.Decide(wire)
	if err != nil {
		t.Fatalf("%s: %v", req.Op, err)
	}
	return a
}

func TestDecideRoute(t *testing.T) {
	m := loadTestMap(t)
	carrier := &Connector{Host: "iscsi-hosts", Platform: "x86_64", OSType: "linux",
		WWPNs: []string{"c05076fffe000001"}, WWNNs: []string{"c05076fffe000000"}}
	for name, tc := range map[string]struct {
		host      *Connector
		transport string
		want      *Connector
	}{
		"FC host":                {fcHost, "", fcHost},
		"FC host, FC type":       {fcHost, "fibre_channel", fcHost},
		"host without FC":        {bareHost, "", carrier},
		"initiator, no FC":       {iscsiHost, "", carrier},
		"FC host, iSCSI type":    {fcHost, "iscsi", carrier},
		"host without FC, iSCSI": {bareHost, "iscsi", carrier},
	} {
		a := decide(t, m, DriverRequest{Op: OpRoute, Volume: DriverVolume{Transport: tc.transport}, Connector: tc.host})
		if !reflect.DeepEqual(a.Connector, tc.want) {
			t.Errorf("%s: connector for the FC driver %+v, want %+v", name, a.Connector, tc.want)
		}
	}
	m.Backends[0].Carrier = nil
	_, err := m.Decide(DriverRequest{Op: OpRoute, Volume: DriverVolume{Host: volHost}, Connector: bareHost})
	var me *MapError
	if !errors.As(err, &me) || me.Problem != NoPath {
		t.Errorf("no carrier: %v, want a no-path MapError", err)
	}
	_, err = m.Decide(DriverRequest{Op: OpRoute, Volume: DriverVolume{Host: "cinder@other#p"}, Connector: bareHost})
	if !errors.As(err, &me) || me.Problem != NoBackend {
		t.Errorf("unknown backend: %v, want a no-backend MapError", err)
	}
}

func TestDecidePresent(t *testing.T) {
	m := loadTestMap(t)
	// An FC host gets the driver's answer byte for byte.
	a := decide(t, m, DriverRequest{Op: OpPresent, Connector: fcHost, Connection: json.RawMessage(fcAnswer)})
	var got, sent any
	if err := json.Unmarshal(a.Connection, &got); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(fcAnswer), &sent); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, sent) {
		t.Errorf("FC host: %s, want the driver's answer, every key", a.Connection)
	}

	// A host without an initiator: local, device_path naming the first
	// iSCSI path's LUN; volume attributes carried, host-local ones not.
	a = decide(t, m, DriverRequest{Op: OpPresent, Connector: bareHost, Connection: json.RawMessage(fcAnswer)})
	c, err := Parse(a.Connection)
	if err != nil {
		t.Fatal(err)
	}
	loc, ok := c.(*Local)
	if !ok {
		t.Fatalf("host without initiator: %s, want local", a.Connection)
	}
	tgt, ok := ParseByPath(loc.DevicePath)
	want := ISCSITarget{Portal: Portal{"192.0.2.10", 3260}, IQN: iqnA1, LUN: 4}
	if !ok || tgt != want || !loc.Discard || loc.VolumeID != "VOL" || loc.TargetDiscovered {
		t.Errorf("host without initiator: %+v (target %+v), want device_path of %+v, discard, volume VOL", loc, tgt, want)
	}
	if strings.Contains(string(a.Connection), "0123456789abcdef") || strings.Contains(string(a.Connection), "vendor_key") {
		t.Errorf("the local answer carries the CHAP secret or FC-only keys: %s", a.Connection)
	}

	// A host with an initiator: iscsi with every path and the CHAP.
	a = decide(t, m, DriverRequest{Op: OpPresent, Connector: iscsiHost, Connection: json.RawMessage(fcAnswer)})
	if c, err = Parse(a.Connection); err != nil {
		t.Fatal(err)
	}
	is, ok := c.(*ISCSI)
	if !ok || len(is.Targets) != 2 || is.Targets[1].IQN != iqnA2 || is.Targets[1].LUN != 4 || is.Auth == nil || is.Auth.Password.Reveal() != "0123456789abcdef" {
		t.Errorf("host with initiator: %s, want iscsi with both paths at LUN 4 and CHAP", a.Connection)
	}

	// The FC driver answering anything but FC is an error, not a guess.
	_, err = m.Decide(DriverRequest{Op: OpPresent, Volume: DriverVolume{Host: volHost}, Connector: bareHost,
		Connection: json.RawMessage(`{"driver_volume_type": "local", "data": {"device_path": "/dev/sdb"}}`)})
	if err == nil || !strings.Contains(err.Error(), "want \"fibre_channel\"") {
		t.Errorf("non-FC driver answer: %v", err)
	}
}

func TestDecideRelease(t *testing.T) {
	m := loadTestMap(t)
	carrierHost := "iscsi-hosts"
	att := func(c *Connector, vt VolumeType) DriverAttachment {
		return DriverAttachment{Connector: c, VolumeType: vt}
	}
	for name, tc := range map[string]struct {
		host      *Connector
		transport string
		atts      []DriverAttachment
		want      string // the connector host for the FC driver, "" for none
	}{
		"FC host":                        {fcHost, "", []DriverAttachment{att(fcHost, TypeFibreChannel)}, "compute1"},
		"last carrier user":              {bareHost, "", []DriverAttachment{att(bareHost, TypeLocal)}, carrierHost},
		"carrier still used by the dest": {bareHost, "", []DriverAttachment{att(bareHost, TypeLocal), att(iscsiHost, TypeISCSI)}, ""},
		"FC source after migration":      {fcHost, "", []DriverAttachment{att(fcHost, TypeFibreChannel), att(bareHost, TypeLocal)}, "compute1"},
		// Attached by FC, then retyped to iscsi: released by FC all the same.
		"FC attachment, type now iSCSI": {fcHost, "iscsi", []DriverAttachment{att(fcHost, TypeFibreChannel)}, "compute1"},
		// Attached through the carrier under the iSCSI type, retyped back.
		"carrier attachment, type now FC": {fcHost, "", []DriverAttachment{att(fcHost, TypeISCSI)}, carrierHost},
		"attachment unknown":              {bareHost, "", nil, carrierHost},
	} {
		a := decide(t, m, DriverRequest{Op: OpRelease, Volume: DriverVolume{Transport: tc.transport}, Connector: tc.host, Attachments: tc.atts})
		got := ""
		if a.Connector != nil {
			got = a.Connector.Host
		}
		if got != tc.want {
			t.Errorf("%s: terminate_connection with %q, want %q", name, got, tc.want)
		}
	}
}

func TestDecideRetype(t *testing.T) {
	m := loadTestMap(t)
	diff := func(s string) map[string]map[string][2]json.RawMessage {
		var d map[string]map[string][2]json.RawMessage
		if err := json.Unmarshal([]byte(s), &d); err != nil {
			t.Fatal(err)
		}
		return d
	}
	for name, tc := range map[string]struct {
		diff string
		want bool
	}{
		"FC to iSCSI": {`{"extra_specs": {"volume_backend_name": ["fc-a", "fc-a"], "shareless:transport": [null, "iscsi"]}, "qos_specs": {}, "encryption": {}}`, true},
		"iSCSI to FC": {`{"extra_specs": {"shareless:transport": ["iscsi", "fibre_channel"]}, "qos_specs": null, "encryption": null}`, true},
		"and QoS":     {`{"extra_specs": {"shareless:transport": [null, "iscsi"]}, "qos_specs": {"total_iops_sec": ["100", "200"]}}`, false},
		"other spec":  {`{"extra_specs": {"shareless:transport": [null, "iscsi"], "thin": ["true", "false"]}}`, false},
		"no change":   {`{"extra_specs": {"shareless:transport": ["iscsi", "iscsi"]}}`, false},
	} {
		if a := decide(t, m, DriverRequest{Op: OpRetype, Diff: diff(tc.diff)}); a.Retyped != tc.want {
			t.Errorf("%s: retyped %v, want %v", name, a.Retyped, tc.want)
		}
	}
}

func TestDecideBadRequests(t *testing.T) {
	m := loadTestMap(t)
	var fe *FieldError
	for name, req := range map[string]DriverRequest{
		"no connector":  {Op: OpRoute, Volume: DriverVolume{Host: volHost}},
		"bad transport": {Op: OpRoute, Volume: DriverVolume{Host: volHost, Transport: "nvme"}, Connector: fcHost},
		"unknown op":    {Op: "attach", Volume: DriverVolume{Host: volHost}},
	} {
		if _, err := m.Decide(req); !errors.As(err, &fe) {
			t.Errorf("%s: %v, want a FieldError", name, err)
		}
	}
}

func TestDetachedDisks(t *testing.T) {
	const here = "/dev/disk/by-path/ip-192.0.2.10:3260-iscsi-iqn.2000-01.x:attached-lun-1"
	dom := `<domain><devices>
  <disk type='block' device='disk'><source dev='/dev/disk/by-path/ip-192.0.2.10:3260-iscsi-iqn.2000-01.x:y-lun-4'/><target dev='vdb'/><serial>v1</serial></disk>
  <disk type='block' device='disk'><source dev='` + here + `'/><target dev='vdc'/><serial>v2</serial></disk>
  <disk type='block' device='disk'><source dev='/dev/disk/by-path/pci-0000:05:00.0-fc-0x500a098280feeba5-lun-1'/><target dev='vdd'/></disk>
  <disk type='file' device='disk'><source file='/dev/disk/by-path/ip-192.0.2.10:3260-iscsi-iqn.2000-01.x:f-lun-0'/><target dev='vda'/></disk>
</devices></domain>`
	got, err := DetachedDisks([]byte(dom), func(p string) bool { return p == here })
	if err != nil {
		t.Fatal(err)
	}
	want := ISCSITarget{Portal: Portal{"192.0.2.10", 3260}, IQN: "iqn.2000-01.x:y", LUN: 4}
	if len(got) != 1 || got[0].Serial != "v1" || got[0].TargetDev != "vdb" || got[0].Target != want {
		t.Errorf("detached disks %+v; want vdb only, %+v", got, want)
	}
	if _, err := DetachedDisks([]byte("<domain>"), nil); err == nil {
		t.Error("broken XML: no error")
	}
}
