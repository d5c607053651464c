package scsi

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

func TestSenseFixedGolden(t *testing.T) {
	s := Sense{Key: SenseIllegalRequest, Code: ASCInvalidFieldInCDB}.withFieldPointer(true, 2, 7)
	s.Information, s.InformationValid = 0x01020304, true
	want := []byte{0xf0, 0, 0x05, 1, 2, 3, 4, 10, 0, 0, 0, 0, 0x24, 0x00, 0, 0xcf, 0, 2}
	if got := s.Fixed(); !bytes.Equal(got, want) {
		t.Fatalf("Fixed = % x, want % x", got, want)
	}
	got, err := ParseSense(want)
	if err != nil || got != s {
		t.Fatalf("ParseSense = %+v, %v; want %+v", got, err, s)
	}
	inCDB, off, bit, ok := got.FieldPointer()
	if !inCDB || off != 2 || bit != 7 || !ok {
		t.Errorf("FieldPointer = %v %d %d %v", inCDB, off, bit, ok)
	}
}

func TestSenseDescriptorGolden(t *testing.T) {
	s := Sense{Key: SenseMiscompare, Code: ASCMiscompareDuringVerify, Information: 0x1_0000_0005, InformationValid: true}
	want := []byte{0x72, 0x0e, 0x1d, 0x00, 0, 0, 0, 12,
		0x00, 0x0a, 0x80, 0, 0, 0, 0, 1, 0, 0, 0, 5}
	if got := s.Descriptor(); !bytes.Equal(got, want) {
		t.Fatalf("Descriptor = % x, want % x", got, want)
	}
	got, err := ParseSense(want)
	if err != nil || got != s {
		t.Fatalf("ParseSense = %+v, %v; want %+v", got, err, s)
	}
	// The fixed format cannot hold a 64-bit information field: VALID is 0.
	if f := s.Fixed(); f[0] != 0x70 {
		t.Errorf("fixed with 64-bit information: response code 0x%02x", f[0])
	}
	s2 := Sense{Key: SenseIllegalRequest, Code: ASCInvalidFieldInParameterList}.withFieldPointer(false, 300, -1)
	if got, err := ParseSense(s2.Descriptor()); err != nil || got != s2 {
		t.Errorf("descriptor round trip with SKS: %+v %v", got, err)
	}
	if _, _, _, ok := (Sense{Key: SenseMediumError}).FieldPointer(); ok {
		t.Error("FieldPointer without SKSV reported ok")
	}
}

func TestParseSenseRejects(t *testing.T) {
	for _, b := range [][]byte{
		nil,
		{0x70, 0, 5},
		{0x70, 0, 5, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0x24, 0}, // additional length too short for ASC
		{0x72, 5, 0x24},
		{0x72, 5, 0x24, 0, 0, 0, 0, 4, 0x00, 0x0a, 0x80, 0}, // descriptor overruns
		{0x7f, 0, 0, 0},
	} {
		if s, err := ParseSense(b); err == nil {
			t.Errorf("ParseSense(% x) = %+v, want error", b, s)
		}
	}
	// Deferred errors are recognised in both formats.
	for _, b := range [][]byte{{0x71, 0, 3, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x0c, 0, 0, 0, 0, 0}, {0x73, 3, 0x0c, 0, 0, 0, 0, 0}} {
		s, err := ParseSense(b)
		if err != nil || !s.Deferred || s.Key != SenseMediumError || s.Code != ASCWriteError {
			t.Errorf("ParseSense(% x) = %+v, %v", b, s, err)
		}
	}
}

func TestSenseError(t *testing.T) {
	var err error = fmt.Errorf("read lba 9: %w", &SenseError{Sense: Sense{Key: SenseIllegalRequest, Code: ASCLBAOutOfRange}})
	if got, want := errors.Unwrap(err).Error(), "ILLEGAL REQUEST: LOGICAL BLOCK ADDRESS OUT OF RANGE (0x21/0x00)"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	for _, tc := range []struct {
		target error
		want   bool
	}{
		{SenseIllegalRequest, true},
		{SenseMediumError, false},
		{ASCLBAOutOfRange, true},
		{ASCInvalidFieldInCDB, false},
		{&SenseError{Sense: Sense{Key: SenseIllegalRequest, Code: ASCLBAOutOfRange}}, true},
		{&SenseError{Sense: Sense{Key: SenseDataProtect, Code: ASCLBAOutOfRange}}, false},
		{errors.New("other"), false},
	} {
		if got := errors.Is(err, tc.target); got != tc.want {
			t.Errorf("errors.Is(err, %v) = %v, want %v", tc.target, got, tc.want)
		}
	}
	var se *SenseError
	if !errors.As(err, &se) || se.Sense.Code != ASCLBAOutOfRange {
		t.Errorf("errors.As: %v", se)
	}
	if got := (&SenseError{Sense: Sense{Key: 0xc, Code: 0x8080}}).Error(); got != "SENSE KEY 0xc: ASC/ASCQ (0x80/0x80)" {
		t.Errorf("unknown codes: %q", got)
	}
}

func TestCheckStatus(t *testing.T) {
	lbaOOR := Sense{Key: SenseIllegalRequest, Code: ASCLBAOutOfRange}.Fixed()
	recovered := Sense{Key: SenseRecoveredError}.Fixed()
	for _, tc := range []struct {
		status uint8
		sense  []byte
		want   error
	}{
		{StatusGood, nil, nil},
		{StatusCheckCondition, lbaOOR, ASCLBAOutOfRange},
		{StatusCheckCondition, recovered, nil},
		{StatusCheckCondition, nil, &StatusError{Status: StatusCheckCondition}},
		{StatusTaskAborted, nil, &StatusError{Status: StatusTaskAborted}},
		{StatusReservationConflict, nil, &StatusError{Status: StatusReservationConflict}},
	} {
		err := CheckStatus(tc.status, tc.sense)
		switch want := tc.want.(type) {
		case nil:
			if err != nil {
				t.Errorf("status %x: %v, want nil", tc.status, err)
			}
		case *StatusError:
			var se *StatusError
			if !errors.As(err, &se) || se.Status != want.Status {
				t.Errorf("status %x: %v, want %v", tc.status, err, want)
			}
		default:
			if !errors.Is(err, want) {
				t.Errorf("status %x: %v, want %v", tc.status, err, want)
			}
		}
	}
	if got := (&StatusError{Status: StatusTaskAborted}).Error(); got != "scsi: TASK ABORTED" {
		t.Errorf("Error() = %q", got)
	}
}
