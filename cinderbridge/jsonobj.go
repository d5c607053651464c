package cinderbridge

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// object is one JSON object being read key by key. Python's json module
// writes the dicts Cinder and os-brick build, so a key may be absent, null,
// or of a type the reader did not expect; every accessor reports which key
// was wrong, with its path, as a *FieldError.
type object struct {
	path string // prefix of every key: "" or "data."
	m    map[string]json.RawMessage
}

// parseObject decodes b as a JSON object. what names it in errors.
func parseObject(b []byte, path, what string) (object, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return object{}, fmt.Errorf("%s is not a JSON object: %w", what, err)
	}
	if m == nil { // the literal null
		return object{}, &FieldError{Key: strings.TrimSuffix(path, "."), Problem: WrongType, Detail: "null, want an object"}
	}
	return object{path: path, m: m}, nil
}

func (o object) key(k string) string { return o.path + k }

// value returns the decoded value of k, with numbers as json.Number; ok is
// false when k is absent or null (Cinder writes None for "not set", e.g.
// qos_specs).
func (o object) value(k string) (v any, ok bool, err error) {
	raw, present := o.m[k]
	if !present {
		return nil, false, nil
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		return nil, false, &FieldError{Key: o.key(k), Problem: BadValue, Detail: err.Error()}
	}
	return v, v != nil, nil
}

func typeName(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case json.Number:
		return "number"
	case bool:
		return "boolean"
	case []any:
		return "list"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

func wrongType(key string, v any, want string) error {
	return &FieldError{Key: key, Problem: WrongType, Detail: fmt.Sprintf("%s, want %s", typeName(v), want)}
}

// str reads an optional string.
func (o object) str(k string) (string, bool, error) {
	v, ok, err := o.value(k)
	if err != nil || !ok {
		return "", false, err
	}
	s, isStr := v.(string)
	if !isStr {
		return "", false, wrongType(o.key(k), v, "string")
	}
	return s, true, nil
}

// requiredStr reads a string that must be present and non-empty.
func (o object) requiredStr(k string) (string, error) {
	s, ok, err := o.str(k)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", &FieldError{Key: o.key(k), Problem: Missing}
	}
	if s == "" {
		return "", &FieldError{Key: o.key(k), Problem: BadValue, Detail: "empty string"}
	}
	return s, nil
}

// boolean reads an optional boolean; absent and null read as false.
func (o object) boolean(k string) (bool, error) {
	v, ok, err := o.value(k)
	if err != nil || !ok {
		return false, err
	}
	b, isBool := v.(bool)
	if !isBool {
		return false, wrongType(o.key(k), v, "boolean")
	}
	return b, nil
}

// stringList reads an optional list of strings.
func (o object) stringList(k string) ([]string, bool, error) {
	v, ok, err := o.value(k)
	if err != nil || !ok {
		return nil, false, err
	}
	l, isList := v.([]any)
	if !isList {
		return nil, false, wrongType(o.key(k), v, "list of strings")
	}
	out := make([]string, len(l))
	for i, e := range l {
		s, isStr := e.(string)
		if !isStr {
			return nil, false, wrongType(fmt.Sprintf("%s[%d]", o.key(k), i), e, "string")
		}
		out[i] = s
	}
	return out, true, nil
}

// stringOrList reads a key that drivers fill with either one string or a
// list of strings (target_wwn, see cinder/volume/driver.py
// FibreChannelDriver.initialize_connection).
func (o object) stringOrList(k string) ([]string, bool, error) {
	v, ok, err := o.value(k)
	if err != nil || !ok {
		return nil, false, err
	}
	if s, isStr := v.(string); isStr {
		return []string{s}, true, nil
	}
	if _, isList := v.([]any); !isList {
		return nil, false, wrongType(o.key(k), v, "string or list of strings")
	}
	return o.stringList(k)
}

// intValue converts a decoded JSON value to an int. Decimal strings are
// accepted because os-brick int()s LUNs (linuxscsi.process_lun_id) and
// Cinder sends block sizes as strings (manager._set_connection_block_size).
func intValue(key string, v any) (int64, error) {
	var text string
	switch x := v.(type) {
	case json.Number:
		text = x.String()
	case string:
		text = strings.TrimSpace(x)
	default:
		return 0, wrongType(key, v, "integer")
	}
	n, err := strconv.ParseInt(text, 10, 64)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) {
			return 0, &FieldError{Key: key, Problem: OutOfRange, Detail: fmt.Sprintf("%q", text)}
		}
		return 0, &FieldError{Key: key, Problem: BadValue, Detail: fmt.Sprintf("%q is not an integer", text)}
	}
	return n, nil
}

// integer reads an optional integer.
func (o object) integer(k string) (int64, bool, error) {
	v, ok, err := o.value(k)
	if err != nil || !ok {
		return 0, false, err
	}
	n, err := intValue(o.key(k), v)
	return n, err == nil, err
}

// intList reads an optional list of integers.
func (o object) intList(k string) ([]int64, bool, error) {
	v, ok, err := o.value(k)
	if err != nil || !ok {
		return nil, false, err
	}
	l, isList := v.([]any)
	if !isList {
		return nil, false, wrongType(o.key(k), v, "list of integers")
	}
	out := make([]int64, len(l))
	for i, e := range l {
		n, err := intValue(fmt.Sprintf("%s[%d]", o.key(k), i), e)
		if err != nil {
			return nil, false, err
		}
		out[i] = n
	}
	return out, true, nil
}
