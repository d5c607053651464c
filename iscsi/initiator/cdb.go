package initiator

// Temporary CDB encoding until iscsi/scsi provides the builders (branch
// scsi); replaced by those on merge.

import (
	"encoding/binary"
	"fmt"
)

func cdbRead16(lba uint64, blocks uint32) []byte {
	c := make([]byte, 16)
	c[0] = 0x88
	binary.BigEndian.PutUint64(c[2:], lba)
	binary.BigEndian.PutUint32(c[10:], blocks)
	return c
}

func cdbWrite16(lba uint64, blocks uint32, fua bool) []byte {
	c := make([]byte, 16)
	c[0] = 0x8a
	if fua {
		c[1] = 0x08
	}
	binary.BigEndian.PutUint64(c[2:], lba)
	binary.BigEndian.PutUint32(c[10:], blocks)
	return c
}

func cdbSync16() []byte { c := make([]byte, 16); c[0] = 0x91; return c }

func cdbWriteSame16(lba uint64, blocks uint32, unmap bool) []byte {
	c := make([]byte, 16)
	c[0] = 0x93
	if unmap {
		c[1] = 0x08
	}
	binary.BigEndian.PutUint64(c[2:], lba)
	binary.BigEndian.PutUint32(c[10:], blocks)
	return c
}

func cdbUnmap(lba uint64, blocks uint32) (cdb, param []byte) {
	param = make([]byte, 24)
	binary.BigEndian.PutUint16(param[0:], 22)
	binary.BigEndian.PutUint16(param[2:], 16)
	binary.BigEndian.PutUint64(param[8:], lba)
	binary.BigEndian.PutUint32(param[16:], blocks)
	cdb = make([]byte, 10)
	cdb[0] = 0x42
	binary.BigEndian.PutUint16(cdb[7:], 24)
	return cdb, param
}

func cdbReadCapacity16(alloc uint32) []byte {
	c := make([]byte, 16)
	c[0], c[1] = 0x9e, 0x10
	binary.BigEndian.PutUint32(c[10:], alloc)
	return c
}

func cdbGetLBAStatus(lba uint64, alloc uint32) []byte {
	c := make([]byte, 16)
	c[0], c[1] = 0x9e, 0x12
	binary.BigEndian.PutUint64(c[2:], lba)
	binary.BigEndian.PutUint32(c[10:], alloc)
	return c
}

func cdbInquiry(evpd bool, page byte, alloc uint16) []byte {
	c := make([]byte, 6)
	c[0] = 0x12
	if evpd {
		c[1] = 1
	}
	c[2] = page
	binary.BigEndian.PutUint16(c[3:], alloc)
	return c
}

func cdbTestUnitReady() []byte { return make([]byte, 6) }

type senseError struct {
	key, asc, ascq uint8
}

func (e *senseError) Error() string {
	return fmt.Sprintf("sense key 0x%x asc 0x%02x ascq 0x%02x", e.key, e.asc, e.ascq)
}

func parseSense(b []byte) *senseError {
	if len(b) < 1 {
		return nil
	}
	switch b[0] & 0x7f {
	case 0x70, 0x71:
		if len(b) < 14 {
			return &senseError{key: b[2] & 0xf}
		}
		return &senseError{b[2] & 0xf, b[12], b[13]}
	case 0x72, 0x73:
		if len(b) < 4 {
			return nil
		}
		return &senseError{b[1] & 0xf, b[2], b[3]}
	}
	return nil
}
