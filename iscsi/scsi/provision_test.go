package scsi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"
)

// dataExtents lists the [start, end) byte ranges of the file that hold
// data, straight from SEEK_DATA/SEEK_HOLE, independently of blockdev.
func (u *testUnit) dataExtents(t testing.TB) [][2]int64 {
	t.Helper()
	const seekData, seekHole = 3, 4
	f, err := os.Open(u.path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	var out [][2]int64
	fd := int(f.Fd())
	for off := int64(0); off < st.Size(); {
		data, err := syscall.Seek(fd, off, seekData)
		if errors.Is(err, syscall.ENXIO) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		hole, err := syscall.Seek(fd, data, seekHole)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, [2]int64{data, hole})
		off = hole
	}
	return out
}

// isHole reports whether [off, off+n) holds no data in the file.
func (u *testUnit) isHole(t testing.TB, off, n int64) bool {
	for _, e := range u.dataExtents(t) {
		if e[0] < off+n && off < e[1] {
			return false
		}
	}
	return true
}

// isData reports whether all of [off, off+n) is allocated.
func (u *testUnit) isData(t testing.TB, off, n int64) bool {
	for _, e := range u.dataExtents(t) {
		if e[0] <= off && off+n <= e[1] {
			return true
		}
	}
	return false
}

func TestWriteSame(t *testing.T) {
	const mib = 1 << 20
	ones := bytes.Repeat([]byte{0xff}, 4*mib)
	pat := pattern(512, 3)
	for _, tc := range []struct {
		name     string
		cdb      []byte
		data     []byte
		wantHole bool // the range is deallocated in the file afterwards
		wantData []byte
	}{
		{"zeroes with UNMAP deallocate", WriteSame16(2048, 2048, true, false), make([]byte, 512), true, nil},
		{"zeroes without UNMAP stay allocated", WriteSame16(2048, 2048, false, false), make([]byte, 512), false, nil},
		{"NDOB with UNMAP deallocates", WriteSame16(2048, 2048, true, true), nil, true, nil},
		{"WRITE SAME(10) with UNMAP deallocates", cdb10(OpWriteSame10, writeSameUnmap, 2048, 2048), make([]byte, 512), true, nil},
		{"pattern is written", WriteSame16(2048, 2048, false, false), pat, false, pat},
		{"pattern with UNMAP is written, not unmapped", cdb10(OpWriteSame10, writeSameUnmap, 2048, 2048), pat, false, pat},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := newTestUnit(t, 8*mib, UnitConfig{})
			u.writeFile(t, 0, ones)
			r := u.exec(tc.cdb, tc.data)
			mustGood(t, r)
			if tc.wantHole != u.isHole(t, mib, mib) {
				t.Errorf("hole = %v, want %v; extents %v", !tc.wantHole, tc.wantHole, u.dataExtents(t))
			}
			if !tc.wantHole && !u.isData(t, mib, mib) {
				t.Errorf("range not allocated: %v", u.dataExtents(t))
			}
			want := bytes.Repeat(tc.wantData, mib/512)
			if tc.wantData == nil {
				want = make([]byte, mib)
			}
			if got := u.fileBytes(t, mib, mib); !bytes.Equal(got, want) {
				t.Error("file range does not hold the WRITE SAME data")
			}
			// The neighbours are untouched.
			if !bytes.Equal(u.fileBytes(t, mib-512, 512), ones[:512]) || !bytes.Equal(u.fileBytes(t, 2*mib, 512), ones[:512]) {
				t.Error("WRITE SAME touched blocks outside its range")
			}
		})
	}
}

func TestWriteSameRefusals(t *testing.T) {
	u := newTestUnit(t, 1<<20, UnitConfig{})
	ro := newTestUnit(t, 1<<20, UnitConfig{ReadOnly: true})
	block := make([]byte, 512)
	for _, tc := range []struct {
		name string
		u    *testUnit
		cdb  []byte
		data []byte
		key  SenseKey
		code AdditionalSense
	}{
		{"zero blocks (WSNZ)", u, WriteSame16(0, 0, false, false), block, SenseIllegalRequest, ASCInvalidFieldInCDB},
		{"past the end", u, WriteSame16(2047, 2, false, false), block, SenseIllegalRequest, ASCLBAOutOfRange},
		{"above MAXIMUM WRITE SAME LENGTH", u, WriteSame16(0, 1<<20+1, false, false), block, SenseIllegalRequest, ASCInvalidFieldInCDB},
		{"WRPROTECT", u, cdb16(OpWriteSame16, 0x20, 0, 1), block, SenseIllegalRequest, ASCInvalidFieldInCDB},
		{"ANCHOR", u, cdb16(OpWriteSame16, 0x10, 0, 1), block, SenseIllegalRequest, ASCInvalidFieldInCDB},
		{"NDOB on WRITE SAME(10) is reserved", u, cdb10(OpWriteSame10, 0x01, 0, 1), block, SenseIllegalRequest, ASCInvalidFieldInCDB},
		{"pattern block missing", u, WriteSame16(0, 1, false, false), block[:100], SenseIllegalRequest, ASCInvalidFieldInInformationUnit},
		{"more than one pattern block", u, WriteSame16(0, 1, false, false), make([]byte, 1024), SenseIllegalRequest, ASCInvalidFieldInInformationUnit},
		{"read-only", ro, WriteSame16(0, 1, true, false), block, SenseDataProtect, ASCWriteProtected},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mustSense(t, tc.u.exec(tc.cdb, tc.data), tc.key, tc.code)
		})
	}
}

func TestUnmap(t *testing.T) {
	const mib = 1 << 20
	for _, bs := range []int64{512, 4096} {
		t.Run(fmt.Sprint(bs), func(t *testing.T) {
			u := newTestUnit(t, 8*mib, UnitConfig{BlockSize: uint32(bs)})
			ones := bytes.Repeat([]byte{0xff}, 8*mib)
			u.writeFile(t, 0, ones)
			list := UnmapParameterList([]UnmapDescriptor{
				{LBA: uint64(mib / bs), Blocks: uint32(mib / bs)},
				{LBA: uint64(4 * mib / bs), Blocks: uint32(2 * mib / bs)},
				{LBA: 0, Blocks: 0},
			})
			r := u.exec(Unmap(uint16(len(list))), list)
			mustGood(t, r)
			if r.DataOutLength != uint32(len(list)) {
				t.Errorf("DataOutLength %d", r.DataOutLength)
			}
			want := [][2]int64{{0, mib}, {2 * mib, 4 * mib}, {6 * mib, 8 * mib}}
			if got := u.dataExtents(t); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("data extents %v, want %v", got, want)
			}
			r = u.exec(Read16(uint64(mib/bs), uint32(mib/bs), false), nil)
			mustGood(t, r)
			if !allZero(r.Data) {
				t.Error("unmapped blocks do not read zero (LBPRZ)")
			}
		})
	}
}

func TestUnmapRefusals(t *testing.T) {
	u := newTestUnit(t, 1<<20, UnitConfig{})
	ro := newTestUnit(t, 1<<20, UnitConfig{ReadOnly: true})
	ones := bytes.Repeat([]byte{0xff}, 1<<20)
	good := UnmapDescriptor{LBA: 0, Blocks: 8}
	many := make([]UnmapDescriptor, 257)
	for _, tc := range []struct {
		name string
		u    *testUnit
		list []byte
		key  SenseKey
		code AdditionalSense
		ptr  int // field pointer into the parameter list, or -1
	}{
		{"list shorter than its header", u, []byte{0, 6, 0, 0}, SenseIllegalRequest, ASCParameterListLengthError, -1},
		{"descriptor past the end, after a good one", u, UnmapParameterList([]UnmapDescriptor{good, {LBA: 2040, Blocks: 9}}), SenseIllegalRequest, ASCLBAOutOfRange, -1},
		{"descriptor above MAXIMUM UNMAP LBA COUNT", u, UnmapParameterList([]UnmapDescriptor{good, {LBA: 0, Blocks: 1<<20 + 1}}), SenseIllegalRequest, ASCInvalidFieldInParameterList, 32},
		{"too many descriptors", u, UnmapParameterList(many), SenseIllegalRequest, ASCInvalidFieldInParameterList, 2},
		{"read-only", ro, UnmapParameterList([]UnmapDescriptor{good}), SenseDataProtect, ASCWriteProtected, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.u.writeFile(t, 0, ones)
			s := mustSense(t, tc.u.exec(Unmap(uint16(len(tc.list))), tc.list), tc.key, tc.code)
			if tc.ptr >= 0 {
				inCDB, off, _, ok := s.FieldPointer()
				if !ok || inCDB || int(off) != tc.ptr {
					t.Errorf("field pointer %v %d %v, want parameter byte %d", inCDB, off, ok, tc.ptr)
				}
			}
			if !tc.u.isData(t, 0, 4096) {
				t.Error("a refused UNMAP deallocated blocks")
			}
		})
	}
	// A block descriptor data length beyond the list is cut to it, and a
	// partial last descriptor is ignored.
	u.writeFile(t, 0, ones)
	list := UnmapParameterList([]UnmapDescriptor{{LBA: 8, Blocks: 8}, {LBA: 0, Blocks: 8}})
	list[3] = 0xff
	mustGood(t, u.exec(Unmap(uint16(len(list)-1)), list))
	if !u.isHole(t, 4096, 4096) || !u.isData(t, 0, 4096) {
		t.Errorf("extents %v: want only the first descriptor applied", u.dataExtents(t))
	}
	mustGood(t, u.exec(Unmap(0), nil))
}

func TestGetLBAStatus(t *testing.T) {
	const mib = 1 << 20
	for _, bs := range []int64{512, 4096} {
		t.Run(fmt.Sprint(bs), func(t *testing.T) {
			u := newTestUnit(t, 8*mib, UnitConfig{BlockSize: uint32(bs)})
			blk := func(bytes int64) uint64 { return uint64(bytes / bs) }
			// Sparse from the start: one deallocated extent.
			r := u.exec(GetLBAStatus(0, 1024), nil)
			mustGood(t, r)
			got, err := ParseLBAStatus(r.Data)
			if want := []LBAStatus{{0, uint32(blk(8 * mib)), Deallocated}}; err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("empty disk: %v %v, want %v", got, err, want)
			}
			// Fill the disk, then deallocate [1, 2) MiB with UNMAP and
			// [4, 6) MiB with WRITE SAME UNMAP.
			u.writeFile(t, 0, bytes.Repeat([]byte{1}, 8*mib))
			list := UnmapParameterList([]UnmapDescriptor{{LBA: blk(mib), Blocks: uint32(blk(mib))}})
			mustGood(t, u.exec(Unmap(uint16(len(list))), list))
			mustGood(t, u.exec(WriteSame16(blk(4*mib), uint32(blk(2*mib)), true, false), make([]byte, bs)))
			want := []LBAStatus{
				{0, uint32(blk(mib)), Mapped},
				{blk(mib), uint32(blk(mib)), Deallocated},
				{blk(2 * mib), uint32(blk(2 * mib)), Mapped},
				{blk(4 * mib), uint32(blk(2 * mib)), Deallocated},
				{blk(6 * mib), uint32(blk(2 * mib)), Mapped},
			}
			r = u.exec(GetLBAStatus(0, 4096), nil)
			mustGood(t, r)
			if len(r.Data) != 8+16*len(want) {
				t.Errorf("returned %d bytes", len(r.Data))
			}
			if got, err := ParseLBAStatus(r.Data); err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("got %v %v, want %v", got, err, want)
			}
			// From the middle of an extent.
			r = u.exec(GetLBAStatus(blk(mib)+3, 4096), nil)
			mustGood(t, r)
			if got, _ := ParseLBAStatus(r.Data); len(got) == 0 || got[0] != (LBAStatus{blk(mib) + 3, uint32(blk(mib) - 3), Deallocated}) {
				t.Errorf("from the middle: %v", got)
			}
			// Allocation lengths: room for two descriptors returns two;
			// a length cutting the first descriptor returns its head.
			r = u.exec(GetLBAStatus(0, 8+32), nil)
			mustGood(t, r)
			if got, _ := ParseLBAStatus(r.Data); fmt.Sprint(got) != fmt.Sprint(want[:2]) || r.Data[3] != 36 {
				t.Errorf("allocation length 40: %v, header % x", got, r.Data[:8])
			}
			r = u.exec(GetLBAStatus(0, 12), nil)
			mustGood(t, r)
			if len(r.Data) != 12 || r.Data[3] != 20 {
				t.Errorf("allocation length 12: % x", r.Data)
			}
			mustSense(t, u.exec(GetLBAStatus(blk(8*mib), 4096), nil), SenseIllegalRequest, ASCLBAOutOfRange)
		})
	}
}

// TestGetLBAStatusPartialBlock: a block of which only part is allocated
// counts as mapped.
func TestGetLBAStatusPartialBlock(t *testing.T) {
	// A file system allocates whole blocks of its own, so this needs a
	// device reporting byte-granular extents.
	dev := &extentDevice{fakeDevice: fakeDevice{size: 64 << 10}, mapped: [][2]int64{{5000, 5100}, {20480, 24576}}}
	lu, err := NewLogicalUnit(dev, UnitConfig{ID: "x", BlockSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	r := lu.Execute(t.Context(), &Command{CDB: GetLBAStatus(0, 1024)})
	mustGood(t, r)
	got, _ := ParseLBAStatus(r.Data)
	want := []LBAStatus{{0, 1, Deallocated}, {1, 1, Mapped}, {2, 3, Deallocated}, {5, 1, Mapped}, {6, 10, Deallocated}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

// extentDevice reports the byte ranges in mapped as allocated.
type extentDevice struct {
	fakeDevice
	mapped [][2]int64
}

func (d *extentDevice) Allocation(_ context.Context, off int64) (bool, int64, error) {
	next := d.size
	for _, m := range d.mapped {
		if off >= m[0] && off < m[1] {
			return true, m[1] - off, nil
		}
		if m[0] > off {
			next = min(next, m[0])
		}
	}
	return false, next - off, nil
}

// cancelAfterWrites is a device whose context is canceled after a number
// of writes, like a task aborted while a long WRITE SAME runs.
type cancelAfterWrites struct {
	fakeDevice
	cancel func()
	left   int
}

func (d *cancelAfterWrites) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	if d.left--; d.left == 0 {
		d.cancel()
	}
	return d.fakeDevice.WriteAt(ctx, p, off, fua)
}

func TestWriteSamePatternStopsWhenAborted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	dev := &cancelAfterWrites{fakeDevice: fakeDevice{size: 64 << 20}, cancel: cancel, left: 2}
	lu, err := NewLogicalUnit(dev, UnitConfig{ID: "x"})
	if err != nil {
		t.Fatal(err)
	}
	r := lu.Execute(ctx, &Command{CDB: WriteSame16(0, 1<<17, false, false), Data: pattern(512, 1)})
	if r.Status != StatusTaskAborted {
		t.Errorf("status 0x%02x, want TASK ABORTED", r.Status)
	}
	if len(dev.fuaSeen) != 2 {
		t.Errorf("%d chunks written after the abort, want 2", len(dev.fuaSeen))
	}
}

// TestGetLBAStatusWithoutAllocationReporter: a device that cannot tell
// reports every block mapped, never deallocated.
func TestGetLBAStatusWithoutAllocationReporter(t *testing.T) {
	dev := &fakeDevice{size: 1 << 20}
	lu, err := NewLogicalUnit(dev, UnitConfig{ID: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if lu.Blocks() != 2048 || lu.BlockSize() != 512 {
		t.Errorf("Blocks %d BlockSize %d", lu.Blocks(), lu.BlockSize())
	}
	r := lu.Execute(context.Background(), &Command{CDB: GetLBAStatus(100, 1024)})
	mustGood(t, r)
	if got, _ := ParseLBAStatus(r.Data); fmt.Sprint(got) != fmt.Sprint([]LBAStatus{{100, 1948, Mapped}}) {
		t.Errorf("got %v", got)
	}
}
