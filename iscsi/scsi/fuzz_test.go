package scsi

import (
	"context"
	"testing"
)

// FuzzExecute feeds random CDBs and Data-Out buffers to a small unit over
// a sparse file: Execute must never panic and must always return a valid
// response (GOOD without sense, or CHECK CONDITION with parseable sense
// data of a real sense key, or RESERVATION CONFLICT; never BUSY), with
// Data-In bounded by what the command may return.
func FuzzExecute(f *testing.F) {
	const size = 64 << 10
	u := newTestUnit(f, size, UnitConfig{MaxTransfer: 16 << 10, OptimalTransfer: 8 << 10, PersistentReservations: true})
	block := pattern(512, 1)
	// Seeds: every supported command with plausible fields, taken from the
	// same table Execute uses, plus the builders' CDBs.
	for _, cmd := range u.cmds {
		cdb := make([]byte, 16)
		copy(cdb, cmd.usage)
		for i := 1; i < len(cmd.usage); i++ {
			cdb[i] &= 0x1f // small LBAs and lengths, no protection bits
		}
		if cmd.hasSA {
			cdb[1] = byte(cmd.sa)
		}
		f.Add(cdb, block)
	}
	for _, cdb := range [][]byte{
		Read16(3, 2, true), Write16(120, 8, false), WriteSame16(0, 16, true, false), WriteSame16(8, 8, false, true),
		SynchronizeCache16(0, 0), GetLBAStatus(0, 64), ReadCapacity16(32), Inquiry(96), InquiryVPD(0x83, 255),
		InquiryVPD(0xb0, 64), Unmap(24), cawCDB(4, 1, true), modeSense6(false, pcCurrent, 0x3f, 0xff, 255),
		rsoc(0x80, 0, 0, 4096), rsoc(rsocOpcodeSA, OpServiceActionIn16, SAGetLBAStatus, 64),
	} {
		f.Add(cdb, append(UnmapParameterList([]UnmapDescriptor{{LBA: 1, Blocks: 4}}), block...))
	}
	maxData := uint64(u.cfg.MaxTransfer)
	f.Fuzz(func(t *testing.T, cdb, data []byte) {
		r := u.Execute(context.Background(), &Command{CDB: cdb, Data: data, ExpectedDataLength: uint32(len(data)),
			Initiator: "iqn.2026-01.org.example:fuzz,i,0x1"})
		switch r.Status {
		case StatusReservationConflict:
		case StatusGood:
			if len(r.Sense) != 0 {
				t.Fatalf("GOOD with sense % x", r.Sense)
			}
		case StatusCheckCondition:
			s, err := ParseSense(r.Sense)
			if err != nil {
				t.Fatalf("CHECK CONDITION with bad sense % x: %v", r.Sense, err)
			}
			if s.Key == SenseNoSense || s.Key > SenseMiscompare {
				t.Fatalf("CHECK CONDITION with sense key %v", s.Key)
			}
			if len(r.Data) != 0 {
				t.Fatalf("CHECK CONDITION with %d bytes of data", len(r.Data))
			}
		default:
			t.Fatalf("status 0x%02x for CDB % x", r.Status, cdb)
		}
		if uint64(len(r.Data)) > maxData+16<<10 {
			t.Fatalf("%d bytes of Data-In for CDB % x", len(r.Data), cdb)
		}
		r.Release()
	})
}
