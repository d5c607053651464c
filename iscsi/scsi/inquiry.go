package scsi

import (
	"context"
	"encoding/binary"
	"fmt"
)

// Vital product data pages we return (SPC-4 §7.8, SBC-3 §6.5).
const (
	vpdSupportedPages      = 0x00
	vpdUnitSerial          = 0x80
	vpdDeviceID            = 0x83
	vpdBlockDevChars       = 0xb1
	vpdLogicalProvisioning = 0xb2
)

// Version descriptors claimed in standard INQUIRY data (SPC-4 table 142).
const (
	versionSAM5  = 0x00a0
	versionSPC4  = 0x0460
	versionSBC3  = 0x04c0
	versionISCSI = 0x0960
)

// allocate cuts parameter data to the ALLOCATION LENGTH (SPC-4 §4.2.5.6):
// the device server returns what fits and never an error for a short one.
func allocate(b []byte, allocLen uint32) Response {
	return Response{Data: b[:min(uint32(len(b)), allocLen)]}
}

// testUnitReady serves TEST UNIT READY (SPC-4 §6.47): the unit is always
// ready while it exists.
func (lu *LogicalUnit) testUnitReady(context.Context, *Command) Response { return Response{} }

// accept serves START STOP UNIT (SBC-3 §5.25) and the allowed forms of
// PREVENT ALLOW MEDIUM REMOVAL (SBC-3 §5.13): the medium is not removable
// and never stops, so there is nothing to do.
func (lu *LogicalUnit) accept(_ context.Context, c *Command) Response {
	// PREVENT values 10b and 11b are obsolete in SBC-3.
	if c.CDB[0] == OpPreventAllowMediumRemove && c.CDB[4]&0x03 > 1 {
		return invalidCDB(4, 1)
	}
	return Response{}
}

// requestSense serves REQUEST SENSE (SPC-4 §6.29). Sense is always
// returned with CHECK CONDITION (autosense), so none is ever pending:
// NO SENSE, in the format the DESC bit asks for.
func (lu *LogicalUnit) requestSense(_ context.Context, c *Command) Response {
	s := Sense{Key: SenseNoSense, Code: ASCNoAdditionalSense}
	b := s.Fixed()
	if c.CDB[1]&0x01 != 0 {
		b = s.Descriptor()
	}
	return allocate(b, uint32(c.CDB[4]))
}

// inquiry serves INQUIRY (SPC-4 §6.4): standard data, or a VPD page with
// EVPD set.
func (lu *LogicalUnit) inquiry(_ context.Context, c *Command) Response {
	cdb := c.CDB
	allocLen := uint32(binary.BigEndian.Uint16(cdb[3:]))
	if cdb[1]&0x01 == 0 {
		if cdb[2] != 0 {
			return invalidCDB(2, -1)
		}
		return allocate(lu.standardInquiry(), allocLen)
	}
	var b []byte
	switch cdb[2] {
	case vpdSupportedPages:
		b = vpdPage(vpdSupportedPages, []byte{vpdSupportedPages, vpdUnitSerial, vpdDeviceID,
			vpdBlockLimits, vpdBlockDevChars, vpdLogicalProvisioning})
	case vpdUnitSerial:
		b = vpdPage(vpdUnitSerial, []byte(lu.cfg.Serial))
	case vpdDeviceID:
		b = vpdPage(vpdDeviceID, lu.designators(c.Port))
	case vpdBlockLimits:
		b = lu.blockLimits().marshal()
	case vpdBlockDevChars:
		// SBC-3 §6.5.2: MEDIUM ROTATION RATE 1 = non-rotating medium, so
		// that guests pick a scheduler and discard policy fit for it.
		p := make([]byte, 0x3c)
		p[1] = 0x01
		b = vpdPage(vpdBlockDevChars, p)
	case vpdLogicalProvisioning:
		// SBC-3 §6.5.4: UNMAP (LBPU), WRITE SAME(16) and (10) with UNMAP
		// (LBPWS, LBPWS10), unmapped blocks read zero (LBPRZ), thin
		// provisioned (PROVISIONING TYPE 010b).
		b = vpdPage(vpdLogicalProvisioning, []byte{0, 0xe4, 0x02, 0})
	default:
		return invalidCDB(2, -1)
	}
	return allocate(b, allocLen)
}

// vpdPage prefixes a page body with its header: device type 0, page code
// and PAGE LENGTH.
func vpdPage(code byte, body []byte) []byte {
	b := make([]byte, 4, 4+len(body))
	b[1] = code
	binary.BigEndian.PutUint16(b[2:], uint16(len(body)))
	return append(b, body...)
}

// standardInquiry is the standard INQUIRY data (SPC-4 §6.4.2) of a
// connected direct-access block device claiming SPC-4, with HISUP (LUNs
// are hierarchical), response data format 2, and CMDQUE: the target keeps
// many commands outstanding and we execute them in parallel.
func (lu *LogicalUnit) standardInquiry() []byte {
	b := make([]byte, 66)
	b[0] = 0x00 // qualifier 000b (connected), device type 0 (SBC)
	b[2] = 0x06 // SPC-4
	b[3] = 0x12 // HISUP, RESPONSE DATA FORMAT 2
	b[4] = byte(len(b) - 5)
	b[7] = 0x02 // CMDQUE
	padCopy(b[8:16], lu.cfg.Vendor)
	padCopy(b[16:32], lu.cfg.Product)
	padCopy(b[32:36], lu.cfg.Revision)
	for i, v := range []uint16{versionSAM5, versionISCSI, versionSPC4, versionSBC3} {
		binary.BigEndian.PutUint16(b[58+2*i:], v)
	}
	return b
}

// padCopy copies s into b, padding with spaces (SPC-4 §4.4.1: ASCII
// fields are left-aligned and space-filled).
func padCopy(b []byte, s string) {
	n := copy(b, s)
	for i := n; i < len(b); i++ {
		b[i] = ' '
	}
}

// Designation descriptor fields (SPC-4 §7.8.6.1).
const (
	codeSetBinary   = 0x1
	codeSetASCII    = 0x2
	codeSetUTF8     = 0x3
	protocolISCSI   = 0x5
	piv             = 0x80
	assocLU         = 0x00
	assocTargetPort = 0x10
	assocTarget     = 0x20
	desigT10Vendor  = 0x1
	desigNAA        = 0x3
	desigRelPort    = 0x4
	desigSCSIName   = 0x8
)

// designators is the body of the Device Identification VPD page (SPC-4
// §7.8.6): the unit's NAA and T10 vendor ID designators, which are the
// same on every host serving this disk, and, when the transport names
// its port, the relative target port and the iSCSI port and target names.
// No target port group designator: the unit does not implement ALUA
// (TPGS is 0 in standard INQUIRY data).
func (lu *LogicalUnit) designators(port TargetPort) []byte {
	var b []byte
	desc := func(flags0, flags1 byte, id []byte) {
		b = append(b, flags0, flags1, 0, byte(len(id)))
		b = append(b, id...)
	}
	desc(codeSetBinary, assocLU|desigNAA, lu.naa[:])
	t10 := make([]byte, 8, 8+len(lu.cfg.Serial))
	padCopy(t10, lu.cfg.Vendor)
	desc(codeSetASCII, assocLU|desigT10Vendor, append(t10, lu.cfg.Serial...))
	if port.RelativeID != 0 {
		desc(protocolISCSI<<4|codeSetBinary, piv|assocTargetPort|desigRelPort,
			[]byte{0, 0, byte(port.RelativeID >> 8), byte(port.RelativeID)})
	}
	if port.TargetName != "" {
		desc(protocolISCSI<<4|codeSetUTF8, piv|assocTargetPort|desigSCSIName,
			scsiNameString(fmt.Sprintf("%s,t,0x%04x", port.TargetName, port.TPGT)))
		desc(protocolISCSI<<4|codeSetUTF8, piv|assocTarget|desigSCSIName, scsiNameString(port.TargetName))
	}
	return b
}

// scsiNameString is a SCSI name string designator: null-terminated and
// padded with nulls to a multiple of four bytes (SPC-4 §7.8.6.11), cut to
// the 255-byte limit of the DESIGNATOR LENGTH.
func scsiNameString(s string) []byte {
	n := min((len(s)+4)&^3, 252)
	b := make([]byte, n)
	copy(b[:n-1], s)
	return b
}

// blockLimits is what VPD page 0xB0 advertises; the handlers enforce the
// same numbers.
func (lu *LogicalUnit) blockLimits() BlockLimits {
	return BlockLimits{
		WSNZ:                    true,
		MaxCompareAndWrite:      maxCompareAndWrite,
		OptimalGranularity:      uint16(lu.cfg.OptimalGranularity >> lu.shift),
		MaxTransfer:             lu.maxTransferBlocks(),
		OptimalTransfer:         lu.cfg.OptimalTransfer >> lu.shift,
		MaxUnmapLBACount:        maxUnmapBlocks,
		MaxUnmapDescriptors:     maxUnmapDescriptors,
		OptimalUnmapGranularity: lu.cfg.OptimalGranularity >> lu.shift,
		MaxWriteSame:            maxUnmapBlocks,
	}
}

// capacity is what READ CAPACITY reports: thin provisioning (LBPME) with
// zeroes read from unmapped blocks (LBPRZ), as blockdev.Device.Discard
// promises.
func (lu *LogicalUnit) capacity() Capacity {
	return Capacity{Blocks: lu.blocks, BlockSize: lu.cfg.BlockSize, LBPME: true, LBPRZ: true,
		LogicalPerPhysicalExp: uint8(log2(lu.cfg.PhysicalBlockSize / lu.cfg.BlockSize))}
}

// readCapacity10 serves READ CAPACITY(10) (SBC-3 §5.15). A capacity
// beyond 32 bits reports 0xFFFFFFFF so that the initiator switches to
// READ CAPACITY(16).
func (lu *LogicalUnit) readCapacity10(_ context.Context, c *Command) Response {
	// With PMI 0 the LOGICAL BLOCK ADDRESS field must be zero.
	if c.CDB[8]&0x01 == 0 && binary.BigEndian.Uint32(c.CDB[2:]) != 0 {
		return invalidCDB(2, -1)
	}
	b := make([]byte, 8)
	binary.BigEndian.PutUint32(b, uint32(min(lu.blocks-1, 0xffffffff)))
	binary.BigEndian.PutUint32(b[4:], lu.cfg.BlockSize)
	return Response{Data: b}
}

// readCapacity16 serves READ CAPACITY(16) (SBC-3 §5.16).
func (lu *LogicalUnit) readCapacity16(_ context.Context, c *Command) Response {
	if c.CDB[14]&0x01 == 0 && binary.BigEndian.Uint64(c.CDB[2:]) != 0 {
		return invalidCDB(2, -1)
	}
	return allocate(lu.capacity().marshal16(), binary.BigEndian.Uint32(c.CDB[10:]))
}

// ReportLUNs serves REPORT LUNS (SPC-4 §6.33) for the target, which owns
// the LUN list of an I_T nexus: LUNs below 256 use peripheral device
// addressing, larger ones flat space addressing (SAM-5 §4.7), as Linux
// and libiscsi expect.
func ReportLUNs(c *Command, luns []uint16) Response {
	cdb := c.CDB
	if len(cdb) < 12 || cdb[0] != OpReportLUNs {
		return illegalRequest(ASCInvalidCommandOperationCode)
	}
	allocLen := binary.BigEndian.Uint32(cdb[6:])
	if allocLen < 16 {
		// SPC-4 §6.33: an allocation length below 16 is an error.
		return invalidCDB(6, -1)
	}
	if cdb[11]&0x05 != 0 {
		return invalidCDB(11, -1)
	}
	var list []uint16
	switch cdb[2] {
	case 0x00, 0x02: // all logical units; we have no well-known LUs
		list = luns
	case 0x01: // well-known logical units only: none
	default:
		return invalidCDB(2, -1)
	}
	b := make([]byte, 8, 8+8*len(list))
	binary.BigEndian.PutUint32(b, uint32(8*len(list)))
	for _, l := range list {
		if l < 256 {
			b = append(b, 0, byte(l), 0, 0, 0, 0, 0, 0)
		} else {
			b = append(b, 0x40|byte(l>>8&0x3f), byte(l), 0, 0, 0, 0, 0, 0)
		}
	}
	return allocate(b, allocLen)
}

// UnsupportedLUN answers a command addressed to a LUN that has no logical
// unit (SPC-4 §6.4.2, SAM-5 §5.8.6): INQUIRY returns peripheral qualifier
// 011b with device type 1Fh, REQUEST SENSE reports LOGICAL UNIT NOT
// SUPPORTED as its data, anything else is CHECK CONDITION, ILLEGAL
// REQUEST, LOGICAL UNIT NOT SUPPORTED.
func UnsupportedLUN(c *Command) Response {
	s := Sense{Key: SenseIllegalRequest, Code: ASCLUNotSupported}
	if len(c.CDB) >= 6 {
		switch c.CDB[0] {
		case OpInquiry:
			if c.CDB[1]&0x01 != 0 || c.CDB[2] != 0 {
				return invalidCDB(1, 0)
			}
			b := make([]byte, 36)
			b[0] = 0x7f // qualifier 011b, device type 1Fh
			b[2] = 0x06
			b[3] = 0x12
			b[4] = byte(len(b) - 5)
			return allocate(b, uint32(binary.BigEndian.Uint16(c.CDB[3:])))
		case OpRequestSense:
			b := s.Fixed()
			if c.CDB[1]&0x01 != 0 {
				b = s.Descriptor()
			}
			return allocate(b, uint32(c.CDB[4]))
		}
	}
	return checkCondition(s)
}

// readDefectData serves READ DEFECT DATA(10/12) (SBC-3 §5.17-5.18): the
// defect list is empty, in the format asked for, with the REQ_PLIST and
// REQ_GLIST bits echoed.
func (lu *LogicalUnit) readDefectData(_ context.Context, c *Command) Response {
	if c.CDB[0] == OpReadDefectData10 {
		return allocate([]byte{0, c.CDB[2] & 0x1f, 0, 0}, uint32(binary.BigEndian.Uint16(c.CDB[7:])))
	}
	return allocate([]byte{0, c.CDB[1] & 0x1f, 0, 0, 0, 0, 0, 0}, binary.BigEndian.Uint32(c.CDB[6:]))
}
