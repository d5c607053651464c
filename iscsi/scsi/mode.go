package scsi

import (
	"context"
	"encoding/binary"
)

// Mode pages (SPC-4 §7.5, SBC-3 §6.4).
const (
	pageCaching              = 0x08
	pageControl              = 0x0a
	pageInformationalExcepts = 0x1c
	pageAll                  = 0x3f
	subpageAll               = 0xff
)

// Page control values of MODE SENSE (SPC-4 §6.11, table 98).
const (
	pcCurrent    = 0
	pcChangeable = 1
	pcDefault    = 2
	pcSaved      = 3
)

// modePages returns the pages we report, in page-code order, with their
// current (= default) values. Nothing is changeable: MODE SELECT accepts
// only the values we already have.
//
//   - Caching (SBC-3 §6.4.5): WCE=1. The device has volatile write-cache
//     semantics (blockdev.Device), so the initiator must send FUA and
//     SYNCHRONIZE CACHE; saying otherwise would lose acknowledged writes.
//   - Control (SPC-4 §7.5.8): QUEUE ALGORITHM MODIFIER 1 (unrestricted
//     reordering: commands run in parallel), TAS=1 (aborted commands end
//     with TASK ABORTED), D_SENSE=0 (we return fixed-format sense).
//   - Informational Exceptions Control (SPC-4 §7.5.11): DEXCPT=1, we raise
//     none.
func modePages() [][]byte {
	caching := make([]byte, 20)
	caching[0], caching[1], caching[2] = pageCaching, 18, 0x04
	control := make([]byte, 12)
	control[0], control[1], control[3], control[5] = pageControl, 10, 0x10, 0x40
	ie := make([]byte, 12)
	ie[0], ie[1], ie[2] = pageInformationalExcepts, 10, 0x08
	return [][]byte{caching, control, ie}
}

// modeSense serves MODE SENSE(6/10) (SPC-4 §6.11, §6.12).
func (lu *LogicalUnit) modeSense(_ context.Context, c *Command) Response {
	cdb := c.CDB
	six := cdb[0] == OpModeSense6
	dbd := cdb[1]&0x08 != 0
	pc, code, sub := cdb[2]>>6, cdb[2]&0x3f, cdb[3]
	allocLen := uint32(cdb[4])
	if !six {
		allocLen = uint32(binary.BigEndian.Uint16(cdb[7:]))
	}
	if pc == pcSaved {
		// SPC-4 §6.11: no saved values, so asking for them is an error.
		return checkCondition(Sense{Key: SenseIllegalRequest, Code: ASCSavingParametersNotSupported}.withFieldPointer(true, 2, 7))
	}
	var pages []byte
	for _, p := range modePages() {
		if code == pageAll || code == p[0] {
			if pc == pcChangeable {
				clear(p[2:])
			}
			pages = append(pages, p...)
		}
	}
	switch {
	case pages == nil:
		return invalidCDB(2, 5)
	case sub != 0 && sub != subpageAll: // 0xFF: the page and all its subpages (none)
		return invalidCDB(3, -1)
	}

	var devSpecific byte = 0x10 // DPOFUA (SBC-3 §6.3.1)
	if lu.cfg.ReadOnly {
		devSpecific |= 0x80 // WP
	}
	var bd []byte
	if !dbd {
		bd = lu.blockDescriptor(!six && cdb[1]&0x10 != 0)
		if pc == pcChangeable {
			clear(bd)
		}
	}
	var b []byte
	if six {
		b = []byte{0, 0, devSpecific, byte(len(bd))}
	} else {
		b = []byte{0, 0, 0, devSpecific, 0, 0, 0, 0}
		if len(bd) == 16 {
			b[4] = 0x01 // LONGLBA
		}
		binary.BigEndian.PutUint16(b[6:], uint16(len(bd)))
	}
	b = append(append(b, bd...), pages...)
	if six {
		b[0] = byte(len(b) - 1)
	} else {
		binary.BigEndian.PutUint16(b, uint16(len(b)-2))
	}
	return allocate(b, allocLen)
}

// blockDescriptor is the short (8-byte) or, with LLBAA, long (16-byte)
// direct-access block descriptor (SBC-3 §6.3.2, §6.3.3). A short one
// reports 0xFFFFFFFF blocks when the capacity does not fit.
func (lu *LogicalUnit) blockDescriptor(long bool) []byte {
	if long {
		b := make([]byte, 16)
		binary.BigEndian.PutUint64(b, lu.blocks)
		binary.BigEndian.PutUint32(b[12:], lu.cfg.BlockSize)
		return b
	}
	b := make([]byte, 8)
	binary.BigEndian.PutUint32(b, uint32(min(lu.blocks, 0xffffffff)))
	binary.BigEndian.PutUint32(b[4:], lu.cfg.BlockSize) // byte 4 (density code) stays 0
	return b
}

// modeSelect serves MODE SELECT(6/10) (SPC-4 §6.9, §6.10). No parameter
// is changeable, so a parameter list is accepted when it restates the
// current values (what initiators send to "set" WCE=1) and refused with
// INVALID FIELD IN PARAMETER LIST, pointing at the first byte that would
// change, otherwise.
func (lu *LogicalUnit) modeSelect(_ context.Context, c *Command) Response {
	cdb := c.CDB
	paramLen := uint32(cdb[4])
	if cdb[0] == OpModeSelect10 {
		paramLen = uint32(binary.BigEndian.Uint16(cdb[7:]))
	}
	return withDataOut(lu.modeSelectList(c, paramLen), paramLen)
}

func (lu *LogicalUnit) modeSelectList(c *Command, paramLen uint32) Response {
	cdb := c.CDB
	six := cdb[0] == OpModeSelect6
	switch {
	case cdb[1]&0x01 != 0: // SP: we cannot save pages
		return invalidCDB(1, 0)
	case paramLen == 0:
		return Response{}
	case cdb[1]&0x10 == 0: // PF 0: vendor-specific page format
		return invalidCDB(1, 4)
	case uint32(len(c.Data)) < paramLen:
		return illegalRequest(ASCParameterListLengthError)
	}
	data := c.Data[:paramLen]
	hdrLen, bdLen := 4, 0
	if six {
		if len(data) >= hdrLen {
			bdLen = int(data[3])
		}
	} else {
		hdrLen = 8
		if len(data) >= hdrLen {
			bdLen = int(binary.BigEndian.Uint16(data[6:]))
		}
	}
	if len(data) < hdrLen+bdLen {
		return illegalRequest(ASCParameterListLengthError)
	}
	if bdLen > 0 {
		long := !six && data[4]&0x01 != 0
		want := lu.blockDescriptor(long)
		if bdLen != len(want) {
			return invalidParam(hdrLen-1, -1)
		}
		got := data[hdrLen : hdrLen+bdLen]
		// A NUMBER OF BLOCKS of zero means "unchanged" (SBC-3 §6.3.2).
		countLen := 4
		if long {
			countLen = 8
		}
		if !allZero(got[:countLen]) {
			if d := firstDiff(got[:countLen], want[:countLen]); d >= 0 {
				return invalidParam(hdrLen+d, -1)
			}
		}
		if d := firstDiff(got[countLen:], want[countLen:]); d >= 0 {
			return invalidParam(hdrLen+countLen+d, -1)
		}
	}
	current := modePages()
	for off := hdrLen + bdLen; off < len(data); {
		if len(data)-off < 2 {
			return illegalRequest(ASCParameterListLengthError)
		}
		if data[off]&0x40 != 0 { // SPF: we have no subpages
			return invalidParam(off, 6)
		}
		var page []byte
		for _, p := range current {
			if p[0] == data[off]&0x3f {
				page = p
			}
		}
		if page == nil {
			return invalidParam(off, 5)
		}
		if int(data[off+1]) != len(page)-2 {
			return invalidParam(off+1, -1)
		}
		if len(data)-off < len(page) {
			return illegalRequest(ASCParameterListLengthError)
		}
		if d := firstDiff(data[off+2:off+len(page)], page[2:]); d >= 0 {
			return invalidParam(off+2+d, -1)
		}
		off += len(page)
	}
	return Response{}
}
