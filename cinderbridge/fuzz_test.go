package cinderbridge

import (
	"bytes"
	"encoding/json"
	"github.com/shareless/shareless/internal/secret"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// FuzzParse checks that Parse never panics and that whatever it accepts
// survives a round trip through both wire forms unchanged.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{"driver_volume_type": "fibre_channel", "data": {"target_lun": 1, "target_wwn": "500A098280FEEBA5"}}`,
		`{"driver_volume_type": "fibre_channel", "data": {"target_luns": [3, 7], "target_lun": 3, "target_wwns": ["500a098280feeba5", "500a098290feeba5"], "initiator_target_map": {"21000024ff3a2b10": ["500a098280feeba5"], "21000024FF3A2B10": ["500a098290feeba5"]}, "qos_specs": {"total_iops_sec": 300}}}`,
		`{"driver_volume_type": "fibre_channel", "target_lun": "2", "target_wwn": ["50:0a:09:82:80:fe:eb:a5"], "attachment_id": "a", "physical_block_size": "4096"}`,
		`{"driver_volume_type": "iscsi", "data": {"target_portal": "192.0.2.10:3260,1", "target_iqn": "iqn.2010-10.org.openstack:volume-1", "target_lun": 0, "auth_method": "CHAP", "auth_username": "u", "auth_password": "p"}}`,
		`{"driver_volume_type": "iscsi", "data": {"target_portals": ["[2001:db8::1]:3260", "192.0.2.2"], "target_iqns": ["iqn.a:1", "iqn.a:2"], "target_luns": [1, 2], "discovery_auth_method": "CHAP", "discovery_auth_username": "d", "discovery_auth_password": "dp"}}`,
		`{"driver_volume_type": "local", "data": {"device_path": "/dev/sdb"}, "serial": "v1"}`,
		`{"driver_volume_type": "iscsi", "data": null}`,
		`{"driver_volume_type": "fibre_channel", "data": {"target_lun": 99999999999999999999, "target_wwn": 1}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err != nil {
			return
		}
		for name, marshal := range map[string]func(Connection) ([]byte, error){"nested": MarshalNested, "flat": MarshalFlat} {
			out, err := marshal(c)
			if err != nil {
				t.Fatalf("%s marshal of %+v: %v", name, c, err)
			}
			again, err := Parse(out)
			if err != nil {
				t.Fatalf("%s form %s does not parse: %v", name, out, err)
			}
			if !reflect.DeepEqual(again, c) {
				t.Fatalf("%s round trip changed\n %+v\n to %+v", name, c, again)
			}
		}
	})
}

// FuzzRewriteDomainXML checks that the rewriter never panics, that what it
// returns is well formed, and that a second rewrite changes nothing.
func FuzzRewriteDomainXML(f *testing.F) {
	for name := range goldenCases {
		in, err := os.ReadFile(filepath.Join("testdata", "domainxml", name+".in.xml"))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(in, "6b1e8a1c-39d0-4c6e-9a9b-2c3f8d9e0a11", true)
	}
	for _, s := range []string{
		`<domain><devices><disk type='block'><source dev='/dev/sdb'/><serial>v</serial></disk></devices></domain>`,
		`<domain><devices><disk type="block" xmlns:x="urn:x" x:type="y"><auth username='u'><secret type='iscsi' usage='x'/></auth><source dev="/d"><x:y/></source><serial><![CDATA[v]]></serial></disk></devices></domain>`,
		"<domain>\r\n\t<devices>\r\n\t\t<disk type='block'>\r\n\t\t\t<source dev='/dev/sdb'/>\r\n\t\t\t<serial> v </serial>\r\n\t\t</disk>\r\n\t</devices>\r\n</domain>",
		`<?xml version="1.0"?><!-- c --><domain><devices><!-- d --><disk type='network'><source protocol='iscsi' name='iqn.2000-01.x:a/1'/><serial>v</serial></disk></devices></domain>`,
	} {
		f.Add([]byte(s), "v", false)
	}
	f.Fuzz(func(t *testing.T, domain []byte, volumeID string, chap bool) {
		d := ISCSIDisk{VolumeID: volumeID, DevicePath: "/dev/sdb",
			Conn:         &ISCSI{Targets: []ISCSITarget{{Portal{"192.0.2.10", 3260}, "iqn.2000-01.x:a", 1}}},
			InitiatorIQN: "iqn.1993-08.org.debian:01:h"}
		if chap {
			d.Conn.Auth = &CHAP{Username: "u<&'\">", Password: secret.New("p")}
			d.SecretUsage = "s&<'\""
		}
		// A second request by device path may hit the same disk: that
		// must be an error, never overlapping edits.
		out, err := RewriteDomainXML(domain, []ISCSIDisk{d, {DevicePath: "/dev/sdc", Conn: d.Conn, SecretUsage: d.SecretUsage}})
		if err == nil {
			checkWellFormed(t, out)
		}
		out, err = RewriteDomainXML(domain, []ISCSIDisk{d})
		if err != nil {
			return
		}
		checkWellFormed(t, out)
		again, err := RewriteDomainXML(out, []ISCSIDisk{d})
		if err != nil {
			t.Fatalf("second rewrite: %v\nfirst output:\n%q", err, out)
		}
		if !bytes.Equal(again, out) {
			t.Fatalf("second rewrite changed\n%q\nto\n%q", out, again)
		}
	})
}

// FuzzDecide feeds the Cinder driver wrapper's requests, as JSON, to
// Decide: it never panics, a present answer parses as connection_info,
// and a local answer's device_path names an iSCSI LUN of the map.
func FuzzDecide(f *testing.F) {
	for _, s := range []string{
		`{"op": "route", "volume": {"id": "v", "host": "c@fc-a#p"}, "connector": {"host": "h"}}`,
		`{"op": "present", "volume": {"id": "v", "host": "c@fc-a#p"}, "connector": {"host": "h"}, "connection_info": ` + fcAnswer + `}`,
		`{"op": "present", "volume": {"id": "v", "host": "c@fc-a#p", "transport": "iscsi"}, "connector": {"host": "h", "initiator": "iqn.2000-01.x:y", "wwpns": ["10000090fa0d0001"]}, "connection_info": ` + fcAnswer + `}`,
		`{"op": "release", "volume": {"id": "v", "host": "c@fc-a#p"}, "connector": {"host": "h"}, "attachments": [{"connector": {"host": "h"}, "driver_volume_type": "local"}, {"connector": null}]}`,
		`{"op": "retype", "diff": {"extra_specs": {"shareless:transport": [null, "iscsi"]}}}`,
	} {
		f.Add([]byte(s))
	}
	m := loadTestMap(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		var req DriverRequest
		if json.Unmarshal(b, &req) != nil {
			return
		}
		ans, err := m.Decide(req)
		if err != nil || req.Op != OpPresent {
			return
		}
		c, err := Parse(ans.Connection)
		if err != nil {
			t.Fatalf("present answered %s, which does not parse: %v", ans.Connection, err)
		}
		if loc, ok := c.(*Local); ok && viaCarrier(req.Volume, req.Connector) {
			if tgt, ok := ParseByPath(loc.DevicePath); !ok || m.BackendOf(tgt.IQN) == nil {
				t.Fatalf("local answer %s names no iSCSI LUN of the map", ans.Connection)
			}
		}
	})
}
