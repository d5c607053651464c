package pdu

import (
	"bytes"
	"fmt"
)

// Text key limits (§6.1).
const (
	maxKeyLen   = 63
	maxValueLen = 8192 // the largest value any key carries (CHAP_C/CHAP_R in hex are far below)
)

// KeyValue is one key=value pair of a Login or Text data segment.
type KeyValue struct{ Key, Value string }

// ParseText splits a data segment into its key=value pairs, in order.
// Every pair must be NUL-terminated (§6.1); trailing NUL padding is ignored.
func ParseText(data []byte) ([]KeyValue, error) {
	var kvs []KeyValue
	for len(data) > 0 {
		end := bytes.IndexByte(data, 0)
		if end < 0 {
			return nil, fmt.Errorf("text key=value pair %q is not NUL-terminated", trunc(data))
		}
		pair := data[:end]
		data = data[end+1:]
		if len(pair) == 0 {
			continue // padding
		}
		eq := bytes.IndexByte(pair, '=')
		if eq <= 0 {
			return nil, fmt.Errorf("text item %q is not key=value", trunc(pair))
		}
		key, value := pair[:eq], pair[eq+1:]
		if len(key) > maxKeyLen {
			return nil, fmt.Errorf("text key %q longer than %d bytes", trunc(key), maxKeyLen)
		}
		if len(value) > maxValueLen {
			return nil, fmt.Errorf("value of %s longer than %d bytes", key, maxValueLen)
		}
		for _, c := range key {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '+' || c == '@' || c == '_') {
				return nil, fmt.Errorf("text key %q has invalid character %q", trunc(key), c)
			}
		}
		kvs = append(kvs, KeyValue{string(key), string(value)})
	}
	return kvs, nil
}

// EncodeText renders pairs as a data segment.
func EncodeText(kvs []KeyValue) []byte {
	var b bytes.Buffer
	for _, kv := range kvs {
		b.WriteString(kv.Key)
		b.WriteByte('=')
		b.WriteString(kv.Value)
		b.WriteByte(0)
	}
	return b.Bytes()
}

func trunc(b []byte) []byte {
	if len(b) > 40 {
		return b[:40]
	}
	return b
}
