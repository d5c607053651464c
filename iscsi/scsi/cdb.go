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
