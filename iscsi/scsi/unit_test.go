package scsi

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/shareless/shareless/blockdev"
)

// testUnit is a logical unit over a sparse temp file, with the file's path
// so that tests can check the bytes that really reached it.
type testUnit struct {
	*LogicalUnit
	path string
	dev  *blockdev.File
}

func newTestUnit(t testing.TB, size int64, cfg UnitConfig) *testUnit {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	dev, err := blockdev.OpenFile(path, cfg.ReadOnly)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	if cfg.ID == "" {
		cfg.ID = "disk-1"
	}
	lu, err := NewLogicalUnit(dev, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &testUnit{LogicalUnit: lu, path: path, dev: dev}
}

// fileBytes reads n bytes at off straight from the backing file.
func (u *testUnit) fileBytes(t testing.TB, off, n int64) []byte {
	t.Helper()
	f, err := os.Open(u.path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

func (u *testUnit) writeFile(t testing.TB, off int64, p []byte) {
	t.Helper()
	f, err := os.OpenFile(u.path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(p, off); err != nil {
		t.Fatal(err)
	}
}

func (u *testUnit) exec(cdb []byte, data []byte) Response {
	return u.Execute(context.Background(), &Command{CDB: cdb, Data: data, ExpectedDataLength: uint32(len(data))})
}

// mustGood fails the test unless r is GOOD.
func mustGood(t testing.TB, r Response) {
	t.Helper()
	if r.Status != StatusGood {
		t.Fatalf("status 0x%02x, want GOOD; %v", r.Status, senseOf(t, r))
	}
}

func senseOf(t testing.TB, r Response) error {
	if r.Status != StatusCheckCondition {
		return nil
	}
	s, err := ParseSense(r.Sense)
	if err != nil {
		t.Fatalf("bad sense %x: %v", r.Sense, err)
	}
	return &SenseError{Sense: s}
}

// mustSense fails unless r is CHECK CONDITION with key and code.
func mustSense(t testing.TB, r Response, key SenseKey, code AdditionalSense) Sense {
	t.Helper()
	if r.Status != StatusCheckCondition {
		t.Fatalf("status 0x%02x, want CHECK CONDITION %v %v", r.Status, key, code)
	}
	s, err := ParseSense(r.Sense)
	if err != nil {
		t.Fatalf("bad sense %x: %v", r.Sense, err)
	}
	if s.Key != key || s.Code != code {
		t.Fatalf("sense %v: %v, want %v: %v", s.Key, s.Code, key, code)
	}
	return s
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7+i/512)
	}
	return b
}

func cdb10(op byte, flags byte, lba uint32, n uint16) []byte {
	b := make([]byte, 10)
	b[0], b[1] = op, flags
	binary.BigEndian.PutUint32(b[2:], lba)
	binary.BigEndian.PutUint16(b[7:], n)
	return b
}

func cdb12(op byte, flags byte, lba uint32, n uint32) []byte {
	b := make([]byte, 12)
	b[0], b[1] = op, flags
	binary.BigEndian.PutUint32(b[2:], lba)
	binary.BigEndian.PutUint32(b[6:], n)
	return b
}

func cdb16(op byte, flags byte, lba uint64, n uint32) []byte {
	b := blockCDB16(op, lba, n, false)
	b[1] = flags
	return b
}

func cdb6(op byte, lba uint32, n uint8) []byte {
	return []byte{op, byte(lba >> 16 & 0x1f), byte(lba >> 8), byte(lba), n, 0}
}

func TestNewLogicalUnitValidates(t *testing.T) {
	dev := &fakeDevice{size: 1 << 20}
	for _, tc := range []struct {
		name string
		cfg  UnitConfig
	}{
		{"no id", UnitConfig{}},
		{"long vendor", UnitConfig{ID: "x", Vendor: "TOOLONGVENDOR"}},
		{"non-ascii product", UnitConfig{ID: "x", Product: "dísk"}},
		{"block size", UnitConfig{ID: "x", BlockSize: 1024}},
		{"physical block smaller than logical", UnitConfig{ID: "x", BlockSize: 4096, PhysicalBlockSize: 512}},
		{"physical block not a power of two", UnitConfig{ID: "x", PhysicalBlockSize: 3072}},
		{"max transfer not a block multiple", UnitConfig{ID: "x", MaxTransfer: 1000}},
		{"optimal above max", UnitConfig{ID: "x", OptimalTransfer: 16 << 20, MaxTransfer: 8 << 20}},
	} {
		if _, err := NewLogicalUnit(dev, tc.cfg); err == nil {
			t.Errorf("%s: accepted %+v", tc.name, tc.cfg)
		}
	}
	if _, err := NewLogicalUnit(&fakeDevice{size: 100}, UnitConfig{ID: "x"}); err == nil {
		t.Error("accepted a device smaller than one block")
	}
}

func TestTestUnitReadyAndRequestSense(t *testing.T) {
	u := newTestUnit(t, 1<<20, UnitConfig{})
	mustGood(t, u.exec([]byte{OpTestUnitReady, 0, 0, 0, 0, 0}, nil))
	r := u.exec([]byte{OpRequestSense, 0, 0, 0, 252, 0}, nil)
	mustGood(t, r)
	want := []byte{0x70, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	if !bytes.Equal(r.Data, want) {
		t.Errorf("REQUEST SENSE fixed = % x, want % x", r.Data, want)
	}
	r = u.exec([]byte{OpRequestSense, 1, 0, 0, 252, 0}, nil)
	mustGood(t, r)
	if want := []byte{0x72, 0, 0, 0, 0, 0, 0, 0}; !bytes.Equal(r.Data, want) {
		t.Errorf("REQUEST SENSE descriptor = % x, want % x", r.Data, want)
	}
	r = u.exec([]byte{OpRequestSense, 0, 0, 0, 8, 0}, nil)
	mustGood(t, r)
	if len(r.Data) != 8 {
		t.Errorf("REQUEST SENSE with allocation length 8 returned %d bytes", len(r.Data))
	}
}

func TestInvalidOpcodeAndReservedBits(t *testing.T) {
	u := newTestUnit(t, 1<<20, UnitConfig{})
	for _, tc := range []struct {
		name    string
		cdb     []byte
		code    AdditionalSense
		byteOff uint16
		bit     int
	}{
		{"unknown opcode", []byte{0xc0, 0, 0, 0, 0, 0}, ASCInvalidCommandOperationCode, 0, -1},
		{"unknown service action", []byte{OpServiceActionIn16, 0x1f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, ASCInvalidFieldInCDB, 1, 4},
		{"NACA in control byte", []byte{OpTestUnitReady, 0, 0, 0, 0, 0x04}, ASCInvalidFieldInCDB, 5, 2},
		{"reserved bit in TUR", []byte{OpTestUnitReady, 0x80, 0, 0, 0, 0}, ASCInvalidFieldInCDB, 1, 7},
		{"CMDDT in INQUIRY", []byte{OpInquiry, 0x02, 0, 0, 36, 0}, ASCInvalidFieldInCDB, 1, 1},
		{"reserved bits of READ(6)", []byte{OpRead6, 0x20, 0, 0, 1, 0}, ASCInvalidFieldInCDB, 1, 5},
		{"RDPROTECT", cdb10(OpRead10, 0x20, 0, 1), ASCInvalidFieldInCDB, 1, 7},
		{"WRPROTECT", cdb16(OpWrite16, 0x40, 0, 0), ASCInvalidFieldInCDB, 1, 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := mustSense(t, u.exec(tc.cdb, nil), SenseIllegalRequest, tc.code)
			inCDB, off, bit, ok := s.FieldPointer()
			if !ok || !inCDB || off != tc.byteOff || bit != tc.bit {
				t.Errorf("field pointer = %v %d %d %v, want CDB byte %d bit %d", inCDB, off, bit, ok, tc.byteOff, tc.bit)
			}
		})
	}
	if r := u.exec(nil, nil); r.Status != StatusCheckCondition {
		t.Errorf("empty CDB: status 0x%02x", r.Status)
	}
	mustSense(t, u.exec([]byte{OpRead10, 0, 0}, nil), SenseIllegalRequest, ASCInvalidFieldInCDB)
}

func TestStandardInquiry(t *testing.T) {
	u := newTestUnit(t, 1<<20, UnitConfig{Vendor: "SHARELES", Product: "vol", Revision: "1.0"})
	r := u.exec(Inquiry(255), nil)
	mustGood(t, r)
	b := r.Data
	if len(b) != 66 || b[4] != 61 {
		t.Fatalf("length %d, additional length %d", len(b), b[4])
	}
	if b[0] != 0 || b[2] != 0x06 || b[3] != 0x12 || b[7] != 0x02 {
		t.Errorf("header % x: want qualifier/type 0, SPC-4, HISUP+format 2, CMDQUE", b[:8])
	}
	if got := string(b[8:36]); got != "SHARELESvol             1.0 " {
		t.Errorf("identification %q", got)
	}
	if got := binary.BigEndian.Uint16(b[62:]); got != versionSPC4 {
		t.Errorf("version descriptor 3 = %04x", got)
	}
	d, err := ParseInquiry(b)
	if err != nil || d != (InquiryData{Version: 6, CmdQue: true, Vendor: "SHARELES", Product: "vol", Revision: "1.0"}) {
		t.Errorf("ParseInquiry = %+v, %v", d, err)
	}
	r = u.exec(Inquiry(5), nil)
	mustGood(t, r)
	if !bytes.Equal(r.Data, b[:5]) {
		t.Errorf("allocation length 5: % x", r.Data)
	}
	mustSense(t, u.exec([]byte{OpInquiry, 0, 0x80, 0, 255, 0}, nil), SenseIllegalRequest, ASCInvalidFieldInCDB)
	mustSense(t, u.exec(InquiryVPD(0x99, 255), nil), SenseIllegalRequest, ASCInvalidFieldInCDB)
}

func TestVPDPages(t *testing.T) {
	u := newTestUnit(t, 1<<30, UnitConfig{ID: "lineage-42", Serial: "SN1"})
	vpd := func(page byte) []byte {
		t.Helper()
		r := u.exec(InquiryVPD(page, 1024), nil)
		mustGood(t, r)
		if r.Data[1] != page || int(binary.BigEndian.Uint16(r.Data[2:]))+4 != len(r.Data) {
			t.Fatalf("page 0x%02x header % x len %d", page, r.Data[:4], len(r.Data))
		}
		return r.Data
	}
	if got, want := vpd(0x00), []byte{0, 0, 0, 6, 0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2}; !bytes.Equal(got, want) {
		t.Errorf("supported pages % x", got)
	}
	if got := vpd(0x80); string(got[4:]) != "SN1" {
		t.Errorf("serial % x", got)
	}
	id := vpd(0x83)
	if id[4] != 0x01 || id[5] != 0x03 || id[7] != 8 || id[8]>>4 != 3 {
		t.Errorf("first designator is not NAA 3: % x", id[4:16])
	}
	if !bytes.Equal(id[8:16], u.naa[:]) {
		t.Error("NAA differs from the unit's")
	}
	if id[16] != 0x02 || id[17] != 0x01 || string(id[20:20+id[19]]) != "SHARELESSN1" {
		t.Errorf("T10 vendor designator % x", id[16:])
	}
	// The NAA is derived from ID only: another unit with the same ID (the
	// disk served by another host) has the same designator.
	other := newTestUnit(t, 1<<20, UnitConfig{ID: "lineage-42"})
	third := newTestUnit(t, 1<<20, UnitConfig{ID: "lineage-43"})
	if other.naa != u.naa || third.naa == u.naa {
		t.Errorf("NAA not a function of ID: %x %x %x", u.naa, other.naa, third.naa)
	}

	// Port designators appear when the transport names its port.
	r := u.Execute(context.Background(), &Command{CDB: InquiryVPD(0x83, 1024),
		Port: TargetPort{TargetName: "iqn.2026-01.org.shareless:vm1", TPGT: 1, RelativeID: 2}})
	mustGood(t, r)
	ds, err := ParseDeviceIdentification(r.Data)
	if err != nil {
		t.Fatal(err)
	}
	naa := NAA("lineage-42")
	want := []Designator{
		{CodeSet: 1, Association: 0, Type: 3, ID: naa[:]},
		{CodeSet: 2, Association: 0, Type: 1, ID: []byte("SHARELESSN1")},
		{Protocol: 5, PIV: true, CodeSet: 1, Association: 1, Type: 4, ID: []byte{0, 0, 0, 2}},
		{Protocol: 5, PIV: true, CodeSet: 3, Association: 1, Type: 8, ID: []byte("iqn.2026-01.org.shareless:vm1,t,0x0001\x00\x00")},
		{Protocol: 5, PIV: true, CodeSet: 3, Association: 2, Type: 8, ID: []byte("iqn.2026-01.org.shareless:vm1\x00\x00\x00")},
	}
	if fmt.Sprintf("%+v", ds) != fmt.Sprintf("%+v", want) {
		t.Errorf("designators\n%+v\nwant\n%+v", ds, want)
	}
	if _, err := ParseDeviceIdentification(r.Data[:len(r.Data)-3]); err == nil {
		t.Error("ParseDeviceIdentification accepted a truncated page")
	}
	if body, err := VPDPage(vpd(0x80), 0x80); err != nil || string(body) != "SN1" {
		t.Errorf("VPDPage(0x80) = %q, %v", body, err)
	}
	if _, err := VPDPage(vpd(0x80), 0x83); err == nil {
		t.Error("VPDPage accepted the wrong page code")
	}

	bl, err := ParseBlockLimits(vpd(0xb0))
	if err != nil {
		t.Fatal(err)
	}
	wantBL := BlockLimits{WSNZ: true, MaxCompareAndWrite: 255, OptimalGranularity: 8, MaxTransfer: 16384,
		OptimalTransfer: 2048, MaxUnmapLBACount: 1 << 20, MaxUnmapDescriptors: 256,
		OptimalUnmapGranularity: 8, MaxWriteSame: 1 << 20}
	if bl != wantBL {
		t.Errorf("block limits %+v, want %+v", bl, wantBL)
	}
	if b1 := vpd(0xb1); binary.BigEndian.Uint16(b1[4:]) != 1 {
		t.Errorf("rotation rate % x", b1[4:6])
	}
	if b2 := vpd(0xb2); b2[5] != 0xe4 || b2[6]&7 != 2 {
		t.Errorf("logical block provisioning % x", b2)
	}
}

func TestReadCapacity(t *testing.T) {
	for _, bs := range []uint32{512, 4096} {
		t.Run(fmt.Sprint(bs), func(t *testing.T) {
			u := newTestUnit(t, 64<<20+500, UnitConfig{BlockSize: bs})
			blocks := uint64(64<<20) / uint64(bs)
			r := u.exec([]byte{OpReadCapacity10, 0, 0, 0, 0, 0, 0, 0, 0, 0}, nil)
			mustGood(t, r)
			want := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, uint32(blocks-1)), bs)
			if !bytes.Equal(r.Data, want) {
				t.Errorf("READ CAPACITY(10) = % x, want % x", r.Data, want)
			}
			r = u.exec(ReadCapacity16(32), nil)
			mustGood(t, r)
			exp := uint8(0) // physical block = logical block by default
			if len(r.Data) != 32 || r.Data[13] != exp || r.Data[14] != 0xc0 {
				t.Errorf("READ CAPACITY(16) = % x (want 32 bytes, exponent %d, LBPME|LBPRZ)", r.Data, exp)
			}
			c, err := ParseReadCapacity16(r.Data)
			if err != nil || c != (Capacity{Blocks: blocks, BlockSize: bs, LogicalPerPhysicalExp: exp, LBPME: true, LBPRZ: true}) {
				t.Errorf("ParseReadCapacity16 = %+v, %v", c, err)
			}
			r = u.exec(ReadCapacity16(12), nil)
			mustGood(t, r)
			if len(r.Data) != 12 {
				t.Errorf("allocation length 12 returned %d bytes", len(r.Data))
			}
			mustSense(t, u.exec([]byte{OpReadCapacity10, 0, 0, 0, 0, 1, 0, 0, 0, 0}, nil), SenseIllegalRequest, ASCInvalidFieldInCDB)
			rc16 := ReadCapacity16(32)
			rc16[9] = 1 // LBA without PMI
			mustSense(t, u.exec(rc16, nil), SenseIllegalRequest, ASCInvalidFieldInCDB)
			rc16[14] = 1 // PMI: accepted, the capacity is reported as is
			mustGood(t, u.exec(rc16, nil))
		})
	}
	u := newTestUnit(t, 1<<20, UnitConfig{PhysicalBlockSize: 4096})
	r := u.exec(ReadCapacity16(32), nil)
	mustGood(t, r)
	if c, _ := ParseReadCapacity16(r.Data); c.LogicalPerPhysicalExp != 3 {
		t.Errorf("4096-byte physical blocks of 512 bytes: exponent %d, want 3", c.LogicalPerPhysicalExp)
	}
}

func TestReadWriteEveryCDBSize(t *testing.T) {
	for _, bs := range []uint32{512, 4096} {
		u := newTestUnit(t, 16<<20, UnitConfig{BlockSize: bs})
		for i, tc := range []struct {
			name        string
			read, write func(lba uint64, n uint32) []byte
		}{
			{"6", func(l uint64, n uint32) []byte { return cdb6(OpRead6, uint32(l), uint8(n)) },
				func(l uint64, n uint32) []byte { return cdb6(OpWrite6, uint32(l), uint8(n)) }},
			{"10", func(l uint64, n uint32) []byte { return cdb10(OpRead10, 0x10, uint32(l), uint16(n)) },
				func(l uint64, n uint32) []byte { return cdb10(OpWrite10, 0x10, uint32(l), uint16(n)) }},
			{"12", func(l uint64, n uint32) []byte { return cdb12(OpRead12, 0, uint32(l), n) },
				func(l uint64, n uint32) []byte { return cdb12(OpWrite12, 0, uint32(l), n) }},
			{"16", func(l uint64, n uint32) []byte { return Read16(l, n, true) },
				func(l uint64, n uint32) []byte { return Write16(l, n, true) }},
		} {
			t.Run(fmt.Sprintf("%d/%s", bs, tc.name), func(t *testing.T) {
				lba, n := uint64(10+i*100), uint32(3)
				data := pattern(int(n*bs), byte(i))
				r := u.exec(tc.write(lba, n), data)
				mustGood(t, r)
				if r.DataOutLength != n*bs {
					t.Errorf("DataOutLength %d", r.DataOutLength)
				}
				if got := u.fileBytes(t, int64(lba)*int64(bs), int64(len(data))); !bytes.Equal(got, data) {
					t.Fatal("file does not hold the written data")
				}
				r = u.exec(tc.read(lba, n), nil)
				mustGood(t, r)
				if !bytes.Equal(r.Data, data) {
					t.Fatal("read returned other data")
				}
				r.Release()
			})
		}
	}
}

func TestRead6ZeroMeans256(t *testing.T) {
	u := newTestUnit(t, 1<<20, UnitConfig{})
	r := u.exec(cdb6(OpRead6, 0, 0), nil)
	mustGood(t, r)
	if len(r.Data) != 256*512 {
		t.Errorf("READ(6) length 0 returned %d bytes, want 256 blocks", len(r.Data))
	}
}

func TestBlockRangeChecks(t *testing.T) {
	u := newTestUnit(t, 1<<20, UnitConfig{MaxTransfer: 64 << 10, OptimalTransfer: 64 << 10})
	const blocks = 2048
	for _, tc := range []struct {
		name string
		cdb  []byte
		data []byte
		code AdditionalSense
	}{
		{"read past end", Read16(blocks-1, 2, false), nil, ASCLBAOutOfRange},
		{"read at capacity", Read16(blocks, 1, false), nil, ASCLBAOutOfRange},
		{"read beyond capacity 0 blocks", Read16(blocks+1, 0, false), nil, ASCLBAOutOfRange},
		{"read wrapping lba", Read16(^uint64(0), 2, false), nil, ASCLBAOutOfRange},
		{"read10 past end", cdb10(OpRead10, 0, blocks, 1), nil, ASCLBAOutOfRange},
		{"write past end", Write16(blocks-1, 2, false), make([]byte, 1024), ASCLBAOutOfRange},
		{"read above max transfer", Read16(0, 129, false), nil, ASCInvalidFieldInCDB},
		{"write above max transfer", Write16(0, 129, false), make([]byte, 129*512), ASCInvalidFieldInCDB},
		{"sync cache past end", SynchronizeCache16(blocks-1, 2), nil, ASCLBAOutOfRange},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mustSense(t, u.exec(tc.cdb, tc.data), SenseIllegalRequest, tc.code)
		})
	}
	for _, cdb := range [][]byte{Read16(blocks, 0, false), Read16(0, 128, false), Write16(blocks, 0, false), SynchronizeCache16(0, 0)} {
		mustGood(t, u.exec(cdb, make([]byte, 0)))
	}
}

// TestWriteResiduals follows what initiators (libiscsi's residual tests)
// expect when the Expected Data Transfer Length and the CDB disagree.
func TestWriteResiduals(t *testing.T) {
	u := newTestUnit(t, 1<<20, UnitConfig{})
	a := bytes.Repeat([]byte{'a'}, 1024)
	b := bytes.Repeat([]byte{'b'}, 2048)
	for _, tc := range []struct {
		name     string
		blocks   uint32
		dataLen  int
		status   uint8
		wantFile []byte
	}{
		{"more data than blocks: only the blocks are written", 1, 1024, StatusGood, append(b[:512:512], a[:512]...)},
		{"fewer whole blocks: only those are written", 2, 512, StatusGood, append(b[:512:512], a[:512]...)},
		{"no data at all", 1, 0, StatusGood, a},
		{"partial block: refused, nothing written", 2, 700, StatusCheckCondition, a},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u.writeFile(t, 0, a)
			r := u.exec(Write16(0, tc.blocks, false), b[:tc.dataLen])
			if r.Status != tc.status {
				t.Fatalf("status 0x%02x, want 0x%02x", r.Status, tc.status)
			}
			if r.Status == StatusCheckCondition {
				mustSense(t, r, SenseIllegalRequest, ASCInvalidFieldInInformationUnit)
			}
			if r.DataOutLength != tc.blocks*512 {
				t.Errorf("DataOutLength %d, want %d", r.DataOutLength, tc.blocks*512)
			}
			if got := u.fileBytes(t, 0, 1024); !bytes.Equal(got, tc.wantFile) {
				t.Errorf("file holds %q..., want %q...", got[:4], tc.wantFile[:4])
			}
		})
	}
}

func TestReadOnlyUnit(t *testing.T) {
	u := newTestUnit(t, 1<<20, UnitConfig{ReadOnly: true})
	for _, cdb := range [][]byte{Write16(0, 1, false), cdb10(OpWrite10, 0, 0, 1), cdb6(OpWrite6, 0, 1)} {
		mustSense(t, u.exec(cdb, make([]byte, 512)), SenseDataProtect, ASCWriteProtected)
	}
	r := u.exec(Read16(0, 1, false), nil)
	mustGood(t, r)
	mustGood(t, u.exec(SynchronizeCache16(0, 0), nil))
}

// fakeDevice is a memory device whose calls can fail and are recorded.
type fakeDevice struct {
	mu      sync.Mutex
	size    int64
	mem     []byte
	err     error // returned by every call when set
	fuaSeen []bool
	flushes int
}

func (d *fakeDevice) Size() int64 { return d.size }

func (d *fakeDevice) ReadAt(_ context.Context, p []byte, off int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.err != nil {
		return d.err
	}
	copy(p, d.bytes()[off:])
	return nil
}

func (d *fakeDevice) bytes() []byte {
	if d.mem == nil {
		d.mem = make([]byte, d.size)
	}
	return d.mem
}

func (d *fakeDevice) WriteAt(_ context.Context, p []byte, off int64, fua bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.err != nil {
		return d.err
	}
	d.fuaSeen = append(d.fuaSeen, fua)
	copy(d.bytes()[off:], p)
	return nil
}

func (d *fakeDevice) Flush(context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.flushes++
	return d.err
}

func (d *fakeDevice) Discard(_ context.Context, off, length int64) error {
	return d.WriteZeroes(context.Background(), off, length, true)
}

func (d *fakeDevice) WriteZeroes(_ context.Context, off, length int64, _ bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.err != nil {
		return d.err
	}
	clear(d.bytes()[off : off+length])
	return nil
}

func TestFUAReachesDevice(t *testing.T) {
	dev := &fakeDevice{size: 1 << 20}
	lu, err := NewLogicalUnit(dev, UnitConfig{ID: "x"})
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 512)
	for _, cdb := range [][]byte{
		Write16(0, 1, true), Write16(0, 1, false),
		cdb10(OpWrite10, cdbFUA, 0, 1), cdb10(OpWrite10, 0x10, 0, 1), // DPO alone is not FUA
		cdb12(OpWrite12, cdbFUA, 0, 1), cdb6(OpWrite6, 0, 1),
	} {
		mustGood(t, lu.Execute(context.Background(), &Command{CDB: cdb, Data: data}))
	}
	if want := []bool{true, false, true, false, true, false}; fmt.Sprint(dev.fuaSeen) != fmt.Sprint(want) {
		t.Errorf("fua flags %v, want %v", dev.fuaSeen, want)
	}
	mustGood(t, lu.Execute(context.Background(), &Command{CDB: SynchronizeCache16(0, 0)}))
	mustGood(t, lu.Execute(context.Background(), &Command{CDB: cdb10(OpSynchronizeCache10, 0x02, 0, 0)}))
	if dev.flushes != 2 {
		t.Errorf("%d flushes, want 2", dev.flushes)
	}
	// A failed flush is a write error: acknowledged writes may be lost.
	dev.err = &blockdev.MediumError{Write: true, Err: errors.New("EIO")}
	mustSense(t, lu.Execute(context.Background(), &Command{CDB: SynchronizeCache16(0, 0)}), SenseMediumError, ASCWriteError)
}

func TestDeviceErrorsMapToSense(t *testing.T) {
	for _, tc := range []struct {
		name  string
		err   error
		write bool
		key   SenseKey
		code  AdditionalSense
	}{
		{"out of range", fmt.Errorf("x: %w", blockdev.ErrOutOfRange), false, SenseIllegalRequest, ASCLBAOutOfRange},
		{"read only", blockdev.ErrReadOnly, true, SenseDataProtect, ASCWriteProtected},
		{"read medium error", &blockdev.MediumError{Off: 4096, Err: errors.New("EIO")}, false, SenseMediumError, ASCUnrecoveredReadError},
		{"write medium error", &blockdev.MediumError{Write: true, Off: 4096, Err: errors.New("EIO")}, true, SenseMediumError, ASCWriteError},
		{"unavailable", fmt.Errorf("peer: %w", blockdev.ErrUnavailable), false, SenseHardwareError, ASCLUCommunicationFailure},
		{"unavailable after the device's own deadline", fmt.Errorf("%w: %w", blockdev.ErrUnavailable, context.DeadlineExceeded), true, SenseHardwareError, ASCLUCommunicationFailure},
		{"anything else", errors.New("boom"), false, SenseHardwareError, ASCInternalTargetFailure},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dev := &fakeDevice{size: 1 << 20, err: tc.err}
			lu, err := NewLogicalUnit(dev, UnitConfig{ID: "x"})
			if err != nil {
				t.Fatal(err)
			}
			cdb := Read16(8, 1, false)
			if tc.write {
				cdb = Write16(8, 1, false)
			}
			r := lu.Execute(context.Background(), &Command{CDB: cdb, Data: make([]byte, 512)})
			s := mustSense(t, r, tc.key, tc.code)
			if tc.key == SenseMediumError && (!s.InformationValid || s.Information != 8) {
				t.Errorf("medium error information %d (valid %v), want LBA 8", s.Information, s.InformationValid)
			}
		})
	}
}

func TestCanceledContextAborts(t *testing.T) {
	dev := &fakeDevice{size: 1 << 20}
	lu, err := NewLogicalUnit(dev, UnitConfig{ID: "x"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if r := lu.Execute(ctx, &Command{CDB: Read16(0, 1, false)}); r.Status != StatusTaskAborted {
		t.Errorf("canceled command: status 0x%02x, want TASK ABORTED", r.Status)
	}
	dev.err = context.Canceled
	if r := lu.fail(ctx, dev.err, false); r.Status != StatusTaskAborted {
		t.Errorf("device canceled: status 0x%02x", r.Status)
	}
}

func TestReportLUNs(t *testing.T) {
	cdb := func(sel byte, alloc uint32) []byte {
		b := make([]byte, 12)
		b[0], b[2] = OpReportLUNs, sel
		binary.BigEndian.PutUint32(b[6:], alloc)
		return b
	}
	r := ReportLUNs(&Command{CDB: cdb(0, 4096)}, []uint16{0, 1, 300})
	mustGood(t, r)
	want := []byte{0, 0, 0, 24, 0, 0, 0, 0,
		0, 0, 0, 0, 0, 0, 0, 0,
		0, 1, 0, 0, 0, 0, 0, 0,
		0x41, 0x2c, 0, 0, 0, 0, 0, 0}
	if !bytes.Equal(r.Data, want) {
		t.Errorf("REPORT LUNS = % x, want % x", r.Data, want)
	}
	r = ReportLUNs(&Command{CDB: cdb(0, 16)}, []uint16{0, 1, 300})
	mustGood(t, r)
	if !bytes.Equal(r.Data, want[:16]) {
		t.Errorf("allocation length 16: % x", r.Data)
	}
	r = ReportLUNs(&Command{CDB: cdb(1, 4096)}, []uint16{0})
	mustGood(t, r)
	if !bytes.Equal(r.Data, make([]byte, 8)) {
		t.Errorf("well-known only: % x", r.Data)
	}
	mustSense(t, ReportLUNs(&Command{CDB: cdb(0, 15)}, nil), SenseIllegalRequest, ASCInvalidFieldInCDB)
	mustSense(t, ReportLUNs(&Command{CDB: cdb(7, 4096)}, nil), SenseIllegalRequest, ASCInvalidFieldInCDB)
}

func TestUnsupportedLUN(t *testing.T) {
	r := UnsupportedLUN(&Command{CDB: Inquiry(96)})
	mustGood(t, r)
	if len(r.Data) != 36 || r.Data[0] != 0x7f {
		t.Errorf("INQUIRY to a missing LUN: % x", r.Data)
	}
	mustSense(t, UnsupportedLUN(&Command{CDB: Read16(0, 1, false)}), SenseIllegalRequest, ASCLUNotSupported)
	mustSense(t, UnsupportedLUN(&Command{CDB: []byte{OpTestUnitReady, 0, 0, 0, 0, 0}}), SenseIllegalRequest, ASCLUNotSupported)
	for _, desc := range []byte{0, 1} {
		r = UnsupportedLUN(&Command{CDB: []byte{OpRequestSense, desc, 0, 0, 252, 0}})
		mustGood(t, r)
		if s, err := ParseSense(r.Data); err != nil || s.Code != ASCLUNotSupported || r.Data[0] != 0x70+2*desc {
			t.Errorf("REQUEST SENSE (DESC %d) to a missing LUN: % x %v", desc, r.Data, err)
		}
	}
}

// TestConcurrentExecute runs many writers and readers on disjoint and
// overlapping ranges at once (run with -race): every block ends up holding
// one whole write, never a mix.
func TestConcurrentExecute(t *testing.T) {
	u := newTestUnit(t, 8<<20, UnitConfig{})
	const workers, rounds, blocks = 16, 50, 8
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			ctx := context.Background()
			buf := bytes.Repeat([]byte{byte(w + 1)}, blocks*512)
			for i := range rounds {
				lba := uint64((w*rounds + i) % 64 * blocks)
				if r := u.Execute(ctx, &Command{CDB: Write16(lba, blocks, i%5 == 0), Data: buf}); r.Status != StatusGood {
					t.Errorf("write: status %x", r.Status)
					return
				}
				r := u.Execute(ctx, &Command{CDB: Read16(lba, blocks, false)})
				if r.Status != StatusGood || len(r.Data) != blocks*512 {
					t.Errorf("read: status %x len %d", r.Status, len(r.Data))
					return
				}
				r.Release()
			}
		})
	}
	wg.Wait()
	for lba := 0; lba < 64*blocks; lba++ {
		blk := u.fileBytes(t, int64(lba)*512, 512)
		if !bytes.Equal(blk, bytes.Repeat(blk[:1], 512)) {
			t.Fatalf("block %d holds a torn write", lba)
		}
	}
}

func TestDataOutLengthSaturates(t *testing.T) {
	u := newTestUnit(t, 1<<20, UnitConfig{})
	r := u.exec(Write16(0, 0xffffffff, false), nil)
	mustSense(t, r, SenseIllegalRequest, ASCLBAOutOfRange)
	if r.DataOutLength != 0xffffffff {
		t.Errorf("DataOutLength %#x, want saturated", r.DataOutLength)
	}
}
