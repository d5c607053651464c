package cinderbridge

import "fmt"

// Problem says what is wrong with one key of a connection_info or connector.
type Problem int

// The problems a FieldError reports.
const (
	// Missing: a required key is absent (or JSON null).
	Missing Problem = iota + 1
	// WrongType: the key holds another JSON type than the one expected.
	WrongType
	// BadValue: the type is right but the value is not acceptable.
	BadValue
	// LengthMismatch: parallel lists (portals/IQNs/LUNs, WWNs/LUNs) differ
	// in length.
	LengthMismatch
	// OutOfRange: a number (a LUN, a block size) is outside its range.
	OutOfRange
)

func (p Problem) String() string {
	switch p {
	case Missing:
		return "missing"
	case WrongType:
		return "wrong type"
	case BadValue:
		return "bad value"
	case LengthMismatch:
		return "length mismatch"
	case OutOfRange:
		return "out of range"
	}
	return fmt.Sprintf("Problem(%d)", int(p))
}

// FieldError reports one bad key. Key is the path of the key as written in
// the input ("data.target_luns[2]", "target_wwn", "wwpns[0]"), so that an
// operator can find it in Cinder's answer. Callers branch on Problem with
// errors.As, never on the text.
type FieldError struct {
	Key     string
	Problem Problem
	Detail  string
}

func (e *FieldError) Error() string {
	if e.Detail == "" {
		return fmt.Sprintf("%s: %s", e.Key, e.Problem)
	}
	return fmt.Sprintf("%s: %s: %s", e.Key, e.Problem, e.Detail)
}
