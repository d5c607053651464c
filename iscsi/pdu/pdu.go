package pdu

import (
	"encoding/binary"
	"fmt"
)

// BHSLen is the length of the Basic Header Segment (§11.2.1).
const BHSLen = 48

// MaxDataSegmentLength is the largest data segment the 24-bit
// DataSegmentLength field can express.
const MaxDataSegmentLength = 1<<24 - 1

// Opcode is the 6-bit operation code of a PDU (§11.2.1.2).
type Opcode uint8

// Initiator opcodes (§11.2.1.2).
const (
	OpNOPOut          Opcode = 0x00
	OpSCSICommand     Opcode = 0x01
	OpTaskMgmtRequest Opcode = 0x02
	OpLoginRequest    Opcode = 0x03
	OpTextRequest     Opcode = 0x04
	OpDataOut         Opcode = 0x05
	OpLogoutRequest   Opcode = 0x06
	OpSNACKRequest    Opcode = 0x10
)

// Target opcodes (§11.2.1.2).
const (
	OpNOPIn            Opcode = 0x20
	OpSCSIResponse     Opcode = 0x21
	OpTaskMgmtResponse Opcode = 0x22
	OpLoginResponse    Opcode = 0x23
	OpTextResponse     Opcode = 0x24
	OpDataIn           Opcode = 0x25
	OpLogoutResponse   Opcode = 0x26
	OpR2T              Opcode = 0x31
	OpAsyncMessage     Opcode = 0x32
	OpReject           Opcode = 0x3f
)

var opcodeNames = map[Opcode]string{
	OpNOPOut: "NOP-Out", OpSCSICommand: "SCSI Command", OpTaskMgmtRequest: "Task Management Request",
	OpLoginRequest: "Login Request", OpTextRequest: "Text Request", OpDataOut: "SCSI Data-Out",
	OpLogoutRequest: "Logout Request", OpSNACKRequest: "SNACK Request", OpNOPIn: "NOP-In",
	OpSCSIResponse: "SCSI Response", OpTaskMgmtResponse: "Task Management Response",
	OpLoginResponse: "Login Response", OpTextResponse: "Text Response", OpDataIn: "SCSI Data-In",
	OpLogoutResponse: "Logout Response", OpR2T: "R2T", OpAsyncMessage: "Asynchronous Message",
	OpReject: "Reject",
}

func (o Opcode) String() string {
	if n, ok := opcodeNames[o]; ok {
		return n
	}
	return fmt.Sprintf("opcode 0x%02x", uint8(o))
}

// ReservedTag is the Initiator/Target Task Tag value 0xffffffff, meaning
// "no task" (§11.2.1.8, §11.18.3).
const ReservedTag = 0xffffffff

// BHS is a raw Basic Header Segment. Its accessors read the fields that
// sit at the same place in every PDU.
type BHS [BHSLen]byte

// Opcode returns the operation code.
func (h *BHS) Opcode() Opcode { return Opcode(h[0] & 0x3f) }

// Immediate reports the I bit (§11.2.1.2).
func (h *BHS) Immediate() bool { return h[0]&0x40 != 0 }

// Final reports the F bit.
func (h *BHS) Final() bool { return h[1]&0x80 != 0 }

// TotalAHSLength is the length of the additional header segments in bytes.
func (h *BHS) TotalAHSLength() int { return int(h[4]) * 4 }

// DataSegmentLength is the length of the data segment without padding.
func (h *BHS) DataSegmentLength() int {
	return int(h[5])<<16 | int(h[6])<<8 | int(h[7])
}

// ITT is the Initiator Task Tag.
func (h *BHS) ITT() uint32 { return h.u32(16) }

func (h *BHS) u32(off int) uint32 { return binary.BigEndian.Uint32(h[off:]) }
func (h *BHS) u16(off int) uint16 { return binary.BigEndian.Uint16(h[off:]) }

func (h *BHS) put32(off int, v uint32) { binary.BigEndian.PutUint32(h[off:], v) }
func (h *BHS) put16(off int, v uint16) { binary.BigEndian.PutUint16(h[off:], v) }

func (h *BHS) setLengths(ahs, data int) {
	h[4] = byte(ahs / 4)
	h[5], h[6], h[7] = byte(data>>16), byte(data>>8), byte(data)
}

func (h *BHS) setOpcode(op Opcode, immediate bool) {
	h[0] = byte(op)
	if immediate {
		h[0] |= 0x40
	}
}

// LUN is an 8-byte SAM logical unit number as carried in a PDU.
type LUN uint64

// LUNFromNumber encodes n with peripheral addressing (n < 256) or flat
// space addressing (n < 16384), as SAM-5 §4.7 and Linux do.
func LUNFromNumber(n uint16) LUN {
	if n < 256 {
		return LUN(uint64(n) << 48)
	}
	return LUN(uint64(0x4000|n&0x3fff) << 48)
}

// Number decodes the first level of a LUN in peripheral or flat space
// addressing; ok is false for other addressing methods.
func (l LUN) Number() (n uint16, ok bool) {
	first := uint16(l >> 48)
	switch first >> 14 {
	case 0: // peripheral device addressing: bus 0 only
		if first>>8 != 0 {
			return 0, false
		}
		return first & 0xff, true
	case 1: // flat space addressing
		return first & 0x3fff, true
	}
	return 0, false
}

func (h *BHS) lun() LUN       { return LUN(binary.BigEndian.Uint64(h[8:])) }
func (h *BHS) putLUN(l LUN)   { binary.BigEndian.PutUint64(h[8:], uint64(l)) }
func padLen(n int) int        { return (4 - n&3) & 3 }
func bit(b byte, m byte) bool { return b&m != 0 }
func flag(v bool, m byte) byte {
	if v {
		return m
	}
	return 0
}
