package scsi

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"testing"
)

// prInitiator is one I_T nexus talking to a unit with persistent
// reservations enabled.
type prInitiator struct {
	t    *testing.T
	u    *testUnit
	name string
}

func prUnitAndInitiators(t *testing.T) (*testUnit, *prInitiator, *prInitiator) {
	u := newTestUnit(t, 1<<20, UnitConfig{PersistentReservations: true})
	return u, &prInitiator{t, u, InitiatorPortName("iqn.2026-01.org.example:a", [6]byte{0x23, 0xd0, 0, 0, 0, 1})},
		&prInitiator{t, u, InitiatorPortName("iqn.2026-01.org.example:b", [6]byte{0x23, 0xd0, 0, 0, 0, 2})}
}

func (p *prInitiator) exec(cdb, data []byte) Response {
	return p.u.Execute(context.Background(), &Command{CDB: cdb, Data: data, Initiator: p.name,
		Port: TargetPort{TargetName: "iqn.2026-01.org.shareless:t", TPGT: 1, RelativeID: 1}})
}

func (p *prInitiator) out(sa, typ byte, key, saKey uint64) Response {
	cdb := []byte{OpPersistentReserveOut, sa, typ, 0, 0, 0, 0, 0, proParamLen, 0}
	param := make([]byte, proParamLen)
	binary.BigEndian.PutUint64(param, key)
	binary.BigEndian.PutUint64(param[8:], saKey)
	return p.exec(cdb, param)
}

func (p *prInitiator) in(sa byte) []byte {
	p.t.Helper()
	r := p.exec([]byte{OpPersistentReserveIn, sa, 0, 0, 0, 0, 0, 0x10, 0, 0}, nil)
	mustGood(p.t, r)
	return r.Data
}

// keys returns the generation and the registered keys (READ KEYS).
func (p *prInitiator) keys() (uint32, []uint64) {
	b := p.in(priReadKeys)
	var keys []uint64
	for k := b[8:]; len(k) >= 8; k = k[8:] {
		keys = append(keys, binary.BigEndian.Uint64(k))
	}
	return binary.BigEndian.Uint32(b), keys
}

// reservation returns the key and type of the reservation, or ok=false.
func (p *prInitiator) reservation() (key uint64, typ byte, ok bool) {
	b := p.in(priReadReservation)
	if binary.BigEndian.Uint32(b[4:]) == 0 {
		return 0, 0, false
	}
	return binary.BigEndian.Uint64(b[8:]), b[21] & 0x0f, true
}

func (p *prInitiator) canRead() bool { return p.exec(Read16(0, 1, false), nil).Status == StatusGood }
func (p *prInitiator) canWrite() bool {
	return p.exec(Write16(0, 1, false), make([]byte, 512)).Status == StatusGood
}

func mustStatus(t *testing.T, r Response, status uint8) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status 0x%02x, want 0x%02x; %v", r.Status, status, senseOf(t, r))
	}
}

func TestPersistentReservationAccess(t *testing.T) {
	// For each type: can the holder, another registrant and a stranger
	// read and write? (SPC-4 table 61.)
	for _, tc := range []struct {
		typ                      byte
		regRead, regWrite        bool
		strangerRead, strangerWr bool
	}{
		{prWriteExclusive, true, false, true, false},
		{prExclusiveAccess, false, false, false, false},
		{prWriteExclusiveRegOnly, true, true, true, false},
		{prExclusiveAccessRegOnly, true, true, false, false},
		{prWriteExclusiveAllRegs, true, true, true, false},
		{prExclusiveAccessAllRegs, true, true, false, false},
	} {
		t.Run(fmt.Sprint(tc.typ), func(t *testing.T) {
			u, a, b := prUnitAndInitiators(t)
			c := &prInitiator{t, u, "iqn.2026-01.org.example:c,i,0x23d000000003"}
			mustGood(t, a.out(proRegister, 0, 0, 0xa))
			mustGood(t, b.out(proRegisterAndIgnore, 0, 0, 0xb))
			mustGood(t, a.out(proReserve, tc.typ, 0xa, 0))
			mustGood(t, a.out(proReserve, tc.typ, 0xa, 0)) // again: no-op
			if !a.canRead() || !a.canWrite() {
				t.Error("the holder lost access")
			}
			if b.canRead() != tc.regRead || b.canWrite() != tc.regWrite {
				t.Errorf("registrant: read %v write %v, want %v %v", b.canRead(), b.canWrite(), tc.regRead, tc.regWrite)
			}
			if c.canRead() != tc.strangerRead || c.canWrite() != tc.strangerWr {
				t.Errorf("stranger: read %v write %v, want %v %v", c.canRead(), c.canWrite(), tc.strangerRead, tc.strangerWr)
			}
			// Commands every nexus may always send.
			mustGood(t, c.exec(Inquiry(36), nil))
			mustGood(t, c.exec([]byte{OpTestUnitReady, 0, 0, 0, 0, 0}, nil))
			mustGood(t, c.exec(ReadCapacity16(32), nil))
			if r := c.exec(WriteSame16(0, 1, true, true), nil); tc.strangerWr != (r.Status == StatusGood) {
				t.Errorf("stranger WRITE SAME: status %x", r.Status)
			}
			key, typ, ok := c.reservation()
			wantKey := uint64(0xa)
			if allRegistrants(tc.typ) {
				wantKey = 0
			}
			if !ok || key != wantKey || typ != tc.typ {
				t.Errorf("READ RESERVATION: %x %d %v", key, typ, ok)
			}
			// Another nexus cannot reserve; the holder releases.
			if !allRegistrants(tc.typ) {
				mustStatus(t, b.out(proReserve, tc.typ, 0xb, 0), StatusReservationConflict)
			}
			other := byte(prWriteExclusive)
			if tc.typ == other {
				other = prExclusiveAccess
			}
			mustSense(t, a.out(proRelease, other, 0xa, 0), SenseIllegalRequest, ASCInvalidReleaseOfPR)
			mustGood(t, a.out(proRelease, tc.typ, 0xa, 0))
			if _, _, ok := c.reservation(); ok {
				t.Error("reservation survived RELEASE")
			}
			if !c.canWrite() {
				t.Error("stranger cannot write after RELEASE")
			}
		})
	}
}

func TestPersistentReservationRegistration(t *testing.T) {
	_, a, b := prUnitAndInitiators(t)
	gen0, keys := a.keys()
	if len(keys) != 0 {
		t.Fatalf("fresh unit has keys %x", keys)
	}
	// Wrong keys are RESERVATION CONFLICT.
	mustStatus(t, a.out(proRegister, 0, 5, 0xa), StatusReservationConflict)
	mustStatus(t, a.out(proReserve, prWriteExclusive, 0xa, 0), StatusReservationConflict)
	mustGood(t, a.out(proRegister, 0, 0, 0xa))
	mustStatus(t, a.out(proRegister, 0, 0xb, 0xc), StatusReservationConflict)
	mustGood(t, a.out(proRegister, 0, 0xa, 0xaa)) // change the key
	mustGood(t, b.out(proRegisterAndIgnore, 0, 0x1234, 0xb))
	if gen, keys := b.keys(); gen != gen0+3 || fmt.Sprint(keys) != fmt.Sprint([]uint64{0xb, 0xaa}) { // sorted
		t.Errorf("READ KEYS: generation %d keys %x", gen-gen0, keys)
	}
	// Unregistering the holder releases its reservation.
	mustGood(t, a.out(proReserve, prExclusiveAccess, 0xaa, 0))
	if b.canRead() {
		t.Error("EXCLUSIVE ACCESS did not stop the other registrant")
	}
	mustGood(t, a.out(proRegister, 0, 0xaa, 0))
	if _, _, ok := b.reservation(); ok || !b.canRead() {
		t.Error("unregistering the holder kept its reservation")
	}
	// CLEAR drops everything.
	mustGood(t, a.out(proRegister, 0, 0, 0xa))
	mustGood(t, a.out(proReserve, prWriteExclusive, 0xa, 0))
	mustGood(t, b.out(proClear, 0, 0xb, 0))
	if _, keys := a.keys(); len(keys) != 0 {
		t.Errorf("keys after CLEAR: %x", keys)
	}
	if _, _, ok := a.reservation(); ok {
		t.Error("reservation after CLEAR")
	}
	// Parameter list checks.
	cdb := []byte{OpPersistentReserveOut, proRegister, 0, 0, 0, 0, 0, 0, 20, 0}
	mustSense(t, a.exec(cdb, make([]byte, 20)), SenseIllegalRequest, ASCParameterListLengthError)
	param := make([]byte, proParamLen)
	param[15] = 1
	for _, flag := range []byte{0x01, 0x04, 0x08} { // APTPL, ALL_TG_PT, SPEC_I_PT
		param[20] = flag
		mustSense(t, a.exec([]byte{OpPersistentReserveOut, proRegister, 0, 0, 0, 0, 0, 0, proParamLen, 0}, param),
			SenseIllegalRequest, ASCInvalidFieldInParameterList)
	}
	mustSense(t, a.out(proReserve, 2, 0, 0), SenseIllegalRequest, ASCInvalidFieldInCDB)    // no type 2
	mustSense(t, a.out(proReserve, 0x11, 0, 0), SenseIllegalRequest, ASCInvalidFieldInCDB) // scope 1
	mustSense(t, a.exec([]byte{OpPersistentReserveOut, 7, 0, 0, 0, 0, 0, 0, proParamLen, 0}, param), SenseIllegalRequest, ASCInvalidFieldInCDB)
	mustSense(t, a.exec([]byte{OpPersistentReserveIn, 4, 0, 0, 0, 0, 0, 0x10, 0, 0}, nil), SenseIllegalRequest, ASCInvalidFieldInCDB)
}

func TestPersistentReservationPreempt(t *testing.T) {
	_, a, b := prUnitAndInitiators(t)
	mustGood(t, a.out(proRegister, 0, 0, 0xa))
	mustGood(t, b.out(proRegister, 0, 0, 0xb))
	mustGood(t, a.out(proReserve, prWriteExclusive, 0xa, 0))
	gen, _ := a.keys()
	// b preempts a's reservation and registration, taking EXCLUSIVE ACCESS.
	mustGood(t, b.out(proPreempt, prExclusiveAccess, 0xb, 0xa))
	gen2, keys := b.keys()
	if gen2 != gen+1 || fmt.Sprint(keys) != fmt.Sprint([]uint64{0xb}) {
		t.Errorf("after PREEMPT: generation +%d keys %x", gen2-gen, keys)
	}
	if key, typ, ok := b.reservation(); !ok || key != 0xb || typ != prExclusiveAccess {
		t.Errorf("after PREEMPT: reservation %x %d %v", key, typ, ok)
	}
	if a.canRead() {
		t.Error("the preempted nexus can still read under EXCLUSIVE ACCESS")
	}
	// Preempting a key nobody holds conflicts; key 0 without a reservation
	// is an invalid field.
	mustStatus(t, b.out(proPreempt, prExclusiveAccess, 0xb, 0x99), StatusReservationConflict)
	mustGood(t, b.out(proRelease, prExclusiveAccess, 0xb, 0))
	mustSense(t, b.out(proPreempt, prExclusiveAccess, 0xb, 0), SenseIllegalRequest, ASCInvalidFieldInParameterList)
	// Under all-registrants, PREEMPT with key 0 removes every other
	// registration and reserves for the preempting nexus.
	mustGood(t, a.out(proRegister, 0, 0, 0xa))
	mustGood(t, a.out(proReserve, prWriteExclusiveAllRegs, 0xa, 0))
	mustGood(t, b.out(proPreemptAndAbort, prWriteExclusive, 0xb, 0))
	if _, keys := a.keys(); fmt.Sprint(keys) != fmt.Sprint([]uint64{0xb}) {
		t.Errorf("keys after all-registrants PREEMPT: %x", keys)
	}
	if key, typ, ok := a.reservation(); !ok || key != 0xb || typ != prWriteExclusive {
		t.Errorf("reservation after all-registrants PREEMPT: %x %d %v", key, typ, ok)
	}
}

func TestPersistentReserveInData(t *testing.T) {
	_, a, b := prUnitAndInitiators(t)
	if got, want := a.in(priReportCapabilities), []byte{0, 8, 0, 0x80, 0xea, 0x01, 0, 0}; !bytes.Equal(got, want) {
		t.Errorf("REPORT CAPABILITIES % x, want % x", got, want)
	}
	mustGood(t, a.out(proRegister, 0, 0, 0xa))
	mustGood(t, b.out(proRegister, 0, 0, 0xb))
	mustGood(t, b.out(proReserve, prWriteExclusive, 0xb, 0))
	full := a.in(priReadFullStatus)
	if int(binary.BigEndian.Uint32(full[4:]))+8 != len(full) {
		t.Fatalf("READ FULL STATUS length %d for %d bytes", binary.BigEndian.Uint32(full[4:]), len(full))
	}
	d := full[8:]
	var got []string
	for len(d) >= 24 {
		n := int(binary.BigEndian.Uint32(d[20:]))
		id := d[24 : 24+n]
		got = append(got, fmt.Sprintf("%x holder=%d type=%d port=%d proto=%x name=%s", binary.BigEndian.Uint64(d), d[12]&1, d[13],
			binary.BigEndian.Uint16(d[18:]), id[0], bytes.TrimRight(id[4:], "\x00")))
		if n%4 != 0 || binary.BigEndian.Uint16(id[2:]) != uint16(n-4) {
			t.Errorf("TransportID length %d, field %d", n, binary.BigEndian.Uint16(id[2:]))
		}
		d = d[24+n:]
	}
	want := []string{
		"a holder=0 type=0 port=1 proto=45 name=iqn.2026-01.org.example:a,i,0x23d000000001",
		"b holder=1 type=1 port=1 proto=45 name=iqn.2026-01.org.example:b,i,0x23d000000002",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("READ FULL STATUS\n%v\nwant\n%v", got, want)
	}
	// Allocation length cuts the data.
	r := a.exec([]byte{OpPersistentReserveIn, priReadKeys, 0, 0, 0, 0, 0, 0, 12, 0}, nil)
	mustGood(t, r)
	if len(r.Data) != 12 || binary.BigEndian.Uint32(r.Data[4:]) != 16 {
		t.Errorf("READ KEYS with allocation length 12: % x", r.Data)
	}
}

func TestPersistentReservationsDisabled(t *testing.T) {
	u := newTestUnit(t, 1<<20, UnitConfig{})
	mustSense(t, u.exec([]byte{OpPersistentReserveIn, 0, 0, 0, 0, 0, 0, 0x10, 0, 0}, nil), SenseIllegalRequest, ASCInvalidCommandOperationCode)
}
