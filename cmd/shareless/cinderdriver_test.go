package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shareless/shareless/cinderbridge"
)

// TestCinderDriver: the wrapper's present request for a host without FC
// comes back as a local connection naming the iSCSI LUN; a map that does
// not cover the volume exits 1, a request that is not JSON exits 2.
func TestCinderDriver(t *testing.T) {
	dir := t.TempDir()
	m := filepath.Join(dir, "transport.json")
	err := os.WriteFile(m, []byte(`{"backends": [{"name": "array", "fc_targets": ["5000000000000a01"],
	  "iscsi": [{"portal": "192.0.2.7:3260", "iqn": "iqn.2026-11.test:array"}],
	  "carrier": {"wwpns": ["c000000000000001"], "wwnns": ["c000000000000000"]}}]}`), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	call := func(req string) (int, string, string) {
		var out, errb bytes.Buffer
		code := run([]string{"cinder-driver", "--transport-map", m}, strings.NewReader(req), &out, &errb)
		return code, out.String(), errb.String()
	}
	code, out, errs := call(`{"op": "present", "volume": {"id": "v1", "host": "cinder@array#p"}, "connector": {"host": "compute2"},
	  "connection_info": {"driver_volume_type": "fibre_channel", "data": {"target_wwn": "5000000000000a01", "target_lun": 3}}}`)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var ans cinderbridge.DriverAnswer
	if err := json.Unmarshal([]byte(out), &ans); err != nil {
		t.Fatalf("%q: %v", out, err)
	}
	want := `{"data":{"device_path":"/dev/disk/by-path/ip-192.0.2.7:3260-iscsi-iqn.2026-11.test:array-lun-3","volume_id":"v1"},"driver_volume_type":"local"}`
	if string(ans.Connection) != want {
		t.Errorf("answer %s\nwant %s", ans.Connection, want)
	}
	if code, _, errs = call(`{"op": "route", "volume": {"id": "v1", "host": "cinder@other#p"}, "connector": {"host": "compute2"}}`); code != 1 || !strings.Contains(errs, "other") {
		t.Errorf("uncovered backend: exit %d, %q", code, errs)
	}
	if code, _, _ = call(`route`); code != 2 {
		t.Errorf("not JSON: exit %d, want 2", code)
	}
}
