package scsi

import (
	"cmp"
	"slices"
)

// commandSet is the table of supported commands, sorted by opcode and
// service action. Each usage string is the CDB usage data that REPORT
// SUPPORTED OPERATION CODES returns (SPC-4 §6.35.3) and that Execute
// enforces: a bit set outside it is INVALID FIELD IN CDB. The control
// byte (last) is 0 everywhere: NACA and LINK are not supported (SAM-5
// §5.2). Fields we do look at but support only as zero (RDPROTECT,
// WRPROTECT) are listed and refused by the handler with a precise pointer.
// Each command's access class says which persistent reservations of other
// nexuses it conflicts with (SPC-4 table 61, SBC-3 table 13); unmarked
// commands conflict with all.
func (lu *LogicalUnit) commandSet() []command {
	const ff = 0xff
	rw10 := func(op, flags byte) []byte { return []byte{op, flags, ff, ff, ff, ff, 0x1f, ff, ff, 0} }
	rw12 := func(op, flags byte) []byte { return []byte{op, flags, ff, ff, ff, ff, ff, ff, ff, ff, 0x1f, 0} }
	rw16 := func(op, flags byte) []byte {
		return []byte{op, flags, ff, ff, ff, ff, ff, ff, ff, ff, ff, ff, ff, ff, 0x1f, 0}
	}
	// Byte 1 flags: WRITE SAME has WRPROTECT, UNMAP and (16 only) NDOB;
	// ANCHOR is refused as we do not support anchored blocks. READ has RDPROTECT, DPO, FUA, RARC, FUA_NV; WRITE has
	// WRPROTECT, DPO, FUA, FUA_NV.
	// VERIFY and WRITE AND VERIFY have VRPROTECT/WRPROTECT, DPO, BYTCHK.
	const readFlags, writeFlags, verifyFlags = 0xfe, 0xfa, 0xf6
	cmds := []command{
		{usage: []byte{OpTestUnitReady, 0, 0, 0, 0, 0}, access: accessAlways, run: (*LogicalUnit).testUnitReady},
		{usage: []byte{OpRequestSense, 0x01, 0, 0, ff, 0}, access: accessAlways, run: (*LogicalUnit).requestSense},
		{usage: []byte{OpRead6, 0x1f, ff, ff, ff, 0}, access: accessRead, run: (*LogicalUnit).read},
		{usage: []byte{OpWrite6, 0x1f, ff, ff, ff, 0}, run: (*LogicalUnit).write},
		{usage: []byte{OpInquiry, 0x01, ff, ff, ff, 0}, access: accessAlways, run: (*LogicalUnit).inquiry},
		{usage: []byte{OpStartStopUnit, 0x01, 0, 0x0f, 0xf7, 0}, run: (*LogicalUnit).accept},
		{usage: []byte{OpPreventAllowMediumRemove, 0, 0, 0, 0x03, 0}, run: (*LogicalUnit).accept},
		{usage: []byte{OpReadCapacity10, 0, ff, ff, ff, ff, 0, 0, 0x01, 0}, access: accessAlways, run: (*LogicalUnit).readCapacity10},
		{usage: rw10(OpRead10, readFlags), access: accessRead, run: (*LogicalUnit).read},
		{usage: rw10(OpWrite10, writeFlags), run: (*LogicalUnit).write},
		{usage: rw10(OpSynchronizeCache10, 0x06), run: (*LogicalUnit).synchronizeCache},
		{usage: rw16(OpRead16, readFlags), access: accessRead, run: (*LogicalUnit).read},
		{usage: rw16(OpWrite16, writeFlags), run: (*LogicalUnit).write},
		{usage: rw16(OpSynchronizeCache16, 0x06), run: (*LogicalUnit).synchronizeCache},
		{usage: []byte{OpServiceActionIn16, 0x1f, ff, ff, ff, ff, ff, ff, ff, ff, ff, ff, ff, ff, 0x01, 0},
			sa: SAReadCapacity16, hasSA: true, access: accessAlways, run: (*LogicalUnit).readCapacity16},
		{usage: []byte{OpServiceActionIn16, 0x1f, ff, ff, ff, ff, ff, ff, ff, ff, ff, ff, ff, ff, 0, 0},
			sa: SAGetLBAStatus, hasSA: true, access: accessRead, run: (*LogicalUnit).getLBAStatus},
		{usage: rw10(OpWriteSame10, 0xe8), run: (*LogicalUnit).writeSame},
		{usage: rw16(OpWriteSame16, 0xe9), run: (*LogicalUnit).writeSame},
		{usage: []byte{OpUnmap, 0, 0, 0, 0, 0, 0x1f, ff, ff, 0}, run: (*LogicalUnit).unmap},
		{usage: rw10(OpVerify10, verifyFlags), access: accessRead, run: (*LogicalUnit).verify},
		{usage: rw12(OpVerify12, verifyFlags), access: accessRead, run: (*LogicalUnit).verify},
		{usage: rw16(OpVerify16, verifyFlags), access: accessRead, run: (*LogicalUnit).verify},
		{usage: rw10(OpWriteAndVerify10, verifyFlags), run: (*LogicalUnit).writeAndVerify},
		{usage: rw12(OpWriteAndVerify12, verifyFlags), run: (*LogicalUnit).writeAndVerify},
		{usage: rw16(OpWriteAndVerify16, verifyFlags), run: (*LogicalUnit).writeAndVerify},
		{usage: []byte{OpCompareAndWrite, writeFlags, ff, ff, ff, ff, ff, ff, ff, ff, 0, 0, 0, ff, 0x1f, 0},
			run: (*LogicalUnit).compareAndWrite},
		{usage: []byte{OpModeSelect6, 0x11, 0, 0, ff, 0}, run: (*LogicalUnit).modeSelect},
		{usage: []byte{OpModeSense6, 0x08, ff, ff, ff, 0}, access: accessRead, run: (*LogicalUnit).modeSense},
		{usage: []byte{OpModeSelect10, 0x11, 0, 0, 0, 0, 0, ff, ff, 0}, run: (*LogicalUnit).modeSelect},
		{usage: []byte{OpModeSense10, 0x18, ff, ff, 0, 0, 0, ff, ff, 0}, access: accessRead, run: (*LogicalUnit).modeSense},
		{usage: []byte{OpMaintenanceIn, 0x1f, 0x87, ff, ff, ff, ff, ff, ff, ff, 0, 0},
			sa: SAReportSupportedOperationCode, hasSA: true, access: accessAlways, run: (*LogicalUnit).reportSupportedOpcodes},
		{usage: rw10(OpPreFetch10, 0x02), access: accessRead, run: (*LogicalUnit).preFetch},
		{usage: rw16(OpPreFetch16, 0x02), access: accessRead, run: (*LogicalUnit).preFetch},
		{usage: []byte{OpReadDefectData10, 0, 0x1f, 0, 0, 0, 0, ff, ff, 0}, access: accessRead, run: (*LogicalUnit).readDefectData},
		{usage: []byte{OpReadDefectData12, 0x1f, 0, 0, 0, 0, ff, ff, ff, ff, 0, 0}, access: accessRead, run: (*LogicalUnit).readDefectData},
		{usage: rw12(OpRead12, readFlags), access: accessRead, run: (*LogicalUnit).read},
		{usage: rw12(OpWrite12, writeFlags), run: (*LogicalUnit).write},
	}
	if lu.pr != nil {
		prIn := []byte{OpPersistentReserveIn, 0x1f, 0, 0, 0, 0, 0, ff, ff, 0}
		prOut := []byte{OpPersistentReserveOut, 0x1f, ff, 0, 0, ff, ff, ff, ff, 0}
		for sa := range uint16(priReadFullStatus + 1) {
			cmds = append(cmds, command{usage: prIn, sa: sa, hasSA: true, access: accessAlways,
				run: (*LogicalUnit).persistentReserveIn})
		}
		for sa := range uint16(proRegisterAndIgnore + 1) {
			cmds = append(cmds, command{usage: prOut, sa: sa, hasSA: true, access: accessAlways,
				run: (*LogicalUnit).persistentReserveOut})
		}
	}
	slices.SortStableFunc(cmds, func(a, b command) int {
		return cmp.Or(cmp.Compare(a.usage[0], b.usage[0]), cmp.Compare(a.sa, b.sa))
	})
	return cmds
}
