package scsi

import (
	"context"
	"encoding/binary"
)

// REPORT SUPPORTED OPERATION CODES reporting options (SPC-4 §6.35.1).
const (
	rsocAll         = 0 // every command, descriptor format
	rsocOpcode      = 1 // one opcode without service action
	rsocOpcodeSA    = 2 // one opcode with service action
	rsocOpcodeMaybe = 3 // one opcode, service action if it has them (SPC-5)
)

// SUPPORT field values of the one-command format (SPC-4 table 240).
const (
	supportNone     = 0x1 // not supported
	supportStandard = 0x3 // supported in conformance with a standard
)

// timeoutsDescriptor is the command timeouts descriptor (SPC-4
// §6.35.4) that RCTD asks for: no nominal or recommended timeout is
// claimed (zero: not specified).
func timeoutsDescriptor() []byte { return []byte{0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0} }

// reportSupportedOpcodes serves REPORT SUPPORTED OPERATION CODES (SPC-4
// §6.35) from the same table Execute dispatches and validates with.
func (lu *LogicalUnit) reportSupportedOpcodes(_ context.Context, c *Command) Response {
	cdb := c.CDB
	rctd := cdb[2]&0x80 != 0
	op, sa := cdb[3], binary.BigEndian.Uint16(cdb[4:])
	allocLen := binary.BigEndian.Uint32(cdb[6:])
	var b []byte
	switch cdb[2] & 0x07 {
	case rsocAll:
		b = make([]byte, 4)
		for i := range lu.cmds {
			cmd := &lu.cmds[i]
			var flags byte
			if rctd {
				flags |= 0x02 // CTDP
			}
			if cmd.hasSA {
				flags |= 0x01 // SERVACTV
			}
			b = append(b, cmd.usage[0], 0, byte(cmd.sa>>8), byte(cmd.sa), 0, flags)
			b = binary.BigEndian.AppendUint16(b, uint16(len(cmd.usage)))
			if rctd {
				b = append(b, timeoutsDescriptor()...)
			}
		}
		binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	case rsocOpcode, rsocOpcodeSA, rsocOpcodeMaybe:
		hasSA := lu.hasServiceActions(op)
		switch {
		case cdb[2]&0x07 == rsocOpcode && hasSA:
			return invalidCDB(2, 2)
		case cdb[2]&0x07 == rsocOpcodeSA && !hasSA && lu.byOp[op] != 0:
			return invalidCDB(2, 2)
		}
		cmd := lu.find(op, sa)
		b = []byte{0, supportNone, 0, 0}
		if cmd != nil {
			b[1] = supportStandard
			binary.BigEndian.PutUint16(b[2:], uint16(len(cmd.usage)))
			b = append(b, cmd.usage...)
			if cmd.hasSA {
				// The service action field reads as its value, not a mask.
				b[4+1] = byte(cmd.sa)
			}
		}
		if rctd {
			b[1] |= 0x80 // CTDP
			b = append(b, timeoutsDescriptor()...)
		}
	default:
		return invalidCDB(2, 2)
	}
	return allocate(b, allocLen)
}

// hasServiceActions reports whether op is supported with service actions.
func (lu *LogicalUnit) hasServiceActions(op byte) bool {
	i := lu.byOp[op]
	return i != 0 && lu.cmds[i-1].hasSA
}
