package cinderbridge

// These tests check the shape of the requests only (method, path, JSON
// body, microversion headers) against an httptest server that answers
// with canned bodies. They say nothing about how a real Cinder or Nova
// reacts; that test needs the osbox control plane.

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"

	"github.com/gophercloud/gophercloud/v2"
)

type call struct {
	method, path, body string
	header             http.Header
}

// fakeAPI answers every request with status and reply, and records it.
func fakeAPI(t *testing.T, status int, reply string) (*httptest.Server, *[]call) {
	t.Helper()
	var calls []call
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			t.Error(err)
		}
		calls = append(calls, call{r.Method, r.URL.Path, string(b), r.Header.Clone()})
		if reply != "" {
			w.Header().Set("Content-Type", "application/json")
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, reply)
	}))
	t.Cleanup(srv.Close)
	return srv, &calls
}

func serviceClient(srv *httptest.Server, typ, path string) *gophercloud.ServiceClient {
	pc := &gophercloud.ProviderClient{}
	pc.SetToken("tok")
	return &gophercloud.ServiceClient{ProviderClient: pc, Endpoint: srv.URL + path, Type: typ}
}

// checkCall compares one recorded request with the expected method, path
// and JSON body (compared as values, so key order does not matter).
func checkCall(t *testing.T, calls []call, method, path, body string) call {
	t.Helper()
	if len(calls) != 1 {
		t.Fatalf("%d requests, want 1", len(calls))
	}
	c := calls[0]
	if c.method != method || c.path != path {
		t.Errorf("request %s %s, want %s %s", c.method, c.path, method, path)
	}
	if body == "" {
		if c.body != "" {
			t.Errorf("body %s, want none", c.body)
		}
		return c
	}
	var got, want any
	if err := json.Unmarshal([]byte(c.body), &got); err != nil {
		t.Fatalf("body %q: %v", c.body, err)
	}
	if err := json.Unmarshal([]byte(body), &want); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("body\n %s\nwant\n %s", c.body, body)
	}
	if c.header.Get("X-Auth-Token") != "tok" {
		t.Errorf("no token sent")
	}
	return c
}

func checkVolumeMicroversion(t *testing.T, c call) {
	t.Helper()
	if got := c.header.Get("OpenStack-API-Version"); got != "volume 3.44" {
		t.Errorf("OpenStack-API-Version = %q, want %q", got, "volume 3.44")
	}
}

const attachmentReply = `{"attachment": {"id": "att-1", "volume_id": "vol-1", "instance": "srv-1",
  "status": "attaching", "attach_mode": "rw", "attached_at": "", "detached_at": "",
  "connection_info": {"driver_volume_type": "iscsi", "target_portal": "192.0.2.10:3260",
    "target_iqn": "iqn.1992-08.com.netapp:sn.a1", "target_lun": 1, "attachment_id": "att-1",
    "enforce_multipath": false, "access_mode": "rw", "encrypted": false, "qos_specs": null}}}`

var destConnector = &Connector{Host: "compute2", IP: "192.0.2.22", Initiator: "iqn.1993-08.org.debian:01:compute2",
	Platform: "x86_64", OSType: "linux", Extra: map[string]json.RawMessage{"system uuid": json.RawMessage(`"abc"`)}}

const destConnectorJSON = `{"host": "compute2", "ip": "192.0.2.22", "initiator": "iqn.1993-08.org.debian:01:compute2",
  "platform": "x86_64", "os_type": "linux", "multipath": false, "enforce_multipath": false, "system uuid": "abc"}`

var wantAttachment = &Attachment{ID: "att-1", VolumeID: "vol-1", InstanceID: "srv-1", Status: "attaching", AttachMode: "rw",
	Connection: &ISCSI{Attrs: Attrs{AccessMode: "rw", AttachmentID: "att-1"},
		Targets: []ISCSITarget{{Portal{"192.0.2.10", 3260}, "iqn.1992-08.com.netapp:sn.a1", 1}}}}

func TestCinderCreateAttachment(t *testing.T) {
	srv, calls := fakeAPI(t, 200, attachmentReply)
	sc := serviceClient(srv, "block-storage", "/v3/proj/")
	got, err := NewCinder(sc).CreateAttachment(t.Context(), "vol-1", "srv-1", destConnector)
	if err != nil {
		t.Fatal(err)
	}
	c := checkCall(t, *calls, "POST", "/v3/proj/attachments",
		`{"attachment": {"volume_uuid": "vol-1", "instance_uuid": "srv-1", "connector": `+destConnectorJSON+`}}`)
	checkVolumeMicroversion(t, c)
	if !reflect.DeepEqual(got, wantAttachment) {
		t.Errorf("got %+v\nwant %+v", got, wantAttachment)
	}
	if sc.Microversion != "" {
		t.Error("NewCinder changed the caller's client")
	}
}

func TestCinderCreateAttachmentReserveOnly(t *testing.T) {
	srv, calls := fakeAPI(t, 200, `{"attachment": {"id": "att-2", "volume_id": "vol-1", "instance": "srv-1", "status": "reserved", "attached_at": "", "detached_at": "", "connection_info": {}}}`)
	got, err := NewCinder(serviceClient(srv, "block-storage", "/v3/proj/")).CreateAttachment(t.Context(), "vol-1", "srv-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	checkCall(t, *calls, "POST", "/v3/proj/attachments", `{"attachment": {"volume_uuid": "vol-1", "instance_uuid": "srv-1"}}`)
	if got.Connection != nil || got.Status != "reserved" {
		t.Errorf("got %+v", got)
	}
}

func TestCinderUpdateAttachment(t *testing.T) {
	srv, calls := fakeAPI(t, 200, attachmentReply)
	got, err := NewCinder(serviceClient(srv, "block-storage", "/v3/proj/")).UpdateAttachment(t.Context(), "att-1", destConnector)
	if err != nil {
		t.Fatal(err)
	}
	checkVolumeMicroversion(t, checkCall(t, *calls, "PUT", "/v3/proj/attachments/att-1", `{"attachment": {"connector": `+destConnectorJSON+`}}`))
	if !reflect.DeepEqual(got, wantAttachment) {
		t.Errorf("got %+v\nwant %+v", got, wantAttachment)
	}
}

// The 400 an FC-only driver answers to a connector without wwpns reaches
// the caller wrapped, with its status.
func TestCinderUpdateAttachmentRefused(t *testing.T) {
	srv, _ := fakeAPI(t, 400, `{"badRequest": {"code": 400, "message": "Invalid connector: missing wwpns"}}`)
	_, err := NewCinder(serviceClient(srv, "block-storage", "/v3/proj/")).UpdateAttachment(t.Context(), "att-1", destConnector)
	if !gophercloud.ResponseCodeIs(err, http.StatusBadRequest) {
		t.Errorf("err = %v, want a 400", err)
	}
}

func TestCinderUnparsableConnectionInfo(t *testing.T) {
	srv, _ := fakeAPI(t, 200, `{"attachment": {"id": "att-3", "attached_at": "", "detached_at": "", "connection_info": {"driver_volume_type": "rbd", "name": "volumes/v"}}}`)
	_, err := NewCinder(serviceClient(srv, "block-storage", "/v3/proj/")).UpdateAttachment(t.Context(), "att-3", destConnector)
	if err == nil {
		t.Fatal("an rbd connection_info parsed as one of the bridge's")
	}
}

func TestCinderCompleteAttachment(t *testing.T) {
	srv, calls := fakeAPI(t, 204, "")
	if err := NewCinder(serviceClient(srv, "block-storage", "/v3/proj/")).CompleteAttachment(t.Context(), "att-1"); err != nil {
		t.Fatal(err)
	}
	checkVolumeMicroversion(t, checkCall(t, *calls, "POST", "/v3/proj/attachments/att-1/action", `{"os-complete": null}`))
}

func TestCinderDeleteAttachment(t *testing.T) {
	srv, calls := fakeAPI(t, 200, "")
	if err := NewCinder(serviceClient(srv, "block-storage", "/v3/proj/")).DeleteAttachment(t.Context(), "att-1"); err != nil {
		t.Fatal(err)
	}
	checkVolumeMicroversion(t, checkCall(t, *calls, "DELETE", "/v3/proj/attachments/att-1", ""))
}

func TestCinderRetype(t *testing.T) {
	for onDemand, policy := range map[bool]string{true: "on-demand", false: "never"} {
		srv, calls := fakeAPI(t, 202, "")
		if err := NewCinder(serviceClient(srv, "block-storage", "/v3/proj/")).Retype(t.Context(), "vol-1", "iscsi-gold", onDemand); err != nil {
			t.Fatal(err)
		}
		checkVolumeMicroversion(t, checkCall(t, *calls, "POST", "/v3/proj/volumes/vol-1/action",
			`{"os-retype": {"new_type": "iscsi-gold", "migration_policy": "`+policy+`"}}`))
	}
}

func TestCinderMigrateVolumeCompletion(t *testing.T) {
	srv, calls := fakeAPI(t, 200, `{"save_volume_id": "vol-1"}`)
	got, err := NewCinder(serviceClient(srv, "block-storage", "/v3/proj/")).MigrateVolumeCompletion(t.Context(), "vol-1", "vol-2", false)
	if err != nil {
		t.Fatal(err)
	}
	checkVolumeMicroversion(t, checkCall(t, *calls, "POST", "/v3/proj/volumes/vol-1/action",
		`{"os-migrate_volume_completion": {"new_volume": "vol-2", "error": false}}`))
	if got != "vol-1" {
		t.Errorf("save_volume_id = %q", got)
	}
}

func TestNovaSwapVolume(t *testing.T) {
	srv, calls := fakeAPI(t, 202, "")
	sc := serviceClient(srv, "compute", "/v2.1/")
	sc.Microversion = "2.95"
	if err := NewNova(sc).SwapVolume(t.Context(), "srv-1", "vol-1", "vol-2"); err != nil {
		t.Fatal(err)
	}
	c := checkCall(t, *calls, "PUT", "/v2.1/servers/srv-1/os-volume_attachments/vol-1", `{"volumeAttachment": {"volumeId": "vol-2"}}`)
	if v := c.header.Get("X-OpenStack-Nova-API-Version") + c.header.Get("OpenStack-API-Version"); v != "" {
		t.Errorf("microversion %q sent; swap must use the base version", v)
	}
	if sc.Microversion != "2.95" {
		t.Error("NewNova changed the caller's client")
	}
}
