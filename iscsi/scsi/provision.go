package scsi

import (
	"context"
	"encoding/binary"
)

// Bits of byte 1 of WRITE SAME (SBC-3 §5.42-5.43).
const (
	writeSameUnmap = 0x08
	writeSameNDOB  = 0x01 // WRITE SAME(16) only (SBC-3r36 and later)
)

// patternChunk is how much of a repeated WRITE SAME pattern is written
// per device call.
const patternChunk = 1 << 20

// writeSame serves WRITE SAME(10/16) (SBC-3 §5.42-5.43). The data is
// always really written: a zero block becomes WriteZeroes (deallocating
// when UNMAP is set, since unmapped blocks read zero: LBPRZ), any other
// block is written out repeatedly. UNMAP with a non-zero block writes the
// block, which SBC-3 §4.7.3.4 allows. NDOB means a zero block without a
// Data-Out buffer. Zero blocks are refused (WSNZ in VPD page 0xB0).
func (lu *LogicalUnit) writeSame(ctx context.Context, c *Command) Response {
	ndob := c.CDB[0] == OpWriteSame16 && c.CDB[1]&writeSameNDOB != 0
	if ndob {
		return lu.writeSameBlocks(ctx, c, true)
	}
	return withDataOut(lu.writeSameBlocks(ctx, c, false), lu.cfg.BlockSize)
}

func (lu *LogicalUnit) writeSameBlocks(ctx context.Context, c *Command, ndob bool) Response {
	cdb := c.CDB
	if cdb[1]&cdbProtectMask != 0 {
		return invalidCDB(1, 7)
	}
	lba, n, lenOff := lbaAndLength(cdb)
	switch {
	case n == 0 || n > maxUnmapBlocks:
		return invalidCDB(lenOff, -1)
	case !lu.inRange(lba, uint64(n)):
		return illegalRequest(ASCLBAOutOfRange)
	case lu.cfg.ReadOnly:
		return writeProtected()
	case !ndob && len(c.Data) != int(lu.cfg.BlockSize):
		// The Data-Out buffer is exactly one block: a partial one cannot
		// be written, and with more it is unclear which is the pattern.
		return illegalRequest(ASCInvalidFieldInInformationUnit)
	}
	off, length := int64(lba)<<lu.shift, int64(n)<<lu.shift
	m := lu.locks.shared(lba, uint64(n))
	defer lu.locks.unlockShared(m)
	var err error
	if ndob || allZero(c.Data[:lu.cfg.BlockSize]) {
		err = lu.dev.WriteZeroes(ctx, off, length, cdb[1]&writeSameUnmap != 0)
	} else {
		err = lu.writePattern(ctx, c.Data[:lu.cfg.BlockSize], off, length)
	}
	if err != nil {
		return lu.fail(ctx, err, true)
	}
	return Response{}
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// writePattern writes block repeatedly over [off, off+length), stopping
// between chunks when ctx is canceled (an aborted task).
func (lu *LogicalUnit) writePattern(ctx context.Context, block []byte, off, length int64) error {
	p := lu.bufs.Get(int(min(length, patternChunk)))
	defer lu.bufs.Put(p)
	for i := copy(p, block); i < len(p); i *= 2 {
		copy(p[i:], p[:i])
	}
	for done := int64(0); done < length; {
		if err := ctx.Err(); err != nil {
			return err
		}
		k := min(int64(len(p)), length-done)
		if err := lu.dev.WriteAt(ctx, p[:k], off+done, false); err != nil {
			return err
		}
		done += k
	}
	return nil
}

// UNMAP parameter list layout (SBC-3 §5.28.2).
const (
	unmapHeaderLen     = 8
	unmapDescriptorLen = 16
)

// unmap serves UNMAP (SBC-3 §5.28). Every descriptor is checked before
// any is applied, so that a bad list changes nothing. A BLOCK DESCRIPTOR
// DATA LENGTH beyond the parameter list is cut to it, and a partial last
// descriptor is ignored, as SBC-3 specifies.
func (lu *LogicalUnit) unmap(ctx context.Context, c *Command) Response {
	paramLen := uint32(binary.BigEndian.Uint16(c.CDB[7:]))
	return withDataOut(lu.unmapList(ctx, c, paramLen), paramLen)
}

func (lu *LogicalUnit) unmapList(ctx context.Context, c *Command, paramLen uint32) Response {
	if paramLen == 0 {
		return Response{}
	}
	data := c.Data[:min(uint32(len(c.Data)), paramLen)]
	if len(data) < unmapHeaderLen {
		return illegalRequest(ASCParameterListLengthError)
	}
	if lu.cfg.ReadOnly {
		return writeProtected()
	}
	descs := data[unmapHeaderLen:]
	descs = descs[:min(len(descs), int(binary.BigEndian.Uint16(data[2:])))]
	count := len(descs) / unmapDescriptorLen
	if count > maxUnmapDescriptors {
		return invalidParam(2, -1)
	}
	for i := range count {
		d := descs[i*unmapDescriptorLen:]
		lba, n := binary.BigEndian.Uint64(d), binary.BigEndian.Uint32(d[8:])
		if n > maxUnmapBlocks {
			return invalidParam(unmapHeaderLen+i*unmapDescriptorLen+8, -1)
		}
		if !lu.inRange(lba, uint64(n)) {
			return illegalRequest(ASCLBAOutOfRange)
		}
	}
	for i := range count {
		d := descs[i*unmapDescriptorLen:]
		lba, n := binary.BigEndian.Uint64(d), uint64(binary.BigEndian.Uint32(d[8:]))
		if n == 0 {
			continue
		}
		m := lu.locks.shared(lba, n)
		err := lu.dev.Discard(ctx, int64(lba)<<lu.shift, int64(n)<<lu.shift)
		lu.locks.unlockShared(m)
		if err != nil {
			return lu.fail(ctx, err, true)
		}
	}
	return Response{}
}

// GET LBA STATUS parameter data layout and our bound on its size.
const (
	lbaStatusHeaderLen      = 8
	lbaStatusDescLen        = 16
	maxLBAStatusDescriptors = 1024
)

// getLBAStatus serves GET LBA STATUS (SBC-3 §5.5) from the device's real
// allocation (blockdev.AllocationReporter); a device that cannot tell
// reports everything mapped. It returns as many descriptors as the
// allocation length has room for (at least one, so that a short
// allocation length still sees the first extent's header), and no more
// than maxLBAStatusDescriptors, to bound the work of one command.
func (lu *LogicalUnit) getLBAStatus(ctx context.Context, c *Command) Response {
	lba := binary.BigEndian.Uint64(c.CDB[2:])
	allocLen := binary.BigEndian.Uint32(c.CDB[10:])
	if lba >= lu.blocks {
		return illegalRequest(ASCLBAOutOfRange)
	}
	if allocLen == 0 {
		return Response{}
	}
	room := max(1, (int64(allocLen)-lbaStatusHeaderLen+lbaStatusDescLen-1)/lbaStatusDescLen)
	room = min(room, maxLBAStatusDescriptors)
	b := make([]byte, lbaStatusHeaderLen, lbaStatusHeaderLen+room*lbaStatusDescLen)
	for k := int64(0); k < room && lba < lu.blocks; k++ {
		mapped, n, err := lu.extent(ctx, lba)
		if err != nil {
			return lu.fail(ctx, err, false)
		}
		n = min(n, 0xffffffff)
		st := Mapped
		if !mapped {
			st = Deallocated
		}
		b = binary.BigEndian.AppendUint64(b, lba)
		b = binary.BigEndian.AppendUint32(b, uint32(n))
		b = append(b, byte(st), 0, 0, 0)
		lba += n
	}
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	return allocate(b, allocLen)
}

// extent reports whether block lba is mapped and how many blocks from it
// share that state. A block counts as mapped if any byte of it is, so a
// run of holes is deallocated only in whole blocks.
func (lu *LogicalUnit) extent(ctx context.Context, lba uint64) (bool, uint64, error) {
	if lu.alloc == nil {
		return true, lu.blocks - lba, nil
	}
	bs := int64(1) << lu.shift
	size := int64(lu.blocks) << lu.shift
	roundUp := func(x int64) int64 { return min((x+bs-1)&^(bs-1), size) }
	off := int64(lba) << lu.shift
	mapped, n, err := lu.alloc.Allocation(ctx, off)
	if err != nil {
		return false, 0, err
	}
	if end := min(off+n, size) &^ (bs - 1); !mapped && end > off {
		return false, uint64(end-off) >> lu.shift, nil
	}
	// Mapped (or a hole ending inside the block): extend over mapped
	// ranges and holes shorter than a block.
	pos := roundUp(off + n)
	for pos < size {
		mapped, n, err = lu.alloc.Allocation(ctx, pos)
		if err != nil {
			return false, 0, err
		}
		if !mapped && min(pos+n, size)-pos >= bs {
			break
		}
		pos = roundUp(pos + n)
	}
	return true, uint64(pos-off) >> lu.shift, nil
}
