package scsi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/shareless/shareless/internal/bufpool"
	"log/slog"

	"github.com/shareless/shareless/blockdev"
)

// UnitConfig describes a logical unit as INQUIRY, the VPD pages and the
// mode pages present it. Zero values take the documented defaults.
type UnitConfig struct {
	// ID is the unit's stable identity (e.g. the disk's lineage id). The
	// NAA designator of VPD page 0x83 and the default serial number are
	// derived from it, so that the same disk served by another host (after
	// a migration) is recognised by multipath and by the guest as the same
	// unit. Required.
	ID string
	// Vendor is the T10 vendor identification, at most 8 ASCII characters
	// (default "SHARELES").
	Vendor string
	// Product is at most 16 ASCII characters (default "shareless disk").
	Product string
	// Revision is at most 4 ASCII characters (default "0001").
	Revision string
	// Serial is the unit serial number of VPD page 0x80, printable ASCII
	// of at most 64 characters (default: derived from ID).
	Serial string
	// ReadOnly makes every command that writes fail with DATA PROTECT,
	// WRITE PROTECTED and sets WP in the mode parameter header.
	ReadOnly bool
	// BlockSize is the logical block size in bytes: 512 (default) or 4096.
	BlockSize uint32
	// PhysicalBlockSize is the unit in which the backing store allocates,
	// reported by READ CAPACITY(16) (default: BlockSize). Linux already
	// aligns I/O to OptimalGranularity, and libiscsi's GET LBA STATUS test
	// mis-predicts descriptor LBAs when this is larger than BlockSize, so
	// the default claims nothing beyond it.
	PhysicalBlockSize uint32
	// OptimalGranularity is the OPTIMAL TRANSFER LENGTH GRANULARITY in
	// bytes (default 4096, the file system block: smaller writes cost a
	// read-modify-write in the page cache).
	OptimalGranularity uint32
	// OptimalTransfer is the OPTIMAL TRANSFER LENGTH in bytes
	// (default 1 MiB).
	OptimalTransfer uint32
	// MaxTransfer is the MAXIMUM TRANSFER LENGTH in bytes (default 8 MiB).
	// Longer READ/WRITE commands fail with INVALID FIELD IN CDB (SBC-3
	// §6.5.3); it bounds the buffer a single command may allocate.
	MaxTransfer uint32
	// PersistentReservations enables PERSISTENT RESERVE IN/OUT (SPC-4
	// §5.9), held in memory. Enable it only when the transport sets
	// Command.Initiator: without it every initiator would look like one.
	PersistentReservations bool
	// Logger receives device errors that the initiator only sees as sense
	// data (default: discard).
	Logger *slog.Logger
}

// Limits that are not configurable (VPD page 0xB0, SBC-3 §6.5.3).
const (
	// maxUnmapBlocks is the MAXIMUM UNMAP LBA COUNT of one UNMAP
	// descriptor and the MAXIMUM WRITE SAME LENGTH, so that a single
	// command cannot hold the unit for long. 1 Mi blocks is the largest
	// explicit limit libiscsi's conformance tests accept as sane.
	maxUnmapBlocks = 1 << 20
	// maxUnmapDescriptors bounds the UNMAP parameter list we parse.
	maxUnmapDescriptors = 256
	// maxCompareAndWrite is the MAXIMUM COMPARE AND WRITE LENGTH in blocks.
	maxCompareAndWrite = 255
)

// LogicalUnit is a SCSI direct-access block device (SBC-3) over a
// blockdev.Device. Execute may be called concurrently: commands run in
// parallel on the device, and only COMPARE AND WRITE excludes the writes
// that overlap it (see rangeLocks).
type LogicalUnit struct {
	dev    blockdev.Device
	alloc  blockdev.AllocationReporter // nil if dev cannot report
	cfg    UnitConfig
	log    *slog.Logger
	blocks uint64 // capacity in logical blocks
	shift  uint   // log2(BlockSize)
	naa    [8]byte
	bufs   bufpool.Pool
	locks  rangeLocks
	pr     *prUnit // nil unless cfg.PersistentReservations

	cmds []command
	byOp [256]uint8 // index+1 into cmds of the first command with that opcode
}

// NewLogicalUnit validates cfg and returns a unit executing commands on
// dev. The device's size is rounded down to whole blocks.
func NewLogicalUnit(dev blockdev.Device, cfg UnitConfig) (*LogicalUnit, error) {
	if cfg.ID == "" {
		return nil, errors.New("scsi: unit ID is required")
	}
	if cfg.Vendor == "" {
		cfg.Vendor = "SHARELES"
	}
	if cfg.Product == "" {
		cfg.Product = "shareless disk"
	}
	if cfg.Revision == "" {
		cfg.Revision = "0001"
	}
	sum := sha256.Sum256([]byte(cfg.ID))
	if cfg.Serial == "" {
		cfg.Serial = hex.EncodeToString(sum[:8])
	}
	for _, f := range []struct {
		name, v string
		max     int
	}{{"vendor", cfg.Vendor, 8}, {"product", cfg.Product, 16}, {"revision", cfg.Revision, 4}, {"serial", cfg.Serial, 64}} {
		if len(f.v) > f.max || !printableASCII(f.v) {
			return nil, fmt.Errorf("scsi: %s %q: want at most %d printable ASCII characters", f.name, f.v, f.max)
		}
	}
	switch cfg.BlockSize {
	case 0:
		cfg.BlockSize = 512
	case 512, 4096:
	default:
		return nil, fmt.Errorf("scsi: block size %d: want 512 or 4096", cfg.BlockSize)
	}
	bs := cfg.BlockSize
	if cfg.PhysicalBlockSize == 0 {
		cfg.PhysicalBlockSize = bs
	}
	if p := cfg.PhysicalBlockSize; p < bs || p&(p-1) != 0 || p/bs > 1<<15 {
		return nil, fmt.Errorf("scsi: physical block size %d: want a power of two from the block size %d up", p, bs)
	}
	if cfg.OptimalGranularity == 0 {
		cfg.OptimalGranularity = max(4096, bs)
	}
	if cfg.OptimalTransfer == 0 {
		cfg.OptimalTransfer = 1 << 20
	}
	if cfg.MaxTransfer == 0 {
		cfg.MaxTransfer = 8 << 20
	}
	for _, f := range []struct {
		name string
		v    uint32
	}{{"optimal granularity", cfg.OptimalGranularity}, {"optimal transfer", cfg.OptimalTransfer}, {"max transfer", cfg.MaxTransfer}} {
		if f.v%bs != 0 {
			return nil, fmt.Errorf("scsi: %s %d is not a multiple of the block size %d", f.name, f.v, bs)
		}
	}
	if cfg.OptimalGranularity/bs > 0xffff {
		return nil, fmt.Errorf("scsi: optimal granularity %d too large", cfg.OptimalGranularity)
	}
	if cfg.OptimalTransfer > cfg.MaxTransfer || cfg.OptimalTransfer%cfg.OptimalGranularity != 0 {
		return nil, fmt.Errorf("scsi: optimal transfer %d must be a multiple of the granularity %d and at most the max transfer %d",
			cfg.OptimalTransfer, cfg.OptimalGranularity, cfg.MaxTransfer)
	}
	lu := &LogicalUnit{
		dev:    dev,
		cfg:    cfg,
		log:    cfg.Logger,
		blocks: uint64(dev.Size()) / uint64(bs),
		shift:  uint(log2(bs)),
	}
	if lu.blocks == 0 {
		return nil, fmt.Errorf("scsi: device of %d bytes holds no %d-byte block", dev.Size(), bs)
	}
	if lu.log == nil {
		lu.log = slog.New(slog.DiscardHandler)
	}
	lu.alloc, _ = dev.(blockdev.AllocationReporter)
	lu.naa = NAA(cfg.ID)
	if cfg.PersistentReservations {
		lu.pr = newPRUnit()
	}
	lu.cmds = lu.commandSet()
	for i := len(lu.cmds) - 1; i >= 0; i-- {
		lu.byOp[lu.cmds[i].usage[0]] = uint8(i + 1)
	}
	return lu, nil
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

func log2(v uint32) int {
	n := 0
	for v > 1 {
		v >>= 1
		n++
	}
	return n
}

// NAA is the NAA designator (VPD page 0x83) of the unit configured with
// id. NAA IEEE Registered would need an OUI of our own; NAA 3 (locally
// assigned, SPC-4 §7.8.6.6.2) is 60 bits of our choice: a hash of id. An
// initiator compares it with what the target reports to make sure it
// talks to the disk it means, not to another one behind a stale address.
func NAA(id string) [8]byte {
	sum := sha256.Sum256([]byte(id))
	var n [8]byte
	copy(n[:], sum[8:16])
	n[0] = 0x30 | n[0]&0x0f
	return n
}

// Blocks is the capacity in logical blocks.
func (lu *LogicalUnit) Blocks() uint64 { return lu.blocks }

// BlockSize is the logical block size in bytes.
func (lu *LogicalUnit) BlockSize() uint32 { return lu.cfg.BlockSize }

// command is one supported operation: its CDB usage data (SPC-4 §6.35.3:
// the opcode, then for each CDB byte the bits the device server looks at;
// its length is the CDB length) and the function that runs it. The usage
// data also drives the reserved-bit check of Execute, so REPORT SUPPORTED
// OPERATION CODES cannot disagree with what is enforced.
type command struct {
	usage []byte
	// sa is the service action, for opcodes that have them.
	sa    uint16
	hasSA bool
	// access is how the command fares against another nexus's persistent
	// reservation.
	access access
	run    func(lu *LogicalUnit, ctx context.Context, c *Command) Response
}

// serviceAction extracts the service action field of cdb for opcodes that
// have one (SPC-4 §4.2.5.2: bits 4-0 of byte 1 for all of ours).
func serviceAction(cdb []byte) uint16 { return uint16(cdb[1] & 0x1f) }

// find returns the command for op and, if op has service actions, sa.
func (lu *LogicalUnit) find(op byte, sa uint16) *command {
	i := lu.byOp[op]
	if i == 0 {
		return nil
	}
	for j := int(i) - 1; j < len(lu.cmds) && lu.cmds[j].usage[0] == op; j++ {
		if cmd := &lu.cmds[j]; !cmd.hasSA || cmd.sa == sa {
			return cmd
		}
	}
	return nil
}

// Execute runs one command and returns its status, sense and Data-In. It
// never returns BUSY: a command either completes, fails with sense data,
// or (when ctx is canceled) ends with TASK ABORTED. REPORT LUNS is the
// target's to answer (ReportLUNs), as it owns the LUN list; Execute
// treats it as an unsupported operation code.
func (lu *LogicalUnit) Execute(ctx context.Context, c *Command) Response {
	cdb := c.CDB
	if len(cdb) == 0 {
		return checkCondition(Sense{Key: SenseIllegalRequest, Code: ASCInvalidCommandOperationCode})
	}
	var sa uint16
	if len(cdb) > 1 {
		sa = serviceAction(cdb)
	}
	cmd := lu.find(cdb[0], sa)
	switch {
	case cmd == nil && lu.byOp[cdb[0]] != 0:
		// A service action we lack is an invalid field (SPC-4 §4.2.5.2).
		return invalidCDB(1, 4)
	case cmd == nil:
		return checkCondition(Sense{Key: SenseIllegalRequest, Code: ASCInvalidCommandOperationCode}.withFieldPointer(true, 0, -1))
	}
	if len(cdb) < len(cmd.usage) {
		return checkCondition(Sense{Key: SenseIllegalRequest, Code: ASCInvalidFieldInCDB})
	}
	// SPC-4 §4.2.1: a reserved bit set, or a NACA/LINK bit we do not
	// support, terminates the command with INVALID FIELD IN CDB.
	for i := 1; i < len(cmd.usage); i++ {
		if bad := cdb[i] &^ cmd.usage[i]; bad != 0 {
			return invalidCDB(i, log2(uint32(bad)))
		}
	}
	if lu.pr != nil && lu.pr.state.Load().conflicts(commandNexus(c), cmd.access) {
		return reservationConflict()
	}
	if ctx.Err() != nil {
		return Response{Status: StatusTaskAborted}
	}
	return cmd.run(lu, ctx, c)
}

// checkCondition is a CHECK CONDITION response with fixed-format sense.
func checkCondition(s Sense) Response {
	return Response{Status: StatusCheckCondition, Sense: s.Fixed()}
}

// withDataOut records in r how many Data-Out bytes the command asked for.
func withDataOut(r Response, n uint32) Response {
	r.DataOutLength = n
	return r
}

// invalidCDB is ILLEGAL REQUEST, INVALID FIELD IN CDB pointing at byte
// off and bit (negative: the whole byte).
func invalidCDB(off, bit int) Response {
	return checkCondition(Sense{Key: SenseIllegalRequest, Code: ASCInvalidFieldInCDB}.withFieldPointer(true, off, bit))
}

// invalidParam is ILLEGAL REQUEST, INVALID FIELD IN PARAMETER LIST
// pointing at byte off of the parameter list.
func invalidParam(off, bit int) Response {
	return checkCondition(Sense{Key: SenseIllegalRequest, Code: ASCInvalidFieldInParameterList}.withFieldPointer(false, off, bit))
}

func illegalRequest(code AdditionalSense) Response {
	return checkCondition(Sense{Key: SenseIllegalRequest, Code: code})
}

func writeProtected() Response {
	return checkCondition(Sense{Key: SenseDataProtect, Code: ASCWriteProtected})
}

// fail maps a device error to the response the initiator can act on
// (blockdev's error contract). ErrUnavailable is tested before the
// context so that a device's own bounded wait is reported as a failure,
// never as an abort the initiator would retry.
func (lu *LogicalUnit) fail(ctx context.Context, err error, write bool) Response {
	var me *blockdev.MediumError
	switch {
	case errors.Is(err, blockdev.ErrOutOfRange):
		return illegalRequest(ASCLBAOutOfRange)
	case errors.Is(err, blockdev.ErrReadOnly):
		return writeProtected()
	case errors.Is(err, blockdev.ErrUnavailable):
		lu.log.Warn("scsi: backing data unavailable", "err", err)
		return checkCondition(Sense{Key: SenseHardwareError, Code: ASCLUCommunicationFailure})
	case ctx.Err() != nil:
		return Response{Status: StatusTaskAborted}
	case errors.As(err, &me):
		lu.log.Error("scsi: medium error", "err", err)
		code := ASCUnrecoveredReadError
		if me.Write || write {
			code = ASCWriteError
		}
		s := Sense{Key: SenseMediumError, Code: code}
		if me.Off >= 0 {
			s.Information, s.InformationValid = uint64(me.Off)>>lu.shift, true
		}
		return checkCondition(s)
	default:
		lu.log.Error("scsi: device error", "err", err)
		return checkCondition(Sense{Key: SenseHardwareError, Code: ASCInternalTargetFailure})
	}
}

// inRange reports whether blocks [lba, lba+n) exist (SBC-3 §4.5: an LBA
// equal to the capacity is valid only with a zero length).
func (lu *LogicalUnit) inRange(lba, n uint64) bool {
	return lba <= lu.blocks && n <= lu.blocks-lba
}
