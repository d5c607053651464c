package novahook

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

const samplesDir = "../testdata/nova-notifications"

// sample returns a resolved Nova sample as the dict oslo sends (message_id
// and timestamp added), with edit applied to it first when not nil.
func sample(t testing.TB, name string, edit func(msg map[string]any)) map[string]any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(samplesDir, "resolved", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var msg map[string]any
	if err := json.Unmarshal(data, &msg); err != nil {
		t.Fatal(err)
	}
	msg["message_id"] = "00000000-0000-4000-8000-" + strings.Repeat("0", 12)
	msg["timestamp"] = "2026-11-26 05:20:11.688933"
	msg["_unique_id"] = "34a07ff771c74fd18c83b5ff0161e009"
	msg["_context_user"] = "fake"
	if edit != nil {
		edit(msg)
	}
	return msg
}

// payloadData is the nova_object.data of a sample dict.
func payloadData(msg map[string]any) map[string]any {
	return msg["payload"].(map[string]any)["nova_object.data"].(map[string]any)
}

// wireV2 wraps msg in the oslo 2.0 envelope, as messagingv2 does.
func wireV2(t testing.TB, msg map[string]any) []byte {
	t.Helper()
	inner, err := json.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(map[string]string{"oslo.version": "2.0", "oslo.message": string(inner)})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func wireV1(t testing.TB, msg map[string]any) []byte {
	t.Helper()
	b, err := json.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseCapturedWire(t *testing.T) {
	body, err := os.ReadFile(filepath.Join(samplesDir, "wire-example.json"))
	if err != nil {
		t.Fatal(err)
	}
	n, err := Parse(body)
	if err != nil {
		t.Fatal(err)
	}
	want := Notification{
		Format: WireV2, MessageID: "a6d8b28b-188a-4885-9ca9-031495ad8644",
		EventType: EventPreStart, Priority: "INFO",
		Publisher: Publisher{"nova-compute", "host2"},
		Timestamp: time.Date(2026, 11, 26, 5, 20, 11, 688933000, time.UTC),
	}
	p := n.Payload
	n.Payload = Payload{}
	if !reflect.DeepEqual(n, want) {
		t.Fatalf("got  %+v\nwant %+v", n, want)
	}
	if p.Name != "InstanceActionPayload" || p.Version != "1.9" || p.InstanceUUID != "178b0921-8f85-4257-88b6-2e743b5a975c" ||
		p.Host != "compute" || p.TaskState != "migrating" || p.Node != "fake-mini" || p.State != "active" || p.Fault != nil {
		t.Fatalf("payload %+v", p)
	}
	if len(p.BlockDevices) != 1 || p.BlockDevices[0].VolumeID != "a07f71dc-8151-4e7d-a0cc-cd24a3f11113" || p.BlockDevices[0].DeviceName != "/dev/sdb" || p.BlockDevices[0].BootIndex != nil {
		t.Fatalf("block devices %+v", p.BlockDevices)
	}

	body, err = os.ReadFile(filepath.Join(samplesDir, "wire-example-volume_attach-error.json"))
	if err != nil {
		t.Fatal(err)
	}
	n, err = Parse(body)
	if err != nil {
		t.Fatal(err)
	}
	if n.Priority != "ERROR" || n.EventType != "instance.volume_attach.error" || n.Payload.Fault == nil ||
		n.Payload.Fault.Exception == "" || n.Payload.VolumeID == "" {
		t.Fatalf("volume attach error: %+v %+v", n, n.Payload.Fault)
	}
}

// TestParseEverySample parses every resolved Nova sample in both wire
// formats and checks the fields the state machine relies on.
func TestParseEverySample(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(samplesDir, "resolved", "*.json"))
	if err != nil || len(files) < 20 {
		t.Fatalf("samples: %v %v", files, err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".json")
		msg := sample(t, name, nil)
		for _, wire := range []struct {
			format WireFormat
			body   []byte
		}{{WireV2, wireV2(t, msg)}, {WireV1, wireV1(t, msg)}} {
			n, err := Parse(wire.body)
			if err != nil {
				t.Fatalf("%s %v: %v", name, wire.format, err)
			}
			pub := msg["publisher_id"].(string)
			data := payloadData(msg)
			if n.Format != wire.format || n.EventType != msg["event_type"] || n.Publisher.String() != pub || n.Priority != msg["priority"] {
				t.Errorf("%s %v: %+v", name, wire.format, n)
			}
			host, _ := data["host"].(string)
			uuid, _ := data["uuid"].(string)
			if uuid == "" {
				uuid = data["instance_uuid"].(string)
			}
			if n.Payload.Host != host || n.Payload.InstanceUUID != uuid {
				t.Errorf("%s: payload host %q uuid %q, want %q %q", name, n.Payload.Host, n.Payload.InstanceUUID, host, uuid)
			}
		}
	}
}

// TestParseZedPayload: Nova 26 (Zed) sends InstanceActionPayload 1.8, with
// no shares key; newer minors add keys, which are ignored.
func TestParseZedPayload(t *testing.T) {
	for _, edit := range []func(map[string]any){
		func(m map[string]any) {
			m["payload"].(map[string]any)["nova_object.version"] = "1.8"
			delete(payloadData(m), "shares")
		},
		func(m map[string]any) {
			m["payload"].(map[string]any)["nova_object.version"] = "1.42"
			payloadData(m)["brand_new"] = map[string]any{"nested": []any{1, "x"}}
			m["new_top_level"] = true
			m["payload"].(map[string]any)["nova_object.changes"] = []any{"host"}
		},
	} {
		msg := sample(t, "instance-live_migration_post-start", edit)
		n, err := Parse(wireV2(t, msg))
		if err != nil {
			t.Fatal(err)
		}
		if n.EventType != EventPostStart || n.Payload.Host != "compute" {
			t.Fatalf("%+v", n)
		}
	}
}

// TestParseUnreadPayload: Zed sends instance.update with
// InstanceUpdatePayload 2.0; the agent does not read it, so it parses as
// Unread (and is then ignored) rather than failing, while the payloads the
// agent does read at a major version other than 1 still fail
// (TestParseMalformed).
func TestParseUnreadPayload(t *testing.T) {
	msg := sample(t, "instance-live_migration_pre-start", func(m map[string]any) {
		m["event_type"] = "instance.update"
		p := m["payload"].(map[string]any)
		p["nova_object.name"], p["nova_object.version"] = "InstanceUpdatePayload", "2.0"
		p["nova_object.data"] = map[string]any{"uuid": 7, "state_update": map[string]any{}}
	})
	n, err := Parse(wireV2(t, msg))
	if err != nil {
		t.Fatal(err)
	}
	if !n.Payload.Unread || n.Payload.Name != "InstanceUpdatePayload" || n.Payload.Version != "2.0" || n.Payload.InstanceUUID != "" || n.EventType != "instance.update" {
		t.Fatalf("%+v", n)
	}
}

func TestParsePythonTime(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want time.Time
	}{
		{"2026-11-26 05:20:11.688933", time.Date(2026, 11, 26, 5, 20, 11, 688933000, time.UTC)},
		{"2026-11-26 05:20:11", time.Date(2026, 11, 26, 5, 20, 11, 0, time.UTC)},
		{"2026-11-26 05:20:11.5+02:00", time.Date(2026, 11, 26, 3, 20, 11, 500000000, time.UTC)},
		{"2026-11-26T05:20:11.000001", time.Date(2026, 11, 26, 5, 20, 11, 1000, time.UTC)},
		{"2026-11-26T05:20:11Z", time.Date(2026, 11, 26, 5, 20, 11, 0, time.UTC)},
	} {
		got, err := ParsePythonTime(tt.in)
		if err != nil || !got.Equal(tt.want) || got.Location() != time.UTC {
			t.Errorf("%q: %v %v, want %v", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "yesterday", "2026-11-26", "26/11/2026 05:20:11", "2026-13-26 05:20:11"} {
		if _, err := ParsePythonTime(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestParseMalformed(t *testing.T) {
	good := sample(t, "instance-live_migration_pre-start", nil)
	v2 := wireV2(t, good)
	edited := func(edit func(map[string]any)) []byte {
		return wireV2(t, sample(t, "instance-live_migration_pre-start", edit))
	}
	tests := []struct {
		name  string
		body  []byte
		kind  error
		field string
	}{
		{"empty", nil, ErrNotJSON, ""},
		{"not json", []byte("hello"), ErrNotJSON, ""},
		{"truncated", v2[:len(v2)/2], ErrNotJSON, ""},
		{"array", []byte(`[1,2]`), ErrNotJSON, ""},
		{"null", []byte(`null`), ErrNotJSON, ""},
		{"too large", []byte(`{"x":"` + strings.Repeat("a", MaxBodySize) + `"}`), ErrTooLarge, ""},
		{"envelope 3.0", []byte(`{"oslo.version":"3.0","oslo.message":"{}"}`), ErrEnvelope, "oslo.version"},
		{"envelope 2.1", []byte(`{"oslo.version":"2.1","oslo.message":"{}"}`), ErrEnvelope, "oslo.version"},
		{"envelope version number", []byte(`{"oslo.version":2.0,"oslo.message":"{}"}`), ErrEnvelope, "oslo.version"},
		{"envelope without message", []byte(`{"oslo.version":"2.0"}`), ErrMissing, "oslo.message"},
		{"message without version", []byte(`{"oslo.message":"{}"}`), ErrEnvelope, "oslo.version"},
		{"inner not a string", []byte(`{"oslo.version":"2.0","oslo.message":{"message_id":"x"}}`), ErrEnvelope, "oslo.message"},
		{"inner not json", []byte(`{"oslo.version":"2.0","oslo.message":"{\"message_id\": "}`), ErrNotJSON, "oslo.message"},
		{"inner not object", []byte(`{"oslo.version":"2.0","oslo.message":"[]"}`), ErrNotJSON, "oslo.message"},
		{"no message_id", edited(func(m map[string]any) { delete(m, "message_id") }), ErrMissing, "message_id"},
		{"no event_type", edited(func(m map[string]any) { m["event_type"] = "" }), ErrMissing, "event_type"},
		{"no payload", edited(func(m map[string]any) { delete(m, "payload") }), ErrMissing, "payload"},
		{"bad timestamp", edited(func(m map[string]any) { m["timestamp"] = "noon" }), ErrInvalid, "timestamp"},
		{"timestamp number", edited(func(m map[string]any) { m["timestamp"] = 1.5 }), ErrInvalid, "message.timestamp"},
		{"legacy payload", edited(func(m map[string]any) { m["payload"] = map[string]any{"instance_id": "x"} }), ErrMissing, "payload.nova_object.data"},
		{"payload major 2", edited(func(m map[string]any) { m["payload"].(map[string]any)["nova_object.version"] = "2.0" }), ErrInvalid, "payload.nova_object.version"},
		{"host is a number", edited(func(m map[string]any) { payloadData(m)["host"] = 7 }), ErrInvalid, "payload.nova_object.data.host"},
		{"no uuid", edited(func(m map[string]any) { delete(payloadData(m), "uuid") }), ErrMissing, "payload.nova_object.data.uuid"},
		{"bad bdm", edited(func(m map[string]any) { payloadData(m)["block_devices"] = []any{map[string]any{}} }), ErrMissing, "payload.nova_object.data.block_devices[0].nova_object.data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.body)
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is not a *ParseError", err)
			}
			if !errors.Is(err, tt.kind) || pe.Field != tt.field {
				t.Fatalf("error %q: kind %v field %q, want %v %q", err, pe.Kind, pe.Field, tt.kind, tt.field)
			}
		})
	}
}

// FuzzParse checks that no input panics Parse and that whatever it accepts
// carries the fields the agent depends on.
func FuzzParse(f *testing.F) {
	for _, name := range []string{"wire-example.json", "wire-example-volume_attach-error.json"} {
		b, err := os.ReadFile(filepath.Join(samplesDir, name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	files, _ := filepath.Glob(filepath.Join(samplesDir, "resolved", "*.json"))
	for _, file := range files {
		msg := sample(f, strings.TrimSuffix(filepath.Base(file), ".json"), nil)
		f.Add(wireV1(f, msg))
		f.Add(wireV2(f, msg))
	}
	f.Add([]byte(`{"oslo.version":"2.0","oslo.message":"{}"}`))
	f.Add([]byte(`{"oslo.version":"3.0"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		n, err := Parse(body)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Kind == nil {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if n.MessageID == "" || n.EventType == "" || n.Priority == "" || n.Timestamp.IsZero() || n.Payload.Name == "" {
			t.Fatalf("accepted an incomplete notification: %+v", n)
		}
		if strings.HasPrefix(n.EventType, "instance.") && n.Payload.InstanceUUID == "" && !n.Payload.Unread {
			t.Fatalf("instance event without uuid: %+v", n)
		}
		if n.Payload.Unread && (strings.HasPrefix(n.Payload.Name, "InstanceAction") || n.Payload.InstanceUUID != "") {
			t.Fatalf("a payload the agent reads was passed unread: %+v", n)
		}
	})
}
