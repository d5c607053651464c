package scsi

import (
	"context"
	"encoding/binary"
)

// BYTCHK values of VERIFY and WRITE AND VERIFY (SBC-3 §5.29, §5.38).
const (
	bytchkNone     = 0 // verify the medium only
	bytchkCompare  = 1 // compare with the Data-Out buffer
	bytchkOneBlock = 3 // compare every block with one Data-Out block (VERIFY only)
)

func bytchk(cdb []byte) byte { return cdb[1] & cdbBytchkMask >> 1 }

// miscompare is MISCOMPARE, MISCOMPARE DURING VERIFY OPERATION with the
// INFORMATION field set to the offset of the first differing byte
// (SBC-3 §5.29, §5.3).
func miscompare(off int) Response {
	return checkCondition(Sense{Key: SenseMiscompare, Code: ASCMiscompareDuringVerify,
		Information: uint64(off), InformationValid: true})
}

// firstDiff is the offset of the first byte where a and b differ, or -1.
func firstDiff(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// verify serves VERIFY(10/12/16) (SBC-3 §5.29-5.31). Without BYTCHK the
// blocks are read (verifying that the medium can return them); with
// BYTCHK 01b they are compared with the Data-Out buffer, with 11b each
// block is compared with the single Data-Out block.
func (lu *LogicalUnit) verify(ctx context.Context, c *Command) Response {
	lba, n, lenOff := lbaAndLength(c.CDB)
	var want uint32
	switch bytchk(c.CDB) {
	case bytchkNone:
	case bytchkCompare:
		want = lu.dataLen(n)
	case bytchkOneBlock:
		want = lu.cfg.BlockSize
	default:
		return invalidCDB(1, 2)
	}
	return withDataOut(lu.verifyBlocks(ctx, c, lba, n, lenOff, want), want)
}

func (lu *LogicalUnit) verifyBlocks(ctx context.Context, c *Command, lba uint64, n uint32, lenOff int, want uint32) Response {
	limit := ^uint32(0) // reading only: no buffer the size of n
	if want != 0 {
		limit = lu.maxTransferBlocks()
	}
	if r, ok := lu.blockCheck(c.CDB, lba, n, lenOff, limit); !ok {
		return r
	}
	if n == 0 {
		return Response{}
	}
	if uint32(len(c.Data)) < want {
		return illegalRequest(ASCInvalidFieldInInformationUnit)
	}
	return lu.compareBlocks(ctx, lba, n, c.Data[:want])
}

// compareBlocks reads blocks [lba, lba+n) in chunks and compares them with
// expect: all of them (len(expect) is n blocks), each block with the one
// block in expect, or none (expect empty: the medium is only read). With
// n == 1 the first two cases are the same comparison.
func (lu *LogicalUnit) compareBlocks(ctx context.Context, lba uint64, n uint32, expect []byte) Response {
	bs := int(lu.cfg.BlockSize)
	buf := lu.bufs.Get(int(min(uint64(n)<<lu.shift, uint64(lu.cfg.MaxTransfer))))
	defer lu.bufs.Put(buf)
	off, length := int64(lba)<<lu.shift, int(n)<<lu.shift
	for done := 0; done < length; {
		if ctx.Err() != nil {
			return Response{Status: StatusTaskAborted}
		}
		p := buf[:min(len(buf), length-done)]
		if err := lu.dev.ReadAt(ctx, p, off+int64(done)); err != nil {
			return lu.fail(ctx, err, false)
		}
		switch len(expect) {
		case 0:
		case bs:
			for i := 0; i < len(p); i += bs {
				if d := firstDiff(expect, p[i:i+bs]); d >= 0 {
					return miscompare(done + i + d)
				}
			}
		default:
			if d := firstDiff(expect[done:done+len(p)], p); d >= 0 {
				return miscompare(done + d)
			}
		}
		done += len(p)
	}
	return Response{}
}

// writeAndVerify serves WRITE AND VERIFY(10/12/16) (SBC-3 §5.36-5.38):
// the data is written through to the medium (FUA), then read back and
// compared, whatever BYTCHK says (00b asks only for a medium check, which
// the comparison includes).
func (lu *LogicalUnit) writeAndVerify(ctx context.Context, c *Command) Response {
	lba, n, lenOff := lbaAndLength(c.CDB)
	if bytchk(c.CDB) > bytchkCompare {
		return withDataOut(invalidCDB(1, 2), lu.dataLen(n))
	}
	r := lu.writeBlocks(ctx, c, lba, n, lenOff, true)
	if r.Status == StatusGood {
		// Verify what was written: the whole blocks that arrived.
		data, _ := lu.writeData(c, n)
		if len(data) > 0 {
			r = lu.compareBlocks(ctx, lba, uint32(len(data)>>lu.shift), data)
		}
	}
	return withDataOut(r, lu.dataLen(n))
}

// compareAndWrite serves COMPARE AND WRITE (SBC-3 §5.3): the Data-Out
// buffer holds n blocks to compare and then n blocks to write. The range
// is locked against every other writer for the whole read-compare-write
// (rangeLocks), which makes it the atomic test-and-set that clustered
// file systems (VMware ATS, OCFS2) rely on.
func (lu *LogicalUnit) compareAndWrite(ctx context.Context, c *Command) Response {
	n := uint32(c.CDB[13])
	return withDataOut(lu.compareAndWriteBlocks(ctx, c, n), lu.dataLen(2*n))
}

func (lu *LogicalUnit) compareAndWriteBlocks(ctx context.Context, c *Command, n uint32) Response {
	lba := binary.BigEndian.Uint64(c.CDB[2:])
	if r, ok := lu.blockCheck(c.CDB, lba, n, 13, maxCompareAndWrite); !ok {
		return r
	}
	size := int(n) << lu.shift
	if len(c.Data) != 2*size {
		// Where the compare half ends depends on the buffer being exact,
		// so a NUMBER OF LOGICAL BLOCKS that disagrees with it is the
		// invalid field (as with 256 blocks, which the byte wraps to 0).
		return invalidCDB(13, -1)
	}
	if n == 0 {
		return Response{}
	}
	if lu.cfg.ReadOnly {
		return writeProtected()
	}
	m := lu.locks.exclusive(lba, uint64(n))
	defer lu.locks.unlockExclusive(m)
	if r := lu.compareBlocks(ctx, lba, n, c.Data[:size]); r.Status != StatusGood {
		return r
	}
	if err := lu.dev.WriteAt(ctx, c.Data[size:2*size], int64(lba)<<lu.shift, c.CDB[1]&cdbFUA != 0); err != nil {
		return lu.fail(ctx, err, true)
	}
	return Response{}
}
