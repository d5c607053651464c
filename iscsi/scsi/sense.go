package scsi

import (
	"encoding/binary"
	"fmt"
)

// SenseKey is the SENSE KEY of sense data (SPC-4 §4.5.6, table 27). It
// implements error so that errors.Is(err, SenseIllegalRequest) matches any
// *SenseError carrying that key.
type SenseKey uint8

// Sense keys (SPC-4 table 27).
const (
	SenseNoSense        SenseKey = 0x0
	SenseRecoveredError SenseKey = 0x1
	SenseNotReady       SenseKey = 0x2
	SenseMediumError    SenseKey = 0x3
	SenseHardwareError  SenseKey = 0x4
	SenseIllegalRequest SenseKey = 0x5
	SenseUnitAttention  SenseKey = 0x6
	SenseDataProtect    SenseKey = 0x7
	SenseBlankCheck     SenseKey = 0x8
	SenseVendorSpecific SenseKey = 0x9
	SenseCopyAborted    SenseKey = 0xa
	SenseAbortedCommand SenseKey = 0xb
	SenseVolumeOverflow SenseKey = 0xd
	SenseMiscompare     SenseKey = 0xe
	SenseCompleted      SenseKey = 0xf
)

func (k SenseKey) String() string {
	switch k {
	case SenseNoSense:
		return "NO SENSE"
	case SenseRecoveredError:
		return "RECOVERED ERROR"
	case SenseNotReady:
		return "NOT READY"
	case SenseMediumError:
		return "MEDIUM ERROR"
	case SenseHardwareError:
		return "HARDWARE ERROR"
	case SenseIllegalRequest:
		return "ILLEGAL REQUEST"
	case SenseUnitAttention:
		return "UNIT ATTENTION"
	case SenseDataProtect:
		return "DATA PROTECT"
	case SenseBlankCheck:
		return "BLANK CHECK"
	case SenseVendorSpecific:
		return "VENDOR SPECIFIC"
	case SenseCopyAborted:
		return "COPY ABORTED"
	case SenseAbortedCommand:
		return "ABORTED COMMAND"
	case SenseVolumeOverflow:
		return "VOLUME OVERFLOW"
	case SenseMiscompare:
		return "MISCOMPARE"
	case SenseCompleted:
		return "COMPLETED"
	}
	return fmt.Sprintf("SENSE KEY 0x%x", uint8(k))
}

// Error makes a SenseKey usable as an errors.Is target.
func (k SenseKey) Error() string { return k.String() }

// AdditionalSense is the ADDITIONAL SENSE CODE in the high byte and the
// ADDITIONAL SENSE CODE QUALIFIER in the low byte (SPC-4 §4.5.6, table 28).
// It implements error so that errors.Is(err, ASCLBAOutOfRange) matches.
type AdditionalSense uint16

// The additional sense codes this package produces or that initiators
// commonly test for (SPC-4 table 28).
const (
	ASCNoAdditionalSense             AdditionalSense = 0x0000
	ASCLUCommunicationFailure        AdditionalSense = 0x0800
	ASCWriteError                    AdditionalSense = 0x0c00
	ASCInvalidFieldInInformationUnit AdditionalSense = 0x0e03
	ASCUnrecoveredReadError          AdditionalSense = 0x1100
	ASCParameterListLengthError      AdditionalSense = 0x1a00
	ASCMiscompareDuringVerify        AdditionalSense = 0x1d00
	ASCInvalidCommandOperationCode   AdditionalSense = 0x2000
	ASCLBAOutOfRange                 AdditionalSense = 0x2100
	ASCInvalidFieldInCDB             AdditionalSense = 0x2400
	ASCLUNotSupported                AdditionalSense = 0x2500
	ASCInvalidFieldInParameterList   AdditionalSense = 0x2600
	ASCInvalidReleaseOfPR            AdditionalSense = 0x2604
	ASCWriteProtected                AdditionalSense = 0x2700
	ASCPowerOnOrReset                AdditionalSense = 0x2900
	ASCSavingParametersNotSupported  AdditionalSense = 0x3900
	ASCInternalTargetFailure         AdditionalSense = 0x4400
)

// ASC is the additional sense code.
func (a AdditionalSense) ASC() uint8 { return uint8(a >> 8) }

// ASCQ is the additional sense code qualifier.
func (a AdditionalSense) ASCQ() uint8 { return uint8(a) }

func (a AdditionalSense) String() string {
	return fmt.Sprintf("%s (0x%02x/0x%02x)", a.name(), a.ASC(), a.ASCQ())
}

func (a AdditionalSense) name() string {
	switch a {
	case ASCNoAdditionalSense:
		return "NO ADDITIONAL SENSE INFORMATION"
	case ASCLUCommunicationFailure:
		return "LOGICAL UNIT COMMUNICATION FAILURE"
	case ASCWriteError:
		return "WRITE ERROR"
	case ASCInvalidFieldInInformationUnit:
		return "INVALID FIELD IN INFORMATION UNIT"
	case ASCUnrecoveredReadError:
		return "UNRECOVERED READ ERROR"
	case ASCParameterListLengthError:
		return "PARAMETER LIST LENGTH ERROR"
	case ASCMiscompareDuringVerify:
		return "MISCOMPARE DURING VERIFY OPERATION"
	case ASCInvalidCommandOperationCode:
		return "INVALID COMMAND OPERATION CODE"
	case ASCLBAOutOfRange:
		return "LOGICAL BLOCK ADDRESS OUT OF RANGE"
	case ASCInvalidFieldInCDB:
		return "INVALID FIELD IN CDB"
	case ASCLUNotSupported:
		return "LOGICAL UNIT NOT SUPPORTED"
	case ASCInvalidFieldInParameterList:
		return "INVALID FIELD IN PARAMETER LIST"
	case ASCInvalidReleaseOfPR:
		return "INVALID RELEASE OF PERSISTENT RESERVATION"
	case ASCWriteProtected:
		return "WRITE PROTECTED"
	case ASCPowerOnOrReset:
		return "POWER ON, RESET, OR BUS DEVICE RESET OCCURRED"
	case ASCSavingParametersNotSupported:
		return "SAVING PARAMETERS NOT SUPPORTED"
	case ASCInternalTargetFailure:
		return "INTERNAL TARGET FAILURE"
	}
	return "ASC/ASCQ"
}

// Error makes an AdditionalSense usable as an errors.Is target.
func (a AdditionalSense) Error() string { return a.String() }

// Sense is decoded sense data, in either format.
type Sense struct {
	Key  SenseKey
	Code AdditionalSense
	// Deferred marks a deferred error (response code 0x71/0x73) rather
	// than one of the command it is returned with.
	Deferred bool
	// Information is valid only with InformationValid (SPC-4 §4.5.2.2):
	// the first LBA in error, or the offset of a miscompare.
	Information      uint64
	InformationValid bool
	// SenseKeySpecific holds the three SENSE KEY SPECIFIC bytes; the SKSV
	// bit (byte 0 bit 7) says whether they are valid (SPC-4 §4.5.2.4).
	SenseKeySpecific [3]byte
}

// Sense data formats and lengths (SPC-4 §4.5.2, §4.5.3).
const (
	senseFixedCurrent    = 0x70
	senseFixedDeferred   = 0x71
	senseDescCurrent     = 0x72
	senseDescDeferred    = 0x73
	fixedSenseLen        = 18
	descInformation      = 0x00
	descSenseKeySpecific = 0x02
	sksValid             = 0x80
	fieldPointerCD       = 0x40
	fieldPointerBPV      = 0x08
)

// FieldPointer returns the sense-key-specific field pointer of an
// ILLEGAL REQUEST (SPC-4 §4.5.2.4.2): whether it points into the CDB
// (rather than the parameter list), the byte, and the bit or -1 if the
// whole byte is meant. ok is false when the sense carries no pointer.
func (s Sense) FieldPointer() (inCDB bool, byteOff uint16, bit int, ok bool) {
	b := s.SenseKeySpecific
	if s.Key != SenseIllegalRequest || b[0]&sksValid == 0 {
		return false, 0, 0, false
	}
	bit = -1
	if b[0]&fieldPointerBPV != 0 {
		bit = int(b[0] & 7)
	}
	return b[0]&fieldPointerCD != 0, binary.BigEndian.Uint16(b[1:]), bit, true
}

// withFieldPointer sets the field pointer to byte off (and bit, unless it
// is negative) of the CDB or of the parameter list.
func (s Sense) withFieldPointer(inCDB bool, off int, bit int) Sense {
	b := byte(sksValid)
	if inCDB {
		b |= fieldPointerCD
	}
	if bit >= 0 {
		b |= fieldPointerBPV | byte(bit&7)
	}
	s.SenseKeySpecific = [3]byte{b, byte(off >> 8), byte(off)}
	return s
}

// Fixed encodes s as fixed-format sense data (SPC-4 §4.5.3), the format
// the target returns: the DESC bit of the control mode page is 0. An
// Information that does not fit the 4-byte field is left out (not valid).
func (s Sense) Fixed() []byte {
	b := make([]byte, fixedSenseLen)
	b[0] = senseFixedCurrent
	if s.Deferred {
		b[0] = senseFixedDeferred
	}
	b[2] = byte(s.Key & 0xf)
	if s.InformationValid && s.Information <= 0xffffffff {
		b[0] |= 0x80 // VALID
		binary.BigEndian.PutUint32(b[3:], uint32(s.Information))
	}
	b[7] = fixedSenseLen - 8
	b[12], b[13] = s.Code.ASC(), s.Code.ASCQ()
	copy(b[15:], s.SenseKeySpecific[:])
	return b
}

// Descriptor encodes s as descriptor-format sense data (SPC-4 §4.5.2)
// with an information descriptor and a sense-key-specific descriptor when
// they are valid.
func (s Sense) Descriptor() []byte {
	b := make([]byte, 8, 8+12+8)
	b[0] = senseDescCurrent
	if s.Deferred {
		b[0] = senseDescDeferred
	}
	b[1] = byte(s.Key & 0xf)
	b[2], b[3] = s.Code.ASC(), s.Code.ASCQ()
	if s.InformationValid {
		b = append(b, descInformation, 0x0a, 0x80, 0)
		b = binary.BigEndian.AppendUint64(b, s.Information)
	}
	if s.SenseKeySpecific[0]&sksValid != 0 {
		b = append(b, descSenseKeySpecific, 0x06, 0, 0)
		b = append(b, s.SenseKeySpecific[:]...)
		b = append(b, 0)
	}
	b[7] = byte(len(b) - 8)
	return b
}

// ParseSense decodes fixed (0x70/0x71) or descriptor (0x72/0x73) format
// sense data, as returned with CHECK CONDITION or by REQUEST SENSE. It
// reads only what the ADDITIONAL SENSE LENGTH and len(b) both cover.
func ParseSense(b []byte) (Sense, error) {
	if len(b) < 1 {
		return Sense{}, ErrShortData
	}
	var s Sense
	switch b[0] & 0x7f {
	case senseFixedCurrent, senseFixedDeferred:
		if len(b) < 14 {
			return Sense{}, ErrShortData
		}
		s.Deferred = b[0]&0x7f == senseFixedDeferred
		s.Key = SenseKey(b[2] & 0xf)
		s.InformationValid = b[0]&0x80 != 0
		s.Information = uint64(binary.BigEndian.Uint32(b[3:]))
		end := min(len(b), 8+int(b[7]))
		if end < 14 {
			return Sense{}, ErrShortData
		}
		s.Code = AdditionalSense(b[12])<<8 | AdditionalSense(b[13])
		if end >= 18 {
			copy(s.SenseKeySpecific[:], b[15:18])
		}
	case senseDescCurrent, senseDescDeferred:
		if len(b) < 8 {
			return Sense{}, ErrShortData
		}
		s.Deferred = b[0]&0x7f == senseDescDeferred
		s.Key = SenseKey(b[1] & 0xf)
		s.Code = AdditionalSense(b[2])<<8 | AdditionalSense(b[3])
		d := b[8:min(len(b), 8+int(b[7]))]
		for len(d) >= 2 {
			n := 2 + int(d[1])
			if n > len(d) {
				return Sense{}, ErrShortData
			}
			switch d[0] {
			case descInformation:
				if n >= 12 {
					s.InformationValid = d[2]&0x80 != 0
					s.Information = binary.BigEndian.Uint64(d[4:])
				}
			case descSenseKeySpecific:
				if n >= 7 {
					copy(s.SenseKeySpecific[:], d[4:7])
				}
			}
			d = d[n:]
		}
	default:
		return Sense{}, fmt.Errorf("scsi: unknown sense response code 0x%02x", b[0]&0x7f)
	}
	return s, nil
}

// SenseError is a command that ended in CHECK CONDITION, as a Go error.
// errors.Is matches it against a SenseKey, an AdditionalSense, or another
// *SenseError with the same key and code:
//
//	if errors.Is(err, scsi.ASCLBAOutOfRange) { ... }
//	var se *scsi.SenseError
//	if errors.As(err, &se) { log(se.Sense.Information) }
type SenseError struct {
	Sense Sense
}

func (e *SenseError) Error() string {
	return e.Sense.Key.String() + ": " + e.Sense.Code.String()
}

// Is reports whether target is e's sense key, e's additional sense code,
// or a *SenseError with e's key and code.
func (e *SenseError) Is(target error) bool {
	switch t := target.(type) {
	case SenseKey:
		return e.Sense.Key == t
	case AdditionalSense:
		return e.Sense.Code == t
	case *SenseError:
		return e.Sense.Key == t.Sense.Key && e.Sense.Code == t.Sense.Code
	}
	return false
}

// StatusError is a command that ended with a status other than GOOD and
// CHECK CONDITION (e.g. TASK ABORTED, RESERVATION CONFLICT, BUSY), or with
// CHECK CONDITION but no usable sense data.
type StatusError struct {
	Status uint8
}

func (e *StatusError) Error() string {
	switch e.Status {
	case StatusCheckCondition:
		return "scsi: CHECK CONDITION without sense data"
	case StatusConditionMet:
		return "scsi: CONDITION MET"
	case StatusBusy:
		return "scsi: BUSY"
	case StatusReservationConflict:
		return "scsi: RESERVATION CONFLICT"
	case StatusTaskSetFull:
		return "scsi: TASK SET FULL"
	case StatusACAActive:
		return "scsi: ACA ACTIVE"
	case StatusTaskAborted:
		return "scsi: TASK ABORTED"
	}
	return fmt.Sprintf("scsi: status 0x%02x", e.Status)
}

// CheckStatus turns a command's status and sense data, as the initiator
// receives them, into an error: nil for GOOD, a *SenseError for CHECK
// CONDITION with sense data, a *StatusError otherwise. Sense data with
// the RECOVERED ERROR or COMPLETED key is not an error (SPC-4 §4.5.6).
func CheckStatus(status uint8, sense []byte) error {
	switch status {
	case StatusGood, StatusConditionMet:
		return nil
	case StatusCheckCondition:
		s, err := ParseSense(sense)
		if err != nil {
			return &StatusError{Status: status}
		}
		if s.Key == SenseRecoveredError || s.Key == SenseCompleted {
			return nil
		}
		return &SenseError{Sense: s}
	}
	return &StatusError{Status: status}
}
