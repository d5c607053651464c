package scsi

import (
	"bytes"
	"encoding/binary"
	"testing"
)

func modeSense6(dbd bool, pc, page, sub, alloc byte) []byte {
	b := []byte{OpModeSense6, 0, pc<<6 | page, sub, alloc, 0}
	if dbd {
		b[1] = 0x08
	}
	return b
}

func modeSense10(flags, pc, page, sub byte, alloc uint16) []byte {
	return []byte{OpModeSense10, flags, pc<<6 | page, sub, 0, 0, 0, byte(alloc >> 8), byte(alloc), 0}
}

// goldenPages are the mode pages as the wire must carry them: caching
// with WCE, control with QAM 1 and TAS, informational exceptions with
// DEXCPT.
func goldenPages() (caching, control, ie []byte) {
	return []byte{0x08, 18, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		[]byte{0x0a, 10, 0, 0x10, 0, 0x40, 0, 0, 0, 0, 0, 0},
		[]byte{0x1c, 10, 0x08, 0, 0, 0, 0, 0, 0, 0, 0, 0}
}

func cat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

func TestModeSense(t *testing.T) {
	cachingPage, controlPage, iePage := goldenPages()
	u := newTestUnit(t, 1<<20, UnitConfig{})
	ro := newTestUnit(t, 1<<20, UnitConfig{ReadOnly: true, BlockSize: 4096})
	shortBD := []byte{0, 0, 0x08, 0, 0, 0, 0x02, 0}
	for _, tc := range []struct {
		name string
		u    *testUnit
		cdb  []byte
		want []byte
	}{
		{"6 caching with block descriptor", u, modeSense6(false, pcCurrent, 0x08, 0, 255),
			cat([]byte{3 + 8 + 20, 0, 0x10, 8}, shortBD, cachingPage)},
		{"6 caching, DBD", u, modeSense6(true, pcCurrent, 0x08, 0, 255),
			cat([]byte{3 + 20, 0, 0x10, 0}, cachingPage)},
		{"6 all pages", u, modeSense6(true, pcDefault, 0x3f, 0, 255),
			cat([]byte{3 + 44, 0, 0x10, 0}, cachingPage, controlPage, iePage)},
		{"6 all pages and subpages", u, modeSense6(true, pcCurrent, 0x3f, 0xff, 255),
			cat([]byte{3 + 44, 0, 0x10, 0}, cachingPage, controlPage, iePage)},
		{"6 caching and all its subpages", u, modeSense6(true, pcCurrent, 0x08, 0xff, 255),
			cat([]byte{3 + 20, 0, 0x10, 0}, cachingPage)},
		{"6 changeable: nothing", u, modeSense6(false, pcChangeable, 0x08, 0, 255),
			cat([]byte{3 + 8 + 20, 0, 0x10, 8}, make([]byte, 8), []byte{0x08, 18}, make([]byte, 18))},
		{"6 control, allocation length 6", u, modeSense6(true, pcCurrent, 0x0a, 0, 6),
			[]byte{3 + 12, 0, 0x10, 0, 0x0a, 10}},
		{"6 read-only sets WP, 4096-byte blocks", ro, modeSense6(false, pcCurrent, 0x1c, 0, 255),
			cat([]byte{3 + 8 + 12, 0, 0x90, 8}, []byte{0, 0, 0x01, 0, 0, 0, 0x10, 0}, iePage)},
		{"10 long LBA block descriptor", u, modeSense10(0x10, pcCurrent, 0x08, 0, 512),
			cat([]byte{0, 6 + 16 + 20, 0, 0x10, 1, 0, 0, 16}, []byte{0, 0, 0, 0, 0, 0, 0x08, 0, 0, 0, 0, 0, 0, 0, 0x02, 0}, cachingPage)},
		{"10 short block descriptor", u, modeSense10(0, pcCurrent, 0x1c, 0, 512),
			cat([]byte{0, 6 + 8 + 12, 0, 0x10, 0, 0, 0, 8}, shortBD, iePage)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.u.exec(tc.cdb, nil)
			mustGood(t, r)
			if !bytes.Equal(r.Data, tc.want) {
				t.Errorf("got  % x\nwant % x", r.Data, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		name string
		cdb  []byte
		code AdditionalSense
		off  uint16
	}{
		{"saved values", modeSense6(false, pcSaved, 0x08, 0, 255), ASCSavingParametersNotSupported, 2},
		{"unknown page", modeSense6(false, pcCurrent, 0x19, 0, 255), ASCInvalidFieldInCDB, 2},
		{"subpage of caching", modeSense6(false, pcCurrent, 0x08, 1, 255), ASCInvalidFieldInCDB, 3},
		{"subpage 1 of all", modeSense10(0, pcCurrent, 0x3f, 1, 255), ASCInvalidFieldInCDB, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := mustSense(t, u.exec(tc.cdb, nil), SenseIllegalRequest, tc.code)
			if _, off, _, ok := s.FieldPointer(); !ok || off != tc.off {
				t.Errorf("field pointer at %d (%v), want %d", off, ok, tc.off)
			}
		})
	}
}

func TestModeSelect(t *testing.T) {
	cachingPage, controlPage, iePage := goldenPages()
	u := newTestUnit(t, 1<<20, UnitConfig{})
	sel6 := func(flags byte, n int) []byte { return []byte{OpModeSelect6, flags, 0, 0, byte(n), 0} }
	sel10 := func(flags byte, n int) []byte {
		return []byte{OpModeSelect10, flags, 0, 0, 0, 0, 0, byte(n >> 8), byte(n), 0}
	}
	hdr6 := []byte{0, 0, 0, 0}
	hdr6bd := []byte{0, 0, 0, 8}
	hdr10 := []byte{0, 0, 0, 0, 0, 0, 0, 0}
	bd := []byte{0, 0, 0x08, 0, 0, 0, 0x02, 0}
	bdZeroCount := []byte{0, 0, 0, 0, 0, 0, 0x02, 0}
	noWCE := bytes.Clone(cachingPage)
	noWCE[2] = 0
	for _, tc := range []struct {
		name   string
		cdb    func(flags byte, n int) []byte
		flags  byte
		list   []byte
		code   AdditionalSense // 0: GOOD
		ptr    int             // parameter list field pointer, -1 none
		cdbPtr int
	}{
		{"6 caching unchanged", sel6, 0x10, cat(hdr6, cachingPage), 0, -1, -1},
		{"6 block descriptor and caching unchanged", sel6, 0x10, cat(hdr6bd, bd, cachingPage), 0, -1, -1},
		{"6 block descriptor with zero count", sel6, 0x10, cat(hdr6bd, bdZeroCount), 0, -1, -1},
		{"10 all pages unchanged", sel10, 0x10, cat(hdr10, cachingPage, controlPage, iePage), 0, -1, -1},
		{"empty list", sel6, 0x10, nil, 0, -1, -1},
		{"clearing WCE", sel6, 0x10, cat(hdr6, noWCE), ASCInvalidFieldInParameterList, 6, -1},
		{"other block length", sel6, 0x10, cat(hdr6bd, []byte{0, 0, 0, 0, 0, 0, 0x10, 0}, cachingPage), ASCInvalidFieldInParameterList, 10, -1},
		{"unknown page", sel6, 0x10, cat(hdr6, []byte{0x19, 2, 0, 0}), ASCInvalidFieldInParameterList, 4, -1},
		{"wrong page length", sel6, 0x10, cat(hdr6, []byte{0x08, 10}, make([]byte, 10)), ASCInvalidFieldInParameterList, 5, -1},
		{"truncated page", sel6, 0x10, cat(hdr6, cachingPage[:10]), ASCParameterListLengthError, -1, -1},
		{"truncated header", sel10, 0x10, hdr10[:5], ASCParameterListLengthError, -1, -1},
		{"SP", sel6, 0x11, cat(hdr6, cachingPage), ASCInvalidFieldInCDB, -1, 1},
		{"PF 0", sel10, 0x00, cat(hdr10, cachingPage), ASCInvalidFieldInCDB, -1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := u.exec(tc.cdb(tc.flags, len(tc.list)), tc.list)
			if r.DataOutLength != uint32(len(tc.list)) {
				t.Errorf("DataOutLength %d", r.DataOutLength)
			}
			if tc.code == 0 {
				mustGood(t, r)
				return
			}
			s := mustSense(t, r, SenseIllegalRequest, tc.code)
			inCDB, off, _, ok := s.FieldPointer()
			switch {
			case tc.ptr >= 0 && (!ok || inCDB || int(off) != tc.ptr):
				t.Errorf("field pointer %v %d %v, want parameter byte %d", inCDB, off, ok, tc.ptr)
			case tc.cdbPtr >= 0 && (!ok || !inCDB || int(off) != tc.cdbPtr):
				t.Errorf("field pointer %v %d %v, want CDB byte %d", inCDB, off, ok, tc.cdbPtr)
			}
		})
	}
	// Data-Out shorter than the parameter list length.
	mustSense(t, u.exec(sel6(0x10, 24), cat(hdr6, cachingPage[:4])), SenseIllegalRequest, ASCParameterListLengthError)
}

func rsoc(opts byte, op byte, sa uint16, alloc uint32) []byte {
	b := make([]byte, 12)
	b[0], b[1], b[2], b[3] = OpMaintenanceIn, SAReportSupportedOperationCode, opts, op
	binary.BigEndian.PutUint16(b[4:], sa)
	binary.BigEndian.PutUint32(b[6:], alloc)
	return b
}

func TestReportSupportedOperationCodes(t *testing.T) {
	u := newTestUnit(t, 1<<20, UnitConfig{})
	r := u.exec(rsoc(0, 0, 0, 1<<16), nil)
	mustGood(t, r)
	b := r.Data
	if int(binary.BigEndian.Uint32(b))+4 != len(b) || (len(b)-4)%8 != 0 {
		t.Fatalf("all commands: length field %d, %d bytes", binary.BigEndian.Uint32(b), len(b))
	}
	type key struct {
		op byte
		sa uint16
	}
	listed := map[key]int{}
	for d := b[4:]; len(d) >= 8; d = d[8:] {
		k := key{d[0], binary.BigEndian.Uint16(d[2:])}
		listed[k] = int(binary.BigEndian.Uint16(d[6:]))
		if (d[5]&1 != 0) != (d[0] == OpServiceActionIn16 || d[0] == OpMaintenanceIn) {
			t.Errorf("opcode %02x: SERVACTV %v", d[0], d[5]&1)
		}
	}
	for k, n := range map[key]int{
		{OpRead16, 0}: 16, {OpWrite10, 0}: 10, {OpRead6, 0}: 6, {OpRead12, 0}: 12, {OpUnmap, 0}: 10,
		{OpServiceActionIn16, SAReadCapacity16}: 16, {OpServiceActionIn16, SAGetLBAStatus}: 16,
		{OpCompareAndWrite, 0}: 16, {OpWriteSame16, 0}: 16, {OpModeSense10, 0}: 10, {OpInquiry, 0}: 6,
		{OpMaintenanceIn, SAReportSupportedOperationCode}: 12,
	} {
		if listed[k] != n {
			t.Errorf("%+v: CDB length %d, want %d", k, listed[k], n)
		}
	}
	// Every listed command is accepted by Execute's dispatcher, with the
	// CDB usage data of the one-command format.
	for k, n := range listed {
		opts := byte(rsocOpcode)
		if k.op == OpServiceActionIn16 || k.op == OpMaintenanceIn {
			opts = rsocOpcodeSA
		}
		r := u.exec(rsoc(opts, k.op, k.sa, 512), nil)
		mustGood(t, r)
		if r.Data[1] != supportStandard || int(binary.BigEndian.Uint16(r.Data[2:])) != n || r.Data[4] != k.op {
			t.Errorf("%+v: one-command data % x", k, r.Data)
		}
	}

	// One-command format, golden bytes for READ(10) with timeouts.
	r = u.exec(rsoc(0x80|rsocOpcode, OpRead10, 0, 512), nil)
	mustGood(t, r)
	want := cat([]byte{0, 0x83, 0, 10}, []byte{OpRead10, 0xfe, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0}, []byte{0, 10}, make([]byte, 10))
	if !bytes.Equal(r.Data, want) {
		t.Errorf("READ(10) usage % x, want % x", r.Data, want)
	}
	r = u.exec(rsoc(rsocOpcodeSA, OpServiceActionIn16, SAGetLBAStatus, 512), nil)
	mustGood(t, r)
	if r.Data[5] != SAGetLBAStatus {
		t.Errorf("service action byte of usage data %02x", r.Data[5])
	}
	r = u.exec(rsoc(rsocOpcode, 0xc1, 0, 512), nil)
	mustGood(t, r)
	if !bytes.Equal(r.Data, []byte{0, supportNone, 0, 0}) {
		t.Errorf("unsupported opcode: % x", r.Data)
	}
	r = u.exec(rsoc(rsocOpcodeMaybe, OpServiceActionIn16, SAReadCapacity16, 512), nil)
	mustGood(t, r)
	if r.Data[1] != supportStandard {
		t.Errorf("option 3: % x", r.Data)
	}
	mustSense(t, u.exec(rsoc(rsocOpcode, OpServiceActionIn16, 0, 512), nil), SenseIllegalRequest, ASCInvalidFieldInCDB)
	mustSense(t, u.exec(rsoc(rsocOpcodeSA, OpRead10, 0, 512), nil), SenseIllegalRequest, ASCInvalidFieldInCDB)
	mustSense(t, u.exec(rsoc(4, 0, 0, 512), nil), SenseIllegalRequest, ASCInvalidFieldInCDB)
	r = u.exec(rsoc(0, 0, 0, 10), nil)
	mustGood(t, r)
	if len(r.Data) != 10 {
		t.Errorf("allocation length 10: %d bytes", len(r.Data))
	}
}

func TestStartStopAndPreventAllow(t *testing.T) {
	u := newTestUnit(t, 1<<20, UnitConfig{})
	for _, cdb := range [][]byte{
		{OpStartStopUnit, 0, 0, 0, 0x01, 0}, {OpStartStopUnit, 1, 0, 0, 0x00, 0},
		{OpPreventAllowMediumRemove, 0, 0, 0, 0, 0}, {OpPreventAllowMediumRemove, 0, 0, 0, 1, 0},
	} {
		mustGood(t, u.exec(cdb, nil))
	}
	mustSense(t, u.exec([]byte{OpPreventAllowMediumRemove, 0, 0, 0, 2, 0}, nil), SenseIllegalRequest, ASCInvalidFieldInCDB)
	mustSense(t, u.exec([]byte{OpStartStopUnit, 0, 0, 0, 0x08, 0}, nil), SenseIllegalRequest, ASCInvalidFieldInCDB)
}

func TestPreFetchAndReadDefectData(t *testing.T) {
	u := newTestUnit(t, 1<<20, UnitConfig{})
	mustGood(t, u.exec(cdb10(OpPreFetch10, 0x02, 0, 16), nil))
	mustGood(t, u.exec(cdb16(OpPreFetch16, 0, 2047, 1), nil))
	mustGood(t, u.exec(cdb16(OpPreFetch16, 0, 2048, 0), nil))
	mustSense(t, u.exec(cdb10(OpPreFetch10, 0, 2047, 2), nil), SenseIllegalRequest, ASCLBAOutOfRange)
	mustSense(t, u.exec(cdb16(OpPreFetch16, 0, 2049, 0), nil), SenseIllegalRequest, ASCLBAOutOfRange)

	r := u.exec([]byte{OpReadDefectData10, 0, 0x18 | 0x05, 0, 0, 0, 0, 0, 32, 0}, nil)
	mustGood(t, r)
	if want := []byte{0, 0x1d, 0, 0}; !bytes.Equal(r.Data, want) {
		t.Errorf("READ DEFECT DATA(10) = % x, want % x", r.Data, want)
	}
	r = u.exec([]byte{OpReadDefectData12, 0x10 | 0x04, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0}, nil)
	mustGood(t, r)
	if want := []byte{0, 0x14, 0, 0, 0, 0, 0, 0}; !bytes.Equal(r.Data, want) {
		t.Errorf("READ DEFECT DATA(12) = % x, want % x", r.Data, want)
	}
}
