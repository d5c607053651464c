package scsi

import "encoding/binary"

// CDB builders for the initiator (and the tests). Each returns a fresh
// CDB of the command's own length; the iSCSI layer pads it to 16 bytes.

// Read16 is READ(16) of blocks logical blocks at lba (SBC-3 §5.11).
func Read16(lba uint64, blocks uint32, fua bool) []byte {
	return blockCDB16(OpRead16, lba, blocks, fua)
}

// Write16 is WRITE(16) (SBC-3 §5.35); with fua the device server returns
// only once the data is durable.
func Write16(lba uint64, blocks uint32, fua bool) []byte {
	return blockCDB16(OpWrite16, lba, blocks, fua)
}

// SynchronizeCache16 is SYNCHRONIZE CACHE(16) (SBC-3 §5.23); blocks 0
// means through the last block.
func SynchronizeCache16(lba uint64, blocks uint32) []byte {
	return blockCDB16(OpSynchronizeCache16, lba, blocks, false)
}

func blockCDB16(op byte, lba uint64, blocks uint32, fua bool) []byte {
	b := make([]byte, 16)
	b[0] = op
	if fua {
		b[1] = cdbFUA
	}
	binary.BigEndian.PutUint64(b[2:], lba)
	binary.BigEndian.PutUint32(b[10:], blocks)
	return b
}

// ReadCapacity16 is READ CAPACITY(16) (SBC-3 §5.16); allocLen 32 gets all
// of its data.
func ReadCapacity16(allocLen uint32) []byte {
	b := make([]byte, 16)
	b[0], b[1] = OpServiceActionIn16, SAReadCapacity16
	binary.BigEndian.PutUint32(b[10:], allocLen)
	return b
}

// Inquiry is INQUIRY for standard data (SPC-4 §6.4).
func Inquiry(allocLen uint16) []byte {
	return []byte{OpInquiry, 0, 0, byte(allocLen >> 8), byte(allocLen), 0}
}

// InquiryVPD is INQUIRY for the vital product data page (EVPD set).
func InquiryVPD(page uint8, allocLen uint16) []byte {
	return []byte{OpInquiry, 0x01, page, byte(allocLen >> 8), byte(allocLen), 0}
}

// WriteSame16 is WRITE SAME(16) (SBC-3 §5.43) with a one-block Data-Out
// buffer, or none with ndob (the block is zeroes). With unmap the device
// server may deallocate the blocks when the data is zero.
func WriteSame16(lba uint64, blocks uint32, unmap, ndob bool) []byte {
	b := blockCDB16(OpWriteSame16, lba, blocks, false)
	if unmap {
		b[1] |= writeSameUnmap
	}
	if ndob {
		b[1] |= writeSameNDOB
	}
	return b
}

// UnmapDescriptor is one extent of an UNMAP parameter list.
type UnmapDescriptor struct {
	LBA    uint64
	Blocks uint32
}

// Unmap is UNMAP (SBC-3 §5.28) for a parameter list of paramLen bytes.
func Unmap(paramLen uint16) []byte {
	return []byte{OpUnmap, 0, 0, 0, 0, 0, 0, byte(paramLen >> 8), byte(paramLen), 0}
}

// UnmapParameterList encodes the Data-Out buffer of UNMAP (SBC-3
// §5.28.2). Callers keep len(descs) within the unit's MAXIMUM UNMAP BLOCK
// DESCRIPTOR COUNT (VPD page 0xB0).
func UnmapParameterList(descs []UnmapDescriptor) []byte {
	b := make([]byte, unmapHeaderLen, unmapHeaderLen+unmapDescriptorLen*len(descs))
	binary.BigEndian.PutUint16(b, uint16(6+unmapDescriptorLen*len(descs)))
	binary.BigEndian.PutUint16(b[2:], uint16(unmapDescriptorLen*len(descs)))
	for _, d := range descs {
		b = binary.BigEndian.AppendUint64(b, d.LBA)
		b = binary.BigEndian.AppendUint32(b, d.Blocks)
		b = append(b, 0, 0, 0, 0)
	}
	return b
}

// GetLBAStatus is GET LBA STATUS (SBC-3 §5.5) from lba.
func GetLBAStatus(lba uint64, allocLen uint32) []byte {
	b := make([]byte, 16)
	b[0], b[1] = OpServiceActionIn16, SAGetLBAStatus
	binary.BigEndian.PutUint64(b[2:], lba)
	binary.BigEndian.PutUint32(b[10:], allocLen)
	return b
}
