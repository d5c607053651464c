// Package novahook follows Nova's live migrations from the agent's side: it
// parses Nova's versioned notifications ([Parse]), feeds them with libvirt
// hook calls and replica progress to a pure migration state machine
// ([Machine]), keeps the machine's state and dedup set in a durable
// [Journal], and consumes the notifications from RabbitMQ ([Consumer]).
//
// The split follows etcd's raft: the machine does no I/O; [Node] persists
// what the machine returns, then hands the actions to an [Executor]; only
// then does the consumer acknowledge the message.
package novahook

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Event types of the live migration, as Nova names them.
const (
	EventPreStart           = "instance.live_migration_pre.start"
	EventPreEnd             = "instance.live_migration_pre.end"
	EventPostStart          = "instance.live_migration_post.start"
	EventPostEnd            = "instance.live_migration_post.end"
	EventPostDestStart      = "instance.live_migration_post_dest.start"
	EventPostDestEnd        = "instance.live_migration_post_dest.end"
	EventRollbackStart      = "instance.live_migration_rollback.start"
	EventRollbackEnd        = "instance.live_migration_rollback.end"
	EventRollbackDestStart  = "instance.live_migration_rollback_dest.start"
	EventRollbackDestEnd    = "instance.live_migration_rollback_dest.end"
	EventAbortStart         = "instance.live_migration_abort.start"
	EventAbortEnd           = "instance.live_migration_abort.end"
	EventForceCompleteStart = "instance.live_migration_force_complete.start"
	EventForceCompleteEnd   = "instance.live_migration_force_complete.end"
)

// MaxBodySize bounds the message bodies Parse accepts. Nova's largest
// notifications are a few tens of KiB; anything near this is not Nova's.
const MaxBodySize = 1 << 20

// WireFormat is the oslo.messaging notification driver that produced a message.
type WireFormat int

const (
	// WireV2 is driver messagingv2: {"oslo.version": "2.0", "oslo.message": "<json>"}.
	WireV2 WireFormat = iota + 1
	// WireV1 is driver messaging: the message dict itself, with no envelope.
	WireV1
)

func (f WireFormat) String() string {
	switch f {
	case WireV2:
		return "messagingv2"
	case WireV1:
		return "messaging"
	}
	return fmt.Sprintf("WireFormat(%d)", int(f))
}

// Notification is one Nova versioned notification, reduced to what the agent
// uses. Unknown keys are ignored, as Nova's versioning rules require of
// consumers (a minor version bump only adds keys).
type Notification struct {
	Format    WireFormat
	MessageID string // oslo's uuid4 for this message; redeliveries repeat it
	EventType string // e.g. instance.live_migration_pre.start
	Priority  string // upper case, INFO or ERROR for Nova's events
	Publisher Publisher
	Timestamp time.Time // UTC, from the sender's clock
	Payload   Payload
}

// Publisher is publisher_id, "<binary>:<host>". Host is the host that sent
// the event, which for a live migration tells the source from the destination.
type Publisher struct {
	Binary string
	Host   string
}

func (p Publisher) String() string { return p.Binary + ":" + p.Host }

// Payload is the nova object primitive of the notification, with the fields of
// InstanceActionPayload (1.8 in Zed, 1.9 adds shares), its volume variants
// and ComputeTaskPayload that the agent needs.
type Payload struct {
	Name    string // nova_object.name, e.g. InstanceActionPayload
	Version string // nova_object.version, e.g. 1.9
	// Unread is set for a payload the agent does not read, at a major
	// version other than 1 (Zed's InstanceUpdatePayload and
	// InstanceExistsPayload are at 2.x): only Name and Version are set.
	Unread bool

	// InstanceUUID is uuid (instance payloads) or instance_uuid (ComputeTaskPayload).
	InstanceUUID string
	// Host is instance.host when the event was sent: the source during a live
	// migration until post_dest.end, where it is the destination. Empty for null.
	Host      string
	Node      string
	State     string
	TaskState string // empty for null
	// VolumeID is set for volume attach/detach, Old/NewVolumeID for swap.
	VolumeID     string
	OldVolumeID  string
	NewVolumeID  string
	BlockDevices []BlockDevice // nil when bdms_in_notifications is off
	// Fault is fault (instance payloads) or reason (ComputeTaskPayload).
	Fault *Fault
}

// BlockDevice is one BlockDevicePayload.
type BlockDevice struct {
	VolumeID            string
	DeviceName          string
	BootIndex           *int
	DeleteOnTermination bool
}

// Fault is an ExceptionPayload.
type Fault struct {
	Exception string
	Message   string
	Function  string
	Module    string
}

// ParseError is a message that is not a usable Nova notification. Field
// names the offending key as a path ("payload.nova_object.data.uuid") or is
// empty when the message as a whole is at fault. Kind is one of ErrNotJSON,
// ErrEnvelope, ErrMissing, ErrInvalid or ErrTooLarge, for errors.Is.
type ParseError struct {
	Kind  error
	Field string
	Err   error // detail, may be nil
}

func (e *ParseError) Error() string {
	var b strings.Builder
	b.WriteString("nova notification: ")
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Kind.Error())
	if e.Err != nil {
		b.WriteString(": " + e.Err.Error())
	}
	return b.String()
}

func (e *ParseError) Is(target error) bool { return target == e.Kind }
func (e *ParseError) Unwrap() error        { return e.Err }

// Kinds of ParseError.
var (
	ErrTooLarge = errors.New("message too large")
	ErrNotJSON  = errors.New("not a JSON object")
	ErrEnvelope = errors.New("unsupported oslo envelope")
	ErrMissing  = errors.New("missing")
	ErrInvalid  = errors.New("invalid")
)

// osloVersion is the only envelope version oslo.messaging 14 writes and, by
// its own compatibility rule (same major, minor not newer), reads.
const osloVersion = "2.0"

// Parse decodes one AMQP message body as Nova sends it, in either wire format.
func Parse(body []byte) (Notification, error) {
	if len(body) > MaxBodySize {
		return Notification{}, &ParseError{Kind: ErrTooLarge, Err: fmt.Errorf("%d bytes, limit %d", len(body), MaxBodySize)}
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil || top == nil {
		return Notification{}, &ParseError{Kind: ErrNotJSON, Err: err}
	}
	format := WireV1
	inner := body
	if rawVer, ok := top["oslo.version"]; ok {
		var ver string
		if err := json.Unmarshal(rawVer, &ver); err != nil {
			return Notification{}, &ParseError{Kind: ErrEnvelope, Field: "oslo.version", Err: err}
		}
		if ver != osloVersion {
			return Notification{}, &ParseError{Kind: ErrEnvelope, Field: "oslo.version", Err: fmt.Errorf("%q, want %q", ver, osloVersion)}
		}
		var msg string
		rawMsg, ok := top["oslo.message"]
		if !ok {
			return Notification{}, &ParseError{Kind: ErrMissing, Field: "oslo.message"}
		}
		if err := json.Unmarshal(rawMsg, &msg); err != nil {
			return Notification{}, &ParseError{Kind: ErrEnvelope, Field: "oslo.message", Err: errors.New("not a string")}
		}
		format, inner = WireV2, []byte(msg)
	} else if _, ok := top["oslo.message"]; ok {
		return Notification{}, &ParseError{Kind: ErrEnvelope, Field: "oslo.version", Err: errors.New("oslo.message without a version")}
	}
	n, err := parseMessage(inner)
	if err != nil {
		return Notification{}, err
	}
	n.Format = format
	return n, nil
}

// wireMessage is the oslo message dict. The _context_* and _unique_id keys
// are not decoded.
type wireMessage struct {
	MessageID   *string          `json:"message_id"`
	PublisherID *string          `json:"publisher_id"`
	EventType   *string          `json:"event_type"`
	Priority    *string          `json:"priority"`
	Timestamp   *string          `json:"timestamp"`
	Payload     *json.RawMessage `json:"payload"`
}

type wireObject struct {
	Name    string           `json:"nova_object.name"`
	Version string           `json:"nova_object.version"`
	Data    *json.RawMessage `json:"nova_object.data"`
}

type wirePayload struct {
	UUID         string       `json:"uuid"`
	InstanceUUID string       `json:"instance_uuid"`
	Host         *string      `json:"host"`
	Node         *string      `json:"node"`
	State        *string      `json:"state"`
	TaskState    *string      `json:"task_state"`
	VolumeID     string       `json:"volume_id"`
	OldVolumeID  string       `json:"old_volume_id"`
	NewVolumeID  string       `json:"new_volume_id"`
	BlockDevices []wireObject `json:"block_devices"`
	Fault        *wireObject  `json:"fault"`
	Reason       *wireObject  `json:"reason"`
}

type wireBDM struct {
	VolumeID            string  `json:"volume_id"`
	DeviceName          *string `json:"device_name"`
	BootIndex           *int    `json:"boot_index"`
	DeleteOnTermination bool    `json:"delete_on_termination"`
}

type wireFault struct {
	Exception string `json:"exception"`
	Message   string `json:"exception_message"`
	Function  string `json:"function_name"`
	Module    string `json:"module_name"`
}

// decodeField unmarshals raw into v and reports type errors under path.
func decodeField(raw []byte, v any, path string) error {
	if err := json.Unmarshal(raw, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return &ParseError{Kind: ErrInvalid, Field: path + "." + te.Field, Err: fmt.Errorf("%s where %s was expected", te.Value, te.Type)}
		}
		return &ParseError{Kind: ErrInvalid, Field: path, Err: err}
	}
	return nil
}

func parseMessage(b []byte) (Notification, error) {
	if t := bytes.TrimSpace(b); len(t) == 0 || t[0] != '{' || !json.Valid(t) {
		return Notification{}, &ParseError{Kind: ErrNotJSON, Field: "oslo.message"}
	}
	var m wireMessage
	if err := decodeField(b, &m, "message"); err != nil {
		return Notification{}, err
	}
	required := []struct {
		name string
		v    *string
	}{{"message_id", m.MessageID}, {"publisher_id", m.PublisherID}, {"event_type", m.EventType}, {"priority", m.Priority}, {"timestamp", m.Timestamp}}
	for _, r := range required {
		if r.v == nil || *r.v == "" {
			return Notification{}, &ParseError{Kind: ErrMissing, Field: r.name}
		}
	}
	if m.Payload == nil {
		return Notification{}, &ParseError{Kind: ErrMissing, Field: "payload"}
	}
	ts, err := ParsePythonTime(*m.Timestamp)
	if err != nil {
		return Notification{}, &ParseError{Kind: ErrInvalid, Field: "timestamp", Err: err}
	}
	n := Notification{
		MessageID: *m.MessageID,
		EventType: *m.EventType,
		Priority:  strings.ToUpper(*m.Priority),
		Timestamp: ts,
	}
	n.Publisher.Binary, n.Publisher.Host, _ = strings.Cut(*m.PublisherID, ":")
	if n.Payload, err = parsePayload(*m.Payload); err != nil {
		return Notification{}, err
	}
	if strings.HasPrefix(n.EventType, "instance.") && n.Payload.InstanceUUID == "" && !n.Payload.Unread {
		return Notification{}, &ParseError{Kind: ErrMissing, Field: "payload.nova_object.data.uuid"}
	}
	return n, nil
}

func parsePayload(raw json.RawMessage) (Payload, error) {
	var obj wireObject
	if err := decodeField(raw, &obj, "payload"); err != nil {
		return Payload{}, err
	}
	if obj.Name == "" || obj.Data == nil {
		// Versioned notifications always carry a nova object; a bare dict is
		// a legacy (unversioned) notification on the wrong topic.
		return Payload{}, &ParseError{Kind: ErrMissing, Field: "payload.nova_object.data"}
	}
	if major, _, _ := strings.Cut(obj.Version, "."); major != "1" {
		if !strings.HasPrefix(obj.Name, "InstanceAction") && obj.Name != "ComputeTaskPayload" {
			// Not a payload of the events the agent acts on: passed on
			// to be ignored, not set aside as unparseable.
			return Payload{Name: obj.Name, Version: obj.Version, Unread: true}, nil
		}
		// Every payload the agent reads is at major version 1; a new major
		// version may change the meaning of the keys read here.
		return Payload{}, &ParseError{Kind: ErrInvalid, Field: "payload.nova_object.version", Err: fmt.Errorf("%s %q, want 1.x", obj.Name, obj.Version)}
	}
	var d wirePayload
	if err := decodeField(*obj.Data, &d, "payload.nova_object.data"); err != nil {
		return Payload{}, err
	}
	p := Payload{
		Name: obj.Name, Version: obj.Version,
		InstanceUUID: d.UUID,
		Host:         deref(d.Host), Node: deref(d.Node), State: deref(d.State), TaskState: deref(d.TaskState),
		VolumeID: d.VolumeID, OldVolumeID: d.OldVolumeID, NewVolumeID: d.NewVolumeID,
	}
	if p.InstanceUUID == "" {
		p.InstanceUUID = d.InstanceUUID
	}
	for i, o := range d.BlockDevices {
		if o.Data == nil {
			return Payload{}, &ParseError{Kind: ErrMissing, Field: fmt.Sprintf("payload.nova_object.data.block_devices[%d].nova_object.data", i)}
		}
		var b wireBDM
		if err := decodeField(*o.Data, &b, fmt.Sprintf("payload.nova_object.data.block_devices[%d]", i)); err != nil {
			return Payload{}, err
		}
		p.BlockDevices = append(p.BlockDevices, BlockDevice{VolumeID: b.VolumeID, DeviceName: deref(b.DeviceName), BootIndex: b.BootIndex, DeleteOnTermination: b.DeleteOnTermination})
	}
	fault, field := d.Fault, "fault"
	if fault == nil {
		fault, field = d.Reason, "reason"
	}
	if fault != nil && fault.Data != nil {
		var f wireFault
		if err := decodeField(*fault.Data, &f, "payload.nova_object.data."+field); err != nil {
			return Payload{}, err
		}
		p.Fault = &Fault{Exception: f.Exception, Message: f.Message, Function: f.Function, Module: f.Module}
	}
	return p, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// ParsePythonTime parses str(datetime) as oslo writes timestamps:
// "2026-11-26 05:20:11.688933", with the fraction left out when the
// microseconds are 0 and no zone (naive UTC). An explicit offset and the ISO
// "T" separator are accepted too.
func ParsePythonTime(s string) (time.Time, error) {
	for _, layout := range []string{
		"2006-01-02 15:04:05.999999999",
		"2006-01-02 15:04:05.999999999Z07:00",
		"2006-01-02T15:04:05.999999999",
		time.RFC3339Nano,
	} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("not a Python datetime: %q", s)
}
