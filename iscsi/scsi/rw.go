package scsi

import (
	"context"
	"encoding/binary"
)

// cdbLen is the CDB length of an operation code from its group code
// (SPC-4 §4.2.5.1).
func cdbLen(op byte) int {
	switch op >> 5 {
	case 0:
		return 6
	case 1, 2:
		return 10
	case 4:
		return 16
	case 5:
		return 12
	}
	return 0
}

// lbaAndLength decodes the LOGICAL BLOCK ADDRESS and TRANSFER LENGTH (or
// NUMBER OF LOGICAL BLOCKS / VERIFICATION LENGTH) of the 6-, 10-, 12- and
// 16-byte block commands of SBC-3 §5, and the byte offset of the length
// field for a sense field pointer. A READ/WRITE(6) length of 0 means 256
// blocks (SBC-3 §5.14).
func lbaAndLength(cdb []byte) (lba uint64, n uint32, lenOff int) {
	switch cdbLen(cdb[0]) {
	case 6:
		lba = uint64(cdb[1]&0x1f)<<16 | uint64(binary.BigEndian.Uint16(cdb[2:]))
		n = uint32(cdb[4])
		if n == 0 {
			n = 256
		}
		return lba, n, 4
	case 10:
		return uint64(binary.BigEndian.Uint32(cdb[2:])), uint32(binary.BigEndian.Uint16(cdb[7:])), 7
	case 12:
		return uint64(binary.BigEndian.Uint32(cdb[2:])), binary.BigEndian.Uint32(cdb[6:]), 6
	default:
		return binary.BigEndian.Uint64(cdb[2:]), binary.BigEndian.Uint32(cdb[10:]), 10
	}
}

// Bits of byte 1 of the 10/12/16-byte READ, WRITE, VERIFY and WRITE AND
// VERIFY CDBs (SBC-3 §5).
const (
	cdbProtectMask = 0xe0 // RDPROTECT, WRPROTECT, VRPROTECT
	cdbFUA         = 0x08
	cdbBytchkMask  = 0x06
)

// blockCheck validates the parts common to every block command: no
// protection information (we have none: SBC-3 §5.11 says a non-zero
// RDPROTECT/WRPROTECT then is an invalid field), the range, and the
// maximum transfer length. It returns ok=false with the response to send.
func (lu *LogicalUnit) blockCheck(cdb []byte, lba uint64, n uint32, lenOff int, limit uint32) (Response, bool) {
	if cdbLen(cdb[0]) != 6 && cdb[1]&cdbProtectMask != 0 {
		return invalidCDB(1, 7), false
	}
	if !lu.inRange(lba, uint64(n)) {
		return illegalRequest(ASCLBAOutOfRange), false
	}
	if n > limit {
		return invalidCDB(lenOff, -1), false
	}
	return Response{}, true
}

func (lu *LogicalUnit) maxTransferBlocks() uint32 { return lu.cfg.MaxTransfer >> lu.shift }

// dataLen is the byte length of n blocks for Response.DataOutLength,
// saturated at the 32 bits of an iSCSI Expected Data Transfer Length.
func (lu *LogicalUnit) dataLen(n uint32) uint32 {
	return uint32(min(uint64(n)<<lu.shift, 0xffffffff))
}

// read serves READ(6/10/12/16) (SBC-3 §5.8-5.11). DPO and FUA are
// accepted: the device has no read cache of its own to bypass. The data
// is returned in a pooled buffer (see Response.Release).
func (lu *LogicalUnit) read(ctx context.Context, c *Command) Response {
	lba, n, lenOff := lbaAndLength(c.CDB)
	if r, ok := lu.blockCheck(c.CDB, lba, n, lenOff, lu.maxTransferBlocks()); !ok {
		return r
	}
	if n == 0 {
		return Response{}
	}
	buf := lu.bufs.Get(int(n) << lu.shift)
	if err := lu.dev.ReadAt(ctx, buf, int64(lba<<lu.shift)); err != nil {
		lu.bufs.Put(buf)
		return lu.fail(ctx, err, false)
	}
	return Response{Data: buf, pool: &lu.bufs}
}

// writeData returns the part of the Data-Out buffer a write of n blocks
// uses. Data beyond the transfer length is ignored; Data short of it
// (Expected Data Transfer Length smaller than the CDB asks for) writes only
// the whole blocks that arrived, as initiators' residual-overflow handling
// expects, and a partial block is refused rather than padded.
func (lu *LogicalUnit) writeData(c *Command, n uint32) ([]byte, bool) {
	want := int(n) << lu.shift
	data := c.Data
	if len(data) >= want {
		return data[:want], true
	}
	return data, len(data)&(1<<lu.shift-1) == 0
}

// write serves WRITE(6/10/12/16) (SBC-3 §5.32-5.35). FUA is passed to the
// device, which makes the data durable before returning; DPO is ignored.
func (lu *LogicalUnit) write(ctx context.Context, c *Command) Response {
	lba, n, lenOff := lbaAndLength(c.CDB)
	fua := cdbLen(c.CDB[0]) != 6 && c.CDB[1]&cdbFUA != 0
	return withDataOut(lu.writeBlocks(ctx, c, lba, n, lenOff, fua), lu.dataLen(n))
}

// writeBlocks checks and writes a WRITE-like command's n blocks at lba
// from c.Data (see writeData).
func (lu *LogicalUnit) writeBlocks(ctx context.Context, c *Command, lba uint64, n uint32, lenOff int, fua bool) Response {
	if r, ok := lu.blockCheck(c.CDB, lba, n, lenOff, lu.maxTransferBlocks()); !ok {
		return r
	}
	if lu.cfg.ReadOnly {
		return writeProtected()
	}
	data, ok := lu.writeData(c, n)
	if !ok {
		return illegalRequest(ASCInvalidFieldInInformationUnit)
	}
	if len(data) == 0 {
		return Response{}
	}
	m := lu.locks.shared(lba, uint64(n))
	err := lu.dev.WriteAt(ctx, data, int64(lba<<lu.shift), fua)
	lu.locks.unlockShared(m)
	if err != nil {
		return lu.fail(ctx, err, true)
	}
	return Response{}
}

// synchronizeCache serves SYNCHRONIZE CACHE(10/16) (SBC-3 §5.22-5.23).
// The device only flushes as a whole, so the range is checked and then
// everything is flushed; IMMED is honoured by completing only once the
// flush has (which SBC allows).
func (lu *LogicalUnit) synchronizeCache(ctx context.Context, c *Command) Response {
	lba, n, _ := lbaAndLength(c.CDB)
	if !lu.inRange(lba, uint64(n)) {
		return illegalRequest(ASCLBAOutOfRange)
	}
	if err := lu.dev.Flush(ctx); err != nil {
		return lu.fail(ctx, err, true)
	}
	return Response{}
}

// preFetch serves PRE-FETCH(10/16) (SBC-3 §5.6-5.7). The unit keeps no
// cache of its own to load, which SBC-3 answers with GOOD (CONDITION MET
// would claim the blocks are now cached); only the range is checked.
func (lu *LogicalUnit) preFetch(_ context.Context, c *Command) Response {
	lba, n, _ := lbaAndLength(c.CDB)
	if !lu.inRange(lba, uint64(n)) {
		return illegalRequest(ASCLBAOutOfRange)
	}
	return Response{}
}
