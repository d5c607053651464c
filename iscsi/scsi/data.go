package scsi

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// This file holds the parameter data that both sides of the wire use: the
// target encodes it, the initiator decodes it with the same code, so the
// two cannot disagree about a bit.

// ErrShortData is returned by the parsers (of sense data too) for data
// shorter than the fields they must decode.
var ErrShortData = errors.New("scsi: data truncated")

// Capacity is the READ CAPACITY(16) parameter data (SBC-3 §5.16.2).
type Capacity struct {
	// Blocks is the number of logical blocks (RETURNED LOGICAL BLOCK
	// ADDRESS + 1).
	Blocks    uint64
	BlockSize uint32
	// LogicalPerPhysicalExp is the LOGICAL BLOCKS PER PHYSICAL BLOCK
	// EXPONENT: a physical block holds 1<<LogicalPerPhysicalExp blocks.
	LogicalPerPhysicalExp uint8
	// LBPME: the unit is thin provisioned and supports UNMAP/WRITE SAME
	// with UNMAP; LBPRZ: unmapped blocks read as zeroes.
	LBPME, LBPRZ bool
}

const readCapacity16Len = 32

func (c Capacity) marshal16() []byte {
	b := make([]byte, readCapacity16Len)
	binary.BigEndian.PutUint64(b, c.Blocks-1)
	binary.BigEndian.PutUint32(b[8:], c.BlockSize)
	b[13] = c.LogicalPerPhysicalExp & 0x0f
	if c.LBPME {
		b[14] |= 0x80
	}
	if c.LBPRZ {
		b[14] |= 0x40
	}
	return b
}

// ParseReadCapacity16 decodes READ CAPACITY(16) parameter data.
func ParseReadCapacity16(b []byte) (Capacity, error) {
	if len(b) < 15 {
		return Capacity{}, ErrShortData
	}
	return Capacity{
		Blocks:                binary.BigEndian.Uint64(b) + 1,
		BlockSize:             binary.BigEndian.Uint32(b[8:]),
		LogicalPerPhysicalExp: b[13] & 0x0f,
		LBPME:                 b[14]&0x80 != 0,
		LBPRZ:                 b[14]&0x40 != 0,
	}, nil
}

// InquiryData is the part of standard INQUIRY data (SPC-4 §6.4.2) that an
// initiator acts on.
type InquiryData struct {
	// Qualifier is the PERIPHERAL QUALIFIER: 0 connected, 3 no logical unit
	// at this LUN.
	Qualifier uint8
	// DeviceType is the PERIPHERAL DEVICE TYPE: 0 for a block device.
	DeviceType uint8
	// Version is the claimed standard: 6 for SPC-4.
	Version uint8
	// CmdQue: the unit accepts more than one command at a time.
	CmdQue                    bool
	Vendor, Product, Revision string
}

// ParseInquiry decodes standard INQUIRY data; trailing spaces of the
// identification strings are trimmed.
func ParseInquiry(b []byte) (InquiryData, error) {
	if len(b) < 36 {
		return InquiryData{}, ErrShortData
	}
	return InquiryData{
		Qualifier:  b[0] >> 5,
		DeviceType: b[0] & 0x1f,
		Version:    b[2],
		CmdQue:     b[7]&0x02 != 0,
		Vendor:     strings.TrimRight(string(b[8:16]), " "),
		Product:    strings.TrimRight(string(b[16:32]), " "),
		Revision:   strings.TrimRight(string(b[32:36]), " "),
	}, nil
}

// BlockLimits is the Block Limits VPD page 0xB0 (SBC-3 §6.5.3). Lengths
// are in logical blocks; zero means "no limit reported".
type BlockLimits struct {
	// WSNZ: WRITE SAME with NUMBER OF LOGICAL BLOCKS 0 is refused.
	WSNZ                     bool
	MaxCompareAndWrite       uint8
	OptimalGranularity       uint16
	MaxTransfer              uint32
	OptimalTransfer          uint32
	MaxUnmapLBACount         uint32
	MaxUnmapDescriptors      uint32
	OptimalUnmapGranularity  uint32
	UnmapGranularityAlign    uint32
	UnmapGranularityAlignSet bool // UGAVALID
	MaxWriteSame             uint64
}

const (
	vpdBlockLimits = 0xb0
	blockLimitsLen = 0x40
)

func (l BlockLimits) marshal() []byte {
	b := make([]byte, blockLimitsLen)
	b[1] = vpdBlockLimits
	binary.BigEndian.PutUint16(b[2:], blockLimitsLen-4)
	if l.WSNZ {
		b[4] = 0x01
	}
	b[5] = l.MaxCompareAndWrite
	binary.BigEndian.PutUint16(b[6:], l.OptimalGranularity)
	binary.BigEndian.PutUint32(b[8:], l.MaxTransfer)
	binary.BigEndian.PutUint32(b[12:], l.OptimalTransfer)
	binary.BigEndian.PutUint32(b[20:], l.MaxUnmapLBACount)
	binary.BigEndian.PutUint32(b[24:], l.MaxUnmapDescriptors)
	binary.BigEndian.PutUint32(b[28:], l.OptimalUnmapGranularity)
	binary.BigEndian.PutUint32(b[32:], l.UnmapGranularityAlign&0x7fffffff)
	if l.UnmapGranularityAlignSet {
		b[32] |= 0x80
	}
	binary.BigEndian.PutUint64(b[36:], l.MaxWriteSame)
	return b
}

// ParseBlockLimits decodes VPD page 0xB0. Devices that return the shorter
// SBC-2 page (up to byte 15) leave the later fields zero.
func ParseBlockLimits(b []byte) (BlockLimits, error) {
	if len(b) < 16 {
		return BlockLimits{}, ErrShortData
	}
	if b[1] != vpdBlockLimits {
		return BlockLimits{}, fmt.Errorf("scsi: VPD page 0x%02x is not Block Limits", b[1])
	}
	b = b[:min(len(b), 4+int(binary.BigEndian.Uint16(b[2:])))]
	var l BlockLimits
	if len(b) < 16 {
		return BlockLimits{}, ErrShortData
	}
	l.WSNZ = b[4]&0x01 != 0
	l.MaxCompareAndWrite = b[5]
	l.OptimalGranularity = binary.BigEndian.Uint16(b[6:])
	l.MaxTransfer = binary.BigEndian.Uint32(b[8:])
	l.OptimalTransfer = binary.BigEndian.Uint32(b[12:])
	if len(b) >= 44 {
		l.MaxUnmapLBACount = binary.BigEndian.Uint32(b[20:])
		l.MaxUnmapDescriptors = binary.BigEndian.Uint32(b[24:])
		l.OptimalUnmapGranularity = binary.BigEndian.Uint32(b[28:])
		l.UnmapGranularityAlignSet = b[32]&0x80 != 0
		l.UnmapGranularityAlign = binary.BigEndian.Uint32(b[32:]) & 0x7fffffff
		l.MaxWriteSame = binary.BigEndian.Uint64(b[36:])
	}
	return l, nil
}

// VPDPage checks the header of vital product data page code (SPC-4
// §7.8.1) and returns its body, cut to the PAGE LENGTH.
func VPDPage(b []byte, code uint8) ([]byte, error) {
	if len(b) < 4 {
		return nil, ErrShortData
	}
	if b[1] != code {
		return nil, fmt.Errorf("scsi: VPD page 0x%02x, want 0x%02x", b[1], code)
	}
	n := int(binary.BigEndian.Uint16(b[2:]))
	if len(b)-4 < n {
		return nil, ErrShortData
	}
	return b[4 : 4+n], nil
}

// Designator is one designation descriptor of the Device Identification
// VPD page (SPC-4 §7.8.6.1).
type Designator struct {
	// Protocol is the PROTOCOL IDENTIFIER (5 for iSCSI), valid with PIV.
	Protocol uint8
	PIV      bool
	CodeSet  uint8 // 1 binary, 2 ASCII, 3 UTF-8
	// Association: 0 the logical unit, 1 the target port, 2 the target
	// device.
	Association uint8
	// Type: 1 T10 vendor ID, 3 NAA, 4 relative target port, 8 SCSI name
	// string, ...
	Type uint8
	ID   []byte
}

// ParseDeviceIdentification decodes VPD page 0x83. The IDs alias b.
func ParseDeviceIdentification(b []byte) ([]Designator, error) {
	body, err := VPDPage(b, vpdDeviceID)
	if err != nil {
		return nil, err
	}
	var out []Designator
	for len(body) > 0 {
		if len(body) < 4 || len(body) < 4+int(body[3]) {
			return nil, ErrShortData
		}
		out = append(out, Designator{
			Protocol:    body[0] >> 4,
			CodeSet:     body[0] & 0x0f,
			PIV:         body[1]&piv != 0,
			Association: body[1] >> 4 & 0x03,
			Type:        body[1] & 0x0f,
			ID:          body[4 : 4+int(body[3])],
		})
		body = body[4+int(body[3]):]
	}
	return out, nil
}

// ProvisioningStatus is the state of an LBA extent in GET LBA STATUS data
// (SBC-3 §5.5.2).
type ProvisioningStatus uint8

// Provisioning status values.
const (
	Mapped      ProvisioningStatus = 0
	Deallocated ProvisioningStatus = 1
	Anchored    ProvisioningStatus = 2
)

// LBAStatus is one LBA status descriptor.
type LBAStatus struct {
	LBA    uint64
	Blocks uint32
	Status ProvisioningStatus
}

// ParseLBAStatus decodes GET LBA STATUS parameter data, as much of it as
// both the PARAMETER DATA LENGTH and len(b) hold.
func ParseLBAStatus(b []byte) ([]LBAStatus, error) {
	if len(b) < lbaStatusHeaderLen {
		return nil, ErrShortData
	}
	b = b[:min(len(b), 4+int(binary.BigEndian.Uint32(b)))]
	var out []LBAStatus
	for d := b[lbaStatusHeaderLen:]; len(d) >= lbaStatusDescLen; d = d[lbaStatusDescLen:] {
		out = append(out, LBAStatus{
			LBA:    binary.BigEndian.Uint64(d),
			Blocks: binary.BigEndian.Uint32(d[8:]),
			Status: ProvisioningStatus(d[12] & 0x0f),
		})
	}
	return out, nil
}
