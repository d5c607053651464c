package scsi

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"testing"

	"github.com/shareless/shareless/blockdev"
)

func cawCDB(lba uint64, n uint8, fua bool) []byte {
	b := blockCDB16(OpCompareAndWrite, lba, 0, fua)
	b[13] = n
	return b
}

func TestVerify(t *testing.T) {
	u := newTestUnit(t, 1<<20, UnitConfig{})
	data := pattern(4*512, 9)
	u.writeFile(t, 10*512, data)
	block := pattern(512, 1)
	u.writeFile(t, 100*512, bytes.Repeat(block, 3))
	bad := bytes.Clone(data)
	bad[1000] ^= 1
	badBlock := bytes.Repeat(block, 3)
	badBlock[512+7] ^= 1
	u.writeFile(t, 200*512, badBlock)
	for _, tc := range []struct {
		name    string
		cdb     []byte
		data    []byte
		miscmp  int // expected miscompare offset, -1 for GOOD
		dataOut uint32
	}{
		{"10 medium only", cdb10(OpVerify10, 0, 10, 4), nil, -1, 0},
		{"12 medium only, whole disk", cdb12(OpVerify12, 0, 0, 2048), nil, -1, 0},
		{"16 compare equal", cdb16(OpVerify16, 0x02, 10, 4), data, -1, 2048},
		{"10 compare equal", cdb10(OpVerify10, 0x02, 10, 4), data, -1, 2048},
		{"16 compare differs at 1000", cdb16(OpVerify16, 0x02, 10, 4), bad, 1000, 2048},
		{"12 compare differs at 1000", cdb12(OpVerify12, 0x02, 10, 4), bad, 1000, 2048},
		{"one block, equal", cdb10(OpVerify10, 0x06, 100, 3), block, -1, 512},
		{"one block vs a differing block", cdb10(OpVerify10, 0x06, 99, 3), block, 0, 512},
		{"one block, second block differs", cdb16(OpVerify16, 0x06, 200, 3), block, 512 + 7, 512},
		{"zero blocks", cdb16(OpVerify16, 0x02, 10, 0), nil, -1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := u.exec(tc.cdb, tc.data)
			if r.DataOutLength != tc.dataOut {
				t.Errorf("DataOutLength %d, want %d", r.DataOutLength, tc.dataOut)
			}
			if tc.miscmp < 0 {
				mustGood(t, r)
				return
			}
			s := mustSense(t, r, SenseMiscompare, ASCMiscompareDuringVerify)
			if !s.InformationValid || s.Information != uint64(tc.miscmp) {
				t.Errorf("information %d (valid %v), want %d", s.Information, s.InformationValid, tc.miscmp)
			}
		})
	}
	for _, tc := range []struct {
		name string
		cdb  []byte
		data []byte
		code AdditionalSense
	}{
		{"BYTCHK 10b reserved", cdb10(OpVerify10, 0x04, 0, 1), nil, ASCInvalidFieldInCDB},
		{"VRPROTECT", cdb10(OpVerify10, 0x20, 0, 1), nil, ASCInvalidFieldInCDB},
		{"past the end", cdb16(OpVerify16, 0, 2047, 2), nil, ASCLBAOutOfRange},
		{"compare data missing", cdb16(OpVerify16, 0x02, 0, 2), make([]byte, 512), ASCInvalidFieldInInformationUnit},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mustSense(t, u.exec(tc.cdb, tc.data), SenseIllegalRequest, tc.code)
		})
	}
}

func TestVerifyMediumError(t *testing.T) {
	dev := &fakeDevice{size: 1 << 20, err: &blockdev.MediumError{Off: 512 * 7, Err: errors.New("EIO")}}
	lu, err := NewLogicalUnit(dev, UnitConfig{ID: "x"})
	if err != nil {
		t.Fatal(err)
	}
	r := lu.Execute(context.Background(), &Command{CDB: cdb10(OpVerify10, 0, 0, 8)})
	if s := mustSense(t, r, SenseMediumError, ASCUnrecoveredReadError); s.Information != 7 {
		t.Errorf("information %d, want LBA 7", s.Information)
	}
}

func TestWriteAndVerify(t *testing.T) {
	dev := &fakeDevice{size: 1 << 20}
	lu, err := NewLogicalUnit(dev, UnitConfig{ID: "x"})
	if err != nil {
		t.Fatal(err)
	}
	data := pattern(1024, 5)
	for _, cdb := range [][]byte{cdb10(OpWriteAndVerify10, 0x02, 4, 2), cdb12(OpWriteAndVerify12, 0, 4, 2), cdb16(OpWriteAndVerify16, 0x02, 4, 2)} {
		dev.fuaSeen = nil
		clear(dev.bytes())
		r := lu.Execute(context.Background(), &Command{CDB: cdb, Data: data})
		mustGood(t, r)
		if !bytes.Equal(dev.mem[2048:3072], data) {
			t.Errorf("%x: data not written", cdb[0])
		}
		if len(dev.fuaSeen) != 1 || !dev.fuaSeen[0] {
			t.Errorf("%x: write not forced to the medium: %v", cdb[0], dev.fuaSeen)
		}
		if r.DataOutLength != 1024 {
			t.Errorf("DataOutLength %d", r.DataOutLength)
		}
	}
	mustSense(t, lu.Execute(context.Background(), &Command{CDB: cdb10(OpWriteAndVerify10, 0x06, 0, 1), Data: data}), SenseIllegalRequest, ASCInvalidFieldInCDB)
	ro := newTestUnit(t, 1<<20, UnitConfig{ReadOnly: true})
	mustSense(t, ro.exec(cdb16(OpWriteAndVerify16, 0, 0, 1), data[:512]), SenseDataProtect, ASCWriteProtected)
}

func TestCompareAndWrite(t *testing.T) {
	u := newTestUnit(t, 1<<20, UnitConfig{})
	old := pattern(1024, 1)
	next := pattern(1024, 2)
	for _, tc := range []struct {
		name     string
		cdb      []byte
		data     []byte
		key      SenseKey
		code     AdditionalSense
		miscmp   int
		wantFile []byte
	}{
		{"match writes", cawCDB(8, 2, true), append(bytes.Clone(old), next...), SenseNoSense, 0, -1, next},
		{"mismatch changes nothing", cawCDB(8, 2, false), append(append(bytes.Clone(old[:600]), ^old[600]), append(old[601:], next...)...), SenseMiscompare, ASCMiscompareDuringVerify, 600, old},
		{"zero blocks", cawCDB(8, 0, false), nil, SenseNoSense, 0, -1, old},
		{"past the end", cawCDB(2047, 2, false), append(bytes.Clone(old), next...), SenseIllegalRequest, ASCLBAOutOfRange, -1, old},
		{"data short", cawCDB(8, 2, false), old, SenseIllegalRequest, ASCInvalidFieldInCDB, -1, old},
		{"data long", cawCDB(8, 2, false), append(append(bytes.Clone(old), next...), old...), SenseIllegalRequest, ASCInvalidFieldInCDB, -1, old},
		{"256 blocks wrap to 0", cawCDB(8, 0, false), make([]byte, 2*256*512), SenseIllegalRequest, ASCInvalidFieldInCDB, -1, old},
		{"WRPROTECT", func() []byte { b := cawCDB(8, 2, false); b[1] |= 0x20; return b }(), append(bytes.Clone(old), next...), SenseIllegalRequest, ASCInvalidFieldInCDB, -1, old},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u.writeFile(t, 8*512, old)
			r := u.exec(tc.cdb, tc.data)
			if tc.key == SenseNoSense {
				mustGood(t, r)
			} else {
				s := mustSense(t, r, tc.key, tc.code)
				if tc.miscmp >= 0 && (!s.InformationValid || s.Information != uint64(tc.miscmp)) {
					t.Errorf("miscompare at %d, want %d", s.Information, tc.miscmp)
				}
			}
			if r.DataOutLength != uint32(tc.cdb[13])*1024 {
				t.Errorf("DataOutLength %d", r.DataOutLength)
			}
			if got := u.fileBytes(t, 8*512, 1024); !bytes.Equal(got, tc.wantFile) {
				t.Error("file contents wrong after COMPARE AND WRITE")
			}
		})
	}
	ro := newTestUnit(t, 1<<20, UnitConfig{ReadOnly: true})
	mustSense(t, ro.exec(cawCDB(0, 1, false), make([]byte, 1024)), SenseDataProtect, ASCWriteProtected)
}

// TestCompareAndWriteAtomic increments a counter block with COMPARE AND
// WRITE from many goroutines (retrying on MISCOMPARE) while others write
// the neighbouring blocks of the same lock region: no increment is lost.
func TestCompareAndWriteAtomic(t *testing.T) {
	u := newTestUnit(t, 1<<20, UnitConfig{})
	const workers, incs = 8, 40
	ctx := context.Background()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var noise sync.WaitGroup
	noise.Go(func() {
		buf := pattern(512, 7)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if r := u.Execute(ctx, &Command{CDB: Write16(uint64(1+i%8), 1, false), Data: buf}); r.Status != StatusGood {
				t.Errorf("noise write: %x", r.Status)
				return
			}
		}
	})
	for range workers {
		wg.Go(func() {
			for range incs {
				for {
					r := u.Execute(ctx, &Command{CDB: Read16(0, 1, false)})
					if r.Status != StatusGood {
						t.Errorf("read: %x", r.Status)
						return
					}
					v := binary.BigEndian.Uint64(r.Data)
					r.Release()
					data := make([]byte, 1024)
					binary.BigEndian.PutUint64(data, v)
					binary.BigEndian.PutUint64(data[512:], v+1)
					r = u.Execute(ctx, &Command{CDB: cawCDB(0, 1, false), Data: data})
					if r.Status == StatusGood {
						break
					}
					if !errors.Is(senseOf(t, r), ASCMiscompareDuringVerify) {
						t.Errorf("CAW: %v", senseOf(t, r))
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	noise.Wait()
	if got := binary.BigEndian.Uint64(u.fileBytes(t, 0, 8)); got != workers*incs {
		t.Errorf("counter %d, want %d", got, workers*incs)
	}
}

// TestConcurrentMixedCommands runs every kind of data command at once on
// overlapping ranges (run with -race). Besides the race detector it checks
// that only COMPARE AND WRITE may fail (MISCOMPARE), and that the pooled
// Data-In of an unreleased READ is never handed to another command.
func TestConcurrentMixedCommands(t *testing.T) {
	u := newTestUnit(t, 4<<20, UnitConfig{})
	block := pattern(512, 5)
	zero := make([]byte, 512)
	list := UnmapParameterList([]UnmapDescriptor{{LBA: 64, Blocks: 64}, {LBA: 512, Blocks: 8}})
	cmds := []Command{
		{CDB: Write16(0, 128, false), Data: bytes.Repeat(block, 128)},
		{CDB: Write16(100, 8, true), Data: bytes.Repeat(zero, 8)},
		{CDB: WriteSame16(32, 256, true, false), Data: zero},
		{CDB: WriteSame16(96, 64, false, false), Data: block},
		{CDB: Unmap(uint16(len(list))), Data: list},
		{CDB: GetLBAStatus(0, 4096)},
		{CDB: cdb16(OpVerify16, 0, 0, 1024)},
		{CDB: SynchronizeCache16(0, 0)},
		{CDB: modeSense6(false, pcCurrent, 0x3f, 0, 255)},
		{CDB: InquiryVPD(0x83, 255)},
		{CDB: cawCDB(100, 1, false), Data: append(bytes.Clone(zero), block...)},
	}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			ctx := context.Background()
			held := u.Execute(ctx, &Command{CDB: Read16(uint64(w*16), 16, false)})
			mustGood(t, held)
			snapshot := bytes.Clone(held.Data)
			for i := range 60 {
				c := cmds[(w+i)%len(cmds)]
				r := u.Execute(ctx, &c)
				if r.Status != StatusGood && !(c.CDB[0] == OpCompareAndWrite && errors.Is(senseOf(t, r), SenseMiscompare)) {
					t.Errorf("CDB % x: status %x %v", c.CDB, r.Status, senseOf(t, r))
					return
				}
				r.Release()
				rd := u.Execute(ctx, &Command{CDB: Read16(uint64(i), 8, false)})
				rd.Release()
			}
			if !bytes.Equal(held.Data, snapshot) {
				t.Error("an unreleased READ buffer was reused")
			}
			held.Release()
		})
	}
	wg.Wait()
}
