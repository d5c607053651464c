package scsi

import (
	"context"
	"encoding/binary"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// Persistent reservations (SPC-4 §5.9): registrations and at most one
// reservation, kept in memory only (PTPL_C is 0: they do not survive a
// restart of the target). The state is an immutable snapshot swapped
// under a mutex by PERSISTENT RESERVE OUT, so that the per-command
// conflict check of Execute is one atomic load and, while nothing is
// reserved, nothing more.
//
// Not implemented: the unit attentions SPC-4 §5.9.11 raises for other
// registrants (REGISTRATIONS PREEMPTED, RESERVATIONS RELEASED), which
// belong to the target's per-nexus unit attention queue; the task abort
// of PREEMPT AND ABORT, which behaves as PREEMPT; REGISTER AND MOVE,
// SPEC_I_PT, ALL_TG_PT and APTPL, which REPORT CAPABILITIES disclaims.

// Persistent reservation types (SPC-4 table 212).
const (
	prWriteExclusive         = 0x1
	prExclusiveAccess        = 0x3
	prWriteExclusiveRegOnly  = 0x5
	prExclusiveAccessRegOnly = 0x6
	prWriteExclusiveAllRegs  = 0x7
	prExclusiveAccessAllRegs = 0x8
)

// PERSISTENT RESERVE OUT service actions (SPC-4 table 214) and PERSISTENT
// RESERVE IN service actions (SPC-4 table 200).
const (
	proRegister           = 0x0
	proReserve            = 0x1
	proRelease            = 0x2
	proClear              = 0x3
	proPreempt            = 0x4
	proPreemptAndAbort    = 0x5
	proRegisterAndIgnore  = 0x6
	priReadKeys           = 0x0
	priReadReservation    = 0x1
	priReportCapabilities = 0x2
	priReadFullStatus     = 0x3
	proParamLen           = 24
)

// access says how a command fares against another nexus's reservation
// (SPC-4 table 61, SBC-3 table 13, simplified to three classes).
type access uint8

const (
	accessWrite  access = iota // conflicts under every type (the default: safe)
	accessRead                 // conflicts under the exclusive-access types
	accessAlways               // INQUIRY, TEST UNIT READY, READ CAPACITY, PR IN/OUT, ...
)

// nexus identifies an I_T nexus: initiator port and target port.
type nexus struct {
	initiator string
	port      TargetPort
}

type reservation struct {
	holder nexus
	typ    uint8
}

// prState is one immutable version of the persistent reservation state.
type prState struct {
	generation uint32
	regs       map[nexus]uint64 // registered nexus → reservation key
	resv       *reservation
}

// prUnit is the persistent reservation state of a logical unit.
type prUnit struct {
	mu    sync.Mutex // serialises PERSISTENT RESERVE OUT
	state atomic.Pointer[prState]
}

func newPRUnit() *prUnit {
	p := &prUnit{}
	p.state.Store(&prState{regs: map[nexus]uint64{}})
	return p
}

func allRegistrants(typ uint8) bool {
	return typ == prWriteExclusiveAllRegs || typ == prExclusiveAccessAllRegs
}

// holds reports whether n holds the reservation: the reserving nexus, or
// any registrant for the all-registrants types (SPC-4 §5.9.10).
func (s *prState) holds(n nexus) bool {
	if s.resv == nil {
		return false
	}
	if allRegistrants(s.resv.typ) {
		_, ok := s.regs[n]
		return ok
	}
	return s.resv.holder == n
}

// conflicts reports whether a command of class a from n must end in
// RESERVATION CONFLICT (SPC-4 §5.9.1, table 61).
func (s *prState) conflicts(n nexus, a access) bool {
	if s.resv == nil || a == accessAlways || s.holds(n) {
		return false
	}
	_, registered := s.regs[n]
	switch s.resv.typ {
	case prWriteExclusive:
		return a == accessWrite
	case prExclusiveAccess:
		return true
	case prWriteExclusiveRegOnly, prWriteExclusiveAllRegs:
		return a == accessWrite && !registered
	default: // the exclusive-access registrants-only and all-registrants types
		return !registered
	}
}

func reservationConflict() Response { return Response{Status: StatusReservationConflict} }

func commandNexus(c *Command) nexus { return nexus{initiator: c.Initiator, port: c.Port} }

// persistentReserveIn serves PERSISTENT RESERVE IN (SPC-4 §6.13) for the
// service actions of the command table: READ KEYS, READ RESERVATION,
// REPORT CAPABILITIES and READ FULL STATUS.
func (lu *LogicalUnit) persistentReserveIn(_ context.Context, c *Command) Response {
	s := lu.pr.state.Load()
	allocLen := uint32(binary.BigEndian.Uint16(c.CDB[7:]))
	b := binary.BigEndian.AppendUint32(make([]byte, 0, 64), s.generation)
	switch serviceAction(c.CDB) {
	case priReadKeys: // sorted, so that the list is stable
		keys := slices.Sorted(maps.Values(s.regs))
		b = binary.BigEndian.AppendUint32(b, uint32(8*len(keys)))
		for _, k := range keys {
			b = binary.BigEndian.AppendUint64(b, k)
		}
	case priReadReservation:
		if s.resv == nil {
			b = binary.BigEndian.AppendUint32(b, 0)
			break
		}
		var key uint64 // zero for the all-registrants types (§6.13.3.2)
		if !allRegistrants(s.resv.typ) {
			key = s.regs[s.resv.holder]
		}
		b = binary.BigEndian.AppendUint32(b, 16)
		b = binary.BigEndian.AppendUint64(b, key)
		b = append(b, 0, 0, 0, 0, 0, s.resv.typ, 0, 0)
	case priReportCapabilities:
		// §6.13.4: no replace lost reservation, CRH, SPEC_I_PT, ALL_TG_PT
		// or PTPL; TMV with the six types we implement.
		b = []byte{0, 8, 0, 0x80, 0xea, 0x01, 0, 0}
	case priReadFullStatus:
		b = binary.BigEndian.AppendUint32(b, 0)
		for _, n := range slices.SortedFunc(maps.Keys(s.regs), compareNexus) {
			b = binary.BigEndian.AppendUint64(b, s.regs[n])
			b = append(b, 0, 0, 0, 0, 0, 0)
			if s.holds(n) {
				b[len(b)-2], b[len(b)-1] = 0x01, s.resv.typ // R_HOLDER, SCOPE/TYPE
			}
			b = append(b, 0, 0, 0, 0)
			b = binary.BigEndian.AppendUint16(b, n.port.RelativeID)
			id := transportID(n.initiator)
			b = binary.BigEndian.AppendUint32(b, uint32(len(id)))
			b = append(b, id...)
		}
		binary.BigEndian.PutUint32(b[4:], uint32(len(b)-8))
	}
	return allocate(b, allocLen)
}

func compareNexus(a, b nexus) int {
	if c := strings.Compare(a.initiator, b.initiator); c != 0 {
		return c
	}
	return strings.Compare(a.port.TargetName, b.port.TargetName)
}

// transportID is the iSCSI TransportID of an initiator port (SPC-4
// §7.6.4.6): format 01b when the name carries ",i,0x<ISID>", else 00b;
// null-terminated, padded to a multiple of four, at least 20 bytes of name.
func transportID(name string) []byte {
	var format byte
	if strings.Contains(name, ",i,0x") {
		format = 0x40
	}
	n := max((len(name)+4)&^3, 20)
	b := make([]byte, 4+n)
	b[0] = format | protocolISCSI
	binary.BigEndian.PutUint16(b[2:], uint16(n))
	copy(b[4:], name)
	return b
}

// persistentReserveOut serves PERSISTENT RESERVE OUT (SPC-4 §6.14,
// §5.9.5-5.9.11) with the basic 24-byte parameter list. Key mismatches
// end in RESERVATION CONFLICT, as the standard says.
func (lu *LogicalUnit) persistentReserveOut(_ context.Context, c *Command) Response {
	paramLen := binary.BigEndian.Uint32(c.CDB[5:])
	return withDataOut(lu.persistentReserveOutList(c, paramLen), paramLen)
}

func (lu *LogicalUnit) persistentReserveOutList(c *Command, paramLen uint32) Response {
	cdb := c.CDB
	sa, scope, typ := serviceAction(cdb), cdb[2]>>4, cdb[2]&0x0f
	// The command table has no entry for REGISTER AND MOVE (7) and
	// beyond, so Execute refuses them.
	switch {
	case scope != 0: // only LU_SCOPE exists in SPC-4
		return invalidCDB(2, 7)
	case paramLen != proParamLen || len(c.Data) < proParamLen:
		return illegalRequest(ASCParameterListLengthError)
	}
	p := c.Data[:proParamLen]
	key, saKey := binary.BigEndian.Uint64(p), binary.BigEndian.Uint64(p[8:])
	switch {
	case p[20]&0x08 != 0: // SPEC_I_PT: SIP_C is 0
		return invalidParam(20, 3)
	case p[20]&0x04 != 0: // ALL_TG_PT: ATP_C is 0
		return invalidParam(20, 2)
	case p[20]&0x01 != 0: // APTPL: PTPL_C is 0
		return invalidParam(20, 0)
	}
	usesType := sa == proReserve || sa == proRelease || sa == proPreempt || sa == proPreemptAndAbort
	if usesType && !validPRType(typ) {
		return invalidCDB(2, 3)
	}

	lu.pr.mu.Lock()
	defer lu.pr.mu.Unlock()
	old := lu.pr.state.Load()
	s := &prState{generation: old.generation, regs: maps.Clone(old.regs), resv: old.resv}
	n := commandNexus(c)
	cur, registered := s.regs[n]
	if sa != proRegisterAndIgnore && (registered && cur != key || !registered && (sa != proRegister || key != 0)) {
		return reservationConflict()
	}
	switch sa {
	case proRegister, proRegisterAndIgnore:
		if saKey == 0 {
			if !registered {
				return Response{}
			}
			s.unregister(n)
		} else {
			s.regs[n] = saKey
		}
		s.generation++
	case proReserve:
		switch {
		case s.resv == nil:
			s.resv = &reservation{holder: n, typ: typ}
		case !s.holds(n) || s.resv.typ != typ:
			return reservationConflict()
		default:
			return Response{}
		}
	case proRelease:
		switch {
		case !s.holds(n):
			return Response{}
		case s.resv.typ != typ:
			return checkCondition(Sense{Key: SenseIllegalRequest, Code: ASCInvalidReleaseOfPR})
		}
		s.resv = nil
	case proClear:
		s.regs, s.resv = map[nexus]uint64{}, nil
		s.generation++
	case proPreempt, proPreemptAndAbort:
		if r := s.preempt(n, saKey, typ); r.Status != StatusGood {
			return r
		}
		s.generation++
	}
	lu.pr.state.Store(s)
	return Response{}
}

func validPRType(t uint8) bool {
	switch t {
	case prWriteExclusive, prExclusiveAccess, prWriteExclusiveRegOnly, prExclusiveAccessRegOnly,
		prWriteExclusiveAllRegs, prExclusiveAccessAllRegs:
		return true
	}
	return false
}

// unregister removes n's registration; a reservation it held goes with
// it, except under the all-registrants types while others remain
// (SPC-4 §5.9.11.2).
func (s *prState) unregister(n nexus) {
	holder := s.holds(n)
	delete(s.regs, n)
	if holder && (!allRegistrants(s.resv.typ) || len(s.regs) == 0) {
		s.resv = nil
	}
}

// removeKey unregisters every nexus registered with key but keep, and
// reports whether any was.
func (s *prState) removeKey(key uint64, keep nexus) bool {
	found := false
	for m, k := range s.regs {
		if k == key && m != keep {
			s.unregister(m)
			found = true
		}
	}
	return found
}

// preempt applies PREEMPT from n for the registrations with saKey (SPC-4
// §5.9.11.4): it removes them and, when they held the reservation, takes
// it with type typ.
func (s *prState) preempt(n nexus, saKey uint64, typ uint8) Response {
	switch {
	case s.resv != nil && allRegistrants(s.resv.typ) && saKey == 0:
		for m := range s.regs {
			if m != n {
				delete(s.regs, m)
			}
		}
		s.resv = &reservation{holder: n, typ: typ}
		return Response{}
	case s.resv != nil && !allRegistrants(s.resv.typ) && s.regs[s.resv.holder] == saKey:
		s.removeKey(saKey, n)
		s.resv = &reservation{holder: n, typ: typ}
		return Response{}
	case saKey == 0:
		return invalidParam(8, -1)
	case !s.removeKey(saKey, n):
		return reservationConflict()
	}
	return Response{}
}
